"""`bbi distill` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="(not implemented yet)", no_args_is_help=True)
