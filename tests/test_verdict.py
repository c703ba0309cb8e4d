"""The verdict's declared primary analysis: family-wise error control and category findings.

The procedure (``discriminators.verdict.decide``) sees per-prompt contributions for every
(adversary, strategy, budget) point; these tests feed it contributions with a known truth:
under the null no test may reject more often than alpha over repeats (the whole sweep,
points correlated as they are in a real sweep because they share the test prompts), and
a planted one-category artifact must be named as that category.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bbi import stats
from bbi.config import AttackSettings
from bbi.runstore import RunDir
from discriminators import synthetic
from discriminators.attack import run_attack
from discriminators.verdict import decide, selection_split

ADVS = ("surface", "tfidf", "embed", "pairwise")
STRATS = ("random", "stratified", "disagreement")
BUDGETS = (50, 100, 200, 400)
CATS = np.repeat([f"c{i}" for i in range(10)], 30)
CFG = SimpleNamespace(alpha=0.05, strategies=list(STRATS), budgets=list(BUDGETS), n_bootstrap=200)


def _sweep(rng: np.random.Generator, advantage: np.ndarray) -> tuple[dict, dict]:
    """Seed-mean contributions for every point of a 4 x 3 x 4 sweep over shared prompts.

    Each prompt has a latent "giveaway" draw shared by all points (as one test split is),
    and each point adds its own noise: points are strongly but not perfectly correlated.
    """
    n = len(advantage)
    shared = rng.random(n)
    points, upper = {}, {}
    for a in ADVS:
        points[a], upper[a] = {}, []
        for s in STRATS:
            for q in BUDGETS:
                own = rng.random(n)
                u = np.where(rng.random(n) < 0.6, shared, own)
                d = np.where(u < (1 + advantage) / 2, 1.0, -1.0)
                points[a][(s, q)] = d
                upper[a].append((s, q, d.mean() + 1.96 * d.std() / len(d) ** 0.5))
    return points, upper


@pytest.mark.parametrize("eps0", [0.0, 0.1])
def test_family_wise_false_positive_rate_is_at_most_alpha(eps0):
    rng = np.random.default_rng(12)
    reps, rejected = 300, 0
    for r in range(reps):
        # The null at its boundary: every prompt's true advantage equals eps0.
        points, upper = _sweep(rng, np.full(len(CATS), eps0))
        v = decide(points, upper, CATS, CFG, eps0, seed=r)
        rejected += v["status"] == "distinguishable"
        assert v["family_size"] == 1 + len(ADVS) * 10
    rate = rejected / reps
    assert rate <= 0.05 + 2 * (0.05 * 0.95 / reps) ** 0.5, rate


def test_one_planted_category_is_named_and_only_it():
    rng = np.random.default_rng(3)
    advantage = np.where(CATS == "c7", 0.9, 0.0)  # diluted to 0.09 overall: below eps0
    points, upper = _sweep(rng, advantage)
    v = decide(points, upper, CATS, CFG, 0.1, excluded={"mmd": "two-sample"}, seed=0)
    assert v["status"] == "distinguishable"
    assert v["distinguishable_in"] == ["c7"]
    assert "c7" in v["text"] and "mmd" not in v["text"] and v["excluded"] == {"mmd": "two-sample"}
    # The headline is measured on prompts the selection never saw.
    sel = selection_split(CATS, 0)
    assert v["primary"]["eps"]["n"] == int((~sel).sum())
    assert v["primary"]["selection"]["n"] == int(sel.sum())


def test_clear_difference_is_confirmed_and_clear_equivalence_is_indistinguishable():
    rng = np.random.default_rng(5)
    points, upper = _sweep(rng, np.full(len(CATS), 0.8))
    v = decide(points, upper, CATS, CFG, 0.1)
    assert v["status"] == "distinguishable" and v["primary"]["rejected"]
    assert v["primary"]["eps"]["ci"][0] > 0.5
    # Equivalence needs every upper bound below eps0 and nothing rejected.
    points, _ = _sweep(rng, np.zeros(len(CATS)))
    tight = {a: [(s, q, 0.05) for s in STRATS for q in BUDGETS] for a in ADVS}
    assert decide(points, tight, CATS, CFG, 0.1)["status"] == "indistinguishable"
    loose = {a: [(s, q, 0.15) for s in STRATS for q in BUDGETS] for a in ADVS}
    assert decide(points, loose, CATS, CFG, 0.1)["status"] == "inconclusive"
    assert decide({}, {}, CATS, CFG, 0.1)["status"] == "no-estimate"


def test_selection_split_is_stratified_and_seeded():
    cats = np.array(["a"] * 9 + ["b"] * 7 + ["c"] * 4)
    sel = selection_split(cats, 1)
    for c, n in (("a", 9), ("b", 7), ("c", 4)):
        assert abs(int(sel[cats == c].sum()) - n / 2) <= 0.5
    assert abs(int(sel.sum()) - 10) <= 1
    assert (sel == selection_split(cats, 1)).all() and (sel != selection_split(cats, 2)).any()


def test_weighted_holm():
    p = [0.02, 0.001, 0.5]
    assert np.allclose(stats.holm(p, [2, 1, 1]), [0.03, 0.004, 0.5])
    assert np.allclose(stats.holm(p), stats.holm(p, [1, 1, 1]))
    with pytest.raises(ValueError):
        stats.holm(p, [1, 0, 1])


def test_real_aa_sweeps_stay_null(tmp_path):
    """Whole `bbi attack` sweeps on A/A pairs (two samples of one model): no rejection."""
    cfg = AttackSettings(
        budgets=[40, 120],
        strategies=["random", "stratified"],
        seeds=2,
        adversaries=["surface", "tfidf", "pairwise"],
        n_bootstrap=100,
        n_permutations=100,
    )
    statuses = []
    for rep in range(4):
        run = synthetic.make_run(
            tmp_path / f"aa{rep}",
            n_per_category=20,
            test_fraction=0.5,
            seed=rep,
            students={"student": {"categories": [], "rate": 0.0, "artifact": "signoff"}},
        )
        att = run_attack(RunDir(run.path), cfg, compare=["teacher_null", "student"])
        for comp in att["comparisons"].values():
            statuses.append(comp["verdict"]["status"])
        assert att["comparisons"]["teacher_null"]["verdict"]["calibration"]["ok"] is True
    assert "distinguishable" not in statuses, statuses
