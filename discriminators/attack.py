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

A sweep writes its detail files into a fresh staging directory inside the run directory
and moves them into ``attack/`` only at the end, next to the results.json update: a sweep
that fails or is killed leaves the previous ``attack/`` and results.json as they were.

Verdict for ``--epsilon X`` (k = 1, every adversary, strategy and budget):
``indistinguishable`` when every eps CI upper bound is <= X; ``distinguishable`` when some
CI lower bound is > X (reported: the smallest such budget); ``inconclusive`` otherwise.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold
from threadpoolctl import threadpool_limits

from bbi import stats
from bbi.config import MAX_RESAMPLES, MAX_SEEDS, MIN_RESAMPLES, AttackSettings
from bbi.errors import BbiError
from bbi.results_schema import ATTACK_SCHEMA_VERSION, validated_attack
from bbi.runstore import RunDir, append_jsonl, read_json_object, read_jsonl, write_json
from discriminators.acquisition import (
    STRATEGIES,
    Pool,
    acquisition_order,
    prompts_for_budget,
    revealed_for_budget,
)
from discriminators.base import (
    REGISTRY,
    Adversary,
    adversary_class,
    check_params,
    get_adversary,
    known_adversaries,
)
from discriminators.verdict import decide, sequential_curve

_DEFAULTS = AttackSettings()  # every default of a sweep is stated once, in bbi.config
MIN_PROMPTS_FOR_CV_THRESHOLD = 10
# Detail files of a sweep in progress: <run>/.attack-staging-<pid>-<random>/<comparison>/.
STAGING_PREFIX = ".attack-staging-"


