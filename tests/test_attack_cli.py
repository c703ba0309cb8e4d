"""`bbi attack` end to end on synthetic runs with planted differences (no models needed)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.config import AttackSettings
from bbi.results_schema import AttackPoint
from bbi.runstore import RunDir, append_jsonl, read_jsonl
from discriminators import base, get_adversary, synthetic
from discriminators.attack import (
    comparison_from_paired,
    revealed_ok,
    run_attack,
    run_point,
)
from discriminators.evaluate import Evaluator
from discriminators.pairwise import PairwiseAdversary

runner = CliRunner()

CHEAP = "surface,tfidf,pairwise"


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "planted"
    synthetic.make_run(
        path,
        n_per_category=60,
        test_fraction=0.5,
        seed=0,
        students={
            "student": {"categories": ["style_format"], "rate": 1.0, "artifact": "signoff"},
            "student_all": {
                "categories": list(synthetic.CATEGORIES),
                "rate": 0.8,
                "artifact": "signoff",
            },
        },
    )
    res = runner.invoke(
        app,
        [
            "attack",
            str(path),
            "--budget",
            "40,480",
            "--strategy",
            "random,stratified",
            "--seeds",
            "2",
            "--test-queries",
            "1,4",
            "--adversary",
            CHEAP,
            "--epsilon",
            "0.1",
            "--n-bootstrap",
            "300",
            "--n-permutations",
            "300",
            "--decision",
            "crossfit",
            "--equality",
        ],
    )
    assert res.exit_code == 0, res.output
    return RunDir(path), res.output


def test_results_follow_the_contract(attacked):
    run, output = attacked
    att = run.read_results()["attack"]
    assert att["config"]["budgets"] == [40, 480]
    assert att["config"]["seeds"] == [0, 1]
    assert list(att["comparisons"])[0] == "teacher_null"  # the A/A row leads
    comp = att["comparisons"]["student"]
    assert comp["reference"] == "teacher" and comp["role"] == "student"
    surf = comp["adversaries"]["surface"]
    assert surf["budget"] == 480 and surf["strategy"] == "random" and surf["n_seeds"] == 2
    assert set(surf["eps"]) >= {"value", "ci", "n", "p"} and surf["eps"]["n"] == 300
    assert surf["compute_s"] > 0
    curve = surf["curves"]["stratified"]
    assert {(p["q"], p["k"]) for p in curve} == {(q, k) for q in (40, 480) for k in (1, 4)}
    pt = next(p for p in curve if p["q"] == 480 and p["k"] == 1)
    assert pt["n_seeds"] == 2 and pt["value"] == pytest.approx(np.mean(pt["seed_values"]))
    assert pt["ci"][0] <= pt["value"] <= pt["ci"][1]
    assert comp["examples"]["style_format"][0]["scores"]["surface"] > 0.5
    assert "A/A" in output and "eps per category" in output


def test_every_point_json_respects_the_budget(attacked):
    run, _ = attacked
    files = run.attack_points("student")
    assert len(files) == 3 * 2 * 2 * 2  # adversaries x strategies x seeds x budgets
    for f in files:
        rec = json.loads(f.read_text())
        assert revealed_ok(rec), f
        assert rec["queries"]["revealed"] <= rec["queries"]["budget"]
        AttackPoint.model_validate(rec)
        assert rec["model"] == "student" and rec["reference"] == "teacher"
        path = run.attack_point_path(
            "student", rec["adversary"], rec["strategy"], rec["budget"], rec["seed"]
        )
        assert path == f
    scores = list(read_jsonl(run.attack_dir / "student" / "surface.scores.jsonl"))
    assert len(scores) == 300 and {"prompt_id", "score_teacher", "score_other"} <= set(scores[0])


def test_planted_category_is_flagged_and_only_it(attacked):
    run, _ = attacked
    comp = run.read_results()["attack"]["comparisons"]["student"]
    for adv in ("surface", "tfidf", "pairwise"):
        per = comp["adversaries"][adv]["per_category"]
        assert per["style_format"]["significant"], adv
        assert per["style_format"]["value"] > 0.6, adv
        flagged = [c for c, e in per.items() if e["significant"]]
        assert flagged == ["style_format"], (adv, flagged)
    # The verdict says where: distinguishable in that category (the overall eps is diluted).
    verdict = comp["verdict"]
    assert verdict["status"] == "distinguishable", verdict["text"]
    assert verdict["distinguishable_in"] == ["style_format"]
    assert "style_format" in verdict["text"] and "mmd" not in verdict["text"]
    # The deciding family: the cross-fitted selected adversary overall and per category.
    assert verdict["family_size"] == 1 + len(per)
    assert verdict["crossfit"]["responses"] == 2 * verdict["crossfit"]["n_prompts"]


def test_aa_comparison_covers_zero_and_is_not_broken(attacked):
    run, _ = attacked
    comp = run.read_results()["attack"]["comparisons"]["teacher_null"]
    assert comp["role"] == "null"
    for adv, r in comp["adversaries"].items():
        lo, hi = r["eps"]["ci"]
        assert lo <= 0 <= hi, adv
        assert not any(e["significant"] for e in r["per_category"].values()), adv
    assert comp["verdict"]["status"] != "distinguishable"
    assert comp["verdict"]["calibration"]["ok"] is True
    # The equality claim is a direct check in the A/A comparison: it must come out null.
    eq = comp["verdict"]["equality"]
    assert eq["calibration"]["ok"] is True and not eq["rejected"]


def test_equality_claim_beside_the_decision(attacked):
    run, output = attacked
    comps = run.read_results()["attack"]["comparisons"]
    eq = comps["student_all"]["verdict"]["equality"]
    # Every prompt, both tests named, Holm between them, its own wording.
    assert eq["n_prompts"] == 600 and eq["n_permutations"] == 300
    assert [t["name"] for t in eq["tests"]] == ["kspectrum", "hamming"]
    assert eq["rejected"] and eq["text"].startswith("the responses differ in distribution (MMD ")
    assert "equality (MMD): the responses differ in distribution" in output
    assert not eq["blocks_indistinguishable"]  # eps0 = 0.1: it never changes the decision


def test_known_advantage_is_recovered_within_ci(attacked):
    # The student adds a sign-off to 80% of answers and the teacher never does:
    # the best possible advantage is exactly 0.8.
    run, _ = attacked
    comp = run.read_results()["attack"]["comparisons"]["student_all"]
    eps = comp["adversaries"]["surface"]["eps"]
    assert eps["ci"][0] <= 0.8 <= eps["ci"][1]
    assert comp["verdict"]["status"] == "distinguishable"
    # The deciding adversary is the cross-fitted selected one (per fold, the stack, a base
    # adversary or a one-feature rule); the verdict names the candidate of the fold whose
    # test decided, and its interval is the one of that test.
    prim = comp["verdict"]["crossfit"]["primary"]
    assert prim["adversary"] == "selected" and len(prim["chosen"]) == 2
    assert comp["verdict"]["broken_by"] == prim["decided_by"]["candidate"]
    assert prim["decided_by"]["candidate"] == prim["chosen"][prim["decided_by"]["fold"]]
    assert prim["lower"] > comp["verdict"]["epsilon"]
    k4 = next(
        p
        for p in comp["adversaries"]["surface"]["curves"]["random"]
        if p["q"] == 480 and p["k"] == 4
    )
    assert k4["value"] > eps["value"]  # k responses help


def _aa_paired(n_per_cat: int, seed: int) -> pd.DataFrame:
    """Teacher vs an independent teacher resample, in RunDir.paired's shape."""
    rng = np.random.default_rng(seed)
    rows = []
    for cat in synthetic.CATEGORIES[:5]:
        for i in range(n_per_cat):
            prompt = f"[{cat}] tell me about item {i}?"
            rows.append(
                {
                    "id": f"{cat}-{i}",
                    "category": cat,
                    "prompt": prompt,
                    "split": "test" if i % 2 else "train",
                    "teacher": synthetic.response(prompt, rng),
                    "other": synthetic.response(prompt, rng),
                }
            )
    return pd.DataFrame(rows)


