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

With ``n_jobs`` other than 1 the acquisition orders and the points run in worker processes
(joblib, loky): one task per (strategy, seed) for the orders, then, with every adversary
prepared in this process, one task per (adversary, strategy, seed) running its budgets.
Every point's randomness comes from its own seed, each task starts from the adversary as
``prepare`` left it, and the results come back to this process, which writes every file in
the serial order: the sweep is byte-identical to the serial one except for the wall-clock
fields (``TIMING_FIELDS``). Adversaries that load models run here (``_IN_PROCESS``).
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import tempfile
import threading
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
from discriminators.verdict import (
    attack_verdict,
    calibration,
    declared_sequential,
    sequential_curve,
)
from discriminators.verdict_cf import adopt_crossfit, crossfit_verdict

_DEFAULTS = AttackSettings()  # every default of a sweep is stated once, in bbi.config
# Detail files of a sweep in progress: <run>/.attack-staging-<pid>-<random>/<comparison>/.
STAGING_PREFIX = ".attack-staging-"
# The record fields (per-point json and results.json["attack"]) that measure wall-clock
# time: the only ones that differ between two runs of one sweep (e.g. serial vs n_jobs).
TIMING_FIELDS = frozenset({"acquisition_s", "compute_s", "prepare_s"})
# Adversaries whose points always run in this process, whatever n_jobs: they load or call
# models (torch threads, GPU memory, an endpoint's rate limit), so one copy per worker
# process would cost more than it saves. Any adversary that requires a "backend" runs here
# too, and so does one whose class sets ``parallel_points = False``.
_IN_PROCESS = frozenset({"encoder", "judge", "likelihood"})


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
    n_jobs: int = _DEFAULTS.n_jobs  # worker processes (-1: all cores); not recorded
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
            n_jobs=settings.n_jobs,
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
        if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, int):
            raise BbiError(f"--n-jobs must be an integer, got {self.n_jobs!r}")
        if self.n_jobs < 1 and self.n_jobs != -1:
            raise BbiError(f"--n-jobs must be >= 1 or -1 (all cores), got {self.n_jobs}")
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
        out.pop("n_jobs", None)  # how the sweep ran, not what it measured
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

    # Worker processes, each taking whole (strategy, seed) groups; 1: the serial sweep.
    n_workers = min(_workers(cfg.n_jobs), len(cfg.strategies) * len(cfg.seeds))
    # Inputs of worker tasks, written once instead of pickled into every task; inside the
    # staging dir, so a failed sweep's go with it (only staging/<comparison>/ is published).
    scratch = (
        Path(tempfile.mkdtemp(prefix=".worker-inputs-", dir=out_dir.parent))
        if n_workers > 1
        else None
    )

    # 1. Acquisition orders (shared by all adversaries).
    bar = (
        progress(f"{other}: acquisition", len(cfg.strategies) * len(cfg.seeds))
        if progress
        else None
    )
    orders: dict[tuple[str, int], np.ndarray] = {}
    acq_time: dict[str, float] = {}
    all_items = pd.concat([data.train_items, data.test_items], ignore_index=True)
    acquired = None
    files: dict[str, str] = {}  # adversary -> its prepared copy, for the workers
    prepared_s: dict[str, float] = {}
    if scratch is not None:
        # The workers compute the orders while this process prepares the adversaries that
        # run there (step 2): all of their (adversary, strategy, seed) groups then go out
        # in one stream, so no worker idles at the end of each adversary.
        acquiring = _Background(_acquire_in_workers, data, cfg, max_q, n_workers, bar)
        for name, cls in adv_classes.items():
            context = _context(run, other, cfg)
            adv = get_adversary(name, context=context, **cfg.adversary_params.get(name, {}))
            if _in_workers(name, adv):
                prepared_s[name] = _prepare(adv, cls, all_items)
                files[name] = _dump(scratch / f"adversary-{len(files)}.pkl", adv)
            del adv  # the workers load their own copies
        acquired = acquiring.result()
    for strat in cfg.strategies:
        for seed in cfg.seeds:
            if acquired is not None:
                order, revealed, seconds = acquired[(strat, seed)]
                acq_time[strat] = acq_time.get(strat, 0.0) + seconds
                if revealed > max_q:
                    raise RuntimeError("acquisition revealed more responses than the budget")
                orders[(strat, seed)] = order
                continue
            t0 = time.perf_counter()
            order, oracle = acquisition_order(strat, data.pool, max_q, seed)
            acq_time[strat] = acq_time.get(strat, 0.0) + time.perf_counter() - t0
            if oracle.revealed > max_q:
                raise RuntimeError("acquisition revealed more responses than the budget")
            orders[(strat, seed)] = order
            if bar:
                bar.advance()

    # 2. Points.
    n_points = len(cfg.adversaries) * len(cfg.strategies) * len(cfg.seeds) * len(cfg.budgets)
    bar = progress(f"{other}: adversaries", n_points) if progress else None
    adversaries: dict[str, Any] = {}
    seed_means: dict[str, dict[tuple[str, int], np.ndarray]] = {}
    examples_margin: dict[str, dict[str, float]] = {}
    full_d: dict[str, np.ndarray] = {}  # full-budget point, one seed: the sequential test
    # With workers, the points of the prepared adversaries come back here and are written
    # below, in the serial order; the others run here.
    done: dict[str, dict[tuple[str, int, int], PointResult]] = {}
    if files:
        shared = _dump(scratch / "comparison.pkl", (data, ev))
        done = _points_in_workers(shared, files, orders, cfg, n_workers, bar)
    for name, cls in adv_classes.items():
        if name in done:
            prepare_s = prepared_s[name]
        else:
            context = _context(run, other, cfg)
            adv = get_adversary(name, context=context, **cfg.adversary_params.get(name, {}))
            prepare_s = _prepare(adv, cls, all_items)
        points: dict[tuple[str, int, int], PointResult] = {}
        for strat in cfg.strategies:
            for seed in cfg.seeds:
                for q in cfg.budgets:
                    if name in done:
                        res = done[name][(strat, seed, q)]
                    else:
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
                    if bar and name not in done:
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
            one_purchase = {
                (strat, q): points[(strat, full_seed, q)].d
                for strat in cfg.strategies
                for q in cfg.budgets
            }
            adversaries[name]["sequential"] = sequential_curve(
                one_purchase, cfg.strategies[0], cfg.alpha, seed=full_seed
            )
            full_d[name] = full_res.d
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    test_cats = data.test["category"].astype(str).to_numpy()
    eps_stars = 0.0 if data.role == "null" else cfg.epsilon  # A/A stars test eps_c = 0
    verdict = attack_verdict(adversaries, seed_means, test_cats, cfg, full_seed, eps_stars)
    if data.role == "null":
        verdict["calibration"] = calibration(adversaries, seed_means, test_cats, cfg, full_seed)
    # The decision: the cross-fitted stack on every response (discriminators.verdict_cf).
    try:
        primary = crossfit_verdict(
            data,
            cfg.adversaries,
            cfg.adversary_params,
            cfg.epsilon,
            cfg.alpha,
            cfg.n_bootstrap,
            full_seed,
            context=_context(run, other, cfg),
        )
    except BbiError as exc:  # too few prompts to cross-fit: the sweep's record decides
        verdict["crossfit"] = {"skipped": str(exc)}
    else:
        verdict = adopt_crossfit(verdict, primary)
    verdict["sequential"] = declared_sequential(full_d, max_q, cfg.alpha, seed=full_seed)
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