@dataclass
class AttackConfig:
    """Everything that defines a sweep; recorded verbatim in results.json."""

    budgets: list[int] = field(default_factory=lambda: list(_DEFAULTS.budgets))
    strategies: list[str] = field(default_factory=lambda: list(_DEFAULTS.strategies))
    seeds: list[int] = field(default_factory=lambda: list(range(_DEFAULTS.seeds)))
    test_queries: list[int] = field(default_factory=lambda: list(_DEFAULTS.test_queries))
    epsilon: float = _DEFAULTS.epsilon
    alpha: float = _DEFAULTS.alpha
    adversaries: list[str] = field(default_factory=lambda: list(_DEFAULTS.adversaries))
    n_bootstrap: int = _DEFAULTS.n_bootstrap
    n_permutations: int = _DEFAULTS.n_permutations
    threshold_folds: int = 2
    n_examples: int = 3
    blas_threads: int = 1
    adversary_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: AttackSettings, **extra: Any) -> AttackConfig:
        """The sweep described by a validated ``attack:`` config section (or CLI flags)."""
        return cls(
            budgets=list(settings.budgets),
            strategies=list(settings.strategies),
            seeds=list(range(settings.seeds)),
            test_queries=list(settings.test_queries),
            epsilon=settings.epsilon,
            alpha=settings.alpha,
            adversaries=list(settings.adversaries),
            n_bootstrap=settings.n_bootstrap,
            n_permutations=settings.n_permutations,
            adversary_params={k: dict(v) for k, v in settings.params.items()},
            **extra,
        )

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
        for flag, n in (
            ("--n-bootstrap", self.n_bootstrap),
            ("--n-permutations", self.n_permutations),
        ):
            if not MIN_RESAMPLES <= n <= MAX_RESAMPLES:
                raise BbiError(f"{flag} must be in {MIN_RESAMPLES}..{MAX_RESAMPLES:,}, got {n}")
        if self.n_permutations < math.ceil(1 / self.alpha):
            raise BbiError(
                f"--n-permutations {self.n_permutations} cannot give p < --alpha {self.alpha:g} "
                f"(the smallest p is 1/(1 + n)); use at least {math.ceil(1 / self.alpha)}"
            )
        if len(self.seeds) > MAX_SEEDS:
            raise BbiError(f"--seeds must be <= {MAX_SEEDS}, got {len(self.seeds)}")
        self._validate_adversary_params()

    def _validate_adversary_params(self) -> None:
        """Every ``--param NAME.KEY=VALUE`` names an attacked adversary and a valid value."""
        if not isinstance(self.adversary_params, dict):
            raise BbiError("adversary_params must map adversary names to parameter mappings")
        for name, params in self.adversary_params.items():
            keys = list(params) if isinstance(params, dict) else []
            where = f"--param {name}.{keys[0]}" if keys else f"--param {name}"
            if not isinstance(params, dict):
                raise BbiError(f"{where}: expected a mapping of parameter names to values")
            if name not in known_adversaries():
                raise BbiError(
                    f"{where}: unknown adversary {name!r}; known: {', '.join(sorted(REGISTRY))}"
                )
            if name not in self.adversaries:
                raise BbiError(
                    f"{where}: adversary {name!r} is not attacked "
                    f"(--adversary {','.join(self.adversaries)})"
                )
            check_params(name, params)

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
    d: np.ndarray | None = None  # per-test-prompt contributions at k = 1 (test order)


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
            for k in cfg.test_queries
        }
        record["threshold"] = 0.5
        idx = np.arange(ev.n_test)
        pos, neg = y == 1, y == 0
        auc = stats.auroc_estimate(
            p_eff[pos], p_eff[neg], idx[pos], idx[neg], counts=ev.counts(seed, ev.n_test)
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
    return PointResult(record, reps, scores, d=np.asarray(d_by_k[1], dtype=float))


# ---- the sweep ---------------------------------------------------------------------------


def _default_comparisons(run: RunDir) -> list[str]:
    teacher = run.teacher_alias()
    models = run.models()
    # A/A (null) comparisons first so the calibration row leads every table.
    others = [a for a in models if a != teacher]
    return sorted(others, key=lambda a: (models[a].get("role") != "null", others.index(a)))


def _context(run: RunDir, other: str, cfg: AttackConfig) -> dict[str, Any]:
    """What adversaries with a ``context`` keyword receive (see discriminators.base)."""
    return {
        "run": run,
        "teacher": run.teacher_alias(),
        "other": other,
        "backend_options": cfg.backend_options,
        "seed": 0 if 0 in cfg.seeds else cfg.seeds[0],
    }


def run_attack(
    run: RunDir,
    cfg: AttackConfig,
    compare: Sequence[str] | None = None,
    progress: Callable[[str, int], Any] | None = None,
) -> dict[str, Any]:
    """Run the sweep for each comparison, write attack/ files and results.json["attack"].

    ``progress(description, total)`` may return an object with ``advance()``; the CLI
    passes a rich progress bar, tests pass nothing. All detail files are staged and
    published together with results.json at the end, so a failed or killed sweep
    changes nothing in the run directory.
    """
    cfg.validate()
    comparisons = list(compare) if compare else _default_comparisons(run)
    if not comparisons:
        raise BbiError(f"{run.path}: no model besides the teacher to compare")
    adv_classes = {a: adversary_class(a) for a in cfg.adversaries}
    need_emb = any(
        "embeddings" in get_adversary(a, **cfg.adversary_params.get(a, {})).requires()
        for a in cfg.adversaries
    )
    results = run.read_results().get("attack") or {}
    # Comparisons attacked earlier are kept, unless an older bbi wrote them (other schema).
    kept = results.get("schema_version") == ATTACK_SCHEMA_VERSION
    all_comparisons = dict(results.get("comparisons") or {}) if kept else {}
    for other in comparisons:
        # Check every comparison and adversary before any expensive work (embeddings, fits).
        load_comparison(run, other, max_budget=max(cfg.budgets))
        for name in cfg.adversaries:
            params = cfg.adversary_params.get(name, {})
            get_adversary(name, context=_context(run, other, cfg), **params).preflight()
    _remove_stale_staging(run)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=run.path))
    try:
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
                comp = _attack_comparison(run, data, cfg, adv_classes, progress, staging / other)
            # Comparisons kept from earlier invocations may have used another config.
            comp["config"] = cfg.as_json()
            all_comparisons[other] = comp
        value = validated_attack({
            "config": {**cfg.as_json(), "statistics": STATS_NOTE},
            "comparisons": all_comparisons,
            # Recomputed from the detail files of every comparison (this sweep's staged
            # ones, earlier ones from attack/), so they always match "comparisons".
            "deltas": distill_deltas(
                run, all_comparisons, cfg, {other: staging / other for other in comparisons}
            ),
        })  # fmt: skip
        _publish(run, staging, comparisons, value)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return value


def _publish(run: RunDir, staging: Path, comparisons: Sequence[str], value: dict) -> None:
    """Swap each staged ``<comparison>/`` into ``attack/`` (renames), then update
    results.json; the previous directories are deleted only after that update, and put
    back if it fails."""
    previous = staging / ".previous"
    previous.mkdir()
    run.attack_dir.mkdir(parents=True, exist_ok=True)
    moved: list[str] = []
    installed: list[str] = []
    try:
        for other in comparisons:
            src, dst = staging / other, run.attack_dir / other
            if dst.exists():
                os.replace(dst, previous / other)
                moved.append(other)
            if src.exists():
                os.replace(src, dst)
                installed.append(other)
        run.update_results("attack", value)
    except BaseException:
        for other in installed:
            shutil.rmtree(run.attack_dir / other, ignore_errors=True)
        for other in moved:
            os.replace(previous / other, run.attack_dir / other)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def _remove_stale_staging(run: RunDir) -> None:
    """Delete staging directories left by sweeps that were killed (their process is gone)."""
    for path in run.path.glob(f"{STAGING_PREFIX}*"):
        pid_text = path.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if not path.is_dir() or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # alive (another user's process) or unknowable: leave it


