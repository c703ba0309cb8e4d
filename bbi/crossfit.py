"""Fixed-sample tests of a distinguishing advantage: exact, with the tolerance eps0 handled.

The verdict asks one fixed-sample question: given n prompts, each with a contribution
``d_i`` in {-1, 0, 1} (+1: the adversary told the two responses apart correctly, -1:
wrongly, 0: tie or abstention), is the advantage ``eps = E[d] = p+ - p-`` larger than a
tolerance eps0? The anytime-valid betting test (``bbi.stats.betting_test``) answers it at
any stopping time and pays for that in power; a fixed sample deserves an exact test.

**The test** (:func:`ternary_test`). The null H0: eps <= eps0 is composite: it fixes
neither ``r = P(d != 0)`` nor where below eps0 the truth lies. Write S = #(+1) - #(-1).

* For a fixed ``r`` the null distribution that makes large S most likely puts the most
  mass allowed on +1: ``p+ = min(r, (r + eps0) / 2)``, ``p- = r - p+`` (moving mass from
  -1 to +1 raises S stochastically), so the supremum over H0 is a supremum over r alone.
* Maximising over every r in [0, 1] would let r = 1 (no ties) dictate the p-value even
  when most prompts are ties, which wastes power. Berger and Boos (1994): take a
  1 - gamma Clopper-Pearson interval for r from m = #(d != 0) ~ Binomial(n, r),
  maximise over r in it and add gamma. ``p = gamma + sup_{r in CI} P_r(T >= t_obs)`` is
  a valid p-value for every null distribution (exact, no asymptotics, no Monte-Carlo);
  ``P_r`` is computed exactly (m ~ Binomial(n, r), then #(+1) | m ~ Binomial(m, p+/r)),
  the supremum on a fine grid of r refined around its best point.
* At eps0 = 0 with exchangeable labels this is a sign-flip test; the unconditional form
  is used at every eps0 so that one family of tests is inverted into the interval that is
  reported with the decision (:func:`lower_bound`): a decision "eps > eps0" is made
  exactly when the reported lower bound exceeds eps0 (one test, one interval).

**Cross-fitted contributions** are independent within a fold given the other folds, not
across folds, so they are tested one fold at a time and the K p-values merged by a rule
valid under any dependence (:func:`fold_test`, :func:`merge_p`), with the bound that
inverts the merged test (:func:`fold_lower_bound`).

Contributions that are not in {-1, 0, 1} (means over seeds) fall back to a Monte-Carlo
sign-flip test at eps0 = 0 (exact under exchangeable labels) and to the betting test
otherwise (valid, conservative), see :func:`fixed_sample_test`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from bbi import stats
from bbi.errors import BbiError

GAMMA = 1e-4  # Berger-Boos: the share of alpha spent on not knowing the tie rate
_GRID = 48


def is_ternary(d: np.ndarray) -> bool:
    """Whether every contribution is -1, 0 or 1 (one adversary, one seed)."""
    d = np.asarray(d, dtype=float)
    return bool(len(d)) and bool(np.all(np.isin(d, (-1.0, 0.0, 1.0))))


def _statistic(n_plus: np.ndarray, m: np.ndarray, n: int, eps0: float) -> np.ndarray:
    """T = (S - n eps0) / sqrt(max(m, 1)), S = 2 #(+1) - m: studentised by the count of
    non-ties, so the rejection region adapts to the tie rate (at eps0 = 0 it is the sign
    test's z at every m) instead of being dictated by the tie-free worst case."""
    return (2.0 * n_plus - m - n * eps0) / np.sqrt(np.maximum(m, 1))


def _need(n: int, t_obs: float, eps0: float) -> np.ndarray:
    """For each m = 0..n, the smallest #(+1) with T >= t_obs (T is increasing in #(+1))."""
    m = np.arange(n + 1)
    a = np.ceil((t_obs * np.sqrt(np.maximum(m, 1)) + m + n * eps0) / 2.0 - 1e-9)
    # Guard the floating-point edge: step down while a - 1 still reaches t_obs.
    a = np.where(_statistic(a - 1, m, n, eps0) >= t_obs - 1e-12, a - 1, a)
    return np.maximum(a, 0.0)


def _window(n: int, lo: float, hi: float) -> np.ndarray:
    """The counts m that carry Binomial(n, r) mass above ~1e-15 for some r in [lo, hi]."""
    a = n * lo - 9 * np.sqrt(n * lo * (1 - lo)) - 5
    b = n * hi + 9 * np.sqrt(n * hi * (1 - hi)) + 5
    return np.arange(max(0, int(np.floor(a))), min(n, int(np.ceil(b))) + 1)


def _tail(n: int, need: np.ndarray, eps0: float, rs: np.ndarray, ms: np.ndarray) -> np.ndarray:
    """P_r(T >= t_obs) for each r in ``rs`` at the least favourable null point of that r;
    ``need[m]`` is the smallest #(+1) that reaches t_obs given m non-ties, summed over
    the counts ``ms`` (a window holding all but ~1e-15 of the mass)."""
    rs = np.clip(np.asarray(rs, dtype=float), 0.0, 1.0)
    need = need[ms]
    m = ms[None, :]
    p_plus = np.minimum(rs, (rs + eps0) / 2.0)
    valid = p_plus >= 0  # below -eps0 no null distribution has this tie rate
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(rs > 0, np.clip(p_plus / np.where(rs > 0, rs, 1.0), 0.0, 1.0), 0.5)
    w = sps.binom.pmf(m, n, rs[:, None])
    cond = sps.binom.sf(need[None, :] - 1, m, q[:, None])
    cond = np.where(need[None, :] <= 0, 1.0, cond)
    out = np.sum(w * cond, axis=1)
    return np.where(valid, out, 0.0)


def ternary_p(n_plus: int, n_minus: int, n: int, eps0: float, gamma: float = GAMMA) -> float:
    """Exact Berger-Boos p-value of H0: E[d] <= eps0 from the counts of +1 and -1."""
    if n < 1:
        raise BbiError("no contributions to test")
    if not -1 < eps0 < 1:
        raise BbiError(f"eps0 must be in (-1, 1), got {eps0}")
    m = int(n_plus) + int(n_minus)
    need = _need(n, float(_statistic(np.array(n_plus), np.array(m), n, eps0)), eps0)
    a = gamma / 2
    lo = 0.0 if m == 0 else float(sps.beta.ppf(a, m, n - m + 1))
    hi = 1.0 if m == n else float(sps.beta.ppf(1 - a, m + 1, n - m))
    lo = max(lo, max(0.0, -eps0))  # below -eps0 no null distribution exists
    if lo > hi:  # no null distribution fits the data's tie rate: the sup is over nothing
        return float(gamma)
    rs = np.linspace(lo, hi, _GRID)
    ms = _window(n, lo, hi)
    tails = _tail(n, need, eps0, rs, ms)
    j = int(np.argmax(tails))
    # Refine around the best grid point (the tail is smooth in r).
    fine = np.linspace(rs[max(j - 1, 0)], rs[min(j + 1, len(rs) - 1)], 17)
    best = max(float(tails.max()), float(_tail(n, need, eps0, fine, ms).max()))
    return float(min(1.0, best + gamma))


def ternary_test(d: np.ndarray, eps0: float = 0.0, gamma: float = GAMMA) -> float:
    """:func:`ternary_p` for contributions in {-1, 0, 1}."""
    d = np.asarray(d, dtype=float)
    if not is_ternary(d):
        raise BbiError("the exact test needs contributions in {-1, 0, 1}")
    return ternary_p(int((d > 0).sum()), int((d < 0).sum()), len(d), eps0, gamma)


def _invert(pvalue, alpha: float) -> float:
    """``inf{eps0 : pvalue(eps0) >= alpha}`` by bisection (``pvalue`` grows with eps0):
    the one-sided 1 - alpha lower confidence bound of the test ``pvalue``."""
    lo, hi = -0.9999, 0.9999
    if pvalue(lo) >= alpha:
        return -1.0
    if pvalue(hi) < alpha:
        return 1.0
    while hi - lo > 5e-4:
        mid = (lo + hi) / 2
        if pvalue(mid) < alpha:
            lo = mid
        else:
            hi = mid
    return float(lo)


def lower_bound(d: np.ndarray, alpha: float = 0.05, gamma: float = GAMMA) -> float:
    """One-sided 1 - alpha lower confidence bound for eps, by inverting :func:`ternary_test`.

    ``L = inf{eps0 : p(eps0) >= alpha}`` (bisection; p grows with eps0), so the test
    rejects H0: eps <= eps0 exactly when eps0 < L, up to the bisection tolerance 5e-4:
    the interval [L, 1] belongs to the test that decided.
    """
    d = np.asarray(d, dtype=float)
    n_plus, n_minus, n = int((d > 0).sum()), int((d < 0).sum()), len(d)
    return _invert(lambda e: ternary_p(n_plus, n_minus, n, e, gamma), alpha)


# ---- cross-fitted contributions: one exact test per fold, merged -------------------------

MERGES = ("bonferroni", "mean", "harmonic")


def merge_p(ps: Sequence[float], merge: str = "bonferroni") -> float:
    """One p-value from K p-values of unknown dependence, valid whatever the dependence.

    ``bonferroni``: K min p. ``mean``: twice the arithmetic mean (Rueschendorf 1982;
    Vovk and Wang 2020, "Combining p-values via averaging"; the factor 2 cannot be
    lowered for K >= 2 under arbitrary dependence). ``harmonic``: e log K times the
    harmonic mean (Vovk and Wang 2020, valid for K >= 3; for K = 2 Bonferroni, which then
    dominates it). One p-value is returned as it is. Each rule is monotone in every p, so
    tests merged by it invert into confidence bounds.
    """
    p = np.asarray(list(ps), dtype=float)
    if not len(p):
        raise BbiError("no p-values to merge")
    if merge not in MERGES:
        raise BbiError(f"unknown merge {merge!r}; one of {', '.join(MERGES)}")
    k = len(p)
    if k == 1:
        return float(min(1.0, p[0]))
    if merge == "mean":
        v = 2.0 * float(p.mean())
    elif merge == "harmonic" and k >= 3:
        v = float(np.e * np.log(k) / np.mean(1.0 / np.maximum(p, 1e-300)))
    else:
        v = k * float(p.min())
    return float(min(1.0, v))


def _fold_counts(d: np.ndarray, folds: np.ndarray) -> list[tuple[int, int, int]]:
    """(#(+1), #(-1), n) of every fold that holds contributions."""
    d = np.asarray(d, dtype=float)
    folds = np.asarray(folds)
    if d.shape != folds.shape:
        raise BbiError(f"{len(d)} contributions but {len(folds)} fold labels")
    if not is_ternary(d):
        raise BbiError("the per-fold exact test needs contributions in {-1, 0, 1}")
    out = []
    for k in sorted(set(folds.tolist())):
        x = d[folds == k]
        out.append((int((x > 0).sum()), int((x < 0).sum()), int(len(x))))
    return out


def fold_test(
    d: np.ndarray,
    folds: np.ndarray,
    eps0: float = 0.0,
    merge: str = "bonferroni",
    gamma: float = GAMMA,
) -> dict[str, Any]:
    """The exact test of H0: eps <= eps0 on cross-fitted contributions: one exact test
    per fold (:func:`ternary_p`), merged by :func:`merge_p`.

    Why it is valid: everything that scores fold k (models, stack, abstention margin) is
    a function of the other folds only, so given them fold k's contributions are
    independent draws with mean at most eps0 under H0 and the fold's test is exact. The
    K fold p-values are dependent (each fold's labels train the others' models) in a way
    nobody models, so they are merged by a rule valid under arbitrary dependence.
    """
    counts = _fold_counts(d, folds)
    ps = [ternary_p(a, b, n, eps0, gamma) for a, b, n in counts]
    return {
        "p": merge_p(ps, merge),
        "fold_p": [float(x) for x in ps],
        "fold_n": [n for _, _, n in counts],
    }


def fold_lower_bound(
    d: np.ndarray,
    folds: np.ndarray,
    alpha: float = 0.05,
    merge: str = "bonferroni",
    gamma: float = GAMMA,
) -> float:
    """The 1 - alpha lower confidence bound that inverts :func:`fold_test`: it rejects
    H0: eps <= eps0 exactly when eps0 is below it (each fold's p grows with eps0 and the
    merge is monotone), so the reported interval is the deciding test's."""
    counts = _fold_counts(d, folds)

    def p(e: float) -> float:
        return merge_p([ternary_p(a, b, n, e, gamma) for a, b, n in counts], merge)

    return _invert(p, alpha)


def fixed_sample_test(
    d: np.ndarray,
    eps0: float = 0.0,
    alpha: float = 0.05,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """The fixed-sample test of H0: E[d] <= eps0, the most powerful valid one available.

    ``d`` in {-1, 0, 1}: exact (:func:`ternary_test`) with its lower bound. Otherwise
    (seed means) a Monte-Carlo sign-flip at eps0 = 0 (exact under exchangeable labels,
    ``n_permutations`` draws) and the betting test for eps0 > 0, whose shifted
    contributions are not symmetric under H0, so a sign-flip of ``d - eps0`` would not be
    valid at small n.
    """
    d = np.asarray(d, dtype=float)
    if d.ndim != 1 or not len(d):
        raise BbiError("no contributions for the fixed-sample test")
    if is_ternary(d):
        return {
            "p": ternary_test(d, eps0),
            "lower": lower_bound(d, alpha),
            "method": "exact (Berger-Boos)",
            "n": int(len(d)),
        }
    if eps0 == 0:
        p = stats.permutation_p(d, n_permutations, seed)
        return {"p": p, "lower": None, "method": "sign-flip", "n": int(len(d))}
    p = stats.betting_test(d, eps0, alpha, seed=seed)["p"]
    return {"p": p, "lower": None, "method": "betting", "n": int(len(d))}


def min_detectable_eps(
    n: int, alpha: float, eps0: float = 0.0, power: float = 0.8, gamma: float = GAMMA
) -> float | None:
    """The smallest eps that :func:`ternary_test` at level ``alpha`` detects with ``power``
    on ``n`` prompts in the most favourable case (no wrong answers: d in {0, 1}).

    Every smaller eps is missed more often than 1 - power whatever the adversary, so a
    category with this few prompts cannot show an advantage below it. ``None`` when even
    d = 1 on every prompt would not reject (too few prompts to detect anything).
    """
    if n < 1:
        return None
    if ternary_p(n, 0, n, eps0, gamma) >= alpha:
        return None
    lo, hi = 0, n  # smallest count of +1 that rejects, by bisection (p falls with it)
    while lo < hi:
        mid = (lo + hi) // 2
        if ternary_p(mid, 0, n, eps0, gamma) < alpha:
            hi = mid
        else:
            lo = mid + 1
    a_star = lo
    # P(Binomial(n, eps) >= a_star) = power  <=>  eps = Beta quantile.
    return float(sps.beta.ppf(power, a_star, n - a_star + 1))


def _least_rejecting(n: int, level: float, eps0: float, gamma: float) -> int | None:
    """The smallest count of +1 among n contributions (no -1) that :func:`ternary_p`
    rejects at ``level``; None when even n of them do not."""
    if ternary_p(n, 0, n, eps0, gamma) >= level:
        return None
    lo, hi = 0, n  # p falls as the count grows
    while lo < hi:
        mid = (lo + hi) // 2
        if ternary_p(mid, 0, n, eps0, gamma) < level:
            hi = mid
        else:
            lo = mid + 1
    return lo


def fold_min_detectable_eps(
    sizes: Sequence[int],
    alpha: float,
    eps0: float = 0.0,
    power: float = 0.8,
    merge: str = "bonferroni",
    gamma: float = GAMMA,
) -> float | None:
    """:func:`min_detectable_eps` of :func:`fold_test` on folds of ``sizes`` prompts: the
    smallest eps it detects with ``power`` in the most favourable case (d in {0, 1}).

    Exact for ``bonferroni`` (it rejects when some fold rejects at alpha / K, and folds
    of contributions in {0, 1} with a fixed eps are independent). For the other merges a
    power bound gives a lower bound on it (the note "too few prompts to detect eps <= x"
    stays true): ``mean`` rejects only if every fold's p is below K alpha / 2,
    ``harmonic`` only if some fold's p is below alpha / (e log K). None when even d = 1
    everywhere cannot reject.
    """
    sizes = [int(n) for n in sizes if int(n) > 0]
    if not sizes:
        return None
    k = len(sizes)
    if k == 1:
        return min_detectable_eps(sizes[0], alpha, eps0, power, gamma)
    if merge not in MERGES:
        raise BbiError(f"unknown merge {merge!r}; one of {', '.join(MERGES)}")
    every = merge == "mean"
    level = {
        "bonferroni": alpha / k,
        "mean": k * alpha / 2,
        "harmonic": alpha / (np.e * np.log(k)) if k >= 3 else alpha / k,
    }[merge]
    need = [_least_rejecting(n, level, eps0, gamma) for n in sizes]
    if (every and None in need) or all(a is None for a in need):
        return None

    def rejects(eps: float) -> float:
        hit = [
            0.0 if a is None else float(sps.binom.sf(a - 1, n, eps))
            for a, n in zip(need, sizes, strict=True)
        ]
        return float(np.prod(hit)) if every else 1.0 - float(np.prod(1.0 - np.array(hit)))

    if rejects(1.0) < power:
        return None
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if rejects(mid) >= power else (mid, hi)
    return float(hi)


def family(
    primary_p: float, category_ps: Sequence[float], alpha: float, primary_weight: float = 0.5
) -> tuple[float, np.ndarray]:
    """Holm-adjusted p of the primary and of each category in one graphical family.

    The primary test gets ``primary_weight`` of alpha, the categories share the rest;
    a rejected hypothesis passes its weight on to the others (weighted Holm, a closed
    testing procedure with weighted-Bonferroni local tests), so once the overall test
    rejects, the categories are tested by Holm at the full alpha, and a one-category
    artifact too diluted for the overall test is still found at alpha (1 - w) / C.
    """
    ps = [float(primary_p), *map(float, category_ps)]
    c = len(ps) - 1
    if primary_weight >= 1.0:  # fixed sequence: categories only once the overall test rejects
        cat = stats.holm(ps[1:], [1.0] * c) if c else np.zeros(0)
        return float(ps[0]), np.maximum(cat, ps[0])
    weights = [primary_weight] + [(1 - primary_weight) / c] * c if c else [1.0]
    adj = stats.holm(ps, weights)
    return float(adj[0]), adj[1:]


__all__ = [
    "GAMMA",
    "MERGES",
    "family",
    "fixed_sample_test",
    "fold_lower_bound",
    "fold_min_detectable_eps",
    "fold_test",
    "is_ternary",
    "lower_bound",
    "merge_p",
    "min_detectable_eps",
    "ternary_p",
    "ternary_test",
]
