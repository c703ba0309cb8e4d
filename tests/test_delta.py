"""Distilled vs base student: paired Delta-eps and similarity Delta, from stats to report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_results import build_run, load_results
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.app.cli.run import print_run_summary
from bbi.config import AttackSettings
from bbi.runstore import RunDir, append_jsonl, read_jsonl
from bbi.stats import (
    bootstrap_counts,
    delta_reading,
    holm,
    paired_delta,
    paired_delta_per_category,
    pointwise_contrib,
)
from discriminators import synthetic
from discriminators.attack import distill_base, distill_deltas

runner = CliRunner()


# ---- bbi.stats.paired_delta ---------------------------------------------------------------
def test_paired_delta_matches_direct_computation():
    rng = np.random.default_rng(3)
    a = rng.choice([-1.0, 0.0, 1.0], size=57)
    b = rng.choice([-1.0, 0.0, 1.0], size=57)
    out = paired_delta(a, b, n_bootstrap=400, n_permutations=300, seed=5)
    diff = a - b
    assert out["value"] == pytest.approx(a.mean() - b.mean())
    assert out["n"] == 57
    # Bootstrap: prompt indices resampled jointly for a and b, default_rng(seed).
    idx = np.random.default_rng(5).integers(0, 57, size=(400, 57))
    reps = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    assert out["ci"] == pytest.approx(list(np.quantile(reps, [0.025, 0.975])))
    reps_counts = bootstrap_counts(57, 400, np.random.default_rng(5)) @ diff / 57
    assert np.allclose(np.sort(reps), np.sort(reps_counts))
    # Two-sided sign flip within prompts, default_rng(seed + 1).
    signs = np.random.default_rng(6).integers(0, 2, size=(300, 57)) * 2.0 - 1
    perm = signs @ diff / 57
    want_p = (1 + np.sum(np.abs(perm) >= abs(diff.mean()) - 1e-12)) / 301
    assert out["p"] == pytest.approx(want_p)


def test_planted_improvement_gives_ci_below_zero():
    # Base: the adversary flags the teacher 80% and the student 20% of the time (eps 0.6);
    # distilled: 45% vs 40% (eps 0.05). Same prompts, threshold 0.5.
    rng = np.random.default_rng(0)
    n = 200
    s_teacher = (rng.random(n) < 0.8).astype(float)
    base = pointwise_contrib(s_teacher, (rng.random(n) < 0.2).astype(float), 0.5)
    s_teacher2 = (rng.random(n) < 0.45).astype(float)
    distilled = pointwise_contrib(s_teacher2, (rng.random(n) < 0.40).astype(float), 0.5)
    out = paired_delta(distilled, base)
    assert out["ci"][1] < 0 and out["p"] < 0.01
    assert out["ci"][0] <= out["value"] <= out["ci"][1]
    assert out["value"] == pytest.approx(distilled.mean() - base.mean())
    reading = delta_reading({"surface": out})
    assert reading["status"] == "closer" and reading["closer"] == ["surface"]
    assert reading["text"].startswith("closer: Delta-eps CI below 0 and Holm p < 0.05 for 1 of 1")
    # The mirror image: the "distilled" student got further from the teacher.
    back = paired_delta(base, distilled)
    assert back["ci"][0] > 0 and delta_reading({"surface": back})["status"] == "further"


def test_identical_contributions_give_zero_with_ci_covering_zero():
    d = np.random.default_rng(1).choice([-1.0, 0.0, 1.0], size=80)
    out = paired_delta(d, d.copy())
    assert out["value"] == 0 and out["ci"] == [0.0, 0.0] and out["p"] == 1.0
    assert delta_reading({"tfidf": out})["status"] == "not-closer"
    # Independent draws from the same distribution: no difference, the CI covers 0.
    rng = np.random.default_rng(2)
    a, b = rng.choice([0.0, 1.0], size=300), rng.choice([0.0, 1.0], size=300)
    noise = paired_delta(a, b)
    assert noise["ci"][0] <= 0 <= noise["ci"][1] and noise["p"] > 0.05


def test_paired_delta_rejects_unpaired_input():
    from bbi.errors import BbiError

    with pytest.raises(BbiError, match="differ in length"):
        paired_delta(np.zeros(3), np.zeros(4))
    with pytest.raises(BbiError, match="no paired items"):
        paired_delta(np.zeros(0), np.zeros(0))


def test_per_category_delta_is_holm_adjusted():
    rng = np.random.default_rng(4)
    cats = np.repeat(["a_planted", "b", "c", "d"], 60)
    base = rng.choice([0.0, 1.0], size=len(cats))
    distilled = base.copy()
    distilled[cats == "a_planted"] = 0.0  # the improvement lives in one category only
    other = cats != "a_planted"
    distilled[other] = rng.choice([0.0, 1.0], size=other.sum())
    out = paired_delta_per_category(distilled, base, cats, alpha=0.05)
    assert list(out) == ["a_planted", "b", "c", "d"]
    raw = [out[c]["p"] for c in out]
    assert [out[c]["p_holm"] for c in out] == pytest.approx(list(holm(raw)))
    assert all(out[c]["p_holm"] >= out[c]["p"] for c in out)
    assert out["a_planted"]["significant"] and out["a_planted"]["ci"][1] < 0
    assert [c for c in out if out[c]["significant"]] == ["a_planted"]
    # Seeds follow bbi.stats.per_category: category j uses seed + 1000 * (j + 1).
    m = cats == "b"
    assert out["b"]["ci"] == paired_delta(distilled[m], base[m], seed=2000)["ci"]


def test_few_discordant_prompts_leave_the_reading_undecided():
    # 20 prompts, the two comparisons differ on 4, all in the distilled student's favour:
    # the percentile bootstrap excludes 0, the exact sign-flip test (p = 2/16) does not.
    base = np.zeros(20)
    base[:4] = 1.0
    out = paired_delta(np.zeros(20), base, n_permutations=2000)
    assert out["ci"][1] < 0 and out["p"] > 0.1
    r = delta_reading({"surface": out}, alpha=0.05)
    assert r["status"] == "not-closer" and r["undecided"] == ["surface"]
    assert "undecided: surface" in r["text"]


def test_delta_reading_mixed_and_empty():
    down = {"value": -0.2, "ci": [-0.3, -0.1], "n": 10, "p": 0.01}
    up = {"value": 0.2, "ci": [0.1, 0.3], "n": 10, "p": 0.01}
    flat = {"value": 0.0, "ci": [-0.1, 0.1], "n": 10, "p": 0.9}
    r = delta_reading({"surface": down, "tfidf": up, "embed": flat})
    assert r["status"] == "mixed" and r["closer"] == ["surface"] and r["further"] == ["tfidf"]
    assert r["n"] == 3
    assert delta_reading({})["status"] == "none"


def test_distill_base_matches_the_record_spec():
    models = {
        "teacher": {"spec": "zoo:teacher", "role": "teacher"},
        "student": {"spec": "zoo:student", "role": "student"},
        "other": {"spec": "hf:./other", "role": "student"},
        "kd": {"spec": "hf:./other+lora:x", "role": "student"},
    }
    compared = {a: {"role": "student"} for a in ("student", "other", "kd")}
    assert distill_base("kd", {"base": "./other"}, models, compared) == ("other", "distill record")
    assert distill_base("kd", {}, models, compared) == ("student", "default alias")
    assert distill_base("kd", {}, models, {"kd": {"role": "student"}}) is None


# ---- the attack writes deltas ---------------------------------------------------------
ADVS = "surface,tfidf,pairwise"


def _attack(path, *extra: str):
    res = runner.invoke(
        app,
        [
            "attack",
            str(path),
            "--budget",
            "20,160",
            "--strategy",
            "random",
            "--seeds",
            "1",
            "--test-queries",
            "1",
            "--adversary",
            ADVS,
            "--n-bootstrap",
            "300",
            "--n-permutations",
            "300",
            *extra,
        ],
    )
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def distilled_run(tmp_path_factory):
    """A base student with a planted artifact in every category and a distilled student
    that kept little of it; similarity lines with a planted +0.1 improvement."""
    path = tmp_path_factory.mktemp("runs") / "distilled"
    cats = list(synthetic.CATEGORIES)
    run = synthetic.make_run(
        path,
        n_per_category=20,
        test_fraction=0.5,
        seed=0,
        students={
            "student": {"categories": cats, "rate": 0.9, "artifact": "signoff"},
            "student_kd": {"categories": cats, "rate": 0.1, "artifact": "signoff"},
        },
    )
    run.update_results(
        "distill",
        {
            "student_kd": {
                "spec": "synthetic:student_kd",
                "base": "synthetic:student",
                "method": "kd",
            }
        },
    )
    rng = np.random.default_rng(0)
    lines = []
    for pid, row in run.suite().iterrows():
        base = float(np.clip(0.5 + rng.normal(0, 0.1), -1, 1))
        for who, cos in (("student", base), ("student_kd", base + 0.1 + rng.normal(0, 0.02))):
            lines.append(
                {
                    "student": who,
                    "prompt_id": pid,
                    "category": row["category"],
                    "split": row["split"],
                    "cosine": cos,
                }
            )
    append_jsonl(run.similarity_path, lines)
    output = _attack(path)
    return run, output


def test_attack_writes_paired_deltas(distilled_run):
    run, output = distilled_run
    att = run.read_results()["attack"]
    assert set(att["deltas"]) == {"student_kd"}
    d = att["deltas"]["student_kd"]
    assert d["base"] == "student" and d["base_from"] == "distill record" and d["method"] == "kd"
    assert set(d["adversaries"]) == set(ADVS.split(",")) and d["skipped"] == {}
    comps = att["comparisons"]
    for adv, e in d["adversaries"].items():
        delta = e["delta"]
        eps_b, eps_d = (
            comps["student"]["adversaries"][adv]["eps"],
            comps["student_kd"]["adversaries"][adv]["eps"],
        )
        # Every test prompt is scored in both: Delta is exactly the difference of the eps.
        assert delta["n"] == eps_b["n"] == 100
        assert delta["value"] == pytest.approx(eps_d["value"] - eps_b["value"])
        assert e["eps_base"] == eps_b and e["eps_distilled"] == eps_d
        assert delta["ci"][0] <= delta["value"] <= delta["ci"][1] < 0, adv
        assert e["point"] == {"budget": 160, "strategy": "random", "seed": 0, "k": 1}
        assert set(e["per_category"]) == set(synthetic.CATEGORIES)
        assert all({"p_holm", "significant"} <= set(c) for c in e["per_category"].values())
    assert d["reading"]["status"] == "closer" and d["reading"]["n"] == 3
    sim = d["similarity"]
    assert sim["n"] == 100 and sim["ci"][0] <= 0.1 <= sim["ci"][1] and sim["ci"][0] > 0
    # Per-prompt contributions are recorded with the scores.
    scores = list(read_jsonl(run.attack_dir / "student" / "surface.scores.jsonl"))
    assert all(s["d"] in (-1.0, 0.0, 1.0) for s in scores)
    assert np.mean([s["d"] for s in scores]) == pytest.approx(
        comps["student"]["adversaries"]["surface"]["eps"]["value"]
    )
    assert "Distilled vs base student" in output and "closer: Delta-eps" in output


def test_rerun_of_one_comparison_pairs_with_the_published_base(distilled_run):
    run, _ = distilled_run
    before = run.read_results()["attack"]["deltas"]
    _attack(run.path, "--compare", "student_kd")  # the base is read back from attack/
    after = run.read_results()["attack"]["deltas"]
    assert after == before


def test_scores_without_d_are_read_through_the_threshold(distilled_run, tmp_path):
    run, _ = distilled_run
    att = run.read_results()["attack"]
    staged = {}
    for alias in ("student", "student_kd"):
        target = tmp_path / alias
        target.mkdir()
        for f in (run.attack_dir / alias).iterdir():
            text = f.read_text()
            if f.name.endswith(".scores.jsonl"):
                recs = [json.loads(x) for x in text.splitlines()]
                text = "".join(
                    json.dumps({k: v for k, v in r.items() if k not in ("d", "kept")}) + "\n"
                    for r in recs
                )
            (target / f.name).write_text(text)
        staged[alias] = target
    cfg = AttackSettings(n_bootstrap=300, n_permutations=300)
    old = distill_deltas(run, att["comparisons"], cfg, staged)["student_kd"]
    for adv, e in att["deltas"]["student_kd"]["adversaries"].items():
        assert old["adversaries"][adv]["delta"] == e["delta"]


def test_run_summary_prints_one_delta_line_per_distilled_student(distilled_run, capsys):
    run, _ = distilled_run
    print_run_summary(run.path)
    out = capsys.readouterr().out
    d = run.read_results()["attack"]["deltas"]["student_kd"]
    line = next(x for x in out.splitlines() if x.startswith("student_kd vs student: Delta-eps"))
    e = d["adversaries"]["pairwise"]["delta"]
    assert f"pairwise {e['value']:+.2f} [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}]" in line
    assert f"similarity {d['similarity']['value']:+.3f}" in line and line.endswith("-> closer")


# ---- the report shows the section -------------------------------------------------------
def test_report_renders_the_distillation_section(distilled_run):
    run, _ = distilled_run
    from reports import write_report

    html = write_report(run.path).read_text(encoding="utf-8")
    assert "Distillation: did it get closer?" in html and 'data-reading="closer"' in html
    md = write_report(run.path, fmt="md").read_text(encoding="utf-8")
    assert "## Distillation: did it get closer?" in md
    summary = json.loads(write_report(run.path, fmt="json").read_text(encoding="utf-8"))
    assert summary["distillation"]["student_kd"]["status"] == "closer"


def test_fixture_carries_deltas(tmp_path):
    res = load_results(build_run(tmp_path / "demo"))
    d = res["attack"]["deltas"]["student_lora"]
    assert d["base"] == "student" and res["distill"]["student_lora"]["base"] == "zoo:student"
    assert set(d["adversaries"]) == set(res["attack"]["comparisons"]["student"]["adversaries"])
    single = load_results(build_run(tmp_path / "one", students=("student",)))
    assert single["attack"]["deltas"] == {}


def test_runs_without_a_distilled_student_have_no_deltas(tmp_path):
    run = synthetic.make_run(tmp_path / "plain", n_per_category=6, test_fraction=0.5)
    _ = RunDir(run.path)
    res = runner.invoke(
        app,
        ["attack", str(run.path), "--budget", "8", "--strategy", "random", "--seeds", "1"]
        + ["--adversary", "surface", "--n-bootstrap", "50", "--n-permutations", "50"],
    )
    assert res.exit_code == 0, res.output
    assert run.read_results()["attack"]["deltas"] == {}
    assert "Distilled vs base" not in res.output


def test_delta_reading_is_corrected_across_adversaries():
    # p = 0.03 alone reads "closer"; among three adversaries Holm makes it 0.09.
    down = {"value": -0.2, "ci": [-0.3, -0.1], "n": 10, "p": 0.03}
    flat = {"value": 0.0, "ci": [-0.1, 0.1], "n": 10, "p": 0.9}
    assert delta_reading({"surface": down})["status"] == "closer"
    r = delta_reading({"surface": down, "tfidf": flat, "embed": flat})
    assert r["status"] == "not-closer" and r["undecided"] == ["surface"]
