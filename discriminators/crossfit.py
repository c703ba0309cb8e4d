"""Cross-fitting: every prompt trains in K - 1 folds and is scored once, out of fold.

One fixed train/test split scores only the test prompts, and a selection/confirmation
halving of those leaves a tenth of the responses to decide on. Here the prompts of a
comparison (train and test splits together) are dealt into K folds, stratified by
category (``bbi.stats.stratified_folds``); each base adversary is fitted on K - 1 folds
and scores the held-out one, so every prompt gets exactly one out-of-fold contribution.

**The stacked adversary** (the verdict's declared primary analysis) is a forced-choice
adversary: shown a prompt's two responses, it names the one whose stacked score is higher
as the teacher's (d = +1 right, -1 wrong, 0 tie), so eps = 2 acc - 1 as for ``pairwise``.
Its features per prompt are antisymmetric in the two responses:

* each base adversary's out-of-fold score difference (pointwise: logit s(teacher) -
  logit s(other); pairwise: half the difference of the logits of both presentation
  orders), and
* the length/format statistics of ``discriminators.surface`` as differences
  f(teacher) - f(other), so no one-feature rule such as "the longer answer is the
  teacher's" can beat the stack: the stack can represent it.

A logistic regression without intercept on these differences (both orientations, so it
is antisymmetric) combines them. It is **nested**: the stacker that scores fold k is
trained on prompts outside k whose base scores come from base models that never saw fold
k (for each pair of folds {j, k}, base models fitted on the other K - 2 folds; with K = 2,
on sub-folds of the other fold), and fold
k's own base scores come from base models fitted on every fold but k. No score is used in
its own training, and no label of fold k reaches its prediction.

**The selected adversary** (what the verdict tests, :func:`crossfit`): a stack over ~30
features trained on a few hundred prompts loses to a single clean feature ("the answer
that ends with an exclamation mark is the student's") when the artifact is that simple.
So each fold is scored by whichever candidate (the stack, a base adversary, a one-feature
rule) has the largest test statistic S / sqrt(m) on the *other* folds, each measured out
of fold there; the choice is one more thing fitted on the other folds.

**Validity.** Given the other folds, a fold's predictor (selection included) is fixed
and its prompts' contributions are independent with mean at most eps0 under H0 (under
exchangeability, sign-symmetric), so an exact test on one fold is exact. Across folds they are dependent
(fold j's labels train fold k's model), so the verdict tests each fold separately and
merges the K p-values by a rule valid under any dependence (``bbi.crossfit.fold_test``),
never the pooled contributions. ``refit_p`` is the exact alternative at eps = 0: it
redoes the whole cross-fitting for every relabelling (a randomization test).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from bbi import stats
from bbi.errors import BbiError
from discriminators.base import Adversary
from discriminators.comparison import ComparisonData, interleave, pairwise_frame
from discriminators.surface import FEATURE_NAMES, surface_features

FOLDS = 5
INNER_FOLDS = 4  # K = 2 only: sub-folds of the other fold that train the stacker's inputs
# Adversaries that load or call models: K (K + 1) / 2 fits each would cost too much.
SKIP = frozenset({"encoder", "judge", "likelihood"})


def comparison_items(data: ComparisonData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every prompt of a comparison (train then test split) and its pointwise items."""
    prompts = pd.concat([data.train, data.test], ignore_index=True)
    items = pd.concat([data.train_items, data.test_items], ignore_index=True)
    return prompts, items


def flip_items(items: pd.DataFrame, flip: np.ndarray) -> pd.DataFrame:
    """Swap the teacher's and the other response of every prompt where ``flip`` is true
    (labels stay 1, 0 per row pair): a relabelling of the kind H0 says changes nothing."""
    flip = np.asarray(flip, dtype=bool)
    order = np.arange(len(items))
    f = np.flatnonzero(flip)
    order[2 * f], order[2 * f + 1] = 2 * f + 1, 2 * f
    out = items.iloc[order].reset_index(drop=True)
    out["label"] = np.tile([1, 0], len(flip))
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    return stats.logit(np.asarray(p, dtype=float))


