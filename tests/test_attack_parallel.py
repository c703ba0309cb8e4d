"""`bbi attack --n-jobs`: a sweep in worker processes writes what the serial sweep writes.

Every per-point json, every scores file and results.json must be identical to the serial
sweep's, byte for byte once the wall-clock fields (``TIMING_FIELDS``) are taken out.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.config import AttackSettings
from bbi.errors import BbiError
from bbi.runstore import RunDir
from discriminators import base, synthetic
from discriminators.attack import TIMING_FIELDS, run_attack
from discriminators.surface import SurfaceAdversary

runner = CliRunner()
SWEEP = [
    "--adversary", "surface,tfidf",
    "--strategy", "random,stratified",
    "--seeds", "2",
    "--budget", "8,24,60",
    "--test-queries", "1,4",
    "--n-bootstrap", "100",
    "--n-permutations", "100",
    "--no-progress",
]  # fmt: skip


def _without_timing(obj: Any, seen: set[str]) -> Any:
    """``obj`` less every TIMING_FIELDS key, at any depth; ``seen`` collects those found."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in TIMING_FIELDS:
                seen.add(k)
                assert isinstance(v, float), (k, v)
                continue
            out[k] = _without_timing(v, seen)
        return out
    if isinstance(obj, list):
        return [_without_timing(v, seen) for v in obj]
    return obj


def _snapshot(run: Path) -> tuple[dict[str, str | bytes], set[str]]:
    """Every file of attack/ and results.json: json files re-serialised without their
    timing fields (NaN stays comparable as text), other files as bytes."""
    seen: set[str] = set()
    files = [run / "results.json", *sorted((run / "attack").rglob("*"))]
    out: dict[str, str | bytes] = {}
    for f in files:
        if not f.is_file():
            continue
        name = str(f.relative_to(run))
        if f.suffix == ".json":
            out[name] = json.dumps(_without_timing(json.loads(f.read_text()), seen), indent=1)
        else:
            out[name] = f.read_bytes()
    return out, seen


def _keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, Path]:
    """The same run (same directory name: results.json records it) swept serially and
    with --n-jobs 2."""
    root = tmp_path_factory.mktemp("parallel")
    made = synthetic.make_run(root / "made" / "run", n_per_category=12, test_fraction=0.5)
    out = {}
    for mode, jobs in (("serial", "1"), ("parallel", "2")):
        path = root / mode / "run"
        shutil.copytree(made.path, path)
        res = runner.invoke(app, ["attack", str(path), *SWEEP, "--n-jobs", jobs])
        assert res.exit_code == 0, res.output
        out[mode] = path
    return out


def test_parallel_sweep_writes_what_the_serial_sweep_writes(sweeps):
    serial, timing = _snapshot(sweeps["serial"])
    parallel, timing_par = _snapshot(sweeps["parallel"])
    assert timing == timing_par == TIMING_FIELDS  # each timing field was there, and removed
    assert sorted(parallel) == sorted(serial)
    points = [f for f in serial if "__q" in f and f.endswith(".json")]
    # 2 comparisons (A/A and student) x 2 adversaries x 2 strategies x 2 seeds x 3 budgets
    assert len(points) == 2 * 2 * 2 * 2 * 3
    assert any(f.endswith(".scores.jsonl") for f in serial)
    for name in serial:
        assert parallel[name] == serial[name], name


def test_only_the_timing_fields_measure_time(sweeps):
    """Every wall-clock field ends in _s: any new one must join TIMING_FIELDS."""
    run = RunDir(sweeps["parallel"])
    keys = _keys(run.read_results()["attack"])
    for f in (run.attack_dir / "student").glob("*.json"):
        keys |= _keys(json.loads(f.read_text()))
    assert {k for k in keys if k.endswith("_s")} == TIMING_FIELDS


def test_config_in_results_does_not_record_n_jobs(sweeps):
    att = RunDir(sweeps["parallel"]).read_results()["attack"]
    assert "n_jobs" not in att["config"]
    assert all("n_jobs" not in c["config"] for c in att["comparisons"].values())


class _InProcess(SurfaceAdversary):
    """An adversary that asks to run in the sweep's own process (like the judge)."""

    name = "_in_process_test"
    parallel_points = False
    fitted_in: ClassVar[set[int]] = set()

    def fit(self, X, y):
        type(self).fitted_in.add(os.getpid())
        return super().fit(X, y)


