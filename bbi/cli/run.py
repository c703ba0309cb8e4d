"""`bbi run`: the whole loop (probe, distil, probe, attack, report) on one config."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    """Attach the `run` command to the root app."""

    @app.command("run")
    def run_cmd(
        config: Path = typer.Option(
            None,
            "--config",
            "-c",
            help="YAML config (keys: run, teacher, student, suite, null, generation, distill, attack, report).",
        ),
        run: str = typer.Option(None, "--run", "-r", help="Run directory (default runs/default)."),
        teacher: str = typer.Option(None, "--teacher", help="Teacher spec (default zoo:teacher)."),
        student: str = typer.Option(None, "--student", help="Student spec (default zoo:student)."),
        limit: int = typer.Option(None, "--limit", help="Use a stratified subset of N prompts."),
        no_distill: bool = typer.Option(False, "--no-distill", help="Skip LoRA distillation."),
        no_progress: bool = typer.Option(False, "--no-progress"),
    ) -> None:
        """Run the whole loop on the embedded default (no arguments, no network needed).

        Builds/loads the zoo pair, probes teacher (+ A/A resample) and student on the
        5,000-prompt suite, LoRA-distils the student on the teacher's train responses, probes
        the distilled student, attacks both students, and writes results.json and
        report.html. Every step is cached: a second run only re-renders the report.
        """
        from bbi.pipeline import RunConfig, run_pipeline

        cfg = RunConfig.load(config)
        if run:
            cfg.run = run
        if teacher:
            cfg.teacher = teacher
        if student:
            cfg.student = student
        if limit is not None:
            cfg.generation.limit = limit
        if no_distill:
            cfg.distill.enabled = False
        out = run_pipeline(cfg, progress=not no_progress)
        print_run_summary(Path(out["run"]))
        Console().print(
            f"report: [bold]{out['report']}[/]" if out["report"] else f"run: {out['run']}"
        )
        Console().print(f"total {out['timings']['total']:.1f} s")


def _fmt(e: dict | None) -> str:
    if not e or e.get("value") is None:
        return "-"
    lo, hi = e.get("ci") or [None, None]
    if lo is None:
        return f"{e['value']:.3f}"
    return f"{e['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def print_run_summary(run_path: Path) -> None:
    """One table: similarity and eps (95% CI) per adversary for every compared model."""
    from bbi.runstore import RunDir

    res = RunDir(run_path).read_results()
    comps = (res.get("attack") or {}).get("comparisons") or {}
    sims = res.get("similarity") or {}
    advs: list[str] = []
    for c in comps.values():
        for a in c.get("adversaries", {}):
            if a not in advs:
                advs.append(a)
    t = Table(
        title="similarity and distinguishing advantage eps vs the teacher (95% CI, test split)"
    )
    t.add_column("model", no_wrap=True)
    t.add_column("similarity", justify="right")
    for a in advs:
        t.add_column(f"eps {a}", justify="right")
    t.add_column("verdict", no_wrap=True)
    verdicts = []
    for alias in comps or sims:
        c = comps.get(alias, {})
        sim = sims.get(alias) or {}
        row = [alias, _fmt(sim.get("test") or sim.get("overall"))]
        row += [_fmt((c.get("adversaries", {}).get(a) or {}).get("eps")) for a in advs]
        verdict = c.get("verdict") or {}
        row.append(verdict.get("status", ""))
        t.add_row(*row)
        if verdict.get("text"):
            verdicts.append(f"{alias}: {verdict['text']}")
    console = Console()
    console.print(t)
    for line in verdicts:
        console.print(line, highlight=False)
