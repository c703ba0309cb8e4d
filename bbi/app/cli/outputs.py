"""Checks of output paths given on the command line, run before any expensive work.

A suite build or a training run that only fails when it finally writes its output wastes
minutes to hours; these turn an unusable path into one ``error:`` line up front.
"""

from __future__ import annotations

from pathlib import Path

from bbi.errors import BbiError
from bbi.fsafe import check_writable_parent


def _writable_ancestor(path: Path, flag: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    check_writable_parent(path, flag)


def check_output_file(path: Path, flag: str, example: str = "out.jsonl") -> None:
    """``path`` can become a file: it is not a directory and its parent can be created."""
    path = Path(path)
    if path.is_dir():
        raise BbiError(f"{flag} {path}: is a directory; give a file name, e.g. {path / example}")
    _writable_ancestor(path, flag)


def check_output_dir(path: Path | None, flag: str) -> None:
    """``path`` (if given) can become a directory: it is not an existing file."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BbiError(f"{flag} {path}: is a file; give a directory")
    if not path.exists():
        _writable_ancestor(path, flag)
