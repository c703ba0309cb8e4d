"""Acquisition: budget accounting, strategy orders, the anytime (prefix) property."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bbi.errors import BbiError
from discriminators.acquisition import (
    STRATEGIES,
    Oracle,
    Pool,
    acquisition_order,
    prompts_for_budget,
    revealed_for_budget,
    stratified_order,
)
from discriminators.synthetic import ARTIFACTS, response

CATS = ["alpha", "beta", "gamma", "delta", "eps"]


def _pool(n_per_cat: int = 40, planted: str | None = "gamma", seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    ids, cats, prompts, teacher, other = [], [], [], [], []
    for c in CATS:
        for i in range(n_per_cat):
            p = f"[{c}] tell me about {' '.join(rng.choice(['river', 'stone', 'music'], 2))}"
            t, o = response(p, rng), response(p, rng)
            if c == planted:
                o = ARTIFACTS["signoff"](o, rng)
            ids.append(f"{c}-{i}")
            cats.append(c)
            prompts.append(p)
            teacher.append(t)
            other.append(o)
    return Pool(np.array(ids), np.array(cats), prompts, teacher, other)


def test_budget_accounting():
    assert prompts_for_budget(50) == 25 and revealed_for_budget(51) == 50
    pool = _pool(4)
    oracle = Oracle(pool, budget=6)
    oracle.buy([0, 1])
    oracle.buy([1])  # already bought: free
    assert oracle.revealed == 4
    with pytest.raises(BbiError, match="budget exceeded"):
        oracle.buy([2, 3])
    assert oracle.revealed == 4


def test_budget_larger_than_pool_is_an_error():
    pool = _pool(4)
    with pytest.raises(BbiError, match="pool has only 20"):
        acquisition_order("random", pool, 2 * 20 + 2, seed=0)


def test_stratified_equal_allocation_with_deterministic_remainder():
    pool = _pool(10, planted=None)
    order, oracle = acquisition_order("stratified", pool, 2 * 13, seed=3)
    counts = Counter(pool.categories[order])
    # 13 prompts over 5 categories: 3 each for the first 3 by name, 2 for the others.
    assert counts == {"alpha": 3, "beta": 3, "delta": 3, "eps": 2, "gamma": 2}
    assert oracle.revealed == 26
    again, _ = acquisition_order("stratified", pool, 26, seed=3)
    np.testing.assert_array_equal(order, again)


def test_stratified_skips_exhausted_categories():
    cats = np.array(["a"] * 2 + ["b"] * 10)
    order = stratified_order(cats, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(12))
    assert Counter(cats[order[:6]]) == {"a": 2, "b": 4}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_orders_are_valid_seeded_and_anytime(name):
    pool = _pool(40)
    big, oracle = acquisition_order(name, pool, 240, seed=1)
    assert len(big) == 120 and len(set(big.tolist())) == 120
    assert oracle.revealed == revealed_for_budget(240) == 240
    with pytest.raises(BbiError, match="budget exceeded"):  # the budget is spent
        oracle.buy(np.setdiff1d(np.arange(len(pool)), big)[:1])
    small, oracle_small = acquisition_order(name, pool, 70, seed=1)
    assert oracle_small.revealed <= 70
    np.testing.assert_array_equal(small, big[:35])  # what budget 70 buys = prefix
    other_seed, _ = acquisition_order(name, pool, 240, seed=2)
    assert not np.array_equal(other_seed, big)


def test_bandit_spends_more_where_the_artifact_is():
    pool = _pool(60, planted="gamma")
    order, _ = acquisition_order("bandit", pool, 2 * 150, seed=0)
    share = np.mean(pool.categories[order] == "gamma")
    assert share > 0.35  # stratified would give 0.2


def test_unknown_strategy():
    with pytest.raises(BbiError, match="known: random"):
        acquisition_order("psychic", _pool(4), 8, seed=0)
