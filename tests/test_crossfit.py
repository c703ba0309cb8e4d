"""The fixed-sample verdict: exact size at the null boundary, power against the betting
test, the cross-fitted stack's A/A size and its category findings.

Sizes of the exact test are computed by enumerating every outcome (no Monte-Carlo error);
simulated rates carry their binomial standard error in the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from threadpoolctl import threadpool_limits

from bbi import crossfit as cft
from bbi import stats
from bbi.errors import BbiError
from discriminators import synthetic
from discriminators.base import get_adversary
from discriminators.comparison import load_comparison
from discriminators.crossfit import (
    abstention_threshold,
    comparison_items,
    crossfit,
    flip_items,
)
from discriminators.surface import FEATURE_NAMES
from discriminators.verdict_cf import VERDICT_FOLDS, crossfit_verdict, decide_crossfit

ALPHA = 0.05


def _exact_size(n: int, eps0: float, designs: list[float], alpha: float = ALPHA) -> list[float]:
    """P(reject) at the least favourable null point of each tie rate r, by enumeration."""
    a, b = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    ok = a + b <= n
    rej = np.zeros_like(a, dtype=bool)
    for i, j in zip(a[ok], b[ok], strict=True):
        rej[i, j] = cft.ternary_p(int(i), int(j), n, eps0) < alpha
    out = []
    for r in designs:
        pp = min(r, (r + eps0) / 2)
        pm = r - pp
        pmf = sps.multinomial.pmf(
            np.stack([a[ok], b[ok], n - a[ok] - b[ok]], axis=1), n, [pp, pm, 1 - r]
        )
        out.append(float(pmf[rej[ok]].sum()))
    return out


@pytest.mark.parametrize("eps0", [0.0, 0.1, 0.3])
def test_exact_test_size_at_the_null_boundary(eps0):
    # Tie rates from "ties everywhere" to "no ties": every boundary point, exactly.
    sizes = _exact_size(24, eps0, [max(eps0, 0.05), 0.5, 0.8, 1.0])
    assert max(sizes) <= ALPHA + 1e-9  # exact: no Monte-Carlo tolerance needed
    assert max(sizes) > 0.01  # and not uselessly conservative


def test_exact_test_below_the_boundary_is_smaller():
    n, eps0 = 24, 0.1
    at = _exact_size(n, eps0, [0.6])[0]
    # eps = 0 < eps0 with the same tie rate: p+ = p- = 0.3.
    a, b = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    ok = a + b <= n
    pmf = sps.multinomial.pmf(np.stack([a[ok], b[ok], n - a[ok] - b[ok]], 1), n, [0.3, 0.3, 0.4])
    rej = np.array(
        [cft.ternary_p(int(i), int(j), n, eps0) < ALPHA for i, j in zip(a[ok], b[ok], strict=True)]
    )
    assert pmf[rej].sum() <= at + 1e-12


def test_lower_bound_inverts_the_test():
    d = np.r_[np.ones(30), -np.ones(5), np.zeros(65)]
    lo = cft.lower_bound(d, ALPHA)
    assert cft.ternary_test(d, lo - 1e-3) < ALPHA <= cft.ternary_test(d, lo + 1e-3)
    assert 0.1 < lo < d.mean()
    # The test that decides and the interval that is reported agree.
    for eps0 in (0.0, 0.1, 0.2, 0.3):
        assert (cft.ternary_test(d, eps0) < ALPHA) == (eps0 < lo)


def test_more_powerful_than_the_betting_test_on_the_same_data():
    rng = np.random.default_rng(5)
    reps, n, eps, eps0 = 200, 40, 0.5, 0.1
    exact = betting = 0
    for i in range(reps):
        d = rng.choice([1.0, -1.0], size=n, p=[(1 + eps) / 2, (1 - eps) / 2])
        exact += cft.ternary_test(d, eps0) < ALPHA
        betting += stats.betting_test(d, eps0, ALPHA, seed=i)["p"] < ALPHA
    # Measured: exact 0.80, betting 0.58 (docs/statistics.md); se of a rate <= 0.035.
    assert exact / reps > betting / reps + 0.1
    assert exact / reps > 0.7


def test_fractional_contributions_fall_back_to_valid_tests():
    d = np.array([0.2, 0.6, -0.2, 1.0, 0.4] * 8)
    assert cft.fixed_sample_test(d, 0.0)["method"] == "sign-flip"
    assert cft.fixed_sample_test(d, 0.1)["method"] == "betting"
    assert cft.fixed_sample_test(np.sign(d), 0.1)["method"].startswith("exact")


def test_min_detectable_eps():
    # Six prompts at alpha 0.0025: even d = 1 everywhere cannot reject.
    assert cft.min_detectable_eps(6, 0.0025) is None
    x50 = cft.min_detectable_eps(50, 0.0025, 0.1)
    x500 = cft.min_detectable_eps(500, 0.0025, 0.1)
    assert 0.1 < x500 < x50 < 1
    # By construction: power at x is 0.8 in the favourable case d in {0, 1}.
    rng = np.random.default_rng(0)
    hits = [
        cft.ternary_test((rng.random(50) < x50).astype(float), 0.1) < 0.0025 for _ in range(200)
    ]
    assert abs(np.mean(hits) - 0.8) < 4 * np.sqrt(0.16 / 200)


def test_family_passes_alpha_on():
    # The overall test rejects: categories are then tested by Holm at the full alpha.
    p_holm, adj = cft.family(0.001, [0.015, 0.5, 0.9], ALPHA)
    assert p_holm < ALPHA and adj[0] < ALPHA
    # It does not: a category needs alpha / 2 / C.
    p_holm, adj = cft.family(0.5, [0.02, 0.5, 0.9], ALPHA)
    assert adj[0] >= ALPHA and cft.family(0.5, [0.008, 0.5, 0.9], ALPHA)[1][0] < ALPHA


def test_decide_names_a_diluted_category_and_notes_small_ones():
    rng = np.random.default_rng(1)
    cats = np.repeat([f"c{i}" for i in range(10)], 60)
    d = np.zeros(600)
    d[:60] = (rng.random(60) < 0.7).astype(float)  # c0: eps 0.7, the rest ties
    res = decide_crossfit(d, cats, 0.1, ALPHA, n_bootstrap=200)
    assert res["distinguishable_in"] == ["c0"]
    assert res["status"] == "distinguishable"
    small = decide_crossfit(d[:8], np.repeat(["a", "b"], 4), 0.1, ALPHA, n_bootstrap=200)
    assert all("too few prompts" in r["note"] for r in small["categories"])


def test_indistinguishable_needs_every_category():
    cats = np.repeat(["a", "b"], [2000, 40])
    d = np.zeros(2040)
    d[2000:] = np.tile([1.0, -1.0], 20)  # b: the adversary commits, right half the time
    res = decide_crossfit(d, cats, 0.1, ALPHA, n_bootstrap=200)
    # Overall upper bound is small, but category b's 40 prompts cannot bound eps_b by 0.1
    # (ties are evidence of no advantage: 40 of them alone would bound it).
    assert res["primary"]["upper"] < 0.1
    assert res["status"] == "inconclusive" and "b" in res["text"]
    res = decide_crossfit(d[:2000], cats[:2000], 0.1, ALPHA, n_bootstrap=200)
    assert res["status"] == "indistinguishable"


def test_abstention_threshold():
    z = np.r_[np.full(10, 3.0), np.random.default_rng(0).normal(0, 0.1, 200)]
    tau = abstention_threshold(z)
    assert 0.3 < tau < 3.0  # commits on the confident prompts only


def test_flip_items_swaps_the_responses_of_flipped_prompts(tmp_path):
    run = synthetic.make_run(tmp_path, n_per_category=4, categories=("a", "b"))
    _, items = comparison_items(load_comparison(run, "student"))
    flip = np.array([True] + [False] * (len(items) // 2 - 1))
    out = flip_items(items, flip)
    assert out["response"].iloc[0] == items["response"].iloc[1]
    assert out["response"].iloc[2] == items["response"].iloc[2]
    assert out["label"].tolist() == items["label"].tolist()


def test_crossfit_verdict_finds_a_planted_category(tmp_path):
    # 60 prompts per category: the per-fold tests of the verdict's 2 folds see 30 each.
    run = synthetic.make_run(tmp_path, n_per_category=60, seed=3)
    with threadpool_limits(limits=1):
        res = crossfit_verdict(
            load_comparison(run, "student"), ["surface", "mmd"], {}, 0.1, ALPHA, 200
        )
        null = crossfit_verdict(
            load_comparison(run, "teacher_null"), ["surface"], {}, 0.1, ALPHA, 200
        )
    assert res["distinguishable_in"] == ["style_format"]
    assert res["responses"] == 1200 and res["skipped"] == {"mmd": res["skipped"]["mmd"]}
    assert null["epsilon"] == 0.0 and null["calibration"]["ok"]
    # The record names each fold's candidate, why (training statistics), the fold whose
    # test decided, and the stack alone beside it.
    prim = res["primary"]
    assert prim["adversary"] == "selected" and len(prim["chosen"]) == VERDICT_FOLDS
    by = prim["decided_by"]
    assert by["candidate"] == prim["chosen"][by["fold"]]
    assert by["p"] == min(prim["fold_p"]) and by["n"] == 300
    sel = res["selection"]
    assert [s["chosen"] for s in sel] == prim["chosen"]
    assert all(s["train_stat"][s["chosen"]] == max(s["train_stat"].values()) for s in sel)
    assert {"value", "ci", "p", "lower"} <= set(res["stack"])
    assert "selected adversary (fold 1 " in res["text"] or not prim["rejected"]


@pytest.mark.slow
def test_crossfit_aa_size():
    """A/A: two samples of one generator; the cross-fitted stack's exact test at eps0 = 0
    must reject at most alpha of the time (and the category family likewise)."""
    import tempfile

    reps, rej, rej_any = 60, 0, 0
    with threadpool_limits(limits=1):
        for i in range(reps):
            with tempfile.TemporaryDirectory() as tmp:
                run = synthetic.make_run(tmp, n_per_category=20, seed=100 + i, students={})
                data = load_comparison(run, "teacher_null")
                prompts, items = comparison_items(data)
                cats = prompts["category"].astype(str).to_numpy()
                cf = crossfit([get_adversary("surface")], items, cats, VERDICT_FOLDS, seed=i)
                res = decide_crossfit(cf.d, cats, 0.0, ALPHA, n_bootstrap=100, folds=cf.folds)
                rej += res["primary"]["p"] < ALPHA  # the per-fold overall test alone
                rej_any += res["status"] == "distinguishable"
    se = np.sqrt(ALPHA * (1 - ALPHA) / reps)
    assert rej / reps <= ALPHA + 2 * se
    assert rej_any / reps <= ALPHA


@pytest.mark.slow
def test_refit_randomization_p(tmp_path):
    """The exact alternative: the whole nested cross-fit redone per relabelling."""
    from discriminators.crossfit import refit_p

    run = synthetic.make_run(
        tmp_path,
        n_per_category=6,
        categories=synthetic.CATEGORIES[:4],
        students={"student": {"categories": list(synthetic.CATEGORIES[:4]), "rate": 0.9}},
    )
    with threadpool_limits(limits=1):
        for other, small in (("student", True), ("teacher_null", False)):
            prompts, items = comparison_items(load_comparison(run, other))
            p = refit_p([get_adversary("surface")], items, prompts["category"], 19, n_folds=3)
            assert 0.05 <= p <= 1.0
            assert (p == 0.05) == small


def test_declared_sequential_bills_every_response():
    from discriminators.verdict import declared_sequential

    strong = np.ones(100)
    res = declared_sequential({"surface": strong, "tfidf": np.zeros(100)}, 400, ALPHA)
    alone = stats.betting_test(strong, 0.0, ALPHA / 2)["n_to_reject"]
    assert res["by"] == "surface" and res["n_to_reject"] == alone
    assert res["queries"] == 400 + 2 * alone  # the purchase plus two per test prompt read
    # Under the null it stops (anywhere) at most alpha of the time, over the whole family.
    rng = np.random.default_rng(3)
    stops = [
        declared_sequential(
            {a: rng.choice([-1.0, 0.0, 1.0], 200) for a in ("x", "y", "z")}, 100, ALPHA, seed=i
        )["queries"]
        is not None
        for i in range(300)
    ]
    assert np.mean(stops) <= ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / 300)


def _cluster_vote(rng: np.random.Generator, n: int, k: int, clusters: int = 10):
    """A null world with strong cross-fold dependence: labels are fair coins, and the
    adversary scoring fold k predicts each prompt's cluster by the majority label of that
    cluster on the other folds, so every fold's labels reach every other fold's model."""
    cl = rng.integers(0, clusters, n)
    y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    folds = rng.permutation(n) % k
    d = np.zeros(n)
    for j in range(k):
        tr, te = folds != j, folds == j
        vote = np.sign(np.array([y[tr & (cl == c)].sum() for c in range(clusters)]))
        d[te] = vote[cl[te]] * y[te]
    return d, folds


@pytest.mark.parametrize("k", [2, 5])
def test_per_fold_test_holds_its_size_under_fold_dependence(k):
    """The pooled exact test ignores the dependence and rejects too often; one exact test
    per fold merged by Bonferroni (each fold exact given the others) does not."""
    rng = np.random.default_rng(k)
    reps = 300
    pooled = folds_rej = 0
    for _ in range(reps):
        d, f = _cluster_vote(rng, 200, k)
        pooled += cft.ternary_test(d, 0.0) < ALPHA
        folds_rej += cft.fold_test(d, f, 0.0, "bonferroni")["p"] < ALPHA
    se = np.sqrt(ALPHA * (1 - ALPHA) / reps)
    assert folds_rej / reps <= ALPHA + 2 * se
    if k == 5:  # measured: pooled 0.135 at K = 5 (600 repeats)
        assert pooled / reps > ALPHA + 2 * se


def test_merges_are_valid_under_any_dependence():
    """Worst cases of the merges: identical p-values (comonotone) and, for the mean,
    Rueschendorf's extremal coupling; each merged p must stay super-uniform."""
    rng = np.random.default_rng(0)
    u = rng.random(20_000)
    for k in (2, 3, 5):
        same = np.repeat(u[:, None], k, axis=1)
        for merge in cft.MERGES:
            merged = np.array([cft.merge_p(row, merge) for row in same[:4000]])
            assert np.mean(merged < ALPHA) <= ALPHA + 3 * np.sqrt(ALPHA / 4000)
    # Twice the mean is sharp (Rueschendorf's coupling): p1 = U and p2 = alpha - U when
    # U < alpha, else U; both uniform, and 2 mean = alpha exactly with probability alpha.
    p2 = np.where(u < ALPHA, ALPHA - u, u)
    merged = np.array([cft.merge_p([a, b], "mean") for a, b in zip(u, p2, strict=True)])
    assert np.mean(merged < ALPHA - 1e-12) == 0.0
    assert abs(np.mean(merged <= ALPHA + 1e-12) - ALPHA) < 3 * np.sqrt(ALPHA / len(u))


