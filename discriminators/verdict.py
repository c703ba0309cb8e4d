"""The verdict: one declared primary analysis with family-wise error control.

A sweep produces many eps estimates (adversary x strategy x budget x k) on one test split.
Declaring "distinguishable" when *any* of them has a CI above the tolerance, and headlining
the largest estimate, would test dozens of hypotheses uncorrected and report a winner
selected on the data it is reported on. The verdict instead follows a plan fixed before
looking (docs/statistics.md, "The verdict"):

1. **Split the test prompts** (seeded, stratified by category) into a *selection* half and
   a *confirmation* half.
2. **Select** on the selection half: the (adversary, strategy, budget) point with the
   largest seed-mean eps at k = 1 (ties: the smaller budget). Two-sample tests (mmd) have no
   eps and take no part; they are reported beside the verdict.
3. **Confirm** on the other half: the selected point's eps with its bootstrap CI (the
   headline, never selected on the prompts it is computed on) and an anytime-valid betting
   test of H0: eps <= epsilon (``bbi.stats.betting_test``).
4. **Categories**: for every adversary at its full-budget point (first strategy) and every
   category, the same betting test of H0: eps_c <= epsilon on that category's test prompts.
5. **One family**: weighted Holm over the primary test (weight 1/2) and every (category,
   adversary) test (sharing the other 1/2), so the probability of any false
   "distinguishable", overall or in a category, is at most alpha.
6. **Indistinguishable** needs every estimated point's CI upper bound <= epsilon (an
   intersection-union test: level alpha without correction) and no rejection in 5.
   Otherwise, with no rejection, the verdict is "inconclusive".

For an A/A (null) comparison the same plan runs with epsilon = 0 as the calibration check:
any rejection there means the adversaries find differences where there are none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from bbi import stats
from discriminators.acquisition import revealed_for_budget

if TYPE_CHECKING:
    from bbi.config import AttackSettings

PRIMARY_WEIGHT = 0.5


def selection_split(categories: np.ndarray, seed: int) -> np.ndarray:
    """Boolean mask of the selection half, stratified by category (seeded)."""
    return stats.stratified_folds(categories, 2, seed) == 0


def _est(d: np.ndarray, cfg: Any, seed: int) -> dict[str, Any]:
    lo, hi, _ = stats.paired_bootstrap_ci(d, cfg.n_bootstrap, seed)
    return {"value": float(np.mean(d)), "ci": [lo, hi], "n": int(len(d))}


def decide(
    points: dict[str, dict[tuple[str, int], np.ndarray]],
    upper_bounds: dict[str, list[tuple[str, int, float]]],
    categories: np.ndarray,
    cfg: Any,
    eps0: float,
    excluded: dict[str, str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The verdict record from per-prompt contributions.

    ``points[adversary][(strategy, q)]``: seed-mean contributions d (k = 1) per test prompt;
    ``upper_bounds[adversary]``: (strategy, q, CI upper bound) of every estimated point,
    k included; ``cfg`` carries alpha, strategies, budgets and the bootstrap size.
    """
    alpha = float(cfg.alpha)
    excluded = dict(excluded or {})
    base = {
        "epsilon": float(eps0),
        "alpha": alpha,
        "plan": (
            "select on half the test prompts, confirm on the other half; weighted Holm over "
            "the primary (1/2) and the category x adversary tests (1/2 shared)"
        ),
        "adversaries": sorted(points),
        "excluded": excluded,
    }
    if not points:
        return {
            **base,
            "indistinguishable": None,
            "status": "no-estimate",
            "text": "no adversary produced an advantage estimate",
            "primary": None,
            "categories": [],
        }
    categories = np.asarray(categories).astype(str)
    sel = selection_split(categories, seed)
    if sel.all() or not sel.any():  # one test prompt: nothing to confirm on
        sel = np.zeros(len(categories), dtype=bool)
    conf = ~sel
    max_q = max(cfg.budgets)
    ranked = sorted(
        (
            (float(np.mean(d[sel])) if sel.any() else 0.0, -q, name, strat)
            for name, by_point in points.items()
            for (strat, q), d in by_point.items()
        ),
        reverse=True,
    )
    sel_eps, neg_q, name, strat = ranked[0]
    q = -neg_q
    d_conf = points[name][(strat, q)][conf]
    test = stats.betting_test(d_conf, eps0, alpha, seed=seed)
    primary = {
        "adversary": name,
        "strategy": strat,
        "q": int(q),
        "k": 1,
        "selection": {"value": sel_eps, "n": int(sel.sum())},
        "eps": _est(d_conf, cfg, seed),
        "p": test["p"],
        "n_to_reject": test["n_to_reject"],
    }
    family: list[tuple[str, float]] = [("primary", test["p"])]
    cat_rows: list[dict[str, Any]] = []
    first = cfg.strategies[0]
    for adv in sorted(points):
        d_full = points[adv].get((first, max_q))
        if d_full is None:
            continue
        for j, cat in enumerate(sorted(set(categories.tolist()))):
            m = categories == cat
            t = stats.betting_test(d_full[m], eps0, alpha, seed=seed + j + 1)
            cat_rows.append(
                {
                    "category": cat,
                    "adversary": adv,
                    "q": int(max_q),
                    "strategy": first,
                    "eps": _est(d_full[m], cfg, seed + j + 1),
                    "p": t["p"],
                }
            )
            family.append((f"{cat}/{adv}", t["p"]))
    n_cat = len(family) - 1
    weights = [PRIMARY_WEIGHT] + [(1 - PRIMARY_WEIGHT) / n_cat] * n_cat if n_cat else [1.0]
    adj = stats.holm([p for _, p in family], weights)
    primary["p_holm"] = float(adj[0])
    primary["rejected"] = bool(adj[0] < alpha)
    for row, pa in zip(cat_rows, adj[1:], strict=True):
        row["p_holm"] = float(pa)
        row["significant"] = bool(pa < alpha)
    found = sorted({r["category"] for r in cat_rows if r["significant"]})
    out = {
        **base,
        "family_size": len(family),
        "primary": primary,
        "categories": cat_rows,
        "distinguishable_in": found,
        # Kept for readers of older results: the confirmed point.
        "broken_by": name if primary["rejected"] else None,
        "strategy": strat,
        "at_budget": int(q),
    }
    e = primary["eps"]
    head = (
        f"{name} ({strat}, q={q}) eps {e['value']:.2f} [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}] "
        f"on {e['n']} held-out test prompts"
    )
    in_cats = ""
    if found:
        best = {}
        for r in cat_rows:
            if r["significant"] and (
                r["category"] not in best or r["eps"]["value"] > best[r["category"]]["eps"]["value"]
            ):
                best[r["category"]] = r
        in_cats = ", ".join(
            f"{c} ({best[c]['adversary']} eps {best[c]['eps']['value']:.2f})" for c in found
        )
    if primary["rejected"] or found:
        text = f"distinguishable at eps > {eps0:.2f}: "
        if primary["rejected"]:
            text += f"{head}, Holm p = {primary['p_holm']:.3g}"
            if found:
                text += f"; by category in {in_cats}"
        else:
            text += f"in {in_cats} (overall: {head}, not significant)"
        return {**out, "indistinguishable": False, "status": "distinguishable", "text": text}
    worst = max(
        ((adv, s, qq, hi) for adv, rows in upper_bounds.items() for s, qq, hi in rows),
        key=lambda t: t[3],
    )
    if worst[3] <= eps0:
        text = (
            f"indistinguishable at eps <= {eps0:.2f} with q <= {max_q} queries against "
            f"{', '.join(sorted(points))} (largest CI upper bound {worst[3]:.2f}, {worst[0]})"
        )
        return {**out, "indistinguishable": True, "status": "indistinguishable", "text": text}
    text = (
        f"inconclusive at eps {eps0:.2f}: {head}; no test rejects H0 eps <= {eps0:.2f} after "
        f"Holm, and {worst[0]}'s CI upper bound {worst[3]:.2f} (q={worst[2]}) is above it"
    )
    return {**out, "indistinguishable": False, "status": "inconclusive", "text": text}


