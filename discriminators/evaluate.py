"""Evaluating one point of a sweep and summarising a sweep's points.

``run_point`` fits one adversary on the prompts a strategy bought for budget q and seed,
chooses its threshold on cross-validated train predictions, and scores the full test
split with ``bbi.stats`` (signed advantage, paired bootstrap CI, sign-flip p, AUROC, eps
per category and per k). ``summarise`` turns an adversary's points into its record in
results.json: curves (mean over seeds, CI of that mean) and the headline eps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from bbi import stats
from bbi.errors import BbiError
from discriminators import sweep
from discriminators.base import Adversary
from discriminators.comparison import ComparisonData, interleave, pairwise_frame

MIN_PROMPTS_FOR_CV_THRESHOLD = 10

if TYPE_CHECKING:
    from bbi.config import AttackSettings

# ---- one point ---------------------------------------------------------------------------


@dataclass
class PointResult:
    record: dict[str, Any]  # what goes in the per-point json
    replicates: dict[int, np.ndarray]  # k -> bootstrap replicates of eps
    scores: list[dict[str, Any]] | None = None  # per-test-item scores
    d: np.ndarray | None = None  # per-test-prompt contributions at k = 1 (test order)


class Evaluator:
    """Shared test-side randomness per seed (bootstrap draws, k-groupings, orientations)."""

    def __init__(self, data: ComparisonData, cfg: AttackSettings):
        self.data = data
        self.cfg = cfg
        self.n_test = len(data.test)
        self._counts: dict[tuple[int, int], np.ndarray] = {}
        self._groups: dict[tuple[int, int], np.ndarray] = {}
        for k in sweep.test_queries(cfg):
            if k > self.n_test:
                raise BbiError(f"k={k} test queries exceed the {self.n_test} test prompts")

    def counts(self, seed: int, n: int) -> np.ndarray:
        """Bootstrap draws of the test prompts, the same for every seed (``seed`` is kept
        for the signature): replicate b averaged over seeds is then a replicate of the
        seed mean, which the budget curves' CIs need."""
        key = (0, n)
        if key not in self._counts:
            rng = np.random.default_rng([n, 7])
            self._counts[key] = stats.bootstrap_counts(n, self.cfg.n_bootstrap, rng)
        return self._counts[key]

    def orientation(self, seed: int, split: str) -> np.ndarray:
        n = self.n_test if split == "test" else len(self.data.train)
        return np.random.default_rng([seed, 11, split == "test"]).random(n) < 0.5

    def group_rng(self, seed: int, k: int) -> np.random.Generator:
        return np.random.default_rng([seed, k, 13])

    def evaluate(self, d_by_k: dict[int, np.ndarray], seed: int) -> tuple[dict, dict]:
        """eps estimates per k (k=1 also per category) and their bootstrap replicates."""
        cfg = self.cfg
        out: dict[int, dict] = {}
        reps: dict[int, np.ndarray] = {}
        for k, d in d_by_k.items():
            est = stats.estimate(
                d,
                cfg.n_bootstrap,
                cfg.n_permutations,
                seed=seed,
                counts=self.counts(seed, len(d)),
                keep_replicates=True,
            )
            reps[k] = est.pop("replicates")
            out[k] = est
        return out, reps


def _threshold(
    adv: Adversary, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, folds: int
) -> float:
    """Decision threshold from cross-validated train predictions (never the test split)."""
    n_groups = len(np.unique(groups))
    if folds < 2 or n_groups < MIN_PROMPTS_FOR_CV_THRESHOLD:
        return 0.5
    p = np.full(len(y), 0.5)
    for tr, te in GroupKFold(n_splits=folds).split(X, y, groups):
        adv.fit(X.iloc[tr], y[tr])
        p[te] = adv.predict_proba(X.iloc[te])
    return stats.choose_threshold(p, y)


def _set_seed(adv: Adversary, seed: int) -> None:
    if "random_state" in adv.get_params(deep=False):
        adv.set_params(random_state=seed)


