"""Power, A/A false-positive rate and category recall/precision of the verdict's tests on
planted synthetic sets, side by side on the same responses.

For each planted design (a broad artifact in every category, a one-category artifact, a
pure length shift) and each size (prompts per category; every prompt is answered once by
each model, so responses per model = prompts), repeated ``--reps`` times with fresh data,
every method tests equality (eps0 = 0, alpha 0.05) with its category family (weighted
Holm, overall 1/2 and categories 1/2 shared unless said otherwise) and counts as
"distinguishable" when anything in the family rejects:

* ``split``: the select-then-confirm verdict of the budget sweep (``bbi attack
  --decision split``; here one budget, the whole train split, random strategy, one seed,
  k = 1, tolerance 1e-6 since the settings need eps0 > 0): trained on the 80% train split,
  the strongest point selected on half the test prompts, confirmed on the other half by
  the betting test; categories by the betting test on the test split;
* ``select``: the verdict's decision, the cross-fitted selected adversary (each of 2 folds
  scored by the candidate, among the stack, the base adversaries and the one-feature
  rules, strongest on the other fold), one exact test per fold merged by Bonferroni,
  weighted Holm with the verdict's ``PRIMARY_WEIGHT``; ``select w=0.5`` / ``select w=1``
  the same with the overall weight 1/2 or the fixed sequence, ``select w=0.5 g=1e-3``
  also with the earlier Berger-Boos gamma (what each change contributes);
* ``folds K=2 bonf`` (the earlier decision: the stack on every fold, gamma 1e-3, weight
  1/2) / ``folds K=5 bonf|mean|harm``: the cross-fitted stack (K folds over
  every prompt) tested by one exact test per fold, merged by Bonferroni, twice the mean
  or e log K times the harmonic mean (``bbi.crossfit.fold_test``: valid under any
  dependence between folds, proved);
* ``pooled K=5 x2``: the exact test on the pooled out-of-fold contributions with every
  p-value doubled (the earlier measured-only correction; not proved), and ``pooled K=5``
  uncorrected (not valid: shown for its A/A rate);
* ``rule``: the best one-feature rule, Bonferroni over the 30 surface rules cross-fitted in
  5 folds, the exact test on the pooled contributions (``rule g=1e-3``: the earlier gamma);
* ``mmd`` (with ``--mmd``): the k-spectrum two-sample test, 200 permutations;
* ``equality`` (with ``--mmd``): the verdict's equality claim
  (``discriminators.equality``: k-spectrum and Hamming MMD, paired by prompt on every
  prompt, 1,000 within-prompt swaps, Holm over the two). Its null is P_teacher = P_other,
  which every design here violates and every A/A comparison satisfies.

``--methods`` restricts the run to some of them (the others are not computed).

The candidate each fold of ``select`` chose is counted per design and size.

Category recall and precision (planted: style_format for one-category, every category
for broad and length) are counted over the repeats of each design and size; on the A/A
comparisons every named category is a false discovery.

    python benchmarks/bench_power.py [--reps 10] [--sizes 10,20,40,80] [--adversaries surface,tfidf]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from unittest import mock

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bbi import crossfit as cft  # noqa: E402
from bbi import stats  # noqa: E402
from bbi.config import AttackSettings  # noqa: E402
from bbi.errors import BbiError  # noqa: E402
from discriminators import attack as attack_mod  # noqa: E402
from discriminators import synthetic  # noqa: E402
from discriminators.base import get_adversary  # noqa: E402
from discriminators.comparison import load_comparison  # noqa: E402
from discriminators.crossfit import comparison_items, crossfit, one_feature_rules  # noqa: E402
from discriminators.equality import equality_tests  # noqa: E402
from discriminators.surface import surface_features  # noqa: E402
from discriminators.verdict_cf import MERGE, PRIMARY_WEIGHT  # noqa: E402

ALPHA = 0.05
DESIGNS = {
    "broad": {"categories": list(synthetic.CATEGORIES), "rate": 0.15, "artifact": "signoff"},
    "one-category": {"categories": ["style_format"], "rate": 0.6, "artifact": "signoff"},
    "length": {"categories": list(synthetic.CATEGORIES), "rate": 0.3, "artifact": "longer"},
}
OLD_GAMMA = 1e-3  # the exact test's Berger-Boos gamma before the selected adversary
METHODS = (
    "split",
    "select",
    "select w=0.5",
    "select w=0.5 g=1e-3",
    "select w=1",
    "folds K=2 bonf",
    "folds K=5 bonf",
    "folds K=5 mean",
    "folds K=5 harm",
    "pooled K=5 x2",
    "pooled K=5",
    "rule",
    "rule g=1e-3",
)


def family(
    d: np.ndarray,
    cats: np.ndarray,
    folds: np.ndarray | None,
    merge: str,
    factor: float = 1.0,
    gamma: float = cft.GAMMA,
    weight: float = 0.5,
) -> list[str]:
    """The decision of ``discriminators.verdict_cf.decide_crossfit`` at eps0 = 0 (p-values
    only): what the family rejects, "overall" and the categories named."""

    def p(m: np.ndarray) -> float:
        if folds is None:
            return min(1.0, factor * cft.ternary_test(d[m], 0.0, gamma))
        return cft.fold_test(d[m], folds[m], 0.0, merge, gamma)["p"]

    names = sorted(set(cats.tolist()))
    p_all, adj = cft.family(p(np.ones(len(d), bool)), [p(cats == c) for c in names], ALPHA, weight)
    return (["overall"] if p_all < ALPHA else []) + [
        c for c, a in zip(names, adj, strict=True) if a < ALPHA
    ]


def split_verdict(run, other: str, advs: list[str], seed: int) -> list[str]:
    """What the split (select-then-confirm) verdict rejects on one comparison."""
    n_train = int(load_comparison(run, other).train.shape[0])
    settings = AttackSettings(
        adversaries=advs,
        budgets=[2 * n_train],
        strategies=["random"],
        seeds=1,
        test_queries=[1],
        epsilon=1e-6,
        n_bootstrap=100,
        n_permutations=100,
    )

    def skip(*a, **k):
        raise BbiError("not measured here")

    with mock.patch.object(attack_mod, "crossfit_verdict", skip):
        res = attack_mod.run_attack(run, settings, compare=[other])
    v = res["comparisons"][other]["verdict"]
    rejected = v.get("primary", {}).get("p_holm", 1.0) < ALPHA
    return (["overall"] if rejected else []) + list(v.get("distinguishable_in") or [])


def one(
    run, other: str, advs: list[str], seed: int, methods: tuple[str, ...]
) -> dict[str, list[str]]:
    """What each method rejects on one comparison ("overall" and/or category names), and
    under ``_chosen`` the candidate that scored each fold of the selected adversary."""
    prompts, items = comparison_items(load_comparison(run, other))
    cats = prompts["category"].astype(str).to_numpy()
    out: dict[str, list[str]] = {}
    if any(m.startswith(("folds K=5", "pooled")) for m in methods):
        cf5 = crossfit([get_adversary(a) for a in advs], items, cats, 5, seed, select=False)
        out.update(
            {
                "folds K=5 bonf": family(cf5.d, cats, cf5.folds, "bonferroni"),
                "folds K=5 mean": family(cf5.d, cats, cf5.folds, "mean"),
                "folds K=5 harm": family(cf5.d, cats, cf5.folds, "harmonic"),
                "pooled K=5 x2": family(cf5.d, cats, None, "", 2.0),
                "pooled K=5": family(cf5.d, cats, None, ""),
            }
        )
    if any(m.startswith("rule") for m in methods):  # the 5 folds of the stack's cross-fit
        surf = surface_features(items["response"].astype(str).tolist())
        rules = one_feature_rules(surf[0::2] - surf[1::2], stats.stratified_folds(cats, 5, seed))
        for m, gamma in (("rule", cft.GAMMA), ("rule g=1e-3", OLD_GAMMA)):
            ps = [cft.ternary_test(d, 0.0, gamma) for d in rules.values()]
            out[m] = ["overall"] if len(rules) * min(ps) < ALPHA else []
    if any(m.startswith(("select", "folds K=2")) for m in methods):  # one cross-fit for all
        cf2 = crossfit([get_adversary(a) for a in advs], items, cats, 2, seed)
        out["select"] = family(cf2.d, cats, cf2.folds, MERGE, weight=PRIMARY_WEIGHT)
        for w in (0.5, 1.0):
            out[f"select w={w:g}"] = family(cf2.d, cats, cf2.folds, MERGE, weight=w)
        out["select w=0.5 g=1e-3"] = family(cf2.d, cats, cf2.folds, MERGE, gamma=OLD_GAMMA)
        out["folds K=2 bonf"] = family(cf2.stack, cats, cf2.folds, "bonferroni", gamma=OLD_GAMMA)
        out["_chosen"] = list(cf2.chosen)  # which candidate scored each fold
    if "split" in methods:
        out["split"] = split_verdict(run, other, advs, seed)
    if "mmd" in methods:
        mmd = get_adversary("mmd", kernel="kspectrum", n_permutations=200)
        res = mmd.two_sample(
            items.iloc[0::2].reset_index(drop=True),
            items.iloc[1::2].reset_index(drop=True),
            np.random.default_rng(seed),
        )
        out["mmd"] = ["overall"] if float(res["p"]) < ALPHA else []
    if "equality" in methods:
        eq = equality_tests(
            prompts["teacher"].astype(str).tolist(),
            prompts["other"].astype(str).tolist(),
            ALPHA,
            1000,
            seed,
        )
        out["equality"] = ["overall"] if eq["rejected"] else []
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--sizes", default="10,20,40,80", help="prompts per category (10 categories)")
    ap.add_argument("--adversaries", default="surface,tfidf")
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--mmd", action="store_true", help="also the k-spectrum mmd test")
    ap.add_argument("--no-null", action="store_true", help="skip the A/A comparisons")
    ap.add_argument("--methods", default="", help="comma-separated subset (default: all)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    advs = args.adversaries.split(",")
    designs = {k: DESIGNS[k] for k in args.designs.split(",") if k}
    methods = METHODS + (("mmd", "equality") if args.mmd else ())
    if args.methods:
        wanted = args.methods.split(",")
        unknown = sorted(set(wanted) - set(methods))
        if unknown:
            ap.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(methods)}")
        methods = tuple(m for m in methods if m in wanted)
    found = {d: {m: {} for m in methods} for d in designs}
    aa = {m: [] for m in methods}
    chosen: dict[tuple[str, int], list[str]] = {}
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        for size in sizes:
            for rep in range(args.reps):
                with tempfile.TemporaryDirectory() as tmp:
                    run = synthetic.make_run(
                        tmp, n_per_category=size, students=dict(designs), seed=1000 * size + rep
                    )
                    for name in designs:
                        got = one(run, name, advs, rep, methods)
                        chosen.setdefault((name, size), []).extend(got.get("_chosen", []))
                        for m in methods:
                            found[name][m].setdefault(size, []).append(got[m])
                    if not args.no_null:
                        got = one(run, "teacher_null", advs, rep, methods)
                        chosen.setdefault(("A/A", size), []).extend(got.get("_chosen", []))
                        for m in methods:
                            aa[m].append(got[m])
                print(f"# size {size} rep {rep} ({time.perf_counter() - t0:.0f} s)", flush=True)
    n_resp = [10 * s for s in sizes]
    print(f"\nPower (reps = {args.reps}, alpha = {ALPHA}, base adversaries: {', '.join(advs)})")
    print("design        method           " + "  ".join(f"{n:>6}" for n in n_resp) + "   n(0.8)")
    for name in designs:
        for m in methods:
            rates = [float(np.mean([bool(x) for x in found[name][m][s]])) for s in sizes]
            need = next((n for n, r in zip(n_resp, rates, strict=True) if r >= 0.8), None)
            print(
                f"{name:<13} {m:<16} "
                + "  ".join(f"{r:6.2f}" for r in rates)
                + f"   {need if need else '> ' + str(n_resp[-1])}"
            )
    print("\nCategory recall / precision (counted over repeats; '-' when nothing was named)")
    for name, spec in designs.items():
        planted = set(spec["categories"])
        for m in methods:
            if m.startswith("rule") or m in ("mmd", "equality"):
                continue
            cells = []
            for s in sizes:
                named = [set(x) - {"overall"} for x in found[name][m][s]]
                tp = sum(len(x & planted) for x in named)
                fp = sum(len(x - planted) for x in named)
                rec = tp / (len(planted) * len(named))
                prec = f"{tp / (tp + fp):.2f}" if tp + fp else "   -"
                cells.append(f"{rec:.2f}/{prec}")
            print(f"{name:<13} {m:<16} " + "  ".join(f"{c:>9}" for c in cells))
    if any(chosen.values()):
        print("\nCandidate chosen per fold by the selected adversary (count over folds)")
        for (name, size), got in chosen.items():
            top = ", ".join(f"{c} {k}" for c, k in Counter(got).most_common(4))
            print(f"  {name:<13} {10 * size:>6}: {top}")
    if not args.no_null:
        n = len(aa[methods[0]])
        print(f"\nA/A false-positive rate over {n} comparisons (rate, binomial SE):")
        for m in methods:
            r = float(np.mean([bool(x) for x in aa[m]]))
            print(f"  {m:<16} {r:.3f}  (SE {np.sqrt(max(r * (1 - r), 1e-12) / n):.3f})")


if __name__ == "__main__":
    main()
