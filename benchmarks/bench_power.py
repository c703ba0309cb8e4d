"""Power and A/A false-positive rate of bbi's tests on planted synthetic sets, side by side.

For each planted design (a broad artifact in every category, a one-category artifact, a
pure length shift) and each size (prompts per category; every prompt is answered once by
each model, so responses per model = prompts), repeated ``--reps`` times with fresh data:

* ``verdict``: bbi's verdict, the cross-fitted stacked adversary with its exact test
  (p-values doubled for cross-fold dependence) and the category family
  (``discriminators.verdict_cf``), "distinguishable" at eps0 = 0;
* ``mmd``: the ``mmd`` two-sample test (k-spectrum string kernel, no embeddings) on the
  same responses;
* ``rule``: the best one-feature rule, made a valid test by Bonferroni over the 30
  cross-fitted surface-feature rules (exact test of each).

Every method tests equality (eps0 = 0, alpha 0.05), the question Model Equality Testing
asks. Prints power per size, the responses per model needed for power 0.8 (the smallest
size on the grid), and the A/A false-positive rate (teacher vs an independent resample).

    python benchmarks/bench_power.py [--reps 10] [--sizes 10,20,40,80] [--adversaries surface,tfidf]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bbi import crossfit as cft  # noqa: E402
from discriminators import synthetic  # noqa: E402
from discriminators.base import get_adversary  # noqa: E402
from discriminators.comparison import load_comparison  # noqa: E402
from discriminators.crossfit import comparison_items, crossfit  # noqa: E402
from discriminators.verdict_cf import decide_crossfit  # noqa: E402

ALPHA = 0.05
DESIGNS = {
    "broad": {"categories": list(synthetic.CATEGORIES), "rate": 0.15, "artifact": "signoff"},
    "one-category": {"categories": ["style_format"], "rate": 0.6, "artifact": "signoff"},
    "length": {"categories": list(synthetic.CATEGORIES), "rate": 0.3, "artifact": "longer"},
}


def one(data, advs: list[str], seed: int) -> dict[str, bool]:
    """Whether each method rejects equality on one comparison."""
    prompts, items = comparison_items(data)
    cats = prompts["category"].astype(str).to_numpy()
    cf = crossfit([get_adversary(a) for a in advs], items, cats, seed=seed)
    verdict = decide_crossfit(cf.d, cats, 0.0, ALPHA, n_bootstrap=100, seed=seed)
    rule_p = min(1.0, len(cf.rules) * min(cft.ternary_test(d, 0.0) for d in cf.rules.values()))
    mmd = get_adversary("mmd", kernel="kspectrum", n_permutations=200)
    res = mmd.two_sample(
        items.iloc[0::2].reset_index(drop=True),
        items.iloc[1::2].reset_index(drop=True),
        np.random.default_rng(seed),
    )
    return {
        "verdict": verdict["status"] == "distinguishable",
        "mmd": float(res["p"]) < ALPHA,
        "rule": rule_p < ALPHA,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--sizes", default="10,20,40,80", help="prompts per category (10 categories)")
    ap.add_argument("--adversaries", default="surface,tfidf")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    advs = args.adversaries.split(",")
    methods = ("verdict", "mmd", "rule")
    power = {d: {m: {} for m in methods} for d in DESIGNS}
    aa = {m: [] for m in methods}
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        for size in sizes:
            for rep in range(args.reps):
                with tempfile.TemporaryDirectory() as tmp:
                    run = synthetic.make_run(
                        tmp, n_per_category=size, students=dict(DESIGNS), seed=1000 * size + rep
                    )
                    for name in DESIGNS:
                        got = one(load_comparison(run, name), advs, rep)
                        for m in methods:
                            power[name][m].setdefault(size, []).append(got[m])
                    got = one(load_comparison(run, "teacher_null"), advs, rep)
                    for m in methods:
                        aa[m].append(got[m])
            print(f"# size {size} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    n_resp = [10 * s for s in sizes]
    print(f"\nPower (reps = {args.reps}, alpha = {ALPHA}, base adversaries: {', '.join(advs)})")
    print("design        method    " + "  ".join(f"{n:>6}" for n in n_resp) + "   n(0.8)")
    for name in DESIGNS:
        for m in methods:
            rates = [float(np.mean(power[name][m][s])) for s in sizes]
            need = next((n for n, r in zip(n_resp, rates, strict=True) if r >= 0.8), None)
            print(
                f"{name:<13} {m:<8} "
                + "  ".join(f"{r:6.2f}" for r in rates)
                + f"   {need if need else '> ' + str(n_resp[-1])}"
            )
    print(f"\nA/A false-positive rate over {len(aa['verdict'])} comparisons:")
    for m in methods:
        print(f"  {m:<8} {np.mean(aa[m]):.3f}")


if __name__ == "__main__":
    main()
