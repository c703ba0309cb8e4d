"""Black-box sequence-level distillation: LoRA fine-tuning of a student on teacher responses.

The student is fine-tuned (peft LoRA) on the teacher's responses to the TRAIN split of a
run, with the loss on response tokens only, in exactly the prompt format the probe uses
(``bbi.chat.format_prompt`` / ``response_suffix``), so what the student learns is what
``bbi probe`` will later ask of it. Test prompts never enter the data; the held-out eval
set is carved out of the train split by prompt id.

The loop is hand-written on ``accelerate.Accelerator`` rather than a trainer: the loss
mask is explicit, and a checkpoint holds everything needed to continue bit-for-bit
(adapter, optimizer, scheduler, RNG states, step/epoch, the epoch's data order). A
checkpoint that does not match the requested run (other data, hyperparameters, base
model or process count) is refused, never silently dropped.

Multi-GPU needs no code change; launch the console script or the module under Accelerate::

    accelerate launch --multi_gpu --num_processes 4 $(which bbi) distill lora runs/demo
    accelerate launch --multi_gpu --num_processes 4 -m bbi.cli distill lora runs/demo

Both forms work (``bbi/cli/__main__.py`` makes the package runnable); so does
``torchrun --nproc_per_node 4 $(which bbi) ...``. A multi-process run on CPU (gloo) needs
``ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 $(which bbi) ...`` since
``accelerate launch --cpu`` starts one process. ``--batch-size`` is per process (the
global batch is batch size x processes x grad accum); eval loss is gathered over all
processes; only the main process writes files.
A checkpoint records the process count and is refused under another one (the data order
per process would differ). Mixed precision comes from ``accelerate launch
--mixed_precision bf16`` / ``accelerate config`` unless ``--mixed-precision`` is given.

The output directory is a standard peft ``save_pretrained`` directory
(``adapter_config.json``, ``adapter_model.safetensors``) plus ``bbi_distill.json``
(provenance and metrics) and ``checkpoint/`` (for ``--resume``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bbi.chat import format_prompt, response_suffix
from bbi.errors import BbiError
from bbi.runstore import RunDir, check_alias, write_json
from bbi.specs import LORA_SEP

IGNORE_INDEX = -100
CHECKPOINT_DIR = "checkpoint"
PROVENANCE_FILE = "bbi_distill.json"
FORMAT_VERSION = 1

# q/k/v/o + MLP projections: the names shared by llama, qwen2/3, mistral, gemma, olmo, ...
LLAMA_STYLE_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ARCH_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj"],
    "gpt_bigcode": ["c_attn", "c_proj"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}
# Architectures whose projections are transformers' Conv1D (weights stored transposed).
CONV1D_ARCHS = {"gpt2", "gpt_bigcode"}


# ---------------------------------------------------------------------------------------
# options and results
# ---------------------------------------------------------------------------------------
@dataclass
class LoraHParams:
    """Everything that shapes the trained adapter; a resumed run must match it exactly."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] | None = None
    epochs: int = 2
    lr: float = 2e-4
    batch_size: int = 16
    grad_accum: int = 1
    max_length: int = 256
    eval_fraction: float = 0.05
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        checks = [
            (self.rank >= 1, f"--rank must be >= 1 (got {self.rank})"),
            (self.alpha > 0, f"--alpha must be > 0 (got {self.alpha})"),
            (0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1) (got {self.dropout})"),
            (self.epochs >= 1, f"--epochs must be >= 1 (got {self.epochs})"),
            (self.lr > 0 and math.isfinite(self.lr), f"--lr must be > 0 (got {self.lr})"),
            (self.batch_size >= 1, f"--batch-size must be >= 1 (got {self.batch_size})"),
            (self.grad_accum >= 1, f"--grad-accum must be >= 1 (got {self.grad_accum})"),
            (self.max_length >= 2, f"--max-length must be >= 2 (got {self.max_length})"),
            (
                0.0 <= self.eval_fraction < 1.0,
                f"--eval-fraction must be in [0, 1) (got {self.eval_fraction})",
            ),
            (0.0 <= self.warmup_ratio < 1.0, "warmup ratio must be in [0, 1)"),
            (self.max_grad_norm > 0, "max grad norm must be > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise BbiError(msg)
        if self.target_modules is not None and not [t for t in self.target_modules if t]:
            raise BbiError("--target-modules needs at least one module name")


@dataclass
class LoraResult:
    """What a distillation produced; ``record`` is results.json["distill"][alias]."""

    alias: str
    spec: str
    adapter_dir: Path
    completed: bool
    record: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def distillation_pairs(run: RunDir, teacher_alias: str | None = None) -> pd.DataFrame:
    """The teacher's (prompt, response) pairs on the TRAIN split, every sample.

    Test prompts are dropped here, the one place data enters distillation, so nothing
    downstream can leak them into training.
    """
    teacher_alias = teacher_alias or run.teacher_alias()
    suite = run.suite()
    if "split" not in suite.columns:
        raise BbiError(f"{run.suite_path}: suite records have no 'split' field")
    responses = run.responses(teacher_alias)
    if responses.empty:
        raise BbiError(f"{run.path}: model {teacher_alias!r} has no responses to distil from")
    train = suite[suite["split"] == "train"]
    df = responses[responses["prompt_id"].isin(train.index)].copy()
    if df.empty:
        raise BbiError(
            f"{run.path}: none of {teacher_alias!r}'s responses answer a train-split prompt"
        )
    df["prompt"] = train.loc[df["prompt_id"], "prompt"].astype(str).values
    df["split"] = train.loc[df["prompt_id"], "split"].values
    df["response"] = df["text"].fillna("").astype(str)
    df = df.sort_values(["prompt_id", "sample"], kind="stable").reset_index(drop=True)
    return df[["prompt_id", "sample", "split", "prompt", "response"]]


def split_eval(
    pairs: pd.DataFrame, eval_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out a seeded fraction of train PROMPTS (all their samples) for eval loss."""
    ids = np.array(sorted(pairs["prompt_id"].unique()))
    n_eval = 0
    if eval_fraction > 0 and len(ids) >= 2:
        # At least one prompt, and never all of them.
        n_eval = min(max(int(round(eval_fraction * len(ids))), 1), len(ids) - 1)
    rng = np.random.default_rng(seed)
    eval_ids = set(rng.permutation(ids)[:n_eval].tolist())
    mask = pairs["prompt_id"].isin(eval_ids)
    return pairs[~mask].reset_index(drop=True), pairs[mask].reset_index(drop=True)


def encode_pair(
    tokenizer: Any, prompt: str, response: str, max_length: int
) -> dict[str, list[int]] | None:
    """Token ids and labels for one (prompt, response): labels are -100 on the prompt.

    Prompt and response are tokenized separately and concatenated so the boundary is
    exactly where the probe's generation starts. Returns None when the prompt alone
    fills ``max_length`` (no response token would be trained on).
    """
    text, fmt = format_prompt(tokenizer, prompt)
    # A chat template writes its own special tokens; the plain format gets the usual ones.
    prompt_ids = tokenizer(text, add_special_tokens=(fmt == "plain"))["input_ids"]
    eos = tokenizer.eos_token
    resp_ids = tokenizer(response_suffix(fmt, response, eos), add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None and (
        not resp_ids or resp_ids[-1] != tokenizer.eos_token_id
    ):
        resp_ids = [*resp_ids, tokenizer.eos_token_id]
    if len(prompt_ids) >= max_length:
        return None
    resp_ids = resp_ids[: max_length - len(prompt_ids)]
    return {
        "input_ids": [*prompt_ids, *resp_ids],
        "labels": [IGNORE_INDEX] * len(prompt_ids) + list(resp_ids),
    }


class DistillDataset(Dataset):
    """Pre-tokenized examples; ``prompt_ids`` is kept so tests can audit what was used."""

    def __init__(self, pairs: pd.DataFrame, tokenizer: Any, max_length: int):
        self.examples: list[dict[str, list[int]]] = []
        self.prompt_ids: list[str] = []
        self.n_skipped = 0
        for rec in pairs.itertuples(index=False):
            enc = encode_pair(tokenizer, rec.prompt, rec.response, max_length)
            if enc is None:
                self.n_skipped += 1
                continue
            self.examples.append(enc)
            self.prompt_ids.append(rec.prompt_id)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.examples[i]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for pid, ex in zip(self.prompt_ids, self.examples, strict=True):
            h.update(pid.encode())
            h.update(np.asarray(ex["input_ids"], dtype=np.int64).tobytes())
            h.update(np.asarray(ex["labels"], dtype=np.int64).tobytes())
        return "sha256:" + h.hexdigest()


class Collator:
    """Right-pads a batch; padding is masked out of attention and loss."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(ex["input_ids"]) for ex in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, ex in enumerate(batch):
            n = len(ex["input_ids"])
            ids[i, :n] = torch.tensor(ex["input_ids"])
            labels[i, :n] = torch.tensor(ex["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class _FixedOrderSampler(Sampler[int]):
    """Yields a given order; the order is part of the checkpoint, so resume replays it."""

    def __init__(self, order: list[int]):
        self.order = order

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n).tolist()


def token_losses(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example summed next-token loss over response tokens, and their counts.

    Logits are only computed from the first position any example of the batch trains on
    (``logits_to_keep``, where the model supports it): the output layer over the prompt
    prefix is wasted work, and with large vocabularies it is a large share of the step.
    """
    labels = batch["labels"][:, 1:]
    trained = labels != IGNORE_INDEX
    cols = trained.any(dim=0).nonzero()
    start = int(cols[0]) if len(cols) else 0
    kwargs: dict[str, Any] = {}
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = torch.arange(
            start, labels.size(1), device=batch["input_ids"].device
        )
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    logits = out.logits if kwargs else out.logits[:, start : labels.size(1)]
    labels = labels[:, start:]
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(labels.shape)
    return loss.sum(dim=1), (labels != IGNORE_INDEX).sum(dim=1)


def _accepts_logits_to_keep(model: Any) -> bool:
    """Whether the underlying causal LM's forward takes ``logits_to_keep``."""
    import inspect

    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------
def normalize_base_spec(spec: str) -> str:
    """Canonical base spec (``hf:...`` / ``zoo:...``); only local-weight kinds can be tuned."""
    from bbi.specs import parse_spec

    ms = parse_spec(spec)
    if ms.kind not in ("hf", "zoo"):
        raise BbiError(f"cannot fine-tune {spec!r}: LoRA needs weights (an hf: or zoo: spec)")
    if ms.adapter:
        raise BbiError(
            f"student {spec!r} already carries a LoRA adapter; distil from its base model "
            "(or merge the adapter into a new checkpoint first)"
        )
    return str(ms)


def load_student(spec: str, dtype: str = "float32") -> tuple[Any, Any, str]:
    """(model on CPU, tokenizer, weights fingerprint) for an ``hf:``/``zoo:`` spec.

    Loading goes through ``bbi.backends`` so spec resolution, offline rules and error
    messages are the probe's; Accelerate then places the model. The fingerprint lets a
    resumed run refuse a checkpoint made on other weights behind the same spec.
    """
    from bbi.backends.hf import _digest, load_hf_parts
    from bbi.specs import parse_spec

    ms = parse_spec(normalize_base_spec(spec))
    if ms.kind == "zoo":
        from bbi import zoo

        path = zoo.model_path(ms.name_or_path)
        model, tok, _, parts = load_hf_parts(ms, device="cpu", dtype=dtype, base_path=str(path))
        fp = zoo.fingerprint(ms.name_or_path)
    else:
        model, tok, _, parts = load_hf_parts(ms, device="cpu", dtype=dtype)
        fp = _digest(parts)
    return model, tok, fp


def default_target_modules(model: Any) -> list[str] | str:
    """Per-architecture LoRA targets: attention + MLP projections where names are known.

    Falls back to peft's own per-architecture table, then to every linear layer.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", "") or ""
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if model_type in ARCH_TARGETS:
        found = [t for t in ARCH_TARGETS[model_type] if t in leaf_names]
        if found:
            return found
    found = [t for t in LLAMA_STYLE_TARGETS if t in leaf_names]
    if len(found) >= 4:
        return found
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT

    if model_type in PEFT:
        return PEFT[model_type]
    return "all-linear"


def make_lora_model(model: Any, hp: LoraHParams) -> Any:
    """Wrap the base model with a LoRA adapter (bad target names are a user error)."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = hp.target_modules or default_target_modules(model)
    model_type = getattr(model.config, "model_type", "")
    config = LoraConfig(
        r=hp.rank,
        lora_alpha=hp.alpha,
        lora_dropout=hp.dropout,
        target_modules=targets,
        bias="none",
        task_type=TaskType.CAUSAL_LM,
        fan_in_fan_out=model_type in CONV1D_ARCHS,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise BbiError(f"LoRA target modules {targets!r}: {str(exc).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------
def _private_generator() -> torch.Generator:
    # Loaders draw a base seed per iteration; from a private generator that draw leaves
    # the global RNG (LoRA dropout) untouched, so a resumed run sees the same masks.
    return torch.Generator().manual_seed(0)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(_tuplify(state["python"])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


def _save_checkpoint(
    accelerator: Any, model: Any, optimizer: Any, scheduler: Any, ckpt: Path, state: dict
) -> None:
    """Write a complete checkpoint next to the old one, then swap: a crash keeps one valid."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        weights = get_peft_model_state_dict(accelerator.unwrap_model(model))
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in weights.items()},
            tmp / "adapter.safetensors",
        )
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if accelerator.scaler is not None:  # fp16 loss scale
            torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / "state.json", state)
        old = ckpt.with_name(ckpt.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if ckpt.exists():
            ckpt.rename(old)
        tmp.rename(ckpt)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _load_checkpoint_state(ckpt: Path) -> dict:
    path = ckpt / "state.json"
    if not path.exists():
        raise BbiError(f"--resume: no checkpoint in {ckpt.parent} (nothing to resume)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BbiError(f"{path}: invalid checkpoint state ({exc.msg})") from None


def _check_compatible(saved: dict, expected: dict) -> None:
    """A checkpoint from other data/settings cannot continue this run: say what differs."""
    diffs = []
    for key, value in expected.items():
        have = saved.get(key)
        if isinstance(value, dict) and isinstance(have, dict):
            diffs += [
                f"{key}.{k}: checkpoint {have.get(k)!r} != requested {v!r}"
                for k, v in value.items()
                if have.get(k) != v
            ]
        elif have != value:
            diffs.append(f"{key}: checkpoint {have!r} != requested {value!r}")
    if diffs:
        raise BbiError("--resume: checkpoint does not match this run (" + "; ".join(diffs) + ")")


def _torch_load(path: Path) -> Any:
    # weights_only: tensors and plain containers only, never arbitrary pickled objects.
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------
def pick_student_spec(run: RunDir) -> str:
    """The run's student spec: alias ``student`` if present, else the only student."""
    models = run.models()
    students = {a: m for a, m in models.items() if m.get("role") == "student" and m.get("spec")}
    if "student" in students:
        return students["student"]["spec"]
    if len(students) == 1:
        return next(iter(students.values()))["spec"]
    raise BbiError(
        f"{run.path}: cannot tell which student to fine-tune "
        f"({len(students)} student specs in run.yaml); pass --student SPEC"
    )


def distill_lora(
    run: RunDir,
    *,
    teacher_alias: str | None = None,
    student: str | None = None,
    alias: str = "student_lora",
    out: str | os.PathLike | None = None,
    rank: int = 16,
    alpha: float = 32.0,
    dropout: float = 0.05,
    target_modules: list[str] | None = None,
    epochs: int = 2,
    lr: float = 2e-4,
    batch_size: int = 16,
    grad_accum: int = 1,
    max_length: int = 256,
    seed: int = 0,
    eval_fraction: float = 0.05,
    warmup_ratio: float = 0.03,
    save_every_steps: int = 0,
    stop_after_steps: int | None = None,
    resume: bool = False,
    mixed_precision: str | None = None,
    dtype: str = "float32",
    progress: bool = True,
) -> LoraResult:
    """Fine-tune a LoRA adapter on the teacher's train-split responses; register the student.

    ``save_every_steps`` adds checkpoints between the per-epoch ones; ``stop_after_steps``
    ends the session (with a checkpoint) after that many optimizer steps in total, to be
    continued with ``resume=True`` (useful for preemptible slots). Only a completed run
    writes results.json["distill"][alias] and adds ``alias`` to run.yaml. ``dtype`` is the
    base weights' dtype (the adapter trains in fp32); ``mixed_precision`` overrides
    Accelerate's (``no``/``fp16``/``bf16``). ``eval_loss_per_epoch[0]`` is the base model's
    held-out loss before training (empty when ``eval_fraction`` is 0).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    t_start = time.perf_counter()
    hp = LoraHParams(
        rank=rank,
        alpha=alpha,
        dropout=dropout,
        target_modules=list(target_modules) if target_modules else None,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        eval_fraction=eval_fraction,
        warmup_ratio=warmup_ratio,
        seed=seed,
    )
    hp.validate()
    if save_every_steps < 0:
        raise BbiError(f"--save-every-steps must be >= 0 (got {save_every_steps})")
    if stop_after_steps is not None and stop_after_steps < 1:
        raise BbiError(f"--stop-after-steps must be >= 1 (got {stop_after_steps})")
    check_alias(alias)
    teacher_alias = teacher_alias or run.teacher_alias()
    models = run.models()
    if alias == teacher_alias or models.get(alias, {}).get("role") in ("teacher", "null"):
        raise BbiError(f"alias {alias!r} is taken by a teacher model; choose another --alias")
    base_spec = normalize_base_spec(student or pick_student_spec(run))
    out_dir = Path(out) if out is not None else run.path / "adapters" / alias
    ckpt = out_dir / CHECKPOINT_DIR
    saved = _load_checkpoint_state(ckpt) if resume else None

    # Data first: a run without usable teacher responses fails before any model loads.
    pairs = distillation_pairs(run, teacher_alias)
    train_pairs, eval_pairs = split_eval(pairs, hp.eval_fraction, hp.seed)
    if train_pairs.empty:
        raise BbiError(f"{run.path}: no training pairs left after holding out the eval set")

    accelerator = Accelerator(mixed_precision=mixed_precision)
    main = accelerator.is_main_process
    set_seed(hp.seed)
    model, tokenizer, base_fingerprint = load_student(base_spec, dtype)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise BbiError(f"{base_spec}: tokenizer has neither a pad nor an EOS token")
    train_ds = DistillDataset(train_pairs, tokenizer, hp.max_length)
    eval_ds = DistillDataset(eval_pairs, tokenizer, hp.max_length)
    if len(train_ds) == 0:
        raise BbiError(f"every prompt is longer than --max-length {hp.max_length} tokens")
    model = make_lora_model(model, hp)
    collate = Collator(tokenizer.pad_token_id)

    def loader(order: list[int]) -> DataLoader:
        return accelerator.prepare(
            DataLoader(
                train_ds,
                batch_size=hp.batch_size,
                sampler=_FixedOrderSampler(order),
                collate_fn=collate,
                generator=_private_generator(),
            )
        )

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    eval_loader = (
        accelerator.prepare(
            DataLoader(
                eval_ds,
                batch_size=hp.batch_size,
                collate_fn=collate,
                generator=_private_generator(),
            )
        )
        if len(eval_ds)
        else None
    )
    micro_per_epoch = len(loader(epoch_order(len(train_ds), hp.seed, 0)))
    steps_per_epoch = math.ceil(micro_per_epoch / hp.grad_accum)
    total_steps = steps_per_epoch * hp.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(hp.warmup_ratio * total_steps), total_steps
    )

    identity = {
        "format_version": FORMAT_VERSION,
        "base": base_spec,
        "base_fingerprint": base_fingerprint,
        "dtype": dtype,
        "teacher": teacher_alias,
        "hyperparameters": asdict(hp),
        "train_data": train_ds.fingerprint(),
        "eval_data": eval_ds.fingerprint(),
        "num_processes": accelerator.num_processes,
        "mixed_precision": str(accelerator.mixed_precision),
    }
    state: dict[str, Any] = {
        **identity,
        "global_step": 0,
        "epoch": 0,
        "micro_in_epoch": 0,
        "epoch_loss_sum": 0.0,
        "epoch_loss_steps": 0,
        "train_loss_per_epoch": [],
        "eval_loss_per_epoch": [],
        "completed": False,
    }
    if saved is not None:
        _check_compatible(saved, identity)
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(
            accelerator.unwrap_model(model), load_file(ckpt / "adapter.safetensors")
        )
        optimizer.load_state_dict(_torch_load(ckpt / "optimizer.pt"))
        scheduler.load_state_dict(_torch_load(ckpt / "scheduler.pt"))
        if accelerator.scaler is not None and (ckpt / "scaler.pt").exists():
            accelerator.scaler.load_state_dict(_torch_load(ckpt / "scaler.pt"))
        _set_rng_state(_torch_load(ckpt / f"rng_{accelerator.process_index}.pt"))
        state = saved
        if state.get("data_order") not in (
            None,
            epoch_order(len(train_ds), hp.seed, state["epoch"]),
        ):
            raise BbiError("--resume: checkpoint data order does not match this run")
        if main:
            accelerator.print(
                f"resuming from step {state['global_step']}/{total_steps} "
                f"(epoch {state['epoch'] + 1}/{hp.epochs})"
            )

    def evaluate() -> float | None:
        if eval_loader is None:
            return None
        model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        count = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        with torch.no_grad():
            for batch in eval_loader:
                sums, counts = token_losses(model, batch)
                sums, counts = accelerator.gather_for_metrics((sums.double(), counts.double()))
                loss_sum += sums.sum()
                count += counts.sum()
        model.train()
        return float(loss_sum / count)

    if eval_loader is not None and not state["eval_loss_per_epoch"]:
        state["eval_loss_per_epoch"].append(evaluate())  # the base model, before training

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=state["global_step"],
        desc=f"distill {alias}",
        unit="step",
        disable=not (progress and main),
        dynamic_ncols=True,
    )
    tokens_seen = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    t_train, cpu_train = time.perf_counter(), time.process_time()
    stopped_early = False
    model.train()
    while state["epoch"] < hp.epochs and not stopped_early:
        epoch = state["epoch"]
        order = epoch_order(len(train_ds), hp.seed, epoch)
        state["data_order"] = order
        dl = loader(order)
        skip = state["micro_in_epoch"]
        if skip:
            dl = accelerator.skip_first_batches(dl, skip)
        window_loss = 0.0
        micro = skip
        for batch in dl:
            window_start = (micro // hp.grad_accum) * hp.grad_accum
            window = min(hp.grad_accum, micro_per_epoch - window_start)
            last_in_window = micro - window_start == window - 1
            ctx = accelerator.no_sync(model) if not last_in_window else contextlib.nullcontext()
            with ctx:
                sums, counts = token_losses(model, batch)
                loss = sums.sum() / counts.sum().clamp(min=1)
                accelerator.backward(loss / window)
            window_loss += float(loss.detach()) / window
            tokens_seen += batch["attention_mask"].sum()
            micro += 1
            if not last_in_window:
                continue
            accelerator.clip_grad_norm_(params, hp.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_loss = float(
                accelerator.reduce(torch.tensor(window_loss, device=accelerator.device), "mean")
            )
            window_loss = 0.0
            state["global_step"] += 1
            state["micro_in_epoch"] = micro
            state["epoch_loss_sum"] += step_loss
            state["epoch_loss_steps"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", epoch=epoch + 1)
            if micro < micro_per_epoch and (
                (save_every_steps and state["global_step"] % save_every_steps == 0)
                or (stop_after_steps is not None and state["global_step"] >= stop_after_steps)
            ):
                _save_checkpoint(accelerator, model, optimizer, scheduler, ckpt, state)
            if stop_after_steps is not None and state["global_step"] >= stop_after_steps:
                stopped_early = True
                break
        if stopped_early and micro < micro_per_epoch:
            break
        # End of epoch: eval, then a checkpoint that starts the next epoch.
        state["train_loss_per_epoch"].append(
            state["epoch_loss_sum"] / max(state["epoch_loss_steps"], 1)
        )
        ev = evaluate()
        if ev is not None:
            state["eval_loss_per_epoch"].append(ev)
        if main:
            bar.write(
                f"epoch {epoch + 1}/{hp.epochs}: train loss "
                f"{state['train_loss_per_epoch'][-1]:.4f}"
                + (f", eval loss {ev:.4f}" if ev is not None else "")
            )
        state.update(
            epoch=epoch + 1,
            micro_in_epoch=0,
            epoch_loss_sum=0.0,
            epoch_loss_steps=0,
            data_order=epoch_order(len(train_ds), hp.seed, epoch + 1),
        )
        state["completed"] = state["epoch"] >= hp.epochs
        _save_checkpoint(accelerator, model, optimizer, scheduler, ckpt, state)
    bar.close()
    train_s = time.perf_counter() - t_train
    train_cpu_s = time.process_time() - cpu_train
    tokens = float(accelerator.reduce(tokens_seen, "sum"))

    spec = f"{base_spec}{LORA_SEP}{out_dir.as_posix()}"
    result = LoraResult(alias=alias, spec=spec, adapter_dir=out_dir, completed=state["completed"])
    if not state["completed"]:
        accelerator.print(
            f"stopped after step {state['global_step']}/{total_steps}; continue with --resume"
        )
        return result

    record = {
        "spec": spec,
        "base": base_spec,
        "base_fingerprint": base_fingerprint,
        "teacher": teacher_alias,
        "adapter_dir": out_dir.as_posix(),
        "n_train_examples": len(train_ds),
        "n_eval_examples": len(eval_ds),
        "n_train_prompts": int(train_pairs["prompt_id"].nunique()),
        "n_eval_prompts": int(eval_pairs["prompt_id"].nunique()),
        "n_skipped_too_long": train_ds.n_skipped + eval_ds.n_skipped,
        "eval_loss_per_epoch": state["eval_loss_per_epoch"],
        "train_loss": state["train_loss_per_epoch"][-1],
        "train_loss_per_epoch": state["train_loss_per_epoch"],
        "hyperparameters": asdict(hp),
        "target_modules": _jsonable_targets(accelerator.unwrap_model(model)),
        "steps": total_steps,
        "seed": hp.seed,
        "num_processes": accelerator.num_processes,
        "mixed_precision": str(accelerator.mixed_precision),
        "chat_format": format_prompt(tokenizer, "")[1],
        "time_s": time.perf_counter() - t_start,
        "train_time_s": train_s,
        "train_cpu_s": train_cpu_s,
        "tokens_per_s": tokens / train_s if train_s > 0 and tokens > 0 else None,
        "resumed": bool(resume),
    }
    result.record = record
    if main:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(out_dir, save_function=accelerator.save)
        write_json(out_dir / PROVENANCE_FILE, {**record, "train_data": identity["train_data"]})
        _register(run, alias, spec, record)
    accelerator.wait_for_everyone()
    return result


def _jsonable_targets(model: Any) -> list[str] | str:
    targets = model.peft_config["default"].target_modules
    return sorted(targets) if isinstance(targets, set | list | tuple) else str(targets)


def _register(run: RunDir, alias: str, spec: str, record: dict) -> None:
    """Record the result and add the new student to run.yaml (``bbi probe`` answers it next)."""
    distill = dict(run.read_results().get("distill") or {})
    distill[alias] = record
    run.update_results("distill", distill)
    cfg = run.config()
    models = dict(cfg.get("models") or {})
    models[alias] = {"spec": spec, "role": "student"}
    cfg["models"] = models
    run.write_config(cfg)


__all__ = [
    "LoraHParams",
    "LoraResult",
    "distill_lora",
    "distillation_pairs",
    "split_eval",
    "encode_pair",
    "DistillDataset",
    "default_target_modules",
    "load_student",
]
