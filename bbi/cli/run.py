"""`bbi run` command."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the `run` command to the root app (not implemented yet)."""
