"""The declarations of the built-in ``hf:``, ``vllm:``, ``ct2:``, ``fast:`` and ``openai:``
backends.

Each :class:`~bbi.specs.BackendKind` says, in one place, how its specs parse, which
per-model arguments it takes, what it can do, how its weights are fingerprinted from the
files alone, and where its loader lives (imported only when a model loads, so this module
stays free of torch). ``zoo:`` is declared beside the zoo (``bbi.zoo.BACKEND``).
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata
from types import MappingProxyType
from typing import Any

from bbi.errors import BbiError
from bbi.hub import digest, dir_fingerprint, local_files_only, locate
from bbi.specs import (
    BackendKind,
    ModelSpec,
    check_base_url,
    parse_spec,
    split_adapter,
    split_revision,
)

# ----------------------------------------------------------------------------- hf:
# Per-model arguments of a local transformers model (hf: and zoo:).
HF_ARGS = MappingProxyType(
    {
        "device": str,
        "dtype": str,
        "device_map": str,
        "attn_implementation": str,
        "quantization": str,
    }
)
QUANTIZATIONS = ("4bit", "8bit")
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps(:0)?)$")
HF_DTYPES = ("auto", "float32", "fp32", "float16", "fp16", "bfloat16", "bf16")


def check_hf_args(args: dict[str, Any], where: str) -> None:
    """Values a transformers model refuses at load time, refused before it (and before
    any work: ``device=bogus`` fails even when every response is cached)."""
    q = args.get("quantization")
    if q is not None and q not in QUANTIZATIONS:
        raise BbiError(f"{where}: quantization must be one of {', '.join(QUANTIZATIONS)}")
    device = args.get("device")
    if device is not None:
        if not DEVICE_RE.match(device.strip().lower()):
            raise BbiError(
                f"{where}: unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps"
            )
        if device.strip().lower() != "auto":
            from bbi.backends.hf import resolve_device  # availability: cuda on a CPU machine

            resolve_device(device)
    dtype = args.get("dtype")
    if dtype is not None and dtype.strip().lower() not in HF_DTYPES:
        raise BbiError(f"{where}: unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")


def parse_hf(rest: str, spec: str) -> ModelSpec:
    """``NAME_OR_PATH[@REV][+lora:ADAPTER]``."""
    base, adapter = split_adapter(rest, spec)
    name, rev = split_revision(base, spec)
    return ModelSpec("hf", name, revision=rev, adapter=adapter)


def adapter_fingerprint(adapter: str) -> Any:
    """A LoRA adapter's part of a fingerprint: its files, or its hub id."""
    adapter_dir = locate(adapter, "adapter")
    return dir_fingerprint(adapter_dir) if adapter_dir is not None else {"hub": adapter}


def checkpoint_fingerprint(
    ms: ModelSpec,
    *,
    trust_remote_code: bool = False,
    allow_download: bool = False,
    download_hint: str = "",
) -> str:
    """The fingerprint of a Hugging Face checkpoint (what ``hf:`` reports after loading).

    Never loads weights. A hub id is looked up in the Hugging Face cache only, unless
    ``allow_download`` (and HF_HUB_OFFLINE is unset): then its config may be fetched to
    learn the commit.
    """
    local = locate(ms.name_or_path, "model")
    parts: dict[str, Any] = {}
    if local is not None:
        parts["files"] = dir_fingerprint(local)
    else:
        commit = _hub_commit(ms, trust_remote_code, allow_download, download_hint)
        parts["hub"] = f"{ms.name_or_path}@{commit or ms.revision or 'main'}"
    if ms.adapter:
        parts["adapter"] = adapter_fingerprint(ms.adapter)
    return digest(parts)