def run_point(
    adv: Adversary,
    data: ComparisonData,
    ev: Evaluator,
    bought: np.ndarray,
    budget: int,
    seed: int,
    want_scores: bool = False,
) -> PointResult:
    """Fit on the bought prompts, evaluate on the full test split. ``want_scores`` (the
    full-budget point) adds per-prompt scores, the AUROC's CI and eps per category."""
    cfg = ev.cfg
    _set_seed(adv, seed)
    rows = interleave(bought)
    X_tr_items = data.train_items.iloc[rows].reset_index(drop=True)
    test_items = data.test_items
    record: dict[str, Any] = {
        "adversary": adv.name,
        "kind": adv.kind,
        "budget": int(budget),
        "seed": int(seed),
        "queries": {
            "budget": int(budget),
            "revealed": int(len(rows)),
            "train_prompts": int(len(bought)),
        },
    }
    if record["queries"]["revealed"] > budget:  # the accounting invariant, checked every time
        raise RuntimeError("revealed responses exceed the budget")
    t0 = time.perf_counter()
    scores = None
    cats = data.test["category"].astype(str).to_numpy()
    if adv.kind == "test":
        res = adv.two_sample(
            X_tr_items.iloc[0::2].reset_index(drop=True),
            X_tr_items.iloc[1::2].reset_index(drop=True),
            np.random.default_rng([seed, budget, 17]),
        )
        record["compute_s"] = time.perf_counter() - t0
        record["eps"] = None
        record["two_sample"] = {
            k: (int(v) if k in ("n", "samples") else float(v)) for k, v in res.items()
        }
        return PointResult(record, {})
    if adv.kind == "pointwise":
        y_tr = X_tr_items["label"].to_numpy()
        thr = _threshold(
            adv, X_tr_items, y_tr, X_tr_items["prompt_id"].to_numpy(), sweep.THRESHOLD_FOLDS
        )
        adv.fit(X_tr_items, y_tr)
        s = np.asarray(adv.predict_proba(test_items), dtype=float)
        record["compute_s"] = time.perf_counter() - t0
        s_t, s_o = s[0::2], s[1::2]
        d_by_k = {
            k: stats.pointwise_contrib_k(s_t, s_o, thr, k, ev.group_rng(seed, k))
            for k in sweep.test_queries(cfg)
        }
        record["threshold"] = float(thr)
        # The AUROC's bootstrap CI and the per-category tables are reported for the
        # full-budget point only; elsewhere they would cost a fifth of the sweep unread.
        counts = ev.counts(seed, ev.n_test) if want_scores else None
        auc = stats.auroc_estimate(s_t, s_o, counts=counts)
        margins = s_t - s_o
        if want_scores:
            # d: the prompt's contribution to eps (k = 1), so comparisons can be paired later.
            scores = [
                {
                    "prompt_id": pid,
                    "category": cat,
                    "score_teacher": float(a),
                    "score_other": float(b),
                    "margin": float(a - b),
                    "d": float(di),
                }
                for pid, cat, a, b, di in zip(
                    data.test["id"], data.test["category"], s_t, s_o, d_by_k[1], strict=True
                )
            ]
    elif adv.kind == "pairwise":
        orient_tr = ev.orientation(seed, "train")[bought]
        X_tr = pairwise_frame(X_tr_items, orient_tr)
        adv.fit(X_tr, orient_tr.astype(int))
        orient = ev.orientation(seed, "test")
        p = np.asarray(adv.predict_proba(pairwise_frame(test_items, orient)), dtype=float)
        record["compute_s"] = time.perf_counter() - t0
        y = orient.astype(int)
        # Adversaries that abstain (the judge's inconsistent verdicts) expose `kept_`. An
        # abstention is a coin flip for the distinguisher: it contributes 0, so eps stays
        # an advantage over all test prompts (not inflated by 1 / kept fraction).
        kept = getattr(adv, "kept_", None)
        mask = np.ones(ev.n_test, dtype=bool)
        if kept is not None and len(kept) == ev.n_test:
            mask = np.asarray(kept, dtype=bool)
            record["kept_fraction"] = float(mask.mean())
        p_eff = np.where(mask, p, 0.5)
        d_by_k = {
            k: stats.pairwise_contrib_k(p_eff, y, k, ev.group_rng(seed, k))
            for k in sweep.test_queries(cfg)
        }
        record["threshold"] = 0.5
        idx = np.arange(ev.n_test)
        pos, neg = y == 1, y == 0
        auc = stats.auroc_estimate(
            p_eff[pos],
            p_eff[neg],
            idx[pos],
            idx[neg],
            counts=ev.counts(seed, ev.n_test) if want_scores else None,
        )
        p_correct = np.where(y == 1, p_eff, 1 - p_eff)
        margins = 2 * p_correct - 1
        if want_scores:
            # d: the prompt's contribution to eps (k = 1); abstained items (kept false)
            # contribute 0.
            d_all = d_by_k[1]
            scores = [
                {
                    "prompt_id": pid,
                    "category": cat,
                    "p_a": float(pa),
                    "a_is_teacher": bool(o),
                    "p_correct": float(pc),
                    "margin": float(2 * pc - 1),
                    "kept": bool(kp),
                    "d": float(di),
                }
                for pid, cat, pa, o, pc, kp, di in zip(
                    data.test["id"],
                    data.test["category"],
                    p,
                    orient,
                    p_correct,
                    mask,
                    d_all,
                    strict=True,
                )
            ]
    else:  # pragma: no cover - the registry check refuses other kinds
        raise RuntimeError(f"unknown adversary kind {adv.kind}")
    est, reps = ev.evaluate(d_by_k, seed)
    record["eps"] = est[1]
    record["auroc"] = auc
    record["eps_k"] = {str(k): est[k] for k in sweep.test_queries(cfg)}
    if want_scores:
        record["per_category"] = stats.per_category(
            d_by_k[1],
            cats.tolist(),
            cfg.alpha,
            cfg.n_bootstrap,
            cfg.n_permutations,
            seed=seed,
        )
    record["mean_margin"] = float(np.mean(margins))
    if getattr(adv, "notes", None):
        record["notes"] = adv.notes
    return PointResult(record, reps, scores, d=np.asarray(d_by_k[1], dtype=float))


