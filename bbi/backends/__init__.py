"""Backends: a registry maps a spec kind to its declaration, so a new backend is one module.

``REGISTRY`` (the ``bbi.backends`` entry-point group, defined in ``bbi.specs`` beside the
grammar) holds one :class:`~bbi.specs.BackendKind` per kind. Loaders are imported lazily:
``openai:`` needs no torch, ``vllm:`` is an optional extra.
"""

from __future__ import annotations

from typing import Any

from bbi.backends.base import Backend, Generation, GenerationConfig, TokenScores
from bbi.specs import BACKENDS as REGISTRY
from bbi.specs import BackendKind, ModelSpec, parse_spec


def load_backend(
    spec: str | ModelSpec,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    **opts: Any,
) -> Backend:
    """Load the model a spec names. Unknown/unreachable models raise BbiError."""
    ms = parse_spec(spec)
    kind = ms.backend
    if kind.can("torch_device"):
        # Before the loader runs: a zoo model is built on first use, which takes minutes.
        check_device(device, dtype)
    return kind.loader()(
        ms, device=device, dtype=dtype, trust_remote_code=trust_remote_code, **opts
    )


def check_device(device: str, dtype: str) -> None:
    """Refuse a device or dtype this machine cannot use, before anything loads."""
    from bbi.backends.hf import resolve_device, resolve_dtype

    resolve_dtype(dtype, resolve_device(device))


__all__ = [
    "REGISTRY",
    "Backend",
    "BackendKind",
    "Generation",
    "GenerationConfig",
    "TokenScores",
    "check_device",
    "load_backend",
]