# ---- distilled vs base student ----------------------------------------------------------
# Delta-eps = eps(distilled vs teacher) - eps(base vs teacher), paired by test prompt: both
# comparisons' full-budget points (largest budget, first strategy, seed 0: the point whose
# eps the comparison reports) are scored on the same test prompts, so each prompt gives
# d_i(distilled) - d_i(base), where d_i is its contribution to eps (bbi.stats). See
# docs/statistics.md ("Distillation: paired Delta").


def _canonical_spec(spec: Any) -> str | None:
    if not isinstance(spec, str):
        return None
    from bbi.specs import parse_spec

    try:
        return str(parse_spec(spec))
    except BbiError:
        return spec.strip()


def distill_base(
    alias: str, record: Any, models: dict[str, dict], compared: dict[str, Any]
) -> tuple[str, str] | None:
    """(base alias, how it was found) for a distilled student, when the base was attacked.

    The distill record's ``base`` spec names the model it was trained from; the base is
    the attacked student alias with that spec. Without a match, alias ``student`` (the
    pipeline's base) is used when it was attacked.
    """
    students = [a for a, c in compared.items() if a != alias and (c or {}).get("role") == "student"]
    want = _canonical_spec(record.get("base")) if isinstance(record, dict) else None
    if want is not None:
        for other in students:
            if _canonical_spec((models.get(other) or {}).get("spec")) == want:
                return other, "distill record"
    if alias != "student" and "student" in students:
        return "student", "default alias"
    return None


def _point_threshold(directory: Path, adv: str, entry: dict) -> float | None:
    path = (
        directory
        / f"{adv}__{entry.get('strategy')}__q{entry.get('budget')}__s{entry.get('seed')}.json"
    )
    if not path.exists():
        return None
    thr = read_json_object(path).get("threshold")
    return float(thr) if isinstance(thr, (int, float)) else None


def full_budget_contributions(
    directory: Path, adv: str, entry: dict
) -> dict[str, tuple[str, float]] | None:
    """prompt_id -> (category, d_i) at a comparison's full-budget point; None if unknown.

    Abstained items (the judge) contribute 0, as in eps itself. Scores files written before ``d`` was
    recorded are read back through the point's threshold (pointwise) or p_correct
    (pairwise without abstention).
    """
    path = directory / f"{adv}.scores.jsonl"
    if not path.exists():
        return None
    out: dict[str, tuple[str, float]] = {}
    thr: float | None = None
    for rec in read_jsonl(path):
        if "d" in rec:
            d = rec["d"]
        elif "score_teacher" in rec:
            if thr is None:
                thr = _point_threshold(directory, adv, entry)
                if thr is None:
                    return None
            d = float(rec["score_teacher"] >= thr) - float(rec["score_other"] >= thr)
        elif "p_correct" in rec and entry.get("kept_fraction") in (None, 1.0):
            d = float(np.sign(float(rec["p_correct"]) - 0.5))
        else:
            return None
        if d is None or rec.get("kept") is False:
            d = 0.0
        out[str(rec["prompt_id"])] = (str(rec.get("category")), float(d))
    return out


def _point(entry: dict) -> dict[str, Any]:
    return {
        "budget": entry.get("budget"),
        "strategy": entry.get("strategy"),
        "seed": entry.get("seed"),
        "k": 1,
    }


