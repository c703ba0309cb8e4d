"""``echo:NAME``: a backend that answers deterministically from the prompt.

The whole backend is this module plus one entry point (group ``bbi.backends``): its spec
grammar, per-model arguments, capabilities, fingerprint and loader are declared in
``ECHO``. It answers ``NAME: <the prompt's words, last first>``, cut at max_new_tokens
words, so two names give two distinguishable "models" with no weights at all.
"""

from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any

from bbi.backends.base import Generation, GenerationConfig, TokenScores, check_generate_args
from bbi.errors import BbiError
from bbi.specs import BackendKind, ModelSpec


def parse_echo(rest: str, spec: str) -> ModelSpec:
    if not rest.isidentifier():
        raise BbiError(f"bad model spec {spec!r}: use echo:NAME (letters, digits, _)")
    return ModelSpec("echo", rest)


def fingerprint_echo(ms: ModelSpec, **_: Any) -> str:
    return hashlib.sha256(f"echo:{ms.name_or_path}".encode()).hexdigest()[:16]


class EchoBackend:
    """Answers from the prompt alone: a function of (name, prompt, max_new_tokens)."""

    chat_format = "plain"

    def __init__(self, spec: ModelSpec, *, upper: bool = False):
        self.name = str(spec)
        self.fingerprint = fingerprint_echo(spec)
        self.upper = upper

    def generate(
        self,
        prompts: list[str],
        config: GenerationConfig,
        seeds: list[int],
        progress: bool = False,
    ) -> list[Generation]:
        check_generate_args(prompts, seeds)
        out = []
        for prompt in prompts:
            words = [self.name.split(":", 1)[1] + ":", *reversed(prompt.split())]
            cut = words[: config.max_new_tokens]
            text = " ".join(cut)
            out.append(
                Generation(
                    text.upper() if self.upper else text,
                    len(cut),
                    "length" if len(cut) < len(words) else "stop",
                )
            )
        return out

    def score(self, prompts: list[str], texts: list[str]) -> list[TokenScores]:
        raise BbiError(f"{self.name}: echo models cannot score responses")

    def close(self) -> None:
        pass


def load_echo(spec: ModelSpec, *, upper: bool = False, **_: Any) -> EchoBackend:
    """The loader: device, dtype and trust_remote_code mean nothing to an echo."""
    return EchoBackend(spec, upper=upper)


ECHO = BackendKind(
    name="echo",
    load=load_echo,
    parse=parse_echo,
    fingerprint=fingerprint_echo,
    args=MappingProxyType({"upper": bool}),
    capabilities=frozenset({"generate", "serve"}),
    examples=("echo:x", "echo:teacher_1"),
)