# ---- worker processes (n_jobs != 1) ----------------------------------------------------


def _workers(n_jobs: int) -> int:
    """Worker processes for ``n_jobs`` (-1: all cores); 1 means the serial sweep."""
    if n_jobs == 1:
        return 1
    from joblib import effective_n_jobs

    return max(1, int(effective_n_jobs(n_jobs)))


def _in_workers(name: str, adv: Any) -> bool:
    """Whether this adversary's points may run in worker processes (see ``_IN_PROCESS``)."""
    own = getattr(adv, "parallel_points", None)
    if own is not None:
        return bool(own)
    return name not in _IN_PROCESS and "backend" not in adv.requires()


def _parallel(n_workers: int):
    """A joblib (loky) pool yielding results as tasks finish, so progress bars advance;
    the caller files them by key, so their order never matters."""
    from joblib import Parallel

    return Parallel(n_jobs=n_workers, backend="loky", return_as="generator_unordered")


def _dump(path: Path, obj: Any) -> str:
    """``obj`` to a scratch file for the workers (cloudpickle, as joblib pickles tasks:
    an adversary class defined in a script's ``__main__`` travels by value)."""
    try:
        import cloudpickle  # a dependency of joblib >= 1.5, which no longer vendors it
    except ImportError:  # pragma: no cover - older joblib
        from joblib.externals import cloudpickle

    with open(path, "wb") as fh:
        cloudpickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return str(path)


def _load(path: str) -> Any:
    with open(path, "rb") as fh:
        return pickle.load(fh)


# In a worker process: the (data, Evaluator) of the comparison it works on, by file. The
# data (with embeddings) takes longer to pickle than most points take to run, so it is
# written once per comparison and read once per worker; nothing in a point changes it.
_WORKER_SHARED: dict[str, Any] = {}


