"""`bbi run`: the whole loop on one config, every step cached.

probe teacher (+ A/A resample) and base student -> distil the student with each configured
method (LoRA on the teacher's train-split responses; white-box KD) -> probe the distilled
students -> attack every student and the null -> (with ``distill.<method>.curve_tokens``:
probe and attack the token snapshots, eps against tokens, ``bbi.app.curve``) ->
results.json and report.html.

Part of the application layer (bbi.app) with the CLI: it composes the sibling packages. Each step records a key of its inputs in the manifest
(``pipeline``); a rerun whose inputs are unchanged skips the step, so a warm ``bbi run``
only re-reads files and re-renders the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bbi.app.steps import file_key, key_of, mark, step_done
from bbi.config import AttackSettings, RunConfig
from bbi.errors import BbiError
from bbi.model_args import check_model_args
from bbi.probe_run import NULL_ALIAS, ModelEntry, check_probe, run_probe
from bbi.results_schema import ATTACK_SCHEMA_VERSION
from bbi.runstore import RunDir

console = Console(stderr=True)


_key = key_of
_file_key = file_key
_step_done = step_done
_mark = mark


def _distil(run: RunDir, cfg: RunConfig, method: str, progress: bool) -> str:
    """Distil one student (or reuse it when its inputs are unchanged); return its spec."""
    t0 = time.perf_counter()
    d = cfg.distill
    alias = f"student_{method}"
    settings = d.settings(method)
    key = _key(
        method,
        settings.model_dump(),
        d.full,
        cfg.student,
        _file_key(run.responses_path("teacher")),
        _file_key(run.suite_path),
        # A guided run also reads the student's answers (its train-split leaks).
        _file_key(run.responses_path("student")) if settings.guide != "none" else None,
    )
    out = run.path / ("models" if d.full else "adapters") / alias
    spec = (run.read_results().get("distill") or {}).get(alias, {}).get("spec")
    if _step_done(run, f"distill:{alias}", key) and spec and out.exists():
        console.print(f"cached: {alias} = {spec}")
        return spec
    if method == "kd":
        from distill.kd import distill_kd as fn
    else:
        from distill.lora import distill_lora as fn
    from bbi.app.corpus import corpus_pairs
    from bbi.app.guide import guide_weights_for

    extra = {}
    if getattr(settings, "corpus_prompts", 0):
        extra["extra_pairs"] = corpus_pairs(run, settings.corpus_prompts, settings.seed)
    res = fn(
        run,
        student=cfg.student,
        alias=alias,
        out=out,
        settings=settings,
        full=d.full,
        progress=progress,
        sample_weights=guide_weights_for(run, settings, cfg.student),
        **extra,
    )
    _mark(run, f"distill:{alias}", key, t0, spec=res.spec)
    return res.spec


def fit_attack(cfg: RunConfig, records: list[dict]) -> AttackSettings:
    """The attack settings, with budgets the (``--limit``-ed) suite cannot pay dropped.

    A budget q buys q // 2 train prompts; budgets beyond the train split are dropped with a
    note (``bbi run --limit 500`` then sweeps what 400 train prompts allow), and so are
    test-query counts k above the test split. No budget fitting is an error before anything
    runs.
    """
    n_train = sum(r.get("split") == "train" for r in records)
    n_test = sum(r.get("split") == "test" for r in records)
    where = f"--limit {cfg.generation.limit}" if cfg.generation.limit else f"suite {cfg.suite}"
    return fit_budgets(
        cfg.attack, n_train, n_test, where, "raise --limit, or set attack.budgets in --config"
    )


def fit_budgets(
    a: AttackSettings,
    n_train: int,
    n_test: int,
    where: str,
    remedy: str,
    budgets: bool = True,
    test_queries: bool = True,
    notes: list[str] | None = None,
) -> AttackSettings:
    """``a`` with the budgets that ``n_train`` train prompts cannot pay (``budgets``) and
    the test-query counts above ``n_test`` (``test_queries``) dropped, each with a note; a
    one-line error (``remedy`` says what to do) when no budget fits or there is nothing to
    buy or evaluate on. What is not fitted is returned as given. ``notes``: a list to
    collect the notes in (printed by the caller when it chooses) instead of printing."""
    from discriminators.acquisition import QUERIES_PER_PROMPT, prompts_for_budget

    if n_test == 0 or n_train < 2:
        raise BbiError(
            f"{where}: {n_train} train and {n_test} test prompts; the attack needs at least "
            "2 train prompts (to buy) and 1 test prompt (to evaluate on)"
        )
    fits = [q for q in a.budgets if prompts_for_budget(q) <= n_train or not budgets]
    if not fits:
        raise BbiError(
            f"{where}: {n_train} train prompts allow attack budgets up to "
            f"{n_train * QUERIES_PER_PROMPT} queries, but attack.budgets starts at "
            f"{min(a.budgets)}: {remedy}"
        )
    said: list[str] = []
    if len(fits) < len(a.budgets):
        dropped = ", ".join(str(q) for q in a.budgets if q not in fits)
        said.append(
            f"{where}: {n_train} train prompts; attack budgets {dropped} dropped (they need "
            "more train prompts)"
        )
    ks = [k for k in a.test_queries if k <= n_test or not test_queries] or [1]
    if len(ks) < len(a.test_queries):
        dropped = ", ".join(str(k) for k in a.test_queries if k not in ks)
        said.append(
            f"{where}: {n_test} test prompts; test queries k = {dropped} dropped (k "
            "responses per decision need k test prompts)"
        )
    if notes is not None:
        notes.extend(said)
    else:
        for note in said:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
    return a.updated(budgets=fits, test_queries=ks)


def run_pipeline(cfg: RunConfig, progress: bool = True, fresh: bool = False) -> dict[str, Any]:
    """Run (or resume) the full loop; return a summary with the report path and timings.

    ``fresh`` moves an existing run directory aside first (see ``run_probe``).
    """
    import probes
    from discriminators.attack import run_attack
    from discriminators.sweep import check_sweep, config_record

    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    # Validate every stage before the first one writes (or prints a stage header): a bad
    # spec, suite, run directory or attack setting is one error line, not a wasted run.
    records = (
        probes.default_suite() if cfg.suite == "default" else probes.load_suite(Path(cfg.suite))
    )
    t_args = check_model_args(cfg.teacher, cfg.teacher_args, "teacher_args")
    s_args = check_model_args(cfg.student, cfg.student_args, "student_args")
    models = [ModelEntry("teacher", cfg.teacher, "teacher", t_args)]
    if cfg.aa_null:
        models.append(ModelEntry(NULL_ALIAS, cfg.teacher, "null", t_args))
    models.append(ModelEntry("student", cfg.student, "student", s_args))
    _, probed, _ = check_probe(cfg.run, models, records, cfg.generation, fresh=fresh)
    acfg = fit_attack(cfg, probed)
    check_sweep(acfg)

    # 1. probe teacher, null and base student (content-cached per response)
    t0 = time.perf_counter()
    console.rule("[bold]1/5 probe")
    run_probe(
        cfg.run,
        models,
        records,
        cfg.generation,
        suite_name=cfg.suite,
        progress=progress,
        fresh=fresh,
    )
    run = RunDir(cfg.run)
    run.write_config({**run.config(), "pipeline": cfg.as_dict()})
    timings["probe"] = time.perf_counter() - t0

    # 2. distil (each method its own student) and 3. probe the distilled students
    students = ["student"]
    d = cfg.distill
    if d.enabled and d.methods:
        t0 = time.perf_counter()
        console.rule(f"[bold]2/5 distill ({', '.join(d.methods)})")
        distilled = [
            ModelEntry(
                f"student_{m}", spec, "student", check_model_args(spec, s_args, "student_args")
            )
            for m in d.methods
            for spec in [_distil(run, cfg, m, progress)]
        ]
        students += [e.alias for e in distilled]
        timings["distill"] = time.perf_counter() - t0

        # teacher/null/student lines are cache hits
        t0 = time.perf_counter()
        console.rule("[bold]3/5 probe distilled students")
        run_probe(
            cfg.run,
            [*models, *distilled],
            records,
            cfg.generation,
            suite_name=cfg.suite,
            progress=progress,
        )
        timings["probe_distilled"] = time.perf_counter() - t0

    # 4. attack every student and the null
    t0 = time.perf_counter()
    console.rule("[bold]4/5 attack")
    compare = ([NULL_ALIAS] if cfg.aa_null else []) + students
    key = _key(
        config_record(acfg),
        compare,
        {c: _file_key(run.responses_path(c)) for c in ["teacher", *compare]},
    )
    written = run.read_results().get("attack") or {}
    # Results from another schema (an older bbi) are recomputed, not reported.
    if _step_done(run, "attack", key) and written.get("schema_version") == ATTACK_SCHEMA_VERSION:
        console.print("cached: attack results unchanged")
    else:
        from bbi.app.progress import sweep_progress

        with sweep_progress(console, progress) as prog:
            run_attack(run, acfg, compare=compare, progress=prog)
        _mark(run, "attack", key, t0)
    timings["attack"] = time.perf_counter() - t0

    # 4b. eps against distillation tokens, when a method kept token snapshots
    if d.enabled and any(d.settings(m).curve_tokens for m in d.methods):
        t0 = time.perf_counter()
        from bbi.app.curve import token_curve

        token_curve(run.path, attack=acfg, progress=progress)
        timings["curve"] = time.perf_counter() - t0

    # 5. report
    report_path = None
    if cfg.report:
        t0 = time.perf_counter()
        console.rule("[bold]5/5 report")
        from reports import write_report

        report_path = write_report(run.path)
        timings["report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    run.update_manifest(timings={f"run:{k}": round(v, 3) for k, v in timings.items()})
    return {
        "run": str(run.path),
        "report": str(report_path) if report_path else None,
        "timings": timings,
    }
