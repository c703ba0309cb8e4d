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


def _kd(run: RunDir, full: bool = False, options: dict | None = None, **flags):
    from distill.kd import distill_kd

    settings = KDSettings().updated(**{**FAST, **flags})
    return distill_kd(run, settings=settings, full=full, progress=False, **(options or {}))


def test_milestones_keep_snapshots_with_increasing_tokens(kd_run):
    from bbi.backends import load_backend
    from bbi.backends.base import GenerationConfig

    res = _kd(kd_run, full=True, curve_tokens=[200, 600, 1200, 10**9])
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
    # a snapshot is a student bbi loads like the final one (here a full model)
    first = curve.snapshots[0]
    assert first.spec.startswith("hf:") and first.spec != res.spec
    backend = load_backend(first.spec, device="cpu")
    try:
        (gen,) = backend.generate(["What is 2?"], GenerationConfig(max_new_tokens=4), seeds=[0])
        assert gen.n_tokens >= 1
    finally:
        backend.close()


def test_a_resumed_training_keeps_the_same_snapshots(kd_run):
    from safetensors.torch import load_file

    milestones = [200, 600, 1200]
    _kd(kd_run, curve_tokens=milestones, options={"alias": "whole"})
    part = _kd(kd_run, curve_tokens=milestones, options={"alias": "parts", "stop_after_steps": 2})
    assert not part.completed
    part = _kd(kd_run, curve_tokens=milestones, options={"alias": "parts", "resume": True})
    distill = kd_run.read_results()["distill"]
    a, b = distill["whole"]["curve"], distill["parts"]["curve"]
    keys = ("tokens_seen", "loss_tokens", "step", "milestones")
    assert [[s[k] for k in keys] for s in a["snapshots"]] == [
        [s[k] for k in keys] for s in b["snapshots"]
    ]
    assert a["tokens_seen"] == b["tokens_seen"] and len(a["snapshots"]) >= 2
    for sa, sb in zip(a["snapshots"], b["snapshots"], strict=True):
        wa = load_file(f"{sa['dir']}/adapter_model.safetensors")
        wb = load_file(f"{sb['dir']}/adapter_model.safetensors")
        assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


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


