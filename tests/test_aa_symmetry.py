"""The split sweep's eps under an A/A null: exactly symmetric about 0, CIs calibrated.

Within a test prompt the two responses are exchangeable under an A/A null, and the fitted
adversary never sees the test split; so swapping them must negate the prompt's
contribution d exactly, and eps must be a mean of symmetric terms. An adversary
significantly *worse* than chance can then only be a tail event or a real difference in
the test split, never the construction (train/test leakage, scores fitted on the test
batch, ties broken one way, a threshold tied to one label's prior would all break these).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bbi.config import AttackSettings
from discriminators import get_adversary
from discriminators.comparison import comparison_from_paired
from discriminators.evaluate import Evaluator, run_point
from discriminators.synthetic import CATEGORIES, response

N_PER_CATEGORY = 30  # 300 prompts: 240 train, 60 test, the size of a 300-prompt engine A/A
SHARED = 0.3  # share of prompts where both models give the same text (a shared seed)


def _aa_paired(seed: int, swap_test: bool = False) -> pd.DataFrame:
    """A paired frame of an A/A comparison: both responses from one generator, the other
    identical to the teacher's on a share of prompts (as two samplers sharing a seed
    are), independent otherwise; so the two are exchangeable within every prompt."""
    rng = np.random.default_rng([seed, 29])
    rows = []
    for cat in CATEGORIES:
        for i in range(N_PER_CATEGORY):
            prompt = (
                f"[{cat}] Tell me about {' '.join(rng.choice(['river', 'stone', 'paper'], 2))}?"
            )
            t = response(prompt, rng)
            o = t if rng.random() < SHARED else response(prompt, rng)
            split = "test" if i < N_PER_CATEGORY // 5 else "train"
            if swap_test and split == "test":
                t, o = o, t
            rows.append(
                {"id": f"{cat}-{i}", "category": cat, "split": split, "prompt": prompt}
                | {"teacher": t, "other": o}
            )
    return pd.DataFrame(rows)


def _full_budget_point(name: str, paired: pd.DataFrame, cfg: AttackSettings):
    data = comparison_from_paired(paired, "other", role="null")
    adv = get_adversary(name)
    adv.prepare(pd.concat([data.train_items, data.test_items], ignore_index=True))
    bought = np.arange(len(data.train))
    return run_point(adv, data, Evaluator(data, cfg), bought, 2 * len(bought), 0)


@pytest.mark.parametrize("name", ["surface", "tfidf", "pairwise"])
def test_swapping_the_test_pairs_negates_every_contribution(name):
    """Same train split, test responses swapped within each prompt: d -> -d exactly."""
    cfg = AttackSettings(test_queries=[1], n_bootstrap=200, n_permutations=50)
    a = _full_budget_point(name, _aa_paired(1), cfg)
    b = _full_budget_point(name, _aa_paired(1, swap_test=True), cfg)
    assert np.any(a.d != 0)
    np.testing.assert_array_equal(b.d, -a.d)
    assert b.record["eps"]["value"] == pytest.approx(-a.record["eps"]["value"])
    lo, hi = a.record["eps"]["ci"]
    assert b.record["eps"]["ci"] == pytest.approx([-hi, -lo])


def test_surface_eps_ci_covers_zero_at_its_rate_under_aa():
    """40 A/A comparisons of 240 + 60 prompts: eps centred on 0, each side of the 95% CI
    missing 0 about 2.5% of the time (400 A/A comparisons of discriminators.synthetic,
    independent samples: 1.3% below, 1.8% above)."""
    cfg = AttackSettings(test_queries=[1], n_bootstrap=200, n_permutations=50)
    eps, below, above = [], 0, 0
    for rep in range(40):
        rec = _full_budget_point("surface", _aa_paired(100 + rep), cfg).record["eps"]
        eps.append(rec["value"])
        below += rec["ci"][1] < 0
        above += rec["ci"][0] > 0
    eps = np.asarray(eps)
    assert abs(eps.mean()) <= 3 * eps.std(ddof=1) / np.sqrt(len(eps)), eps.mean()
    # Binomial(40, 0.025) exceeds 4 with probability < 0.01.
    assert below <= 4 and above <= 4, (below, above)


def _bench_engine():
    """benchmarks/bench_engine.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "bench_engine.py"
    spec = importlib.util.spec_from_file_location("bench_engine", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_engine_aa_family_is_two_sided_and_holm_corrected():
    """The engine A/A rule: four adversaries whose 95% CIs each just miss 0 (p ~ 0.03) are
    one A/A comparison's multiplicity, not a difference; 13 of 14 decisive prompts going
    one way (either way) is."""
    aa_family = _bench_engine().aa_family
    edge = [1.0] * 11 + [-1.0] * 3 + [0.0] * 46  # 11:3, two-sided p = 0.057
    weak = [1.0] * 12 + [-1.0] * 3 + [0.0] * 45  # 12:3, two-sided p = 0.035
    fam = aa_family({"a": weak, "b": weak, "c": edge, "d": [0.0] * 60})
    assert fam["a"]["p"] < 0.05 and not any(f["rejected"] for f in fam.values())
    below = [1.0] + [-1.0] * 13 + [0.0] * 46  # the worse-than-chance 13:1
    fam = aa_family({"surface": below, "tfidf": [-x for x in below], "embed": edge})
    assert fam["surface"]["p"] == pytest.approx(2 * 15 / 2**14)
    assert fam["surface"]["rejected"] and fam["tfidf"]["rejected"]
    assert fam["surface"]["p_holm"] == pytest.approx(3 * fam["surface"]["p"])
    assert not fam["embed"]["rejected"]
