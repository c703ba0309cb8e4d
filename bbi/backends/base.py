"""What every backend shares: generation settings, results, and the Backend protocol.

The protocol follows lm-eval-harness: a backend turns a list of user prompts into one
generation each (``generate``) and optionally scores given responses (``score``). The
caller expands ``n`` samples per prompt into separate requests, each with its own seed,
so a response is a function of (model, prompt, config, seed) only, never of how requests
were batched. That is what makes the response cache and resumable runs sound.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bbi.config import GenerationSettings

# The decoding fields of GenerationSettings a backend sees (not the run's samples, limit,
# device, dtype: those are the caller's business).
DECODING_FIELDS = ("max_new_tokens", "temperature", "top_p", "stop", "batch_size", "seed")


def _default(name: str) -> Any:
    value = GenerationSettings.model_fields[name].get_default(call_default_factory=True)
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class GenerationConfig:
    """The frozen, hashable view of :class:`bbi.config.GenerationSettings` a backend decodes
    with: the decoding fields only, with one model's seed.

    It is kept as its own type (rather than handing backends the settings) because a backend
    needs a hashable value (the server's micro-batcher groups requests by it) and a
    per-model seed, and must not see run-level fields. Nothing is restated: every default
    and every rule is ``GenerationSettings``' (``__post_init__`` validates through it), and
    :meth:`of` is the one place a run's settings become a backend's config.
    """

    max_new_tokens: int = _default("max_new_tokens")
    temperature: float = _default("temperature")
    top_p: float = _default("top_p")
    stop: tuple[str, ...] = _default("stop")
    batch_size: int = _default("batch_size")
    seed: int = _default("seed")

    def __post_init__(self) -> None:
        # Accept a list (from YAML/JSON) but keep the dataclass hashable.
        object.__setattr__(self, "stop", tuple(self.stop or ()))
        values = {name: getattr(self, name) for name in DECODING_FIELDS}
        GenerationSettings.parse({**values, "stop": list(self.stop)}, "generation")

    @classmethod
    def of(cls, settings: GenerationSettings, seed: int | None = None) -> GenerationConfig:
        """A run's settings as a backend's config (with an optional per-model seed)."""
        values = {name: getattr(settings, name) for name in DECODING_FIELDS}
        if seed is not None:
            values["seed"] = seed
        return cls(**values)

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    def output_fields(self) -> dict:
        """The fields that change outputs; greedy decoding ignores temperature/top_p/seed."""
        out: dict = {
            "max_new_tokens": int(self.max_new_tokens),
            "stop": list(self.stop),
            "do_sample": self.do_sample,
        }
        if self.do_sample:
            out.update(
                temperature=float(self.temperature), top_p=float(self.top_p), seed=int(self.seed)
            )
        return out

    def cache_key(self) -> str:
        """Stable hex digest of the output-changing fields (not batch_size)."""
        blob = json.dumps(self.output_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Generation:
    """One response: text (stop string excluded), generated tokens up to and including
    EOS/stop, and why it ended ('stop' or 'length')."""

    text: str
    n_tokens: int
    finish_reason: str


@dataclass
class TokenScores:
    """Teacher-forced statistics of each response token given the formatted prompt.

    ``logprobs[i]`` is log p(token_i | prefix) (natural log), ``entropies[i]`` the entropy
    of the next-token distribution at that position (nats), ``ranks[i]`` the 1-based rank
    of the realised token in that distribution (1 = the argmax).
    """

    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)


@dataclass
class PromptLogprobs:
    """Teacher-forced top-k log-probabilities along one token sequence (vLLM's
    ``prompt_logprobs`` without its leading ``None``): entry j describes the distribution
    token j + 1 was drawn from given tokens 0..j. ``top_ids[j]`` / ``top_logprobs[j]``
    are its k most likely tokens, most likely first; ``token_logprobs[j]`` and
    ``ranks[j]`` (1 = the argmax) are those of the actual token j + 1. Natural log,
    before any temperature (vLLM's default raw log-probabilities)."""

    top_ids: list[list[int]] = field(default_factory=list)
    top_logprobs: list[list[float]] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)


@runtime_checkable
class Backend(Protocol):
    """A model bbi can query. ``fingerprint`` identifies the weights for the cache."""

    name: str
    fingerprint: str
    chat_format: str

    def generate(
        self,
        prompts: list[str],
        config: GenerationConfig,
        seeds: list[int],
        progress: bool = False,
    ) -> list[Generation]: ...

    def score(self, prompts: list[str], texts: list[str]) -> list[TokenScores]: ...

    def close(self) -> None: ...


def check_generate_args(prompts: list[str], seeds: list[int]) -> None:
    """Shared argument check so every backend fails the same way."""
    from bbi.errors import BbiError

    if len(prompts) != len(seeds):
        raise BbiError(f"got {len(prompts)} prompts but {len(seeds)} seeds; need one seed each")
    for p in prompts:
        if not isinstance(p, str):
            raise BbiError(f"prompts must be strings, got {type(p).__name__}")
