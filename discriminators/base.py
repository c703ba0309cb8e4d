"""The adversary protocol: one estimator-like interface for every distinguisher.

Adversaries only learn and score; all statistics (eps, CIs, p-values) are computed
outside them (``bbi.stats``), so every adversary is judged by the same rules.

Kinds
-----
``pointwise``
    ``X`` has one row per (prompt, model) item with columns ``prompt_id``, ``category``,
    ``prompt``, ``response`` (plus ``embedding`` and ``prompt_embedding`` object columns
    holding 1-d numpy arrays when ``"embeddings"`` is in ``needs``). ``y``: 1 = teacher.
    ``predict_proba(X)`` returns P(teacher) per row, shape ``(n,)``.
``pairwise``
    ``X`` has one row per prompt with columns ``prompt_id``, ``category``, ``prompt``,
    ``response_a``, ``response_b`` (plus ``embedding_a``, ``embedding_b``,
    ``prompt_embedding`` when ``"embeddings"`` is in ``needs``). One response comes from
    each model, in a seeded random order. ``y``: 1 = ``response_a`` is the teacher's.
    ``predict_proba(X)`` returns P(response_a is the teacher's).
``test``
    A two-sample test (e.g. MMD). ``fit`` is a no-op; it provides
    ``two_sample(X_teacher, X_other, rng) -> {"statistic", "p", "n"}`` where both frames
    are pointwise-shaped. The attack records it with ``eps = null``.

Context
-------
Adversaries that need more than the items (a backend to query, the run directory) accept
a ``context`` constructor keyword; the attack passes ``context=dict(run=RunDir,
teacher=alias, other=alias, backend_options=dict, seed=int)`` to any adversary class whose
``__init__`` has a ``context`` parameter, and nothing otherwise.

Frames built by the attack also carry ``item_id`` (pointwise) or ``item_id_a``/``item_id_b``
(pairwise): stable ids for caching label-free features (see ``prepare``); adversaries must
not rely on them for anything else. ``needs`` lists what the
attack must prepare: ``"embeddings"`` (MiniLM vectors as columns), ``"backend"``
(documentation only: the adversary loads it from ``context``).
"""

from __future__ import annotations

import hashlib
import inspect
import re
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_parameter_constraints,
)

from bbi.errors import BbiError
from bbi.registry import Registry

KINDS = ("pointwise", "pairwise", "test")

# Building blocks for ``Adversary._parameter_constraints``.
POSITIVE = [Interval(Real, 0, None, closed="neither")]
NON_NEGATIVE = [Interval(Real, 0, None, closed="left")]
FRACTION = [Interval(Real, 0, 1, closed="left")]
SEED = [Interval(Integral, 0, 2**32 - 1, closed="both")]
BOOLEAN = ["boolean"]


def at_least(n: int) -> list:
    """Constraint: an integer >= n."""
    return [Interval(Integral, n, None, closed="left")]


def one_of(*names: str) -> list:
    """Constraint: one of the given strings."""
    return [StrOptions(set(names))]


class Adversary(BaseEstimator):
    """Base class: scikit-learn style ``fit`` / ``predict_proba`` on item frames.

    Subclasses declare ``name``, ``kind`` and ``needs`` and list their hyperparameters as
    explicit ``__init__`` keywords (so ``sklearn.base.clone`` and ``get_params`` work).
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "pointwise"
    needs: ClassVar[frozenset[str]] = frozenset()
    # sklearn-style constraints per hyperparameter (sklearn.utils._param_validation), so a
    # bad ``--param`` fails before the sweep; unlisted ones must match their default's type.
    _parameter_constraints: ClassVar[dict[str, list]] = {}

    def requires(self) -> frozenset[str]:
        """What this configured instance needs prepared (``needs`` unless a parameter
        changes it, e.g. mmd with the Hamming kernel needs no embeddings)."""
        return self.needs

    def preflight(self) -> None:
        """Cheap checks that need the context (no model loads): raise BbiError now for
        what would otherwise fail mid-sweep. Called by the attack before any work."""

    def _backend_options(self, spec: str) -> dict[str, Any]:
        """Options for loading a model this adversary queries (a judge, a reference LM):
        the run's own (``context["backend_options"]``) overlaid with the adversary's
        ``model_args`` (``key=value,...``, bbi.model_args; e.g. an API's concurrency or a
        GPU for the reference model), validated for the spec's kind."""
        from bbi.model_args import check_model_args, load_options, parse_model_args

        where = f"{self.name}.model_args"
        run_opts = (getattr(self, "context", None) or {}).get("backend_options") or {}
        args = parse_model_args(getattr(self, "model_args", None), where)
        return load_options(check_model_args(spec, args, where), run_opts)

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> Adversary:
        raise NotImplementedError

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """P(label = 1) per row, shape ``(n,)`` (not sklearn's ``(n, 2)``)."""
        raise NotImplementedError

    def prepare(self, X_all: pd.DataFrame) -> Adversary:
        """Optional hook, called once per sweep with every item (train pool and test).

        Lets an adversary precompute *label-free, stateless* per-item features (hashed
        n-gram counts, surface statistics) once instead of at every fit. Nothing learned
        (vocabularies, idf, scalers, weights) may come from here: that belongs in ``fit``,
        which only sees the items bought with the budget. Default: no-op.
        """
        return self

    def two_sample(
        self, X_teacher: pd.DataFrame, X_other: pd.DataFrame, rng: np.random.Generator
    ) -> dict[str, float | int]:
        """Only for ``kind == "test"``: {"statistic": float, "p": float, "n": int}."""
        raise NotImplementedError(f"{type(self).__name__} is not a two-sample test")


