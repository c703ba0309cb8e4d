"""Distillation throughput: ``distill.lora.distill_lora`` vs a plain TRL ``SFTTrainer``.

Same small Llama-architecture model, same data (a run dir's teacher responses), same
LoRA config, same batch size, learning rate and number of optimizer steps, completion-only
loss on both sides, fp32. Tokens/s = non-pad tokens of the examples trained on / training
wall time (model loading and tokenization excluded on both sides). Runs alternate
(ours, TRL, ours, TRL, ...) so background load hits both alike; medians are reported,
in wall time and in this process's CPU time (steadier on a shared machine; use
``--threads 1`` there so CPU time is not inflated by spinning threads).

    python benchmarks/bench_distill.py [--examples 512] [--repeats 2] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bbi.chat import format_prompt, response_suffix  # noqa: E402
from bbi.config import LoraSettings  # noqa: E402
from bbi.runstore import RunDir, append_jsonl  # noqa: E402
from distill.lora import DistillDataset, distill_lora, distillation_pairs, split_eval  # noqa: E402

WORDS = [f"w{i}" for i in range(60)] + [
    "red",
    "blue",
    "green",
    "gold",
    "pink",
    "gray",
    "cyan",
    "lime",
    "navy",
    "teal",
]


def build_model(root: Path, hidden: int, layers: int, vocab: int = 0) -> Path:
    """A BPE tokenizer trained here and a randomly initialised Llama, saved like any HF model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(2000)]
    corpus += ["User: Assistant: Summarise: answer done."]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=1000,
            special_tokens=["<pad>", "<unk>", "<eos>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=max(vocab, len(hf_tok)), hidden_size=hidden, intermediate_size=hidden * 4,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=512, pad_token_id=hf_tok.pad_token_id,
        eos_token_id=hf_tok.eos_token_id, bos_token_id=None,
    )  # fmt: skip
    path = root / "model"
    LlamaForCausalLM(cfg).save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path


def build_run(root: Path, model: Path, n: int) -> RunDir:
    """A run whose teacher answers each train prompt (a few test prompts are left out)."""
    run = RunDir(root / "run", create=True)
    rng = random.Random(1)
    suite, responses = [], []
    for i in range(n + 16):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 20))]
        pid = f"factual-{i:05d}"
        suite.append({"id": pid, "category": "factual", "subcategory": "bench",
                      "prompt": "Summarise: " + " ".join(words),
                      "split": "train" if i < n else "test", "reference": None,
                      "source": "generated", "perturbation": None, "base_id": None})  # fmt: skip
        answer = " ".join(sorted(words)[: rng.randint(8, 30)]) + " answer done."
        responses.append({"prompt_id": pid, "sample": 0, "text": answer, "n_tokens": 0,
                          "finish_reason": "stop"})  # fmt: skip
    append_jsonl(run.suite_path, suite)
    append_jsonl(run.responses_path("teacher"), responses)
    run.write_config(
        {"models": {"teacher": {"spec": "zoo:teacher", "role": "teacher"},
                    "student": {"spec": f"hf:{model}", "role": "student"}}}
    )  # fmt: skip
    return run


def run_ours(run: RunDir, opts: dict, out: Path) -> tuple[float, float, float, int]:
    settings = LoraSettings(**opts, eval_fraction=0.0)
    res = distill_lora(run, out=out, alias="bench", settings=settings, progress=False)
    rec = res.record
    return rec["train_time_s"], rec["train_cpu_s"], rec["train_loss"], rec["steps"]


