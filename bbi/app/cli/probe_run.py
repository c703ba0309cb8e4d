"""`bbi probe run`: fill a run directory with model responses (imports: probe_import)."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bbi.app.cli.params import path_value, text_value
from bbi.errors import BbiError
from bbi.model_args import parse_model_args
from bbi.runstore import printable, read_yaml_mapping

console = Console(stderr=True)
_ALIAS_PREFIX = re.compile(r"^([A-Za-z0-9_.-]+)=(.+)$")


def load_suite_arg(suite: str) -> tuple[list[dict], str]:
    """`default` -> the built-in 5,000-prompt suite; anything else -> a user suite file."""
    import probes

    if not suite.strip():
        raise BbiError("--suite: empty; use 'default' or a JSONL/CSV/datasets path")
    if suite == "default":
        return probes.default_suite(), "default"
    path = Path(suite)
    if not path.exists():
        raise BbiError(f"suite not found: {suite} (use 'default' or a JSONL/CSV/datasets path)")
    return probes.load_suite(path), printable(path)


def model_entries(
    teacher: str,
    students: list[str],
    null: bool,
    teacher_args: dict | None = None,
    student_args: dict | None = None,
) -> list:
    """The run's models: teacher, its A/A resample (same arguments), students; each
    model's arguments validated for its kind (bbi.model_args)."""
    from bbi.model_args import check_model_args
    from bbi.probe_run import NULL_ALIAS, ModelEntry

    t_args = check_model_args(teacher, teacher_args, "--teacher-args") if teacher != "-" else {}
    models = [ModelEntry("teacher", teacher, "teacher", t_args)]
    if null:
        models.append(ModelEntry(NULL_ALIAS, teacher, "null", t_args))
    for i, raw in enumerate(students):
        m = _ALIAS_PREFIX.match(raw)
        alias, spec = (
            (m.group(1), m.group(2)) if m else ("student" if i == 0 else f"student_{i + 1}", raw)
        )
        args = check_model_args(spec, student_args, "--student-args")
        models.append(ModelEntry(alias, spec, "student", args))
    return models


