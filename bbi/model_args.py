"""Per-model arguments: one syntax for the CLI and YAML, in the spirit of lm-eval-harness's
``model_args``.

On the command line a comma-separated ``key=value`` list
(``--teacher-args device_map=auto,dtype=bfloat16``); in YAML a mapping
(``teacher_args: {device_map: auto, dtype: bfloat16}``). Which keys a model takes depends on
its spec's kind; an unknown key or a value of the wrong type is one error line naming the
model and listing what it takes.

- ``hf:`` / ``zoo:``: ``device``, ``dtype``, ``device_map`` (``auto`` shards a teacher larger
  than one GPU over every visible device), ``attn_implementation`` (``sdpa``, ``eager``,
  ``flash_attention_2``), ``quantization`` (``4bit`` / ``8bit``, bitsandbytes on CUDA).
- ``vllm:``: ``dtype``, ``tensor_parallel_size``, ``gpu_memory_utilization``,
  ``max_model_len``, ``quantization``, ``enforce_eager``, ``allow_download``, ``seed``.
- ``openai:``: ``concurrency``, ``timeout``, ``max_retries``, ``token_param``,
  ``price_input`` / ``price_output`` (per million tokens: the manifest records the cost).

Arguments that change what a model outputs (``dtype``, ``quantization``,
``attn_implementation``) are part of the model's identity in the response cache, so
responses made under other settings are never reused.
"""

from __future__ import annotations

import math
import re
from typing import Any

from bbi.errors import BbiError

_HF = {
    "device": str,
    "dtype": str,
    "device_map": str,
    "attn_implementation": str,
    "quantization": str,
}
KIND_ARGS: dict[str, dict[str, type]] = {
    "hf": _HF,
    "zoo": _HF,
    "vllm": {
        "dtype": str,
        "tensor_parallel_size": int,
        "gpu_memory_utilization": float,
        "max_model_len": int,
        "quantization": str,
        "enforce_eager": bool,
        "allow_download": bool,
        "seed": int,
    },
    "openai": {
        "concurrency": int,
        "timeout": float,
        "max_retries": int,
        "token_param": str,
        "price_input": float,  # per million prompt tokens, for the manifest's cost
        "price_output": float,
    },
}
# Each number's range, checked with the rest before anything runs: ``timeout=inf`` or
# ``price_input=1e308`` would otherwise fail deep in a library or write Infinity (not
# JSON) into the manifest. Bounds are inclusive; ``None``: open.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "concurrency": (1, 4096),
    "timeout": (1e-3, 7 * 86400),
    "max_retries": (0, 100),
    "price_input": (0, 1e6),
    "price_output": (0, 1e6),
    "tensor_parallel_size": (1, 1024),
    "gpu_memory_utilization": (1e-3, 1.0),
    "max_model_len": (1, 2**31 - 1),
    "seed": (0, 2**63 - 1),
}
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps(:0)?)$")
_HF_DTYPES = ("auto", "float32", "fp32", "float16", "fp16", "bfloat16", "bf16")
# Keys whose value changes the responses (mixed into the cache identity).
OUTPUT_CHANGING = ("dtype", "quantization", "attn_implementation")
QUANTIZATIONS = ("4bit", "8bit")


def _typed(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_model_args(text: str | None, flag: str) -> dict[str, Any]:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (ints, floats and true/false typed)."""
    if text is None:
        return {}
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise BbiError(f"{flag}: expected key=value[,key=value...], got {text!r}")
        if key in out:
            raise BbiError(f"{flag}: {key!r} given twice")
        out[key] = _typed(value)
    return out


def check_model_args(spec: str, args: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """``args`` validated for ``spec``'s kind (types coerced where lossless)."""
    from bbi.specs import parse_spec

    if not args:
        return {}
    if not isinstance(args, dict):
        raise BbiError(f"{where}: expected a mapping of model arguments")
    kind = parse_spec(spec).kind
    allowed = KIND_ARGS.get(kind, {})
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key not in allowed:
            raise BbiError(
                f"{where}: {kind}: models take no {key!r} "
                f"(they take: {', '.join(sorted(allowed)) or 'nothing'})"
            )
        want = allowed[key]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise BbiError(f"{where}: {key} must be a {want.__name__}, got {value!r}")
        if key == "quantization" and kind in ("hf", "zoo") and value not in QUANTIZATIONS:
            raise BbiError(f"{where}: quantization must be one of {', '.join(QUANTIZATIONS)}")
        _check_value(kind, key, value, where)
        out[key] = value
    return out


def _check_value(kind: str, key: str, value: Any, where: str) -> None:
    """A value's range (numbers) or form (devices, dtypes), checked before any model loads."""
    if isinstance(value, float) and not math.isfinite(value):
        raise BbiError(f"{where}: {key} must be a finite number, got {value!r}")
    lo, hi = RANGES.get(key, (None, None))
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        raise BbiError(f"{where}: {key} must be in [{lo:g}, {hi:g}], got {value!r}")
    if kind in ("hf", "zoo") and key == "device":
        if not _DEVICE_RE.match(value.strip().lower()):
            raise BbiError(f"{where}: unknown device {value!r}; use auto, cpu, cuda, cuda:N or mps")
        if value.strip().lower() != "auto":
            from bbi.backends.hf import resolve_device  # availability: cuda on a CPU machine

            resolve_device(value)
    if kind in ("hf", "zoo") and key == "dtype" and value.strip().lower() not in _HF_DTYPES:
        raise BbiError(f"{where}: unknown dtype {value!r}; use auto, float32, float16 or bfloat16")


def output_identity(args: dict[str, Any]) -> dict[str, Any]:
    """The arguments that change a model's outputs (for the response cache)."""
    return {k: args[k] for k in OUTPUT_CHANGING if k in args}


__all__ = [
    "KIND_ARGS",
    "OUTPUT_CHANGING",
    "RANGES",
    "check_model_args",
    "output_identity",
    "parse_model_args",
]
