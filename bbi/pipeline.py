"""`bbi run`: the whole loop on one config, every step cached.

probe teacher (+ A/A resample) and base student -> LoRA-distil the student on the
teacher's train-split responses -> probe the distilled student -> attack every student
and the null -> results.json and report.html.

Like bbi/cli, this module is a composition root: it is the one core module allowed to
import the sibling packages. Each step records a key of its inputs in the manifest
(``pipeline``); a rerun whose inputs are unchanged skips the step, so a warm ``bbi run``
only re-reads files and re-renders the report.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rich.console import Console

from bbi.errors import BbiError
from bbi.probe_run import NULL_ALIAS, ModelEntry, ProbeSettings, run_probe
from bbi.runstore import RunDir, read_yaml_mapping

console = Console(stderr=True)


@dataclass
class DistillSettings:
    enabled: bool = True
    alias: str = "student_lora"
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    epochs: int = 2
    lr: float = 2e-3
    batch_size: int = 32
    grad_accum: int = 1
    max_length: int = 192
    seed: int = 0
    eval_fraction: float = 0.05


@dataclass
class AttackSettings:
    adversaries: list[str] = field(
        default_factory=lambda: ["surface", "tfidf", "embed", "pairwise"]
    )
    budgets: list[int] = field(default_factory=lambda: [50, 100, 200, 400, 800, 1600, 4000])
    strategies: list[str] = field(default_factory=lambda: ["random", "stratified", "disagreement"])
    seeds: int = 5
    test_queries: list[int] = field(default_factory=lambda: [1, 4, 16])
    epsilon: float = 0.1
    alpha: float = 0.05


@dataclass
class RunConfig:
    """The `bbi run` config; every key can be set in a YAML file given with --config."""

    run: str = "runs/default"
    teacher: str = "zoo:teacher"
    student: str = "zoo:student"
    suite: str = "default"
    null: bool = True
    generation: ProbeSettings = field(
        default_factory=lambda: ProbeSettings(max_new_tokens=64, batch_size=64)
    )
    distill: DistillSettings = field(default_factory=DistillSettings)
    attack: AttackSettings = field(default_factory=AttackSettings)
    report: bool = True

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> RunConfig:
        cfg = cls()
        nested = {"generation": ProbeSettings, "distill": DistillSettings, "attack": AttackSettings}
        known = {f.name for f in fields(cls)}
        for key, value in raw.items():
            if key not in known:
                raise BbiError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
            if key in nested:
                if not isinstance(value, dict):
                    raise BbiError(f"{where}: {key!r} must be a mapping")
                sub = getattr(cfg, key)
                sub_known = {f.name for f in fields(nested[key])}
                for k, v in value.items():
                    if k not in sub_known:
                        raise BbiError(
                            f"{where}: unknown key {key}.{k} (known: {', '.join(sorted(sub_known))})"
                        )
                    setattr(sub, k, v)
            else:
                setattr(cfg, key, value)
        return cfg

    @classmethod
    def load(cls, path: Path | None) -> RunConfig:
        if path is None:
            return cls()
        return cls.from_dict(read_yaml_mapping(path), where=str(path))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _file_key(path: Path) -> str:
    if not path.exists():
        return "missing"
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:20]


def _step_done(run: RunDir, step: str, key: str) -> bool:
    return (run.manifest().get("pipeline") or {}).get(step, {}).get("key") == key


def _mark(run: RunDir, step: str, key: str, started: float, **extra: Any) -> None:
    run.update_manifest(
        pipeline={step: {"key": key, "wall_s": round(time.perf_counter() - started, 3), **extra}}
    )


def run_pipeline(cfg: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the full loop; return a summary with the report path and timings."""
    import probes

    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    records = (
        probes.default_suite() if cfg.suite == "default" else probes.load_suite(Path(cfg.suite))
    )
    models = [ModelEntry("teacher", cfg.teacher, "teacher")]
    if cfg.null:
        models.append(ModelEntry(NULL_ALIAS, cfg.teacher, "null"))
    models.append(ModelEntry("student", cfg.student, "student"))

    # 1. probe teacher, null and base student (content-cached per response)
    t0 = time.perf_counter()
    console.rule("[bold]1/5 probe")
    run_probe(cfg.run, models, records, cfg.generation, suite_name=cfg.suite, progress=progress)
    run = RunDir(cfg.run)
    run.write_config({**run.config(), "pipeline": cfg.as_dict()})
    timings["probe"] = time.perf_counter() - t0

    # 2. distil
    students = ["student"]
    if cfg.distill.enabled:
        t0 = time.perf_counter()
        console.rule("[bold]2/5 distill (LoRA)")
        from distill.lora import distill_lora

        d = cfg.distill
        key = _key(
            asdict(d),
            cfg.student,
            _file_key(run.responses_path("teacher")),
            _file_key(run.suite_path),
        )
        adapter_dir = run.path / "adapters" / d.alias
        spec = (run.read_results().get("distill") or {}).get(d.alias, {}).get("spec")
        if _step_done(run, "distill", key) and spec and adapter_dir.exists():
            console.print(f"cached: {spec}")
        else:
            res = distill_lora(
                run,
                student=cfg.student,
                alias=d.alias,
                out=adapter_dir,
                rank=d.rank,
                alpha=d.alpha,
                dropout=d.dropout,
                epochs=d.epochs,
                lr=d.lr,
                batch_size=d.batch_size,
                grad_accum=d.grad_accum,
                max_length=d.max_length,
                seed=d.seed,
                eval_fraction=d.eval_fraction,
                progress=progress,
            )
            spec = res.spec
            _mark(run, "distill", key, t0, spec=spec)
        students.append(d.alias)
        timings["distill"] = time.perf_counter() - t0

        # 3. probe the distilled student (teacher/null/student lines are cache hits)
        t0 = time.perf_counter()
        console.rule("[bold]3/5 probe distilled student")
        run_probe(
            cfg.run,
            [*models, ModelEntry(d.alias, spec, "student")],
            records,
            cfg.generation,
            suite_name=cfg.suite,
            progress=progress,
        )
        timings["probe_distilled"] = time.perf_counter() - t0

    # 4. attack every student and the null
    t0 = time.perf_counter()
    console.rule("[bold]4/5 attack")
    from discriminators.attack import AttackConfig, run_attack

    a = cfg.attack
    acfg = AttackConfig(
        budgets=list(a.budgets),
        strategies=list(a.strategies),
        seeds=list(range(int(a.seeds))),
        test_queries=list(a.test_queries),
        epsilon=a.epsilon,
        alpha=a.alpha,
        adversaries=list(a.adversaries),
    )
    compare = ([NULL_ALIAS] if cfg.null else []) + students
    key = _key(
        acfg.as_json(),
        compare,
        {c: _file_key(run.responses_path(c)) for c in ["teacher", *compare]},
    )
    if _step_done(run, "attack", key) and run.read_results().get("attack"):
        console.print("cached: attack results unchanged")
    else:
        from bbi.cli.attack import _progress

        with _progress(console, progress) as prog:
            run_attack(run, acfg, compare=compare, progress=prog)
        _mark(run, "attack", key, t0)
    timings["attack"] = time.perf_counter() - t0

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
