"""bbi.stats: advantage, bootstrap CIs, permutation p, Holm, AUROC, mean_ci."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from bbi import stats
from bbi.errors import BbiError


def test_threshold_defaults_to_half_when_train_is_tiny():
    assert stats.choose_threshold([0.9, 0.1, 0.8], [1, 0, 1]) == 0.5


def test_threshold_separates_when_it_can():
    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 50)
    s = np.where(y == 1, 0.3 + 0.01 * rng.random(100), 0.2 + 0.01 * rng.random(100))
    t = stats.choose_threshold(s, y)
    assert 0.21 <= t <= 0.31
    assert stats.advantage(s, y, t) == 1.0


def test_advantage_is_signed():
    y = np.array([1, 1, 0, 0])
    assert stats.advantage([0.9, 0.8, 0.1, 0.2], y) == 1.0
    assert stats.advantage([0.1, 0.2, 0.9, 0.8], y) == -1.0
    with pytest.raises(BbiError):
        stats.advantage([0.1, 0.2], [1, 1])


def test_pointwise_contrib_mean_equals_tpr_minus_fpr():
    rng = np.random.default_rng(1)
    st, so = rng.random(200), rng.random(200) * 0.8
    d = stats.pointwise_contrib(st, so, 0.5)
    y = np.r_[np.ones(200), np.zeros(200)]
    assert d.mean() == pytest.approx(stats.advantage(np.r_[st, so], y, 0.5))


def test_pairwise_contrib_is_two_acc_minus_one():
    p = np.array([0.9, 0.2, 0.6, 0.4, 0.5])
    y = np.array([1, 0, 0, 1, 1])  # correct, correct, wrong, wrong, tie
    d = stats.pairwise_contrib(p, y)
    assert list(d) == [1, 1, -1, -1, 0]


def _known_advantage_sample(rng, n, p_t=0.7, p_o=0.4):
    # Binary scores: teacher item fires with p_t, other with p_o -> advantage p_t - p_o.
    return (rng.random(n) < p_t).astype(float), (rng.random(n) < p_o).astype(float)


def test_estimate_unbiased_and_ci_covers_known_advantage():
    rng = np.random.default_rng(2)
    vals, cover = [], 0
    reps = 150
    for i in range(reps):
        st, so = _known_advantage_sample(rng, 300)
        est = stats.estimate(stats.pointwise_contrib(st, so, 0.5), 400, 200, seed=i)
        vals.append(est["value"])
        cover += est["ci"][0] <= 0.3 <= est["ci"][1]
        assert est["n"] == 300
    se = np.std(vals) / np.sqrt(reps)
    assert abs(np.mean(vals) - 0.3) < 3 * se + 1e-9
    assert cover / reps >= 0.88  # nominal 0.95; percentile bootstrap, finite n


def test_permutation_p_calibrated_under_null_and_small_under_effect():
    rng = np.random.default_rng(3)
    ps = []
    for i in range(200):
        st, so = _known_advantage_sample(rng, 100, 0.5, 0.5)
        ps.append(stats.permutation_p(stats.pointwise_contrib(st, so, 0.5), 200, seed=i))
    ps = np.array(ps)
    assert np.mean(ps < 0.05) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 200)
    assert 0.4 < ps.mean() < 0.65  # roughly uniform (discrete statistic -> slightly conservative)
    st, so = _known_advantage_sample(rng, 300, 0.9, 0.1)
    assert stats.permutation_p(stats.pointwise_contrib(st, so, 0.5), 500) == pytest.approx(1 / 501)


def test_holm_matches_hand_computation():
    adj = stats.holm([0.01, 0.04, 0.03])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06])
    assert stats.holm([]).size == 0
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])


def test_auroc_matches_sklearn_with_ties_and_has_ci():
    rng = np.random.default_rng(4)
    st = np.round(rng.random(150) + 0.2, 1)
    so = np.round(rng.random(150), 1)
    counts = stats.bootstrap_counts(150, 300, rng)
    est = stats.auroc_estimate(st, so, counts=counts)
    ref = roc_auc_score(np.r_[np.ones(150), np.zeros(150)], np.r_[st, so])
    assert est["value"] == pytest.approx(ref)
    assert est["ci"][0] <= est["value"] <= est["ci"][1]
    assert est["n"] == 150


def test_k_aggregation_groups_and_strengthens_a_weak_signal():
    rng = np.random.default_rng(5)
    n = 400
    st = 1 / (1 + np.exp(-(rng.normal(0.4, 1, n))))
    so = 1 / (1 + np.exp(-(rng.normal(-0.4, 1, n))))
    d1 = stats.pointwise_contrib_k(st, so, 0.5, 1, rng)
    d8 = stats.pointwise_contrib_k(st, so, 0.5, 8, np.random.default_rng(0))
    assert len(d1) == n and len(d8) == n // 8
    assert d8.mean() > d1.mean() + 0.2
    with pytest.raises(BbiError):
        stats.pointwise_contrib_k(st, so, 0.5, n + 1, rng)


def test_per_category_flags_only_the_planted_category():
    rng = np.random.default_rng(6)
    cats = np.repeat(["a", "b", "c", "d"], 100)
    st, so = _known_advantage_sample(rng, 400, 0.5, 0.5)
    planted = cats == "c"
    st[planted] = (rng.random(planted.sum()) < 0.9).astype(float)
    so[planted] = (rng.random(planted.sum()) < 0.1).astype(float)
    out = stats.per_category(
        stats.pointwise_contrib(st, so, 0.5), cats, alpha=0.05, n_bootstrap=300, n_permutations=300
    )
    assert out["c"]["significant"] and out["c"]["value"] > 0.6
    assert not any(out[c]["significant"] for c in "abd")
    assert all(out[c]["p_holm"] >= out[c]["p"] for c in out)
    assert out["a"]["n"] == 100


def test_mean_ci_bootstrap_and_t():
    x = np.random.default_rng(7).normal(0.8, 0.1, 200)
    b = stats.mean_ci(x, seed=1)
    t = stats.mean_ci(x, method="t")
    assert b["n"] == t["n"] == 200
    assert b["ci"][0] < x.mean() < b["ci"][1]
    lo, hi = sps.t.interval(0.95, 199, loc=x.mean(), scale=sps.sem(x))
    assert t["ci"] == pytest.approx([lo, hi])
    assert stats.mean_ci([])["n"] == 0
    assert stats.mean_ci([0.5])["ci"] == [0.5, 0.5]
    with pytest.raises(BbiError):
        stats.mean_ci(x, method="magic")


def test_seed_mean_ci_is_a_ci_of_the_mean_not_of_the_mixture():
    rng = np.random.default_rng(0)
    reps = [rng.normal(0, 1, 2000), rng.normal(1, 1, 2000)]
    lo, hi = stats.seed_mean_ci(reps)
    # The seed mean of two independent N(., 1) replicates has sd 1/sqrt(2), centred at 0.5;
    # pooling the replicates would give a mixture interval about 1.6x as wide.
    assert lo == pytest.approx(0.5 - 1.96 / 2**0.5, abs=0.1)
    assert hi == pytest.approx(0.5 + 1.96 / 2**0.5, abs=0.1)


def test_betting_test_is_valid_under_the_null_and_finds_real_advantage():
    rng = np.random.default_rng(1)
    alpha, reps = 0.05, 400
    # H0 at its boundary: E[d] = eps0 = 0.1, d in {-1, 0, 1}.
    null = [
        stats.betting_test(rng.choice([-1, 0, 1], 120, p=[0.25, 0.4, 0.35]), 0.1, alpha, seed=i)
        for i in range(reps)
    ]
    rate = np.mean([r["p"] < alpha for r in null])
    assert rate <= alpha + 2 * (alpha * (1 - alpha) / reps) ** 0.5
    # The test is anytime valid: stopping at the first crossing is the same event.
    assert all((r["n_to_reject"] is not None) == (r["p"] <= alpha) for r in null)
    strong = stats.betting_test(np.where(rng.random(60) < 0.95, 1.0, -1.0), 0.1, alpha)
    assert strong["p"] < 1e-3 and strong["n_to_reject"] <= 20
    assert stats.betting_test(np.zeros(50), 0.0)["p"] == pytest.approx(1.0)  # no bet won
    with pytest.raises(BbiError):
        stats.betting_test(np.array([2.0]))
