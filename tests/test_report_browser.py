"""The report in a real browser: headless Chromium opens it from disk, runs its script,
logs nothing to the console (no script error, no CSP violation, no blocked fetch) and
renders a screenshot. Skipped only where no Chromium is installed.

Set BBI_REPORT_SCREENSHOT_DIR to keep the screenshot (e.g. as a CI artifact).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fixtures_results import build_run

from reports import write_report

pytestmark = pytest.mark.browser

BROWSER = next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
    None,
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--enable-logging=stderr",
    "--v=0",
    # Anything that tried to leave the machine would fail to resolve (and be logged).
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BROWSER, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LANG": "C.UTF-8"},
    )


def _console(stderr: str) -> list[str]:
    # Every console message (error, warning, log, CSP violation) is logged as CONSOLE;
    # the report itself never writes to the console, so any line is a failure.
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def report_path(tmp_path_factory) -> Path:
    run = build_run(tmp_path_factory.mktemp("browser") / "demo", two_sample=True)
    return write_report(run)


@pytest.mark.skipif(
    BROWSER is None, reason="no Chromium on PATH (install the Debian package `chromium`)"
)
def test_report_loads_without_console_errors(report_path, tmp_path):
    proc = _chromium(
        ["--virtual-time-budget=3000", "--dump-dom", report_path.as_uri()], tmp_path / "profile"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert _console(proc.stderr) == []
    # The report's own script ran to the end (it is allowed by its CSP hash) ...
    html_tag = re.search(r"<html[^>]*>", dom).group(0)
    assert 'data-ready="1"' in html_tag and "js" in html_tag
    # ... and the hostile response in the examples did not run: title untouched, no flag.
    assert re.search(r"<title>bbi report · demo</title>", dom)
    assert "pwned" not in re.search(r"<title>.*?</title>", dom, re.S).group(0)
    assert "&lt;script&gt;document.title" in dom
    assert "<img" not in dom


@pytest.mark.skipif(
    BROWSER is None, reason="no Chromium on PATH (install the Debian package `chromium`)"
)
def test_report_screenshot(report_path, tmp_path):
    shot = tmp_path / "report.png"
    proc = _chromium(
        [
            "--screenshot=" + str(shot),
            "--window-size=1280,2400",
            "--hide-scrollbars",
            report_path.as_uri(),
        ],
        tmp_path / "profile",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _console(proc.stderr) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2400)
    assert len(data) > 50_000  # a rendered page, not a blank canvas
    keep = os.environ.get("BBI_REPORT_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")
