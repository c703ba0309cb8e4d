"""Backends: one registry maps a spec kind to its loader, so a new backend is one file.

Loaders are imported lazily: ``openai:`` needs no torch, ``vllm:`` is an optional extra.
"""

from __future__ import annotations

import importlib
from typing import Any

from bbi.backends.base import Backend, Generation, GenerationConfig, TokenScores
from bbi.specs import ModelSpec, parse_spec

# kind -> "module:function"; the function takes (spec: ModelSpec, **opts) -> Backend.
REGISTRY: dict[str, str] = {
    "hf": "bbi.backends.hf:load_hf_backend",
    "zoo": "bbi.zoo:load_zoo_backend",
    "openai": "bbi.backends.openai_compat:load_openai_backend",
    "vllm": "bbi.backends.vllm:load_vllm_backend",
}


def load_backend(
    spec: str | ModelSpec,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    **opts: Any,
) -> Backend:
    """Load the model a spec names. Unknown/unreachable models raise BbiError."""
    ms = parse_spec(spec) if isinstance(spec, str) else spec
    if ms.kind in ("hf", "zoo"):
        # Before the loader runs: a zoo model is built on first use, which takes minutes.
        from bbi.backends.hf import resolve_device, resolve_dtype

        resolve_dtype(dtype, resolve_device(device))
    module, _, func = REGISTRY[ms.kind].partition(":")
    loader = getattr(importlib.import_module(module), func)
    return loader(ms, device=device, dtype=dtype, trust_remote_code=trust_remote_code, **opts)


__all__ = ["Backend", "Generation", "GenerationConfig", "TokenScores", "REGISTRY", "load_backend"]
