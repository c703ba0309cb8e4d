"""Share of on-policy KD wall time spent sampling: HF ``generate`` vs bbi's generation path.

Builds the micro zoo (in a temporary cache) and a run whose zoo teacher answered
``--prompts`` prompts, then distils the zoo student with every step on-policy
(``--lambda-on-policy 1``), once per ``--on-policy-sampler``, and prints the time spent
sampling (``objective_stats.generate_s``), the training time and their ratio, side by side.

    python benchmarks/bench_kd_on_policy.py [--prompts 48] [--max-new-tokens 24]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bbi-bench-onpolicy-"))
    os.environ["BBI_CACHE_DIR"] = str(tmp / "cache")
    os.environ["BBI_ZOO_CONFIG"] = "micro"
    import torch
    from conftest import make_synthetic_corpus, teacher_run

    from bbi import zoo
    from bbi.backends import load_backend
    from bbi.config import KDSettings
    from distill.kd import distill_kd

    torch.set_num_threads(1)
    zoo.build_zoo(
        "micro", corpus=make_synthetic_corpus(1, zoo.CONFIGS["micro"].per_category), progress=False
    )
    teacher = load_backend("zoo:teacher", device="cpu")
    items = make_synthetic_corpus(7, -(-args.prompts // 4))[: args.prompts]
    run, _, _ = teacher_run(tmp / "run", teacher, items, 24, "bench")
    teacher.close()
    cfg = run.config()
    cfg["models"]["student"] = {"spec": "zoo:student", "role": "student"}
    run.write_config(cfg)
    print(f"{args.prompts} prompts, {args.max_new_tokens} new tokens per sample, 1 thread")
    print(f"{'sampler':10} {'generate s':>11} {'train s':>9} {'share':>7}")
    for sampler in ("generate", "backend"):
        hp = KDSettings(
            epochs=args.epochs, batch_size=8, max_length=96, lambda_on_policy=1.0,
            max_new_tokens=args.max_new_tokens, on_policy_sampler=sampler,
        )  # fmt: skip
        res = distill_kd(run, settings=hp, alias=f"s_{sampler}", progress=False)
        gen_s = res.record["objective_stats"]["generate_s"]
        train_s = res.record["train_time_s"]
        print(f"{sampler:10} {gen_s:>11.2f} {train_s:>9.2f} {gen_s / train_s:>7.1%}")


if __name__ == "__main__":
    main()
