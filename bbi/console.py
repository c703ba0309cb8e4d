"""Console output that reads as well in a log or a CI job as in a terminal.

Rich sizes tables to the terminal and draws progress bars by redrawing one line. Without
a terminal (stdout/stderr redirected to a file or a pipe) both go wrong: tables are
squeezed to 80 columns ("simil…", "[0.47…") and a bar is printed once, when its step
has finished. Here, without a terminal, a console is wide enough for any table (no
wrapping, no ellipsis) and a progress display prints plain periodic lines instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import Progress as _RichProgress
from rich.progress import TaskID

# Wide enough for any table bbi prints; a log has no right margin.
PLAIN_WIDTH = 10_000
# Seconds between two progress lines of one task without a terminal.
PLAIN_INTERVAL_S = 10.0


def console(stderr: bool = False, file: Any = None) -> Console:
    """A rich Console for ``file`` (default stdout, or stderr): the terminal's width in a
    terminal, else ``PLAIN_WIDTH`` columns with no colour codes, so nothing is cut."""
    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    con = Console(file=stream)
    if con.is_terminal:
        return con
    return Console(file=stream, width=PLAIN_WIDTH, no_color=True, highlight=False)


class Progress(_RichProgress):
    """``rich.progress.Progress`` that, without a terminal, prints plain lines instead of
    a bar: ``<description>: <done>/<total> (<pct>%) <elapsed>`` when a task starts, at
    most every ``interval`` seconds while it runs, and when it completes."""

    def __init__(self, *columns: Any, interval: float = PLAIN_INTERVAL_S, **kwargs: Any) -> None:
        disabled = kwargs.get("disable", False)
        con = kwargs.get("console") or Console(file=sys.stderr)
        self._plain = not disabled and not con.is_terminal
        if self._plain:
            kwargs["disable"] = True  # no live display; tasks are still tracked
        super().__init__(*columns, **kwargs)
        self._plain_console = con
        self._interval = interval
        self._last: dict[TaskID, float] = {}
        self._done: set[TaskID] = set()

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        if self._plain:
            self._report(task_id, force=True)
        return task_id

    def update(self, task_id: TaskID, *args: Any, **kwargs: Any) -> None:
        super().update(task_id, *args, **kwargs)
        if self._plain:
            self._report(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        if self._plain:
            self._report(task_id)

    def _report(self, task_id: TaskID, force: bool = False) -> None:
        task = self._tasks.get(task_id)
        if task is None or task_id in self._done:
            return
        now = time.monotonic()
        finished = task.total is not None and task.completed >= task.total
        if not (force or finished or now - self._last.get(task_id, now) >= self._interval):
            return
        self._last[task_id] = now
        if finished:
            self._done.add(task_id)
        self._plain_console.print(plain_line(task), highlight=False, markup=False, soft_wrap=True)


def plain_line(task: Any) -> str:
    """One progress line: description, count (and percentage), elapsed seconds."""
    done = int(task.completed) if float(task.completed).is_integer() else task.completed
    if task.total:
        total = int(task.total) if float(task.total).is_integer() else task.total
        count = f"{done}/{total} ({100 * task.completed / task.total:.0f}%)"
    else:
        count = f"{done}"
    elapsed = task.elapsed or 0.0
    fields = "".join(f" {k} {v}" for k, v in task.fields.items())
    return f"{task.description}: {count}{fields} {elapsed:.1f} s"


__all__ = ["PLAIN_INTERVAL_S", "PLAIN_WIDTH", "Progress", "console", "plain_line"]
