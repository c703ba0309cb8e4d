"""WDA attention vs the teacher's SDPA attention: forward + backward time and peak memory.

Run: python benchmarks/bench_wda.py [--lengths 256,1024,4096,8192,16384] [--repeats 3]
                                    [--fixed-max 4096] [--threads N] [--methods ...]

One attention layer at SmolLM2-135M's size (hidden 576, 9 heads, head dim 64), batch 1,
fp32 on the CPU, side by side in one run: SDPA is
``torch.nn.functional.scaled_dot_product_attention`` with the causal flag (what the HF
Llama layer calls) plus the q/k/v/o projections; WDA is
``distill.wda.attention.WaveDensityAttention`` at the default settings (24 masks x 8
waves, top-4 routing, 64-token routing chunks) with each routing schedule: ``fixed``
(a decision every 64 tokens, cost ~ S^2 log S / 64; skipped above ``--fixed-max``, it
needs ~10 GiB at 8k) and ``doubling`` (chunks 64, 128, 256, ...: the long-context path),
the latter both as the layer runs it (``doubling``: one memory-lean autograd function
for the mixing) and composed of separate operations (``composed``: the same function,
``lean_mix = False``, as the layer ran before the fused function).
Time: median over ``repeats`` of one forward + backward of sum(output); memory: peak
resident memory growth of a fresh child process per (method, length), since torch's CPU
allocator has no peak counter (with ``--tensor-peak``, also the peak of the bytes held
by tensors allocated in one more forward + backward, from the profiler's allocation
events: the layer's own need, without what the C allocator keeps around it). The cells of one length run back to back, so the ratios
WDA / SDPA compare runs made under the same machine load. ``--threads`` sets torch's
intra-op threads of every cell (default: all cores); on a machine that other jobs keep
busy, 1 thread avoids measuring how often an operation's threads wait for a core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

D, H = 576, 9


def _layer(method: str):
    import torch

    torch.manual_seed(0)
    if method.startswith("wda"):
        from distill.wda.attention import WaveDensityAttention, WDAConfig

        schedule = "fixed" if method == "wda-fixed" else "doubling"
        layer = WaveDensityAttention(WDAConfig(hidden_size=D, num_heads=H, route_schedule=schedule))
        layer.lean_mix = method != "wda-composed"
        return layer

    class SDPA(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = torch.nn.Linear(D, 3 * D, bias=False)
            self.o = torch.nn.Linear(D, D, bias=False)

        def forward(self, x):
            b, s, _ = x.shape
            q, k, v = self.qkv(x).view(b, s, 3, H, D // H).permute(2, 0, 3, 1, 4)
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.o(y.transpose(1, 2).reshape(b, s, D))

    return SDPA()


def measure(method: str, length: int, repeats: int, threads: int, tensor_peak: bool) -> dict:
    """Run in a child process: time per forward+backward and peak RSS growth (MiB)."""
    import resource

    import torch

    torch.set_num_threads(threads)
    layer = _layer(method)
    x = torch.randn(1, length, D, requires_grad=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        layer(x).sum().backward()
        times.append(time.perf_counter() - t0)
        layer.zero_grad(set_to_none=True)
        x.grad = None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = {"s": statistics.median(times[1:]), "peak_mib": (peak - base) / 1024}
    if tensor_peak:
        res["tensor_mib"] = _tensor_peak(lambda: layer(x).sum().backward()) / 2**20
    return res


def _tensor_peak(step) -> int:
    """Peak bytes of the tensors that ``step`` allocates and still holds at one time.

    From the allocation events of torch's profiler (``profile_memory``): the layer's own
    need, without what the C allocator keeps or maps around it (resident-set growth).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


NAMES = {
    "sdpa": "SDPA",
    "wda-fixed": "fixed",
    "wda-composed": "composed",
    "wda-doubling": "doubling",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="256,1024,4096,8192,16384")
    ap.add_argument("--fixed-max", type=int, default=4096, help="longest S for WDA fixed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    ap.add_argument("--methods", default=",".join(NAMES), help=f"among {','.join(NAMES)}")
    ap.add_argument("--tensor-peak", action="store_true", help="also the profiler's tensor peak")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        method, length = args.child.split(":")
        print(
            json.dumps(measure(method, int(length), args.repeats, args.threads, args.tensor_peak))
        )
        return
    lengths = [int(x) for x in args.lengths.split(",")]
    methods = [m for m in NAMES if m in args.methods.split(",")]
    print(f"python {platform.python_version()}, cpus {os.cpu_count()}, threads {args.threads}, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    names = [NAMES[m] for m in methods]
    head = ([f"{n} s" for n in names] + [f"{n} / SDPA" for n in names[1:]]
            + [f"{n} MiB" for n in names] + [f"{n} / SDPA MiB" for n in names[1:]])  # fmt: skip
    if args.tensor_peak:
        head += [f"{n} tensor MiB" for n in names] + [f"{n} / SDPA tensor" for n in names[1:]]
    print("\n| S | " + " | ".join(head) + " |")
    print("|---:" * (len(head) + 1) + "|")
    for s in lengths:
        res: dict[str, dict | None] = {}
        for method in methods:
            if method == "wda-fixed" and s > args.fixed_max:
                res[method] = None
                continue
            out = subprocess.run(
                [sys.executable, __file__, "--child", f"{method}:{s}",
                 "--repeats", str(args.repeats), "--threads", str(args.threads),
                 *(["--tensor-peak"] if args.tensor_peak else [])],
                capture_output=True, text=True, timeout=3600,
            )  # fmt: skip
            if out.returncode != 0:
                res[method] = None
                print(f"{method} S={s} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            res[method] = json.loads(out.stdout.strip().splitlines()[-1])
        a = res.get("sdpa")

        def cell(r: dict | None, key: str, fmt: str) -> str:
            return format(r[key], fmt) if r else "-"

        def ratio(r: dict | None, key: str, a: dict | None = a) -> str:
            return f"{r[key] / a[key]:.2f}" if r and a else "-"

        rows = [res[m] for m in methods]
        cells = ([cell(r, "s", ".3f") for r in rows] + [ratio(r, "s") for r in rows[1:]]
                 + [cell(r, "peak_mib", ".0f") for r in rows]
                 + [ratio(r, "peak_mib") for r in rows[1:]])  # fmt: skip
        if args.tensor_peak:
            cells += [cell(r, "tensor_mib", ".0f") for r in rows]
            cells += [ratio(r, "tensor_mib") for r in rows[1:]]
        print(f"| {s} | " + " | ".join(cells) + " |", flush=True)
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
