"""The `bbi` command line: the only composition root.

Core modules never import the sibling packages (probes, discriminators, distill,
reports); the command modules in this package are where they are wired together.
DESIGN.md names a single ``bbi/cli.py``; it is a package instead so that each command
group owns one file, with this module still the one root.
A ``BbiError`` raised anywhere below is printed as one line and exits with status 2;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import click
import typer
from typer.core import TyperGroup

from bbi.errors import BbiError


class _BbiGroup(TyperGroup):
    """Root group that turns BbiError into a one-line message and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BbiError as exc:
            # typer >= 0.29 vendors its own click, so a click.ClickException raised here is
            # not caught by typer's main loop; print the one line and exit via typer.Exit.
            click.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None


app = typer.Typer(
    cls=_BbiGroup,
    name="bbi",
    help="Can anyone tell this student LLM from its teacher, given q queries?",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _register() -> None:
    # Imported here so each command module owns its own group.
    from bbi.cli import attack, distill, probe, probe_run, report, run, serve, zoo

    probe_run.register(probe.app)
    app.add_typer(probe.app, name="probe")
    attack.register(app)
    app.add_typer(distill.app, name="distill")
    app.add_typer(zoo.app, name="zoo")
    report.register(app)
    run.register(app)
    serve.register(app)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """bbi measures the distinguishing advantage eps of adversaries between a teacher and
    its students under query budgets, builds students (LoRA distillation), and writes
    category-sensitive reports. Results live in a run directory (runs/NAME)."""
    if version:
        from bbi import __version__

        typer.echo(__version__)
        raise typer.Exit()


_register()


def main() -> None:
    """Console-script entry point."""
    app()