def _fit_diff(
    adv: Adversary, items: pd.DataFrame, train: np.ndarray, score: np.ndarray, seed: int
) -> np.ndarray:
    """Fit on prompts ``train``; the antisymmetric score difference of prompts ``score``."""
    if adv.kind == "pointwise":
        X = items.iloc[interleave(train)].reset_index(drop=True)
        adv.fit(X, X["label"].to_numpy())
        s = _logit(adv.predict_proba(items.iloc[interleave(score)].reset_index(drop=True)))
        return s[0::2] - s[1::2]
    if adv.kind == "pairwise":
        orient = np.random.default_rng([seed, 23, len(train)]).random(len(train)) < 0.5
        X = pairwise_frame(items.iloc[interleave(train)].reset_index(drop=True), orient)
        adv.fit(X, orient.astype(int))
        sub = items.iloc[interleave(score)].reset_index(drop=True)
        ones = np.ones(len(score), dtype=bool)
        first = _logit(adv.predict_proba(pairwise_frame(sub, ones)))
        second = _logit(adv.predict_proba(pairwise_frame(sub, ~ones)))
        return (first - second) / 2.0
    raise BbiError(f"adversary {adv.name!r} of kind {adv.kind!r} cannot be cross-fitted")


@dataclass
class BaseScores:
    """One base adversary's cross-fitted score differences (teacher minus other).

    ``outer[i]``: from the model fitted on every fold but prompt i's; ``inner[k][i]`` (i
    outside fold k): from the model fitted on the folds other than k and i's own.
    """

    outer: np.ndarray
    inner: dict[int, np.ndarray] = field(default_factory=dict)
    # held[k][g][i] (i outside fold k and training group g): from a model blind to fold k,
    # group g and i's own group; scores the stack's training prompts when the stack's
    # training statistic is measured on group g (``_nested_stack``).
    held: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)


def base_scores(
    adv: Adversary, items: pd.DataFrame, folds: np.ndarray, seed: int = 0, nested: bool = False
) -> BaseScores:
    """K (K + 1) / 2 fits: one per fold (outer) and one per pair of folds (inner).

    With K = 2 there is no third fold to train the inner models on; the other fold is
    itself cross-fitted in ``INNER_FOLDS`` random sub-folds instead (2 (1 + INNER_FOLDS)
    fits), so the stacker of fold k still sees only scores of models blind to fold k and
    to the scored prompt. ``nested``: also ``held``, one fit per fold k and pair of its
    training groups (``_training_groups``; 2 x 6 more fits with K = 2).
    """
    if "random_state" in adv.get_params(deep=False):
        adv.set_params(random_state=seed)
    k_all = sorted(set(folds.tolist()))
    n = len(folds)
    outer = np.zeros(n)
    for k in k_all:
        test = np.flatnonzero(folds == k)
        outer[test] = _fit_diff(adv, items, np.flatnonzero(folds != k), test, seed)
    inner = {k: np.full(n, np.nan) for k in k_all}
    if len(k_all) == 2:
        for k, j in (k_all, k_all[::-1]):
            idx = np.flatnonzero(folds == j)
            rng = np.random.default_rng([seed, 41, int(j)])
            sub = rng.permutation(len(idx)) % INNER_FOLDS
            for s in range(INNER_FOLDS):
                inner[k][idx[sub == s]] = _fit_diff(adv, items, idx[sub != s], idx[sub == s], seed)
        return BaseScores(outer, inner, _held(adv, items, folds, seed) if nested else {})
    for a, j in enumerate(k_all):
        for k in k_all[a + 1 :]:
            train = np.flatnonzero((folds != j) & (folds != k))
            both = np.flatnonzero((folds == j) | (folds == k))
            diff = _fit_diff(adv, items, train, both, seed)
            in_j = folds[both] == j
            inner[k][both[in_j]] = diff[in_j]  # fold-j prompts, model blind to k and j
            inner[j][both[~in_j]] = diff[~in_j]
    return BaseScores(outer, inner, _held(adv, items, folds, seed) if nested else {})


