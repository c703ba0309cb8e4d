"""Query budgets and acquisition strategies: which train prompts to spend the budget on.

Budget accounting
-----------------
A query is one prompt sent to one model; the run's cached responses simulate the oracle
and every revealed response counts. A pointwise adversary needs both labels, so it buys a
prompt answered by *both* models (2 queries, one teacher and one other item, balanced
labels): a budget of ``q`` queries buys ``q // 2`` train prompts and reveals
``2 * (q // 2) <= q`` responses. Pairwise adversaries buy the same pairs. Prompts
themselves are free (the adversary writes its own prompts); only responses cost. The
``Oracle`` enforces the budget and counts what was revealed; the count is recorded in
every attack json.

Anytime orders
--------------
Every strategy produces a purchase *order* over the pool whose decisions depend only on
responses bought earlier, on a round schedule that does not depend on the total budget.
The first ``q // 2`` prompts of the order are therefore exactly what the strategy would
buy with budget ``q``, so one run to the largest budget serves every budget (nested
curves, fewer wasted fits). The acquired set is shared by all adversaries: adaptive
strategies use their own cheap internal response classifier (surface statistics + hashed
n-grams + logistic regression), never the test split.

Strategies
----------
``random``
    A seeded permutation of the pool.
``stratified``
    Equal allocation over categories: round-robin over categories (sorted by name), a
    seeded random order within each; the remainder of ``q // 2`` over the number of
    categories goes to the first categories by name (deterministic); an exhausted
    category is skipped.
``disagreement``
    Query-by-committee on prompt-only features. The adversary sees only responses it paid
    for, so it predicts *per-prompt distinguishability* from the prompt: after a
    stratified seed round, each round (i) computes for every bought prompt the
    cross-validated margin ``m = P(teacher | teacher's response) - P(teacher | other's
    response)`` of the internal response classifier (2-fold, grouped by prompt), (ii) fits
    a committee of 8 bootstrap-resampled ridge regressions from prompt features (64-d
    truncated SVD of hashed prompt word n-grams + category one-hot) to ``m``, and (iii) buys the unbought prompts on which
    the committee disagrees most (largest standard deviation of predictions). Rounds grow
    geometrically (each buys half as many prompts as bought so far).
``bandit``
    Thompson sampling over categories. Reward of a newly bought pair = whether the
    internal classifier fit on everything bought *before* it ranks the teacher's response
    above the other's (held-out correctness; 1/2 for a tie). Each category keeps a
    Beta(1 + successes, 1 + failures) posterior; every purchase in a round samples the
    posteriors and buys a random unbought prompt of the arg-max category. The aim: spend
    queries where artifacts are learnable, unlike stratified's equal split.

Registry and parameters
-----------------------
``STRATEGIES`` (``bbi.registry``, entry-point group ``bbi.strategies``) names every
strategy; a plug-in is a ``Strategy`` subclass whose ``name`` is its registered name (the
name also seeds its generator). Parameters are explicit ``__init__`` keywords, given as
``--param NAME.KEY=VALUE`` and checked by ``check_strategy_params`` before any work
(``disagreement``: ``n_committee``, ``alpha``; both adaptive strategies:
``seed_prompts_per_category``, ``min_seed_round``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import Interval

from bbi.errors import BbiError
from bbi.registry import Registry
from discriminators.base import check_estimator_params
from discriminators.surface import surface_features
from discriminators.tfidf import hashed_counts

QUERIES_PER_PROMPT = 2


def prompts_for_budget(q: int) -> int:
    """Train prompts a budget of q queries buys (both models answer each)."""
    return int(q) // QUERIES_PER_PROMPT


def revealed_for_budget(q: int) -> int:
    return QUERIES_PER_PROMPT * prompts_for_budget(q)


@dataclass
class Pool:
    """The train pool: prompts and categories are free, responses are behind the oracle."""

    prompt_ids: np.ndarray
    categories: np.ndarray
    prompts: list[str]
    teacher: list[str] = field(repr=False)
    other: list[str] = field(repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def prompt_features(self, n_components: int = 64) -> np.ndarray:
        """Dense prompt-only features (free: no response needed), computed once per pool.

        Hashed word 1-2-grams of the prompt reduced by truncated SVD (fixed seed), plus a
        category one-hot.
        """
        if "prompt_features" not in self._cache:
            hv = HashingVectorizer(ngram_range=(1, 2), n_features=2**12, alternate_sign=False)
            words = hv.transform([str(p) for p in self.prompts])
            k = max(1, min(n_components, words.shape[0] - 1, words.shape[1] - 1))
            dense = TruncatedSVD(n_components=k, random_state=0).fit_transform(words)
            cats = sorted(set(self.categories.tolist()))
            onehot = (self.categories[:, None] == np.asarray(cats)[None, :]).astype(float)
            self._cache["prompt_features"] = np.hstack([dense, onehot])
        return self._cache["prompt_features"]


class Oracle:
    """Reveals the two models' responses to pool prompts and enforces the query budget."""

    def __init__(self, pool: Pool, budget: int):
        self.pool = pool
        self.budget = int(budget)
        self.revealed = 0
        self._bought: set[int] = set()

    def buy(self, idx: Sequence[int]) -> tuple[list[str], list[str]]:
        """Both responses for each prompt index; a prompt already bought is free."""
        idx = [int(i) for i in idx]
        new = {i for i in idx if i not in self._bought}
        cost = QUERIES_PER_PROMPT * len(new)
        if self.revealed + cost > self.budget:
            raise BbiError(
                f"query budget exceeded: {self.revealed} + {cost} > {self.budget} queries"
            )
        self.revealed += cost
        self._bought |= new
        return [self.pool.teacher[i] for i in idx], [self.pool.other[i] for i in idx]


