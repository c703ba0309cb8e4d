"""`bbi report`: write the run's HTML report (or a markdown/JSON summary for CI)."""

from __future__ import annotations

from pathlib import Path

import typer

from bbi.app.cli.params import path_value, text_value


def register(app: typer.Typer) -> None:
    """Attach the `report` command to the root app."""

    @app.command("report")
    def report(
        run_dir: Path = typer.Argument(..., help="Run directory (runs/NAME).", parser=path_value),
        output: str | None = typer.Option(
            None,
            "--output",
            "-o",
            help="Output file (default: RUN_DIR/report.<ext>; '-' for stdout).",
            parser=text_value,
        ),
        fmt: str = typer.Option("html", "--format", "-f", help="html, md or json."),
        examples: int = typer.Option(
            3, "--examples", help="Example pairs per category and student."
        ),
    ) -> None:
        """Render results.json as a self-contained HTML report (offline, no JavaScript needed)."""
        from bbi.errors import BbiError
        from bbi.runstore import RunDir
        from reports import write_report

        if output is not None and output != "-" and RunDir(run_dir).owns(output):
            raise BbiError(
                f"--output {output}: is one of the run's own files; write the report "
                "elsewhere (default: RUN_DIR/report.<ext>)"
            )
        path = write_report(run_dir, out=output, fmt=fmt.lower(), max_examples=examples)
        if str(path) != "-":
            typer.echo(f"wrote {path}", err=True)
