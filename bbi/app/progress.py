"""Progress display for the application layer's long loops (the attack sweep)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from bbi.console import Progress


@contextmanager
def sweep_progress(console: Console, enabled: bool) -> Iterator[Any]:
    """A factory of progress tasks (``factory(desc, total).advance()``), or None when off.
    Without a terminal, plain periodic lines instead of a bar (``bbi.console.Progress``)."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as prog:

        class _Task:
            def __init__(self, desc: str, total: int):
                self.id = prog.add_task(desc, total=total)

            def advance(self) -> None:
                prog.advance(self.id)

        yield _Task