class Strategy(BaseEstimator):
    """Produces an anytime purchase order of pool indices (see the module docstring).

    Like an adversary, a strategy lists its parameters as explicit ``__init__`` keywords
    (``get_params``/``clone`` work) with optional sklearn-style ``_parameter_constraints``,
    so ``--param NAME.KEY=VALUE`` is checked (``check_strategy_params``) before any work.
    ``order`` must buy through the oracle and depend only on ``rng`` and what it bought.
    """

    name: ClassVar[str] = ""
    adaptive: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, list]] = {}

    def order(
        self, pool: Pool, n_prompts: int, rng: np.random.Generator, oracle: Oracle
    ) -> np.ndarray:
        raise NotImplementedError


class RandomStrategy(Strategy):
    name = "random"

    def order(self, pool, n_prompts, rng, oracle):
        out = rng.permutation(len(pool))[:n_prompts]
        oracle.buy(out)
        return out


def stratified_order(
    categories: np.ndarray, rng: np.random.Generator, exclude: set[int] | None = None
) -> np.ndarray:
    """Round-robin over sorted categories, seeded random order within each."""
    exclude = exclude or set()
    queues = []
    for c in sorted(set(categories.tolist())):
        members = [i for i in np.flatnonzero(categories == c).tolist() if i not in exclude]
        queues.append(list(rng.permutation(members)))
    out: list[int] = []
    depth = 0
    while True:
        took = False
        for q in queues:
            if depth < len(q):
                out.append(int(q[depth]))
                took = True
        if not took:
            break
        depth += 1
    return np.asarray(out, dtype=int)


class StratifiedStrategy(Strategy):
    name = "stratified"

    def order(self, pool, n_prompts, rng, oracle):
        out = stratified_order(pool.categories, rng)[:n_prompts]
        oracle.buy(out)
        return out


# ---- adaptive strategies ----------------------------------------------------------------


class _ResponseModel:
    """The adaptive strategies' cheap internal classifier on bought responses only."""

    def __init__(self, seed: int):
        self.seed = seed
        self.surface: list[np.ndarray] = []
        self.counts: list[sp.csr_matrix] = []

    def add(self, teacher: list[str], other: list[str]) -> None:
        # Rows 2i (teacher) and 2i+1 (other) for the i-th bought prompt.
        texts = [t for pair in zip(teacher, other, strict=True) for t in pair]
        self.surface.append(surface_features(texts))
        self.counts.append(hashed_counts(texts, n_features=2**16, chars=False))

    def matrix(self) -> tuple[np.ndarray, sp.csr_matrix]:
        return np.vstack(self.surface), sp.vstack(self.counts, format="csr")

    def _design(self, S: np.ndarray, C: sp.csr_matrix, scaler: StandardScaler) -> sp.csr_matrix:
        norms = np.sqrt(np.asarray(C.multiply(C).sum(axis=1))).ravel()
        norms[norms == 0] = 1.0
        C = sp.diags(1.0 / norms) @ C
        return sp.hstack([sp.csr_matrix(scaler.transform(S)), C], format="csr")

    def fit_predict(self, train_rows: np.ndarray, pred_rows: np.ndarray) -> np.ndarray:
        S, C = self.matrix()
        scaler = StandardScaler().fit(S[train_rows])
        y = (train_rows % 2 == 0).astype(int)
        clf = LogisticRegression(
            C=1.0, solver="liblinear", dual=True, tol=1e-3, max_iter=2000, random_state=self.seed
        )
        clf.fit(self._design(S[train_rows], C[train_rows], scaler), y)
        return clf.predict_proba(self._design(S[pred_rows], C[pred_rows], scaler))[:, 1]

    def cv_margins(self, n_bought: int) -> np.ndarray:
        """Cross-validated P(t|teacher resp) - P(t|other resp) per bought prompt."""
        rows = np.arange(2 * n_bought)
        groups = rows // 2
        p = np.full(len(rows), 0.5)
        n_splits = min(2, n_bought)
        if n_splits < 2:
            return np.zeros(n_bought)
        for tr, te in GroupKFold(n_splits=n_splits).split(rows, groups=groups):
            p[te] = self.fit_predict(rows[tr], rows[te])
        return p[0::2] - p[1::2]


