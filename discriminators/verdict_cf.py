"""The verdict's primary analysis: a cross-fitted selected adversary on every response.

Declared in advance (docs/statistics.md, "The verdict"):

1. **Cross-fit** (``discriminators.crossfit``): every prompt of the comparison, train and
   test split, in K folds stratified by category; the base adversaries, the stack over
   their out-of-fold scores plus the length/format features, and the one-feature rules
   each give one out-of-fold contribution d_i in {-1, 0, 1} per prompt.
2. **Selection per fold**: fold k is scored by the candidate (the stack, a base
   adversary or a one-feature rule) with the largest statistic S / sqrt(m) on the other
   folds, computed out of fold there. It sees no label of fold k, so it is part of the
   fixed adversary that scores fold k: no multiplicity is paid for it.
3. **Overall**: the exact fixed-sample test of H0: eps <= eps0 (``bbi.crossfit``) in
   each fold (given the other folds, a fold's contributions are an independent sample
   scored by a fixed adversary, so the test is exact there), the K fold p-values merged
   by a rule valid under any dependence (``bbi.crossfit.merge_p``, ``MERGE``); the lower
   confidence bound inverts the merged test (the interval of the test that decides), and
   ``primary.decided_by`` names the fold, and its candidate, whose test gave the p.
4. **Categories**: the same per-fold test on each category's prompts, H0: eps_c <= eps0.
5. **One family**: weighted Holm, the overall test ``PRIMARY_WEIGHT`` and the categories
   sharing the rest; a rejection passes its alpha on (closed testing), so once the
   overall test rejects the categories get Holm at the full alpha. FWER <= alpha under
   any dependence.
6. **Indistinguishable at eps <= eps0** when nothing rejects and the upper confidence
   bound is <= eps0 overall, in every category and for every base adversary: an
   intersection-union test, level alpha without correction. Otherwise inconclusive.

Each category also gets the smallest eps detectable with 80% power at its share of alpha
(``bbi.crossfit.fold_min_detectable_eps``): below that, "no finding" says nothing. Beside the
decision (descriptive, outside the family): the stack alone, each base adversary's
cross-fitted eps and the best one-feature rule (chosen among the surface features, so it
is a selected maximum).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bbi import crossfit as cft
from bbi import stats
from discriminators.base import get_adversary
from discriminators.comparison import ComparisonData
from discriminators.crossfit import (
    comparison_items,
    crossfit,
    crossfit_adversaries,
)

PRIMARY_WEIGHT = 0.75
POWER = 0.8
# The verdict's cross-fit: K folds, and the rule that merges the K per-fold exact tests.
VERDICT_FOLDS = 2
MERGE = "bonferroni"


def _test(
    d: np.ndarray, folds: np.ndarray | None, eps0: float, alpha: float, merge: str, seed: int
) -> dict[str, Any]:
    """The exact test of H0: eps <= eps0 and its 1 - alpha lower bound.

    ``folds`` given (cross-fitted contributions): one exact test per fold, merged by a
    rule valid under any dependence between folds (``bbi.crossfit.fold_test``); the bound
    inverts the merged test. ``folds`` None: the contributions are one independent sample
    (e.g. from one held-out split) and the exact test runs on them as they are.
    """
    d = np.asarray(d, dtype=float)
    if folds is None:
        return cft.fixed_sample_test(d, eps0, alpha, seed=seed)
    t = cft.fold_test(d, folds, eps0, merge)
    return {
        **t,
        "lower": cft.fold_lower_bound(d, folds, alpha, merge),
        "method": f"exact (Berger-Boos) per fold, {len(t['fold_p'])} folds merged by {merge}",
        "n": int(len(d)),
    }


def _upper(d: np.ndarray, folds: np.ndarray | None, alpha: float, merge: str) -> float:
    """One-sided 1 - alpha upper bound: minus the lower bound of -d (same test)."""
    d = -np.asarray(d, dtype=float)
    if folds is None:
        return -cft.lower_bound(d, alpha)
    return -cft.fold_lower_bound(d, folds, alpha, merge)


def _mde(sizes: list[int], share: float, eps0: float, merge: str) -> float | None:
    return cft.fold_min_detectable_eps(sizes, share, eps0, POWER, merge)


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
    folds: np.ndarray | None = None,
    merge: str = MERGE,
    chosen: list[str] | None = None,
) -> dict[str, Any]:
    """Steps 2-5 on out-of-fold contributions ``d`` (one per prompt, in {-1, 0, 1}) whose
    folds are ``folds`` (None: one independent sample, no cross-fitting). ``chosen``: the
    candidate that scored each fold (the selected adversary; None: the stack scored every
    fold); the primary record then names it per fold and the fold whose test decided."""
    d = np.asarray(d, dtype=float)
    cats = np.asarray(categories).astype(str)
    names = sorted(set(cats.tolist()))
    fl = None if folds is None else np.asarray(folds)

    def part(m: np.ndarray) -> np.ndarray | None:
        return None if fl is None else fl[m]

    def sizes(m: np.ndarray) -> list[int]:
        f = np.zeros(int(m.sum()), dtype=int) if fl is None else fl[m]
        return [int((f == k).sum()) for k in sorted(set(f.tolist()))]

    overall = _test(d, fl, eps0, alpha, merge, seed)
    rows = []
    for j, c in enumerate(names):
        m = cats == c
        t = _test(d[m], part(m), eps0, alpha, merge, seed + j + 1)
        # The category's share when the overall test does not reject (fixed sequence:
        # none, so its share once the overall test has rejected).
        share = alpha * ((1 - PRIMARY_WEIGHT) if PRIMARY_WEIGHT < 1 else 1.0) / len(names)
        mde = _mde(sizes(m), share, eps0, merge)
        rows.append(
            {
                "category": c,
                "eps": _est(d[m], n_bootstrap, seed + j + 1),
                "lower": t["lower"],
                "upper": _upper(d[m], part(m), alpha, merge),
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
        "adversary": "selected" if chosen else "stack",
        "eps": _est(d, n_bootstrap, seed),
        "lower": overall["lower"],
        "upper": _upper(d, fl, alpha, merge),
        "p": overall["p"],
        "fold_p": overall.get("fold_p"),
        "method": overall["method"],
        "p_holm": p_holm,
        "rejected": bool(p_holm < alpha),
    }
    adversary = "stack"
    if chosen:
        primary["chosen"] = list(chosen)
        fold_p = primary["fold_p"] or []
        if fold_p and fl is not None and len(chosen) == len(fold_p):
            ks = sorted(set(fl.tolist()))
            j = int(np.argmin(fold_p))  # Bonferroni: the smallest fold p is the merged one
            primary["decided_by"] = {
                "fold": int(ks[j]),
                "candidate": chosen[j],
                "p": float(fold_p[j]),
                "n": int((fl == ks[j]).sum()),
            }
        adversary = f"selected adversary ({describe_choice(chosen)})"
    base_rows = {
        name: {**_est(b, n_bootstrap, seed), "upper": _upper(b, fl, alpha, merge)}
        for name, b in (base or {}).items()
    }
    found = [r["category"] for r in rows if r["significant"]]
    e = primary["eps"]
    head = (
        f"cross-fitted {adversary} eps {e['value']:.2f} (lower bound {primary['lower']:.2f}, "
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
    n_folds: int = VERDICT_FOLDS,
    context: Any = None,
    merge: str = MERGE,
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
        f"cross-fitted selected adversary ({n_folds} folds over all {len(cats)} prompts): "
        "each fold scored by the strongest, on the other folds (out of fold there), of the "
        f"nested stack over {', '.join(a.name for a in used) or 'no base adversary'} + "
        "length/format features, each base adversary and each one-feature rule; "
        "exact test of H0 eps <= eps0 in each fold, the folds merged by "
        f"{merge} (valid under any dependence between folds), overall and per category; "
        f"weighted Holm (overall {PRIMARY_WEIGHT:g}, categories {1 - PRIMARY_WEIGHT:g} shared)"
    )
    test_eps0 = 0.0 if data.role == "null" else eps0
    res = decide_crossfit(
        cf.d,
        cats,
        test_eps0,
        alpha,
        cf.base,
        n_bootstrap,
        seed,
        folds=cf.folds,
        merge=merge,
        chosen=cf.chosen,
    )
    _record_selection(res, cf, test_eps0, alpha, merge, n_bootstrap, seed)
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


def _record_selection(
    res: dict[str, Any],
    cf: Any,
    eps0: float,
    alpha: float,
    merge: str,
    n_bootstrap: int,
    seed: int,
) -> None:
    """Why each fold's candidate was chosen, and the stack alone beside the decision.

    ``selection``: per fold, the chosen candidate and every candidate's training statistic
    S / sqrt(m) (out of fold on the training folds). ``stack``: the stack on every fold
    with its own per-fold exact test, outside the family (descriptive).
    """
    ks = sorted(set(np.asarray(cf.folds).tolist()))
    res["selection"] = [
        {"fold": int(k), "chosen": c, "train_stat": st}
        for k, c, st in zip(ks, cf.chosen, cf.train_stat, strict=False)
    ]
    if cf.stack is not None:
        t = _test(cf.stack, np.asarray(cf.folds), eps0, alpha, merge, seed)
        res["stack"] = {**_est(cf.stack, n_bootstrap, seed), "p": t["p"], "lower": t["lower"]}


def describe_choice(chosen: list[str]) -> str:
    """Fold by fold, the candidate that scored it: "fold 1 rule n_exclaims, fold 2 stack"."""
    return ", ".join(f"fold {k + 1} {c.replace('rule:', 'rule ')}" for k, c in enumerate(chosen))


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
    # The candidate whose fold's test decided (old records: the stack decided every fold).
    decided = (cf["primary"].get("decided_by") or {}).get("candidate", "stack")
    out["broken_by"] = decided if cf["primary"]["rejected"] else None
    if "calibration" in cf:
        if sweep.get("calibration") is not None:
            out["sweep_calibration"] = sweep["calibration"]
        out["calibration"] = cf["calibration"]
    return out


__all__ = [
    "MERGE",
    "PRIMARY_WEIGHT",
    "VERDICT_FOLDS",
    "adopt_crossfit",
    "crossfit_verdict",
    "decide_crossfit",
]