def _held(
    adv: Adversary, items: pd.DataFrame, folds: np.ndarray, seed: int
) -> dict[int, dict[int, np.ndarray]]:
    """``BaseScores.held``: for each fold k and pair {g, h} of its training groups, one
    model fitted on the training prompts outside g and h scores both groups."""
    n = len(folds)
    out: dict[int, dict[int, np.ndarray]] = {}
    for k in sorted(set(folds.tolist())):
        groups = _training_groups(folds, k, seed)
        names = sorted(set(groups[groups >= 0].tolist()))
        out[k] = {g: np.full(n, np.nan) for g in names}
        if len(names) < 3:  # no prompt left to train on once two groups are held out
            continue
        for a, g in enumerate(names):
            for h in names[a + 1 :]:
                train = np.flatnonzero((groups >= 0) & (groups != g) & (groups != h))
                both = np.flatnonzero((groups == g) | (groups == h))
                try:
                    diff = _fit_diff(adv, items, train, both, seed)
                except ValueError:  # a handful of prompts, one class: no score (stack stat 0)
                    continue
                in_g = groups[both] == g
                out[k][h][both[in_g]] = diff[in_g]  # group-g prompts, blind to k, g and h
                out[k][g][both[~in_g]] = diff[~in_g]
    return out


STACK_CS = (0.01, 0.1, 1.0, 10.0)


def _fit_stack(F: np.ndarray, seed: int) -> tuple[np.ndarray, float, np.ndarray | None]:
    """Antisymmetric logistic regression on differences: (weights on F, abstention margin,
    the training prompts' cross-validated contributions at that margin, None when too few
    prompts to cross-validate).

    Features are scaled, not centred, and there is no intercept, so the score of the
    swapped pair is minus the score (antisymmetry). Each training prompt enters once in a
    seeded random orientation. The L2 strength is chosen among ``STACK_CS`` by 5-fold
    cross-validated log-loss on the training prompts (with ~30 features and a few hundred
    prompts a fixed strength either overfits or ignores a weak signal), and the
    abstention margin on the same cross-validated margins, never on fitted ones.
    """
    scale = np.sqrt(np.mean(F**2, axis=0))
    scale[scale == 0] = 1.0
    G = F / scale
    rng = np.random.default_rng([seed, 37, len(G)])
    o = np.where(rng.random(len(G)) < 0.5, 1.0, -1.0)
    X, y = G * o[:, None], (o > 0).astype(int)
    if min(y.sum(), len(y) - y.sum()) == 0:  # one class: nothing to learn, abstain
        return np.zeros(F.shape[1]), 0.0, None
    if min(y.sum(), len(y) - y.sum()) < 5:  # too few prompts to cross-validate
        model = LogisticRegression(C=1.0, fit_intercept=False, max_iter=2000).fit(X, y)
        return model.coef_[0] / scale, 0.0, None
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    best: tuple[float, float, np.ndarray] | None = None
    for c in STACK_CS:
        lr = LogisticRegression(C=c, fit_intercept=False, max_iter=2000)
        m = cross_val_predict(lr, X, y, cv=cv, method="decision_function")
        loss = float(np.mean(np.logaddexp(0.0, -np.where(y == 1, m, -m))))
        if best is None or loss < best[0] - 1e-12:
            best = (loss, c, m)
    assert best is not None
    _, c, m = best
    model = LogisticRegression(C=c, fit_intercept=False, max_iter=2000).fit(X, y)
    z = m * o  # oriented teacher minus other: sign(z) > 0 is right
    tau = abstention_threshold(z)
    return model.coef_[0] / scale, tau, _commit(z, tau)


def _commit(z: np.ndarray, tau: float = 0.0) -> np.ndarray:
    """Contributions of a margin oriented teacher minus other: +1 / -1 where |z| > tau
    (right / wrong), 0 where it abstains or ties."""
    z = np.asarray(z, dtype=float)
    return np.where(np.abs(z) > tau, np.sign(np.round(z, 12)), 0.0)


def statistic(d: np.ndarray) -> float:
    """S / sqrt(m) (S: right minus wrong, m: committed prompts): the studentised statistic
    of the exact test at eps0 = 0 (``bbi.crossfit``), by which candidates are compared."""
    d = np.asarray(d, dtype=float)
    m = int(np.count_nonzero(d))
    return float(d.sum() / np.sqrt(m)) if m else 0.0


