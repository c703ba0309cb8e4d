"""Cheap adversaries: protocol, registry, learning a planted artifact, caching, symmetry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from bbi.errors import BbiError
from discriminators import base, get_adversary, known_adversaries
from discriminators.attack import pairwise_frame
from discriminators.synthetic import ARTIFACTS, response


def _items(n_prompts: int, seed: int, artifact: str = "signoff", rate: float = 0.8) -> pd.DataFrame:
    """Pointwise frame, rows 2i teacher / 2i+1 other; the other shows the artifact at `rate`."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_prompts):
        prompt = f"Tell me about {' '.join(rng.choice(['river', 'stone', 'market', 'music'], 2))}?"
        t = response(prompt, rng)
        o = response(prompt, rng)
        if rng.random() < rate:
            o = ARTIFACTS[artifact](o, rng)
        for label, text in ((1, t), (0, o)):
            rows.append(
                {
                    "prompt_id": f"p{seed}-{i}",
                    "category": "c",
                    "prompt": prompt,
                    "response": text,
                    "label": label,
                    "item_id": f"p{seed}-{i}::{'t' if label else 'o'}",
                }
            )
    return pd.DataFrame(rows)


def test_registry_and_unknown_name():
    names = known_adversaries()
    assert {"surface", "tfidf", "embed", "pairwise", "pairwise_embed"} <= set(names)
    with pytest.raises(BbiError, match="known: .*surface"):
        get_adversary("nope")
    with pytest.raises(BbiError, match="bad parameters"):
        get_adversary("surface", not_a_param=1)


def test_context_only_passed_to_adversaries_that_accept_it():
    class _Ctx(base.Adversary):
        name = "_ctx_test"

        def __init__(self, context=None):
            self.context = context

    base.ADVERSARIES.register(_Ctx.name, _Ctx)
    try:
        assert get_adversary("_ctx_test", context={"seed": 3}).context == {"seed": 3}
        assert get_adversary("surface", context={"seed": 3}).get_params()["C"] == 1.0
    finally:
        base.ADVERSARIES.unregister("_ctx_test")


@pytest.mark.parametrize("name", ["surface", "tfidf"])
def test_pointwise_adversary_learns_planted_artifact(name):
    train, test = _items(150, 0), _items(100, 1)
    adv = get_adversary(name).fit(train, train["label"].to_numpy())
    p = adv.predict_proba(test)
    assert p.shape == (len(test),)
    assert ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(test["label"], p) > 0.85


def test_pointwise_adversary_is_at_chance_without_difference():
    train, test = _items(150, 2, rate=0.0), _items(150, 3, rate=0.0)
    adv = get_adversary("surface").fit(train, train["label"].to_numpy())
    assert abs(roc_auc_score(test["label"], adv.predict_proba(test)) - 0.5) < 0.12


def test_prepare_cache_gives_identical_predictions():
    train, test = _items(60, 4), _items(40, 5)
    y = train["label"].to_numpy()
    plain = get_adversary("tfidf").fit(train, y).predict_proba(test)
    cached_adv = get_adversary("tfidf").prepare(pd.concat([train, test], ignore_index=True))
    cached = cached_adv.fit(train, y).predict_proba(test)
    np.testing.assert_allclose(plain, cached)
    assert clone(cached_adv).get_params() == cached_adv.get_params()


def test_pairwise_learns_and_is_antisymmetric():
    train, test = _items(150, 6), _items(100, 7)
    rng = np.random.default_rng(0)
    o_tr = rng.random(150) < 0.5
    o_te = rng.random(100) < 0.5
    adv = get_adversary("pairwise").fit(pairwise_frame(train, o_tr), o_tr.astype(int))
    p = adv.predict_proba(pairwise_frame(test, o_te))
    p_swapped = adv.predict_proba(pairwise_frame(test, ~o_te))
    np.testing.assert_allclose(p, 1 - p_swapped, atol=1e-9)
    acc = np.mean((p > 0.5) == o_te)
    assert 2 * acc - 1 > 0.6


def test_embed_adversary_uses_minilm_and_learns(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train = _items(100, 8, artifact="bullets", rate=1.0)
    test = _items(40, 9, artifact="bullets", rate=1.0)
    adv = get_adversary("embed")
    assert "embeddings" in adv.needs
    adv.fit(train, train["label"].to_numpy())
    assert roc_auc_score(test["label"], adv.predict_proba(test)) > 0.85
