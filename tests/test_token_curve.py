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