def _adversary_delta(
    adv: str, base: dict, dist: dict, base_dir: Path, dist_dir: Path, cfg: AttackConfig
) -> tuple[dict[str, Any] | None, str | None]:
    """(the Delta-eps entry, None) or (None, why it cannot be computed)."""
    pb, pd_ = _point(base), _point(dist)
    if pb != pd_:
        return None, (
            f"full-budget points differ (base q={pb['budget']} {pb['strategy']} s{pb['seed']}, "
            f"distilled q={pd_['budget']} {pd_['strategy']} s{pd_['seed']}); rerun bbi attack "
            "on both"
        )
    cb = full_budget_contributions(base_dir, adv, base)
    cd = full_budget_contributions(dist_dir, adv, dist)
    if cb is None or cd is None:
        return None, "per-prompt scores are missing; rerun bbi attack on both comparisons"
    common = sorted(set(cb) & set(cd))
    if not common:
        return None, "no test prompt scored in both comparisons"
    a = np.array([cd[pid][1] for pid in common])
    b = np.array([cb[pid][1] for pid in common])
    cats = [cb[pid][0] for pid in common]
    seed = int(pb["seed"]) if isinstance(pb["seed"], int) else 0
    return {
        "delta": stats.paired_delta(a, b, cfg.n_bootstrap, cfg.n_permutations, seed=seed),
        "eps_base": base.get("eps"),
        "eps_distilled": dist.get("eps"),
        "point": pb,
        "per_category": stats.paired_delta_per_category(
            a, b, cats, cfg.alpha, cfg.n_bootstrap, cfg.n_permutations, seed=seed
        ),
    }, None


def _similarity_delta(
    run: RunDir, base: str, alias: str, cfg: AttackConfig, similarity: dict
) -> dict[str, Any] | None:
    """Paired Delta of per-prompt cosine to the teacher on the test prompts."""
    if not run.similarity_path.exists():
        return None
    cos: dict[str, dict[str, float]] = {base: {}, alias: {}}
    for rec in read_jsonl(run.similarity_path, allow_torn_tail=True):
        who, c = rec.get("student"), rec.get("cosine")
        ok = who in cos and rec.get("split") == "test" and isinstance(c, (int, float))
        if ok and np.isfinite(c):
            cos[who][str(rec.get("prompt_id"))] = float(c)
    common = sorted(set(cos[base]) & set(cos[alias]))
    if not common:
        return None
    out = stats.paired_delta(
        np.array([cos[alias][pid] for pid in common]),
        np.array([cos[base][pid] for pid in common]),
        cfg.n_bootstrap,
        cfg.n_permutations,
        seed=0,
    )
    out["base"] = (similarity.get(base) or {}).get("test")
    out["distilled"] = (similarity.get(alias) or {}).get("test")
    return out


def distill_deltas(
    run: RunDir, comps: dict[str, Any], cfg: AttackConfig, staged: dict[str, Path]
) -> dict[str, Any]:
    """``results["attack"]["deltas"]``: every attacked distilled student vs its base.

    ``staged`` maps the comparisons of this sweep to their (not yet published) detail
    directories; the others are read from ``attack/``.
    """
    results = run.read_results()
    distill = results.get("distill") or {}
    similarity = results.get("similarity") or {}
    models = run.models()
    out: dict[str, Any] = {}
    for alias, comp in comps.items():
        if alias not in distill or (comp or {}).get("role") != "student":
            continue
        found = distill_base(alias, distill[alias], models, comps)
        if found is None:
            continue
        base, how = found
        base_dir = staged.get(base, run.attack_dir / base)
        dist_dir = staged.get(alias, run.attack_dir / alias)
        advs: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        base_advs = comps[base].get("adversaries") or {}
        for adv, entry in (comp.get("adversaries") or {}).items():
            if entry.get("kind") == "test" or entry.get("eps") is None or adv not in base_advs:
                continue  # two-sample tests report no eps; unshared adversaries pair nothing
            delta, why = _adversary_delta(adv, base_advs[adv], entry, base_dir, dist_dir, cfg)
            if delta is None:
                skipped[adv] = str(why)
            else:
                advs[adv] = delta
        out[alias] = {
            "base": base,
            "base_from": how,
            "method": (distill[alias] or {}).get("method"),
            "adversaries": advs,
            "skipped": skipped,
            "similarity": _similarity_delta(run, base, alias, cfg, similarity),
            "reading": stats.delta_reading(
                {a: e["delta"] for a, e in advs.items()}, alpha=cfg.alpha
            ),
        }
    return out


STATS_NOTE = (
    "eps = signed TPR - FPR on the held-out test split at a threshold chosen on "
    "cross-validated train predictions (pairwise: 2*acc - 1); CI = paired bootstrap over "
    "test prompts (percentile); p = one-sided sign-flip permutation test within prompt "
    "pairs; verdict = point selected on half the test prompts, confirmed on the other "
    "half by a betting test, weighted Holm over it and every category x adversary test; "
    "budget q = oracle queries (one prompt to one model), q // 2 train prompts answered "
    "by both."
)


