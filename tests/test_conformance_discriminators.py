"""Conformance of every registered adversary and acquisition strategy, built-in or plug-in.

In the spirit of scikit-learn's ``parametrize_with_checks``: the tests are parametrized
over every name in ``discriminators.base.ADVERSARIES`` and ``discriminators.acquisition
.STRATEGIES``, plus the names the out-of-tree package ``tests/plugin`` declares by entry
point (the ``example_plugin`` fixture installs it for every test here), so an item added
from outside the repository passes the same checks as a built-in one.

Checks: the protocol's shape (the registry's own load check), ``clone``/``get_params``
round trip, unknown or ill-typed parameters refused before any work (a one-line BbiError
naming ``--param NAME.KEY``), ``prepare`` label-free (predictions with and without it are
the same), fit / predict_proba (or ``two_sample``) on a small synthetic frame, and for
strategies valid, budget-respecting, anytime and seeded selections.

Model-bound adversaries (``MODEL_BOUND``: they fine-tune or query a model) get only the
model-free checks here; ``tests/test_adversaries_heavy.py`` fits them on tiny models.
Embedding adversaries get synthetic embedding columns, so none of this loads a model.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from bbi.config import AttackSettings
from bbi.errors import BbiError
from discriminators.acquisition import (
    STRATEGIES,
    Oracle,
    Pool,
    acquisition_order,
    check_strategy_params,
    revealed_for_budget,
    strategy_class,
)
from discriminators.base import ADVERSARIES, KINDS, adversary_class, check_params, get_adversary
from discriminators.comparison import pairwise_frame
from discriminators.sweep import check_names_distinct, check_sweep
from discriminators.synthetic import ARTIFACTS, response

PLUGIN_DIR = str(Path(__file__).parent / "plugin")
# Fine-tune (encoder) or query (judge, likelihood) a model: model-free checks only here.
MODEL_BOUND = frozenset({"encoder", "judge", "likelihood"})

pytestmark = pytest.mark.usefixtures("example_plugin")


def _names(registry) -> list[str]:
    """Registered names plus the entry points the plug-in package declares (read without
    importing it or touching the registry, at collection time)."""
    names = list(registry.names())
    sys.path.insert(0, PLUGIN_DIR)
    importlib.invalidate_caches()
    try:
        extra = [ep.name for ep in metadata.entry_points(group=registry.group)]
    finally:
        sys.path.remove(PLUGIN_DIR)
        importlib.invalidate_caches()
    return names + [n for n in extra if n not in names]


ADVERSARY_NAMES = _names(ADVERSARIES)
STRATEGY_NAMES = _names(STRATEGIES)


def _model_bound(name: str) -> bool:
    return name in MODEL_BOUND or "backend" in adversary_class(name).needs


# ---- small synthetic data ------------------------------------------------------------------


def _items(n_prompts: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Pointwise frame (rows 2i teacher, 2i+1 other; the other signs off) with item ids and
    synthetic embedding columns (so embedding adversaries need no model)."""
    rng = np.random.default_rng(seed)
    rows, y = [], []
    for i in range(n_prompts):
        prompt = f"Tell me about {' '.join(rng.choice(['river', 'stone', 'market', 'music'], 2))}?"
        p_emb = rng.normal(size=8)
        for label in (1, 0):
            text = response(prompt, rng)
            if not label:
                text = ARTIFACTS["signoff"](text, rng)
            rows.append(
                {
                    "prompt_id": f"p{seed}-{i}",
                    "category": ["a", "b"][i % 2],
                    "prompt": prompt,
                    "response": text,
                    "item_id": f"p{seed}-{i}::{'t' if label else 'o'}",
                    "embedding": rng.normal(size=8) + (0.5 if label else 0.0),
                    "prompt_embedding": p_emb,
                }
            )
            y.append(label)
    return pd.DataFrame(rows), np.asarray(y)