def sequential_curve(
    by_point: dict[tuple[str, int], np.ndarray], strategy: str, alpha: float, seed: int = 0
) -> list[dict[str, Any]]:
    """Queries until the student is told apart, per training budget q (one adversary).

    ``by_point`` holds one seed's contributions per point (one purchase of q queries; a
    mean over seeds would bill one purchase for several). For each budget the adversary,
    trained on q queries, is tested prompt by prompt with the anytime-valid betting test
    of H0: eps <= 0 (``bbi.stats.betting_test``); it stops at the first prompt where the
    evidence reaches 1/alpha. Every response bought counts: ``queries = revealed(q) +
    2 * n_to_reject`` (one response per model and test prompt). Type-I error is controlled
    at any stopping time for each budget; the curve is descriptive across budgets (its
    minimum is a selection): the declared test is :func:`declared_sequential`.
    """
    out = []
    for (strat, q), d in sorted(by_point.items(), key=lambda kv: kv[0][1]):
        if strat != strategy:
            continue
        t = stats.betting_test(d, 0.0, alpha, seed=seed)
        n = t["n_to_reject"]
        out.append(
            {
                "q": int(q),
                "n_to_reject": n,
                "queries": int(revealed_for_budget(q) + 2 * n) if n is not None else None,
                "n_test": t["n"],
                "p": t["p"],
            }
        )
    return out