def test_aa_false_positive_rate_at_most_alpha():
    cfg = AttackSettings(test_queries=[1], n_bootstrap=50, n_permutations=200)
    pvals = []
    adv = get_adversary("surface")
    for rep in range(40):
        data = comparison_from_paired(_aa_paired(24, 100 + rep), "teacher_null", "null")
        adv.prepare(pd.concat([data.train_items, data.test_items], ignore_index=True))
        with threadpool_limits(limits=1):
            res = run_point(
                adv,
                data,
                Evaluator(data, cfg),
                np.arange(len(data.pool)),
                2 * len(data.pool),
                seed=rep,
            )
        pvals.append(res.record["eps"]["p"])
    fpr = np.mean(np.array(pvals) < 0.05)
    assert fpr <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 40)  # alpha plus 2 binomial SE


def _run_invoke(*args):
    return runner.invoke(app, ["attack", *map(str, args)])


def test_user_errors_exit_2_with_one_line(tmp_path):
    run = synthetic.make_run(tmp_path / "small", n_per_category=5, test_fraction=0.4)
    cases = [
        (["--budget", "1000"], "exceeds the train pool"),
        (["--budget", "abc"], "comma-separated integers"),
        (["--budget", "2"], ">= 4"),
        (["--adversary", "nope"], "unknown adversary"),
        (["--strategy", "nope"], "unknown acquisition strategy"),
        (["--compare", "ghost"], "no model 'ghost'"),
        (["--epsilon", "2"], "--epsilon"),
    ]
    for extra, msg in cases:
        res = (
            _run_invoke(run.path, "--adversary", "surface", *extra)
            if "--adversary" not in extra
            else _run_invoke(run.path, *extra)
        )
        assert res.exit_code == 2, (extra, res.output)
        assert msg in res.output, (extra, res.output)
        assert "Traceback" not in res.output
    res = _run_invoke(tmp_path / "missing")
    assert res.exit_code == 2 and "not found" in res.output


