"""`bbi attack`: hyperparameters checked up front, and a failed re-run changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.config import AttackSettings
from bbi.errors import BbiError
from discriminators import synthetic
from discriminators.attack import STAGING_PREFIX, run_attack
from discriminators.base import check_params
from discriminators.tfidf import TfidfAdversary

runner = CliRunner()
FAST = ["--budget", "8,16", "--seeds", "1", "--n-bootstrap", "20", "--n-permutations", "20"]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _assert_one_line_error(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for needle in needles:
        assert needle in lines[0], res.output


@pytest.fixture()
def small_run(tmp_path: Path) -> Path:
    return synthetic.make_run(tmp_path / "small", n_per_category=5, test_fraction=0.4).path


@pytest.mark.parametrize(
    ("param", "needles"),
    [
        ("tfidf.C=-1", ["--param tfidf.C", "range"]),
        ("tfidf.C=0", ["--param tfidf.C"]),
        ("tfidf.C=abc", ["--param tfidf.C", "'abc'"]),
        ("tfidf.C=true", ["--param tfidf.C"]),
        ("tfidf.random_state=-3", ["--param tfidf.random_state"]),
        ("tfidf.nope=1", ["--param tfidf.nope", "no parameter 'nope'", "known: C"]),
        ("tfidf.context=1", ["--param tfidf.context", "no parameter"]),
        ("nope.C=1", ["--param nope.C", "unknown adversary 'nope'"]),
        ("judge.k=2", ["--param judge.k", "not attacked"]),
        ("surface.C=[1]", ["--param surface.C"]),
    ],
)
def test_bad_param_is_one_line_before_any_work(small_run: Path, param: str, needles) -> None:
    before = _snapshot(small_run)
    res = runner.invoke(
        app, ["attack", str(small_run), "--adversary", "tfidf,surface", "--param", param, *FAST]
    )
    _assert_one_line_error(res, *needles)
    assert _snapshot(small_run) == before


def test_check_params_covers_every_constrained_adversary() -> None:
    check_params("mmd", {"kernel": "hamming", "n_permutations": 99})
    check_params("encoder", {"epochs": 0.5, "device": "cpu", "freeze_embeddings": False})
    for name, params, needle in [
        ("mmd", {"kernel": "rbf"}, "mmd.kernel"),
        ("mmd", {"n_permutations": 0}, "mmd.n_permutations"),
        ("encoder", {"max_length": 4}, "encoder.max_length"),
        ("encoder", {"warmup_ratio": 1.5}, "encoder.warmup_ratio"),
        ("judge", {"method": "vibes"}, "judge.method"),
        ("judge", {"batch_size": 0}, "judge.batch_size"),
        ("embed", {"model": "svm"}, "embed.model"),
        ("likelihood", {"C": -2.0}, "likelihood.C"),
        ("pairwise_embed", {"C": 0}, "pairwise_embed.C"),
    ]:
        with pytest.raises(BbiError, match=needle.replace(".", r"\.")):
            check_params(name, params)


def test_failed_rerun_leaves_the_run_dir_byte_identical(small_run: Path, monkeypatch) -> None:
    res = runner.invoke(app, ["attack", str(small_run), "--adversary", "surface,tfidf", *FAST])
    assert res.exit_code == 0, res.output
    before = _snapshot(small_run)
    assert any(k.startswith("attack/student/") for k in before)

    def boom(self, X, y):
        raise RuntimeError("adversary failed mid-sweep")

    # 4 tfidf fits per comparison: the first comparison completes (its files staged), then
    # tfidf fails in the second one, after surface wrote that comparison's points too.
    calls = {"n": 0}
    real_fit = TfidfAdversary.fit

    def fail_later(self, X, y):
        calls["n"] += 1
        if calls["n"] > 5:
            boom(self, X, y)
        return real_fit(self, X, y)

    monkeypatch.setattr(TfidfAdversary, "fit", fail_later)
    cfg = AttackSettings(
        budgets=[8, 12],
        strategies=["random"],
        seeds=2,
        adversaries=["surface", "tfidf"],
        n_bootstrap=20,
        n_permutations=20,
    )
    from bbi.runstore import RunDir

    with pytest.raises(RuntimeError, match="mid-sweep"):
        run_attack(RunDir(small_run), cfg)
    assert calls["n"] > 5
    assert _snapshot(small_run) == before
    assert not list(small_run.glob(f"{STAGING_PREFIX}*"))


def test_rerun_replaces_the_detail_files_and_leaves_no_staging(small_run: Path) -> None:
    first = runner.invoke(app, ["attack", str(small_run), "--adversary", "surface", *FAST])
    assert first.exit_code == 0, first.output
    again = runner.invoke(
        app,
        ["attack", str(small_run), "--adversary", "surface", "--budget", "12", "--seeds", "1"]
        + ["--n-bootstrap", "20", "--n-permutations", "20"],
    )
    assert again.exit_code == 0, again.output
    names = sorted(p.name for p in (small_run / "attack" / "student").iterdir())
    points = [n for n in names if n.endswith(".json")]
    assert points and all("__q12__" in n for n in points), names
    assert "surface.scores.jsonl" in names
    assert not list(small_run.glob(f"{STAGING_PREFIX}*"))


def test_stale_staging_of_a_dead_process_is_removed(small_run: Path) -> None:
    stale = small_run / f"{STAGING_PREFIX}999999999-abc"
    (stale / "student").mkdir(parents=True)
    res = runner.invoke(app, ["attack", str(small_run), "--adversary", "surface", *FAST])
    assert res.exit_code == 0, res.output
    assert not stale.exists()


@pytest.mark.parametrize(
    ("adversary", "needle"),
    [("likelihood", "--param likelihood.reference=SPEC"), ("judge", "--param judge.judge=SPEC")],
)
def test_model_adversaries_on_an_imported_teacher_say_what_to_pass(
    small_run: Path, adversary: str, needle: str
) -> None:
    cfg_path = small_run / "run.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["models"]["teacher"]["spec"] = "imported:teacher.jsonl"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    before = _snapshot(small_run)
    res = runner.invoke(app, ["attack", str(small_run), "--adversary", adversary, *FAST])
    _assert_one_line_error(res, "imported", "no weights", needle)
    assert "unknown model kind" not in res.output
    assert _snapshot(small_run) == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--n-bootstrap", "99999999999999999999"], "--n-bootstrap: "),
        (["--n-permutations", "5"], "--n-permutations: "),
        (["--seeds", "100000000000"], "--seeds: "),
        (["--seeds", "0"], "--seeds: "),
    ],
)
def test_resampling_and_seed_counts_are_bounded(small_run: Path, args, needle: str) -> None:
    res = runner.invoke(
        app, ["attack", str(small_run), "--adversary", "surface", "--budget", "8", *args]
    )
    _assert_one_line_error(res, needle)