def test_merge_edge_cases():
    assert cft.merge_p([0.03]) == 0.03  # one fold: the exact test as it is
    assert cft.merge_p([0.01, 0.4], "bonferroni") == pytest.approx(0.02)
    assert cft.merge_p([0.01, 0.4], "mean") == pytest.approx(0.41)
    assert cft.merge_p([0.01, 0.4], "harmonic") == pytest.approx(0.02)  # K = 2: Bonferroni
    hm = 5 / sum(1 / p for p in (0.01, 0.02, 0.03, 0.5, 0.9))
    assert cft.merge_p([0.01, 0.02, 0.03, 0.5, 0.9], "harmonic") == pytest.approx(
        np.e * np.log(5) * hm
    )
    assert cft.merge_p([0.9, 0.8], "mean") == 1.0
    with pytest.raises(BbiError):
        cft.merge_p([])
    with pytest.raises(BbiError):
        cft.merge_p([0.1], "fisher")  # valid only for independent p-values
    with pytest.raises(BbiError):
        cft.fold_test(np.array([0.5, 1.0]), np.array([0, 1]))  # not in {-1, 0, 1}
    with pytest.raises(BbiError):
        cft.fold_test(np.ones(4), np.array([0, 1, 0]))


def test_fold_test_is_the_exact_test_in_each_fold():
    rng = np.random.default_rng(2)
    d = rng.choice([-1.0, 0.0, 1.0], size=90, p=[0.2, 0.3, 0.5])
    f = np.repeat([0, 1, 2], 30)
    t = cft.fold_test(d, f, 0.1, "bonferroni")
    assert t["fold_n"] == [30, 30, 30]
    assert t["fold_p"] == pytest.approx([cft.ternary_test(d[f == k], 0.1) for k in range(3)])
    assert t["p"] == pytest.approx(min(1.0, 3 * min(t["fold_p"])))
    # One fold is the exact test; a fold label that occurs once is a fold of one prompt.
    assert cft.fold_test(d, np.zeros(90, int))["p"] == pytest.approx(cft.ternary_test(d, 0.0))
    assert len(cft.fold_test(d, np.r_[np.zeros(89, int), 1])["fold_p"]) == 2


