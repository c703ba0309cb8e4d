"""The attack: budget sweeps of adversaries against (teacher, other) comparisons.

For every comparison (teacher vs one other alias of the run), adversary, acquisition
strategy, budget q and seed: buy ``q // 2`` train prompts with the strategy (see
``discriminators.acquisition``) and evaluate one point (``discriminators.evaluate``: fit
on the bought items only, threshold from cross-validated *train* predictions, scores on
the fixed full test split). With ``k`` test queries the adversary sums log-odds over
groups of k test prompts -> eps(q, k). The pieces: ``discriminators.comparison`` (loading),
``discriminators.evaluate`` (one point, summaries), ``discriminators.verdict`` (the
declared primary analysis), ``discriminators.deltas`` (distilled vs base), and this module
(configuration and the sweep). Each point is written to
``attack/<comparison>/<adversary>__<strategy>__q<budget>__s<seed>.json``; the aggregate
goes to ``results.json["attack"]`` (docs/run-directory.md).

A sweep writes its detail files into a fresh staging directory inside the run directory
and moves them into ``attack/`` only at the end, next to the results.json update: a sweep
that fails or is killed leaves the previous ``attack/`` and results.json as they were.

The verdict for ``--epsilon X`` is ``discriminators.verdict``: a point selected on half the
test prompts and confirmed on the other half, with family-wise error control over it and
every category x adversary test (docs/statistics.md, "The verdict").
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
from threadpoolctl import threadpool_limits

from bbi.config import MAX_RESAMPLES, MAX_SEEDS, MIN_RESAMPLES, AttackSettings
from bbi.errors import BbiError
from bbi.results_schema import ATTACK_SCHEMA_VERSION, validated_attack
from bbi.runstore import RunDir, append_jsonl, write_json
from discriminators.acquisition import (
    STRATEGIES,
    acquisition_order,
    prompts_for_budget,
    revealed_for_budget,
)
from discriminators.base import (
    REGISTRY,
    adversary_class,
    check_params,
    get_adversary,
    known_adversaries,
)
from discriminators.comparison import (
    ComparisonData,
    comparison_from_paired,
    load_comparison,
    pairwise_frame,
)
from discriminators.deltas import distill_base, distill_deltas, full_budget_contributions
from discriminators.evaluate import (
    Evaluator,
    PointResult,
    examples_by_category,
    run_point,
    summarise,
)
from discriminators.verdict import attack_verdict, calibration, sequential_curve

_DEFAULTS = AttackSettings()  # every default of a sweep is stated once, in bbi.config
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
    ev = Evaluator(data, cfg)
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
        adversaries[name] = summarise(name, cls, points, full_res, cfg, prepare_s)
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
    examples = examples_by_category(data, examples_margin, cfg.n_examples)
    return {
        "reference": "teacher",
        "role": data.role,
        "n_train": int(len(data.train)),
        "n_test": int(len(data.test)),
        "adversaries": adversaries,
        "verdict": verdict,
        "examples": examples,
    }


def revealed_ok(record: dict[str, Any]) -> bool:
    """The budget invariant a per-point json must satisfy (used by tests and reports)."""
    q = record["queries"]
    return q["revealed"] <= q["budget"] and q["revealed"] == revealed_for_budget(q["budget"])


__all__ = [
    "STAGING_PREFIX",
    "STATS_NOTE",
    "AttackConfig",
    "ComparisonData",
    "Evaluator",
    "attack_verdict",
    "calibration",
    "comparison_from_paired",
    "distill_base",
    "distill_deltas",
    "full_budget_contributions",
    "load_comparison",
    "pairwise_frame",
    "revealed_ok",
    "run_attack",
    "run_point",
]
