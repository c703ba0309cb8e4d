"""Probe-suite build speed against its targets (build_suite < 3 s, training_corpus < 10 s).

Run: python benchmarks/bench_probes.py [--repeats 3]
Prints best-of-N wall time per step next to its target and the ratio target / measured
(> 1 means faster than required).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    t0 = time.perf_counter()
    import probes
    from probes import suite as suite_mod

    import_s = time.perf_counter() - t0

    def corpus() -> None:
        suite_mod._default_suite.cache_clear()  # include the suite build it filters against
        probes.training_corpus()

    rows = [
        ("import probes", import_s, None),
        (
            "build_suite(0)  [5,000 records]",
            _best(lambda: probes.build_suite(0), args.repeats),
            3.0,
        ),
        ("training_corpus() [20,000 records]", _best(corpus, args.repeats), 10.0),
        (
            "suite_hash(5,000 records)",
            _best(lambda: probes.suite_hash(probes.default_suite()), args.repeats),
            None,
        ),
    ]
    print(f"python {sys.version.split()[0]} on {platform.machine()}, best of {args.repeats}")
    print(f"{'step':<38}{'measured s':>12}{'target s':>10}{'target/measured':>17}")
    for name, secs, target in rows:
        t = f"{target:.1f}" if target else "-"
        r = f"{target / secs:.1f}x" if target else "-"
        print(f"{name:<38}{secs:>12.3f}{t:>10}{r:>17}")


if __name__ == "__main__":
    main()
