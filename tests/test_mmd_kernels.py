"""The mmd adversary's k-spectrum kernel (MET's ``mmd_kspectrum``): Gram, power, validation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from bbi.errors import BbiError
from discriminators import get_adversary, synthetic
from discriminators.base import check_params
from discriminators.mmd import encode_sequences, kspectrum_gram

_TEXTS = [
    "the cat sat on the mat",
    "the cat sat",
    "a dog ran on the mat",
    "abcabcabc",
    "",
    "xy",
    "the mat the mat the mat",
]


def _grams(units: list, k: int, cumulative: bool) -> Counter:
    out: Counter = Counter()
    for order in range(1, k + 1) if cumulative else [k]:
        out.update(tuple(units[i : i + order]) for i in range(len(units) - order + 1))
    return out


def _brute_gram(texts: list[str], k: int, cumulative: bool, unit: str) -> np.ndarray:
    """The definition, one pair at a time: dot product of n-gram Counters, normalised."""
    seqs = [list(t) if unit == "char" else t.split() for t in texts]
    counts = [_grams(s, k, cumulative) for s in seqs]
    n = len(texts)
    K = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            K[i, j] = sum(c * counts[j][g] for g, c in counts[i].items())
    d = np.sqrt(np.diag(K))
    d[d == 0] = 1.0
    return K / np.outer(d, d)


@pytest.mark.parametrize("unit", ["char", "word"])
@pytest.mark.parametrize("cumulative", [True, False])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_kspectrum_gram_matches_brute_force(unit, cumulative, k):
    Z = encode_sequences(_TEXTS, 64, unit)
    K = kspectrum_gram(Z, k, cumulative)
    np.testing.assert_allclose(K, _brute_gram(_TEXTS, k, cumulative, unit), atol=1e-6)
    shortest = 1 if cumulative else k
    has_grams = np.array([len(t if unit == "char" else t.split()) >= shortest for t in _TEXTS])
    assert np.diag(K)[has_grams] == pytest.approx(1.0)
    assert not np.diag(K)[~has_grams].any()  # no n-gram: the zero feature vector, as MET


def test_kspectrum_ignores_padding_side():
    """Start- or end-aligned padding gives the same Gram (padding never forms n-grams)."""
    start = kspectrum_gram(encode_sequences(_TEXTS, 40, "char", "start"), 4)
    end = kspectrum_gram(encode_sequences(_TEXTS, 40, "char", "end"), 4)
    np.testing.assert_allclose(start, end)


def _frames(run, other: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    pr = run.paired(other)
    base = pr[["id", "category", "prompt"]].rename(columns={"id": "prompt_id"})
    return base.assign(response=pr["teacher"]), base.assign(response=pr["other"])


def test_mmd_kspectrum_detects_signoff_and_not_shuffles(tmp_path):
    run = synthetic.make_run(
        tmp_path / "r",
        n_per_category=20,
        students={
            "student": {
                "categories": list(synthetic.CATEGORIES),
                "rate": 1.0,
                "artifact": "signoff",
            }
        },
    )
    teacher, student = _frames(run, "student")
    adv = get_adversary("mmd", kernel="kspectrum", n_permutations=499)
    assert adv.requires() == frozenset()  # no MiniLM embeddings
    res = adv.two_sample(teacher, student, np.random.default_rng(0))
    assert res["p"] < 0.05 and res["statistic"] > 0 and res["n"] == len(teacher)
    # The same texts in another order (unpaired: permuted prompt ids): no difference.
    words = get_adversary("mmd", kernel="kspectrum", unit="word", k=2, n_permutations=499)
    for a in (adv, words):
        shuffled = teacher.sample(frac=1.0, random_state=1).reset_index(drop=True)
        shuffled["prompt_id"] = [f"s{i}" for i in range(len(shuffled))]
        assert a.two_sample(teacher, shuffled, np.random.default_rng(0))["p"] > 0.05


def test_mmd_kspectrum_params():
    check_params("mmd", {"kernel": "kspectrum", "k": 3, "cumulative": False})
    for bad in ({"k": 0}, {"k": 1.5}, {"cumulative": "yes"}, {"kernel": "spectrum"}):
        with pytest.raises(BbiError):
            check_params("mmd", {"kernel": "kspectrum", **bad})
    t = pd.DataFrame({"prompt_id": ["a", "b"], "response": ["x y", "y z"]})
    with pytest.raises(BbiError, match="max_length"):
        get_adversary("mmd", kernel="kspectrum", k=9, max_length=8).two_sample(
            t, t.copy(), np.random.default_rng(0)
        )
    with pytest.raises(BbiError):
        kspectrum_gram(np.zeros((2, 3), dtype=np.int64), 0)
