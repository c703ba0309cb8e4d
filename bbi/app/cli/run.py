"""`bbi run`: the whole loop (probe, distil, probe, attack, report) on one config."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bbi.app.cli.params import path_value, text_value
from bbi.app.cli.settings_options import split_list
from bbi.config import RunConfig
from bbi.console import console
from bbi.errors import BbiError

_D = RunConfig()  # the defaults, stated once in bbi.config


def register(app: typer.Typer) -> None:
    """Attach the `run` command to the root app."""

    @app.command("run")
    def run_cmd(
        config: Path = typer.Option(
            None,
            "--config",
            "-c",
            help="YAML config (keys: run, teacher, student, suite, aa_null, generation, distill, attack, report; see bbi/config.py).",
            parser=path_value,
        ),
        run: str = typer.Option(
            None,
            "--run",
            "-r",
            help=f"Run directory (default {_D.run}).",
            parser=text_value,
        ),
        teacher: str = typer.Option(
            None, "--teacher", help=f"Teacher spec (default {_D.teacher}).", parser=text_value
        ),
        student: str = typer.Option(
            None, "--student", help=f"Student spec (default {_D.student}).", parser=text_value
        ),
        limit: int = typer.Option(None, "--limit", help="Use a stratified subset of N prompts."),
        no_distill: bool = typer.Option(False, "--no-distill", help="Skip distillation."),
        curve_tokens: str = typer.Option(
            None,
            "--curve-tokens",
            help="Token milestones, e.g. 2000,6000,12000: every distillation keeps a student "
            "snapshot at each, probed and attacked like the final student (eps against "
            "distillation tokens with the A/A band; sets distill.<method>.curve_tokens).",
            parser=text_value,
        ),
        fresh: bool = typer.Option(
            False,
            "--fresh",
            help="Start the run over: move an existing run directory aside (NAME.old-TIME).",
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    ) -> None:
        """Run the whole loop on the embedded default (no arguments, no network needed).

        Builds/loads the embedded models, probes teacher (+ A/A resample) and student on the
        suite, distils the student with each configured method (LoRA on the teacher's
        train-split responses by default; KD), probes the distilled students, attacks every
        student and the null, and writes results.json and report.html (with the paired
        Delta-eps of each distilled student against the base). Every step is cached: a
        second run only re-renders the report.
        """
        from bbi.app.pipeline import run_pipeline

        cfg = RunConfig.load(config).updated(run=run, teacher=teacher, student=student)
        cfg.generation = cfg.generation.updated(limit=limit)
        if no_distill:
            cfg.distill = cfg.distill.updated(enabled=False)
        milestones = split_list(curve_tokens, "--curve-tokens", int)
        if milestones is not None:
            d = cfg.distill
            if not (d.enabled and d.methods):
                raise BbiError("--curve-tokens: distillation is off in this run")
            cfg.distill = d.updated(
                **{m: d.settings(m).updated(curve_tokens=milestones) for m in d.methods}
            )
        out = run_pipeline(cfg, progress=progress, fresh=fresh)
        print_run_summary(Path(out["run"]))
        con = console()
        con.print(f"report: [bold]{out['report']}[/]" if out["report"] else f"run: {out['run']}")
        con.print(f"total {out['timings']['total']:.1f} s")


def _fmt(e: dict | None) -> str:
    if not e or e.get("value") is None:
        return "-"
    lo, hi = e.get("ci") or [None, None]
    if lo is None:
        return f"{e['value']:.3f}"
    return f"{e['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def print_run_summary(run_path: Path, out: Console | None = None) -> None:
    """One table: similarity and eps (95% CI) per adversary for every compared model.

    Without a terminal the table keeps its full numbers (see ``bbi.console``)."""
    from bbi.results_schema import snapshot_aliases
    from bbi.runstore import RunDir

    res = RunDir(run_path).read_results()
    # Token snapshots are points of their curve (printed below it), not students to list.
    snapshots = snapshot_aliases(
        res, [*((res.get("attack") or {}).get("comparisons") or {}), *(res.get("similarity") or {})]
    )
    comps = {
        a: c for a, c in ((res.get("attack") or {}).get("comparisons") or {}).items()
        if a not in snapshots
    }  # fmt: skip
    sims = {a: s for a, s in (res.get("similarity") or {}).items() if a not in snapshots}
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
        cal = verdict.get("calibration") or {}
        if cal.get("ok") is not None:
            row.append("A/A holds" if cal["ok"] else "A/A FAILS")
        else:
            row.append(verdict.get("status", ""))
        t.add_row(*row)
        if cal.get("text"):  # the A/A row: its calibration is what matters
            verdicts.append(f"{alias}: {cal['text']}")
        elif verdict.get("text"):
            verdicts.append(f"{alias}: {verdict['text']}")
        eq = verdict.get("equality") or {}
        eq_text = (eq.get("calibration") or {}).get("text") or eq.get("text")
        if eq_text:  # its own question beside the eps decision
            verdicts.append(f"{alias}: equality (MMD): {eq_text}")
    con = out or console()
    con.print(t)
    for line in verdicts:
        con.print(line, highlight=False)

    def signed(e: dict | None, digits: int) -> str:
        if not e or e.get("value") is None:
            return "-"
        lo, hi = e.get("ci") or [None, None]
        v = e["value"] if round(e["value"], digits) != 0 else 0.0
        text = f"{v:+.{digits}f}" if v else f"{v:.{digits}f}"
        return text if lo is None else f"{text} [{lo:.{digits}f}, {hi:.{digits}f}]"

    # Distil, re-measure, get closer: paired Delta vs the base student (negative = closer).
    for alias, d in ((res.get("attack") or {}).get("deltas") or {}).items():
        advs_d = d.get("adversaries") or {}
        parts = [f"{a} {signed(e.get('delta'), 2)}" for a, e in advs_d.items()]
        line = f"{alias} vs {d.get('base')}: Delta-eps " + (", ".join(parts) or "-")
        if d.get("similarity"):
            line += f"; similarity {signed(d['similarity'], 3)}"
        status = (d.get("reading") or {}).get("status")
        if status:
            line += f" -> {status.replace('-', ' ')}"
        con.print(line, highlight=False, soft_wrap=True)
    if res.get("token_curve"):
        from bbi.app.cli.curve import print_curves

        print_curves(res["token_curve"], out)