def test_run_without_test_items_is_an_error(tmp_path):
    run = synthetic.make_run(tmp_path / "notest", n_per_category=6, test_fraction=0.4)
    suite = list(read_jsonl(run.suite_path))
    run.suite_path.unlink()
    append_jsonl(run.suite_path, [{**r, "split": "train"} for r in suite])
    res = _run_invoke(run.path, "--budget", "8", "--adversary", "surface", "--seeds", "1")
    assert res.exit_code == 2 and "no test items" in res.output


class _Abstainer(PairwiseAdversary):
    """A pairwise adversary that abstains on every other test pair (like the judge)."""

    name = "_abstainer_test"

    def predict_proba(self, X):
        p = super().predict_proba(X)
        self.kept_ = np.arange(len(X)) % 2 == 0
        return np.where(self.kept_, p, 0.5)


class _LengthTest(base.Adversary):
    """A two-sample 'test' adversary: Mann-Whitney on response lengths."""

    name = "_length_test"
    kind = "test"

    def fit(self, X, y):
        return self

    def two_sample(self, X_teacher, X_other, rng):
        from scipy.stats import mannwhitneyu

        a = X_teacher["response"].str.len()
        b = X_other["response"].str.len()
        res = mannwhitneyu(a, b)
        return {"statistic": float(res.statistic), "p": float(res.pvalue), "n": len(a)}


def test_abstaining_and_two_sample_adversaries_are_recorded(tmp_path):
    run = synthetic.make_run(tmp_path / "gen", n_per_category=12, test_fraction=0.5, null=False)
    base.ADVERSARIES.register(_Abstainer.name, _Abstainer)
    base.ADVERSARIES.register(_LengthTest.name, _LengthTest)
    try:
        cfg = AttackSettings(
            budgets=[20, 60],
            strategies=["random"],
            seeds=1,
            adversaries=["_abstainer_test", "_length_test"],
            n_bootstrap=50,
            n_permutations=50,
        )
        att = run_attack(run, cfg)
    finally:
        base.ADVERSARIES.unregister("_abstainer_test")
        base.ADVERSARIES.unregister("_length_test")
    advs = att["comparisons"]["student"]["adversaries"]
    ab = advs["_abstainer_test"]
    assert ab["kept_fraction"] == pytest.approx(0.5)
    # An abstention is a coin flip: it contributes 0 and eps stays over all 60 prompts
    # (not inflated by 1 / kept fraction).
    assert ab["eps"]["n"] == 60
    scores = list(read_jsonl(run.attack_dir / "student" / "_abstainer_test.scores.jsonl"))
    assert all(r["d"] == 0 for r in scores if not r["kept"])
    assert ab["eps"]["value"] == pytest.approx(np.mean([r["d"] for r in scores]))
    verdict = att["comparisons"]["student"]["verdict"]
    assert verdict["adversaries"] == ["_abstainer_test"] and "_length_test" in verdict["excluded"]
    assert "_length_test" not in verdict["text"]
    lt = advs["_length_test"]
    assert lt["eps"] is None and 0 <= lt["two_sample"]["p"] <= 1
    assert [p["q"] for p in lt["curves"]["random"]] == [20, 60]
    assert lt["curves"]["random"][0]["value"] is None