def _hub_commit(
    ms: ModelSpec, trust_remote_code: bool, allow_download: bool, download_hint: str
) -> str | None:
    from transformers import AutoConfig

    local_only = local_files_only(allow_download)
    try:
        cfg = AutoConfig.from_pretrained(
            ms.name_or_path,
            revision=ms.revision,
            local_files_only=local_only,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [""])[0]
        if not local_only:
            raise BbiError(
                f"cannot fetch the config of model {ms.name_or_path!r}: {first}"
            ) from None
        hint = ""
        if allow_download:
            hint = " (HF_HUB_OFFLINE is set, so nothing is downloaded)"
        elif download_hint:
            hint = f" ({download_hint})"
        raise BbiError(
            f"model {ms.name_or_path!r} is not a local directory and is not in the Hugging Face cache: "
            f"{first}{hint}"
        ) from None
    return getattr(cfg, "_commit_hash", None)


HF = BackendKind(
    name="hf",
    load="bbi.backends.hf:load_hf_backend",
    load_parts="bbi.backends.hf:load_hf_weights",
    parse=parse_hf,
    fingerprint=checkpoint_fingerprint,
    args=HF_ARGS,
    check_args=check_hf_args,
    capabilities=frozenset({"generate", "score", "weights", "torch_device", "serve", "logprobs"}),
    examples=("hf:org/name", "hf:org/name@v1", "hf:./model+lora:./adapter"),
)


# ----------------------------------------------------------------------------- vllm:
def parse_vllm(rest: str, spec: str) -> ModelSpec:
    """``ORG/NAME[@REV]`` or a local path (no adapters: vLLM serves merged weights)."""
    base, adapter = split_adapter(rest, spec)
    if adapter:
        raise BbiError(
            f"bad model spec {spec!r}: LoRA adapters are supported on hf: and zoo: specs"
        )
    name, rev = split_revision(base, spec)
    return ModelSpec("vllm", name, revision=rev)


def vllm_fingerprint(hf_fingerprint: str) -> str:
    """A vllm: spec's fingerprint from the hf: fingerprint of the same checkpoint.

    Same files, other backend: vLLM samples with its own RNG and kernels, so the two
    never share response-cache entries."""
    return digest({"backend": "vllm", "weights": hf_fingerprint})


def fingerprint_vllm(
    ms: ModelSpec, *, trust_remote_code: bool = False, allow_download: bool = False
) -> str:
    """vLLM loads the Hugging Face checkpoint format: hash the same files, then mark it."""
    return vllm_fingerprint(
        checkpoint_fingerprint(
            ms,
            trust_remote_code=trust_remote_code,
            allow_download=allow_download,
            download_hint="pass allow_download=true, e.g. --teacher-args allow_download=true, "
            "to let vLLM download it",
        )
    )


VLLM = BackendKind(
    name="vllm",
    load="bbi.backends.vllm:load_vllm_backend",
    parse=parse_vllm,
    fingerprint=fingerprint_vllm,
    args=MappingProxyType(
        {
            "dtype": str,
            "tensor_parallel_size": int,
            "gpu_memory_utilization": float,
            "kv_cache_memory_bytes": int,
            "max_model_len": int,
            "max_num_batched_tokens": int,
            "max_num_seqs": int,
            "enable_chunked_prefill": bool,
            "quantization": str,
            "enforce_eager": bool,
            "allow_download": bool,
            "seed": int,
        }
    ),
    ranges=MappingProxyType(
        {
            "tensor_parallel_size": (1, 1024),
            "gpu_memory_utilization": (1e-3, 1.0),
            "max_model_len": (1, 2**31 - 1),
            "seed": (0, 2**63 - 1),
        }
    ),
    capabilities=frozenset({"generate", "serve"}),
    examples=("vllm:org/name", "vllm:org/name@v1"),
)


# ----------------------------------------------------------------------------- ct2:
CT2_PACKAGE = "ctranslate2"
CT2_DEFAULT_COMPUTE_TYPE = "int8"
CPU_COMPUTE_TYPES = ("int8", "int8_float32", "float32")
CT2_COMPUTE_TYPES = (*CPU_COMPUTE_TYPES, "float16", "bfloat16", "int8_float16", "int8_bfloat16")


def ct2_inner(ms: ModelSpec) -> ModelSpec:
    """The wrapped hf:/zoo: spec of a ct2: spec."""
    return parse_spec(ms.name_or_path)