@pytest.fixture(scope="module")
def curve_run(micro_zoo, tmp_path_factory):
    """One `bbi run` with token milestones on the micro pair: (run, its CLI output)."""
    import yaml
    from typer.testing import CliRunner

    from bbi.app.cli import app

    tmp = tmp_path_factory.mktemp("curve")
    cfg_path = tmp / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp, [300, 900, 10**9])))
    res = CliRunner().invoke(app, ["run", "--config", str(cfg_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    return RunDir(tmp / "runs" / "curve"), res.output


def test_bbi_run_draws_the_curve_with_the_band(curve_run):
    from bbi.results_schema import parse_token_curves

    run, output = curve_run
    results = run.read_results()
    curve = parse_token_curves(results["token_curve"])["student_kd"]
    kinds = [p.kind for p in curve.points]
    assert kinds[0] == "base" and kinds.count("snapshot") >= 2
    tokens = [p.tokens_seen for p in curve.points]
    assert tokens == sorted(set(tokens)) and tokens[0] == 0
    snaps = results["distill"]["student_kd"]["curve"]["snapshots"]
    assert [p.alias for p in curve.points if p.kind == "snapshot"] == [s["alias"] for s in snaps]
    for p in curve.points:
        assert p.eps is not None and p.eps.ci[0] <= p.eps.value <= p.eps.ci[1]
        # the analysis that decides (cross-fitted by default), named with its test
        cf = results["attack"]["comparisons"][p.alias]["verdict"]["crossfit"]
        assert cf["decides"] and p.adversary == cf["primary"]["adversary"]
        assert "cross-fitted" in p.test and p.eps.p == cf["primary"]["p"]
        assert p.eps.value == cf["primary"]["eps"]["value"]
    assert curve.band is not None and curve.band.alias == "teacher_null"
    null_cf = results["attack"]["comparisons"]["teacher_null"]["verdict"]["crossfit"]
    assert curve.band.eps.ci == tuple(null_cf["primary"]["eps"]["ci"])
    assert curve.band.eps.h0 == "eps <= 0"  # the A/A tests eps = 0
    assert curve.unreached == [10**9] and any("never reached" in n for n in curve.notes)
    # every point attacked with the run's own sweep, on the same test prompts
    comps = results["attack"]["comparisons"]
    for p in curve.points:
        assert comps[p.alias]["config"] == comps["student_kd"]["config"]
        assert comps[p.alias]["n_test"] == comps["student_kd"]["n_test"]
    # the snapshots are answered like any student: responses keyed by their own weights
    fps = {results["models"][p.alias]["fingerprint"] for p in curve.points}
    assert len(fps) == len(curve.points)
    html = (run.path / "report.html").read_text(encoding="utf-8")
    assert 'id="token-curve"' in html and 'data-band="aa"' in html
    assert html.count('class="token-point"') == len(curve.points) - 1  # base: a line
    # the snapshots are the curve's points, not students of the report's other sections
    assert 'data-comparison="student_kd.t' not in html
    assert "eps against distillation tokens" in output


def test_bbi_curve_warm_rerun_is_cached(curve_run):
    from typer.testing import CliRunner

    from bbi.app.cli import app

    run, _ = curve_run
    before = run.read_results()["token_curve"]
    res = CliRunner().invoke(app, ["curve", str(run.path), "--no-progress", "--no-report"])
    assert res.exit_code == 0, res.output
    # the recorded sweep is reproduced exactly, so nothing is generated or attacked again
    timings = run.manifest()["timings"]
    for p in before["student_kd"]["points"]:
        assert timings[f"generate:{p['alias']}"]["generated"] == 0
    assert "cached: curve attack results unchanged" in res.output
    assert run.read_results()["token_curve"] == before


def test_a_new_training_retires_the_old_snapshots(curve_run, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from bbi.app.cli import app
    from reports.model import load_report

    run, _ = curve_run
    copy = RunDir(shutil.copytree(run.path, tmp_path / "run"))
    old = {s["alias"] for s in copy.read_results()["distill"]["student_kd"]["curve"]["snapshots"]}
    flags = ["--epochs", "1", "--batch-size", "8", "--max-length", "64", "--lr", "2e-3"]
    res = CliRunner().invoke(
        app,
        ["distill", "kd", str(copy.path), "--alias", "student_kd", "--curve-tokens", "500",
         "--no-progress", *flags],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    new = {s["alias"] for s in copy.read_results()["distill"]["student_kd"]["curve"]["snapshots"]}
    assert new and not new & old
    assert not old & set(RunDir(copy.path).config()["models"])  # their directories are gone
    res = CliRunner().invoke(app, ["curve", str(copy.path), "--no-progress"])
    assert res.exit_code == 0, res.output
    points = copy.read_results()["token_curve"]["student_kd"]["points"]
    assert {p["alias"] for p in points if p["kind"] == "snapshot"} == new
    report = load_report(copy.path)
    assert not {c.alias for c in report.comparisons} & (old | new)


def test_curve_section_escapes_run_text(curve_run, tmp_path):
    import shutil

    from reports.model import load_report
    from reports.render import render_html, render_markdown

    run, _ = curve_run
    copy = RunDir(shutil.copytree(run.path, tmp_path / "run"))
    res = copy.read_results()
    tc = res["token_curve"]["student_kd"]
    tc["notes"].append("<script>alert(1)</script>")
    tc["points"][1]["test"] = "<img src=x onerror=alert(2)>"
    copy.update_results("token_curve", {"x<b>y": tc})
    report = load_report(copy.path)
    html = render_html(report)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "<img src=x" not in html and "x&lt;b&gt;y" in html
    md = render_markdown(report)
    assert "<script>" not in md and "Distillation tokens" in md


@pytest.mark.parametrize(
    "args, needle",
    [
        (["distill", "kd", "{run}", "--curve-tokens", "300,100"], "--curve-tokens"),
        (["distill", "lora", "{run}", "--curve-tokens", "0"], "--curve-tokens"),
        (["run", "--curve-tokens", "5,3"], "--curve-tokens: token milestones must be strictly"),
        (["run", "--curve-tokens", "5", "--no-distill"], "distillation is off"),
        (["curve", "{run}"], "no distilled student kept curve snapshots"),
        (["curve", "{run}", "--student", "nobody"], "'nobody' kept no curve snapshots"),
    ],
)
def test_bad_curve_settings_are_one_line(kd_run, args, needle):
    from typer.testing import CliRunner

    from bbi.app.cli import app

    res = CliRunner().invoke(app, [a.format(run=kd_run.path) for a in args])
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.output


def test_bad_curve_config_is_one_line(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from bbi.app.cli import app

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"distill": {"kd": {"curve_tokens": [500, 500]}}}))
    res = CliRunner().invoke(app, ["run", "--config", str(cfg)])
    assert res.exit_code == 2
    assert "distill.kd.curve_tokens" in res.output and "increasing" in res.output


def test_no_milestones_leave_records_and_dumps_unchanged():
    from bbi.config import DEFAULT_CURVE_TOKENS, LoraSettings, RunConfig

    # results.json's hyperparameters, checkpoint identities and `bbi run`'s cache keys
    assert "curve_tokens" not in KDSettings().model_dump()
    assert "curve_tokens" not in LoraSettings().model_dump()
    # bbi run draws the curve by default; an empty list turns it off, dump unchanged
    assert RunConfig().distill.kd.curve_tokens == list(DEFAULT_CURVE_TOKENS)
    off = RunConfig.parse({"distill": {"kd": {"curve_tokens": []}}})
    assert "curve_tokens" not in off.model_dump()["distill"]["kd"]
    assert KDSettings(curve_tokens=[5, 50]).model_dump()["curve_tokens"] == [5, 50]


def test_curve_points_follow_the_decision():
    """A curve point carries the eps of the analysis that decided the verdict: the
    cross-fitted adversary when it decides, else the split's confirmed primary point."""
    from bbi.app.curve import _decider

    split_eps = {"value": 0.4, "ci": [0.2, 0.6], "n": 20}
    split = {"adversary": "tfidf", "strategy": "random", "q": 80, "eps": split_eps}
    cf_prim = {"adversary": "selected", "chosen": ["n_exclaims", "stack"], "p": 0.003}
    cf_prim["eps"] = {"value": 0.3, "ci": [0.1, 0.5], "n": 200}
    verdict = {"primary": split, "crossfit": {"decides": True, "epsilon": 0.1, "primary": cf_prim}}
    fields, where = _decider(verdict)
    assert fields["adversary"] == "selected" and fields["eps"]["p"] == 0.003
    assert fields["eps"]["h0"] == "eps <= 0.1" and "n_exclaims, stack" in where
    verdict["crossfit"]["decides"] = False  # decision: split
    fields, where = _decider(verdict)
    assert fields == split and "confirmation half" in where
    assert _decider({})[0] == {}