def test_mmd_hamming_computes_no_embeddings(tmp_path, monkeypatch):
    import bbi.similarity

    def no_embeddings(*a, **k):
        raise AssertionError("MiniLM embeddings computed for a kernel that does not use them")

    monkeypatch.setattr(bbi.similarity, "embeddings_for", no_embeddings)
    monkeypatch.setattr(bbi.similarity, "prompt_embeddings", no_embeddings)
    run = synthetic.make_run(tmp_path / "ham", n_per_category=12, test_fraction=0.5, null=False)
    cfg = AttackSettings(budgets=[20], strategies=["random"], seeds=1, adversaries=["mmd"],
                         n_bootstrap=50, n_permutations=50,
                         params={"mmd": {"kernel": "hamming", "n_permutations": 99}})  # fmt: skip
    att = run_attack(run, cfg)
    assert 0 < att["comparisons"]["student"]["adversaries"]["mmd"]["two_sample"]["p"] <= 1
    with pytest.raises(AssertionError, match="MiniLM"):  # the embedding kernel does use them
        run_attack(run, AttackSettings(budgets=[20], strategies=["random"], seeds=1,
                                       adversaries=["mmd"], n_bootstrap=50, n_permutations=50))  # fmt: skip


def test_crossfit_decides_by_default_and_split_on_request(tmp_path):
    """The default decision is the cross-fitted analysis (per-fold exact tests); the
    select-then-confirm split is recorded beside it, and decides with ``--decision
    split``. The attack config records which analysis decided."""
    path = tmp_path / "run"
    synthetic.make_run(
        path,
        n_per_category=30,
        test_fraction=0.5,
        seed=1,
        students={"student": {"categories": ["style_format"], "rate": 1.0, "artifact": "signoff"}},
    )
    args = ["attack", str(path), "--budget", "40,240", "--strategy", "random", "--seeds", "1"]
    args += ["--adversary", "surface", "--n-bootstrap", "100", "--n-permutations", "100"]
    res = runner.invoke(app, [*args, "--no-progress"])
    assert res.exit_code == 0, res.output
    attack = RunDir(path).read_results()["attack"]
    assert attack["config"]["decision"] == "crossfit"
    verdict = attack["comparisons"]["student"]["verdict"]
    cf = verdict["crossfit"]
    assert cf["decides"] is True and cf["folds"] == 2
    assert "per fold" in cf["primary"]["method"] and len(cf["primary"]["fold_p"]) == 2
    assert verdict["status"] == cf["status"] and verdict["text"] == cf["text"]
    assert verdict["distinguishable_in"] == ["style_format"]
    null = attack["comparisons"]["teacher_null"]["verdict"]
    assert null["crossfit"]["decides"] is True and null["calibration"]["ok"]
    # The equality claim is opt-in (--equality): by default the record has only the eps family.
    assert "equality" not in verdict and "equality" not in null
    assert "equality" not in attack["config"]
    res = runner.invoke(app, [*args, "--decision", "split", "--no-progress"])
    assert res.exit_code == 0, res.output
    attack = RunDir(path).read_results()["attack"]
    assert attack["config"]["decision"] == "split"
    verdict = attack["comparisons"]["student"]["verdict"]
    assert verdict["crossfit"]["decides"] is False
    assert verdict["broken_by"] != "stack"


def test_default_budgets_fit_a_small_pool(tmp_path):
    """With no --budget, the default budgets a pool cannot pay are dropped with a note
    (an imported pool is often smaller than 4,000 queries); a budget the user set that
    does not fit stays a one-line error, exit 2."""
    path = tmp_path / "small"
    synthetic.make_run(path, n_per_category=8, test_fraction=0.5, seed=0)
    n_train = int((RunDir(path).paired("student")["split"] == "train").sum())
    assert n_train == 40
    common = ["--adversary", "surface", "--strategy", "random", "--seeds", "1", "--no-progress"]
    res = runner.invoke(app, ["attack", str(path), *common])
    assert res.exit_code == 0, res.output
    assert "attack budgets 100, 200, 400, 800, 1600, 4000 dropped" in " ".join(res.output.split())
    att = RunDir(path).read_results()["attack"]
    assert att["config"]["budgets"] == [50]
    assert att["config"]["test_queries"] == [1, 4, 16]
    res = runner.invoke(app, ["attack", str(path), *common, "--budget", "50,100"])
    assert res.exit_code == 2
    assert "exceeds the train pool" in res.output
