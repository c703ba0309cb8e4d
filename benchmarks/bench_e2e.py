"""Cold and warm wall time of `bbi run` (targets: cold <= 15 min, warm <= 60 s on 2 cores).

Runs `bbi run` twice into a fresh run directory and prints both wall times side by side
with the per-step timings the pipeline records. ``--fresh-cache`` also points
BBI_CACHE_DIR at an empty directory, so the cold run includes the one-off zoo build and
no response comes from the global generation cache.

    python benchmarks/bench_e2e.py [--fresh-cache] [--limit N] [--config run.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _bbi_run(run_dir: Path, extra: list[str], env: dict[str, str]) -> float:
    cmd = [
        sys.executable,
        "-m",
        "bbi.app.cli",
        "run",
        "--run",
        str(run_dir),
        "--no-progress",
        *extra,
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--fresh-cache", action="store_true", help="empty BBI_CACHE_DIR (includes the zoo build)"
    )
    ap.add_argument("--limit", type=int, default=None, help="stratified subset of the suite")
    ap.add_argument("--config", type=Path, default=None)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bbi-bench-e2e-"))
    env = dict(os.environ)
    if args.fresh_cache:
        env["BBI_CACHE_DIR"] = str(work / "cache")
    extra = []
    if args.limit:
        extra += ["--limit", str(args.limit)]
    if args.config:
        extra += ["--config", str(args.config)]
    run_dir = work / "run"
    cold = _bbi_run(run_dir, extra, env)
    warm = _bbi_run(run_dir, extra, env)
    steps = json.loads((run_dir / "manifest.json").read_text())["timings"]
    print(f"{'':24}{'seconds':>10}")
    print(f"{'cold bbi run':24}{cold:10.1f}   target 900  ({900 / cold:.2f}x of budget)")
    print(f"{'warm bbi run':24}{warm:10.1f}   target 60   ({60 / warm:.2f}x of budget)")
    print(f"{'cold / warm':24}{cold / warm:10.1f}x")
    print("steps of the last run (cached steps are near 0):")
    for key, value in steps.items():
        if key.startswith("run:"):
            print(f"  {key[4:]:22}{value:10.1f}")


if __name__ == "__main__":
    main()
