"""Exact A/A comparisons from a real run's responses: how often would an A/A rule fail?

Swaps the teacher's and the other model's response within each prompt at random (train
and test alike, the run's own split kept) and runs the split sweep's full-budget point of
each adversary, R times. Every swapped comparison is an exact A/A null with the run's own
texts, lengths, ties and split, so the rates printed are the false-alarm rates of:

- each adversary's 95% eps CI missing 0 (below / above),
- "no adversary's CI excludes 0" over the adversaries given,
- the Holm family of exact two-sided sign tests (benchmarks/bench_engine.py ``aa_family``).

    python benchmarks/bench_aa_swap.py RUN_DIR [--other engine] [--adversaries surface,tfidf]
        [--reps 200]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--other", default="engine")
    ap.add_argument("--adversaries", default="surface,tfidf,pairwise")
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    from bench_engine import aa_family

    from bbi.config import AttackSettings
    from bbi.runstore import RunDir
    from discriminators.base import get_adversary
    from discriminators.comparison import comparison_from_paired
    from discriminators.evaluate import Evaluator, run_point

    names = args.adversaries.split(",")
    paired = RunDir(args.run_dir).paired(args.other)
    cfg = AttackSettings(test_queries=[1], n_bootstrap=500, n_permutations=200)
    eps = {n: [] for n in names}
    below = {n: 0 for n in names}
    above = {n: 0 for n in names}
    any_ci = family = 0
    for r in range(args.reps):
        swap = np.random.default_rng([r, 5]).random(len(paired)) < 0.5
        p = paired.copy()
        t, o = p["teacher"].to_numpy(), p["other"].to_numpy()
        p["teacher"], p["other"] = np.where(swap, o, t), np.where(swap, t, o)
        data = comparison_from_paired(p, args.other)
        ev = Evaluator(data, cfg)
        items = pd.concat([data.train_items, data.test_items], ignore_index=True)
        bought = np.arange(len(data.train))
        d, missed = {}, False
        for n in names:
            adv = get_adversary(n)
            adv.prepare(items)
            res = run_point(adv, data, ev, bought, 2 * len(bought), 0)
            e = res.record["eps"]
            eps[n].append(e["value"])
            below[n] += e["ci"][1] < 0
            above[n] += e["ci"][0] > 0
            missed |= e["ci"][1] < 0 or e["ci"][0] > 0
            d[n] = res.d
        any_ci += missed
        family += any(f["rejected"] for f in aa_family(d).values())
    print(f"# {args.run_dir} vs {args.other}: {args.reps} label-swapped A/A comparisons")
    for n in names:
        v = np.asarray(eps[n])
        print(
            f"{n:<10} eps mean {v.mean():+.4f} sd {v.std():.3f} min {v.min():+.3f}; CI below 0 "
            f"{below[n]}/{args.reps}, above 0 {above[n]}/{args.reps}"
        )
    print(f"some CI excludes 0: {any_ci}/{args.reps}; Holm sign-test family: {family}/{args.reps}")


if __name__ == "__main__":
    main()
