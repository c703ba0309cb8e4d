"""The `bbi` command line, with ``bbi.app.pipeline`` the application layer (``bbi.app``).

Core modules never import the sibling packages (probes, discriminators, distill,
reports); the application layer is where they are wired together (docs/architecture.md).
The CLI is a package so that each command group owns one file; this module is its root.
A ``BbiError`` raised anywhere below, and every usage error (a bad option value, a
missing argument, an unknown option), is printed as one line ``error: ...`` and exits
with status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import Any

import click
import typer
from typer.core import TyperGroup

try:  # typer >= 0.29 vendors its own click; older typers use click itself
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from bbi.errors import BbiError


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _BbiGroup(TyperGroup):
    """Root group: BbiError and usage errors become one line ``error: ...`` and exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BbiError as exc:
            # typer >= 0.29 vendors its own click, so a click.ClickException raised here is
            # not caught by typer's main loop; print the one line and exit via typer.Exit.
            click.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
        except OSError as exc:
            # A full disk, a read-only file system, a name too long for the file system:
            # the medium's problem, one line (the writes themselves leave nothing torn).
            from bbi.fsafe import disk_error

            err = disk_error(exc)
            if err is None:
                raise
            click.echo(f"error: {err}", err=True)
            raise typer.Exit(code=2) from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the CLI; usage errors print one line instead of click's usage box.

        Usage errors are raised while parsing (``make_context``), before ``invoke``, so
        they are caught here: typer's own handler would draw a multi-line panel.
        """
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        _tolerate_undecodable_output()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # `bbi` or `bbi probe` alone: show the help
            text = exc.format_message()  # typer's rich help prints itself and returns ""
            if text.strip():
                click.echo(text)
            sys.exit(exc.exit_code)
        except UsageError as exc:
            hint = ""
            if exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            click.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(2)
        except ClickException as exc:
            click.echo(f"error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        # Without standalone mode, typer returns the exit code of a typer.Exit (help,
        # --version, a BbiError) and the command's return value (None) otherwise.
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


def _tolerate_undecodable_output() -> None:
    """Print file names that are not UTF-8 (lone surrogates in Python) as escapes.

    Under a UTF-8 locale other than C, Python's stdout is strict: ``wrote runs/\\xff/...``
    would end a finished command with a UnicodeEncodeError traceback.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            # A stream that cannot change keeps its settings.
            with contextlib.suppress(ValueError, OSError, AttributeError):
                stream.reconfigure(errors="backslashreplace")


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
    from bbi.app.cli import (
        attack,
        curve,
        distill,
        probe,
        probe_import,
        probe_run,
        report,
        run,
        serve,
        zoo,
    )

    probe_run.register(probe.app)
    probe_import.register(probe.app)
    app.add_typer(probe.app, name="probe")
    attack.register(app)
    curve.register(app)
    app.add_typer(distill.app, name="distill")
    app.add_typer(zoo.app, name="zoo")
    report.register(app)
    run.register(app)
    serve.register(app)


def _print_version(value: bool) -> None:
    # Eager, so `bbi --version` works without a command (the group requires one).
    if value:
        from bbi import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print the version and exit.",
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Show library warnings, logs and progress bars (hidden by default).",
    ),
) -> None:
    """bbi measures the distinguishing advantage eps of adversaries between a teacher and
    its students under query budgets, builds students (LoRA, KD, WDA, BIRD and circuit
    distillation), and writes
    category-sensitive reports. Results live in a run directory (runs/NAME)."""
    from bbi import noise

    noise.configure(verbose)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
