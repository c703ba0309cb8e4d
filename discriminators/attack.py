"""The attack: budget sweeps of adversaries against (teacher, other) comparisons.

For every comparison (teacher vs one other alias of the run), adversary, acquisition
strategy, budget q and seed: buy ``q // 2`` train prompts with the strategy (see
``discriminators.acquisition``), fit the adversary on the bought items only, choose the
decision threshold on cross-validated *train* predictions, and evaluate on the fixed full
test split with ``bbi.stats`` (signed advantage, paired bootstrap CI, sign-flip
permutation p, AUROC, per-category eps with Holm). With ``k`` test queries the adversary
sums log-odds over groups of k test prompts -> eps(q, k). Each point is written to
``attack/<comparison>/<adversary>__<strategy>__q<budget>__s<seed>.json``; the aggregate
goes to ``results.json["attack"]`` (docs/run-directory.md).

Verdict for ``--epsilon X`` (k = 1, every adversary, strategy and budget):
``indistinguishable`` when every eps CI upper bound is <= X; ``distinguishable`` when some
CI lower bound is > X (reported: the smallest such budget); ``inconclusive`` otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold
from threadpoolctl import threadpool_limits

from bbi import stats
from bbi.errors import BbiError
from bbi.runstore import RunDir, append_jsonl
from discriminators.acquisition import (
    STRATEGIES,
    Pool,
    acquisition_order,
    prompts_for_budget,
    revealed_for_budget,
)
from discriminators.base import Adversary, adversary_class, get_adversary

DEFAULT_BUDGETS = (50, 100, 200, 400, 800, 1600, 4000)
DEFAULT_STRATEGIES = ("random", "stratified", "disagreement")
DEFAULT_ADVERSARIES = ("surface", "tfidf", "embed", "pairwise")
MIN_PROMPTS_FOR_CV_THRESHOLD = 10


@dataclass
class AttackConfig:
    """Everything that defines a sweep; recorded verbatim in results.json."""

    budgets: list[int] = field(default_factory=lambda: list(DEFAULT_BUDGETS))
    strategies: list[str] = field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    test_queries: list[int] = field(default_factory=lambda: [1])
    epsilon: float = 0.1
    alpha: float = 0.05
    adversaries: list[str] = field(default_factory=lambda: list(DEFAULT_ADVERSARIES))
    n_bootstrap: int = 1000
    n_permutations: int = 1000
    threshold_folds: int = 2
    n_examples: int = 3
    blas_threads: int = 1
    adversary_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.budgets:
            raise BbiError("give at least one budget")
        if any(int(q) < 4 for q in self.budgets):
            raise BbiError("every budget must be >= 4 queries (2 train prompts x 2 models)")
        self.budgets = sorted({int(q) for q in self.budgets})
        for s in self.strategies:
            if s not in STRATEGIES:
                raise BbiError(
                    f"unknown acquisition strategy {s!r}; known: {', '.join(STRATEGIES)}"
                )
        for a in self.adversaries:
            adversary_class(a)
        if not self.seeds:
            raise BbiError("give at least one seed")
        if not self.test_queries or any(int(k) < 1 for k in self.test_queries):
            raise BbiError("test queries k must be >= 1")
        self.test_queries = sorted({int(k) for k in self.test_queries} | {1})
        if not 0 < self.epsilon < 1:
            raise BbiError(f"--epsilon must be in (0, 1), got {self.epsilon}")
        if not 0 < self.alpha < 1:
            raise BbiError(f"--alpha must be in (0, 1), got {self.alpha}")
        if self.n_bootstrap < 10 or self.n_permutations < 10:
            raise BbiError("n_bootstrap and n_permutations must be >= 10")

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("backend_options", None)  # may hold endpoints/keys; never written
        return out


# ---- data --------------------------------------------------------------------------------


@dataclass
class ComparisonData:
    """Items of one (teacher, other) comparison, laid out for fast subsetting.

    ``train_items``/``test_items``: pointwise frames, rows 2i (teacher, label 1) and 2i+1
    (other, label 0) for the i-th prompt of the split.
    """

    other: str
    role: str
    train: pd.DataFrame
    test: pd.DataFrame
    train_items: pd.DataFrame
    test_items: pd.DataFrame
    pool: Pool


def _items(rows: pd.DataFrame, other: str, emb: dict[str, dict] | None) -> pd.DataFrame:
    n = len(rows)
    rep = np.repeat(np.arange(n), 2)
    items = pd.DataFrame(
        {
            "prompt_id": rows["id"].to_numpy()[rep],
            "category": rows["category"].to_numpy()[rep],
            "prompt": rows["prompt"].to_numpy()[rep],
        }
    )
    resp = np.empty(2 * n, dtype=object)
    resp[0::2] = rows["teacher"].to_numpy()
    resp[1::2] = rows["other"].to_numpy()
    items["response"] = resp
    ids = np.empty(2 * n, dtype=object)
    ids[0::2] = [f"{p}::teacher" for p in rows["id"]]
    ids[1::2] = [f"{p}::{other}" for p in rows["id"]]
    items["item_id"] = ids
    items["label"] = np.tile([1, 0], n)
    if emb is not None:
        e = np.empty(2 * n, dtype=object)
        e[0::2] = [emb["teacher"][p] for p in rows["id"]]
        e[1::2] = [emb["other"][p] for p in rows["id"]]
        items["embedding"] = e
        items["prompt_embedding"] = [emb["prompt"][p] for p in items["prompt_id"]]
    return items


def load_comparison(
    run: RunDir,
    other: str,
    embeddings: bool = False,
    progress: bool = False,
    max_budget: int | None = None,
) -> ComparisonData:
    """Paired train/test data for teacher vs ``other``; user errors for unusable runs."""
    models = run.models()
    if other not in models:
        raise BbiError(f"{run.path}: no model {other!r} (known: {', '.join(models)})")
    teacher = run.teacher_alias()
    if other == teacher:
        raise BbiError(f"cannot compare the teacher {teacher!r} with itself")
    paired = run.paired(other)
    split = paired["split"].astype(str)
    n_train, n_test = int((split == "train").sum()), int((split == "test").sum())
    if n_test == 0:
        raise BbiError(f"{run.path}: no test items (suite split == 'test'); nothing to evaluate on")
    if n_train < 2:
        raise BbiError(f"{run.path}: fewer than 2 train prompts; nothing to buy")
    if max_budget is not None and prompts_for_budget(max_budget) > n_train:
        raise BbiError(
            f"budget {max_budget} exceeds the train pool: {n_train} prompts allow at most "
            f"{2 * n_train} queries (one query = one prompt to one model)"
        )
    emb = None
    if embeddings:
        from bbi.similarity import embeddings_for, prompt_embeddings

        emb = {
            "teacher": embeddings_for(run, teacher, progress=progress),
            "other": embeddings_for(run, other, progress=progress),
            "prompt": prompt_embeddings(run, progress=progress),
        }
    return comparison_from_paired(paired, other, str(models[other].get("role", "student")), emb)


def comparison_from_paired(
    paired: pd.DataFrame, other: str, role: str = "student", emb: dict[str, dict] | None = None
) -> ComparisonData:
    """ComparisonData from a ``RunDir.paired``-shaped frame (id, category, split, prompt,
    teacher, other); ``emb`` optionally maps teacher/other/prompt -> {prompt_id: vector}."""
    split = paired["split"].astype(str)
    train = paired[split == "train"].reset_index(drop=True)
    test = paired[split == "test"].reset_index(drop=True)
    pool = Pool(
        prompt_ids=train["id"].to_numpy(),
        categories=train["category"].astype(str).to_numpy(),
        prompts=train["prompt"].astype(str).tolist(),
        teacher=train["teacher"].tolist(),
        other=train["other"].tolist(),
    )
    return ComparisonData(
        other=other,
        role=role,
        train=train,
        test=test,
        train_items=_items(train, other, emb),
        test_items=_items(test, other, emb),
        pool=pool,
    )


def pairwise_frame(items: pd.DataFrame, a_is_teacher: np.ndarray) -> pd.DataFrame:
    """One row per prompt from a pointwise frame (2i teacher, 2i+1 other) and an orientation."""
    t = items.iloc[0::2].reset_index(drop=True)
    o = items.iloc[1::2].reset_index(drop=True)
    a_is_teacher = np.asarray(a_is_teacher, dtype=bool)
    out = t[["prompt_id", "category", "prompt"]].copy()
    for col, name in (("response", "response"), ("item_id", "item_id"), ("embedding", "embedding")):
        if col not in items.columns:
            continue
        out[f"{name}_a"] = np.where(a_is_teacher, t[col].to_numpy(), o[col].to_numpy())
        out[f"{name}_b"] = np.where(a_is_teacher, o[col].to_numpy(), t[col].to_numpy())
    if "prompt_embedding" in items.columns:
        out["prompt_embedding"] = t["prompt_embedding"].to_numpy()
    return out


def _interleave(prompts: np.ndarray) -> np.ndarray:
    prompts = np.asarray(prompts, dtype=int)
    return np.stack([2 * prompts, 2 * prompts + 1], axis=1).ravel()


# ---- one point ---------------------------------------------------------------------------


@dataclass
class PointResult:
    record: dict[str, Any]  # what goes in the per-point json
    replicates: dict[int, np.ndarray]  # k -> bootstrap replicates of eps
    scores: list[dict[str, Any]] | None = None  # per-test-item scores


class _Evaluator:
    """Shared test-side randomness per seed (bootstrap draws, k-groupings, orientations)."""

    def __init__(self, data: ComparisonData, cfg: AttackConfig):
        self.data = data
        self.cfg = cfg
        self.n_test = len(data.test)
        self._counts: dict[tuple[int, int], np.ndarray] = {}
        self._groups: dict[tuple[int, int], np.ndarray] = {}
        for k in cfg.test_queries:
            if k > self.n_test:
                raise BbiError(f"k={k} test queries exceed the {self.n_test} test prompts")

    def counts(self, seed: int, n: int) -> np.ndarray:
        key = (seed, n)
        if key not in self._counts:
            rng = np.random.default_rng([seed, n, 7])
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
    ev: _Evaluator,
    bought: np.ndarray,
    budget: int,
    seed: int,
    want_scores: bool = False,
) -> PointResult:
    """Fit on the bought prompts, evaluate on the full test split."""
    cfg = ev.cfg
    _set_seed(adv, seed)
    rows = _interleave(bought)
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
        record["two_sample"] = {k: (float(v) if k != "n" else int(v)) for k, v in res.items()}
        return PointResult(record, {})
    if adv.kind == "pointwise":
        y_tr = X_tr_items["label"].to_numpy()
        thr = _threshold(
            adv, X_tr_items, y_tr, X_tr_items["prompt_id"].to_numpy(), cfg.threshold_folds
        )
        adv.fit(X_tr_items, y_tr)
        s = np.asarray(adv.predict_proba(test_items), dtype=float)
        record["compute_s"] = time.perf_counter() - t0
        s_t, s_o = s[0::2], s[1::2]
        d_by_k = {
            k: stats.pointwise_contrib_k(s_t, s_o, thr, k, ev.group_rng(seed, k))
            for k in cfg.test_queries
        }
        record["threshold"] = float(thr)
        counts = ev.counts(seed, ev.n_test)
        auc = stats.auroc_estimate(s_t, s_o, counts=counts)
        margins = s_t - s_o
        if want_scores:
            scores = [
                {
                    "prompt_id": pid,
                    "category": cat,
                    "score_teacher": float(a),
                    "score_other": float(b),
                    "margin": float(a - b),
                }
                for pid, cat, a, b in zip(
                    data.test["id"], data.test["category"], s_t, s_o, strict=True
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
        # Adversaries that abstain (the judge's inconsistent verdicts) expose `kept_`:
        # eps is then reported on the kept items, with the kept fraction.
        kept = getattr(adv, "kept_", None)
        mask = np.ones(ev.n_test, dtype=bool)
        if kept is not None and len(kept) == ev.n_test:
            mask = np.asarray(kept, dtype=bool)
            record["kept_fraction"] = float(mask.mean())
            if not mask.any():
                raise BbiError(f"{adv.name}: no test item kept at q={budget}, seed {seed}")
        cats = cats[mask]
        d_by_k = {
            k: stats.pairwise_contrib_k(p[mask], y[mask], k, ev.group_rng(seed, k))
            for k in cfg.test_queries
        }
        record["threshold"] = 0.5
        idx = np.arange(ev.n_test)
        pos, neg = mask & (y == 1), mask & (y == 0)
        auc = stats.auroc_estimate(
            p[pos], p[neg], idx[pos], idx[neg], counts=ev.counts(seed, ev.n_test)
        )
        p_correct = np.where(y == 1, p, 1 - p)
        margins = 2 * p_correct - 1
        if want_scores:
            scores = [
                {
                    "prompt_id": pid,
                    "category": cat,
                    "p_a": float(pa),
                    "a_is_teacher": bool(o),
                    "p_correct": float(pc),
                    "margin": float(2 * pc - 1),
                }
                for pid, cat, pa, o, pc in zip(
                    data.test["id"], data.test["category"], p, orient, p_correct, strict=True
                )
            ]
    else:  # pragma: no cover - register() refuses other kinds
        raise RuntimeError(f"unknown adversary kind {adv.kind}")
    est, reps = ev.evaluate(d_by_k, seed)
    record["eps"] = est[1]
    record["auroc"] = auc
    record["eps_k"] = {str(k): est[k] for k in cfg.test_queries}
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
    return PointResult(record, reps, scores)


# ---- the sweep ---------------------------------------------------------------------------


def _default_comparisons(run: RunDir) -> list[str]:
    teacher = run.teacher_alias()
    models = run.models()
    # A/A (null) comparisons first so the calibration row leads every table.
    others = [a for a in models if a != teacher]
    return sorted(others, key=lambda a: (models[a].get("role") != "null", others.index(a)))


def run_attack(
    run: RunDir,
    cfg: AttackConfig,
    compare: Sequence[str] | None = None,
    progress: Callable[[str, int], Any] | None = None,
) -> dict[str, Any]:
    """Run the sweep for each comparison, write attack/ files and results.json["attack"].

    ``progress(description, total)`` may return an object with ``advance()``; the CLI
    passes a rich progress bar, tests pass nothing.
    """
    cfg.validate()
    comparisons = list(compare) if compare else _default_comparisons(run)
    if not comparisons:
        raise BbiError(f"{run.path}: no model besides the teacher to compare")
    adv_classes = {a: adversary_class(a) for a in cfg.adversaries}
    need_emb = any("embeddings" in c.needs for c in adv_classes.values())
    results = run.read_results().get("attack") or {}
    all_comparisons = dict(results.get("comparisons") or {})
    for other in comparisons:
        # Check every comparison before any expensive work (embeddings, fits).
        load_comparison(run, other, max_budget=max(cfg.budgets))
    for other in comparisons:
        data = load_comparison(
            run,
            other,
            embeddings=need_emb,
            progress=progress is not None,
            max_budget=max(cfg.budgets),
        )
        # Many small fits: BLAS threads only oversubscribe the cores, so use one.
        with threadpool_limits(limits=cfg.blas_threads):
            comp = _attack_comparison(run, data, cfg, adv_classes, progress)
        # Comparisons kept from earlier invocations may have used another config.
        comp["config"] = cfg.as_json()
        all_comparisons[other] = comp
        value = {
            "config": {**cfg.as_json(), "statistics": STATS_NOTE},
            "comparisons": all_comparisons,
        }
        run.update_results("attack", value)  # after each comparison: a crash keeps the rest
    return value


STATS_NOTE = (
    "eps = signed TPR - FPR on the held-out test split at a threshold chosen on "
    "cross-validated train predictions (pairwise: 2*acc - 1); CI = paired bootstrap over "
    "test prompts (percentile); p = one-sided sign-flip permutation test within prompt "
    "pairs; per-category p Holm-adjusted; verdicts use the CI upper bound; budget q = "
    "oracle queries (one prompt to one model), q // 2 train prompts answered by both."
)


def _attack_comparison(run, data: ComparisonData, cfg: AttackConfig, adv_classes, progress):
    other = data.other
    out_dir = run.attack_dir / other
    if out_dir.exists():  # stale points of an earlier sweep would mix with this one
        for p in list(out_dir.glob("*__*__q*__s*.json")) + list(out_dir.glob("*.scores.jsonl")):
            p.unlink()
    ev = _Evaluator(data, cfg)
    max_q = max(cfg.budgets)
    full_strategy, full_seed = cfg.strategies[0], (0 if 0 in cfg.seeds else cfg.seeds[0])

    # 1. Acquisition orders (shared by all adversaries).
    bar = (
        progress(f"{other}: acquisition", len(cfg.strategies) * len(cfg.seeds))
        if progress
        else None
    )
    orders: dict[tuple[str, int], np.ndarray] = {}
    acq_time: dict[str, float] = {}
    for strat in cfg.strategies:
        for seed in cfg.seeds:
            t0 = time.perf_counter()
            order, oracle = acquisition_order(strat, data.pool, max_q, seed)
            acq_time[strat] = acq_time.get(strat, 0.0) + time.perf_counter() - t0
            if oracle.revealed > max_q:
                raise RuntimeError("acquisition revealed more responses than the budget")
            orders[(strat, seed)] = order
            if bar:
                bar.advance()

    # 2. Points.
    all_items = pd.concat([data.train_items, data.test_items], ignore_index=True)
    n_points = len(cfg.adversaries) * len(cfg.strategies) * len(cfg.seeds) * len(cfg.budgets)
    bar = progress(f"{other}: adversaries", n_points) if progress else None
    adversaries: dict[str, Any] = {}
    examples_margin: dict[str, dict[str, float]] = {}
    for name, cls in adv_classes.items():
        context = {
            "run": run,
            "teacher": run.teacher_alias(),
            "other": other,
            "backend_options": cfg.backend_options,
            "seed": full_seed,
        }
        adv = get_adversary(name, context=context, **cfg.adversary_params.get(name, {}))
        t0 = time.perf_counter()
        if cls.kind == "pairwise":
            adv.prepare(pairwise_frame(all_items, np.ones(len(all_items) // 2, dtype=bool)))
        else:
            adv.prepare(all_items)
        prepare_s = time.perf_counter() - t0
        points: dict[tuple[str, int, int], PointResult] = {}
        for strat in cfg.strategies:
            for seed in cfg.seeds:
                for q in cfg.budgets:
                    bought = orders[(strat, seed)][: prompts_for_budget(q)]
                    full = (strat, seed, q) == (full_strategy, full_seed, max_q)
                    res = run_point(adv, data, ev, bought, q, seed, want_scores=full)
                    res.record.update(
                        strategy=strat,
                        comparison=other,
                        reference="teacher",
                        acquisition_s=acq_time[strat] / len(cfg.seeds),
                    )
                    run.write_json(
                        f"attack/{other}/{name}__{strat}__q{q}__s{seed}.json", res.record
                    )
                    points[(strat, seed, q)] = res
                    if bar:
                        bar.advance()
        full_res = points[(full_strategy, full_seed, max_q)]
        if full_res.scores is not None:
            path = out_dir / f"{name}.scores.jsonl"
            append_jsonl(path, full_res.scores)
            for rec in full_res.scores:
                examples_margin.setdefault(rec["prompt_id"], {})[name] = rec["margin"]
        adversaries[name] = _summarise(name, cls, points, full_res, cfg, prepare_s)
    verdict = _verdict(adversaries, cfg)
    examples = _examples(data, examples_margin, cfg.n_examples)
    return {
        "reference": "teacher",
        "role": data.role,
        "n_train": int(len(data.train)),
        "n_test": int(len(data.test)),
        "adversaries": adversaries,
        "verdict": verdict,
        "examples": examples,
    }


def _summarise(name, cls, points, full_res: PointResult, cfg: AttackConfig, prepare_s: float):
    rec = full_res.record
    curves: dict[str, list[dict[str, Any]]] = {}
    for strat in cfg.strategies:
        curve = []
        for q in cfg.budgets:
            pts = [points[(strat, s, q)] for s in cfg.seeds]
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
                        "p_median": float(np.median(ps)),
                        "statistic": float(
                            np.mean([p.record["two_sample"]["statistic"] for p in pts])
                        ),
                        "n": pts[0].record["two_sample"]["n"],
                    }
                )
                continue
            for k in cfg.test_queries:
                vals = [p.record["eps_k"][str(k)]["value"] for p in pts]
                curve.append(
                    {
                        "q": q,
                        "k": k,
                        "value": float(np.mean(vals)),
                        "ci": stats.pooled_ci([p.replicates[k] for p in pts]),
                        "n": pts[0].record["eps_k"][str(k)]["n"],
                        "n_seeds": len(pts),
                        "seed_values": [float(v) for v in vals],
                        "p_median": float(np.median([p.record["eps_k"][str(k)]["p"] for p in pts])),
                        "compute_s": float(np.mean([p.record["compute_s"] for p in pts])),
                    }
                )
        curves[strat] = curve
    out: dict[str, Any] = {
        "kind": cls.kind,
        "eps": rec.get("eps"),
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


def _verdict(adversaries: dict[str, Any], cfg: AttackConfig) -> dict[str, Any]:
    eps0 = cfg.epsilon
    pts = []
    for name, a in adversaries.items():
        for strat, curve in a["curves"].items():
            for pt in curve:
                if pt["k"] == 1 and pt["value"] is not None:
                    pts.append((name, strat, pt))
    if not pts:
        return {
            "epsilon": eps0,
            "indistinguishable": None,
            "status": "no-estimate",
            "text": "no adversary produced an advantage estimate",
        }
    top = max(pts, key=lambda t: t[2]["value"])
    max_eps = {
        "value": top[2]["value"],
        "ci": top[2]["ci"],
        "adversary": top[0],
        "strategy": top[1],
        "q": top[2]["q"],
    }
    max_q = max(cfg.budgets)
    broken = [t for t in pts if t[2]["ci"][0] > eps0]
    if broken:
        name, strat, pt = min(broken, key=lambda t: (t[2]["q"], -t[2]["value"]))
        return {
            "epsilon": eps0,
            "indistinguishable": False,
            "status": "distinguishable",
            "broken_by": name,
            "strategy": strat,
            "at_budget": pt["q"],
            "max_eps": max_eps,
            "text": (
                f"distinguishable: {name} reaches eps {pt['value']:.2f} "
                f"[{pt['ci'][0]:.2f}, {pt['ci'][1]:.2f}] > {eps0:.2f} with q={pt['q']}"
            ),
        }
    worst = max(pts, key=lambda t: t[2]["ci"][1])
    if worst[2]["ci"][1] <= eps0:
        return {
            "epsilon": eps0,
            "indistinguishable": True,
            "status": "indistinguishable",
            "broken_by": None,
            "at_budget": max_q,
            "max_eps": max_eps,
            "text": (
                f"indistinguishable at eps <= {eps0:.2f} with q <= {max_q} queries "
                f"against {', '.join(adversaries)} (largest CI upper bound "
                f"{worst[2]['ci'][1]:.2f}, {worst[0]})"
            ),
        }
    name, strat, pt = worst
    return {
        "epsilon": eps0,
        "indistinguishable": False,
        "status": "inconclusive",
        "broken_by": None,
        "at_budget": pt["q"],
        "max_eps": max_eps,
        "text": (
            f"not shown indistinguishable at eps <= {eps0:.2f}: {name} eps "
            f"{pt['value']:.2f} [{pt['ci'][0]:.2f}, {pt['ci'][1]:.2f}] at q={pt['q']} "
            f"has a CI upper bound above {eps0:.2f}, none clearly above"
        ),
    }


def _examples(data: ComparisonData, margins: dict[str, dict[str, float]], n: int):
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


def revealed_ok(record: dict[str, Any]) -> bool:
    """The budget invariant a per-point json must satisfy (used by tests and reports)."""
    q = record["queries"]
    return q["revealed"] <= q["budget"] and q["revealed"] == revealed_for_budget(q["budget"])