def _round_sizes(n0: int, n_prompts: int, growth: float = 0.5):
    """Budget-independent schedule: seed round n0, then each round buys growth * bought."""
    bought = 0
    size = n0
    while bought < n_prompts:
        size = min(size, n_prompts - bought)
        yield size
        bought += size
        size = max(1, math.ceil(growth * bought))


class _AdaptiveStrategy(Strategy):
    adaptive = True
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "seed_prompts_per_category": [Interval(Integral, 1, None, closed="left")],
        "min_seed_round": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(self, seed_prompts_per_category: int = 2, min_seed_round: int = 10):
        self.seed_prompts_per_category = seed_prompts_per_category
        self.min_seed_round = min_seed_round

    def order(self, pool, n_prompts, rng, oracle):
        n_cats = len(set(pool.categories.tolist()))
        n0 = min(n_prompts, max(self.min_seed_round, self.seed_prompts_per_category * n_cats))
        model = _ResponseModel(int(rng.integers(2**31)))
        bought: list[int] = []
        sizes = _round_sizes(n0, n_prompts)
        first = next(sizes)
        seed_round = stratified_order(pool.categories, rng)[:first]
        self._buy(seed_round, oracle, model, bought)
        self._start(pool, rng, model, bought)
        for size in sizes:
            n_old = len(bought)
            pick = self._next_round(pool, size, rng, model, bought)
            self._buy(pick, oracle, model, bought)
            self._after_round(pool, model, pick, n_old)
        return np.asarray(bought, dtype=int)

    @staticmethod
    def _buy(idx, oracle: Oracle, model: _ResponseModel, bought: list[int]) -> None:
        idx = [int(i) for i in idx]
        if not idx:
            return
        t, o = oracle.buy(idx)
        model.add(t, o)
        bought.extend(idx)

    def _start(self, pool, rng, model, bought) -> None:
        pass

    def _after_round(self, pool, model, pick, n_old) -> None:
        pass

    def _next_round(self, pool, size, rng, model, bought) -> list[int]:
        raise NotImplementedError