def run_trl(
    run: RunDir, model_path: Path, opts: dict, steps: int, out: Path
) -> tuple[float, float]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(model_path)
    pairs = distillation_pairs(run)
    rows = []
    for rec in pairs.itertuples(index=False):
        text, fmt = format_prompt(tok, rec.prompt)
        rows.append(
            {"prompt": text, "completion": response_suffix(fmt, rec.response, tok.eos_token)}
        )
    torch.manual_seed(opts["seed"])
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    peft_config = LoraConfig(
        r=opts["rank"], lora_alpha=opts["alpha"], lora_dropout=opts["dropout"],
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj"],
        bias="none", task_type="CAUSAL_LM",
    )  # fmt: skip
    cfg = SFTConfig(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=opts["batch_size"],
        gradient_accumulation_steps=opts["grad_accum"], learning_rate=opts["lr"],
        lr_scheduler_type="linear", warmup_steps=int(0.03 * steps), weight_decay=0.0, max_grad_norm=1.0,
        max_length=opts["max_length"], completion_only_loss=True, packing=False,
        bf16=False, fp16=False, use_cpu=not torch.cuda.is_available(), seed=opts["seed"],
        save_strategy="no", eval_strategy="no", report_to="none", logging_steps=10**6,
        disable_tqdm=True, dataloader_num_workers=0,
        # TRL turns activation checkpointing on by default; distill_lora does not use it.
        gradient_checkpointing=False,
    )  # fmt: skip
    trainer = SFTTrainer(
        model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
        peft_config=peft_config,
    )  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    out_ = trainer.train()
    return time.perf_counter() - t0, time.process_time() - c0, float(out_.training_loss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument(
        "--vocab", type=int, default=0,
        help="pad the model's vocabulary to this size (real LMs: 32k-150k; 0: tokenizer's)",
    )  # fmt: skip
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = dict(rank=16, alpha=32.0, dropout=0.05, epochs=1, lr=2e-4,
                batch_size=args.batch_size, grad_accum=1, max_length=256, seed=0)  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_model(root, args.hidden, args.layers, args.vocab)
        run = build_run(root, model, args.examples)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model)
        train, _ = split_eval(distillation_pairs(run), 0.0, 0)
        ds = DistillDataset(train, tok, opts["max_length"])
        tokens = sum(len(ex["input_ids"]) for ex in ds.examples) * opts["epochs"]
        walls: dict[str, list[float]] = {"distill_lora": [], "TRL SFTTrainer": []}
        cpus: dict[str, list[float]] = {"distill_lora": [], "TRL SFTTrainer": []}
        steps = 0
        for r in range(args.repeats):
            w, c, loss_o, steps = run_ours(run, opts, root / f"ours{r}")
            walls["distill_lora"].append(w)
            cpus["distill_lora"].append(c)
            w2, c2, loss_t = run_trl(run, model, opts, steps, root / f"trl{r}")
            walls["TRL SFTTrainer"].append(w2)
            cpus["TRL SFTTrainer"].append(c2)
            print(f"repeat {r}: distill_lora {w:.2f} s wall, {c:.2f} s CPU (loss {loss_o:.4f}) | "
                  f"TRL {w2:.2f} s wall, {c2:.2f} s CPU (loss {loss_t:.4f})")  # fmt: skip
        print()
        vocab = max(args.vocab, len(tok))
        print(f"model: Llama hidden {args.hidden}, {args.layers} layers, vocab {vocab}; "
              f"{len(ds)} examples, {tokens} tokens, {steps} steps of batch {opts['batch_size']}, "
              f"torch threads {torch.get_num_threads()}, {args.repeats} repeats (median)")  # fmt: skip
        print(f"{'trainer':<16}{'wall s':>9}{'tok/s wall':>12}{'CPU s':>9}{'tok/s CPU':>11}")
        med = {k: (statistics.median(walls[k]), statistics.median(cpus[k])) for k in walls}
        for name, (w, c) in med.items():
            print(f"{name:<16}{w:>9.2f}{tokens / w:>12.0f}{c:>9.2f}{tokens / c:>11.0f}")
        (wo, co), (wt, ct) = med["distill_lora"], med["TRL SFTTrainer"]
        print(f"distill_lora / TRL tokens/s: {wt / wo:.2f}x wall, {ct / co:.2f}x CPU time")


if __name__ == "__main__":
    main()
