"""Statistics for distinguishing advantage: the definitions every report prints.

Decisions (recorded in results.json as well):

* Labels: 1 = teacher. Adversaries return P(teacher) per item.
* Threshold: chosen on training data only (cross-validated train predictions, the point
  of the ROC curve maximising TPR - FPR; 0.5 when train is too small). The direction is
  fixed by training, so the test estimate is the **signed** advantage TPR - FPR, which can
  be slightly negative under the null. Taking ``|.|`` after the fact would bias the null
  upward; the signed estimate is unbiased for the trained adversary's advantage and its
  A/A CI covers 0. Verdicts use the CI's upper bound.
* On a balanced paired test split TPR - FPR is the mean over test prompts of
  ``d_i = 1[s_teacher_i >= t] - 1[s_other_i >= t]`` in {-1, 0, 1}; a pairwise adversary has
  ``d_i = +1`` (correct), ``-1`` (wrong), ``0`` (tie), so eps = 2*acc - 1. Every statistic
  below is a mean of per-prompt contributions ``d``.
* CI: paired bootstrap over test prompts (a prompt's teacher and other items move
  together), percentile 95%, ``n_bootstrap`` = 1000 by default, seeded.
* p-value: one-sided permutation test of H0 "no advantage". Swapping the two labels within
  a test prompt (with probability 1/2, scores fixed) turns ``d_i`` into ``-d_i``, so the
  test is an exact sign-flip test; p = (1 + #{perm >= observed}) / (1 + n_perm).
* AUROC: threshold-free companion (Mann-Whitney form, ties count 1/2), same bootstrap.
* Per category: eps_c with CI and p, Holm-adjusted across categories; significant means
  p_holm < alpha.
* Test-time aggregation: with k responses of the unknown model the adversary sums the
  log-odds of its k scores; test prompts are grouped into seeded random groups of k, the
  threshold is ``k * logit(t)`` (still fixed by training), and the group contributions are
  treated like prompt contributions (bootstrap over groups).

Every estimate is a dict ``{"value", "ci": [lo, hi], "n"}`` (+ ``p`` where it applies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps
from sklearn.metrics import roc_curve

from bbi.errors import BbiError

LOGIT_CLIP = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


# ---- threshold and advantage ------------------------------------------------------------


def choose_threshold(scores: np.ndarray, y: np.ndarray, min_per_class: int = 5) -> float:
    """Threshold maximising TPR - FPR on (cross-validated) *training* predictions.

    With fewer than ``min_per_class`` items of either class the ROC curve is too coarse to
    trust, so the neutral 0.5 is used.
    """
    scores = np.asarray(scores, dtype=float)
    y = np.asarray(y).astype(int)
    if min((y == 1).sum(), (y == 0).sum()) < min_per_class:
        return 0.5
    fpr, tpr, thr = roc_curve(y, scores)
    j = tpr - fpr
    best = int(np.argmax(j))
    if j[best] <= 0:
        return 0.5
    t = float(thr[best])
    return min(t, 1.0)  # roc_curve's first threshold is +inf


def advantage(scores: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> float:
    """Signed advantage TPR - FPR of the rule ``score >= threshold`` (1 = teacher)."""
    scores = np.asarray(scores, dtype=float)
    y = np.asarray(y).astype(int)
    if (y == 1).sum() == 0 or (y == 0).sum() == 0:
        raise BbiError("advantage needs items of both classes")
    pred = scores >= threshold
    return float(pred[y == 1].mean() - pred[y == 0].mean())


def pointwise_contrib(s_teacher: np.ndarray, s_other: np.ndarray, threshold: float) -> np.ndarray:
    """Per-prompt contributions d_i whose mean is TPR - FPR on a paired test split."""
    s_teacher = np.asarray(s_teacher, dtype=float)
    s_other = np.asarray(s_other, dtype=float)
    return (s_teacher >= threshold).astype(float) - (s_other >= threshold).astype(float)


def pairwise_contrib(p_a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-pair contributions (+1 correct, -1 wrong, 0 tie); mean = 2*acc - 1."""
    p_a = np.asarray(p_a, dtype=float)
    y = np.asarray(y).astype(int)
    return np.sign(p_a - 0.5) * np.where(y == 1, 1.0, -1.0)


