"""Model specs: one string syntax names every model bbi can talk to.

| spec                                    | kind   |
|-----------------------------------------|--------|
| ``Qwen/Qwen2.5-0.5B-Instruct``          | hf     |
| ``hf:./path``, ``hf:org/name@rev``      | hf     |
| ``hf:base+lora:./adapter``              | hf     |
| ``zoo:teacher``, ``zoo:student``        | zoo    |
| ``zoo:student+lora:./adapter``          | zoo    |
| ``zoo:smollm2``, ``zoo:smollm2-pruned`` | zoo    |
| ``openai:http://host:port/v1#model``    | openai |
| ``vllm:org/name[@rev]``                 | vllm   |

Parsing is pure string work (no file system, no network) so a spec can be validated,
canonicalised and recorded before anything heavy is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from bbi.errors import BbiError

KINDS = ("hf", "zoo", "openai", "vllm")
# The spec `bbi probe import` records for an alias whose responses came from a file.
IMPORTED_KIND = "imported"
ZOO_MODELS = ("teacher", "student", "smollm2", "smollm2-pruned")
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


def is_imported(spec: str | None) -> bool:
    """True for the ``imported:FILE`` spec of responses brought in by `bbi probe import`."""
    return isinstance(spec, str) and spec.strip().lower().startswith(f"{IMPORTED_KIND}:")


def imported_error(spec: str, what: str = "", instead: str = "") -> BbiError:
    """The error for an imported alias used where a model must run: there are no weights."""
    head = f"{what}: " if what else ""
    hint = instead or (
        "give a model spec instead (hf:, zoo:, openai:, vllm:), e.g. "
        "`bbi distill lora RUN --student hf:PATH`"
    )
    return BbiError(
        f"{head}{spec!r} names responses imported with `bbi probe import`; an imported "
        f"model has no weights to load or query, so {hint}"
    )


def _check_base_url(base_url: str, spec: str) -> str:
    """An http(s) URL with a host and a valid port, without its trailing '/'."""
    bad = f"bad model spec {spec!r}: "
    example = " (e.g. openai:http://127.0.0.1:8000/v1#my-model)"
    if not re.match(r"^https?://", base_url, re.IGNORECASE):
        raise BbiError(f"{bad}base URL must start with http:// or https://{example}")
    if any(c.isspace() for c in base_url):
        raise BbiError(f"{bad}the base URL contains whitespace")
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError as exc:
        raise BbiError(f"{bad}invalid base URL ({exc})") from None
    if not parts.hostname:
        raise BbiError(f"{bad}the base URL has no host{example}")
    if port is not None and not 1 <= port <= 65535:
        raise BbiError(f"{bad}port {port} is out of range 1..65535")
    if parts.query:
        raise BbiError(f"{bad}the base URL must not have a query (?...)")
    if parts.username is not None or parts.password is not None:
        # The spec is recorded in run.yaml; the key belongs in OPENAI_API_KEY.
        raise BbiError(f"{bad}put credentials in OPENAI_API_KEY, not in the base URL")
    return base_url.rstrip("/")


def parse_spec(s: str) -> ModelSpec:
    """Parse a model spec string (see the module table); BbiError on anything malformed."""
    if not isinstance(s, str) or not s.strip():
        raise BbiError("empty model spec")
    spec = s.strip()
    m = _PREFIX_RE.match(spec)
    kind = m.group(1).lower() if m else "hf"
    rest = spec[m.end() :] if m else spec
    if m and kind == IMPORTED_KIND:
        raise imported_error(spec)
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
        base_url = _check_base_url(base_url, spec)
        return ModelSpec("openai", model, base_url=base_url, model=model)

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
