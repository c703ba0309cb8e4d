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
| ``ct2:zoo:smollm2``, ``ct2:hf:./path``  | ct2    |
| ``fast:zoo:smollm2``, ``fast:hf:./path``| fast   |

The part before the first ``:`` names a backend in :data:`BACKENDS` (a
:class:`bbi.registry.Registry`, group ``bbi.backends``); the backend's :class:`BackendKind`
declares, in one place, how the rest of the spec parses, which per-model arguments it
takes, what it can do (:data:`CAPABILITIES`), how it is fingerprinted without loading
weights, and how it is loaded. A package adds a backend with one module holding its
``BackendKind`` and one entry point (``[project.entry-points."bbi.backends"]``).

The registry lives here, beside the grammar, because parsing is its first use and
nothing here may import a backend: the declarations are lazy ``module:attr`` entries.
Parsing is pure string work (no file system, no network) so a spec can be validated,
canonicalised and recorded before anything heavy is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from bbi.errors import BbiError
from bbi.registry import Registry, load_target

# The spec `bbi probe import` records for an alias whose responses came from a file.
IMPORTED_KIND = "imported"
LORA_SEP = "+lora:"

# What a backend can be asked to do beyond generating; callers ask for a capability,
# never for a backend by name.
CAPABILITIES: dict[str, str] = {
    "generate": "answers prompts (every backend)",
    "score": "scores given responses token by token (teacher forcing: likelihood features)",
    "weights": "loads its weights and tokenizer into this process (white-box KD, training)",
    "torch_device": "runs on a local torch device chosen by device/dtype (checked up front)",
    "serve": "can be served by `bbi serve`",
    "logprobs": "returns the top-k log-probabilities of given token ids (a served teacher "
    "for `bbi distill kd --teacher-logits cache`; hf: and zoo: serve them with `bbi serve`)",
}

