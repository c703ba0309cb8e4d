"""Attack sweep in worker processes (``bbi attack --n-jobs``) vs the serial sweep.

The default sweep (7 budgets x 3 strategies x 5 seeds) on the synthetic 5,000-prompt run
of ``bench_attack.py``, once serially and once with ``--n-jobs N`` (default 2), each on its
own copy of the run and in a fresh process (nothing memoised by the other). Embeddings are
computed once beforehand (cached in the run directory, untimed), so both sweeps time the
same work. Prints wall and CPU seconds side by side (CPU with the workers' when psutil is
installed), the serial / parallel ratio, and whether the two sweeps wrote identical files
(all but the wall-clock fields, ``discriminators.attack.TIMING_FIELDS``).

Run: python benchmarks/bench_attack_parallel.py [--n-jobs 2]
     [--adversaries surface,tfidf,embed,pairwise] [--run runs/demo --compare student]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_attack import _synthetic  # noqa: E402  (the same synthetic run)


def _without_timing(obj: Any) -> Any:
    from discriminators.attack import TIMING_FIELDS

    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if k not in TIMING_FIELDS}
    if isinstance(obj, list):
        return [_without_timing(v) for v in obj]
    return obj


def _written(path: Path) -> dict[str, Any]:
    """results.json's attack section and every attack/ file, less the timing fields."""
    results = json.loads((path / "results.json").read_text())
    out: dict[str, Any] = {"results.json": _without_timing(results["attack"])}
    for f in sorted((path / "attack").rglob("*")):
        if f.is_file():
            text = f.read_text()
            out[str(f.relative_to(path))] = (
                json.dumps(_without_timing(json.loads(text))) if f.suffix == ".json" else text
            )
    return out


def _cpu_all() -> float:
    """CPU seconds of this process and its live children (the loky workers)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is optional here
        return float("nan")
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def sweep(path: Path, compare: str, adversaries: list[str], n_jobs: int) -> dict[str, float]:
    from bbi.config import AttackSettings
    from bbi.runstore import RunDir
    from discriminators.attack import run_attack

    cfg = AttackSettings(adversaries=adversaries, n_jobs=n_jobs)  # the default sweep
    t0, c0, a0 = time.perf_counter(), time.process_time(), _cpu_all()
    run_attack(RunDir(path), cfg, compare=[compare])
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,  # this process: with n_jobs, mostly waiting
        "cpu_all_s": _cpu_all() - a0,  # with the workers: the work actually done
    }


def sweep_in_subprocess(path: Path, compare: str, advs: list[str], n_jobs: int) -> dict:
    """``sweep`` in a fresh interpreter: nothing memoised by an earlier sweep (featurizers
    cache by text digest) and no warm workers flatter the second one."""
    cmd = [sys.executable, __file__, "--sweep-only", str(path), "--compare", compare,
           "--adversaries", ",".join(advs), "--n-jobs", str(n_jobs)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", type=Path, default=None)
    ap.add_argument("--compare", default="student")
    ap.add_argument("--adversaries", default="surface,tfidf,embed,pairwise")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--sweep-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.sweep_only is not None:  # one timed sweep, for sweep_in_subprocess
        advs = [a for a in args.adversaries.split(",") if a]
        print(json.dumps(sweep(args.sweep_only, args.compare, advs, args.n_jobs)))
        return
    from bbi.runstore import RunDir
    from discriminators.attack import load_comparison

    advs = [a for a in args.adversaries.split(",") if a]
    tmp = Path(tempfile.mkdtemp(prefix="bbi-bench-attack-parallel-"))
    try:
        if args.run is None:
            t0 = time.perf_counter()
            run = _synthetic(tmp / "made" / "run")
            print(f"generated synthetic 5,000-prompt run in {time.perf_counter() - t0:.1f} s")
        else:
            run = RunDir(args.run)
        if any(a in ("embed", "pairwise_embed", "mmd") for a in advs):
            t0 = time.perf_counter()
            load_comparison(run, args.compare, embeddings=True)  # cached in the run dir
            print(f"embeddings (once, untimed below): {time.perf_counter() - t0:.1f} s")
        print(
            f"python {platform.python_version()} {platform.machine()}, cpus {os.cpu_count()}, "
            f"load before {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        times, written = {}, {}
        for label, jobs in (("serial", 1), (f"n_jobs={args.n_jobs}", args.n_jobs)):
            path = tmp / label / run.path.name  # same name: results.json records it
            shutil.copytree(run.path, path)
            times[label] = sweep_in_subprocess(path, args.compare, advs, jobs)
            written[label] = _written(path)
            print(f"{label}: {times[label]['wall_s']:.1f} s", flush=True)
        print(f"load after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        (serial, ts), (par, tp) = times.items()
        same = written[serial] == written[par]
        print(f"\n## sweep: 7 budgets x 3 strategies x 5 seeds, {','.join(advs)}")
        print(
            f"| run | wall s | CPU s, this process | CPU s, with workers | {serial} wall / wall |"
        )
        print("|---|---:|---:|---:|---:|")
        for label, t in times.items():
            print(
                f"| {label} | {t['wall_s']:.1f} | {t['cpu_s']:.1f} | {t['cpu_all_s']:.1f} | "
                f"{ts['wall_s'] / t['wall_s']:.2f}x |"
            )
        print(
            f"\nfiles identical but for {{acquisition,compute,prepare}}_s: "
            f"{'yes' if same else 'NO'} ({len(written[serial])} files)"
        )
        if not same:
            bad = [k for k in written[serial] if written[serial][k] != written[par].get(k)]
            print("differ:", ", ".join(bad[:10]))
            sys.exit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