def aggregate_groups(
    values: np.ndarray, k: int, rng: np.random.Generator, n_items: int | None = None
) -> np.ndarray:
    """Random partition of ``n`` items into groups of ``k``: an index array (n // k, k).

    Items left over after the last full group are dropped (so every group has exactly k).
    """
    n = len(values) if n_items is None else n_items
    if k < 1:
        raise BbiError(f"test queries k must be >= 1, got {k}")
    n_groups = n // k
    if n_groups == 0:
        raise BbiError(f"k={k} test queries exceed the {n} test prompts")
    perm = rng.permutation(n)[: n_groups * k]
    return perm.reshape(n_groups, k)


def pointwise_contrib_k(
    s_teacher: np.ndarray,
    s_other: np.ndarray,
    threshold: float,
    k: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Group contributions for k test queries: summed log-odds vs ``k * logit(threshold)``."""
    if k == 1:
        return pointwise_contrib(s_teacher, s_other, threshold)
    groups = aggregate_groups(s_teacher, k, rng)
    lt = logit(s_teacher)[groups].sum(axis=1)
    lo = logit(s_other)[groups].sum(axis=1)
    t = k * float(logit(np.array([threshold]))[0])
    return (lt >= t).astype(float) - (lo >= t).astype(float)


def pairwise_contrib_k(
    p_a: np.ndarray, y: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """k pairs from the same two oracles: sum the log-odds that the true teacher is the teacher."""
    if k == 1:
        return pairwise_contrib(p_a, y)
    signed = logit(p_a) * np.where(np.asarray(y).astype(int) == 1, 1.0, -1.0)
    groups = aggregate_groups(signed, k, rng)
    return np.sign(signed[groups].sum(axis=1))


# ---- splits -----------------------------------------------------------------------------


def stratified_folds(categories: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """A seeded fold in 0..folds-1 per item, balanced within each category and overall
    (a category's items are shuffled and dealt round-robin, continuing across categories
    so that small ones do not all land in fold 0)."""
    cats = np.asarray(list(categories)).astype(str)
    rng = np.random.default_rng([seed, 7919])
    out = np.empty(len(cats), dtype=int)
    offset = 0
    for cat in sorted(set(cats.tolist())):
        idx = np.flatnonzero(cats == cat)
        idx = idx[rng.permutation(len(idx))]
        out[idx] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)
    return out


# ---- resampling -------------------------------------------------------------------------


def bootstrap_counts(n: int, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n) multiplicities of a prompt-level bootstrap: one draw reused for every statistic."""
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    flat = (idx + np.arange(n_bootstrap)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_bootstrap * n).reshape(n_bootstrap, n).astype(float)


def paired_bootstrap_ci(
    d: np.ndarray,
    n_bootstrap: int = 1000,
    seed: int | np.random.Generator = 0,
    confidence: float = 0.95,
    counts: np.ndarray | None = None,
) -> tuple[float, float, np.ndarray]:
    """Percentile CI of mean(d) resampling prompts; also returns the replicates.

    ``d`` has one entry per test prompt (or per k-group), so resampling it resamples the
    teacher and the other item of a prompt together.
    """
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n == 0:
        raise BbiError("no test items to bootstrap")
    if counts is None:
        counts = bootstrap_counts(n, n_bootstrap, np.random.default_rng(seed))
    reps = counts @ d / n
    a = (1 - confidence) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    return float(lo), float(hi), reps


def permutation_p(
    d: np.ndarray, n_permutations: int = 1000, seed: int | np.random.Generator = 0
) -> float:
    """One-sided sign-flip permutation p-value of H0 "no advantage" for mean(d)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n == 0:
        raise BbiError("no test items for a permutation test")
    rng = np.random.default_rng(seed)
    observed = d.mean()
    signs = rng.integers(0, 2, size=(n_permutations, n)).astype(float) * 2 - 1
    perm = signs @ d / n
    return float((1 + np.sum(perm >= observed - 1e-12)) / (1 + n_permutations))


def holm(pvals: Sequence[float], weights: Sequence[float] | None = None) -> np.ndarray:
    """Holm step-down adjusted p-values: family-wise error control under any dependence.

    With ``weights`` (positive; normalised to sum 1) this is the weighted Holm procedure:
    hypotheses are ordered by p / w and the j-th is rejected when p <= alpha w / (the
    weight still untested), so a family can give one hypothesis (the verdict's primary
    test) half of alpha and share the rest.
    """
    p = np.asarray(pvals, dtype=float)
    m = len(p)
    if m == 0:
        return p
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (m,) or np.any(w <= 0):
        raise ValueError("holm weights must be positive, one per p-value")
    w = w / w.sum()
    order = np.lexsort((np.arange(m), p / w))
    remaining = np.cumsum(w[order][::-1])[::-1]  # weight of hypotheses not yet rejected
    adj = np.minimum(1.0, remaining * p[order] / w[order])
    adj = np.maximum.accumulate(adj)
    out = np.empty(m)
    out[order] = adj
    return out


def _weighted_auc(
    pos: np.ndarray, neg: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray
) -> np.ndarray:
    """AUROC P(pos > neg) + P(tie)/2 with per-item weights; rows of w are replicates."""
    order = np.argsort(neg, kind="stable")
    neg_sorted = neg[order]
    w_neg = np.atleast_2d(w_neg)[:, order]
    w_pos = np.atleast_2d(w_pos)
    cum = np.concatenate([np.zeros((w_neg.shape[0], 1)), np.cumsum(w_neg, axis=1)], axis=1)
    left = np.searchsorted(neg_sorted, pos, side="left")
    right = np.searchsorted(neg_sorted, pos, side="right")
    below = cum[:, left]
    ties = cum[:, right] - below
    num = (w_pos * (below + 0.5 * ties)).sum(axis=1)
    den = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def auroc_estimate(
    pos: np.ndarray,
    neg: np.ndarray,
    prompt_of_pos: np.ndarray | None = None,
    prompt_of_neg: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """AUROC with a prompt-level bootstrap CI.

    ``prompt_of_pos``/``prompt_of_neg`` map each score to its prompt's column in ``counts``
    (paired pointwise data: both are ``arange(n)``; pairwise data: a partition of prompts).
    """
    pos = np.asarray(pos, dtype=float)
    neg = np.asarray(neg, dtype=float)
    n_prompts = max(
        len(pos) if prompt_of_pos is None else int(np.max(prompt_of_pos, initial=-1)) + 1,
        len(neg) if prompt_of_neg is None else int(np.max(prompt_of_neg, initial=-1)) + 1,
    )
    if len(pos) == 0 or len(neg) == 0:
        return {"value": None, "ci": [None, None], "n": int(n_prompts)}
    pp = np.arange(len(pos)) if prompt_of_pos is None else np.asarray(prompt_of_pos)
    pn = np.arange(len(neg)) if prompt_of_neg is None else np.asarray(prompt_of_neg)
    value = float(_weighted_auc(pos, neg, np.ones(len(pos)), np.ones(len(neg)))[0])
    out: dict[str, Any] = {"value": value, "ci": [None, None], "n": int(n_prompts)}
    if counts is not None:
        reps = _weighted_auc(pos, neg, counts[:, pp], counts[:, pn])
        reps = reps[np.isfinite(reps)]
        if len(reps):
            a = (1 - confidence) / 2
            out["ci"] = [float(x) for x in np.quantile(reps, [a, 1 - a])]
    return out


# ---- estimates --------------------------------------------------------------------------


def estimate(
    d: np.ndarray,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    counts: np.ndarray | None = None,
    keep_replicates: bool = False,
) -> dict[str, Any]:
    """eps = mean(d) with its paired-bootstrap CI, sign-flip p and n."""
    d = np.asarray(d, dtype=float)
    lo, hi, reps = paired_bootstrap_ci(d, n_bootstrap, seed, confidence, counts=counts)
    out: dict[str, Any] = {
        "value": float(d.mean()),
        "ci": [lo, hi],
        "n": int(len(d)),
        "p": permutation_p(d, n_permutations, seed + 1),
    }
    if keep_replicates:
        out["replicates"] = reps
    return out


def with_holm(estimates: dict[str, dict[str, Any]], alpha: float) -> dict[str, dict[str, Any]]:
    """Add ``p_holm`` (Holm across the entries) and ``significant`` (p_holm < alpha)."""
    names = list(estimates)
    for c, pa in zip(names, holm([estimates[c]["p"] for c in names]), strict=True):
        estimates[c]["p_holm"] = float(pa)
        estimates[c]["significant"] = bool(pa < alpha)
    return estimates


def per_category(
    d: np.ndarray,
    categories: Sequence[str],
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """eps per category with CI, p, Holm-adjusted p across categories and significance."""
    d = np.asarray(d, dtype=float)
    cats = np.asarray(list(categories))
    names = sorted(set(cats.tolist()))
    out: dict[str, dict[str, Any]] = {}
    for j, c in enumerate(names):
        out[c] = estimate(
            d[cats == c], n_bootstrap, n_permutations, seed + 1000 * (j + 1), confidence
        )
    return with_holm(out, alpha)


def mean_ci(
    values: Sequence[float],
    method: str = "bootstrap",
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean with a CI over prompts (semantic similarity etc.): percentile bootstrap or t."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return {"value": None, "ci": [None, None], "n": 0}
    m = float(x.mean())
    if n == 1 or np.all(x == x[0]):
        return {"value": m, "ci": [m, m], "n": n}
    if method == "t":
        lo, hi = sps.t.interval(confidence, n - 1, loc=m, scale=sps.sem(x))
    elif method == "bootstrap":
        res = sps.bootstrap(
            (x,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_bootstrap,
            method="percentile",
            random_state=np.random.default_rng(seed),
            vectorized=True,
        )
        lo, hi = res.confidence_interval
    else:
        raise BbiError(f"unknown CI method {method!r}; use 'bootstrap' or 't'")
    return {"value": m, "ci": [float(lo), float(hi)], "n": n}


def seed_mean_ci(replicates: Sequence[np.ndarray], confidence: float = 0.95) -> list[float]:
    """Percentile CI of the mean over seeds, for budget curves.

    Every seed's replicates must come from the same bootstrap draws of test prompts (the
    attack shares them across seeds), so replicate b averaged over seeds is the bootstrap
    replicate of the seed mean: a CI for the curve's plotted value, not of a seed mixture.
    """
    reps = np.stack([np.asarray(r, dtype=float).ravel() for r in replicates])
    a = (1 - confidence) / 2
    lo, hi = np.quantile(reps.mean(axis=0), [a, 1 - a])
    return [float(lo), float(hi)]


# ---- anytime-valid testing by betting ---------------------------------------------------


def betting_test(
    d: np.ndarray,
    eps0: float = 0.0,
    alpha: float = 0.05,
    seed: int = 0,
    grid: int = 20,
) -> dict[str, Any]:
    """Anytime-valid one-sided test of H0: E[d] <= eps0 for d in [-1, 1], by betting.

    Test prompts are visited in a seeded random order. A bettor stakes the fraction
    ``lambda`` of its wealth on each ``d_t - eps0``; under H0 its wealth
    ``K_t = prod (1 + lambda_t (d_t - eps0))`` is a non-negative supermartingale for any
    ``lambda_t`` in [0, 1 / (1 + eps0)) chosen before seeing ``d_t``, and so is any average
    of such bettors. Here half the wealth follows the adaptive aGRAPA rule (Waudby-Smith
    and Ramdas, 2023: lambda from the mean and variance of the prompts seen so far, capped
    at 1/2 of the limit) and half is spread over ``grid`` constant bets up to the limit
    (diversified Kelly), which keeps power when every prompt gives the student away. By
    Ville's inequality P(sup K_t >= 1/alpha) <= alpha, so ``p = min(1, 1 / max_t K_t)``
    is valid however one stops, and ``n_to_reject`` (the first t with K_t >= 1/alpha) is
    a legitimate "test prompts until told apart". No resampling: no Monte-Carlo floor on p.
    """
    d = np.asarray(d, dtype=float)
    if d.ndim != 1 or not len(d):
        raise BbiError("no test items for the betting test")
    if np.any(np.abs(d) > 1 + 1e-9) or not np.all(np.isfinite(d)):
        raise BbiError("betting test needs contributions in [-1, 1]")
    order = np.random.default_rng([seed, 31337]).permutation(len(d))
    x = d[order] - eps0
    limit = 1.0 / (1.0 + eps0)
    # Adaptive bettor.
    log_adaptive = np.empty(len(x))
    total, sq, mean, acc = 0.0, 0.25, 0.0, 0.0
    for t, xt in enumerate(x):
        var = sq / (t + 1)
        lam = min(max(mean / (var + mean * mean), 0.0), 0.5 * limit) if t else 0.0
        acc += np.log1p(lam * xt)
        log_adaptive[t] = acc
        total += xt
        mean = total / (t + 2)  # shrunk toward 0, the null boundary
        sq += (xt - mean) ** 2
    # Constant bettors lambda_j = limit * j / (grid + 1), j = 1..grid.
    lams = limit * np.arange(1, grid + 1) / (grid + 1)
    log_const = np.cumsum(np.log1p(np.outer(x, lams)), axis=0)
    parts = np.column_stack([log_adaptive + np.log(0.5), log_const + np.log(0.5 / grid)])
    top = parts.max(axis=1, keepdims=True)
    log_k = (top + np.log(np.exp(parts - top).sum(axis=1, keepdims=True))).ravel()
    peak = float(log_k.max())
    crossed = np.flatnonzero(log_k >= np.log(1 / alpha))
    return {
        "p": float(min(1.0, np.exp(-peak))),
        "log_wealth": float(log_k[-1]),
        "max_log_wealth": peak,
        "n": int(len(d)),
        "n_to_reject": int(crossed[0] + 1) if len(crossed) else None,
        "eps0": float(eps0),
        "alpha": float(alpha),
        "path": log_k,
    }


# ---- paired differences between two comparisons ----------------------------------------


def paired_delta(
    a: np.ndarray,
    b: np.ndarray,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Delta = mean(a) - mean(b) for per-prompt values measured on the same prompts.

    Used to compare two students against the same teacher (``a``: distilled, ``b``: base;
    entries aligned by prompt). Pairing removes the prompt-to-prompt variance both
    comparisons share, so the CI is much narrower than for two independent estimates.
    CI: percentile bootstrap resampling prompt indices jointly for ``a`` and ``b``
    (``default_rng(seed)``, as :func:`estimate`). p: **two-sided** sign-flip test of
    H0 "Delta = 0" (under H0 the two values of a prompt are exchangeable, so swapping them
    flips ``a_i - b_i``; ``seed + 1``), p = (1 + #{|perm| >= |observed|}) / (1 + n_perm).
    A student can get further from the teacher as well as closer, hence two-sided.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise BbiError(f"paired values differ in length: {a.shape} vs {b.shape}")
    diff = a - b
    n = len(diff)
    if n == 0:
        raise BbiError("no paired items to compare")
    lo, hi, _ = paired_bootstrap_ci(diff, n_bootstrap, seed, confidence)
    observed = float(diff.mean())
    rng = np.random.default_rng(seed + 1)
    signs = rng.integers(0, 2, size=(n_permutations, n)).astype(float) * 2 - 1
    perm = signs @ diff / n
    p = float((1 + np.sum(np.abs(perm) >= abs(observed) - 1e-12)) / (1 + n_permutations))
    return {"value": observed, "ci": [lo, hi], "n": int(n), "p": p}


def paired_delta_per_category(
    a: np.ndarray,
    b: np.ndarray,
    categories: Sequence[str],
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """:func:`paired_delta` per category, Holm-adjusted across the categories.

    Seeds follow :func:`per_category` (``seed + 1000 * (j + 1)`` for the j-th category in
    sorted order); ``significant`` means p_holm < alpha.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    cats = np.asarray(list(categories))
    if len(cats) != len(a):
        raise BbiError(f"{len(cats)} categories for {len(a)} paired items")
    names = sorted(set(cats.tolist()))
    out: dict[str, dict[str, Any]] = {}
    for j, c in enumerate(names):
        m = cats == c
        out[c] = paired_delta(
            a[m], b[m], n_bootstrap, n_permutations, seed + 1000 * (j + 1), confidence
        )
    return with_holm(out, alpha)


