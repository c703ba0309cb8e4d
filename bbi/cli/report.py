"""`bbi report`: write the run's HTML report (or a markdown/JSON summary for CI)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Attach the `report` command to the root app."""

    @app.command("report")
    def report(
        run_dir: Path = typer.Argument(..., help="Run directory (runs/NAME)."),
        output: str | None = typer.Option(
            None,
            "--output",
            "-o",
            help="Output file (default: RUN_DIR/report.<ext>; '-' for stdout).",
        ),
        fmt: str = typer.Option("html", "--format", "-f", help="html, md or json."),
        examples: int = typer.Option(
            3, "--examples", help="Example pairs per category and student."
        ),
    ) -> None:
        """Render results.json as a self-contained HTML report (offline, no JavaScript needed)."""
        from reports import write_report

        path = write_report(run_dir, out=output, fmt=fmt.lower(), max_examples=examples)
        if str(path) != "-":
            typer.echo(f"wrote {path}", err=True)