class ItemFeatureCache:
    """Mixin: stateless per-item feature blocks computed in ``prepare``, looked up by id.

    Subclasses implement ``_item_features(items) -> dict[str, matrix]`` on a pointwise
    frame. ``_features(items)`` returns the cached rows when every ``item_id`` is known and
    computes them otherwise, so fit/predict work with or without ``prepare``. Pairwise
    frames are split into their a/b items via ``pair_items``.
    """

    def _item_features(self, items: pd.DataFrame) -> dict[str, Any]:
        raise NotImplementedError

    def prepare(self, X_all: pd.DataFrame) -> Any:
        items = pair_items(X_all) if "response_a" in X_all.columns else X_all
        if "item_id" not in items.columns:
            return self
        # Sorted by id so adversaries featurizing the same items share memoised results.
        items = items.drop_duplicates("item_id").sort_values("item_id", kind="stable")
        self._cache_ids_ = pd.Index(items["item_id"].to_numpy())
        self._cache_blocks_ = self._item_features(items)
        return self

    def _features(self, items: pd.DataFrame) -> dict[str, Any]:
        ids = getattr(self, "_cache_ids_", None)
        if ids is not None and "item_id" in items.columns:
            rows = ids.get_indexer(items["item_id"].to_numpy())
            if (rows >= 0).all():
                return {k: v[rows] for k, v in self._cache_blocks_.items()}
        return self._item_features(items)


def pair_items(X: pd.DataFrame) -> pd.DataFrame:
    """The pointwise items inside a pairwise frame: all a-items, then all b-items."""
    out = []
    for side in ("a", "b"):
        cols = {
            "prompt_id": X["prompt_id"].to_numpy(),
            "category": X["category"].to_numpy(),
            "prompt": X["prompt"].to_numpy(),
            "response": X[f"response_{side}"].to_numpy(),
        }
        if f"item_id_{side}" in X.columns:
            cols["item_id"] = X[f"item_id_{side}"].to_numpy()
        if f"embedding_{side}" in X.columns:
            cols["embedding"] = X[f"embedding_{side}"].to_numpy()
        if "prompt_embedding" in X.columns:
            cols["prompt_embedding"] = X["prompt_embedding"].to_numpy()
        out.append(pd.DataFrame(cols))
    return pd.concat(out, ignore_index=True)


_MEMO: dict[tuple, Any] = {}
_MEMO_SIZE = 8


def memo_texts(fn):
    """Memoise a pure text featurizer on the exact list of texts (and kwargs).

    Several adversaries featurize the same responses in one sweep (``tfidf`` and
    ``pairwise`` both hash n-grams); the key is a digest of the texts, so any change in a
    response recomputes.
    """

    def wrapper(texts, **kw):
        texts = [str(t) for t in texts]
        h = hashlib.sha1()
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        key = (fn.__module__, fn.__qualname__, h.hexdigest(), tuple(sorted(kw.items())))
        if key not in _MEMO:
            if len(_MEMO) >= _MEMO_SIZE:
                _MEMO.pop(next(iter(_MEMO)))
            _MEMO[key] = fn(texts, **kw)
        return _MEMO[key]

    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__
    wrapper.__wrapped__ = fn
    return wrapper


def _check_adversary(name: str, item: Any) -> None:
    """The protocol's shape, checked when a registered adversary loads (built-in or not)."""
    if not (isinstance(item, type) and issubclass(item, Adversary)):
        raise TypeError(f"{item!r} is not a subclass of discriminators.base.Adversary")
    if item.name != name:
        raise TypeError(f"{item.__name__}.name is {item.name!r}, registered as {name!r}")
    if item.kind not in KINDS:
        raise TypeError(f"{item.__name__}.kind must be one of {KINDS}, not {item.kind!r}")
    if not isinstance(item.needs, frozenset | set):
        raise TypeError(f"{item.__name__}.needs must be a frozenset of strings")
    # fit / predict_proba / two_sample are exercised by the conformance tests
    # (tests/test_conformance_discriminators.py), not here: loading must stay cheap.
    item._get_param_names()  # sklearn refuses *args/**kwargs in __init__: clone needs names


