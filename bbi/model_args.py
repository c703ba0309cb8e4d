"""Per-model arguments: one syntax for the CLI and YAML, in the spirit of lm-eval-harness's
``model_args``.

On the command line a comma-separated ``key=value`` list
(``--teacher-args device_map=auto,dtype=bfloat16``); in YAML a mapping
(``teacher_args: {device_map: auto, dtype: bfloat16}``). Which keys a model takes is declared by
its spec's backend (``BackendKind.args``, bbi.specs); an unknown key or a value of the wrong type is one error line naming the
model and listing what it takes. Every number must be finite and within the range its
backend declares (``BackendKind.ranges``): ``timeout=inf`` or ``price_input=1e308`` would
otherwise fail deep in a library or write Infinity (not JSON) into the manifest. All of
it is checked before any work, even when every response is cached.

- ``hf:`` / ``zoo:``: ``device``, ``dtype``, ``device_map`` (``auto`` shards a teacher larger
  than one GPU over every visible device), ``attn_implementation`` (``sdpa``, ``eager``,
  ``flash_attention_2``), ``quantization`` (``4bit`` / ``8bit``, bitsandbytes on CUDA).
- ``vllm:``: ``dtype``, ``tensor_parallel_size``, ``gpu_memory_utilization``,
  ``kv_cache_memory_bytes``, ``max_model_len``, ``max_num_batched_tokens``, ``max_num_seqs``,
  ``enable_chunked_prefill``, ``quantization``, ``enforce_eager``, ``allow_download``, ``seed``.
- ``ct2:``: ``compute_type`` (``int8``, ``float32``, ...), ``threads``, ``device``.
- ``fast:``: ``dtype`` (``float32`` or ``bfloat16``), ``threads``.
- ``openai:``: ``concurrency``, ``timeout``, ``max_retries``, ``token_param``,
  ``price_input`` / ``price_output`` (per million tokens: the manifest records the cost).

Arguments that change what a model outputs (``dtype``, ``quantization``,
``attn_implementation``, ``compute_type``) are part of the model's identity in the
response cache, so responses made under other settings are never reused.
"""

from __future__ import annotations

import math
from typing import Any

from bbi.errors import BbiError
from bbi.specs import ModelSpec, backend_kind

# Keys whose value changes the responses (mixed into the cache identity).
OUTPUT_CHANGING = ("dtype", "quantization", "attn_implementation", "compute_type")


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


def check_model_args(
    spec: str | ModelSpec, args: dict[str, Any] | None, where: str
) -> dict[str, Any]:
    """``args`` validated for ``spec``'s kind (types coerced where lossless)."""
    if not args:
        return {}
    if not isinstance(args, dict):
        raise BbiError(f"{where}: expected a mapping of model arguments")
    decl = backend_kind(spec)
    kind, allowed = decl.name, decl.args
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
        _check_number(key, value, decl.ranges.get(key), where)
        out[key] = value
    if decl.check_args is not None:
        decl.check_args(out, where)
    return out


def _check_number(
    key: str, value: Any, bounds: tuple[float | None, float | None] | None, where: str
) -> None:
    """A number must be finite and within its backend's declared (inclusive) bounds."""
    if isinstance(value, float) and not math.isfinite(value):
        raise BbiError(f"{where}: {key} must be a finite number, got {value!r}")
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    lo, hi = bounds
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        low = "-inf" if lo is None else f"{lo:g}"
        high = "inf" if hi is None else f"{hi:g}"
        raise BbiError(f"{where}: {key} must be in [{low}, {high}], got {value!r}")


def run_defaults(settings: Any) -> dict[str, Any]:
    """The load options a run gives every model (its GenerationSettings' device, dtype
    and trust_remote_code)."""
    return {
        "device": settings.device,
        "dtype": settings.dtype,
        "trust_remote_code": settings.trust_remote_code,
    }


def load_options(args: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keywords a backend is created with: ``defaults`` (the run's, or an attack's
    context) overlaid with the model's own arguments. The one place the run-wide device
    and dtype meet a model's own ``device``/``dtype`` arguments."""
    return {**(defaults or {}), **args}


def output_identity(args: dict[str, Any]) -> dict[str, Any]:
    """The arguments that change a model's outputs (for the response cache)."""
    return {k: args[k] for k in OUTPUT_CHANGING if k in args}


__all__ = [
    "OUTPUT_CHANGING",
    "check_model_args",
    "load_options",
    "output_identity",
    "run_defaults",
    "parse_model_args",
]
