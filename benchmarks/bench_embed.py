"""MiniLM embedding throughput and faithfulness: torch (reference) vs faster CPU backends.

Run: python benchmarks/bench_embed.py [--texts 2000] [--rounds 3] [--batch-sweep]

Texts are response-like: references from ``probes.training_corpus()`` alone, prompt plus
reference, and 3-10 references of one category joined into multi-paragraph answers (some
past MiniLM's 256-token limit). Every round encodes all texts once with each candidate, in
turn, after a warm-up; the tables give medians over rounds of texts/s (wall) and texts per
CPU-second of this process (steadier when other jobs share the cores), and each ratio to
torch. Faithfulness against the torch embeddings: per-text cosine (min, mean) and the
deviation of every pairwise similarity (max, mean abs).

Candidates:
- torch: sentence-transformers on torch, fp32, batch 64 (the reference).
- torch-bf16: the same under ``torch.autocast("cpu", dtype=torch.bfloat16)``.
- onnxruntime-fp32 / -int8: a local ONNX export, fused with onnxruntime's transformer
  optimizer; int8 = dynamic quantization of the MatMul weights (per channel). Skipped when
  ``onnx`` / ``onnxruntime`` are not installed (they are not bbi dependencies).
- openvino-f32 / openvino-bf16: ``bbi.similarity.Embedder`` (bf16 needs a CPU with native
  bf16; the default backend where there is one).
All but the first two batch texts by token length (32 per batch).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Encode = Callable[[list[str]], np.ndarray]


def make_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` response-like texts: short answers, prompt + answer, long multi-paragraph ones."""
    import probes

    by_cat: dict[str, list[dict]] = {}
    for rec in probes.training_corpus():
        if rec.get("reference"):
            by_cat.setdefault(rec["category"], []).append(rec)
    cats = sorted(by_cat)
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        pool = by_cat[cats[len(out) % len(cats)]]
        rec = rng.choice(pool)
        u = rng.random()
        if u < 0.55:
            out.append(rec["reference"])
        elif u < 0.85:
            out.append(rec["prompt"] + "\n\n" + rec["reference"])
        else:
            out.append("\n\n".join(r["reference"] for r in rng.sample(pool, rng.randint(3, 10))))
    return out


