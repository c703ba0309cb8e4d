"""Generation throughput: the bbi HF backend vs ``model.generate``.

Default mode: same model (the zoo teacher), same prompts, same decoding settings, side by
side in one run. "Naive" is what most scripts do: one ``model.generate`` call per prompt.
The bbi backend batches length-sorted, left-padded prompts with the KV cache and seeded
per-row sampling. Tokens/s counts generated tokens up to and including EOS.

    python benchmarks/bench_generate.py [--n 64] [--max-new-tokens 64] [--batch-size 32]

``--smollm2`` mode: the real teacher (zoo:smollm2, 135M) and its pruned student against
the fair baseline, *batched* ``model.generate`` (same batch size, left-padded, same
prompts, same max_new_tokens), greedy and sampled; plus torch int8 dynamic quantisation
of the teacher's Linear layers (speed, and how many greedy tokens still agree with fp32).

    python benchmarks/bench_generate.py --smollm2 [--n 64] [--max-new-tokens 48] [--batch-size 64]

Uses the cached zoo (BBI_ZOO_CONFIG / BBI_CACHE_DIR as usual; builds it on first use).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# On a machine shared with other jobs, spinning OpenMP workers starve each other: zoo:smollm2
# with 2 threads ran at 8.6 tok/s with the default (active) wait policy and 54.5 with this
# one while another job ran (55.4 with 1 thread). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


def hf_batched(backend, prompts, cfg, seed: int = 0) -> list[list[int]]:
    """Plain batched ``model.generate``: left-padded chat-formatted prompts, batches of
    ``cfg.batch_size`` in suite order, torch seeded once. Returns each row's new token ids
    up to and including EOS."""
    import torch

    model = backend.model
    eos = set(backend.eos_ids)
    kw = (
        dict(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
        if cfg.do_sample
        else dict(do_sample=False)
    )
    rows: list[list[int]] = []
    torch.manual_seed(seed)
    for s in range(0, len(prompts), cfg.batch_size):
        encoded = [backend.encode_prompt(p) for p in prompts[s : s + cfg.batch_size]]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), backend.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, e in enumerate(encoded):
            ids[r, width - len(e) :] = torch.tensor(e)
            mask[r, width - len(e) :] = 1
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=cfg.max_new_tokens,
                pad_token_id=backend.pad_id,
                eos_token_id=backend.eos_ids,
                **kw,
            )[:, width:]
        for row in out.tolist():
            cut = next((k for k, t in enumerate(row) if t in eos), None)
            rows.append(row if cut is None else row[: cut + 1])
    return rows


def timed(fn, count) -> tuple[float, float, object]:
    """(tokens per wall second, tokens per CPU second, result): on a shared machine the
    CPU-time rate is the steadier one."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = count(out)
    return n / wall, n / max(cpu, 1e-9), out


