"""A generation engine (``fast:``, bbi's static-cache decoder, or ``ct2:``, CTranslate2)
against batched HF ``generate``: speed, greedy agreement, and whether bbi's own attack can
tell the engine's samples from HF's.

Three parts, on the default pair (zoo:smollm2 and zoo:smollm2-pruned) at the default
generation settings (bbi.config.GenerationSettings: sampled, temperature 0.7, top-p 0.95,
96 new tokens, batches of 32):

1. speed: tokens/s (wall and per CPU second) of batched ``model.generate`` (left-padded,
   same prompts, same batches; benchmarks/bench_generate.py ``hf_batched``), of bbi's hf:
   backend and of the engine, side by side in one process;
2. greedy agreement: how many of N greedy answers of the engine equal the hf: backend's;
3. A/A: ``bbi probe run`` with the hf: teacher and the engine as its "student" on N
   prompts of the default suite (stratified), then ``bbi attack``: the engine passes when
   no adversary tells the two apart in either direction, as one family (``aa_family``:
   exact two-sided sign tests on each adversary's test-prompt contributions, Holm across
   the adversaries at 0.05), and the verdict is not "distinguishable". Each adversary's
   95% eps CI is printed beside it; "no CI excludes 0" alone is not the rule: on exact A/A
   comparisons (a 300-prompt run's responses with the labels swapped at random within
   prompts) the CIs of surface, tfidf and pairwise missed 0 somewhere in 28 of 200, the
   Holm family rejected in 4 of 200 (docs/statistics.md, "Worse than chance").

    python benchmarks/bench_engine.py [--engine fast] [--dtype bfloat16] [--n-speed 64]
        [--n-greedy 100] [--n-aa 1000] [--compute-type int8] [--threads 1] [--like-run]
        [--skip-aa] [--out runs/bench-engine]

``--engine fast`` (the default) times ``fast:`` at each ``--dtype`` given (repeatable;
default float32 and bfloat16); ``--engine ct2`` times ``ct2:`` at ``--compute-type``.

``--like-run`` times the prompts of one length-sorted batch of a 1,000-prompt run instead
of prompts spread across the suite (the engine decodes a batch's prompt-length spread
step by step; a run's sorted batches have almost none).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_generate.py
sys.path.insert(0, str(Path(__file__).parent))

SPECS = ("zoo:smollm2", "zoo:smollm2-pruned")


def run_like_prompts(n: int, of: int = 1000) -> list[str]:
    """``n`` prompts as one batch of a run over ``of`` suite prompts sees them: backends sort
    a run's prompts by token length before batching, so a batch holds prompts of nearly one
    length (CTranslate2 decodes a batch's length spread step by step before it generates;
    over 1,000 default-suite prompts a sorted batch of 32 spans 1 token on average, while
    32 prompts taken across the suite span about 50). The batch around the median length."""
    from transformers import AutoTokenizer

    from bbi import smollm2
    from bbi.chat import format_prompt
    from probes import default_suite

    tok = AutoTokenizer.from_pretrained(str(smollm2.model_path("smollm2")))
    suite = [r["prompt"] for r in default_suite()]
    pool = suite[:: max(1, len(suite) // of)][:of]
    pool.sort(key=lambda p: len(tok(format_prompt(tok, p)[0], add_special_tokens=False).input_ids))
    mid = max(0, len(pool) // 2 - n // 2)
    return pool[mid : mid + n]


def engines(args) -> list[tuple[str, str, dict]]:
    """(label, spec prefix, model arguments) of each engine variant to measure."""
    if args.engine == "ct2":
        return [
            (
                f"ct2 {args.compute_type}",
                "ct2:",
                dict(compute_type=args.compute_type, threads=args.threads),
            )
        ]
    return [(f"fast {d}", "fast:", dict(dtype=d, threads=args.threads)) for d in args.dtype]


def speed(args, prompts: list[str]) -> list[dict]:
    """Each variant against batched ``generate`` and bbi's hf:, in one process; the
    baseline is timed before and after the engines (its mean is the reference), since
    on a shared machine the load drifts during a run."""
    from bench_generate import hf_batched, timed

    from bbi.backends import GenerationConfig, load_backend
    from bbi.config import GenerationSettings

    cfg = GenerationConfig.of(GenerationSettings())
    seeds = list(range(len(prompts)))
    count = lambda g: sum(x.n_tokens for x in g)  # noqa: E731
    rows = []
    for spec in args.spec:
        hf = load_backend(spec, device="cpu")
        engs = [(label, load_backend(pre + spec, **kw)) for label, pre, kw in engines(args)]
        hf.generate(prompts[:2], cfg, seeds[:2])  # warm-up
        for _, e in engs:
            e.generate(prompts[:2], cfg, seeds[:2])
        base = lambda hf=hf: hf_batched(hf, prompts, cfg)  # noqa: E731
        a1, ac1, _ = timed(base, lambda r: sum(map(len, r)))
        b, bc, _ = timed(lambda hf=hf: hf.generate(prompts, cfg, seeds), count)
        res = []
        for label, e in engs:
            c, cc, _ = timed(lambda e=e: e.generate(prompts, cfg, seeds), count)
            res.append((label, c, cc))
        a2, ac2, _ = timed(base, lambda r: sum(map(len, r)))
        a, ac = (a1 + a2) / 2, (ac1 + ac2) / 2
        line = (
            f"{spec:<20} HF generate {a:6.1f} tok/s ({a1:.1f}, {a2:.1f}) {ac:6.1f} tok/CPU-s"
            f" | bbi hf: {b:6.1f} ({b / a:4.2f}x)"
        )
        for label, c, cc in res:
            line += f" | {label}: {c:6.1f} tok/s, {c / a:4.2f}x wall, {cc / ac:4.2f}x CPU"
        print(line, flush=True)
        rows.append(dict(spec=spec, hf_generate=(a, ac), bbi_hf=(b, bc), engines=res))
        hf.close()
        for _, e in engs:
            e.close()
    return rows


def greedy_agreement(args, prompts: list[str]) -> list[tuple[str, int, int]]:
    from bbi.backends import GenerationConfig, load_backend
    from bbi.config import GenerationSettings

    cfg = GenerationConfig.of(GenerationSettings(temperature=0.0))
    seeds = list(range(len(prompts)))
    out = []
    for spec in args.spec:
        a = load_backend(spec, device="cpu").generate(prompts, cfg, seeds)
        for label, pre, kw in engines(args):
            b = load_backend(pre + spec, **kw).generate(prompts, cfg, seeds)
            same = sum(x.text == y.text for x, y in zip(a, b, strict=True))
            print(f"greedy {spec}: {same}/{len(prompts)} identical answers ({label})", flush=True)
            out.append((f"{spec} {label}", same, len(prompts)))
    return out


def aa_family(d_by_adversary: dict[str, list[float]], alpha: float = 0.05) -> dict[str, dict]:
    """Per adversary: the exact two-sided sign test of "eps = 0" on its per-test-prompt
    contributions d (in {-1, 0, 1}; under an A/A null each is symmetric about 0, so the
    nonzero ones are fair coin flips given the fitted adversary), Holm-adjusted across the
    adversaries; ``rejected`` where the adjusted p < alpha. Two-sided: an adversary far
    *below* chance also says the test split's two samples differ."""
    import numpy as np
    from scipy.stats import binomtest

    from bbi import stats

    out: dict[str, dict] = {}
    for name, d in d_by_adversary.items():
        d = np.asarray(d, dtype=float)
        pos, neg = int((d > 0).sum()), int((d < 0).sum())
        p = binomtest(pos, pos + neg, 0.5).pvalue if pos + neg else 1.0
        out[name] = {"n": len(d), "plus": pos, "minus": neg, "p": float(p)}
    for name, ph in zip(out, stats.holm([r["p"] for r in out.values()]), strict=True):
        out[name].update(p_holm=float(ph), rejected=bool(ph < alpha))
    return out