def test_in_process_adversaries_and_progress_bars(tmp_path):
    made = synthetic.make_run(tmp_path / "made" / "run", n_per_category=8, test_fraction=0.5)
    bars: list[list] = []

    class Bar:
        def __init__(self, desc: str, total: int):
            self.state = [desc, total, 0]
            bars.append(self.state)

        def advance(self) -> None:
            self.state[2] += 1

    base.ADVERSARIES.register(_InProcess.name, _InProcess)
    try:
        written = {}
        for jobs in (1, 2):
            path = tmp_path / str(jobs) / "run"
            shutil.copytree(made.path, path)
            cfg = AttackSettings(budgets=[8, 16], strategies=["random"], seeds=2,
                                 test_queries=[1], adversaries=["surface", "_in_process_test"],
                               n_bootstrap=50, n_permutations=50, n_jobs=jobs)  # fmt: skip
            bars.clear()
            run_attack(RunDir(path), cfg, compare=["student"], progress=Bar)
            written[jobs] = _snapshot(path)[0]
    finally:
        base.ADVERSARIES.unregister("_in_process_test")
    assert written[2] == written[1]
    assert _InProcess.fitted_in == {os.getpid()}
    assert [desc for desc, _, _ in bars] == ["student: acquisition", "student: adversaries"]
    assert [total for _, total, _ in bars] == [2, 2 * 2 * 2]
    assert all(done == total for _, total, done in bars), bars


class _FailsInWorker(SurfaceAdversary):
    """Fails at the largest budget, in whichever worker runs it."""

    name = "_fails_test"

    def fit(self, X, y):
        if len(X) > 30:
            raise BbiError("_fails_test: no fit for you")
        return super().fit(X, y)


def test_a_failing_worker_is_a_clean_error_and_changes_nothing(tmp_path):
    run = synthetic.make_run(tmp_path / "run", n_per_category=8, test_fraction=0.5, null=False)
    before = {str(f): f.read_bytes() for f in sorted(run.path.rglob("*")) if f.is_file()}
    cfg = AttackSettings(budgets=[8, 40], strategies=["random"], seeds=2, test_queries=[1],
                       adversaries=["surface", "_fails_test"], n_bootstrap=50,
                       n_permutations=50, n_jobs=2)  # fmt: skip
    base.ADVERSARIES.register(_FailsInWorker.name, _FailsInWorker)
    try:
        with pytest.raises(BbiError, match="no fit for you"):
            run_attack(run, cfg)
    finally:
        base.ADVERSARIES.unregister("_fails_test")
    after = {str(f): f.read_bytes() for f in sorted(run.path.rglob("*")) if f.is_file()}
    assert after == before  # no detail files, no worker inputs, no results
    assert not list(run.path.glob(".attack-staging-*")) and not run.attack_dir.exists()


@pytest.mark.parametrize("jobs", ["0", "-2"])
def test_bad_n_jobs_is_a_one_line_error(tmp_path, jobs):
    run = synthetic.make_run(tmp_path / "run", n_per_category=5, test_fraction=0.4)
    res = runner.invoke(app, ["attack", str(run.path), "--n-jobs", jobs, "--no-progress"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --n-jobs"), res.output
    assert "-1 (all cores)" in lines[0]
    assert not (run.path / "attack").exists()


def test_n_jobs_is_validated_in_config_and_sweep():
    assert AttackSettings().n_jobs == 1  # serial unless asked
    assert AttackSettings(n_jobs=-1).n_jobs == -1
    for bad in (0, -2):
        with pytest.raises(BbiError, match=r"attack: n_jobs: must be >= 1"):
            AttackSettings.parse({"n_jobs": bad}, "attack")
        with pytest.raises(BbiError, match=r"--n-jobs: must be >= 1 .* or -1"):
            AttackSettings().updated(n_jobs=bad)


def test_all_cores_flag_reaches_the_sweep(tmp_path, monkeypatch):
    import discriminators.attack

    got = {}

    def fake_run_attack(run, cfg, compare=None, progress=None):
        got["n_jobs"] = cfg.n_jobs
        return {}

    run = synthetic.make_run(tmp_path / "run", n_per_category=5, test_fraction=0.4)
    monkeypatch.setattr(discriminators.attack, "run_attack", fake_run_attack)
    res = runner.invoke(app, ["attack", str(run.path), "--n-jobs", "-1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert got == {"n_jobs": -1}
