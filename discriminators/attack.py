"""The attack: budget sweeps of adversaries against (teacher, other) comparisons.

For every comparison (teacher vs one other alias of the run), adversary, acquisition
strategy, budget q and seed: buy ``q // 2`` train prompts with the strategy (see
``discriminators.acquisition``) and evaluate one point (``discriminators.evaluate``: fit
on the bought items only, threshold from cross-validated *train* predictions, scores on
the fixed full test split). With ``k`` test queries the adversary sums log-odds over
groups of k test prompts -> eps(q, k). The pieces: ``discriminators.comparison`` (loading),
``discriminators.evaluate`` (one point, summaries), ``discriminators.verdict`` (the
declared primary analysis), ``discriminators.deltas`` (distilled vs base),
``discriminators.sweep`` (what the one settings type ``bbi.config.AttackSettings`` implies,
and the checks against the registries) and this module (the sweep). Each point is written to
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

import contextlib
import os
import pickle
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from bbi.config import AttackSettings
from bbi.errors import BbiError
from bbi.results_schema import ATTACK_SCHEMA_VERSION, validated_attack, validated_point
from bbi.runstore import RunDir, alias_file_stem, append_jsonl, write_json
from discriminators import sweep
from discriminators.acquisition import (
    Strategy,
    acquisition_order,
    get_strategy,
    prompts_for_budget,
    revealed_for_budget,
)
from discriminators.base import adversary_class, get_adversary
from discriminators.comparison import (
    ComparisonData,
    comparison_from_paired,
    load_comparison,
    pairwise_frame,
)
from discriminators.deltas import distill_base, distill_deltas, full_budget_contributions
from discriminators.equality import apply_equality, equality_claim
from discriminators.evaluate import (
    Evaluator,
    PointResult,
    examples_by_category,
    run_point,
    summarise,
)
from discriminators.explain import explain_for_attack
from discriminators.verdict import (
    attack_verdict,
    calibration,
    declared_sequential,
    sequential_curve,
)
from discriminators.verdict_cf import adopt_crossfit, crossfit_verdict

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


# ---- the sweep ---------------------------------------------------------------------------


def default_comparisons(run: RunDir) -> list[str]:
    """Every model of the run but the teacher, A/A (null) comparisons first."""
    teacher = run.teacher_alias()
    models = run.models()
    # A/A (null) comparisons first so the calibration row leads every table.
    others = [a for a in models if a != teacher]
    return sorted(others, key=lambda a: (models[a].get("role") != "null", others.index(a)))


class _Sweep:
    """One sweep in progress: its settings, what is derived from them (``sweep``), and the
    run's backend options (never recorded: they may hold endpoints or keys)."""

    def __init__(self, settings: AttackSettings, backend_options: dict[str, Any] | None):
        self.settings = settings
        self.budgets = sweep.budgets(settings)
        self.seeds = sweep.seeds(settings)
        self.full_seed = sweep.full_seed(settings)
        self.strategies = list(settings.strategies)
        self.adversaries = list(settings.adversaries)
        self.adversary_params = sweep.adversary_params(settings)
        self.strategy_params = sweep.strategy_params(settings)
        self.backend_options = dict(backend_options or {})
        self.n_jobs = settings.n_jobs

    def strategy(self, name: str) -> Strategy:
        return get_strategy(name, **self.strategy_params.get(name, {}))

    def adversary(self, name: str, context: dict[str, Any] | None = None) -> Any:
        return get_adversary(name, context=context, **self.adversary_params.get(name, {}))


def _context(run: RunDir, other: str, sw: _Sweep) -> dict[str, Any]:
    """What adversaries with a ``context`` keyword receive (see discriminators.base)."""
    return {
        "run": run,
        "teacher": run.teacher_alias(),
        "other": other,
        "backend_options": sw.backend_options,
        "seed": sw.full_seed,
    }


