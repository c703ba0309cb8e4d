"""Without a terminal (a log, a CI job) tables keep full numbers and progress is lines."""

from __future__ import annotations

import io
import re

from fixtures_results import build_run, load_results
from rich.console import Console

from bbi.app.cli.run import print_run_summary
from bbi.app.progress import sweep_progress
from bbi.console import Progress, console


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_run_summary_keeps_full_numbers_without_a_terminal(tmp_path):
    run = build_run(tmp_path / "run", n_per_category=20)
    buf = _Pipe()
    con = console(file=buf)
    assert not con.is_terminal
    print_run_summary(run, out=con)
    text = buf.getvalue()
    assert "…" not in text and "\x1b[" not in text
    assert "similarity" in text and "eps surface" in text
    res = load_results(run)
    eps = res["attack"]["comparisons"]["student"]["adversaries"]["surface"]["eps"]
    lo, hi = eps["ci"]
    row = next(line for line in text.splitlines() if line.lstrip("│ ").startswith("student "))
    assert f"{eps['value']:.3f} [{lo:.3f}, {hi:.3f}]" in row
    # one table row per model, not wrapped onto a second line
    assert len([ln for ln in text.splitlines() if re.match(r"^│ student\b", ln)]) == 1


def test_console_is_wide_only_without_a_terminal():
    con = console(file=_Pipe())
    assert con.width > 1000
    assert Console(file=io.StringIO(), force_terminal=True, width=80).width == 80


def test_progress_without_a_terminal_prints_plain_lines_as_it_goes():
    buf = _Pipe()
    seen = []
    with Progress(console=Console(file=buf), interval=0) as prog:
        task = prog.add_task("probe teacher", total=4)
        for _ in range(4):
            prog.advance(task)
            seen.append(buf.getvalue().count("\n"))  # a line per step, written at once
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("probe teacher: 0/4 (0%)")
    assert lines[-1].startswith("probe teacher: 4/4 (100%)")
    assert seen == [2, 3, 4, 5]
    assert not any(ch in buf.getvalue() for ch in "━\r\x1b")


def test_progress_lines_are_periodic_not_one_per_step():
    buf = _Pipe()
    with Progress(console=Console(file=buf), interval=3600) as prog:
        task = prog.add_task("attack", total=1000)
        for _ in range(1000):
            prog.advance(task)
    assert buf.getvalue().splitlines() == [
        line for line in buf.getvalue().splitlines() if line.startswith("attack: ")
    ]
    assert len(buf.getvalue().splitlines()) == 2  # started, finished


def test_sweep_progress_without_a_terminal():
    buf = _Pipe()
    with sweep_progress(Console(file=buf), True) as prog:
        task = prog("student surface", 3)
        for _ in range(3):
            task.advance()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("student surface: 0/3") and lines[-1].startswith(
        "student surface: 3/3 (100%)"
    )


def test_progress_in_a_terminal_is_a_bar():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=80)
    with Progress(console=con) as prog:
        task = prog.add_task("x", total=2)
        prog.advance(task, 2)
    assert "x: 2/2" not in buf.getvalue() and "━" in buf.getvalue()


def test_progress_bar_without_a_terminal_prints_whole_lines():
    """The training loop's bar in a log: whole lines (no carriage returns), the first at the
    start and the last when it closes, with the postfix (loss) on them."""
    import io

    from bbi.console import progress_bar

    buf = io.StringIO()
    bar = progress_bar(total=5, desc="distill s", unit="step", file=buf)
    for i in range(5):
        bar.update(1)
        bar.set_postfix(loss=f"{1.0 / (i + 1):.4f}")
    bar.close()
    out = buf.getvalue()
    assert "\r" not in out
    lines = out.splitlines()
    assert lines[0].startswith("distill s: 0/5 (0%)")
    assert lines[-1].startswith("distill s: 5/5 (100%)") and "loss=0.2000" in lines[-1]


def test_progress_bar_disabled_prints_nothing():
    import io

    from bbi.console import progress_bar

    buf = io.StringIO()
    bar = progress_bar(range(3), desc="x", file=buf, disable=True)
    assert list(bar) == [0, 1, 2]
    assert buf.getvalue() == ""