def parse_ct2(rest: str, spec: str) -> ModelSpec:
    """``INNER``: an hf:/zoo: spec (any spec whose backend has the ``weights`` capability)."""
    if not rest:
        raise BbiError(f"bad model spec {spec!r}: use ct2:zoo:NAME or ct2:hf:PATH_OR_ID")
    inner = parse_spec(rest)
    if inner.kind == "ct2" or not inner.can("weights"):
        raise BbiError(
            f"bad model spec {spec!r}: ct2: wraps a model with local weights "
            f"(hf: or zoo:), not {inner.kind}:"
        )
    return ModelSpec("ct2", str(inner))


def format_ct2(ms: ModelSpec) -> str:
    return f"ct2:{ms.name_or_path}"


def ct2_engine_version() -> str | None:
    """The installed CTranslate2 version (from its metadata: nothing is imported)."""
    try:
        return metadata.version(CT2_PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def ct2_fingerprint(weights: str, compute_type: str = CT2_DEFAULT_COMPUTE_TYPE) -> str:
    """A ct2: model's identity: the wrapped weights, the engine and its precision."""
    return digest(
        {"backend": "ct2", "weights": weights, "compute_type": compute_type, "engine": CT2_PACKAGE}
    )


def fingerprint_ct2(
    ms: ModelSpec, *, trust_remote_code: bool = False, allow_download: bool = False
) -> str:
    """From the wrapped spec's fingerprint (its files; no weights loaded, nothing converted).

    The compute type here is the default; a ``compute_type`` argument joins the cache
    identity as an output-changing argument (bbi.model_args.OUTPUT_CHANGING)."""
    inner = ct2_inner(ms)
    weights = inner.backend.fingerprint(
        inner, trust_remote_code=trust_remote_code, allow_download=allow_download
    )
    return ct2_fingerprint(weights)


def check_ct2_args(args: dict[str, Any], where: str) -> None:
    ct = args.get("compute_type")
    if ct is not None and ct not in CT2_COMPUTE_TYPES:
        raise BbiError(f"{where}: compute_type must be one of {', '.join(CT2_COMPUTE_TYPES)}")
    if args.get("threads", 0) < 0:
        raise BbiError(f"{where}: threads must be >= 0")


CT2 = BackendKind(
    name="ct2",
    load="bbi.backends.ct2:load_ct2_backend",
    parse=parse_ct2,
    format=format_ct2,
    fingerprint=fingerprint_ct2,
    args=MappingProxyType({"device": str, "compute_type": str, "threads": int}),
    check_args=check_ct2_args,
    capabilities=frozenset({"generate", "serve"}),
    examples=("ct2:zoo:teacher", "ct2:zoo:smollm2", "ct2:hf:org/name@v1"),
)


# ----------------------------------------------------------------------------- fast:
FAST_ENGINE = "bbi-llama-static-v1"  # bump when the engine's arithmetic changes
FAST_DTYPES = ("float32", "bfloat16")


def fast_inner(ms: ModelSpec) -> ModelSpec:
    """The wrapped hf:/zoo: spec of a fast: spec."""
    return parse_spec(ms.name_or_path)


def parse_fast(rest: str, spec: str) -> ModelSpec:
    """``INNER``: an hf:/zoo: spec (any spec whose backend has the ``weights`` capability)."""
    if not rest:
        raise BbiError(f"bad model spec {spec!r}: use fast:zoo:NAME or fast:hf:PATH_OR_ID")
    inner = parse_spec(rest)
    if inner.kind in ("fast", "ct2") or not inner.can("weights"):
        raise BbiError(
            f"bad model spec {spec!r}: fast: wraps a model with local weights "
            f"(hf: or zoo:), not {inner.kind}:"
        )
    return ModelSpec("fast", str(inner))


def format_fast(ms: ModelSpec) -> str:
    return f"fast:{ms.name_or_path}"


def fast_fingerprint(weights: str, dtype: str = "float32") -> str:
    """A fast: model's identity: the wrapped weights, the engine and its precision."""
    return digest({"backend": "fast", "weights": weights, "dtype": dtype, "engine": FAST_ENGINE})


def fingerprint_fast(
    ms: ModelSpec, *, trust_remote_code: bool = False, allow_download: bool = False
) -> str:
    """From the wrapped spec's fingerprint (its files; nothing loaded). The precision here
    is the default; a ``dtype`` argument joins the cache identity as an output-changing
    argument (bbi.model_args.OUTPUT_CHANGING)."""
    inner = fast_inner(ms)
    weights = inner.backend.fingerprint(
        inner, trust_remote_code=trust_remote_code, allow_download=allow_download
    )
    return fast_fingerprint(weights)


def check_fast_args(args: dict[str, Any], where: str) -> None:
    dtype = args.get("dtype")
    if dtype is not None and dtype.strip().lower() not in (*FAST_DTYPES, "auto", "fp32", "bf16"):
        raise BbiError(f"{where}: dtype must be float32 or bfloat16")
    if args.get("threads", 0) < 0:
        raise BbiError(f"{where}: threads must be >= 0")


FAST = BackendKind(
    name="fast",
    load="bbi.backends.fast:load_fast_backend",
    parse=parse_fast,
    format=format_fast,
    fingerprint=fingerprint_fast,
    args=MappingProxyType({"dtype": str, "threads": int}),
    check_args=check_fast_args,
    capabilities=frozenset({"generate", "serve"}),
    examples=("fast:zoo:teacher", "fast:zoo:smollm2", "fast:hf:org/name@v1"),
)


# ----------------------------------------------------------------------------- openai:
def parse_openai(rest: str, spec: str) -> ModelSpec:
    """``BASE_URL#MODEL``."""
    base_url, sep, model = rest.partition("#")
    if not sep or not model:
        raise BbiError(
            f"bad model spec {spec!r}: use openai:BASE_URL#MODEL "
            "(e.g. openai:http://127.0.0.1:8000/v1#my-model)"
        )
    base_url = check_base_url(base_url, spec)
    return ModelSpec("openai", model, base_url=base_url, model=model)


def format_openai(ms: ModelSpec) -> str:
    return f"openai:{ms.base_url}#{ms.model}"


def fingerprint_openai(ms: ModelSpec, **_: Any) -> str:
    """An endpoint's identity is its URL and model name (its weights are out of reach)."""
    return hashlib.sha256(
        json.dumps({"openai": ms.base_url, "model": ms.model}).encode()
    ).hexdigest()[:16]


OPENAI = BackendKind(
    name="openai",
    load="bbi.backends.openai_compat:load_openai_backend",
    parse=parse_openai,
    format=format_openai,
    fingerprint=fingerprint_openai,
    args=MappingProxyType(
        {
            "concurrency": int,
            "timeout": float,
            "max_retries": int,
            "token_param": str,
            "price_input": float,  # per million prompt tokens, for the manifest's cost
            "price_output": float,
        }
    ),
    # A price of 1e308 would make the manifest's cost Infinity (not JSON).
    ranges=MappingProxyType(
        {
            "concurrency": (1, 4096),
            "timeout": (1e-3, 7 * 86400),
            "max_retries": (0, 100),
            "price_input": (0, 1e6),
            "price_output": (0, 1e6),
        }
    ),
    capabilities=frozenset({"generate", "serve", "logprobs"}),
    examples=("openai:http://127.0.0.1:8000/v1#my-model",),
)

__all__ = [
    "CT2",
    "FAST",
    "FAST_DTYPES",
    "HF",
    "HF_ARGS",
    "HF_DTYPES",
    "OPENAI",
    "VLLM",
    "adapter_fingerprint",
    "check_hf_args",
    "checkpoint_fingerprint",
    "ct2_engine_version",
    "ct2_fingerprint",
    "ct2_inner",
    "fast_fingerprint",
    "fast_inner",
    "vllm_fingerprint",
]
