"""Checks of output paths given on the command line, run before any expensive work.

A suite build or a training run that only fails when it finally writes its output wastes
minutes to hours; these turn an unusable path into one ``error:`` line up front.
"""

from __future__ import annotations

import os
from pathlib import Path

from bbi.errors import BbiError


def _writable_ancestor(path: Path, flag: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise BbiError(f"{flag} {path}: {ancestor} is a file, not a directory")
    if ancestor.is_dir() and not os.access(ancestor, os.W_OK | os.X_OK):
        raise BbiError(f"{flag} {path}: cannot write in {ancestor} (permission denied)")


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
