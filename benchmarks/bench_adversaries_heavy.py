"""Cost of the heavier adversaries on CPU: encoder fine-tuning, MMD tests, likelihood scoring.

Prints seconds per 1,000 items (encoder fit per epoch and predict; likelihood scoring and
the judge on a reference model when ``--reference SPEC``) and the MMD test time (Gram + permutations) at
several sample sizes, side by side, so a user can size ``bbi attack --adversary ...``.

    python benchmarks/bench_adversaries_heavy.py [--encoder-items 1000] [--reference zoo:teacher]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from discriminators.synthetic import response  # noqa: E402


def items(n_prompts: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic teacher/other items of realistic length (1-4 sentences); other = resample
    with a sign-off artifact on a third of its responses."""
    rng = np.random.default_rng(seed)
    rows, y = [], []
    for i in range(n_prompts):
        prompt = f"Tell me about {' '.join(rng.choice(['river', 'data', 'music', 'city'], 2))}?"
        for lab in (1, 0):
            text = response(prompt, rng)
            if lab == 0 and rng.random() < 1 / 3:
                text += " Hope this helps!"
            rows.append({"prompt_id": f"b{i}", "category": "c", "prompt": prompt, "response": text})
            y.append(lab)
    return pd.DataFrame(rows), np.array(y)


def bench_encoder(n_items: int) -> list[tuple[str, float]]:
    from discriminators.encoder import EncoderAdversary

    X, y = items(n_items // 2, seed=0)
    Xt, yt = items(n_items // 2, seed=1)
    adv = EncoderAdversary(epochs=1, min_steps=0, progress=True, random_state=0)
    t0, c0 = time.perf_counter(), time.process_time()
    adv.fit(X, y)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    p = adv.predict_proba(Xt)
    pred_s, pred_cpu = time.perf_counter() - t0, time.process_time() - c0
    acc = float(np.mean((p > 0.5) == yt))
    scale = 1000 / n_items
    return [
        (f"encoder fit, 1 epoch, wall s / 1000 items (n={n_items})", fit_s * scale),
        (f"encoder fit, 1 epoch, CPU s / 1000 items (n={n_items})", fit_cpu * scale),
        (f"encoder predict, wall s / 1000 items (n={n_items})", pred_s * scale),
        (f"encoder predict, CPU s / 1000 items (n={n_items})", pred_cpu * scale),
        ("encoder held-out accuracy (planted 1/3 sign-off; ceiling 0.67)", acc),
    ]


def bench_mmd(sizes: list[int]) -> list[tuple[str, float]]:
    from discriminators.mmd import MMDTest

    out = []
    rng = np.random.default_rng(0)
    for n in sizes:
        X, _ = items(n, seed=2)
        t, o = X.iloc[0::2].reset_index(drop=True), X.iloc[1::2].reset_index(drop=True)
        emb = rng.normal(size=(2 * n, 384)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        t = t.assign(embedding=list(emb[:n]))
        o = o.assign(embedding=list(emb[n:]))
        for kernel in ("embedding", "hamming"):
            adv = MMDTest(kernel=kernel, n_permutations=1000)
            t0 = time.perf_counter()
            res = adv.two_sample(t, o, np.random.default_rng(0))
            out.append(
                (
                    f"mmd {kernel}, {n} pairs, 1000 permutations: s (p={res['p']:.3f})",
                    time.perf_counter() - t0,
                )
            )
    return out


def bench_reference(spec: str, n_items: int) -> list[tuple[str, float]]:
    from bbi.backends import load_backend
    from discriminators.judge import JudgeAdversary
    from discriminators.likelihood import LikelihoodAdversary

    teacher = load_backend(spec, device="cpu")
    config = spec
    X, y = items(n_items // 2, seed=3)
    adv = LikelihoodAdversary(reference=teacher, progress=True)
    t0 = time.perf_counter()
    adv.prepare(X)
    score_s = time.perf_counter() - t0
    out = [(f"likelihood scoring on {config}, s / 1000 responses", score_s * 1000 / len(X))]
    pairs = X.iloc[0::2].reset_index(drop=True)[["prompt_id", "category", "prompt"]]
    pairs["response_a"] = X["response"].iloc[0::2].to_numpy()
    pairs["response_b"] = X["response"].iloc[1::2].to_numpy()
    pairs = pairs.iloc[:100]
    judge = JudgeAdversary(judge=teacher, k=3, progress=True).fit(pairs, np.ones(len(pairs), int))
    t0 = time.perf_counter()
    judge.predict_proba(pairs)
    out.append(
        (
            f"judge (logprob, k=3) on {config}, s / 1000 pairs (both orders)",
            (time.perf_counter() - t0) * 1000 / len(pairs),
        )
    )
    out.append(("judge kept fraction (consistent verdicts)", judge.kept_fraction))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder-items", type=int, default=1000)
    ap.add_argument("--mmd-sizes", default="500,2000,4000")
    ap.add_argument(
        "--reference", default=None, help="model spec for likelihood/judge timings (zoo:teacher)"
    )
    ap.add_argument("--skip-encoder", action="store_true")
    args = ap.parse_args()
    import torch

    rows: list[tuple[str, float]] = []
    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}")
    if not args.skip_encoder:
        rows += bench_encoder(args.encoder_items)
    rows += bench_mmd([int(s) for s in args.mmd_sizes.split(",") if s])
    if args.reference:
        rows += bench_reference(args.reference, 400)
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:10.3f}")


if __name__ == "__main__":
    main()