def _rule_directions(sign: np.ndarray) -> np.ndarray:
    """Per surface feature, +1 ("more of it is the teacher's") or -1, from the signs of
    its differences on some prompts (+1 when they balance)."""
    return np.where(sign.mean(axis=0) < 0, -1.0, 1.0) if len(sign) else np.ones(sign.shape[1])


def _oof_rules(sign: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(n, F) out-of-fold contributions of the one-feature rules on training prompts: the
    direction of each group's rules chosen on the other groups, so a rule's training
    statistic is out of sample like the stack's and the base adversaries'."""
    out = np.zeros_like(sign)
    for g in np.unique(groups):
        on = groups == g
        out[on] = _rule_directions(sign[~on])[None, :] * sign[on]
    return out


@dataclass
class CrossFit:
    """Out-of-fold contributions (one per prompt) of the declared adversary ``d`` (the
    selected one, see :func:`crossfit`), of the stack, of each base adversary and of
    each one-feature rule, with the folds and feature names used.

    ``chosen[k]`` names the candidate that scored fold k (``"stack"``, a base adversary's
    name, or ``"rule:<feature>"``); ``train_stat[k]`` maps every candidate to its
    statistic S / sqrt(m) on fold k's training prompts, out of fold there, by which it was
    chosen.
    """

    d: np.ndarray
    folds: np.ndarray
    base: dict[str, np.ndarray]
    rules: dict[str, np.ndarray]
    features: list[str]
    weights: dict[str, float]
    abstain: list[float] = field(default_factory=list)  # per fold: |margin| <= it -> 0
    stack: np.ndarray | None = None
    chosen: list[str] = field(default_factory=list)
    train_stat: list[dict[str, float]] = field(default_factory=list)


def crossfit(
    adversaries: Sequence[Adversary],
    items: pd.DataFrame,
    categories: Sequence[str],
    n_folds: int = FOLDS,
    seed: int = 0,
    select: bool = True,
) -> CrossFit:
    """The nested cross-fitted stacked adversary (module docstring) on ``items``, and the
    cross-fitted *selected* adversary that the verdict tests.

    **Selection** (``select``): for each fold k, among the candidates {the stack, each
    base adversary, each one-feature rule}, the one with the largest statistic S / sqrt(m)
    on fold k's training prompts scores fold k. Every candidate's training contributions
    are out of fold there (the stack's cross-validated margins at its chosen abstention
    margin, the base adversaries' inner scores, the rules' directions chosen on the other
    training sub-folds), so they compare like for like; ties go to the earlier candidate
    in that order. The choice is a function of the training folds only, like everything
    else that scores fold k, so the per-fold exact test stays exact and costs no
    multiplicity. With ``select`` false, the stack scores every fold (``d`` is ``stack``).
    """
    cats = np.asarray(list(categories)).astype(str)
    n = len(cats)
    if len(items) != 2 * n:
        raise BbiError(f"{len(items)} items for {n} prompts (expected 2 per prompt)")
    if n_folds < 2 or n < 2 * n_folds or (n_folds == 2 and n < 2 * INNER_FOLDS):
        raise BbiError(
            f"cross-fitting needs at least 2 folds of 2 prompts (2 folds: of {INNER_FOLDS}); "
            f"{n} prompts, {n_folds} folds"
        )
    folds = stats.stratified_folds(cats, n_folds, seed)
    for adv in adversaries:  # label-free featurisation, cached by item id
        if hasattr(adv, "prepare"):
            ones = np.ones(n, dtype=bool)
            adv.prepare(pairwise_frame(items, ones) if adv.kind == "pairwise" else items)
    surf = surface_features(items["response"].astype(str).tolist())
    S = surf[0::2] - surf[1::2]
    sign = np.sign(np.round(S, 12))
    names = [a.name for a in adversaries]
    scores = {a.name: base_scores(a, items, folds, seed, nested=select) for a in adversaries}
    features = [*names, *FEATURE_NAMES]
    base = {a: np.sign(np.round(scores[a].outer, 12)) for a in names}
    stack = np.zeros(n)
    d = np.zeros(n)
    taus: list[float] = []
    chosen: list[str] = []
    train_stat: list[dict[str, float]] = []
    coef = np.zeros(len(features))
    k_all = sorted(set(folds.tolist()))
    for k in k_all:
        tr, te = folds != k, folds == k
        F_tr = np.column_stack([*(scores[a].inner[k][tr] for a in names), S[tr]])
        F_te = np.column_stack([*(scores[a].outer[te] for a in names), S[te]])
        w, tau, _ = _fit_stack(F_tr, seed + int(k))
        stack[te] = _commit(F_te @ w, tau)
        taus.append(tau)
        coef += w / n_folds
        if not select:
            d[te] = stack[te]
            chosen.append("stack")
            continue
        # Every candidate's out-of-fold contributions on the training prompts.
        groups = _training_groups(folds, k, seed)[tr]
        rules_tr = _oof_rules(sign[tr], groups)
        held = [{g: v[tr] for g, v in scores[a].held[k].items()} for a in names]
        stat = {"stack": statistic(_nested_stack(held, F_tr, groups, seed + int(k)))}
        stat.update({a: statistic(np.sign(np.round(scores[a].inner[k][tr], 12))) for a in names})
        stat.update({f"rule:{f}": statistic(rules_tr[:, j]) for j, f in enumerate(FEATURE_NAMES)})
        best = max(stat, key=lambda c: (stat[c], -list(stat).index(c)))
        chosen.append(best)
        train_stat.append({c: float(v) for c, v in stat.items()})
        if best == "stack":
            d[te] = stack[te]
        elif best in scores:
            d[te] = base[best][te]
        else:
            j = FEATURE_NAMES.index(best.removeprefix("rule:"))
            d[te] = _rule_directions(sign[tr][:, [j]])[0] * sign[te, j]
    rules = one_feature_rules(S, folds)
    return CrossFit(
        d=d,
        folds=folds,
        base=base,
        rules=rules,
        features=features,
        weights=dict(zip(features, (float(c) for c in coef), strict=True)),
        abstain=[float(t) for t in taus],
        stack=stack,
        chosen=chosen,
        train_stat=train_stat,
    )


def _nested_stack(
    held: list[dict[int, np.ndarray]], F: np.ndarray, groups: np.ndarray, seed: int
) -> np.ndarray:
    """The stack's out-of-fold contributions on training prompts ``F`` (rows: the base
    scores then the surface differences), for the selection's statistic.

    Each training group g is scored by a stack fitted (L2 strength and abstention margin
    included) on the other groups, whose base scores come from models blind to g too
    (``held``, one dict per base adversary): its own cross-validated margins would
    flatter it twice, once by the margin and strength chosen on them, and once because
    each training prompt's inner score comes from a model that saw the validation
    prompts' labels (in an A/A world the stack then "predicts" them: mean training
    statistic 1.6 where the test fold gives 0). Scored this way it is compared with the
    other candidates on the same footing.
    """
    out = np.zeros(len(F))
    for g in np.unique(groups):
        on = groups == g
        X = F[~on].copy()
        for a, h in enumerate(held):
            X[:, a] = h[g][~on]
        if not np.all(np.isfinite(X)):
            return np.zeros(len(F))  # too few groups to hold two out: no evidence for it
        w, tau, _ = _fit_stack(X, seed + 7919 * (int(g) + 1))
        out[on] = _commit(F[on] @ w, tau)
    return out


def _training_groups(folds: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Groups of fold k's training prompts in which the rules' directions are cross-fitted:
    the other folds themselves, or with 2 folds ``INNER_FOLDS`` random sub-folds of the
    other one (label-free, seeded like the base adversaries' inner sub-folds)."""
    k_all = sorted(set(folds.tolist()))
    groups = np.asarray(folds, dtype=int).copy()
    if len(k_all) == 2:
        (j,) = [x for x in k_all if x != k]
        idx = np.flatnonzero(folds == j)
        rng = np.random.default_rng([seed, 41, int(j)])
        groups[idx] = rng.permutation(len(idx)) % INNER_FOLDS
    groups[folds == k] = -1
    return groups