class DisagreementStrategy(_AdaptiveStrategy):
    name = "disagreement"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        **_AdaptiveStrategy._parameter_constraints,
        "n_committee": [Interval(Integral, 2, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        n_committee: int = 8,
        alpha: float = 1.0,
        seed_prompts_per_category: int = 2,
        min_seed_round: int = 10,
    ):
        super().__init__(seed_prompts_per_category, min_seed_round)
        self.n_committee = n_committee
        self.alpha = alpha

    def _start(self, pool, rng, model, bought):
        self._P = pool.prompt_features()

    def _next_round(self, pool, size, rng, model, bought):
        bought_arr = np.asarray(bought)
        mask = np.ones(len(pool), dtype=bool)
        mask[bought_arr] = False
        unbought = np.flatnonzero(mask)
        if len(unbought) <= size:
            return unbought.tolist()
        margins = model.cv_margins(len(bought))
        Xb = self._P[bought_arr]
        Xu = self._P[unbought]
        preds = np.empty((self.n_committee, len(unbought)))
        for j in range(self.n_committee):
            boot = rng.integers(0, len(bought), size=len(bought))
            reg = Ridge(alpha=self.alpha)
            preds[j] = reg.fit(Xb[boot], margins[boot]).predict(Xu)
        score = preds.std(axis=0)
        # Random tie-break: a seeded jitter far below any real disagreement.
        score = score + rng.uniform(0, 1e-12, size=len(score))
        return unbought[np.argsort(-score)[:size]].tolist()


class BanditStrategy(_AdaptiveStrategy):
    name = "bandit"

    def _start(self, pool, rng, model, bought):
        self._cats = sorted(set(pool.categories.tolist()))
        self._succ = dict.fromkeys(self._cats, 0.0)
        self._fail = dict.fromkeys(self._cats, 0.0)
        margins = model.cv_margins(len(bought))
        self._reward(pool, bought, margins)

    def _reward(self, pool, idx, margins) -> None:
        for i, m in zip(idx, margins, strict=True):
            r = 1.0 if m > 0 else 0.5 if m == 0 else 0.0
            c = pool.categories[i]
            self._succ[c] += r
            self._fail[c] += 1.0 - r

    def _next_round(self, pool, size, rng, model, bought):
        taken = set(bought)
        avail = {
            c: [i for i in np.flatnonzero(pool.categories == c).tolist() if i not in taken]
            for c in self._cats
        }
        avail = {c: list(rng.permutation(v)) for c, v in avail.items() if v}
        pick: list[int] = []
        while len(pick) < size and avail:
            names = list(avail)
            theta = [rng.beta(1 + self._succ[c], 1 + self._fail[c]) for c in names]
            c = names[int(np.argmax(theta))]
            pick.append(int(avail[c].pop()))
            if not avail[c]:
                del avail[c]
        return pick

    def _after_round(self, pool, model, pick, n_old) -> None:
        # Held-out rewards: the model fit on everything bought before this round.
        if not pick or n_old == 0:
            return
        train_rows = np.arange(2 * n_old)
        new_rows = np.arange(2 * n_old, 2 * (n_old + len(pick)))
        p = model.fit_predict(train_rows, new_rows)
        self._reward(pool, pick, p[0::2] - p[1::2])


def _check_strategy(name: str, item: Any) -> None:
    """The protocol's shape, checked when a registered strategy loads (built-in or not)."""
    if not (isinstance(item, type) and issubclass(item, Strategy)):
        raise TypeError(f"{item!r} is not a subclass of discriminators.acquisition.Strategy")
    if item.name != name:
        raise TypeError(f"{item.__name__}.name is {item.name!r}, registered as {name!r}")
    if item.order is Strategy.order:
        raise TypeError(f"{item.__name__} does not implement order")
    item._get_param_names()  # sklearn refuses *args/**kwargs in __init__: clone needs names


# Every acquisition strategy, by name; plug-ins by entry point in group ``bbi.strategies``.
STRATEGIES: Registry[type[Strategy]] = Registry(
    "acquisition strategy",
    "bbi.strategies",
    builtins={
        "random": "discriminators.acquisition:RandomStrategy",
        "stratified": "discriminators.acquisition:StratifiedStrategy",
        "disagreement": "discriminators.acquisition:DisagreementStrategy",
        "bandit": "discriminators.acquisition:BanditStrategy",
    },
    check=_check_strategy,
)


def known_strategies() -> list[str]:
    """Every registered strategy name (built-ins first, in their declared order)."""
    return STRATEGIES.names()


def strategy_class(name: str) -> type[Strategy]:
    """The class of strategy ``name``; an unknown name is a BbiError listing the known."""
    return STRATEGIES.get(name)


def check_strategy_params(name: str, params: dict[str, Any], flag: str = "--param") -> None:
    """Validate parameters of strategy ``name`` before any work, exactly as an adversary's
    (``discriminators.base.check_estimator_params``): one BbiError line naming the flag."""
    check_estimator_params(strategy_class(name), "strategy", name, params, flag)


def get_strategy(name: str, **params: Any) -> Strategy:
    """A configured instance of strategy ``name``."""
    cls = strategy_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise BbiError(f"strategy {name!r}: bad parameters ({exc})") from None


def acquisition_order(
    strategy: str | Strategy,
    pool: Pool,
    budget: int,
    seed: int,
    params: dict[str, Any] | None = None,
) -> tuple[np.ndarray, Oracle]:
    """Purchase order for the largest budget; prefixes give every smaller budget.

    ``params`` configure a strategy given by name (``--param NAME.KEY=VALUE``).
    """
    strat = get_strategy(strategy, **(params or {})) if isinstance(strategy, str) else strategy
    n_prompts = prompts_for_budget(budget)
    if n_prompts > len(pool):
        raise BbiError(
            f"budget {budget} queries buys {n_prompts} train prompts but the pool has only "
            f"{len(pool)} (max budget {QUERIES_PER_PROMPT * len(pool)})"
        )
    oracle = Oracle(pool, budget)
    rng = np.random.default_rng([seed, sum(map(ord, strat.name))])
    order = np.asarray(strat.order(pool, n_prompts, rng, oracle), dtype=int)
    if len(set(order.tolist())) != len(order) or len(order) != n_prompts:
        raise RuntimeError(f"strategy {strat.name} produced an invalid order")
    return order, oracle