_PREFIX_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):(?!//)")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec; ``str(spec)`` is its canonical string form (its backend's)."""

    kind: str
    name_or_path: str
    revision: str | None = None
    adapter: str | None = None
    base_url: str | None = None
    model: str | None = None

    def __str__(self) -> str:
        if self.kind in BACKENDS:
            fmt = BACKENDS.get(self.kind).format
            if fmt is not None:
                return fmt(self)
        return format_path_spec(self)

    def with_adapter(self, adapter: str | None) -> ModelSpec:
        """The same base model with another (or no) LoRA adapter."""
        return ModelSpec(
            self.kind, self.name_or_path, self.revision, adapter, self.base_url, self.model
        )

    @property
    def backend(self) -> BackendKind:
        """This spec's backend declaration."""
        return BACKENDS.get(self.kind)

    def can(self, capability: str) -> bool:
        """Whether this spec's backend has ``capability`` (see :data:`CAPABILITIES`)."""
        return self.backend.can(capability)


@dataclass(frozen=True)
class BackendKind:
    """Everything bbi knows about one backend, declared in one place.

    - ``parse(rest, spec)``: the text after ``name:`` (and the whole spec, for messages)
      to a :class:`ModelSpec`; ``format`` the reverse (default ``name:PATH[@REV][+lora:A]``);
    - ``args``: the per-model arguments it takes (name -> type; ``check_args(args, where)``
      checks values further); ``ranges``: inclusive ``(low, high)`` bounds of its numeric
      arguments (``None``: open), checked with the types before any work (every number
      must also be finite);
    - ``capabilities``: a subset of :data:`CAPABILITIES`;
    - ``fingerprint(spec, *, trust_remote_code, allow_download)``: the identity of its
      weights for the response cache, computed without loading them where possible;
    - ``load``: ``"module:attr"`` (or the callable) ``(spec, **options) -> Backend``;
    - ``load_parts``: with ``weights``, ``(spec, *, device, dtype) -> (model, tokenizer,
      device, fingerprint)``;
    - ``examples``: specs that parse (the conformance tests round-trip them).
    """

    name: str
    load: str | Callable[..., Any]
    parse: Callable[[str, str], ModelSpec]
    fingerprint: Callable[..., str]
    args: Mapping[str, type] = field(default_factory=lambda: MappingProxyType({}))
    ranges: Mapping[str, tuple[float | None, float | None]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    capabilities: frozenset[str] = frozenset({"generate"})
    examples: tuple[str, ...] = ()
    check_args: Callable[[dict[str, Any], str], None] | None = None
    format: Callable[[ModelSpec], str] | None = None
    load_parts: str | Callable[..., Any] | None = None

    def can(self, capability: str) -> bool:
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown backend capability {capability!r}")
        return capability in self.capabilities

    def loader(self) -> Callable[..., Any]:
        """The function that loads a backend of this kind (imported now)."""
        return load_target(self.load) if isinstance(self.load, str) else self.load

    def parts_loader(self) -> Callable[..., Any]:
        """The function that loads (model, tokenizer, device, fingerprint) ("weights")."""
        if self.load_parts is None:
            raise BbiError(f"{self.name}: models have no local weights to load")
        return load_target(self.load_parts) if isinstance(self.load_parts, str) else self.load_parts


def _check_kind(name: str, item: Any) -> None:
    """The registry's load-time check: the declaration's shape."""
    if not isinstance(item, BackendKind):
        raise TypeError(f"expected a bbi.specs.BackendKind, got {type(item).__name__}")
    if item.name != name:
        raise ValueError(f"declares the name {item.name!r}, registered as {name!r}")
    unknown = set(item.capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {list(CAPABILITIES)}")
    if "generate" not in item.capabilities:
        raise ValueError("every backend generates ('generate' capability)")
    if "weights" in item.capabilities and item.load_parts is None:
        raise ValueError("the 'weights' capability needs load_parts")
    for key in item.ranges:
        if item.args.get(key) not in (int, float):
            raise ValueError(f"range for {key!r}, which is not a numeric argument")


BACKENDS: Registry[BackendKind] = Registry(
    "backend",
    "bbi.backends",
    builtins={
        "hf": "bbi.backends.kinds:HF",
        "zoo": "bbi.zoo:BACKEND",
        "openai": "bbi.backends.kinds:OPENAI",
        "vllm": "bbi.backends.kinds:VLLM",
        "ct2": "bbi.backends.kinds:CT2",
        "fast": "bbi.backends.kinds:FAST",
    },
    check=_check_kind,
)


# ----------------------------------------------------------------------------- grammar
def split_revision(name: str, spec: str) -> tuple[str, str | None]:
    """``org/name@rev`` -> (name, rev): the revision follows the last '@' that comes after
    the last '/', so local paths with '@' in a directory name still parse."""
    head, sep, rev = name.rpartition("@")
    if not sep or "/" in rev:
        return name, None
    if not head or not rev:
        raise BbiError(f"bad model spec {spec!r}: empty name or revision around '@'")
    return head, rev


def split_adapter(rest: str, spec: str) -> tuple[str, str | None]:
    """``base+lora:adapter`` -> (base, adapter); one adapter at most, neither part empty."""
    base, sep, adapter = rest.partition(LORA_SEP)
    if sep and not adapter:
        raise BbiError(f"bad model spec {spec!r}: empty adapter after '+lora:'")
    if sep and LORA_SEP in adapter:
        raise BbiError(f"bad model spec {spec!r}: only one '+lora:' adapter is supported")
    if not base:
        raise BbiError(f"bad model spec {spec!r}: empty base model")
    return base, adapter or None


def format_path_spec(ms: ModelSpec) -> str:
    """``kind:NAME[@REV][+lora:ADAPTER]``: the canonical form of a path-like spec."""
    out = f"{ms.kind}:{ms.name_or_path}"
    if ms.revision:
        out += f"@{ms.revision}"
    if ms.adapter:
        out += f"{LORA_SEP}{ms.adapter}"
    return out


def check_base_url(base_url: str, spec: str) -> str:
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


def is_imported(spec: str | None) -> bool:
    """True for the ``imported:FILE`` spec of responses brought in by `bbi probe import`."""
    return isinstance(spec, str) and spec.strip().lower().startswith(f"{IMPORTED_KIND}:")


def imported_error(spec: str, what: str = "", instead: str = "") -> BbiError:
    """The error for an imported alias used where a model must run: there are no weights."""
    head = f"{what}: " if what else ""
    hint = instead or (
        "give a model spec instead ("
        + ", ".join(f"{k}:" for k in BACKENDS.names())
        + "), e.g. `bbi distill lora RUN --student hf:PATH`"
    )
    return BbiError(
        f"{head}{spec!r} names responses imported with `bbi probe import`; an imported "
        f"model has no weights to load or query, so {hint}"
    )


def parse_spec(s: str | ModelSpec) -> ModelSpec:
    """Parse a model spec string (see the module table); BbiError on anything malformed.

    A :class:`ModelSpec` is returned as it is, so a caller that holds one never re-parses.
    """
    if isinstance(s, ModelSpec):
        return s
    if not isinstance(s, str) or not s.strip():
        raise BbiError("empty model spec")
    spec = s.strip()
    m = _PREFIX_RE.match(spec)
    kind = m.group(1).lower() if m else "hf"
    rest = spec[m.end() :] if m else spec
    if m and kind == IMPORTED_KIND:
        raise imported_error(spec)
    if m and kind not in BACKENDS:
        raise BbiError(
            f"unknown model kind {m.group(1)!r} in spec {spec!r}; use one of "
            + ", ".join(f"{k}:" for k in BACKENDS.names())
            + " or a bare Hugging Face id/path"
        )
    if not rest:
        raise BbiError(f"bad model spec {spec!r}: nothing after '{kind}:'")
    return BACKENDS.get(kind).parse(rest, spec)


def backend_kind(spec: str | ModelSpec) -> BackendKind:
    """The declaration of the backend ``spec`` names (parsing it if it is a string)."""
    return BACKENDS.get(parse_spec(spec).kind)


def can(spec: str | ModelSpec, capability: str) -> bool:
    """Whether ``spec``'s backend has ``capability``; False for a spec that does not parse
    (an imported alias, a typo): such a model can do nothing."""
    try:
        return backend_kind(spec).can(capability)
    except BbiError:
        return False


__all__ = [
    "BACKENDS",
    "CAPABILITIES",
    "IMPORTED_KIND",
    "LORA_SEP",
    "BackendKind",
    "ModelSpec",
    "backend_kind",
    "can",
    "check_base_url",
    "format_path_spec",
    "imported_error",
    "is_imported",
    "parse_spec",
    "split_adapter",
    "split_revision",
]