def _attack_comparison(
    run, data: ComparisonData, cfg: AttackConfig, adv_classes, progress, out_dir: Path
):
    """One comparison's sweep; its detail files go to ``out_dir`` (a fresh staging dir)."""
    other = data.other
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
    seed_means: dict[str, dict[tuple[str, int], np.ndarray]] = {}
    examples_margin: dict[str, dict[str, float]] = {}
    for name, cls in adv_classes.items():
        context = _context(run, other, cfg)
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
                    write_json(out_dir / f"{name}__{strat}__q{q}__s{seed}.json", res.record)
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
        if cls.kind != "test":
            seed_means[name] = {
                (strat, q): np.mean([points[(strat, s, q)].d for s in cfg.seeds], axis=0)
                for strat in cfg.strategies
                for q in cfg.budgets
            }
            adversaries[name]["sequential"] = sequential_curve(
                seed_means[name], cfg.strategies[0], cfg.alpha, seed=full_seed
            )
    test_cats = data.test["category"].astype(str).to_numpy()
    verdict = attack_verdict(adversaries, seed_means, test_cats, cfg, full_seed)
    if data.role == "null":
        verdict["calibration"] = calibration(adversaries, seed_means, test_cats, cfg, full_seed)
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
            for k in cfg.test_queries:
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
            p for p in curves[cfg.strategies[0]] if p["q"] == max(cfg.budgets) and p["k"] == 1
        )
        eps = {"value": pt["value"], "ci": pt["ci"], "n": pt["n"], "p": pt["p"]}
    out: dict[str, Any] = {
        "kind": cls.kind,
        "eps": eps,
        "n_seeds": len(cfg.seeds),
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


def _verdict_inputs(adversaries: dict[str, Any]) -> tuple[dict, dict]:
    upper: dict[str, list[tuple[str, int, float]]] = {}
    excluded: dict[str, str] = {}
    for name, a in adversaries.items():
        if a["kind"] == "test":
            excluded[name] = "two-sample test without an eps; its p-values are reported beside"
            continue
        upper[name] = [
            (strat, int(pt["q"]), float(pt["ci"][1]))
            for strat, curve in a["curves"].items()
            for pt in curve
            if pt["value"] is not None
        ]
    return upper, excluded


def attack_verdict(
    adversaries: dict[str, Any],
    seed_means: dict[str, dict[tuple[str, int], np.ndarray]],
    categories: np.ndarray,
    cfg: AttackConfig,
    seed: int,
) -> dict[str, Any]:
    """The declared primary analysis (``discriminators.verdict``); category findings are
    written back into each adversary's ``per_category`` so every table shows the
    family-wise (not per-adversary) significance."""
    upper, excluded = _verdict_inputs(adversaries)
    out = decide(seed_means, upper, categories, cfg, cfg.epsilon, excluded, seed=seed)
    # Adversaries that read the teacher beyond its samples spend queries outside q.
    out["gray_box"] = {
        n: a["notes"]
        for n, a in adversaries.items()
        if isinstance(a.get("notes"), str) and a["notes"].startswith("gray-box")
    }
    for row in out.get("categories", []):
        adversaries[row["adversary"]]["per_category"][row["category"]] = {
            **row["eps"],
            "p": row["p"],
            "p_holm": row["p_holm"],
            "significant": row["significant"],
            "h0": f"eps <= {cfg.epsilon:g}",
        }
    return out


def calibration(
    adversaries: dict[str, Any],
    seed_means: dict[str, dict[tuple[str, int], np.ndarray]],
    categories: np.ndarray,
    cfg: AttackConfig,
    seed: int,
) -> dict[str, Any]:
    """The A/A check: the verdict's whole family at tolerance 0 must reject nothing."""
    upper, excluded = _verdict_inputs(adversaries)
    res = decide(seed_means, upper, categories, cfg, 0.0, excluded, seed=seed)
    if res["status"] == "no-estimate":
        return {"eps0": 0.0, "ok": None, "text": res["text"]}
    rejected = [
        *(["overall"] if res["primary"]["rejected"] else []),
        *(f"{r['category']}/{r['adversary']}" for r in res["categories"] if r["significant"]),
    ]
    tests = [res["primary"]["p_holm"], *(r["p_holm"] for r in res["categories"])]
    return {
        "eps0": 0.0,
        "ok": not rejected,
        "rejected": rejected,
        "family_size": res["family_size"],
        "min_p_holm": float(min(tests)),
        "text": (
            f"A/A calibration holds: none of {res['family_size']} tests rejects eps = 0 "
            f"(smallest Holm p {min(tests):.3g})"
            if not rejected
            else f"A/A calibration FAILS: eps > 0 found in {', '.join(rejected)}"
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
