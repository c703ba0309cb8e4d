"""Peak memory and time of one KD step over a 150k-token vocabulary: the full-logit loss,
the chunked loss (``--kl-chunk``) and the cached top-k teacher (``--teacher-logits cache``).

Two tiny random Llama models (hidden 64, 2 layers) share a 150,000-token vocabulary, so
the output layer dominates as in a real Qwen/Llama pair. Each configuration runs in its
own process (large allocations served by mmap, so freed memory leaves the resident set).
Reported: the first step's peak resident memory above what the process held just before
it (models, batch, and for the cache its rows; the high-water mark ``VmHWM``, reset just
before the step, minus the resident size then), and
the step's wall time (forward + backward, median of ``--repeats`` after the first). On a CUDA machine ``--device cuda`` reports
``torch.cuda.max_memory_allocated`` instead.

    python benchmarks/bench_kd_memory.py [--vocab 150000] [--batch 2] [--length 512]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> None:
    """Reset the process's resident high-water mark (Linux >= 4.0), so the peak read after
    the step is the step's own, not the setup's."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(mode: str, chunk: int, args: argparse.Namespace) -> dict:
    """One configuration, in this process (called in a fresh subprocess)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from bbi.config import KDSettings
    from distill.objectives.kd import KD, CachedKD
    from distill.teacher_cache import topk_rows

    torch.manual_seed(0)
    cfg = dict(
        vocab_size=args.vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
        tie_word_embeddings=False,
    )  # fmt: skip
    device = torch.device(args.device)
    student = LlamaForCausalLM(LlamaConfig(**cfg)).to(device)
    ids = torch.randint(0, args.vocab, (args.batch, args.length), device=device)
    labels = ids.clone()
    labels[:, : args.length // 8] = -100  # a short prompt, the rest is response
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    hp = KDSettings(kl_chunk=chunk, top_k=args.top_k)
    if mode == "cache":
        teacher = LlamaForCausalLM(LlamaConfig(**cfg)).to(device)
        with torch.no_grad():
            t = teacher(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1]
            rows = [topk_rows(t[i], args.top_k, 1.0) for i in range(args.batch)]
        del teacher, t
        k = args.top_k
        batch["teacher_ids"] = torch.stack([torch.from_numpy(r[0]).long() for r in rows])
        batch["teacher_logprobs"] = torch.stack([torch.from_numpy(r[1]).float() for r in rows])
        batch["teacher_tail"] = torch.stack([torch.from_numpy(r[2]) for r in rows])
        batch = {key: v.to(device) for key, v in batch.items()}
        batch["teacher_ids"][labels[:, 1:] == -100] = 0
        assert batch["teacher_ids"].shape[-1] == k
        objective = CachedKD(
            lambda: None, hp, cache_root=".", vocab=args.vocab, teacher_spec="", progress=False
        )
    else:
        teacher = LlamaForCausalLM(LlamaConfig(**cfg)).to(device).eval().requires_grad_(False)
        objective = KD(teacher, hp, max_new_tokens=8)
    import gc

    times = []
    for r in range(args.repeats + 1):  # the first is a warm-up
        student.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() / 2**20
        else:
            _reset_peak()
            before = _rss_mib()
        t0 = time.perf_counter()
        sums, counts = objective.token_losses(student, batch)
        (sums.sum() / counts.sum()).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if r == 0:
            peak = (
                torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _peak_mib()
            ) - before
    return {
        "mode": mode,
        "kl_chunk": chunk,
        "peak_step_mib": round(peak, 1),
        "step_s": round(sorted(times[1:])[len(times[1:]) // 2], 3),
        "loss": float(sums.detach().sum() / counts.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=150_000)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--only", nargs="*", default=None, help="MODE:CHUNK pairs to run (default: all)"
    )
    ap.add_argument("--one", nargs=2, metavar=("MODE", "CHUNK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args)))
        return
    configs = [("model", 0), ("model", 128), ("model", 32), ("cache", 0), ("cache", 128)]
    if args.only:
        configs = [(m, int(c)) for m, c in (x.split(":") for x in args.only)]
    tokens = args.batch * (args.length - args.length // 8)
    print(
        f"vocab {args.vocab}, batch {args.batch} x {args.length} tokens "
        f"({tokens} response tokens), device {args.device}"
    )
    print(f"{'teacher':8} {'kl_chunk':>8} {'peak MiB':>10} {'step s':>8} {'loss':>10}")
    for mode, chunk in configs:
        cmd = [sys.executable, __file__, "--one", mode, str(chunk)]
        for flag in ("vocab", "batch", "length", "top_k", "repeats", "device"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        # Large blocks straight from mmap, returned on free: glibc's adaptive threshold would
        # otherwise serve chunk-sized blocks from a fragmenting heap, and the resident size
        # would measure the allocator instead of the live tensors.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        res = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        )
        print(
            f"{res['mode']:8} {res['kl_chunk']:>8} {res['peak_step_mib']:>10.1f} "
            f"{res['step_s']:>8.3f} {res['loss']:>10.5f}"
        )


if __name__ == "__main__":
    main()