def run_attack(
    run: RunDir,
    settings: AttackSettings,
    compare: Sequence[str] | None = None,
    progress: Callable[[str, int], Any] | None = None,
    backend_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the sweep ``settings`` for each comparison, write attack/ files and
    results.json["attack"].

    ``progress(description, total)`` may return an object with ``advance()``; the CLI
    passes a rich progress bar, tests pass nothing. ``backend_options`` reach adversaries
    that load models (never recorded). All detail files are staged and published
    together with results.json at the end, so a failed or killed sweep changes nothing in
    the run directory.
    """
    sweep.check_sweep(settings)
    sw = _Sweep(settings, backend_options)
    record = sweep.config_record(settings)
    comparisons = list(compare) if compare else default_comparisons(run)
    if not comparisons:
        raise BbiError(f"{run.path}: no model besides the teacher to compare")
    adv_classes = {a: adversary_class(a) for a in sw.adversaries}
    need_emb = any("embeddings" in sw.adversary(a).requires() for a in sw.adversaries)
    results = run.read_results().get("attack") or {}
    # Comparisons attacked earlier are kept, unless an older bbi wrote them (other schema).
    kept = results.get("schema_version") == ATTACK_SCHEMA_VERSION
    all_comparisons = dict(results.get("comparisons") or {}) if kept else {}
    for other in comparisons:
        # Check every comparison and adversary before any expensive work (embeddings, fits).
        load_comparison(run, other, max_budget=max(sw.budgets))
        for name in sw.adversaries:
            sw.adversary(name, context=_context(run, other, sw)).preflight()
    _remove_stale_staging(run)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=run.path))
    try:
        for other in comparisons:
            data = load_comparison(
                run,
                other,
                embeddings=need_emb,
                progress=progress is not None,
                max_budget=max(sw.budgets),
            )
            # Many small fits: BLAS threads only oversubscribe the cores, so use one.
            with threadpool_limits(limits=sweep.BLAS_THREADS), _terminate_as_interrupt():
                comp = _attack_comparison(
                    run, data, sw, adv_classes, progress, staging / alias_file_stem(other)
                )
            # Comparisons kept from earlier invocations may have used another config.
            comp["config"] = dict(record)
            all_comparisons[other] = comp
        value = validated_attack({
            "config": {**record, "statistics": STATS_NOTE},
            "comparisons": all_comparisons,
            # Recomputed from the detail files of every comparison (this sweep's staged
            # ones, earlier ones from attack/), so they always match "comparisons".
            "deltas": distill_deltas(
                run, all_comparisons, settings,
                {other: staging / alias_file_stem(other) for other in comparisons},
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
        for other in map(alias_file_stem, comparisons):
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


def _attack_comparison(run, data: ComparisonData, sw: _Sweep, adv_classes, progress, out_dir: Path):
    """One comparison's sweep; its detail files go to ``out_dir`` (a fresh staging dir)."""
    other = data.other
    teacher = run.teacher_alias()
    ev = Evaluator(data, sw.settings)
    max_q = max(sw.budgets)
    full_strategy, full_seed = sw.strategies[0], sw.full_seed

    # Worker processes, each taking whole (strategy, seed) groups; 1: the serial sweep.
    n_workers = min(_workers(sw.n_jobs), len(sw.strategies) * len(sw.seeds))
    # Inputs of worker tasks, written once instead of pickled into every task; inside the
    # staging dir, so a failed sweep's go with it (only staging/<comparison>/ is published).
    scratch = (
        Path(tempfile.mkdtemp(prefix=".worker-inputs-", dir=out_dir.parent))
        if n_workers > 1
        else None
    )

    # 1. Acquisition orders (shared by all adversaries).
    bar = (
        progress(f"{other}: acquisition", len(sw.strategies) * len(sw.seeds)) if progress else None
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
        acquiring = _Background(_acquire_in_workers, data, sw, max_q, n_workers, bar)
        for name, cls in adv_classes.items():
            context = _context(run, other, sw)
            adv = sw.adversary(name, context=context)
            if _in_workers(name, adv):
                prepared_s[name] = _prepare(adv, cls, all_items)
                files[name] = _dump(scratch / f"adversary-{len(files)}.pkl", adv)
            del adv  # the workers load their own copies
        acquired = acquiring.result()
    for strat in sw.strategies:
        for seed in sw.seeds:
            if acquired is not None:
                order, revealed, seconds = acquired[(strat, seed)]
                acq_time[strat] = acq_time.get(strat, 0.0) + seconds
                if revealed > max_q:
                    raise RuntimeError("acquisition revealed more responses than the budget")
                orders[(strat, seed)] = order
                continue
            t0 = time.perf_counter()
            order, oracle = acquisition_order(sw.strategy(strat), data.pool, max_q, seed)
            acq_time[strat] = acq_time.get(strat, 0.0) + time.perf_counter() - t0
            if oracle.revealed > max_q:
                raise RuntimeError("acquisition revealed more responses than the budget")
            orders[(strat, seed)] = order
            if bar:
                bar.advance()

    # 2. Points.
    n_points = len(sw.adversaries) * len(sw.strategies) * len(sw.seeds) * len(sw.budgets)
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
        done = _points_in_workers(shared, files, orders, sw, n_workers, bar)
    for name, cls in adv_classes.items():
        if name in done:
            prepare_s = prepared_s[name]
        else:
            context = _context(run, other, sw)
            adv = sw.adversary(name, context=context)
            prepare_s = _prepare(adv, cls, all_items)
        points: dict[tuple[str, int, int], PointResult] = {}
        for strat in sw.strategies:
            for seed in sw.seeds:
                for q in sw.budgets:
                    if name in done:
                        res = done[name][(strat, seed, q)]
                    else:
                        bought = orders[(strat, seed)][: prompts_for_budget(q)]
                        full = (strat, seed, q) == (full_strategy, full_seed, max_q)
                        res = run_point(adv, data, ev, bought, q, seed, want_scores=full)
                    res.record.update(
                        strategy=strat,
                        comparison=other,
                        model=other,
                        reference=teacher,
                        acquisition_s=acq_time[strat] / len(sw.seeds),
                    )
                    write_json(
                        out_dir / RunDir.attack_point_name(name, strat, q, seed),
                        validated_point(res.record),
                    )
                    points[(strat, seed, q)] = res
                    if bar and name not in done:
                        bar.advance()
        full_res = points[(full_strategy, full_seed, max_q)]
        if full_res.scores is not None:
            path = out_dir / f"{name}.scores.jsonl"
            append_jsonl(path, full_res.scores)
            for rec in full_res.scores:
                examples_margin.setdefault(rec["prompt_id"], {})[name] = rec["margin"]
        adversaries[name] = summarise(name, cls, points, full_res, sw.settings, prepare_s)
        if cls.kind != "test":
            seed_means[name] = {
                (strat, q): np.mean([points[(strat, s, q)].d for s in sw.seeds], axis=0)
                for strat in sw.strategies
                for q in sw.budgets
            }
            one_purchase = {
                (strat, q): points[(strat, full_seed, q)].d
                for strat in sw.strategies
                for q in sw.budgets
            }
            adversaries[name]["sequential"] = sequential_curve(
                one_purchase, sw.strategies[0], sw.settings.alpha, seed=full_seed
            )
            full_d[name] = full_res.d
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    test_cats = data.test["category"].astype(str).to_numpy()
    settings = sw.settings
    eps_stars = 0.0 if data.role == "null" else settings.epsilon  # A/A stars test eps_c = 0
    verdict = attack_verdict(adversaries, seed_means, test_cats, settings, full_seed, eps_stars)
    if data.role == "null":
        verdict["calibration"] = calibration(
            adversaries, seed_means, test_cats, settings, full_seed
        )
    # The decision: the cross-fitted stack on every response (discriminators.verdict_cf).
    try:
        primary = crossfit_verdict(
            data,
            sw.adversaries,
            sw.adversary_params,
            settings.epsilon,
            settings.alpha,
            settings.n_bootstrap,
            full_seed,
            context=_context(run, other, sw),
        )
    except BbiError as exc:  # too few prompts to cross-fit: the sweep's record decides
        verdict["crossfit"] = {"skipped": str(exc)}
    else:
        if settings.decision == "crossfit":
            verdict = adopt_crossfit(verdict, primary)
        else:  # recorded beside the split decision, descriptive
            verdict["crossfit"] = {**primary, "decides": False}
    verdict["sequential"] = declared_sequential(full_d, max_q, settings.alpha, seed=full_seed)
    # Beside the decision, on request, its own question: do the responses differ at all?
    if settings.equality:
        try:
            claim = equality_claim(data, settings.alpha, settings.n_permutations, full_seed)
        except BbiError as exc:  # fewer than 2 prompts
            verdict["equality"] = {"skipped": str(exc)}
        else:
            verdict = apply_equality(verdict, claim)
    examples = examples_by_category(data, examples_margin, sweep.N_EXAMPLES)
    return {
        "reference": teacher,
        "role": data.role,
        "n_train": int(len(data.train)),
        "n_test": int(len(data.test)),
        "adversaries": adversaries,
        "verdict": verdict,
        "examples": examples,
        "explain": explain_for_attack(data, teacher, sw.settings, adversaries, examples_margin),
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
    the caller files them by key, so their order never matters. Workers die with this
    process (see ``_worker_init``)."""
    from joblib import Parallel, parallel_config

    _spawn_with_sigint_blocked()
    with parallel_config(backend="loky", initializer=_worker_init):
        return Parallel(n_jobs=n_workers, return_as="generator_unordered")


def _spawn_with_sigint_blocked() -> None:
    """Start loky's workers with SIGINT blocked (a child inherits the signal mask), so a
    Ctrl-C while they start (importing, before ``_worker_init``) is never theirs to
    report as a traceback; the parent still gets it at once. loky spawns workers on
    demand, from whichever thread submits, so the wrap is around its spawn itself
    (guarded: another loky version keeps its own behaviour)."""
    import signal

    try:
        from joblib.externals.loky.backend import popen_loky_posix
    except ImportError:  # pragma: no cover - not POSIX
        return
    popen = getattr(popen_loky_posix, "Popen", None)
    launch = getattr(popen, "_launch", None)
    if (
        launch is None
        or getattr(launch, "_bbi_wrapped", False)
        or not hasattr(signal, "pthread_sigmask")
    ):
        return

    def blocked_launch(self: Any, *args: Any, **kwargs: Any) -> Any:
        from multiprocessing import resource_tracker

        # Started first: when it starts, it unblocks SIGINT in this thread (Python 3.11).
        resource_tracker.ensure_running()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return launch(self, *args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    blocked_launch._bbi_wrapped = True  # type: ignore[attr-defined]
    popen._launch = blocked_launch


def _worker_init() -> None:
    """In each worker: Ctrl-C is the parent's to handle (it stops the pool, so workers
    print no tracebacks of their own), and a watchdog ends the worker within a second
    of the parent's death, however it died (SIGTERM, SIGKILL): no orphaned workers."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # blocked while starting (see _parallel)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="bbi-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM to a sweep behaves like Ctrl-C: the sweep stops, joblib ends its workers
    and the staging directory is removed (the previous sweep stays as it was)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


def _acquire_task(strat: str, strategy: Strategy, pool, max_q: int, seed: int):
    """One acquisition order in a worker; the configured strategy travels by value, so a
    strategy registered only in this process (not by entry point) works there too."""
    with threadpool_limits(limits=sweep.BLAS_THREADS):
        t0 = time.perf_counter()
        order, oracle = acquisition_order(strategy, pool, max_q, seed)
        return strat, seed, order, oracle.revealed, time.perf_counter() - t0


def _acquire_in_workers(
    data: ComparisonData, sw: _Sweep, max_q: int, n_workers: int, bar
) -> dict[tuple[str, int], tuple[np.ndarray, int, float]]:
    """(strategy, seed) -> (order, revealed, seconds): one task per pair."""
    from joblib import delayed

    tasks = [
        delayed(_acquire_task)(strat, sw.strategy(strat), data.pool, max_q, seed)
        for strat in sw.strategies
        for seed in sw.seeds
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
) -> tuple[str, str, int, list[PointResult]]:
    """One (adversary, strategy, seed): its points at every budget, in the serial sweep's
    order, on a fresh copy of the adversary as ``prepare`` left it (so no point depends on
    which group the worker ran before)."""
    data, ev = _shared(shared)
    adv = _load(adv_path)
    with threadpool_limits(limits=sweep.BLAS_THREADS):
        out = []
        for q in budgets:
            bought = order[: prompts_for_budget(q)]
            out.append(run_point(adv, data, ev, bought, q, seed, want_scores=q == full_q))
    return name, strat, seed, out


def _points_in_workers(
    shared: str, files: dict[str, str], orders, sw: _Sweep, n_workers: int, bar
) -> dict[str, dict[tuple[str, int, int], PointResult]]:
    """adversary -> (strategy, seed, budget) -> point, for the prepared adversaries in
    ``files``: one task per (adversary, strategy, seed)."""
    from joblib import delayed

    full_strategy, full_seed = sw.strategies[0], sw.full_seed
    max_q = max(sw.budgets)
    tasks = [
        delayed(_points_task)(
            shared,
            name,
            path,
            orders[(strat, seed)],
            strat,
            seed,
            sw.budgets,
            max_q if (strat, seed) == (full_strategy, full_seed) else None,
        )
        for name, path in files.items()
        for strat in sw.strategies
        for seed in sw.seeds
    ]
    out: dict[str, dict[tuple[str, int, int], PointResult]] = {name: {} for name in files}
    for name, strat, seed, results in _parallel(n_workers)(tasks):
        for q, res in zip(sw.budgets, results, strict=True):
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
    "ComparisonData",
    "Evaluator",
    "attack_verdict",
    "calibration",
    "comparison_from_paired",
    "default_comparisons",
    "distill_base",
    "distill_deltas",
    "full_budget_contributions",
    "load_comparison",
    "pairwise_frame",
    "revealed_ok",
    "run_attack",
    "run_point",
]
