"""The model being trained: load a base, make it trainable (LoRA or full), save it.

Every distiller shares this, so a LoRA adapter or a fully fine-tuned checkpoint comes out
the same way whichever objective trained it, and always as something a bbi model spec
loads: ``BASE+lora:DIR`` (a peft ``save_pretrained`` directory) or ``hf:DIR`` (a
``save_pretrained`` model with its tokenizer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bbi.config import AdapterSettings
from bbi.errors import BbiError
from bbi.specs import LORA_SEP

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


def normalize_base_spec(spec: str, what: str = "fine-tune") -> str:
    """Canonical base spec (``hf:...`` / ``zoo:...``); only local-weight kinds can be tuned."""
    from bbi.specs import parse_spec

    ms = parse_spec(spec)
    if not ms.can("weights"):
        raise BbiError(f"cannot {what} {spec!r}: training needs weights (an hf: or zoo: spec)")
    if ms.adapter:
        raise BbiError(
            f"student {spec!r} already carries a LoRA adapter; distil from its base model "
            "(or merge the adapter into a new checkpoint first)"
        )
    return str(ms)


def load_model(spec: str, dtype: str = "float32") -> tuple[Any, Any, str]:
    """(model on CPU, tokenizer, weights fingerprint) for an ``hf:``/``zoo:`` spec.

    Loading goes through ``bbi.backends`` so spec resolution, offline rules and error
    messages are the probe's; Accelerate then places the model. The fingerprint lets a
    resumed run refuse a checkpoint made on other weights behind the same spec. A spec
    with a LoRA adapter is loaded merged (for a frozen teacher). The weights load directly
    in ``dtype`` (``from_pretrained(..., dtype=...)``, no fp32 copy first), once per
    process under ``accelerate launch``.
    """
    from bbi.specs import parse_spec

    ms = parse_spec(spec)
    if not ms.can("weights"):
        raise BbiError(f"{spec!r} has no local weights (need an hf: or zoo: spec)")
    model, tok, _, fp = ms.backend.parts_loader()(ms, device="cpu", dtype=dtype)
    return model, tok, fp


def load_student(spec: str, dtype: str = "float32") -> tuple[Any, Any, str]:
    """``load_model`` for a base to fine-tune (no adapter, local weights)."""
    return load_model(normalize_base_spec(spec), dtype)


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


def make_lora_model(model: Any, hp: AdapterSettings) -> Any:
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


def make_trainable(model: Any, hp: AdapterSettings, full: bool) -> Any:
    """LoRA adapter (base frozen) or, with ``full``, every weight trainable."""
    if not full:
        return make_lora_model(model, hp)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def target_modules_of(model: Any) -> list[str] | str | None:
    """The LoRA target modules a trained model carries (None: full fine-tuning)."""
    cfg = getattr(model, "peft_config", None)
    if not cfg:
        return None
    targets = cfg["default"].target_modules
    return sorted(targets) if isinstance(targets, set | list | tuple) else str(targets)


def student_spec(base_spec: str, out_dir: Path, full: bool) -> str:
    """The bbi model spec of what ``save_student`` writes to ``out_dir``."""
    if not full:
        return f"{base_spec}{LORA_SEP}{out_dir.as_posix()}"
    path = out_dir.as_posix()
    # `hf:runs/x` could read as a hub id; a local path is spelled unambiguously.
    if not (out_dir.is_absolute() or path.startswith(".")):
        path = "./" + path
    return f"hf:{path}"


def save_student(
    model: Any, tokenizer: Any, out_dir: Path, save_function: Any = torch.save
) -> None:
    """peft adapter directory, or a full ``save_pretrained`` model plus its tokenizer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for cfg in (getattr(model, "peft_config", None) or {}).values():
        # peft keeps target modules as a set and writes it in hash order: sorted, the
        # adapter's files (and so its fingerprint) do not depend on PYTHONHASHSEED.
        if isinstance(cfg.target_modules, set):
            cfg.target_modules = sorted(cfg.target_modules)
    model.save_pretrained(out_dir, save_function=save_function)
    if getattr(model, "peft_config", None) is None:
        tokenizer.save_pretrained(out_dir)


def check_same_vocabulary(student_tok: Any, teacher_tok: Any, student: str, teacher: str) -> None:
    """White-box KD compares distributions token by token: the vocabularies must agree."""
    s, t = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s != t:
        only_s = len(set(s.items()) - set(t.items()))
        raise BbiError(
            f"tokenizers of student {student!r} ({len(s)} tokens) and teacher {teacher!r} "
            f"({len(t)} tokens) differ ({only_s} student entries not in the teacher's); "
            "token-level KD needs a shared vocabulary (use `bbi distill lora` instead)"
        )


__all__ = [
    "check_same_vocabulary",
    "default_target_modules",
    "load_model",
    "load_student",
    "make_lora_model",
    "make_trainable",
    "normalize_base_spec",
    "save_student",
    "student_spec",
    "target_modules_of",
]
