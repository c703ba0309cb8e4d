"""The typed record of "what gives it away": ``results.json["attack"]["comparisons"][alias]["explain"]``.

``discriminators.explain`` writes it during ``bbi attack`` (features chosen on the train
split, measured on the test split); the report reads it through these models, so the
HTML, markdown and JSON views say the same thing. Field meanings: docs/statistics.md,
"What gives it away".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from bbi.errors import BbiError
from bbi.results_schema import Estimate, _Model

EXPLAIN_VERSION = 1


class SplitStats(_Model):
    """A feature's mean on one split: a count per answer, or a share of answers (binary)."""

    teacher: float | None = None
    other: float | None = None
    eps: float | None = None  # train only: the one-feature pairwise rule's advantage there
    n: int | None = None  # prompts


class Feature(_Model):
    key: str  # "surface:words", "opener:sure !", "ngram:hope this helps", "phrase:refusal"
    kind: Literal["surface", "opener", "ngram", "phrase"]
    label: str  # human name: "words", "opens with “Sure!”", "“hope this helps”"
    binary: bool  # a yes/no property of an answer (its mean is a share of answers)
    direction: Literal["teacher", "other"]  # whose answers have more of it (train split)
    pattern: str | None = None  # regex that finds it in a response (for highlighting)
    train: SplitStats
    test: SplitStats
    ratio: float | None = None  # count features: other's test mean / teacher's
    eps: Estimate  # test-split advantage of "the answer with more of it is <direction>'s"


class Rule(_Model):
    """A one-feature rule fit on the train split and scored on the test split."""

    feature: str
    kind: Literal["pairwise", "threshold"]
    text: str
    threshold: float | None = None
    eps: Estimate


class Example(_Model):
    prompt_id: str
    category: str
    adversary: str
    margin: float
    features: list[dict[str, Any]] = Field(default_factory=list)  # key, teacher, other


class CategoryExplanation(_Model):
    n_train: int
    n_test: int
    features: list[Feature] = Field(default_factory=list)
    summary: str


class Explanation(_Model):
    version: int = EXPLAIN_VERSION
    teacher: str
    other: str
    n_train: int
    n_test: int
    alpha: float
    features: list[Feature] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)  # the best feature's pairwise/threshold
    summary: str
    stands_out: bool  # some feature's test advantage is significant (Holm, alpha)
    per_category: dict[str, CategoryExplanation] = Field(default_factory=dict)
    examples: list[Example] = Field(default_factory=list)
    surface_weights: dict[str, float] = Field(default_factory=dict)
    statistics: str = ""


def validated_explanation(record: dict[str, Any]) -> dict[str, Any]:
    """What ``bbi attack`` writes: the record, checked and dumped."""
    try:
        return Explanation.model_validate(record).dump()
    except ValidationError as exc:  # a writer bug, not a user error
        raise RuntimeError(f"explain record does not follow the schema: {exc}") from exc


def parse_explanation(obj: Any, where: str) -> Explanation | None:
    """The record, typed (None when absent); a malformed one is one BbiError line."""
    if obj is None:
        return None
    try:
        return Explanation.model_validate(obj)
    except ValidationError as exc:
        from bbi.config import format_error

        raise BbiError(format_error(exc, where)) from None


__all__ = [
    "EXPLAIN_VERSION",
    "CategoryExplanation",
    "Example",
    "Explanation",
    "Feature",
    "Rule",
    "SplitStats",
    "parse_explanation",
    "validated_explanation",
]