COMMIT_FRACTIONS = (1.0, 0.5, 0.25, 0.1, 0.05)


def abstention_threshold(z: np.ndarray) -> float:
    """The margin below which the stack abstains (d = 0), chosen on training prompts.

    ``z``: cross-validated stack margins of training prompts, oriented teacher minus
    other (sign(z) is right when positive). Committing on prompts with no signal adds +-1
    noise that drowns a concentrated artifact; abstaining there scores 0, but abstaining
    from a weak broad signal throws it away. The stack commits on the fraction of prompts
    with the largest |z|, among ``COMMIT_FRACTIONS`` (a coarse grid: choosing among every
    threshold would fit noise), that maximises the fixed-sample test's statistic
    S / sqrt(m) (S: right minus wrong, m: committed). It never sees the fold it is
    applied to.
    """
    z = np.asarray(z, dtype=float)
    if not len(z):
        return 0.0
    a = np.sort(np.abs(z))[::-1]
    order = np.argsort(-np.abs(z), kind="stable")
    s = np.cumsum(np.sign(np.round(z[order], 12)))
    best, tau = -np.inf, 0.0
    for f in COMMIT_FRACTIONS:
        m = max(1, int(round(f * len(z))))
        stat = s[m - 1] / np.sqrt(m)
        if stat > best + 1e-12:
            best = stat
            tau = 0.0 if m >= len(z) else float((a[m - 1] + a[m]) / 2)
    return tau


