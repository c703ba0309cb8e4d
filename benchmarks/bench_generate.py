"""Generation throughput: the bbi HF backend vs naive per-prompt ``model.generate``.

Same model (the zoo teacher), same prompts, same decoding settings, side by side in one
run. "Naive" is what most scripts do: one ``model.generate`` call per prompt. The bbi
backend batches length-sorted, left-padded prompts with the KV cache and seeded
per-row sampling. Tokens/s counts generated tokens up to and including EOS.

    python benchmarks/bench_generate.py [--n 64] [--max-new-tokens 64] [--batch-size 32]

Uses the cached zoo (BBI_ZOO_CONFIG / BBI_CACHE_DIR as usual; builds it on first use).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _prompts(n: int) -> list[str]:
    try:
        from probes import default_suite

        suite = [r for r in default_suite() if r["split"] == "test"]
        step = max(1, len(suite) // n)
        return [r["prompt"] for r in suite[::step][:n]]
    except ImportError:
        topics = ["rivers", "tea", "prime numbers", "git", "haiku", "volcanoes", "HTTP", "owls"]
        return [f"Tell me one fact about {topics[i % len(topics)]} (#{i})." for i in range(n)]


def naive(backend, prompts, max_new_tokens, temperature, top_p, seeds) -> tuple[float, int]:
    """One model.generate per prompt (batch of 1, no padding), torch seeded per prompt."""
    import torch

    model, tok = backend.model, backend.tokenizer
    eos = tok.eos_token_id
    total = 0
    t0 = time.perf_counter()
    for p, s in zip(prompts, seeds, strict=True):
        ids = torch.tensor([backend.encode_prompt(p)])
        torch.manual_seed(s)
        kw = (
            dict(do_sample=True, temperature=temperature, top_p=top_p)
            if temperature > 0
            else dict(do_sample=False)
        )
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
                **kw,
            )[0, ids.shape[1] :].tolist()
        total += out.index(eos) + 1 if eos in out else len(out)
    return time.perf_counter() - t0, total


def batched(backend, prompts, cfg, seeds) -> tuple[float, int]:
    t0 = time.perf_counter()
    gens = backend.generate(prompts, cfg, seeds)
    return time.perf_counter() - t0, sum(g.n_tokens for g in gens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="zoo:teacher")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch

    from bbi.backends import GenerationConfig, load_backend

    backend = load_backend(args.spec, device="cpu")
    prompts = _prompts(args.n)
    seeds = list(range(len(prompts)))
    print(
        f"# bench_generate: {args.spec} ({backend.fingerprint}), {len(prompts)} prompts, "
        f"max_new_tokens={args.max_new_tokens}, batch_size={args.batch_size}, "
        f"torch threads={torch.get_num_threads()}, {platform.processor() or platform.machine()}, "
        f"load avg {os.getloadavg()[0]:.1f}"
    )
    print(f"{'decoding':<26}{'naive tok/s':>12}{'bbi tok/s':>12}{'ratio':>8}")
    for label, temperature, top_p in (
        ("greedy", 0.0, 1.0),
        ("sampled T=0.7 top_p=0.95", 0.7, 0.95),
    ):
        cfg = GenerationConfig(
            max_new_tokens=args.max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            batch_size=args.batch_size,
        )
        batched(backend, prompts[:4], cfg, seeds[:4])  # warm-up
        rates_naive, rates_bbi = [], []
        for _ in range(args.repeats):
            dt, tokens = naive(backend, prompts, args.max_new_tokens, temperature, top_p, seeds)
            rates_naive.append(tokens / dt)
            dt, tokens = batched(backend, prompts, cfg, seeds)
            rates_bbi.append(tokens / dt)
        a, b = statistics.median(rates_naive), statistics.median(rates_bbi)
        print(f"{label:<26}{a:>12.1f}{b:>12.1f}{b / a:>7.1f}x")


if __name__ == "__main__":
    main()