def aa_check(args) -> dict:
    """hf: teacher vs the engine as 'student' through bbi probe run + bbi attack (the
    last engine variant: with ``--engine fast`` the last ``--dtype``)."""
    spec = args.spec[0]
    label, pre, kw = engines(args)[-1]
    run = Path(args.out)
    bbi = [sys.executable, "-m", "bbi.app.cli"]
    t0 = time.perf_counter()
    subprocess.run(
        [
            *bbi,
            "probe",
            "run",
            "--teacher",
            spec,
            "--student",
            f"engine={pre}{spec}",
            "--student-args",
            ",".join(f"{k}={v}" for k, v in kw.items()),
            "--no-null",
            "--limit",
            str(args.n_aa),
            "--run",
            str(run),
            "--no-progress",
        ],
        check=True,
    )
    gen_s = time.perf_counter() - t0
    # The default budgets need a default-size run; a smaller one attacks with what it has.
    n_train = sum(
        json.loads(line)["split"] == "train"
        for line in (run / "suite.jsonl").read_text().splitlines()
        if line.strip()
    )
    budget = ["--budget", f"{n_train // 2},{2 * n_train}"] if 2 * n_train < 4000 else []
    subprocess.run(
        [*bbi, "attack", str(run), "--compare", "engine", *budget, "--no-progress"], check=True
    )
    res = json.loads((run / "results.json").read_text())
    comp = res["attack"]["comparisons"]["engine"]
    # The full-budget point's per-test-prompt contributions (attack/engine/NAME.scores.jsonl).
    d = {
        name: [
            json.loads(line)["d"]
            for line in (run / "attack" / "engine" / f"{name}.scores.jsonl")
            .read_text()
            .splitlines()
            if line.strip()
        ]
        for name, adv in comp["adversaries"].items()
        if adv["kind"] != "test"
    }
    family = aa_family(d)
    excluded = []
    for name, adv in comp["adversaries"].items():
        ci = (adv.get("eps") or {}).get("ci")
        if ci:
            f = family[name]
            print(
                f"  {name:<14} eps CI [{ci[0]:+.3f}, {ci[1]:+.3f}]  d +{f['plus']}/-{f['minus']} "
                f"of {f['n']}: two-sided p {f['p']:.3g}, Holm {f['p_holm']:.3g}"
            )
            if ci[0] > 0 or ci[1] < 0:
                excluded.append(name)
    rejected = [name for name, f in family.items() if f["rejected"]]
    status = comp["verdict"]["status"]
    ok = not rejected and status != "distinguishable"
    print(
        f"A/A {spec} vs {pre}{spec} ({label}) on {comp.get('n_train')}+{comp.get('n_test')} "
        f"prompts: verdict {status}; told apart (Holm, either direction): {rejected or 'none'} "
        f"(uncorrected CIs excluding 0: {excluded or 'none'}) -> "
        f"{'PASS' if ok else 'FAIL'} (generation {gen_s:.0f}s)"
    )
    return dict(status=status, excluded=excluded, rejected=rejected, family=family, ok=ok)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", action="append", help="default: zoo:smollm2, zoo:smollm2-pruned")
    ap.add_argument("--n-speed", type=int, default=64)
    ap.add_argument("--n-greedy", type=int, default=100)
    ap.add_argument("--n-aa", type=int, default=1000)
    ap.add_argument("--engine", choices=("fast", "ct2"), default="fast")
    ap.add_argument("--dtype", action="append", help="fast: precisions (float32, bfloat16)")
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--threads", type=int, default=1, help="torch and CTranslate2 threads")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument(
        "--like-run",
        action="store_true",
        help="time prompts of one length-sorted batch of a 1,000-prompt run (see run_like_prompts)",
    )
    ap.add_argument("--skip-aa", action="store_true")
    ap.add_argument("--out", default="runs/bench-engine")
    args = ap.parse_args()
    args.spec = args.spec or list(SPECS)
    args.dtype = args.dtype or ["float32", "bfloat16"]
    import torch
    from bench_generate import _prompts

    torch.set_num_threads(args.threads)
    print(
        f"# bench_engine: threads={args.threads}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}"
    )
    if not args.skip_speed:
        speed(args, run_like_prompts(args.n_speed) if args.like_run else _prompts(args.n_speed))
    if args.n_greedy:
        greedy_agreement(args, _prompts(args.n_greedy))
    if not args.skip_aa:
        aa_check(args)
    print(f"# load avg {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