@pytest.mark.parametrize("merge", ["bonferroni", "mean", "harmonic"])
def test_fold_lower_bound_inverts_the_fold_test(merge):
    rng = np.random.default_rng(4)
    d = rng.choice([-1.0, 0.0, 1.0], size=300, p=[0.1, 0.4, 0.5])
    f = rng.permutation(300) % 5
    lo = cft.fold_lower_bound(d, f, ALPHA, merge)
    assert -1 < lo < d.mean()
    for eps0 in (lo - 0.01, lo + 0.01, 0.0, 0.2):
        assert (cft.fold_test(d, f, eps0, merge)["p"] < ALPHA) == (eps0 < lo)


def test_fold_min_detectable_eps():
    # Bonferroni over two folds of 25 at alpha 0.0025: exact, so simulated power is 0.8.
    x = cft.fold_min_detectable_eps([25, 25], 0.0025, 0.1)
    assert 0.1 < x < 1
    rng = np.random.default_rng(0)
    f = np.repeat([0, 1], 25)
    hits = [
        cft.fold_test((rng.random(50) < x).astype(float), f, 0.1)["p"] < 0.0025 for _ in range(300)
    ]
    assert abs(np.mean(hits) - 0.8) < 4 * np.sqrt(0.16 / 300)
    # Split in folds, the same prompts detect less than pooled; too few detect nothing.
    assert x > cft.min_detectable_eps(50, 0.0025, 0.1)
    assert cft.fold_min_detectable_eps([3, 3], 0.0025) is None
    assert cft.fold_min_detectable_eps([40], 0.01) == cft.min_detectable_eps(40, 0.01)
    # The mean and harmonic values are lower bounds (their power is bounded above).
    for merge in ("mean", "harmonic"):
        lb = cft.fold_min_detectable_eps([20] * 5, 0.0025, 0.0, merge=merge)
        assert lb is None or 0 < lb <= 1


