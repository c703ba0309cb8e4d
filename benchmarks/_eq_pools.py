"""Substitution-audit pools for benchmarks/bench_equality_tests.py, generated once and cached.

The default teacher (zoo:smollm2) answers ``--prompts`` stratified default-suite prompts
(top-p 1, ``--max-new-tokens`` 48, one thread) in float32 at temperature 1.0 (4 samples per
prompt) and, 2 samples each, with bfloat16 weights (``fast:``), int8 weights (``ct2:``
compute_type int8) and at temperature 0.9; ``OUT/NAME.jsonl`` holds one line per prompt
and sample (seeded per request: a rerun reproduces it and resumes a stopped one). Then the
float32 teacher (``hf:``) scores every float32 sample and sample 0 of the others for RUT:
``OUT/scores.jsonl``, the mean log-rank of each answer's tokens.

    python benchmarks/_eq_pools.py [--out /tmp/met_pools] [--prompts 160] [--score-only]
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

TEACHER = "zoo:smollm2"
# name -> (spec, backend arguments, temperature, samples per prompt)
CONFIGS = {
    "fp32": (f"fast:{TEACHER}", {"dtype": "float32", "threads": 1}, 1.0, 4),
    "bf16": (f"fast:{TEACHER}", {"dtype": "bfloat16", "threads": 1}, 1.0, 2),
    "int8": (f"ct2:{TEACHER}", {"compute_type": "int8", "threads": 1}, 1.0, 2),
    "t09": (f"fast:{TEACHER}", {"dtype": "float32", "threads": 1}, 0.9, 2),
}
BASE_SEED = {"fp32": 101, "bf16": 202, "int8": 303, "t09": 404}


def pool_prompts(n: int) -> list[dict]:
    """``n`` prompts of the default probe suite, stratified over its categories."""
    from bbi.probe_run import select_limit
    from probes import default_suite

    return select_limit(default_suite(), n)


def generate(out: Path, n_prompts: int, max_new_tokens: int, batch_size: int = 16) -> None:
    """Round-robin over configs and samples (``out/NAME.jsonl``, one line per prompt and
    sample), so a stopped job leaves every config with nearly the same number of samples;
    rerunning resumes."""
    import torch

    from bbi.backends import GenerationConfig, load_backend
    from bbi.probe_run import request_seed

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    recs = pool_prompts(n_prompts)
    (out / "prompts.json").write_text(
        json.dumps(
            dict(
                teacher=TEACHER,
                max_new_tokens=max_new_tokens,
                top_p=1.0,
                configs={k: [v[0], v[1], v[2], v[3]] for k, v in CONFIGS.items()},
                prompts=[
                    dict(id=r["id"], category=r["category"], prompt=r["prompt"]) for r in recs
                ],
            ),
            indent=1,
        )
    )
    done: dict[str, set] = {}
    for name in CONFIGS:
        p = out / f"{name}.jsonl"
        done[name] = set()
        if p.exists():
            for line in p.read_text().splitlines():
                d = json.loads(line)
                done[name].add((d["id"], d["sample"]))
    backends: dict = {}
    rounds = max(c[3] for c in CONFIGS.values())
    for s in range(rounds):
        for name, (spec, kw, temp, n_samples) in CONFIGS.items():
            if s >= n_samples:
                continue
            todo = [r for r in recs if (r["id"], s) not in done[name]]
            if not todo:
                continue
            if name not in backends:
                backends[name] = load_backend(spec, device="cpu", **kw)
            cfg = GenerationConfig(
                max_new_tokens=max_new_tokens, temperature=temp, top_p=1.0, batch_size=batch_size
            )
            seeds = [request_seed(BASE_SEED[name], r["id"], s) for r in todo]
            t0 = time.perf_counter()
            gens = backends[name].generate([r["prompt"] for r in todo], cfg, seeds)
            dt = time.perf_counter() - t0
            ntok = sum(g.n_tokens for g in gens)
            with (out / f"{name}.jsonl").open("a") as f:
                for r, g, sd in zip(todo, gens, seeds, strict=True):
                    f.write(
                        json.dumps(
                            dict(id=r["id"], sample=s, seed=sd, text=g.text, n_tokens=g.n_tokens)
                        )
                        + "\n"
                    )
            print(
                f"{name} sample {s}: {len(todo)} responses, {ntok} tokens, {dt:.0f} s "
                f"({ntok / dt:.1f} tok/s, under load)",
                flush=True,
            )
    for b in backends.values():
        b.close()


def score(out: Path, queries: int = 1) -> None:
    """RUT's score of the responses it ranks, under the float32 teacher (``hf:``): the
    mean log-rank of the response's tokens (Zhu et al.'s default statistic). Every
    float32 sample (the local reference samples) and samples ``0..queries-1`` of the other
    configs; cached in ``out/scores.jsonl``."""
    import numpy as np
    import torch

    from bbi.backends import load_backend

    torch.set_num_threads(1)
    meta = json.loads((out / "prompts.json").read_text())
    prompt = {r["id"]: r["prompt"] for r in meta["prompts"]}
    path = out / "scores.jsonl"
    have = set()
    if path.exists():
        for line in path.read_text().splitlines():
            d = json.loads(line)
            have.add((d["config"], d["id"], d["sample"]))
    todo = []
    for name in CONFIGS:
        if not (out / f"{name}.jsonl").exists():
            continue
        for line in (out / f"{name}.jsonl").read_text().splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:  # a line being written by the generator
                continue
            if (name == "fp32" or d["sample"] < queries) and (
                name,
                d["id"],
                d["sample"],
            ) not in have:
                todo.append((name, d))
    if not todo:
        return
    order = {r["id"]: i for i, r in enumerate(meta["prompts"])}
    todo.sort(key=lambda t: order[t[1]["id"]])  # prompt by prompt: complete prompts first
    ref = load_backend(TEACHER, device="cpu", dtype="float32")
    t0 = time.perf_counter()
    for start in range(0, len(todo), 64):
        chunk = todo[start : start + 64]
        res = ref.score([prompt[d["id"]] for _, d in chunk], [d["text"] for _, d in chunk], 16)
        with path.open("a") as f:
            for (name, d), ts in zip(chunk, res, strict=True):
                lr = float(np.mean(np.log(ts.ranks))) if ts.ranks else 0.0
                f.write(
                    json.dumps(dict(config=name, id=d["id"], sample=d["sample"], logrank=lr)) + "\n"
                )
        print(
            f"scored {start + len(chunk)}/{len(todo)} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    ref.close()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/met_pools")
    ap.add_argument("--prompts", type=int, default=160)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--score-only", action="store_true")
    a = ap.parse_args()
    if not a.score_only:
        generate(Path(a.out), a.prompts, a.max_new_tokens)
    score(Path(a.out))
