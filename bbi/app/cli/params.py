"""Parsers for command-line values that must not be empty.

``Path("")`` is ``Path(".")``: without these, ``--run ''`` (an unset shell variable,
say) would silently mean the current directory, and a command would fill it with run
files; and ``--student ''`` would silently mean "the default". An empty value is a usage
error instead (one ``error:`` line naming the flag, exit 2).

Use them as ``typer.Option(..., parser=path_value)`` / ``parser=text_value``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bbi.runstore import printable


def path_value(value: Any) -> Path:
    """A path given on the command line; empty or blank is refused (it is not '.')."""
    if isinstance(value, Path):
        return value
    text = str(value)
    if not text.strip():
        raise typer.BadParameter("empty path (use '.' for the current directory)")
    return Path(text)


def text_value(value: Any) -> str:
    """A name, spec or list given on the command line; empty or blank is refused (an
    empty value is not the same as leaving the option out)."""
    text = str(value)
    if not text.strip():
        raise typer.BadParameter("empty value (leave the option out for its default)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as lone surrogates
        raise typer.BadParameter(f"{printable(text)!r} is not valid UTF-8 text") from None
    return text
