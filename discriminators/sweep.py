"""What one sweep is, derived from its one settings type, ``bbi.config.AttackSettings``.

The attack (``discriminators.attack``), one point's evaluation (``evaluate``), the verdict
(``verdict``) and the distilled-vs-base deltas (``deltas``) all read the same settings; the
values they derive from them (sorted budgets, the seed list, the k list with k = 1) are
computed here, never written back, so validating the settings changes nothing.

``check_sweep`` is the validation the settings model cannot do alone: names against the
registries (adversaries, strategies, which must not share a name) and every
``--param NAME.KEY=VALUE`` against the adversary or strategy it names, all before any work.
"""

from __future__ import annotations

from typing import Any

from bbi.config import AttackSettings
from bbi.errors import BbiError
from discriminators.acquisition import STRATEGIES, check_strategy_params, strategy_class
from discriminators.base import ADVERSARIES, adversary_class, check_params

# Fixed parts of every sweep, recorded with it (results.json["attack"]["config"]).
THRESHOLD_FOLDS = 2  # folds of the cross-validated train predictions the threshold uses
N_EXAMPLES = 3  # most telling examples kept per category
BLAS_THREADS = 1  # many small fits: more BLAS threads only oversubscribe the cores


def budgets(settings: AttackSettings) -> list[int]:
    """The budgets q, ascending, each once (the largest one's order serves all)."""
    return sorted({int(q) for q in settings.budgets})


def seeds(settings: AttackSettings) -> list[int]:
    """The seeds 0..N-1."""
    return list(range(settings.seeds))


def full_seed(settings: AttackSettings) -> int:
    """The seed whose full-budget point writes per-prompt scores (and seeds the verdict)."""
    return seeds(settings)[0]


def test_queries(settings: AttackSettings) -> list[int]:
    """The k values, ascending, with k = 1 always (the verdict is at k = 1)."""
    return sorted({int(k) for k in settings.test_queries} | {1})


def adversary_params(settings: AttackSettings) -> dict[str, dict[str, Any]]:
    """``--param`` entries that configure adversaries (name -> parameters)."""
    return {k: dict(v) for k, v in settings.params.items() if k not in STRATEGIES}


def strategy_params(settings: AttackSettings) -> dict[str, dict[str, Any]]:
    """``--param`` entries that configure acquisition strategies (name -> parameters)."""
    return {k: dict(v) for k, v in settings.params.items() if k in STRATEGIES}


def check_names_distinct() -> None:
    """An adversary and a strategy may not share a name: ``--param NAME.KEY`` must say
    which one it configures."""
    both = sorted(set(ADVERSARIES.names()) & set(STRATEGIES.names()))
    if both:
        raise BbiError(
            f"{', '.join(both)}: registered both as an adversary and as an acquisition "
            "strategy; rename one (--param NAME.KEY must name exactly one)"
        )


def check_sweep(settings: AttackSettings) -> None:
    """Everything about ``settings`` that needs the registries, before any work: every
    adversary and strategy exists and loads, and every ``--param`` names an attacked one
    with valid values. Budgets, seeds and ranges are checked by the settings model."""
    check_names_distinct()
    for s in settings.strategies:
        strategy_class(s)
    for a in settings.adversaries:
        adversary_class(a)
    for name, params in settings.params.items():
        keys = list(params) if isinstance(params, dict) else []
        where = f"--param {name}.{keys[0]}" if keys else f"--param {name}"
        if name in STRATEGIES:
            attacked, flag, what = settings.strategies, "--strategy", "strategy"
        elif name in ADVERSARIES:
            attacked, flag, what = settings.adversaries, "--adversary", "adversary"
        else:
            raise BbiError(
                f"{where}: unknown adversary {name!r} or strategy; known adversaries: "
                f"{', '.join(sorted(ADVERSARIES.names()))}; strategies: "
                f"{', '.join(STRATEGIES.names())}"
            )
        if name not in attacked:
            raise BbiError(
                f"{where}: {what} {name!r} is not attacked ({flag} {','.join(attacked)})"
            )
        if what == "strategy":
            check_strategy_params(name, params)
        else:
            check_params(name, params)


def config_record(settings: AttackSettings) -> dict[str, Any]:
    """The sweep as recorded in results.json (what it measured; never endpoints or keys,
    nor how it ran, e.g. ``n_jobs``). Strategy parameters are recorded when given, so a
    rerun from the record reproduces the sweep."""
    out: dict[str, Any] = {
        "budgets": budgets(settings),
        "strategies": list(settings.strategies),
        "seeds": seeds(settings),
        "test_queries": test_queries(settings),
        "epsilon": settings.epsilon,
        "alpha": settings.alpha,
        "adversaries": list(settings.adversaries),
        "n_bootstrap": settings.n_bootstrap,
        "n_permutations": settings.n_permutations,
        "threshold_folds": THRESHOLD_FOLDS,
        "n_examples": N_EXAMPLES,
        "blas_threads": BLAS_THREADS,
        "adversary_params": adversary_params(settings),
    }
    strat = strategy_params(settings)
    if strat:
        out["strategy_params"] = strat
    out["decision"] = settings.decision  # older records without it were decided by split
    if settings.equality:  # opt-in; absent means off (older records too)
        out["equality"] = True
    return out
