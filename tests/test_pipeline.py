"""`bbi run` end to end on the micro zoo: probe, distil, probe, attack, report; then warm."""

from __future__ import annotations

import json
import math

import yaml
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.runstore import RunDir


def _config(tmp_path) -> dict:
    return {
        "run": str(tmp_path / "runs" / "e2e"),
        "teacher": "zoo:teacher",
        "student": "zoo:student",
        "teacher_args": {"attn_implementation": "eager"},
        "generation": {"limit": 120, "max_new_tokens": 16, "batch_size": 32},
        "distill": {
            "methods": ["lora", "kd"],
            "full": False,
            "lora": {"epochs": 1, "batch_size": 16, "max_length": 96, "lr": 2e-3},
            # no token snapshots here (tests/test_token_curve.py runs the default curve)
            "kd": {
                "epochs": 1,
                "batch_size": 16,
                "max_length": 96,
                "lr": 2e-3,
                "curve_tokens": [],
            },
        },
        "attack": {
            "adversaries": ["surface", "tfidf"],
            "budgets": [20, 80],
            "strategies": ["random", "stratified"],
            "seeds": 2,
            "test_queries": [1, 2],
            "equality": True,
        },
    }


def test_bbi_run_end_to_end_then_warm(micro_zoo, tmp_path):
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path)))
    runner = CliRunner()
    res = runner.invoke(app, ["run", "--config", str(cfg_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    run = RunDir(tmp_path / "runs" / "e2e")
    results = run.read_results()
    comps = results["attack"]["comparisons"]
    assert set(comps) == {"teacher_null", "student", "student_lora", "student_kd"}
    for c in comps.values():
        for adv in ("surface", "tfidf"):
            eps = c["adversaries"][adv]["eps"]
            assert eps["ci"][0] <= eps["value"] <= eps["ci"][1]
            assert eps["n"] == 20  # 120 prompts: 12 per category, 2 of them test
    assert comps["teacher_null"]["role"] == "null"
    # The default decision: the cross-fitted stack, one exact test per fold, merged.
    assert results["attack"]["config"]["decision"] == "crossfit"
    for c in comps.values():
        cf = c["verdict"]["crossfit"]
        assert cf["decides"] is True and cf["folds"] == 2 and cf["n_prompts"] == 120
        assert c["verdict"]["status"] == cf["status"] and len(cf["primary"]["fold_p"]) == 2
    assert comps["teacher_null"]["verdict"]["calibration"]["eps0"] == 0.0
    # Beside the decision, the equality claim on every prompt; in the A/A comparison it is
    # a direct check that must come out null.
    for c in comps.values():
        eq = c["verdict"]["equality"]
        assert eq["n_prompts"] == 120 and [t["name"] for t in eq["tests"]] == [
            "kspectrum",
            "hamming",
        ]
    assert comps["teacher_null"]["verdict"]["equality"]["calibration"]["ok"] is True
    assert "teacher_null: equality (MMD): A/A equality check holds" in res.output
    assert set(results["similarity"]) == {"teacher_null", "student", "student_lora", "student_kd"}
    for alias in ("student_lora", "student_kd"):
        assert results["distill"][alias]["spec"].startswith("zoo:student+lora:")
    report = (run.path / "report.html").read_text(encoding="utf-8")
    assert "student_lora" in report and "student_kd" in report
    # Distil, re-measure, get closer: each distilled student is paired with its base.
    deltas = results["attack"]["deltas"]
    assert set(deltas) == {"student_lora", "student_kd"}
    for d in deltas.values():
        assert d["base"] == "student" and d["skipped"] == {}
        assert set(d["adversaries"]) == {"surface", "tfidf"}
        for e in d["adversaries"].values():
            delta = e["delta"]
            assert delta["n"] == 20 and math.isfinite(delta["value"])
            assert delta["ci"][0] <= delta["value"] <= delta["ci"][1]
            assert 0 < delta["p"] <= 1
        sim = d["similarity"]
        assert sim["n"] == 20 and sim["ci"][0] <= sim["value"] <= sim["ci"][1]
        assert d["reading"]["status"] in ("closer", "further", "mixed", "not-closer")
    assert 'id="distillation"' in report and "Distillation: did it get closer?" in report
    assert "student_kd vs student: Delta-eps" in res.output
    models = yaml.safe_load(run.config_path.read_text())["models"]
    assert models["student_lora"]["role"] == models["student_kd"]["role"] == "student"
    assert (
        models["teacher"]["args"]
        == models["teacher_null"]["args"]
        == {"attn_implementation": "eager"}
    )

    # Warm: every step is a cache hit; nothing is regenerated or retrained.
    before = {p.name: p.read_bytes() for p in (run.path / "responses").glob("*.jsonl")}
    attack_before = json.dumps(results["attack"], sort_keys=True)
    res2 = runner.invoke(app, ["run", "--config", str(cfg_path), "--no-progress"])
    assert res2.exit_code == 0, res2.output
    assert "cached" in res2.output
    after = {p.name: p.read_bytes() for p in (run.path / "responses").glob("*.jsonl")}
    assert after == before
    assert json.dumps(run.read_results()["attack"], sort_keys=True) == attack_before
    timings = run.manifest()["timings"]
    assert all(
        timings[f"generate:{a}"]["generated"] == 0
        for a in ("teacher", "teacher_null", "student", "student_lora", "student_kd")
    )


def test_bbi_run_bad_config_is_one_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("attack:\n  budgetz: [1]\n")
    res = CliRunner().invoke(app, ["run", "--config", str(cfg)])
    assert res.exit_code == 2
    assert "attack.budgetz" in res.output and "Traceback" not in res.output


def test_bbi_run_bad_model_args_are_one_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        f"run: {tmp_path / 'r'}\nteacher: zoo:teacher\nteacher_args: {{max_model_len: 8}}\n"
    )
    res = CliRunner().invoke(app, ["run", "--config", str(cfg)])
    assert res.exit_code == 2 and "teacher_args: zoo: models take no 'max_model_len'" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "r").exists()
