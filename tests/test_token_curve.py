"""The eps-vs-distillation-tokens curve: token-milestone snapshots of the one training
loop, probed and attacked like any student (bbi.app.curve), and its report section."""

from __future__ import annotations

import json

import pytest

from bbi.config import KDSettings
from bbi.results_schema import SnapshotsRecord
from bbi.runstore import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(epochs=2, batch_size=8, max_length=64, eval_fraction=0.2, dropout=0.0)


def _kd(run: RunDir, **flags):
    from distill.kd import distill_kd

    return distill_kd(run, settings=KDSettings().updated(**{**FAST, **flags}), progress=False)


def test_milestones_keep_snapshots_with_increasing_tokens(kd_run):
    res = _kd(kd_run, curve_tokens=[200, 600, 1200, 10**9])
    rec = kd_run.read_results()["distill"]["student_kd"]["curve"]
    curve = SnapshotsRecord.model_validate(rec)
    tokens = [s.tokens_seen for s in curve.snapshots]
    assert len(tokens) >= 2 and tokens == sorted(set(tokens))
    assert curve.unreached == [10**9] and curve.tokens_seen >= tokens[-1]
    for snap in curve.snapshots:
        # each point is the first step at which its milestones were reached
        assert all(snap.tokens_seen >= m for m in snap.milestones)
        assert snap.alias == f"student_kd.t{snap.tokens_seen}"
        saved = json.loads(
            (res.out_dir / "curve" / f"t{snap.tokens_seen}" / "bbi_snapshot.json").read_text()
        )
        assert saved["step"] == snap.step and saved["spec"] == snap.spec
    steps = [s.step for s in curve.snapshots]
    assert steps == sorted(set(steps))
    assert not list((res.out_dir / "curve").glob(".staging-*"))


def _config(tmp_path, curve_tokens) -> dict:
    return {
        "run": str(tmp_path / "runs" / "curve"),
        "teacher": "zoo:teacher",
        "student": "zoo:student",
        "generation": {"limit": 80, "max_new_tokens": 12, "batch_size": 40},
        "distill": {
            "methods": ["kd"],
            "full": False,
            "kd": {
                "epochs": 1,
                "batch_size": 8,
                "max_length": 64,
                "lr": 2e-3,
                "curve_tokens": curve_tokens,
            },
        },
        "attack": {
            "adversaries": ["surface"],
            "budgets": [20, 40],
            "strategies": ["random"],
            "seeds": 1,
            "test_queries": [1],
            "n_bootstrap": 200,
            "n_permutations": 200,
        },
    }


def test_bbi_run_draws_the_curve_with_the_band(micro_zoo, tmp_path):
    import time

    import yaml
    from typer.testing import CliRunner

    from bbi.app.cli import app
    from bbi.results_schema import parse_token_curves

    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path, [300, 900, 10**9])))
    t = time.perf_counter()
    res = CliRunner().invoke(app, ["run", "--config", str(cfg_path), "--no-progress"])
    print("bbi run", time.perf_counter() - t)
    assert res.exit_code == 0, res.output
    run = RunDir(tmp_path / "runs" / "curve")
    results = run.read_results()
    curve = parse_token_curves(results["token_curve"])["student_kd"]
    kinds = [p.kind for p in curve.points]
    assert kinds[0] == "base" and kinds.count("snapshot") >= 2
    tokens = [p.tokens_seen for p in curve.points]
    assert tokens == sorted(set(tokens)) and tokens[0] == 0
    for p in curve.points:
        assert p.eps is not None and p.eps.ci[0] <= p.eps.value <= p.eps.ci[1]
        assert p.adversary == "surface" and "confirmation half" in p.test
    assert curve.band is not None and curve.band.alias == "teacher_null"
    assert (
        curve.band.eps.dump()
        == (results["attack"]["comparisons"]["teacher_null"]["verdict"]["primary"]["eps"])
    )
    assert curve.unreached == [10**9]
    # every point attacked with the run's own sweep
    comps = results["attack"]["comparisons"]
    for p in curve.points:
        assert comps[p.alias]["config"] == comps["student_kd"]["config"]
    html = (run.path / "report.html").read_text(encoding="utf-8")
    assert 'id="token-curve"' in html
    print(res.output[-3000:])
