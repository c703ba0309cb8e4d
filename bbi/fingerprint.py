"""Model fingerprints without loading weights into memory.

The response cache is keyed by the model fingerprint, so a warm rerun must be able to
tell "nothing changed" without instantiating the model (for a 7B checkpoint that alone
takes minutes). Each backend declares how (``BackendKind.fingerprint``, see
``bbi.specs``); the built-ins compute exactly the fingerprint the backend reports after
loading (a test pins the equality), from the files on disk.
"""

from __future__ import annotations

from bbi.backends.kinds import vllm_fingerprint
from bbi.specs import ModelSpec, parse_spec


def spec_fingerprint(
    spec: str | ModelSpec, *, trust_remote_code: bool = False, allow_download: bool = False
) -> str:
    """The fingerprint ``load_backend(spec).fingerprint`` would report.

    Never loads weights or starts an engine for hf:, zoo:, openai: and vllm: specs. A hub
    id is looked up in the Hugging Face cache only, unless ``allow_download`` (and
    HF_HUB_OFFLINE is unset): then its config may be fetched to learn the commit.
    """
    ms = parse_spec(spec)
    return ms.backend.fingerprint(
        ms, trust_remote_code=trust_remote_code, allow_download=allow_download
    )


__all__ = ["spec_fingerprint", "vllm_fingerprint"]
