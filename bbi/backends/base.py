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
from typing import Protocol, runtime_checkable

FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings shared by every model in a run (length is an easy artifact)."""

    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        # Accept a list (from YAML/JSON) but keep the dataclass hashable.
        object.__setattr__(self, "stop", tuple(self.stop or ()))
        from bbi.errors import BbiError

        if self.max_new_tokens < 1:
            raise BbiError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise BbiError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise BbiError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            raise BbiError(f"batch_size must be >= 1, got {self.batch_size}")
        if any(not s for s in self.stop):
            raise BbiError("stop strings must be non-empty")

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
