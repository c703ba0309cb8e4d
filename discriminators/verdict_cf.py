"""The verdict's primary analysis: a cross-fitted stacked adversary on every response.

Declared in advance (docs/statistics.md, "The verdict"):

1. **Cross-fit** (``discriminators.crossfit``): every prompt of the comparison, train and
   test split, in K folds stratified by category; the base adversaries and the stack over
   their out-of-fold scores plus the length/format features give one out-of-fold
   contribution d_i in {-1, 0, 1} per prompt. Nothing is selected: the stack is the one
   adversary tested.
2. **Overall**: the exact fixed-sample test of H0: eps <= eps0 (``bbi.crossfit``) on all
   n contributions, with the lower confidence bound that inverts it (the interval of the
   test that decides).
3. **Categories**: the same test on each category's prompts, H0: eps_c <= eps0.
4. **One family**: weighted Holm, the overall test 1/2 and the categories sharing 1/2; a
   rejection passes its alpha on (closed testing), so once the overall test rejects the
   categories get Holm at the full alpha. FWER <= alpha under any dependence.
5. **Indistinguishable at eps <= eps0** when nothing rejects and the upper confidence
   bound is <= eps0 overall, in every category (the stack) and for every base adversary:
   an intersection-union test, level alpha without correction. Otherwise inconclusive.

Each category also gets the smallest eps detectable with 80% power at its share of alpha
(``bbi.crossfit.min_detectable_eps``): below that, "no finding" says nothing. Beside the
decision (descriptive, outside the family): each base adversary's cross-fitted eps and the
best one-feature rule (chosen among the surface features, so it is a selected maximum).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bbi import crossfit as cft
from bbi import stats
from discriminators.base import get_adversary
from discriminators.comparison import ComparisonData
from discriminators.crossfit import (
    FOLDS,
    comparison_items,
    crossfit,
    crossfit_adversaries,
)

PRIMARY_WEIGHT = 0.5
POWER = 0.8
# Cross-fold dependence: each exact test runs at alpha / DEPENDENCE_FACTOR (p-values are
# multiplied by it, bounds are at 1 - alpha / DEPENDENCE_FACTOR); see ``_test``.
DEPENDENCE_FACTOR = 2.0


def _test(d: np.ndarray, eps0: float, alpha: float, seed: int) -> dict[str, Any]:
    """The exact test of H0: eps <= eps0 on pooled out-of-fold contributions, corrected
    for the dependence between folds.

    Within a fold the contributions are exactly sign-symmetric under H0; across folds each
    fold's labels train the others' models, which adds positive covariance the exact test
    ignores (measured: the uncorrected test rejected 0.056, SE 0.014, of A/A repeats at
    alpha 0.05). The p-value is multiplied by ``DEPENDENCE_FACTOR`` (the factor that bounds
    the size of pooled cross-conformal p-values) and the lower bound is the one of the
    corrected test (level 1 - alpha / factor), so the reported interval still belongs to
    the test that decided. A conservative correction, measured, not a theorem for this
    statistic (docs/statistics.md); ``discriminators.crossfit.refit_p`` is exact at eps = 0.
    """
    t = cft.fixed_sample_test(d, eps0, alpha / DEPENDENCE_FACTOR, seed=seed)
    return {
        **t,
        "p_uncorrected": t["p"],
        "p": float(min(1.0, DEPENDENCE_FACTOR * t["p"])),
        "method": f"{t['method']}, p x {DEPENDENCE_FACTOR:g} for cross-fold dependence",
    }


def _upper(d: np.ndarray, alpha: float) -> float:
    """One-sided 1 - alpha upper bound: minus the lower bound of -d."""
    return -cft.lower_bound(-np.asarray(d, dtype=float), alpha)


def _est(d: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    lo, hi, _ = stats.paired_bootstrap_ci(d, n_bootstrap, seed)
    return {"value": float(np.mean(d)), "ci": [lo, hi], "n": int(len(d))}


def decide_crossfit(
    d: np.ndarray,
    categories: np.ndarray,
    eps0: float,
    alpha: float,
    base: dict[str, np.ndarray] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Steps 2-5 on out-of-fold contributions ``d`` (one per prompt, in {-1, 0, 1})."""
    d = np.asarray(d, dtype=float)
    cats = np.asarray(categories).astype(str)
    names = sorted(set(cats.tolist()))
    level = alpha / DEPENDENCE_FACTOR  # bounds of the corrected tests
    overall = _test(d, eps0, alpha, seed)
    rows = []
    for j, c in enumerate(names):
        m = cats == c
        t = _test(d[m], eps0, alpha, seed + j + 1)
        share = alpha * (1 - PRIMARY_WEIGHT) / len(names) / DEPENDENCE_FACTOR
        mde = cft.min_detectable_eps(int(m.sum()), share, eps0, POWER)
        rows.append(
            {
                "category": c,
                "eps": _est(d[m], n_bootstrap, seed + j + 1),
                "lower": t["lower"],
                "upper": _upper(d[m], level),
                "p": t["p"],
                "min_detectable": mde,
                "note": (
                    f"too few prompts ({int(m.sum())}) to detect any eps at alpha {share:.2g}"
                    if mde is None
                    else (
                        f"too few prompts ({int(m.sum())}) to detect eps <= {mde:.2f} "
                        f"(80% power, alpha {share:.2g})"
                        if mde > eps0 + 0.1
                        else None
                    )
                ),
            }
        )
    p_holm, adj = cft.family(overall["p"], [r["p"] for r in rows], alpha, PRIMARY_WEIGHT)
    for r, pa in zip(rows, adj, strict=True):
        r["p_holm"] = float(pa)
        r["significant"] = bool(pa < alpha)
    primary = {
        "adversary": "stack",
        "eps": _est(d, n_bootstrap, seed),
        "lower": overall["lower"],
        "upper": _upper(d, level),
        "p": overall["p"],
        "p_uncorrected": overall["p_uncorrected"],
        "method": overall["method"],
        "p_holm": p_holm,
        "rejected": bool(p_holm < alpha),
    }
    base_rows = {
        name: {**_est(b, n_bootstrap, seed), "upper": _upper(b, level)}
        for name, b in (base or {}).items()
    }
    found = [r["category"] for r in rows if r["significant"]]
    e = primary["eps"]
    head = (
        f"cross-fitted stack eps {e['value']:.2f} (lower bound {primary['lower']:.2f}, "
        f"exact test p = {primary['p']:.3g}, Holm {p_holm:.3g}) on {e['n']} prompts"
    )
    out: dict[str, Any] = {
        "epsilon": float(eps0),
        "alpha": float(alpha),
        "primary": primary,
        "categories": rows,
        "base": base_rows,
        "family_size": 1 + len(rows),
        "distinguishable_in": found,
    }
    if primary["rejected"] or found:
        in_cats = ", ".join(
            f"{r['category']} (eps {r['eps']['value']:.2f}, lower bound {r['lower']:.2f})"
            for r in rows
            if r["significant"]
        )
        text = f"distinguishable at eps > {eps0:.2f}: "
        if primary["rejected"]:
            text += head + (f"; by category in {in_cats}" if found else "")
        else:
            text += f"in {in_cats} (overall: {head}, not significant)"
        return {**out, "status": "distinguishable", "indistinguishable": False, "text": text}
    uppers = [("overall", primary["upper"])]
    uppers += [(r["category"], r["upper"]) for r in rows]
    uppers += [(name, r["upper"]) for name, r in base_rows.items()]
    worst = max(uppers, key=lambda t: t[1])
    if worst[1] <= eps0:
        text = (
            f"indistinguishable at eps <= {eps0:.2f}: every upper bound (overall, each "
            f"category, each base adversary) is at most {worst[1]:.2f} ({head})"
        )
        return {**out, "status": "indistinguishable", "indistinguishable": True, "text": text}
    text = (
        f"inconclusive at eps {eps0:.2f}: {head}; nothing rejects H0 eps <= {eps0:.2f}, "
        f"and the upper bound for {worst[0]} is {worst[1]:.2f}"
    )
    return {**out, "status": "inconclusive", "indistinguishable": False, "text": text}


