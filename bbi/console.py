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


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm bar in a terminal; without one, plain lines (``desc: n/total (pct) elapsed<left,
    rate, postfix``) at most every ``PLAIN_INTERVAL_S`` seconds and when it closes, so a
    log reads like a terminal instead of holding one carriage-return-joined line."""
    from tqdm.auto import tqdm

    stream = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") or _is_terminal(stream):
        return tqdm(iterable, **kwargs)
    return _log_tqdm()(iterable, **kwargs)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Lines:
    """A stream that keeps only whole lines: tqdm's bare carriage returns and newlines
    (which redraw a terminal line) are dropped."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if text.strip():
            self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _log_tqdm() -> type:
    from tqdm import tqdm as std_tqdm

    class LogTqdm(std_tqdm):
        """tqdm that prints whole lines (a log has no carriage return to redraw with), at
        most every ``PLAIN_INTERVAL_S`` seconds, plus the first and the last."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["file"] = _Lines(kwargs.get("file") or sys.stderr)
            kwargs["mininterval"] = max(kwargs.get("mininterval", 0.0), PLAIN_INTERVAL_S)
            kwargs["dynamic_ncols"] = False
            kwargs.setdefault(
                "bar_format",
                "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) {elapsed}<{remaining}, "
                "{rate_fmt}{postfix}",
            )
            self._printed_at: float | None = None
            self._closing = False
            super().__init__(*args, **kwargs)

        def close(self) -> None:
            self._closing = True  # the last line comes from close, with the final postfix
            super().close()

        def display(self, msg: str | None = None, pos: int | None = None) -> bool:
            line = (self.__str__() if msg is None else msg).strip()
            now = time.monotonic()
            due = self._printed_at is None or now - self._printed_at >= PLAIN_INTERVAL_S
            done = self.total is not None and self.n >= self.total
            if line and (self._closing or (due and not done)):
                self.fp.write(line + "\n")
                self.fp.flush()
                self._printed_at = now
            return True

    return LogTqdm


__all__ = [
    "PLAIN_INTERVAL_S",
    "PLAIN_WIDTH",
    "Progress",
    "console",
    "plain_line",
    "progress_bar",
]
