"""The verdict's equality claim (``discriminators.equality``): its size under a synthetic
null, a planted difference found, its wording, where it may change the decision, its
schema and how the report shows it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_results import build_run, load_results
from threadpoolctl import threadpool_limits

from bbi.errors import BbiError
from bbi.results_schema import EqualityClaim, Verdict
from discriminators import synthetic
from discriminators.comparison import load_comparison
from discriminators.equality import apply_equality, equality_claim, equality_tests
from reports import write_report

ALPHA = 0.05


def _null_pair(rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
    """Two independent draws of one generator on the same ``n`` prompts."""
    prompts = [f"Tell me about {' '.join(rng.choice(synthetic._WORDS, 3))}?" for _ in range(n)]
    return (
        [synthetic.response(p, rng) for p in prompts],
        [synthetic.response(p, rng) for p in prompts],
    )


@pytest.mark.slow
def test_size_under_a_synthetic_null():
    """Rejection rate over repeats <= alpha within Monte-Carlo error, for the claim (Holm
    over both tests) and for each test alone (each is exact, so each holds alpha too)."""
    reps, n, perms = 300, 40, 199
    rng = np.random.default_rng(7)
    claim, single = 0, {"kspectrum": 0, "hamming": 0}
    with threadpool_limits(limits=1):
        for i in range(reps):
            t, o = _null_pair(rng, n)
            r = equality_tests(t, o, ALPHA, perms, seed=i)
            claim += r["rejected"]
            for row in r["tests"]:
                single[row["name"]] += row["p"] <= ALPHA
    se = np.sqrt(ALPHA * (1 - ALPHA) / reps)
    assert claim / reps <= ALPHA + 2 * se
    for name, k in single.items():
        assert k / reps <= ALPHA + 2 * se, name
        assert k / reps > 0.005, name  # exact, not uselessly conservative


def test_a_planted_difference_is_found_and_the_test_named():
    rng = np.random.default_rng(1)
    t, o = _null_pair(rng, 80)
    o = [s.upper() if rng.random() < 0.5 else s for s in o]  # half the answers shout
    r = equality_tests(t, o, ALPHA, 499, seed=0)
    assert r["rejected"] and r["schema_version"] == 1
    names = {row["name"]: row for row in r["tests"]}
    assert set(names) == {"kspectrum", "hamming"}
    best = names[r["decided_by"]]
    assert 1 / 500 <= best["p"] <= 0.01  # the +1 correction: never below 1 / (1 + B)
    assert r["text"].startswith(f"the responses differ in distribution ({best['label']}, p = ")
    assert "k-spectrum kernel" in names["kspectrum"]["test"]
    assert "Hamming kernel" in names["hamming"]["test"]
    # Holm over the two: the smaller p doubled, the larger kept (monotone).
    ps = sorted(row["p"] for row in r["tests"])
    holm = sorted(row["p_holm"] for row in r["tests"])
    assert holm[0] == pytest.approx(min(1.0, 2 * ps[0]))
    # Never an eps claim.
    assert "distinguishable" not in r["text"] and "eps" not in r["text"]


def test_no_finding_is_worded_as_no_evidence():
    rng = np.random.default_rng(2)
    t, o = _null_pair(rng, 30)
    r = equality_tests(t, t, ALPHA, 99, seed=0)  # identical responses: MMD^2 is 0
    assert not r["rejected"] and r["decided_by"] is None
    assert "MMD k-spectrum p = " in r["text"] and "MMD Hamming p = " in r["text"]
    assert "not evidence that they are equal" in r["text"]
    with pytest.raises(BbiError):
        equality_tests(t[:1], o[:1], ALPHA, 99)


def test_on_synthetic_runs_aa_holds_and_a_broad_artifact_is_found(tmp_path):
    students = {
        "student": {"categories": list(synthetic.CATEGORIES), "rate": 0.5, "artifact": "caps"}
    }
    run = synthetic.make_run(tmp_path, n_per_category=12, seed=5, students=students)
    with threadpool_limits(limits=1):
        null = equality_claim(load_comparison(run, "teacher_null"), ALPHA, 199, seed=0)
        stud = equality_claim(load_comparison(run, "student"), ALPHA, 199, seed=0)
    # Every prompt, train and test split: nothing is trained, so nothing is held out.
    assert null["n_prompts"] == stud["n_prompts"] == 120 and null["responses"] == 240
    assert null["calibration"]["ok"] and "holds" in null["calibration"]["text"]
    assert stud["rejected"] and "calibration" not in stud


def _verdict(status: str, eps: float) -> dict:
    return {
        "status": status,
        "indistinguishable": status == "indistinguishable",
        "epsilon": eps,
        "text": f"{status} at eps {eps}",
    }


def test_blocks_indistinguishable_only_at_eps0_zero():
    rng = np.random.default_rng(4)  # a draw whose null pair does not reject (5% do)
    t, o = _null_pair(rng, 60)
    differs = equality_tests(t, [s.upper() for s in o], ALPHA, 199)
    same = equality_tests(t, o, ALPHA, 199)
    assert differs["rejected"] and not same["rejected"]
    # eps0 > 0: a difference in distribution is compatible with eps <= eps0.
    v = apply_equality(_verdict("indistinguishable", 0.1), differs)
    assert v["status"] == "indistinguishable" and not v["equality"]["blocks_indistinguishable"]
    # eps0 = 0: "indistinguishable at eps <= 0" would say they are equal.
    v = apply_equality(_verdict("indistinguishable", 0.0), differs)
    assert v["status"] == "inconclusive" and v["indistinguishable"] is False
    assert v["equality"]["blocks_indistinguishable"] and differs["text"] in v["text"]
    # It never makes an eps claim: inconclusive stays inconclusive, nothing turns
    # distinguishable, and without a rejection nothing changes.
    for status in ("inconclusive", "distinguishable"):
        for eps in (0.0, 0.1):
            assert apply_equality(_verdict(status, eps), differs)["status"] == status
    v = apply_equality(_verdict("indistinguishable", 0.0), same)
    assert v["status"] == "indistinguishable" and v["text"] == "indistinguishable at eps 0.0"


def test_schema_round_trip_and_version():
    rng = np.random.default_rng(4)
    t, o = _null_pair(rng, 20)
    claim = apply_equality(_verdict("inconclusive", 0.1), equality_tests(t, o, ALPHA, 99))[
        "equality"
    ]
    raw = json.loads(json.dumps(claim))
    assert EqualityClaim.model_validate(raw).dump() == raw
    verdict = {
        "epsilon": 0.1,
        "alpha": ALPHA,
        "plan": "p",
        "adversaries": [],
        "indistinguishable": False,
        "status": "inconclusive",
        "text": "t",
    }
    for eq in (raw, {"skipped": "equality: needs at least 2 prompts, got 1"}):
        v = Verdict.model_validate({**verdict, "equality": eq})
        assert v.dump()["equality"] == eq
    with pytest.raises(ValueError):
        EqualityClaim.model_validate({**raw, "schema_version": 2})
    with pytest.raises(ValueError):
        EqualityClaim.model_validate({**raw, "extra": 1})


def test_report_shows_the_claim_escaped(tmp_path):
    run = build_run(tmp_path / "demo")
    res = load_results(run)
    comps = res["attack"]["comparisons"]
    rng = np.random.default_rng(5)
    t, o = _null_pair(rng, 40)
    differs = equality_tests(t, [s.upper() for s in o], ALPHA, 199)
    hostile = json.loads(json.dumps(differs))
    hostile["tests"][1]["test"] = "<b>kernel</b>*_[x](y)"
    comps["student"]["verdict"] = apply_equality(comps["student"]["verdict"], hostile)
    null_alias = next(a for a, c in comps.items() if c["role"] == "null")
    aa = {**equality_tests(t, o, ALPHA, 199), "calibration": {"ok": True, "text": "A/A holds"}}
    comps[null_alias]["verdict"] = apply_equality(comps[null_alias]["verdict"], aa)
    (run / "results.json").write_text(json.dumps(res), encoding="utf-8")
    html = write_report(run).read_text(encoding="utf-8")
    card = html.split('data-equality="student"', 1)[1].split("</p>", 1)[0]
    assert 'data-equality-rejected="yes"' in card
    assert f"<b>{differs['text']}</b>" in card
    assert "&lt;b&gt;kernel&lt;/b&gt;" in card and "<b>kernel</b>" not in html
    assert "MMD^2 permutation test, k-spectrum kernel" in card
    assert 'data-equality-calibration="ok"' in html and "A/A holds" in html
    summ = html.split('data-summary-equality="student"', 1)[1].split("</p>", 1)[0]
    assert differs["text"] in summ and "MMD k-spectrum Holm p = " in summ
    md = write_report(run, fmt="md").read_text(encoding="utf-8")
    summary_md = md[md.index("## Summary") :]
    assert "Equality, its own question (not a claim about ε): the responses differ" in summary_md
    line = next(x for x in md.splitlines() if "Equality, its own question" in x)
    plain = line.replace("\\", "")
    assert "the responses differ in distribution (MMD " in plain
    assert "MMD^2 permutation test, k-spectrum kernel (orders 1..5" in plain
    assert "&lt;b&gt;kernel&lt;/b&gt;\\*\\_\\[x\\](y)" in line
    assert f"A/A equality check ({null_alias}" in md
    summary = json.loads(write_report(run, fmt="json").read_text(encoding="utf-8"))
    eq = summary["comparisons"]["student"]["verdict"]["equality"]
    assert eq["rejected"] and eq["tests"][0]["name"] == "kspectrum"
