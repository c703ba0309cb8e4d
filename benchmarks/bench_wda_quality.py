"""WDA routing schedules compared on quality: held-out CE after the same steps.

Run: python benchmarks/bench_wda_quality.py [--out DIR] [--seeds 0,1] [--items 40]
                                            [--variants fixed,doubling,composed]

Builds the micro zoo in a private cache (BBI_CACHE_DIR under --out), lets its teacher answer
the tests' synthetic corpus (``tests/conftest.py``'s builder, ``--items`` per category,
up to 96 new tokens), then runs ``bbi distill wda`` on copies of that run with
``--route-schedule fixed`` and ``doubling``, same seed, same data, same steps, and prints
the teacher-free student's held-out cross-entropy after every phase. The micro teacher's
texts are 13-45 tokens (median 20), so the routing chunks are 4 tokens: a 20-token text
gets 5 routing decisions from ``fixed`` and 4 from ``doubling`` ([0,4), [4,8), [8,16),
[16,32)), a 45-token text 12 and 5. (With the default 64-token chunks the two schedules
are the same function up to 192 tokens.) ``composed`` is ``doubling`` with the mixing
composed of separate operations (``WaveDensityAttention.lean_mix = False``) instead of the
layer's memory-lean autograd function: the same function, so any difference is round-off
carried through training.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

ARGS = ["--masks", "8", "--waves", "4", "--top-k", "2", "--route-chunk", "4",
        "--max-length", "64", "--batch-size", "8", "--lr", "3e-3", "--bursts", "2.0,1.0",
        "--no-progress"]  # fmt: skip


# `bbi` with the doubling path's mixing lean (the layer's default) or composed
LAUNCH = (
    "import runpy, sys; from distill.wda.attention import WaveDensityAttention; "
    "WaveDensityAttention.lean_mix = {lean}; sys.argv[0] = 'bbi'; "
    "runpy.run_module('bbi.app.cli', run_name='__main__')"
)


def teacher_run(out: Path, items: int) -> Path:
    """A run directory whose micro zoo teacher answered the synthetic corpus."""
    from conftest import make_synthetic_corpus, teacher_run

    from bbi import zoo
    from bbi.backends import load_backend

    zoo.build_zoo("micro", corpus=make_synthetic_corpus(1, 12), progress=False)
    backend = load_backend("zoo:teacher", device="cpu")
    run, _, _ = teacher_run(out / "run", backend, make_synthetic_corpus(5, items), 96, "q")
    backend.close()
    return run.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_wda_quality"))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--variants", default="fixed,doubling", help="of fixed,doubling,composed")
    args = ap.parse_args()
    out = args.out.resolve()
    os.environ["BBI_CACHE_DIR"] = str(out / "cache")
    os.environ["BBI_ZOO_CONFIG"] = "micro"
    base = out / "run"
    if not (base / "run.yaml").exists():
        shutil.rmtree(base, ignore_errors=True)
        teacher_run(out, args.items)
    rows: dict[str, dict[str, list[float]]] = {}
    variants = args.variants.split(",")
    if not set(variants) <= {"fixed", "doubling", "composed"}:
        raise SystemExit(f"--variants: among fixed, doubling, composed, not {args.variants}")
    for seed in args.seeds.split(","):
        for variant in variants:
            run = out / f"{variant}-{seed}"
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(base, run)
            schedule = "fixed" if variant == "fixed" else "doubling"
            argv = ["distill", "wda", str(run), *ARGS, "--route-schedule", schedule,
                    "--seed", seed]  # fmt: skip
            cmd = [sys.executable, "-c", LAUNCH.format(lean=variant != "composed"), *argv]
            subprocess.run(cmd, check=True, cwd=ROOT, env=os.environ.copy())
            res = json.loads((run / "results.json").read_text())["distill"]["student_wda"]
            for ph in res["phases"]:
                rows.setdefault(ph["phase"], {}).setdefault(variant, []).append(ph["ce"])
    first = variants[0]
    print("\n| after | " + " | ".join(f"held-out CE, {v}" for v in variants) + " | "
          + " | ".join(f"{v} - {first}" for v in variants[1:]) + " |")  # fmt: skip
    print("|---|" + "---:|" * (2 * len(variants) - 1))
    for phase, by in rows.items():
        means = [sum(by[v]) / len(by[v]) for v in variants]
        cells = [f"{m:.3f}" for m in means] + [f"{m - means[0]:+.3f}" for m in means[1:]]
        print(f"| {phase} | " + " | ".join(cells) + " |")
    print(f"(mean over seeds {args.seeds})")


if __name__ == "__main__":
    main()