def test_crossfit_decision_uses_per_fold_tests():
    """With folds, the overall and category tests are the per-fold exact tests merged,
    and the reported bounds invert them, so a decision and its interval agree."""
    from discriminators.verdict_cf import MERGE

    rng = np.random.default_rng(5)
    d = rng.choice([-1.0, 0.0, 1.0], size=200, p=[0.3, 0.3, 0.4])
    cats = np.repeat(["a", "b"], 100)
    f = np.tile([0, 1], 100)
    res = decide_crossfit(d, cats, 0.0, ALPHA, n_bootstrap=100, folds=f)
    prim = res["primary"]
    assert prim["p"] == pytest.approx(cft.fold_test(d, f, 0.0, MERGE)["p"])
    assert prim["lower"] == pytest.approx(cft.fold_lower_bound(d, f, ALPHA, MERGE))
    assert (prim["lower"] > 0) == (prim["p"] < ALPHA)
    assert "per fold" in prim["method"] and len(prim["fold_p"]) == 2
    a = res["categories"][0]
    assert a["p"] == pytest.approx(cft.fold_test(d[:100], f[:100], 0.0, MERGE)["p"])
    # Without folds (one independent sample) the exact test runs on the pooled set.
    one = decide_crossfit(d, cats, 0.0, ALPHA, n_bootstrap=100)
    assert one["primary"]["p"] == pytest.approx(cft.ternary_test(d, 0.0))