def _frames(kind: str) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    train, y_tr = _items(24, 1)
    test, _ = _items(12, 2)
    if kind == "pairwise":
        o_tr = np.random.default_rng(3).random(len(train) // 2) < 0.5
        o_te = np.random.default_rng(4).random(len(test) // 2) < 0.5
        return pairwise_frame(train, o_tr), o_tr.astype(int), pairwise_frame(test, o_te)
    return train, y_tr, test


def _pool(n_per_cat: int = 12) -> Pool:
    rng = np.random.default_rng(0)
    ids, cats, prompts, teacher, other = [], [], [], [], []
    for c in ("alpha", "beta", "gamma"):
        for i in range(n_per_cat):
            words = " ".join(
                rng.choice(["river", "stone", "music", "a", "long", "story"], 1 + i % 5)
            )
            p = f"[{c}] tell me about {words}"
            ids.append(f"{c}-{i}")
            cats.append(c)
            prompts.append(p)
            teacher.append(response(p, rng))
            other.append(ARTIFACTS["signoff"](response(p, rng), rng))
    return Pool(np.array(ids), np.array(cats), prompts, teacher, other)


def _refuse_work(monkeypatch, cls: type, methods: tuple[str, ...]) -> None:
    def no_work(*a, **k):
        raise AssertionError("work started before the parameters were checked")

    for m in methods:
        monkeypatch.setattr(cls, m, no_work)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text.strip(), text
    return text


# ---- the registries ------------------------------------------------------------------------


def test_plugin_items_are_among_the_checked_names():
    assert "example_length" in ADVERSARY_NAMES and "example_prompt_length" in STRATEGY_NAMES
    assert "example_length" in ADVERSARIES and "example_prompt_length" in STRATEGIES


def test_adversary_and_strategy_names_do_not_collide():
    check_names_distinct()
    assert not set(ADVERSARIES.names()) & set(STRATEGIES.names())

    class Surface(strategy_class("random")):
        name = "surface"

    STRATEGIES.register("surface", Surface)
    try:
        with pytest.raises(BbiError, match="surface: registered both"):
            check_sweep(AttackSettings(adversaries=["tfidf"], strategies=["random"]))
    finally:
        STRATEGIES.unregister("surface")


def test_listing_names_imports_no_model_code():
    code = (
        "import sys\n"
        "from discriminators import known_adversaries\n"
        "from discriminators.acquisition import known_strategies\n"
        "assert 'likelihood' in known_adversaries() and 'bandit' in known_strategies()\n"
        "heavy = [m for m in ('torch', 'transformers', 'discriminators.encoder',"
        " 'discriminators.judge', 'discriminators.likelihood') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_a_registered_item_of_the_wrong_shape_is_refused_when_it_loads():
    class NotAnAdversary:
        name = "_not_an_adversary"

    ADVERSARIES.register("_not_an_adversary", NotAnAdversary)
    try:
        with pytest.raises(BbiError, match="not a subclass of discriminators.base.Adversary"):
            adversary_class("_not_an_adversary")
    finally:
        ADVERSARIES.unregister("_not_an_adversary")
    STRATEGIES.register("_misnamed", strategy_class("random"))
    try:
        with pytest.raises(BbiError, match="registered as '_misnamed'"):
            strategy_class("_misnamed")
    finally:
        STRATEGIES.unregister("_misnamed")


# ---- adversaries ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ADVERSARY_NAMES)
def test_adversary_shape(name):
    cls = adversary_class(name)  # the registry's load check
    assert cls.name == name and cls.kind in KINDS
    assert "y" not in inspect.signature(cls.prepare).parameters  # prepare sees no labels


@pytest.mark.parametrize("name", ADVERSARY_NAMES)
def test_adversary_clone_and_get_params_round_trip(name):
    adv = get_adversary(name)
    params = adv.get_params(deep=False)
    assert clone(adv).get_params(deep=False) == params
    assert type(adv)(**params).get_params(deep=False) == params
    assert clone(adv).set_params(**params).get_params(deep=False) == params


@pytest.mark.parametrize("name", ADVERSARY_NAMES)
def test_adversary_unknown_and_ill_typed_params_are_refused_before_work(name, monkeypatch):
    cls = adversary_class(name)
    _refuse_work(monkeypatch, cls, ("fit", "predict_proba", "prepare", "two_sample"))
    with pytest.raises(BbiError) as exc:
        check_params(name, {"no_such_param": 1})
    assert f"--param {name}.no_such_param" in _one_line(exc)
    with pytest.raises(BbiError, match=f"--param {name}.no_such_param"):
        check_sweep(AttackSettings(adversaries=[name], params={name: {"no_such_param": 1}}))
    for key, p in inspect.signature(cls.__init__).parameters.items():
        if (
            key == "context"
            or isinstance(p.default, bool)
            or not isinstance(p.default, int | float)
        ):
            continue
        with pytest.raises(BbiError) as exc:
            check_params(name, {key: "not-a-number"})
        assert f"--param {name}.{key}" in _one_line(exc)
    check_params(name, {})  # the defaults are valid


@pytest.mark.parametrize("name", ADVERSARY_NAMES)
def test_adversary_fits_and_predicts_on_a_small_frame(name):
    if _model_bound(name):
        pytest.skip(f"{name} needs a model: fit/predict in tests/test_adversaries_heavy.py")
    cls = adversary_class(name)
    X_tr, y_tr, X_te = _frames(cls.kind)
    if cls.kind == "test":
        t, o = X_tr.iloc[0::2], X_tr.iloc[1::2]
        res = get_adversary(name).two_sample(t, o, np.random.default_rng(0))
        again = get_adversary(name).two_sample(t, o, np.random.default_rng(0))
        assert {"statistic", "p", "n"} <= set(res) and 0 <= res["p"] <= 1 and res["n"] > 0
        assert res == again  # seeded
        return
    p = get_adversary(name).fit(X_tr, y_tr).predict_proba(X_te)
    assert p.shape == (len(X_te),) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    np.testing.assert_array_equal(p, get_adversary(name).fit(X_tr, y_tr).predict_proba(X_te))


@pytest.mark.parametrize("name", ADVERSARY_NAMES)
def test_adversary_prepare_is_label_free(name):
    """``prepare`` sees every item (train and test) but no label: whatever it computes may
    not change what ``fit`` learns, so predictions are the same with and without it."""
    if _model_bound(name):
        pytest.skip(f"{name} needs a model: prepare checked without labels by signature only")
    cls = adversary_class(name)
    if cls.kind == "test":
        pytest.skip("a two-sample test is not fitted")
    X_tr, y_tr, X_te = _frames(cls.kind)
    plain = get_adversary(name).fit(X_tr, y_tr).predict_proba(X_te)
    X_all = pd.concat([X_tr, X_te], ignore_index=True)
    assert "label" not in X_all.columns
    prepared = get_adversary(name).prepare(X_all)
    np.testing.assert_allclose(prepared.fit(X_tr, y_tr).predict_proba(X_te), plain, atol=1e-9)


# ---- strategies ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_strategy_shape_and_params_round_trip(name):
    cls = strategy_class(name)
    assert cls.name == name
    strat = cls()
    params = strat.get_params(deep=False)
    assert clone(strat).get_params(deep=False) == params
    assert cls(**params).get_params(deep=False) == params


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_strategy_unknown_params_are_refused_before_work(name, monkeypatch):
    cls = strategy_class(name)
    _refuse_work(monkeypatch, cls, ("order",))
    with pytest.raises(BbiError) as exc:
        check_strategy_params(name, {"no_such_param": 1})
    assert f"--param {name}.no_such_param" in _one_line(exc)
    settings = AttackSettings(
        adversaries=["surface"], strategies=[name], params={name: {"no_such_param": 1}}
    )
    with pytest.raises(BbiError, match=f"--param {name}.no_such_param"):
        check_sweep(settings)
    check_strategy_params(name, {})


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_strategy_selections_are_valid_budgeted_anytime_and_seeded(name):
    pool = _pool()
    big, oracle = acquisition_order(name, pool, 40, seed=1)
    assert big.dtype.kind == "i" and len(big) == 20 == len(set(big.tolist()))
    assert big.min() >= 0 and big.max() < len(pool)
    assert oracle.revealed == revealed_for_budget(40) <= 40
    with pytest.raises(BbiError, match="budget exceeded"):
        oracle.buy([i for i in range(len(pool)) if i not in set(big.tolist())][:1])
    small, _ = acquisition_order(name, pool, 17, seed=1)
    np.testing.assert_array_equal(small, big[:8])  # what a smaller budget buys is a prefix
    again, _ = acquisition_order(name, pool, 40, seed=1)
    np.testing.assert_array_equal(again, big)  # seeded


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_strategy_order_buys_only_within_its_oracle(name):
    pool = _pool()
    strat = strategy_class(name)()
    oracle = Oracle(pool, 20)
    order = strat.order(pool, 10, np.random.default_rng(0), oracle)
    assert oracle.revealed == 20 and len(set(np.asarray(order).tolist())) == 10
