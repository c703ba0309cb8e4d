"""What gives it away: planted give-aways are named, an A/A pair shows nothing, the test
split never steers the choice, and the report escapes what it highlights."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from bbi.config import AttackSettings
from bbi.explain_schema import Explanation
from bbi.runstore import RunDir, append_jsonl
from discriminators import synthetic
from discriminators.attack import run_attack
from discriminators.comparison import comparison_from_paired
from discriminators.explain import explain_comparison, train_selection
from reports import charts
from reports.explain import highlight
from reports.model import load_report
from reports.render import render

CATS = synthetic.CATEGORIES[:4]


def _teacher(prompt: str, rng: np.random.Generator) -> str:
    return synthetic.response(prompt, rng) + " " + synthetic.response(prompt, rng)


def _short_sure(prompt: str, rng: np.random.Generator) -> str:
    text = synthetic.response(prompt, rng)
    return "Sure! " + text if rng.random() < 0.7 else text


def _paired(n: int, seed: int, other) -> pd.DataFrame:
    """RunDir.paired's shape: half the prompts train, half test, four categories."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        prompt = f"Tell me about {' '.join(rng.choice(synthetic._WORDS, size=3))}?"
        rows.append(
            {
                "id": f"p{i:04d}",
                "category": CATS[i % len(CATS)],
                "subcategory": "x",
                "split": "test" if (i // len(CATS)) % 2 else "train",
                "prompt": prompt,
                "teacher": _teacher(prompt, rng),
                "other": other(prompt, rng),
            }
        )
    return pd.DataFrame(rows)


def _explain(paired: pd.DataFrame, role: str = "student") -> dict:
    data = comparison_from_paired(paired, "student", role)
    return explain_comparison(data, "gpt-x", n_bootstrap=300, n_permutations=300)


def test_shorter_sure_student_is_named_with_direction():
    rec = _explain(_paired(240, 0, _short_sure))
    Explanation.model_validate(rec)  # the record follows its schema
    feats = {f["key"]: f for f in rec["features"]}
    length = [feats[k] for k in ("surface:words", "surface:chars") if k in feats]
    assert length and length[0]["direction"] == "teacher" and length[0]["eps"]["significant"]
    assert length[0]["ratio"] < 0.7  # the student's answers are about half as long
    sure = [f for k, f in feats.items() if k.startswith("opener:sure")]
    assert sure and sure[0]["direction"] == "other" and sure[0]["eps"]["significant"]
    assert "Sure" in sure[0]["label"]
    assert sure[0]["test"]["teacher"] == 0 and sure[0]["test"]["other"] > 0.5
    assert rec["stands_out"]
    assert "shorter" in rec["summary"] and "opens with “Sure" in rec["summary"]
    best = rec["rules"][0]
    assert best["kind"] == "pairwise" and best["feature"] in ("surface:words", "surface:chars")
    assert best["eps"]["ci"][0] > 0.5 and "longer" in best["text"]
    assert rec["rules"][1]["kind"] == "threshold"  # a count also gets a threshold rule
    for cat in CATS:  # every category names its own features
        assert rec["per_category"][cat]["features"]


def test_aa_pair_shows_nothing():
    rec = _explain(_paired(240, 1, _teacher), role="null")
    assert not rec["stands_out"]
    assert rec["summary"].startswith("Nothing stands out")
    assert not any(f["eps"]["significant"] for f in rec["features"])
    # Simultaneous CIs: no shown feature's CI excludes 0.
    assert all(f["eps"]["ci"][0] <= 0 <= f["eps"]["ci"][1] for f in rec["features"])


def test_test_responses_never_steer_the_choice():
    paired = _paired(200, 2, _short_sure)
    rec = _explain(paired)
    changed = paired.copy()
    test = changed["split"] == "test"
    # Rewrite every test response: the teacher now opens with "Sure!" and the student
    # rambles; what the train split chose must not move, only the test rates.
    changed.loc[test, "teacher"] = "Sure! " + changed.loc[test, "teacher"].str.upper()
    changed.loc[test, "other"] = changed.loc[test, "other"].str.repeat(3)
    rec2 = _explain(changed)
    assert train_selection(rec2) == train_selection(rec)
    assert [f["test"] for f in rec2["features"]] != [f["test"] for f in rec["features"]]


def test_highlight_escapes_model_text():
    from bbi.explain_schema import Feature

    f = Feature.model_validate(
        {
            "key": "opener:sure !",
            "kind": "opener",
            "label": "opens with “Sure!”",
            "binary": True,
            "direction": "other",
            "pattern": r"(?i)\A\s*\bsure\b\s*!",
            "train": {},
            "test": {},
            "eps": {},
        }
    )
    out = str(highlight("Sure! <script>alert(1)</script>", [f]))
    assert out.startswith('<mark class="giveaway" title="opens with “Sure!”">Sure!</mark>')
    assert "<script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    out = str(highlight("<b>Sure!</b>", [f]))  # a pattern cannot match inside a tag
    assert "<b>" not in out and "<mark" not in out


def _run(path, teacher: str = "gpt-x") -> RunDir:
    """A run whose teacher alias is not "teacher"; the student is shorter, opens with
    "Sure!" and sometimes with a script tag."""
    run = RunDir(path, create=True)
    rng = np.random.default_rng(3)
    suite, t_recs, o_recs = [], [], []
    for i in range(160):
        cat = CATS[i % len(CATS)]
        prompt = f"Tell me about {' '.join(rng.choice(synthetic._WORDS, size=3))}?"
        pid = f"{cat}-{i:05d}"
        suite.append(
            {"id": pid, "category": cat, "subcategory": "x", "prompt": prompt,
             "split": "test" if (i // len(CATS)) % 2 else "train", "reference": None, "source": "generated",
             "perturbation": None, "base_id": None}
        )  # fmt: skip
        other = "Sure! <script>alert(1)</script> " + synthetic.response(prompt, rng)
        for recs, text in ((t_recs, _teacher(prompt, rng)), (o_recs, other)):
            recs.append({"prompt_id": pid, "sample": 0, "text": text, "n_tokens": 1,
                         "finish_reason": "stop"})  # fmt: skip
    append_jsonl(run.suite_path, suite)
    append_jsonl(run.responses_path(teacher), t_recs)
    append_jsonl(run.responses_path("student"), o_recs)
    run.write_config(
        {"models": {teacher: {"spec": "import:x", "role": "teacher"},
                    "student": {"spec": "import:y", "role": "student"}}}
    )  # fmt: skip
    return run


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    run = _run(tmp_path_factory.mktemp("explain") / "run")
    cfg = AttackSettings(
        budgets=[40, 120],
        strategies=["random"],
        seeds=1,
        adversaries=["surface", "pairwise"],
        n_bootstrap=200,
        n_permutations=200,
    )
    run_attack(run, cfg)
    return run


def test_reference_is_the_teachers_alias(attacked):
    comp = attacked.read_results()["attack"]["comparisons"]["student"]
    assert comp["reference"] == "gpt-x"
    for path in (attacked.attack_dir / "student").glob("*.json"):
        assert json.loads(path.read_text())["reference"] == "gpt-x"
    html = render(load_report(attacked.path), "html")
    assert "vs teacher gpt-x" in html and "vs teacher teacher" not in html
    assert "(response not found in the run directory)" not in html


def test_old_reference_falls_back_to_the_teacher(attacked, tmp_path):
    import shutil

    run = RunDir(shutil.copytree(attacked.path, tmp_path / "old"))
    results = run.read_results()
    results["attack"]["comparisons"]["student"]["reference"] = "teacher"  # as bbi wrote it
    run.update_results("attack", results["attack"])
    report = load_report(run.path)
    assert report.comparisons[0].reference == "gpt-x"
    ex = next(iter(report.comparisons[0].examples.values()))[0]
    assert ex.teacher is not None


def test_report_shows_what_gives_it_away(attacked):
    rec = attacked.read_results()["attack"]["comparisons"]["student"]["explain"]
    assert rec["stands_out"] and rec["examples"]
    assert rec["examples"][0]["adversary"] in ("surface", "pairwise")
    html = render(load_report(attacked.path), "html")
    section = html[html.index('id="giveaway"') : html.index('id="examples"')]
    assert "<script" not in section
    assert '<mark class="giveaway"' in section
    # The highlights wrap escaped spans: without them the escaped text reads as generated.
    plain = re.sub(r'<mark class="giveaway" title="[^"<>]*">|</mark>', "", section)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in plain
    md = render(load_report(attacked.path), "md")
    assert "## What gives it away" in md and rec["rules"][0]["text"] in md
    summary = json.loads(render(load_report(attacked.path), "json"))
    assert summary["comparisons"]["student"]["explain"] == rec  # the same record
    assert "p = <" not in html and "p = <" not in md
    # The verdict says why, in the summary's words.
    assert 'data-why="student"' in html and f"Why: {rec['summary'][:20]}" in md


def test_p_values_read_as_relations():
    assert charts.p_is(0.0004, "Holm p") == "Holm p < 0.001"
    assert charts.p_is(0.0123) == "p = 0.012"
    assert charts.p_is(None) == "p –"