def test_two_fold_crossfit_is_nested(tmp_path):
    """K = 2: the stack's inputs for fold k come from sub-folds of the other fold, so no
    score of fold k's prompts is used in training anything that scores fold k."""
    from discriminators.crossfit import INNER_FOLDS, base_scores

    run = synthetic.make_run(tmp_path, n_per_category=8, categories=synthetic.CATEGORIES[:3])
    prompts, items = comparison_items(load_comparison(run, "student"))
    cats = prompts["category"].astype(str).to_numpy()
    folds = stats.stratified_folds(cats, 2, 0)
    with threadpool_limits(limits=1):
        sc = base_scores(get_adversary("surface"), items, folds)
        cf = crossfit([get_adversary("surface")], items, cats, 2)
    for k in (0, 1):
        assert np.all(np.isnan(sc.inner[k][folds == k]))  # never the scored fold
        assert np.all(np.isfinite(sc.inner[k][folds != k]))
    assert set(np.unique(cf.d)) <= {-1.0, 0.0, 1.0} and set(cf.folds) == {0, 1}
    with pytest.raises(BbiError):
        crossfit(
            [get_adversary("surface")],
            items.iloc[: 2 * (2 * INNER_FOLDS - 1)],
            cats[: 2 * INNER_FOLDS - 1],
            2,
        )