def _ids(backend, texts: list[str]) -> list[list[int]]:
    """Token ids of generated texts, re-tokenised the same way for every decoder."""
    return [backend.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def agreement(a: list[list[int]], b: list[list[int]]) -> tuple[float, float, float]:
    """(position-wise token agreement, common-prefix share, identical responses share)."""
    pairs = list(zip(a, b, strict=True))
    total = sum(max(len(x), len(y)) for x, y in pairs) or 1
    same = sum(sum(p == q for p, q in zip(x, y, strict=False)) for x, y in pairs)
    prefix = sum(
        next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
        for x, y in pairs
    )
    identical = sum(x == y for x, y in pairs) / max(len(pairs), 1)
    return same / total, prefix / total, identical


def smollm2_main(args) -> None:
    """zoo:smollm2 and zoo:smollm2-pruned: bbi vs batched HF generate; int8 dynamic quant."""
    import copy

    import torch

    from bbi import smollm2
    from bbi.backends import GenerationConfig, load_backend
    from bbi.backends.hf import HFBackend  # imports transformers: not part of load times

    t0 = time.perf_counter()
    built = smollm2.is_built()
    smollm2.model_path("smollm2")
    build_s = time.perf_counter() - t0
    prompts = _prompts(args.n)
    seeds = list(range(len(prompts)))
    print(
        f"# bench_generate --smollm2: {len(prompts)} prompts, max_new_tokens="
        f"{args.max_new_tokens}, batch_size={args.batch_size}, torch threads="
        f"{torch.get_num_threads()}, {platform.processor() or platform.machine()}, "
        f"load avg {os.getloadavg()[0]:.1f}" + ("" if built else f", first build {build_s:.0f}s")
    )
    print(
        f"{'model':<28}{'decoding':<9}{'HF batched tok/s':>17}{'bbi tok/s':>10}{'ratio':>7}"
        f"{'HF tok/CPU-s':>14}{'bbi tok/CPU-s':>15}{'ratio':>7}"
    )
    greedy = GenerationConfig(
        max_new_tokens=args.max_new_tokens, temperature=0.0, batch_size=args.batch_size
    )
    sampled = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=0.7,
        top_p=0.95,
        batch_size=args.batch_size,
    )
    fp32_ids, rate_fp32, teacher = None, (1.0, 1.0), None
    for spec in ("zoo:smollm2", "zoo:smollm2-pruned"):
        t1 = time.perf_counter()
        backend = load_backend(spec, device="cpu")
        load_s = time.perf_counter() - t1
        backend.generate(prompts[:2], greedy, seeds[:2])  # warm-up
        for label, cfg in (("greedy", greedy), ("sampled", sampled)):
            a, ac, hf_rows = timed(
                lambda b=backend, c=cfg: hf_batched(b, prompts, c), lambda r: sum(map(len, r))
            )
            b, bc, gens = timed(
                lambda b=backend, c=cfg: b.generate(prompts, c, seeds),
                lambda gs: sum(g.n_tokens for g in gs),
            )
            name = f"{spec} ({sum(p.numel() for p in backend.model.parameters()) / 1e6:.0f}M)"
            print(
                f"{name:<28}{label:<9}{a:>17.1f}{b:>10.1f}{b / a:>6.1f}x"
                f"{ac:>14.1f}{bc:>15.1f}{bc / ac:>6.1f}x",
                flush=True,
            )
            if spec == "zoo:smollm2" and label == "greedy":
                fp32_ids = _ids(backend, [g.text for g in gens])
                rate_fp32 = (b, bc)
                hf_ids = _ids(backend, [backend._decode(r) for r in hf_rows])
                pos, _, same = agreement(fp32_ids, hf_ids)
                print(
                    f"  greedy bbi vs HF batched: {pos:.1%} of tokens agree, "
                    f"{same:.0%} identical responses"
                )
        print(f"  {spec}: loaded from the cache in {load_s:.2f}s (incl. hashing its files)")
        if spec == "zoo:smollm2":
            teacher = backend
        else:
            backend.close()

    # torch int8 dynamic quantisation of the teacher, run through the same bbi backend.
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*quantiz.*deprecated.*")

    variants = {
        "int8 dynamic, every Linear (per-tensor)": lambda m: quantize_dynamic(
            m, {torch.nn.Linear}, dtype=torch.qint8
        ),
        "int8 dynamic, decoder layers (per-channel)": lambda m: quantize_dynamic(
            m,
            {
                name: per_channel_dynamic_qconfig
                for name, mod in m.named_modules()
                if isinstance(mod, torch.nn.Linear) and name.startswith("model.layers.")
            },
        ),
    }
    for label, quantize in variants.items():
        model = quantize(copy.deepcopy(teacher.model))
        qb = HFBackend(model, teacher.tokenizer, name=label, fingerprint="-", device=None)
        rate, rate_cpu, gens = timed(
            lambda qb=qb: qb.generate(prompts, greedy, seeds),
            lambda gs: sum(g.n_tokens for g in gs),
        )
        pos, prefix, same = agreement(fp32_ids, _ids(qb, [g.text for g in gens]))
        # Dynamic quantisation scales activations per tensor, i.e. per batch: a row's
        # output then depends on its batch-mates (which the response cache must not see).
        k = min(4, len(prompts))
        alone = qb.generate(prompts[:k], dataclasses.replace(greedy, batch_size=1), seeds[:k])
        batch_free = sum(a.text == g.text for a, g in zip(alone, gens[:k], strict=True))
        print(
            f"{label}: {rate:.1f} tok/s, {rate_cpu:.1f} tok/CPU-s ({rate / rate_fp32[0]:.2f}x "
            f"/ {rate_cpu / rate_fp32[1]:.2f}x fp32 bbi greedy); greedy tokens "
            f"agreeing with fp32: {pos:.1%} position-wise, {prefix:.1%} before the first "
            f"divergence, {same:.0%} identical responses; batch of 1 = batched output for "
            f"{batch_free}/{k} prompts",
            flush=True,
        )
    print(f"# total {time.perf_counter() - t0:.0f}s, load avg {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="zoo:teacher")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=None, help="default 32 (64 with --smollm2)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--smollm2",
        action="store_true",
        help="zoo:smollm2 / zoo:smollm2-pruned vs batched model.generate, and int8",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.smollm2:
        args.batch_size = args.batch_size or 64
        smollm2_main(args)
        return
    args.batch_size = args.batch_size or 32

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