def register(app: typer.Typer) -> None:
    """Attach `run` to the `bbi probe` group (`import`: bbi.app.cli.probe_import)."""

    @app.command("run")
    def run_cmd(
        teacher: str = typer.Option(
            None,
            "--teacher",
            "-t",
            help="Teacher model spec, e.g. zoo:teacher, hf:./path, openai:URL#model.",
            parser=text_value,
        ),
        student: list[str] = typer.Option(
            None,
            "--student",
            "-s",
            help="Student spec, repeatable; 'alias=SPEC' names it.",
            parser=text_value,
        ),
        suite: str = typer.Option(
            None, "--suite", help="'default' (5,000 prompts) or a JSONL/CSV/datasets path."
        ),
        run: Path = typer.Option(
            None, "--run", "-r", help="Run directory, e.g. runs/demo.", parser=path_value
        ),
        limit: int = typer.Option(None, "--limit", help="Probe a stratified subset of N prompts."),
        samples: int = typer.Option(
            None, "--samples", "-n", help="Responses per prompt and model."
        ),
        null: bool = typer.Option(
            None,
            "--null/--no-null",
            help="Add an independent teacher resample for A/A calibration (default on).",
        ),
        max_new_tokens: int = typer.Option(None, "--max-new-tokens"),
        temperature: float = typer.Option(
            None, "--temperature", help="0 = greedy; the A/A null needs sampling."
        ),
        top_p: float = typer.Option(None, "--top-p"),
        seed: int = typer.Option(None, "--seed"),
        batch_size: int = typer.Option(None, "--batch-size"),
        device: str = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1, mps."),
        dtype: str = typer.Option(None, "--dtype", help="auto, float32, bfloat16, float16."),
        teacher_args: str = typer.Option(
            None,
            "--teacher-args",
            help="The teacher's own arguments, key=value,...: hf/zoo device, dtype, device_map "
            "(auto: shard over GPUs), attn_implementation, quantization (4bit|8bit); vllm "
            "tensor_parallel_size, gpu_memory_utilization, max_model_len, ...; openai "
            "concurrency, timeout, max_retries, token_param.",
            parser=text_value,
        ),
        student_args: str = typer.Option(
            None,
            "--student-args",
            help="The same for every student given with --student.",
            parser=text_value,
        ),
        trust_remote_code: bool = typer.Option(
            False, "--trust-remote-code", help="Allow model repos to run their own code."
        ),
        config: Path = typer.Option(
            None,
            "--config",
            "-c",
            help="YAML with keys run, teacher, students, suite, aa_null, generation; flags override it.",
            parser=path_value,
        ),
        fresh: bool = typer.Option(
            False,
            "--fresh",
            help="Start the run over: move an existing run directory aside (NAME.old-TIME).",
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    ) -> None:
        """Generate teacher, A/A-null and student responses for a suite into a run directory.

        Resumable: rerunning reuses every cached response and generates only what is missing.
        """
        from bbi.config import ProbeConfig
        from bbi.probe_run import run_probe

        cfg = ProbeConfig.parse(
            read_yaml_mapping(config) if config else {}, str(config) if config else "config"
        )
        gen_flags = dict(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
            samples=samples,
            limit=limit,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code or None,
        )
        gen = cfg.generation.updated(**gen_flags)
        t_args = {**cfg.teacher_args, **parse_model_args(teacher_args, "--teacher-args")}
        s_args = {**cfg.student_args, **parse_model_args(student_args, "--student-args")}
        run_path = run or (Path(cfg.run) if cfg.run else None)
        teacher = teacher or cfg.teacher
        if not teacher and run_path is not None and (run_path / "run.yaml").is_file() and not fresh:
            # An existing run answers for itself: its models (students added by
            # `bbi distill` included), its suite and its generation settings.
            from bbi.probe_run import models_of_run

            models, records, suite_name, saved = models_of_run(run_path)
            gen = saved.updated(**gen_flags)
            if student:
                models += model_entries("-", list(student), False, None, s_args)[1:]
            manifest = run_probe(
                run_path, models, records, gen, suite_name=suite_name,
                progress=progress,
            )  # fmt: skip
            print_probe_summary(run_path, manifest)
            return
        if not teacher:
            raise BbiError(
                "--teacher is required (or 'teacher:' in --config, or --run of an existing run)"
            )
        students = list(student or []) or cfg.students
        if run_path is None:
            raise BbiError("--run is required (e.g. --run runs/demo)")
        use_null = null if null is not None else cfg.aa_null
        if use_null and gen.temperature <= 0:
            console.print(
                "[yellow]note:[/] greedy decoding makes the A/A resample identical to the teacher; use --temperature > 0 for a meaningful null"
            )
        records, suite_name = load_suite_arg(suite if suite is not None else cfg.suite)
        models = model_entries(teacher, students, use_null, t_args, s_args)
        manifest = run_probe(
            run_path,
            models,
            records,
            gen,
            suite_name=suite_name,
            progress=progress,
            fresh=fresh,
        )
        print_probe_summary(run_path, manifest)


def print_probe_summary(run_path: Path, manifest: dict) -> None:
    """Per-model timing table and per-category similarity table."""
    from bbi.runstore import RunDir

    rd = RunDir(run_path)
    t = Table(title=f"probe: {run_path}")
    for col in ("model", "role", "requests", "cached", "generated", "tokens/s", "wall s"):
        t.add_column(col, justify="right" if col not in ("model", "role") else "left")
    for alias, m in manifest.get("models", {}).items():
        tm = manifest.get("timings", {}).get(f"generate:{alias}", {})
        if not tm:
            continue
        t.add_row(
            alias,
            m.get("role", ""),
            str(tm.get("requests")),
            str(tm.get("cached")),
            str(tm.get("generated")),
            f"{tm['tokens_per_s']:.0f}" if tm.get("tokens_per_s") else "-",
            f"{tm.get('wall_s', 0):.1f}",
        )
    Console().print(t)
    sim = rd.read_results().get("similarity", {})
    if sim:
        s = Table(title="semantic similarity to the teacher (mean cosine, 95% CI)")
        s.add_column("category")
        for alias in sim:
            s.add_column(alias, justify="right")
        cats = list(next(iter(sim.values()))["per_category"].keys())

        def cell(e: dict | None) -> str:
            return f"{e['value']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]" if e else "-"

        for cat in cats:
            s.add_row(cat, *[cell(sim[a]["per_category"].get(cat)) for a in sim])
        s.add_row("[bold]overall[/]", *[cell(sim[a]["overall"]) for a in sim])
        Console().print(s)
    Console().print(f"run directory: [bold]{run_path}[/]")
