"""``example_prompt_length``: buy prompts in order of prompt length.

A real acquisition strategy written against bbi's public protocol only
(``discriminators.acquisition.Strategy``): a fixed purchase order, so every prefix is what
a smaller budget buys (anytime), ties broken by the seeded generator, every prompt bought
through the oracle, and one parameter (``--param example_prompt_length.longest_first=false``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from discriminators.acquisition import Oracle, Pool, Strategy


class PromptLengthStrategy(Strategy):
    """Longest prompts first (or shortest, with ``longest_first=False``)."""

    name: ClassVar[str] = "example_prompt_length"
    _parameter_constraints: ClassVar[dict[str, list]] = {"longest_first": ["boolean"]}

    def __init__(self, longest_first: bool = True):
        self.longest_first = longest_first

    def order(
        self, pool: Pool, n_prompts: int, rng: np.random.Generator, oracle: Oracle
    ) -> np.ndarray:
        lengths = np.array([len(str(p)) for p in pool.prompts], dtype=float)
        key = -lengths if self.longest_first else lengths
        tiebreak = rng.permutation(len(pool))
        out = np.lexsort((tiebreak, key))[:n_prompts]
        oracle.buy(out)
        return out
