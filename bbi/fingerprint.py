"""Model fingerprints without loading weights into memory.

The response cache is keyed by the model fingerprint, so a warm rerun must be able to
tell "nothing changed" without instantiating the model (for a 7B checkpoint that alone
takes minutes). These functions compute exactly the fingerprint the backend reports
after loading (a test pins the equality), from the files on disk.
"""

from __future__ import annotations

import hashlib
import json

from bbi.errors import BbiError
from bbi.specs import ModelSpec, parse_spec


def spec_fingerprint(
    spec: str | ModelSpec, *, trust_remote_code: bool = False, allow_download: bool = False
) -> str:
    """The fingerprint ``load_backend(spec).fingerprint`` would report.

    Never loads weights or starts an engine for hf:, zoo:, openai: and vllm: specs. A hub
    id is looked up in the Hugging Face cache only, unless ``allow_download`` (and
    HF_HUB_OFFLINE is unset): then its config may be fetched to learn the commit.
    """
    ms = parse_spec(spec) if isinstance(spec, str) else spec
    if ms.kind == "openai":
        return hashlib.sha256(
            json.dumps({"openai": ms.base_url, "model": ms.model}).encode()
        ).hexdigest()[:16]
    from bbi.backends.hf import _digest, _locate, dir_fingerprint

    adapter_fp = None
    if ms.adapter:
        adapter_dir = _locate(ms.adapter, "adapter")
        adapter_fp = (
            dir_fingerprint(adapter_dir) if adapter_dir is not None else {"hub": ms.adapter}
        )
    if ms.kind == "zoo":
        from bbi import zoo

        zoo.model_path(ms.name_or_path)  # builds the zoo on first use
        fp = zoo.fingerprint(ms.name_or_path)
        return _digest({"zoo": fp, "adapter": adapter_fp}) if ms.adapter else fp
    if ms.kind in ("hf", "vllm"):
        # vLLM loads the same Hugging Face checkpoint format: hash the same things.
        local = _locate(ms.name_or_path, "model")
        parts: dict = {}
        if local is not None:
            parts["files"] = dir_fingerprint(local)
        else:
            commit = _hub_commit(ms, trust_remote_code, allow_download)
            parts["hub"] = f"{ms.name_or_path}@{commit or ms.revision or 'main'}"
        if ms.adapter:
            parts["adapter"] = adapter_fp
        fp = _digest(parts)
        return vllm_fingerprint(fp) if ms.kind == "vllm" else fp
    # Future kinds: ask the backend (loading is their only way to know).
    from bbi.backends import load_backend

    backend = load_backend(ms, trust_remote_code=trust_remote_code)
    try:
        return backend.fingerprint
    finally:
        close = getattr(backend, "close", None)
        if close:
            close()


def vllm_fingerprint(hf_fingerprint: str) -> str:
    """A vllm: spec's fingerprint from the hf: fingerprint of the same checkpoint.

    Same files, other backend: vLLM samples with its own RNG and kernels, so the two
    never share response-cache entries."""
    from bbi.backends.hf import _digest

    return _digest({"backend": "vllm", "weights": hf_fingerprint})


def _hub_commit(ms: ModelSpec, trust_remote_code: bool, allow_download: bool = False) -> str | None:
    from transformers import AutoConfig

    from bbi.backends.hf import _local_files_only

    local_only = _local_files_only(allow_download)
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
        elif ms.kind == "vllm":
            hint = (
                " (pass allow_download=true, e.g. --teacher-args allow_download=true, to let "
                "vLLM download it)"
            )
        raise BbiError(
            f"model {ms.name_or_path!r} is not a local directory and is not in the Hugging Face cache: "
            f"{first}{hint}"
        ) from None
    return getattr(cfg, "_commit_hash", None)
