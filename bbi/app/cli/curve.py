"""`bbi curve RUN`: eps against distillation tokens, from a training's token snapshots."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bbi.app.cli.params import path_value, text_value
from bbi.console import console


def register(app: typer.Typer) -> None:
    """Attach the `curve` command to the root app."""

    @app.command("curve")
    def curve_cmd(
        run_dir: Path = typer.Argument(..., help="Run directory (runs/NAME).", parser=path_value),
        student: str = typer.Option(
            None,
            "--student",
            help="Distilled student alias (default: every student that kept snapshots).",
            parser=text_value,
        ),
        report: bool = typer.Option(
            True, "--report/--no-report", help="Write the run's report afterwards."
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    ) -> None:
        """Probe and attack every token snapshot of a distillation
        (--curve-tokens) with the run's own attack settings; record eps
        against distillation tokens with the A/A band (results.json
        "token_curve", the report's curve section)."""
        from bbi.app.curve import token_curve

        curves = token_curve(run_dir, only=student, progress=progress)
        print_curves(curves)
        if report:
            from reports import write_report

            typer.echo(f"wrote {write_report(run_dir)}", err=True)


def _est(e: dict | None) -> str:
    if not e or e.get("value") is None:
        return "-"
    lo, hi = e.get("ci") or (None, None)
    return f"{e['value']:.3f}" + ("" if lo is None else f" [{lo:.3f}, {hi:.3f}]")


def _who(p: dict) -> str:
    """The adversary of a point; the split decision's point also names its budget q."""
    who = p.get("adversary") or "-"
    return f"{who} q={p['q']}" if p.get("q") is not None else who


def print_curves(curves: dict, out: Console | None = None) -> None:
    """One table per distilled student: tokens, step, eps (95% CI) and where it comes from."""
    con = out or console()
    for alias, c in curves.items():
        t = Table(title=f"{alias}: eps against distillation tokens (the deciding analysis)")
        for col in ("model", "tokens seen", "step", "eps [95% CI]", "adversary", "verdict"):
            t.add_column(col, justify="right" if col in ("tokens seen", "step") else "left")
        for p in c["points"]:
            t.add_row(
                p["alias"],
                str(p["tokens_seen"]),
                str(p.get("step") if p.get("step") is not None else "-"),
                _est(p.get("eps")),
                _who(p),
                str(p.get("status") or "-"),
            )
        con.print(t)
        band = c.get("band")
        if band:
            con.print(f"A/A band ({band['alias']}): eps {_est(band.get('eps'))}", highlight=False)
        for note in c.get("notes") or []:
            con.print(f"note: {note}", highlight=False)