def summarise(name, cls, points, full_res: PointResult, cfg: AttackSettings, prepare_s: float):
    rec = full_res.record
    curves: dict[str, list[dict[str, Any]]] = {}
    for strat in cfg.strategies:
        curve = []
        for q in sweep.budgets(cfg):
            pts = [points[(strat, s, q)] for s in sweep.seeds(cfg)]
            if cls.kind == "test":
                ps = [p.record["two_sample"]["p"] for p in pts]
                curve.append(
                    {
                        "q": q,
                        "k": 1,
                        "value": None,
                        "ci": None,
                        "n_seeds": len(pts),
                        "p_values": ps,
                        # Twice the median of valid p-values is valid under any dependence
                        # (Vovk & Wang 2020); the median itself is not a p-value.
                        "p": float(min(1.0, 2 * np.median(ps))),
                        "statistic": float(
                            np.mean([p.record["two_sample"]["statistic"] for p in pts])
                        ),
                        "n": pts[0].record["two_sample"]["n"],
                    }
                )
                continue
            d_mean = np.mean([p.d for p in pts], axis=0)
            for k in sweep.test_queries(cfg):
                vals = [p.record["eps_k"][str(k)]["value"] for p in pts]
                curve.append(
                    {
                        "q": q,
                        "k": k,
                        "value": float(np.mean(vals)),
                        # CI of the seed mean (bootstrap draws are shared across seeds).
                        "ci": stats.seed_mean_ci([p.replicates[k] for p in pts]),
                        "n": pts[0].record["eps_k"][str(k)]["n"],
                        "n_seeds": len(pts),
                        "seed_values": [float(v) for v in vals],
                        # Exact sign-flip p of the seed mean at k = 1 (per prompt); k-groups
                        # differ between seeds, so no p is claimed there.
                        "p": stats.permutation_p(d_mean, cfg.n_permutations, seed=q)
                        if k == 1
                        else None,
                        "compute_s": float(np.mean([p.record["compute_s"] for p in pts])),
                    }
                )
        curves[strat] = curve
    eps = rec.get("eps")
    if cls.kind != "test":
        # The headline: the full-budget point of the first strategy, averaged over seeds,
        # with the CI of that mean (the same numbers the curve shows).
        pt = next(
            p
            for p in curves[cfg.strategies[0]]
            if p["q"] == max(sweep.budgets(cfg)) and p["k"] == 1
        )
        eps = {"value": pt["value"], "ci": pt["ci"], "n": pt["n"], "p": pt["p"]}
    out: dict[str, Any] = {
        "kind": cls.kind,
        "eps": eps,
        "n_seeds": len(sweep.seeds(cfg)),
        "auroc": rec.get("auroc"),
        "kept_fraction": rec.get("kept_fraction"),
        "budget": rec["budget"],
        "strategy": rec["strategy"],
        "seed": rec["seed"],
        "queries": rec["queries"],
        "compute_s": float(rec["compute_s"]),
        "prepare_s": float(prepare_s),
        "per_category": rec.get("per_category", {}),
        "curves": curves,
        "notes": rec.get("notes") or getattr(cls, "notes", None),
    }
    if cls.kind == "test":
        out["two_sample"] = rec["two_sample"]
    return out


def examples_by_category(data: ComparisonData, margins: dict[str, dict[str, float]], n: int):
    """Per category, the test prompts the adversaries found most telling (mean margin)."""
    if not margins or n <= 0:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for cat, grp in data.test.groupby("category", sort=True):
        ranked = sorted(
            (pid for pid in grp["id"] if pid in margins),
            key=lambda pid: -float(np.mean(list(margins[pid].values()))),
        )
        out[str(cat)] = [{"prompt_id": pid, "scores": margins[pid]} for pid in ranked[:n]]
    return out