def one_feature_rules(S: np.ndarray, folds: np.ndarray) -> dict[str, np.ndarray]:
    """Out-of-fold contributions of "the response with the larger (smaller) f is the
    teacher's" for every surface feature f, the direction chosen on the other folds."""
    out = {}
    sign = np.sign(np.round(S, 12))
    for j, name in enumerate(FEATURE_NAMES):
        d = np.zeros(len(S))
        for k in sorted(set(folds.tolist())):
            d[folds == k] = _rule_directions(sign[folds != k][:, [j]])[0] * sign[folds == k, j]
        out[name] = d
    return out


def refit_p(
    adversaries: Sequence[Adversary],
    items: pd.DataFrame,
    categories: Sequence[str],
    n_relabel: int = 99,
    n_folds: int = FOLDS,
    seed: int = 0,
) -> float:
    """Exact randomization p of H0 "labels exchangeable within each prompt" (eps = 0):
    the whole nested cross-fit is redone for ``n_relabel`` random relabellings and the
    observed mean contribution is ranked among them; p = (1 + #{T_b >= T}) / (1 + B).
    Costs n_relabel + 1 cross-fits: for small sets and for checking the fast test."""
    observed = crossfit([clone(a) for a in adversaries], items, categories, n_folds, seed).d.mean()
    rng = np.random.default_rng([seed, 29])
    n = len(items) // 2
    hits = 0
    for _ in range(n_relabel):
        flipped = flip_items(items, rng.random(n) < 0.5)
        t = crossfit([clone(a) for a in adversaries], flipped, categories, n_folds, seed).d.mean()
        hits += t >= observed - 1e-12
    return float((1 + hits) / (1 + n_relabel))


def crossfit_adversaries(names: Sequence[str], make: Any) -> tuple[list[Adversary], dict[str, str]]:
    """The base adversaries the stack uses (``make(name)`` builds one) and the reasons
    the others are left out (two-sample tests, adversaries that load or call models)."""
    used, skipped = [], {}
    for name in names:
        adv = make(name)
        if adv.kind == "test":
            skipped[name] = "two-sample test: no per-prompt score to stack"
        elif name in SKIP or "backend" in adv.requires():
            skipped[name] = "loads or queries a model: too costly to refit per fold pair"
        else:
            used.append(adv)
    return used, skipped


__all__ = [
    "FOLDS",
    "INNER_FOLDS",
    "SKIP",
    "BaseScores",
    "CrossFit",
    "COMMIT_FRACTIONS",
    "abstention_threshold",
    "base_scores",
    "comparison_items",
    "crossfit",
    "crossfit_adversaries",
    "flip_items",
    "one_feature_rules",
    "refit_p",
    "statistic",
]