def declared_sequential(
    full_points: dict[str, np.ndarray], q: int, alpha: float, seed: int = 0
) -> dict[str, Any]:
    """The one declared sequential test: "stop as soon as told apart".

    Declared before looking: every adversary at the full budget q (first strategy, one
    seed: one purchase), tested prompt by prompt in the same seeded order, each by a
    betting test of H0: eps <= 0 at alpha / A (A adversaries, Bonferroni). The combined
    test stops at the first prompt where any adversary's wealth reaches A / alpha; by
    Ville's inequality and the union bound, P(it ever stops under H0) <= alpha. The bill
    counts every response read: the purchase of q queries (all adversaries train on the
    same bought prompts) plus two per test prompt read.
    """
    if not full_points:
        return {"alpha": float(alpha), "queries": None, "text": "no adversary with an eps"}
    level = alpha / len(full_points)
    stops = {}
    for name, d in sorted(full_points.items()):
        stops[name] = stats.betting_test(np.asarray(d, dtype=float), 0.0, level, seed=seed)
    crossed = {n: t["n_to_reject"] for n, t in stops.items() if t["n_to_reject"] is not None}
    bought = int(revealed_for_budget(q))
    if not crossed:
        n_test = max(t["n"] for t in stops.values())
        return {
            "alpha": float(alpha),
            "q": int(q),
            "adversaries": sorted(full_points),
            "n_to_reject": None,
            "queries": None,
            "by": None,
            "text": (
                f"not told apart after {bought + 2 * n_test} queries (q = {q} to train, "
                f"{n_test} test prompts; anytime-valid, alpha {alpha:g} over "
                f"{len(full_points)} adversaries)"
            ),
        }
    by = min(crossed, key=lambda n: (crossed[n], n))
    n = crossed[by]
    return {
        "alpha": float(alpha),
        "q": int(q),
        "adversaries": sorted(full_points),
        "n_to_reject": int(n),
        "queries": int(bought + 2 * n),
        "by": by,
        "text": (
            f"told apart after {bought + 2 * n} queries ({bought} bought to train at q = {q}, "
            f"then {n} test prompts x 2; {by}; anytime-valid, alpha {alpha:g} over "
            f"{len(full_points)} adversaries)"
        ),
    }


# ---- from a sweep's records --------------------------------------------------------------


def _verdict_inputs(adversaries: dict[str, Any]) -> tuple[dict, dict]:
    upper: dict[str, list[tuple[str, int, float]]] = {}
    excluded: dict[str, str] = {}
    for name, a in adversaries.items():
        if a["kind"] == "test":
            excluded[name] = "two-sample test without an eps; its p-values are reported beside"
            continue
        upper[name] = [
            (strat, int(pt["q"]), float(pt["ci"][1]))
            for strat, curve in a["curves"].items()
            for pt in curve
            if pt["value"] is not None
        ]
    return upper, excluded


def attack_verdict(
    adversaries: dict[str, Any],
    seed_means: dict[str, dict[tuple[str, int], np.ndarray]],
    categories: np.ndarray,
    cfg: AttackSettings,
    seed: int,
    eps0: float | None = None,
) -> dict[str, Any]:
    """The sweep's select-then-confirm analysis (``discriminators.verdict``) at tolerance
    ``eps0`` (default ``cfg.epsilon``; an A/A comparison passes 0); category findings are
    written back into each adversary's ``per_category`` so every table shows the
    family-wise (not per-adversary) significance."""
    eps0 = cfg.epsilon if eps0 is None else float(eps0)
    upper, excluded = _verdict_inputs(adversaries)
    out = decide(seed_means, upper, categories, cfg, eps0, excluded, seed=seed)
    # Adversaries that read the teacher beyond its samples spend queries outside q.
    out["gray_box"] = {
        n: a["notes"]
        for n, a in adversaries.items()
        if isinstance(a.get("notes"), str) and a["notes"].startswith("gray-box")
    }
    for row in out.get("categories", []):
        adversaries[row["adversary"]]["per_category"][row["category"]] = {
            **row["eps"],
            "p": row["p"],
            "p_holm": row["p_holm"],
            "significant": row["significant"],
            "h0": f"eps <= {eps0:g}",
        }
    return out


def calibration(
    adversaries: dict[str, Any],
    seed_means: dict[str, dict[tuple[str, int], np.ndarray]],
    categories: np.ndarray,
    cfg: AttackSettings,
    seed: int,
) -> dict[str, Any]:
    """The A/A check: the verdict's whole family at tolerance 0 must reject nothing."""
    upper, excluded = _verdict_inputs(adversaries)
    res = decide(seed_means, upper, categories, cfg, 0.0, excluded, seed=seed)
    if res["status"] == "no-estimate":
        return {"eps0": 0.0, "ok": None, "text": res["text"]}
    rejected = [
        *(["overall"] if res["primary"]["rejected"] else []),
        *(f"{r['category']}/{r['adversary']}" for r in res["categories"] if r["significant"]),
    ]
    tests = [res["primary"]["p_holm"], *(r["p_holm"] for r in res["categories"])]
    return {
        "eps0": 0.0,
        "ok": not rejected,
        "rejected": rejected,
        "family_size": res["family_size"],
        "min_p_holm": float(min(tests)),
        "text": (
            f"A/A calibration holds: none of {res['family_size']} tests rejects eps = 0 "
            f"(smallest Holm p {min(tests):.3g})"
            if not rejected
            else f"A/A calibration FAILS: eps > 0 found in {', '.join(rejected)}"
        ),
    }


__all__ = [
    "PRIMARY_WEIGHT",
    "declared_sequential",
    "decide",
    "selection_split",
    "sequential_curve",
]
