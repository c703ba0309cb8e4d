"""Model specs: one string syntax names every model bbi can talk to.

| spec                                  | kind   |
|---------------------------------------|--------|
| ``Qwen/Qwen2.5-0.5B-Instruct``        | hf     |
| ``hf:./path``, ``hf:org/name@rev``    | hf     |
| ``hf:base+lora:./adapter``            | hf     |
| ``zoo:teacher``, ``zoo:student``      | zoo    |
| ``zoo:student+lora:./adapter``        | zoo    |
| ``openai:http://host:port/v1#model``  | openai |
| ``vllm:org/name[@rev]``               | vllm   |

Parsing is pure string work (no file system, no network) so a spec can be validated,
canonicalised and recorded before anything heavy is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bbi.errors import BbiError

KINDS = ("hf", "zoo", "openai", "vllm")
ZOO_MODELS = ("teacher", "student")
LORA_SEP = "+lora:"

_PREFIX_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):(?!//)")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec; ``str(spec)`` is its canonical string form."""

    kind: str
    name_or_path: str
    revision: str | None = None
    adapter: str | None = None
    base_url: str | None = None
    model: str | None = None

    def __str__(self) -> str:
        if self.kind == "openai":
            return f"openai:{self.base_url}#{self.model}"
        out = f"{self.kind}:{self.name_or_path}"
        if self.revision:
            out += f"@{self.revision}"
        if self.adapter:
            out += f"{LORA_SEP}{self.adapter}"
        return out

    def with_adapter(self, adapter: str | None) -> ModelSpec:
        """The same base model with another (or no) LoRA adapter."""
        return ModelSpec(
            self.kind, self.name_or_path, self.revision, adapter, self.base_url, self.model
        )


def _split_revision(name: str, spec: str) -> tuple[str, str | None]:
    # `org/name@rev`: the revision follows the last '@' that comes after the last '/',
    # so local paths with '@' in a directory name still parse.
    head, sep, rev = name.rpartition("@")
    if not sep or "/" in rev:
        return name, None
    if not head or not rev:
        raise BbiError(f"bad model spec {spec!r}: empty name or revision around '@'")
    return head, rev


def parse_spec(s: str) -> ModelSpec:
    """Parse a model spec string (see the module table); BbiError on anything malformed."""
    if not isinstance(s, str) or not s.strip():
        raise BbiError("empty model spec")
    spec = s.strip()
    m = _PREFIX_RE.match(spec)
    kind = m.group(1).lower() if m else "hf"
    rest = spec[m.end() :] if m else spec
    if m and kind not in KINDS:
        raise BbiError(
            f"unknown model kind {m.group(1)!r} in spec {spec!r}; use one of "
            + ", ".join(f"{k}:" for k in KINDS)
            + " or a bare Hugging Face id/path"
        )
    if not rest:
        raise BbiError(f"bad model spec {spec!r}: nothing after '{kind}:'")

    if kind == "openai":
        base_url, sep, model = rest.partition("#")
        if not sep or not model:
            raise BbiError(
                f"bad model spec {spec!r}: use openai:BASE_URL#MODEL "
                "(e.g. openai:http://127.0.0.1:8000/v1#my-model)"
            )
        if not re.match(r"^https?://[^/\s]+", base_url):
            raise BbiError(f"bad model spec {spec!r}: base URL must start with http:// or https://")
        return ModelSpec("openai", model, base_url=base_url.rstrip("/"), model=model)

    base, sep, adapter = rest.partition(LORA_SEP)
    if sep and not adapter:
        raise BbiError(f"bad model spec {spec!r}: empty adapter after '+lora:'")
    if sep and LORA_SEP in adapter:
        raise BbiError(f"bad model spec {spec!r}: only one '+lora:' adapter is supported")
    if not base:
        raise BbiError(f"bad model spec {spec!r}: empty base model")

    if kind == "zoo":
        if base not in ZOO_MODELS:
            raise BbiError(f"unknown zoo model {base!r}; the zoo has: " + ", ".join(ZOO_MODELS))
        return ModelSpec("zoo", base, adapter=adapter or None)
    if kind == "vllm" and adapter:
        raise BbiError(
            f"bad model spec {spec!r}: LoRA adapters are supported on hf: and zoo: specs"
        )

    name, rev = _split_revision(base, spec)
    return ModelSpec(kind, name, revision=rev, adapter=adapter or None)