# Every adversary, by name: built-ins as lazy "module:attr" entries (listing them imports
# nothing heavy), plug-ins by entry point in group ``bbi.adversaries``.
ADVERSARIES: Registry[type[Adversary]] = Registry(
    "adversary",
    "bbi.adversaries",
    builtins={
        "surface": "discriminators.surface:SurfaceAdversary",
        "tfidf": "discriminators.tfidf:TfidfAdversary",
        "embed": "discriminators.embed:EmbedAdversary",
        "pairwise": "discriminators.pairwise:PairwiseAdversary",
        "pairwise_embed": "discriminators.pairwise:PairwiseEmbedAdversary",
        "encoder": "discriminators.encoder:EncoderAdversary",
        "judge": "discriminators.judge:JudgeAdversary",
        "likelihood": "discriminators.likelihood:LikelihoodAdversary",
        "mmd": "discriminators.mmd:MMDTest",
    },
    check=_check_adversary,
)


def known_adversaries() -> list[str]:
    """Every registered adversary name, sorted (nothing is imported)."""
    return sorted(ADVERSARIES.names())


def adversary_class(name: str) -> type[Adversary]:
    """The class of adversary ``name``; an unknown name is a BbiError listing the known."""
    return ADVERSARIES.get(name)


def accepts_context(cls: type[Adversary]) -> bool:
    return "context" in inspect.signature(cls.__init__).parameters


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _type_problem(default: Any, value: Any) -> str | None:
    """Why ``value`` cannot replace ``default`` (for parameters without constraints)."""
    if default is None:
        return None
    if isinstance(default, bool):
        ok, what = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, what = (
            isinstance(value, int | float) and not isinstance(value, bool),
            "a number",
        )
    elif isinstance(default, str):
        ok, what = isinstance(value, str), "a string"
    else:
        return None
    return None if ok else f"must be {what}, got {value!r}"


def check_estimator_params(
    cls: type[BaseEstimator], what: str, name: str, params: dict[str, Any], flag: str = "--param"
) -> None:
    """Validate hyperparameters ``params`` of ``cls`` (registered as ``what`` ``name``)
    without doing any work: unknown names, wrong types and out-of-range values are a
    one-line BbiError naming ``FLAG NAME.KEY``. Shared by adversaries and strategies."""
    if not isinstance(params, dict):
        raise BbiError(f"{flag} {name}: expected a mapping of parameter names to values")
    known = [p for p in cls._get_param_names() if p != "context"]
    for key in params:
        if key not in known:
            raise BbiError(
                f"{flag} {name}.{key}: {what} {name!r} has no parameter {key!r}; "
                f"known: {', '.join(known) or 'none'}"
            )
    sig = inspect.signature(cls.__init__).parameters
    constraints_of = getattr(cls, "_parameter_constraints", {})
    for key, value in params.items():
        label = f"{flag} {name}.{key}"
        constraints = constraints_of.get(key)
        if constraints is not None:
            if isinstance(value, bool) and not any(c in ("boolean", bool) for c in constraints):
                raise BbiError(f"{label}: expects a number or a name, got {str(value).lower()}")
            try:
                validate_parameter_constraints(
                    {key: constraints}, {key: value}, caller_name=cls.__name__
                )
            except InvalidParameterError as exc:
                # "The 'C' parameter of X must be ... Got -1 instead." -> "must be ...; got -1"
                msg = _first_line(exc).split(f" parameter of {cls.__name__} ", 1)[-1]
                msg = re.sub(r"\. Got (.*) instead\.$", r"; got \1", msg)
                raise BbiError(f"{label}: {msg}") from None
        else:
            default = sig[key].default if key in sig else inspect.Parameter.empty
            if default is not inspect.Parameter.empty:
                problem = _type_problem(default, value)
                if problem:
                    raise BbiError(f"{label}: {problem}")
    try:
        est = cls(**params)
        est._validate_params()  # constraints as a whole (no-op when none are declared)
    except (TypeError, ValueError) as exc:  # InvalidParameterError is both
        raise BbiError(f"{flag} {name}: {_first_line(exc)}") from None
    del est


def check_params(name: str, params: dict[str, Any], flag: str = "--param") -> None:
    """Validate hyperparameters of adversary ``name`` without fitting anything.

    Unknown adversaries and parameter names, wrong types and out-of-range values are a
    one-line BbiError naming ``--param NAME.KEY``, raised before any expensive work.
    """
    check_estimator_params(adversary_class(name), "adversary", name, params, flag)


def get_adversary(name: str, context: dict[str, Any] | None = None, **params: Any) -> Adversary:
    """Instantiate a registered adversary; ``context`` is passed only if it accepts one."""
    cls = adversary_class(name)
    if context is not None and accepts_context(cls):
        params = {**params, "context": context}
    try:
        return cls(**params)
    except TypeError as exc:
        raise BbiError(f"adversary {name!r}: bad parameters ({exc})") from None
