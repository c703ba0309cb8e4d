"""`bbi probe` commands: build/show/validate probe suites, run models on them."""

from __future__ import annotations

import typer

app = typer.Typer(help="Probe suites and model responses.", no_args_is_help=True)