def crossfit_verdict(
    data: ComparisonData,
    adversary_names: list[str],
    params: dict[str, dict[str, Any]],
    eps0: float,
    alpha: float,
    n_bootstrap: int = 1000,
    seed: int = 0,
    n_folds: int = FOLDS,
    context: Any = None,
) -> dict[str, Any]:
    """The primary analysis of one comparison (module docstring), with its A/A check at
    eps = 0 when the comparison is a null one (per-category stars then test eps_c = 0)."""

    def make(name: str):
        kw = dict(params.get(name, {}))
        return get_adversary(name, context=context, **kw) if context else get_adversary(name, **kw)

    used, skipped = crossfit_adversaries(adversary_names, make)
    prompts, items = comparison_items(data)
    cats = prompts["category"].astype(str).to_numpy()
    n_folds = min(n_folds, len(cats) // 2)  # at least two prompts per fold
    cf = crossfit(used, items, cats, n_folds, seed)
    rule_name, rule_d = max(cf.rules.items(), key=lambda kv: (kv[1].mean(), kv[0]))
    plan = (
        f"nested cross-fitted stack ({n_folds} folds over all {len(cats)} prompts) over "
        f"{', '.join(a.name for a in used) or 'no base adversary'} + length/format features; "
        "exact test of H0 eps <= eps0 overall and per category (p x "
        f"{DEPENDENCE_FACTOR:g} for cross-fold dependence), weighted Holm (overall 1/2, "
        "categories 1/2 shared)"
    )
    test_eps0 = 0.0 if data.role == "null" else eps0
    res = decide_crossfit(cf.d, cats, test_eps0, alpha, cf.base, n_bootstrap, seed)
    res.update(
        plan=plan,
        folds=int(n_folds),
        n_prompts=int(len(cats)),
        responses=int(2 * len(cats)),
        adversaries=[a.name for a in used],
        skipped=skipped,
        stack_weights=cf.weights,
        best_rule={
            "feature": rule_name,
            **_est(rule_d, n_bootstrap, seed),
            "note": (
                f"best of {len(cf.rules)} one-feature rules, direction chosen out of fold; "
                "selected among them, so descriptive"
            ),
        },
    )
    if data.role == "null":
        rejected = (["overall"] if res["primary"]["rejected"] else []) + res["distinguishable_in"]
        res["calibration"] = {
            "eps0": 0.0,
            "ok": not rejected,
            "rejected": rejected,
            "text": (
                f"A/A calibration holds: none of {res['family_size']} tests rejects eps = 0"
                if not rejected
                else f"A/A calibration FAILS: eps > 0 found in {', '.join(rejected)}"
            ),
        }
    return res


def adopt_crossfit(sweep: dict[str, Any], cf: dict[str, Any]) -> dict[str, Any]:
    """The verdict record: the cross-fit analysis ``cf`` decides (status, text, categories
    named, the A/A calibration); the sweep's select-then-confirm record stays beside it
    (``primary``, ``categories``: descriptive of the sweep's points, its own family) and
    its A/A check moves to ``sweep_calibration``."""
    out = dict(sweep)
    out["crossfit"] = {**cf, "decides": True}
    for key in ("status", "indistinguishable", "text", "distinguishable_in", "family_size"):
        out[key] = cf[key]
    out["plan"] = f"{cf['plan']}. Beside it, descriptive: {sweep.get('plan', '')}"
    out["broken_by"] = "stack" if cf["primary"]["rejected"] else None
    if "calibration" in cf:
        if sweep.get("calibration") is not None:
            out["sweep_calibration"] = sweep["calibration"]
        out["calibration"] = cf["calibration"]
    return out


__all__ = [
    "DEPENDENCE_FACTOR",
    "PRIMARY_WEIGHT",
    "adopt_crossfit",
    "crossfit_verdict",
    "decide_crossfit",
]