def delta_decided(d: dict[str, Any] | None, alpha: float = 0.05) -> int:
    """-1 / +1 when a Delta estimate shows a change down / up, else 0.

    A change needs both the CI wholly on one side of 0 and the exact sign-flip p < alpha:
    with few prompts that differ between the two comparisons the percentile bootstrap
    interval is too narrow, and the exact test is then the honest arbiter.
    """
    if not d or not d.get("ci") or None in d["ci"]:
        return 0
    p = d.get("p")
    if p is not None and p >= alpha:
        return 0
    lo, hi = d["ci"]
    return -1 if hi < 0 else (1 if lo > 0 else 0)


def delta_reading(deltas: dict[str, dict[str, Any]], alpha: float = 0.05) -> dict[str, Any]:
    """One honest reading of per-adversary Delta-eps estimates (distilled - base).

    An adversary counts as *closer* (further) when its Delta-eps CI lies below (above) 0
    and its two-sided p, Holm-adjusted across the adversaries, is < alpha
    (:func:`delta_decided`): "some adversary is closer" is a family-wise claim. ``closer`` when some adversary
    is closer and none further, ``further`` the reverse, ``mixed`` when both occur,
    ``not-closer`` otherwise (no evidence of a change, which is not evidence of no change).
    Adversaries whose CI excludes 0 while p >= alpha are named as ``undecided``.
    """
    rows = {k: d for k, d in deltas.items() if d and d.get("ci") and None not in d["ci"]}
    # "Some adversary is closer" is a claim about a family: Holm across the adversaries.
    names = [k for k, d in rows.items() if d.get("p") is not None]
    for k, pa in zip(names, holm([rows[k]["p"] for k in names]), strict=True):
        rows[k] = {**rows[k], "p": float(pa)}
    closer = [k for k, d in rows.items() if delta_decided(d, alpha) < 0]
    further = [k for k, d in rows.items() if delta_decided(d, alpha) > 0]
    undecided = [
        k
        for k, d in rows.items()
        if k not in closer + further and (d["ci"][1] < 0 or d["ci"][0] > 0)
    ]
    n = len(rows)
    rule = f"CI {{}} 0 and Holm p < {alpha:g}"
    if n == 0:
        status, text = "none", "no adversary to compare"
    elif closer and further:
        status = "mixed"
        text = (
            f"mixed: Delta-eps {rule.format('below')} for {len(closer)} of {n} adversaries "
            f"({', '.join(closer)}), {rule.format('above')} for {len(further)} "
            f"({', '.join(further)})"
        )
    elif closer:
        status = "closer"
        text = (
            f"closer: Delta-eps {rule.format('below')} for {len(closer)} of {n} adversaries "
            f"({', '.join(closer)})"
        )
    elif further:
        status = "further"
        text = (
            f"further: Delta-eps {rule.format('above')} for {len(further)} of {n} "
            f"adversaries ({', '.join(further)})"
        )
    else:
        status = "not-closer"
        text = f"not closer: no Delta-eps CI excludes 0 with Holm p < {alpha:g} ({n} adversaries)"
    if undecided:
        text += (
            f"; undecided: {', '.join(undecided)} (CI excludes 0 but Holm p >= {alpha:g}: "
            "too few test prompts differ between the two comparisons, or too many adversaries)"
        )
    return {
        "status": status,
        "closer": closer,
        "further": further,
        "undecided": undecided,
        "n": n,
        "alpha": alpha,
        "text": text,
    }