def _length_batches(tokenizer, texts: list[str], batch_size: int):
    """(rows, input_ids, attention_mask) per batch, longest texts first."""
    encs = tokenizer.encode_batch(texts)
    lengths = np.array([len(e.ids) for e in encs])
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        ids = np.zeros((len(rows), int(lengths[rows[0]])), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, j in enumerate(rows):
            ids[i, : lengths[j]] = encs[j].ids
            mask[i, : lengths[j]] = 1
        yield rows, ids, mask


def torch_candidates() -> dict[str, Encode]:
    import torch

    from bbi.similarity import Embedder

    ref = Embedder(backend="torch")

    def bf16(texts: list[str]) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return ref.encode(texts).astype(np.float32)

    return {"torch": ref.encode, "torch-bf16": bf16}


def onnxruntime_candidates(workdir: Path, batch_size: int) -> dict[str, Encode]:
    """fp32 (fused) and int8 onnxruntime runners on a local ONNX export, or {} if missing."""
    try:
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.transformers import optimizer
    except ImportError as exc:
        print(f"onnxruntime candidates skipped: {exc}")
        return {}
    import json
    import warnings

    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from bbi.similarity import embedding_model_path, mean_pooled_encoder

    src = embedding_model_path()
    encoder = AutoModel.from_pretrained(str(src)).eval()

    raw, fused, int8 = (workdir / f"{n}.onnx" for n in ("raw", "fused", "int8"))
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    axes = {"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}, "emb": {0: "b"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            mean_pooled_encoder(encoder),
            (ids, (ids != 0).long()),
            str(raw),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["emb"],
            dynamic_axes=axes,
            opset_version=17,
        )
    opt = optimizer.optimize_model(str(raw), model_type="bert", num_heads=12, hidden_size=384)
    opt.save_model_to_file(str(fused))
    quantize_dynamic(
        str(fused),
        str(int8),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.no_padding()
    max_len = json.loads((src / "sentence_bert_config.json").read_text())["max_seq_length"]
    tok.enable_truncation(max_length=max_len)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()

    def runner(path: Path) -> Encode:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        def encode(texts: list[str]) -> np.ndarray:
            out = np.empty((len(texts), 384), dtype=np.float32)
            for rows, i, m in _length_batches(tok, texts, batch_size):
                out[rows] = sess.run(None, {"input_ids": i, "attention_mask": m})[0]
            return out

        return encode

    return {"onnxruntime-fp32": runner(fused), "onnxruntime-int8": runner(int8)}


def openvino_candidates(batch_sizes: list[int]) -> dict[str, Encode]:
    from bbi.similarity import Embedder

    out: dict[str, Encode] = {}
    for precision in ("f32", "bf16"):
        try:
            emb = Embedder(backend=f"openvino-{precision}")
        except Exception as exc:  # report and go on
            print(f"openvino-{precision} skipped: {exc}")
            continue
        if emb.backend != f"openvino-{precision}":
            print(f"openvino-{precision} skipped: the CPU runs {emb.backend}")
            continue
        for bs in batch_sizes:
            name = emb.backend if bs == emb.batch_size else f"{emb.backend} (batch {bs})"
            e = emb if bs == emb.batch_size else Embedder(backend=emb.backend, batch_size=bs)
            out[name] = e.encode
    return out


def _measure(fn: Encode, texts: list[str]) -> tuple[np.ndarray, float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    emb = fn(texts)
    return np.asarray(emb, dtype=np.float32), time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch/ORT/OpenVINO threads")
    ap.add_argument("--batch-sweep", action="store_true", help="also OpenVINO batch 16 and 64")
    ap.add_argument("--no-onnxruntime", action="store_true")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = make_texts(args.texts)
    from bbi.similarity import Embedder

    candidates = torch_candidates()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_onnxruntime:
            candidates.update(onnxruntime_candidates(Path(tmp), 32))
        candidates.update(openvino_candidates([16, 32, 64] if args.batch_sweep else [32]))

        tok = Embedder(backend="torch").model.tokenizer
        lengths = np.array([len(ids) for ids in tok(texts)["input_ids"]])
        print(
            f"python {sys.version.split()[0]}, torch {torch.__version__}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads; load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        print(
            f"{len(texts)} texts, tokens: median {np.median(lengths):.0f}, 95th pct "
            f"{np.percentile(lengths, 95):.0f}, max {lengths.max()}, "
            f"{int((lengths > 256).sum())} over 256 (truncated)"
        )
        for fn in candidates.values():  # warm-up (first-call allocations, JIT)
            fn(texts[:32])
        walls: dict[str, list[float]] = {n: [] for n in candidates}
        cpus: dict[str, list[float]] = {n: [] for n in candidates}
        embs: dict[str, np.ndarray] = {}
        for r in range(args.rounds):
            for name, fn in candidates.items():
                emb, wall, cpu = _measure(fn, texts)
                walls[name].append(wall)
                cpus[name].append(cpu)
                embs.setdefault(name, emb)
                print(f"  round {r + 1} {name}: {len(texts) / wall:.1f} texts/s", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}")

    ref = embs["torch"]
    ref_sim = ref @ ref.T
    iu = np.triu_indices(len(texts), k=1)
    base_wall = statistics.median(walls["torch"])
    base_cpu = statistics.median(cpus["torch"])
    print(
        "\n| backend | texts/s (wall) | x torch | texts per CPU-s | x torch "
        "| per-text cos min | mean | pair-sim dev max | mean |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in candidates:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        emb = embs[name]
        cos = (emb * ref).sum(1)
        dev = np.abs(emb @ emb.T - ref_sim)[iu]
        print(
            f"| {name} | {len(texts) / wall:.1f} | {base_wall / wall:.2f}x "
            f"| {len(texts) / cpu:.1f} | {base_cpu / cpu:.2f}x "
            f"| {cos.min():.6f} | {cos.mean():.6f} | {dev.max():.5f} | {dev.mean():.6f} |"
        )

    default = Embedder()
    shuffled = list(range(len(texts)))
    random.Random(1).shuffle(shuffled)
    a = default.encode(texts)
    b = default.encode([texts[i] for i in shuffled])[np.argsort(shuffled)]
    print(
        f"\ndefault backend {default.backend}: same texts in another order (other batch "
        f"companions): 1 - cosine max {float((1 - (a * b).sum(1)).max()):.2e}; "
        f"identical rerun: {bool(np.array_equal(a, default.encode(texts)))}"
    )


if __name__ == "__main__":
    main()