def _shared(path: str) -> tuple[ComparisonData, Evaluator]:
    if path not in _WORKER_SHARED:
        _WORKER_SHARED.clear()  # one comparison at a time
        _WORKER_SHARED[path] = _load(path)
    return _WORKER_SHARED[path]


class _Background(threading.Thread):
    """``fn(*args)`` in a thread (here: waiting on workers while this process works);
    ``result()`` joins it and returns its value or raises its exception."""

    def __init__(self, fn: Callable[..., Any], *args: Any):
        super().__init__(daemon=True)
        self._call = (fn, args)
        self._value: Any = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        fn, args = self._call
        try:
            self._value = fn(*args)
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._error = exc

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def _acquire_task(strat: str, pool, max_q: int, seed: int, blas_threads: int):
    with threadpool_limits(limits=blas_threads):
        t0 = time.perf_counter()
        order, oracle = acquisition_order(strat, pool, max_q, seed)
        return strat, seed, order, oracle.revealed, time.perf_counter() - t0


def _acquire_in_workers(
    data: ComparisonData, cfg: AttackConfig, max_q: int, n_workers: int, bar
) -> dict[tuple[str, int], tuple[np.ndarray, int, float]]:
    """(strategy, seed) -> (order, revealed, seconds): one task per pair."""
    from joblib import delayed

    tasks = [
        delayed(_acquire_task)(strat, data.pool, max_q, seed, cfg.blas_threads)
        for strat in cfg.strategies
        for seed in cfg.seeds
    ]
    out: dict[tuple[str, int], tuple[np.ndarray, int, float]] = {}
    for strat, seed, order, revealed, seconds in _parallel(n_workers)(tasks):
        out[(strat, seed)] = (order, revealed, seconds)
        if bar:
            bar.advance()
    return out


def _points_task(
    shared: str,
    name: str,
    adv_path: str,
    order: np.ndarray,
    strat: str,
    seed: int,
    budgets: list[int],
    full_q: int | None,
    blas_threads: int,
) -> tuple[str, str, int, list[PointResult]]:
    """One (adversary, strategy, seed): its points at every budget, in the serial sweep's
    order, on a fresh copy of the adversary as ``prepare`` left it (so no point depends on
    which group the worker ran before)."""
    data, ev = _shared(shared)
    adv = _load(adv_path)
    with threadpool_limits(limits=blas_threads):
        out = []
        for q in budgets:
            bought = order[: prompts_for_budget(q)]
            out.append(run_point(adv, data, ev, bought, q, seed, want_scores=q == full_q))
    return name, strat, seed, out


def _points_in_workers(
    shared: str, files: dict[str, str], orders, cfg: AttackConfig, n_workers: int, bar
) -> dict[str, dict[tuple[str, int, int], PointResult]]:
    """adversary -> (strategy, seed, budget) -> point, for the prepared adversaries in
    ``files``: one task per (adversary, strategy, seed)."""
    from joblib import delayed

    full_strategy, full_seed = cfg.strategies[0], (0 if 0 in cfg.seeds else cfg.seeds[0])
    max_q = max(cfg.budgets)
    tasks = [
        delayed(_points_task)(
            shared,
            name,
            path,
            orders[(strat, seed)],
            strat,
            seed,
            cfg.budgets,
            max_q if (strat, seed) == (full_strategy, full_seed) else None,
            cfg.blas_threads,
        )
        for name, path in files.items()
        for strat in cfg.strategies
        for seed in cfg.seeds
    ]
    out: dict[str, dict[tuple[str, int, int], PointResult]] = {name: {} for name in files}
    for name, strat, seed, results in _parallel(n_workers)(tasks):
        for q, res in zip(cfg.budgets, results, strict=True):
            out[name][(strat, seed, q)] = res
            if bar:
                bar.advance()
    return out


def _prepare(adv: Any, cls: type, all_items: pd.DataFrame) -> float:
    """``adv.prepare`` on every item of the comparison; returns the seconds it took."""
    t0 = time.perf_counter()
    if cls.kind == "pairwise":
        adv.prepare(pairwise_frame(all_items, np.ones(len(all_items) // 2, dtype=bool)))
    else:
        adv.prepare(all_items)
    return time.perf_counter() - t0


def revealed_ok(record: dict[str, Any]) -> bool:
    """The budget invariant a per-point json must satisfy (used by tests and reports)."""
    q = record["queries"]
    return q["revealed"] <= q["budget"] and q["revealed"] == revealed_for_budget(q["budget"])


__all__ = [
    "STAGING_PREFIX",
    "STATS_NOTE",
    "TIMING_FIELDS",
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