def test_selection_never_sees_the_scored_folds_labels(tmp_path):
    """The candidate that scores fold k, and how it scores it, are functions of the other
    folds only: relabelling every prompt of fold 0 (swapping its two responses) leaves
    fold 0's choice unchanged and flips each of its contributions, so given the other
    fold the per-fold exact test sees an adversary fixed before fold 0's labels."""
    run = synthetic.make_run(tmp_path, n_per_category=8, categories=synthetic.CATEGORIES[:4])
    prompts, items = comparison_items(load_comparison(run, "student"))
    cats = prompts["category"].astype(str).to_numpy()
    advs = ["surface", "tfidf"]
    with threadpool_limits(limits=1):
        cf = crossfit([get_adversary(a) for a in advs], items, cats, VERDICT_FOLDS, seed=3)
        flip = cf.folds == 0
        ff = crossfit(
            [get_adversary(a) for a in advs], flip_items(items, flip), cats, VERDICT_FOLDS, seed=3
        )
    assert np.array_equal(ff.folds, cf.folds)
    assert ff.chosen[0] == cf.chosen[0] and ff.train_stat[0] == cf.train_stat[0]
    assert np.array_equal(ff.d[flip], -cf.d[flip])
    assert np.array_equal(ff.stack[flip], -cf.stack[flip])
    # Every candidate was compared, and the chosen one has the largest training statistic.
    names = {"stack", *advs} | {f"rule:{f}" for f in FEATURE_NAMES}
    for k, c in enumerate(cf.chosen):
        assert set(cf.train_stat[k]) == names
        assert cf.train_stat[k][c] == max(cf.train_stat[k].values())


