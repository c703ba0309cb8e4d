"""Attack sweep speed and statistical efficiency.

1. Speed: the full default sweep (7 budgets x 3 strategies x 5 seeds) with the cheap
   adversaries on a 5,000-prompt run (target <= 120 s on 2 cores). Embedding the responses
   (MiniLM, cached in the run dir) is timed separately: it happens once per run.
2. Efficiency: total queries needed to reach p < 0.05 (median over seeds) for each
   classifier (half the prompts to train, half to test its permutation p) vs the ``mmd``
   two-sample test (all prompts), on a geometric grid of query counts.

Run: python benchmarks/bench_attack.py [--run runs/demo] [--compare student]
     [--adversaries surface,tfidf,embed,pairwise] [--skip-sweep] [--skip-efficiency]
Without --run a synthetic 5,000-prompt run with planted artifacts is generated
(discriminators.synthetic). Prints a table per part with measured / target ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _synthetic(path: Path):
    from discriminators import synthetic

    plant = {
        "categories": ["style_format", "robustness", "domain_technical"],
        "rate": 0.3,
        "artifact": "signoff",
    }
    return synthetic.make_run(
        path, n_per_category=500, test_fraction=0.2, students={"student": plant}, seed=0
    )


def sweep(run, compare: str, adversaries: list[str]) -> dict:
    from bbi.config import AttackSettings
    from discriminators.attack import load_comparison, run_attack

    out = {}
    if any(a in ("embed", "pairwise_embed", "mmd") for a in adversaries):
        t0 = time.perf_counter()
        load_comparison(run, compare, embeddings=True)
        out["embeddings_s"] = time.perf_counter() - t0
    cfg = AttackSettings(adversaries=adversaries)  # defaults: 7 budgets x 3 strategies x 5 seeds
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_attack(run, cfg, compare=[compare])
    out["sweep_s"] = time.perf_counter() - t0
    # CPU seconds of this process: on a shared machine this, not wall time, says what the
    # (single-threaded) sweep costs on 2 free cores.
    out["sweep_cpu_s"] = time.process_time() - c0
    out["result"] = res["comparisons"][compare]
    return out


def efficiency(run, compare: str, adversaries: list[str], seeds: int = 5) -> dict:
    """Smallest total query count with median p < 0.05, per adversary and for mmd."""
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from bbi.config import AttackSettings
    from discriminators import get_adversary
    from discriminators.attack import Evaluator, comparison_from_paired, run_point

    paired = run.paired(compare)
    from bbi.similarity import embeddings_for, prompt_embeddings

    emb = {
        "teacher": embeddings_for(run, run.teacher_alias()),
        "other": embeddings_for(run, compare),
        "prompt": prompt_embeddings(run),
    }
    grid = [20, 40, 80, 160, 320, 640, 1280, 2560]
    cfg = AttackSettings(test_queries=[1], n_bootstrap=50, n_permutations=500)
    found: dict[str, int | None] = {}
    medians: dict[str, list[float]] = {}
    for name in [*adversaries, "mmd"]:
        found[name] = None
        medians[name] = []
        for Q in grid:
            n = Q // 2
            ps = []
            for seed in range(seeds):
                rng = np.random.default_rng([seed, Q])
                sub = paired.iloc[rng.choice(len(paired), size=n, replace=False)].copy()
                if name == "mmd":
                    data = comparison_from_paired(sub.assign(split="train"), compare, emb=emb)
                    X = data.train_items
                    res = get_adversary("mmd", n_permutations=500).two_sample(
                        X.iloc[0::2].reset_index(drop=True),
                        X.iloc[1::2].reset_index(drop=True),
                        np.random.default_rng(seed),
                    )
                    ps.append(res["p"])
                    continue
                split = np.where(np.arange(n) < n // 2, "train", "test")
                data = comparison_from_paired(sub.assign(split=split), compare, emb=emb)
                adv = get_adversary(name)
                adv.prepare(pd.concat([data.train_items, data.test_items], ignore_index=True))
                with threadpool_limits(limits=1):
                    r = run_point(
                        adv,
                        data,
                        Evaluator(data, cfg),
                        np.arange(len(data.pool)),
                        2 * len(data.pool),
                        seed,
                    )
                ps.append(r.record["eps"]["p"])
            med = float(np.median(ps))
            medians[name].append(med)
            if med < 0.05:
                found[name] = Q
                break
    return {"queries_to_p05": found, "grid": grid, "medians": medians}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", type=Path, default=None)
    ap.add_argument("--compare", default="student")
    ap.add_argument("--adversaries", default="surface,tfidf,embed,pairwise")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-efficiency", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bbi.runstore import RunDir

    advs = [a for a in args.adversaries.split(",") if a]
    if args.run is None:
        tmp = Path(tempfile.mkdtemp(prefix="bbi-bench-attack-"))
        t0 = time.perf_counter()
        run = _synthetic(tmp / "synthetic5k")
        print(
            f"generated synthetic 5,000-prompt run in {time.perf_counter() - t0:.1f} s: {run.path}"
        )
    else:
        run = RunDir(args.run)
    print(
        f"python {platform.python_version()} {platform.machine()}, cpus {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    if not args.skip_sweep:
        out = sweep(run, args.compare, advs)
        print("\n## sweep: 7 budgets x 3 strategies x 5 seeds")
        print(
            "| adversaries | sweep wall s | sweep CPU s | target s | target/CPU | "
            "embeddings wall s (once) |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        print(
            f"| {','.join(advs)} | {out['sweep_s']:.1f} | {out['sweep_cpu_s']:.1f} | 120 | "
            f"{120 / out['sweep_cpu_s']:.2f}x | {out.get('embeddings_s', 0):.1f} |"
        )
        res = out["result"]
        print(
            "\n| adversary | eps @ q=4000 [CI] | t (fit+predict) s | stratified q=400 | "
            "disagreement q=400 | random q=400 |"
        )
        print("|---|---|---:|---:|---:|---:|")
        for a, r in res["adversaries"].items():
            cells = []
            for s in ("stratified", "disagreement", "random"):
                pt = next(
                    (p for p in r["curves"].get(s, []) if p["q"] == 400 and p["k"] == 1), None
                )
                cells.append(f"{pt['value']:.3f}" if pt else "-")
            e = r["eps"]
            print(
                f"| {a} | {e['value']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}] | "
                f"{r['compute_s']:.2f} | " + " | ".join(cells) + " |"
            )
        print(f"\nverdict: {res['verdict']['text']}")
    if not args.skip_efficiency:
        eff = efficiency(run, args.compare, advs)
        print("\n## queries to reach median p < 0.05 (5 seeds)")
        print("| test | queries | median p along grid " + str(eff["grid"]) + " |")
        print("|---|---:|---|")
        for name, q in eff["queries_to_p05"].items():
            meds = ", ".join(f"{m:.3f}" for m in eff["medians"][name])
            print(f"| {name} | {q if q is not None else '> ' + str(eff['grid'][-1])} | {meds} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