def test_selection_scores_fold_k_with_the_chosen_candidate(tmp_path):
    """A fold that chose the stack, a base adversary or a rule is scored by exactly that
    candidate's out-of-fold contributions (a rule's direction set on the other fold)."""
    run = synthetic.make_run(tmp_path, n_per_category=12, seed=5)
    prompts, items = comparison_items(load_comparison(run, "student"))
    cats = prompts["category"].astype(str).to_numpy()
    with threadpool_limits(limits=1):
        cf = crossfit([get_adversary("surface")], items, cats, VERDICT_FOLDS, seed=0)
        off = crossfit([get_adversary("surface")], items, cats, VERDICT_FOLDS, 0, select=False)
    assert off.chosen == ["stack", "stack"] and np.array_equal(off.d, off.stack)
    assert np.array_equal(off.stack, cf.stack)
    for k, c in enumerate(cf.chosen):
        te = cf.folds == k
        ref = (
            cf.stack
            if c == "stack"
            else cf.base[c]
            if c in cf.base
            else cf.rules[c.removeprefix("rule:")]
        )
        assert np.array_equal(cf.d[te], ref[te])


def test_stack_training_statistic_is_not_flattered_in_an_aa_world(tmp_path):
    """The stack's training statistic (which the selection compares) is measured with base
    scores blind to the held-out group: in A/A comparisons it averages about 0, like its
    statistic on the scored fold (its own cross-validated margins averaged about 1.6)."""
    train = []
    with threadpool_limits(limits=1):
        for i in range(6):
            run = synthetic.make_run(
                tmp_path / str(i), n_per_category=10, seed=200 + i, students={}
            )
            prompts, items = comparison_items(load_comparison(run, "teacher_null"))
            cats = prompts["category"].astype(str).to_numpy()
            cf = crossfit([get_adversary("surface")], items, cats, VERDICT_FOLDS, seed=i)
            train += [cf.train_stat[k]["stack"] for k in (0, 1)]
    assert abs(np.mean(train)) < 3 / np.sqrt(len(train))  # sd about 1 per fold


def test_family_weights():
    """The verdict's weight (overall 3/4): a diluted category still needs only
    alpha / 4 / C; weight 1 is the fixed sequence (categories only after the overall)."""
    from discriminators.verdict_cf import PRIMARY_WEIGHT

    assert PRIMARY_WEIGHT == 0.75
    p_holm, adj = cft.family(0.5, [0.004, 0.5, 0.9], ALPHA, PRIMARY_WEIGHT)
    assert p_holm >= ALPHA and adj[0] < ALPHA  # 0.004 < 0.05 / 4 / 3
    assert cft.family(0.5, [0.005, 0.5, 0.9], ALPHA, PRIMARY_WEIGHT)[1][0] >= ALPHA
    assert cft.family(0.03, [0.5], ALPHA, PRIMARY_WEIGHT)[0] < ALPHA  # 0.03 < 0.0375
    p_holm, adj = cft.family(0.04, [0.001, 0.03], ALPHA, 1.0)
    assert p_holm == 0.04 and list(adj) == pytest.approx([0.04, 0.04])
    p_holm, adj = cft.family(0.06, [1e-6, 0.5], ALPHA, 1.0)
    assert p_holm >= ALPHA and np.all(adj >= ALPHA)  # the gate is shut


def test_selection_on_a_tiny_comparison(tmp_path):
    """Eight prompts (the least two folds allow): sub-folds of one or two prompts leave
    some held-out fits one class; the selection still runs (the stack then has no
    evidence on the training fold) and every contribution is in {-1, 0, 1}."""
    run = synthetic.make_run(tmp_path, n_per_category=2, categories=synthetic.CATEGORIES[:4])
    prompts, items = comparison_items(load_comparison(run, "student"))
    cats = prompts["category"].astype(str).to_numpy()
    advs = ("surface", "tfidf", "pairwise")
    with threadpool_limits(limits=1):
        for seed in range(3):
            cf = crossfit([get_adversary(a) for a in advs], items, cats, VERDICT_FOLDS, seed)
            assert len(cf.chosen) == 2 and set(np.unique(cf.d)) <= {-1.0, 0.0, 1.0}
