"""The typed, versioned schema of results.json's ``attack`` and ``similarity`` sections.

``bbi attack`` builds its section, validates it here and writes the validated dump; the
report and the test fixtures read through the same models, so a field means one thing
everywhere and a malformed or outdated file is one clear error instead of a KeyError deep
in a template. ``ATTACK_SCHEMA_VERSION`` is written into the section
(``attack.schema_version``) and checked on read: a section written by an older bbi asks
for ``bbi attack`` to be rerun, one from a newer bbi for an upgrade.

Field meanings are in docs/statistics.md and docs/run-directory.md.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bbi.errors import BbiError

ATTACK_SCHEMA_VERSION = 2


class _Model(BaseModel):
    # Unknown keys are refused, so the writer cannot drift from the schema unnoticed.
    model_config = ConfigDict(extra="forbid")

    def dump(self) -> dict[str, Any]:
        """The JSON form written to results.json: the keys that were given, nothing added."""
        return self.model_dump(mode="json", exclude_unset=True)


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class Estimate(_Model):
    """A point estimate with its 95% CI; tests add ``p`` (and, in a family, Holm)."""

    value: float | None = None
    ci: tuple[float, float] | None = None
    n: int | None = None
    p: float | None = None
    p_holm: float | None = None
    significant: bool | None = None
    h0: str | None = None

    @field_validator("value", "p", "p_holm", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        return _finite_or_none(v)

    @field_validator("ci", mode="before")
    @classmethod
    def _ci(cls, v: Any) -> Any:
        # [None, None] (no data) is no interval.
        if isinstance(v, list | tuple) and len(v) == 2 and any(x is None for x in v):
            return None
        return v

    @property
    def lo(self) -> float | None:
        return self.ci[0] if self.ci else None

    @property
    def hi(self) -> float | None:
        return self.ci[1] if self.ci else None

    def as_dict(self) -> dict[str, Any]:
        """Only the keys that are set (for the JSON/markdown report summaries)."""
        out: dict[str, Any] = {
            "value": self.value,
            "ci": list(self.ci) if self.ci else None,
            "n": self.n,
        }
        for key in ("p", "p_holm"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.p_holm is not None:
            out["significant"] = bool(self.significant)
        return out


class CurvePoint(_Model):
    """eps at budget q and k test queries: mean over seeds, CI of that mean."""

    q: int = Field(gt=0)
    k: int = Field(1, ge=1)
    value: float | None = None
    ci: tuple[float, float] | None = None
    n: int | None = None
    n_seeds: int | None = None
    seed_values: list[float] | None = None
    p: float | None = None  # sign-flip p of the seed mean (k = 1); two-sample: 2 x median
    compute_s: float | None = None
    p_values: list[float] | None = None  # two-sample tests: one p per seed
    statistic: float | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        return _finite_or_none(v)


class TwoSample(_Model):
    statistic: float
    p: float
    n: int  # prompts used
    samples: int | None = None  # responses per prompt and model (mmd samples > 1)


class Queries(_Model):
    budget: int
    revealed: int
    train_prompts: int


class SequentialPoint(_Model):
    """Anytime-valid "queries until told apart" at one training budget."""

    q: int
    n_to_reject: int | None
    queries: int | None
    n_test: int
    p: float


class AdversaryResult(_Model):
    """One adversary of one comparison: headline eps, categories, curves."""

    kind: Literal["pointwise", "pairwise", "test"]
    eps: Estimate | None = None
    n_seeds: int | None = None
    auroc: Estimate | None = None
    kept_fraction: float | None = None
    budget: int | None = None
    strategy: str | None = None
    seed: int | None = None
    queries: Queries | None = None
    compute_s: float | None = None
    prepare_s: float | None = None
    per_category: dict[str, Estimate] = Field(default_factory=dict)
    curves: dict[str, list[CurvePoint]] = Field(default_factory=dict)
    notes: str | None = None
    two_sample: TwoSample | None = None
    sequential: list[SequentialPoint] = Field(default_factory=list)


class PrimaryTest(_Model):
    """The verdict's confirmatory test: a point chosen on the selection half, measured on
    the confirmation half."""

    adversary: str
    strategy: str
    q: int
    k: int = 1
    selection: dict[str, float | int]
    eps: Estimate
    p: float
    n_to_reject: int | None = None
    p_holm: float
    rejected: bool


class CategoryFinding(_Model):
    category: str
    adversary: str
    q: int
    strategy: str
    eps: Estimate
    p: float
    p_holm: float
    significant: bool


class Calibration(_Model):
    """The A/A check: the verdict's family at eps = 0 rejects nothing."""

    eps0: float
    ok: bool | None
    rejected: list[str] = Field(default_factory=list)
    family_size: int | None = None
    min_p_holm: float | None = None
    text: str


class Verdict(_Model):
    epsilon: float
    alpha: float
    plan: str
    adversaries: list[str]
    excluded: dict[str, str] = Field(default_factory=dict)
    indistinguishable: bool | None
    status: Literal["distinguishable", "indistinguishable", "inconclusive", "no-estimate"]
    text: str
    primary: PrimaryTest | None = None
    categories: list[CategoryFinding] = Field(default_factory=list)
    family_size: int | None = None
    distinguishable_in: list[str] = Field(default_factory=list)
    broken_by: str | None = None
    strategy: str | None = None
    at_budget: int | None = None
    gray_box: dict[str, str] = Field(default_factory=dict)
    calibration: Calibration | None = None
    # The cross-fitted stacked adversary that decides (discriminators.verdict_cf) and the
    # sweep's own A/A check, kept beside it.
    crossfit: dict[str, Any] | None = None
    sweep_calibration: Calibration | None = None
    # The one declared anytime-valid "stop as soon as told apart" test.
    sequential: dict[str, Any] | None = None


class Example(_Model):
    prompt_id: str
    scores: dict[str, float]


class ComparisonResult(_Model):
    reference: str
    role: str
    n_train: int | None = None
    n_test: int | None = None
    adversaries: dict[str, AdversaryResult]
    verdict: Verdict
    examples: dict[str, list[Example]] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)  # the sweep that produced it


class DeltaAdversary(_Model):
    """Paired Delta-eps (distilled - base) of one adversary at the full-budget point."""

    delta: Estimate
    eps_base: Estimate | None = None
    eps_distilled: Estimate | None = None
    point: dict[str, Any] = Field(default_factory=dict)
    per_category: dict[str, Estimate] = Field(default_factory=dict)


class DeltaSimilarity(Estimate):
    base: Estimate | None = None
    distilled: Estimate | None = None


class Reading(_Model):
    """``bbi.stats.delta_reading``: did distillation bring the student closer?"""

    status: Literal["closer", "further", "mixed", "not-closer", "none"] = "none"
    closer: list[str] = Field(default_factory=list)
    further: list[str] = Field(default_factory=list)
    undecided: list[str] = Field(default_factory=list)
    n: int | None = None
    alpha: float | None = None
    text: str = "no reading recorded"


class DistillDelta(_Model):
    base: str
    base_from: str | None = None
    method: str | None = None
    adversaries: dict[str, DeltaAdversary] = Field(default_factory=dict)
    skipped: dict[str, str] = Field(default_factory=dict)
    similarity: DeltaSimilarity | None = None
    reading: Reading = Field(default_factory=Reading)


class AttackSection(_Model):
    """results.json["attack"]."""

    schema_version: int = ATTACK_SCHEMA_VERSION
    config: dict[str, Any] = Field(default_factory=dict)
    comparisons: dict[str, ComparisonResult] = Field(default_factory=dict)
    deltas: dict[str, DistillDelta] = Field(default_factory=dict)


class Similarity(_Model):
    """results.json["similarity"][alias]: cosine to the teacher, overall/test/per category."""

    model_config = ConfigDict(extra="ignore")

    overall: Estimate | None = None
    test: Estimate | None = None
    per_category: dict[str, Estimate] = Field(default_factory=dict)


def _error(exc: ValidationError, where: str) -> BbiError:
    from bbi.config import format_error

    return BbiError(format_error(exc, where))


def parse_attack(obj: Any, where: str = "results.json: attack") -> AttackSection:
    """The attack section, typed; version and shape errors are one BbiError line."""
    if not isinstance(obj, dict):
        raise BbiError(f"{where}: expected an object")
    version = obj.get("schema_version")
    if version != ATTACK_SCHEMA_VERSION:
        newer = type(version) is int and version > ATTACK_SCHEMA_VERSION
        raise BbiError(
            f"{where}: schema_version {version!r}, this bbi reads {ATTACK_SCHEMA_VERSION}; "
            + (
                "it was written by a newer bbi: upgrade bbi to read it"
                if newer
                else "it was written by an older bbi: rerun `bbi attack` on the run"
            )
        )
    try:
        return AttackSection.model_validate(obj)
    except ValidationError as exc:
        raise _error(exc, where) from None


def parse_similarity(obj: Any, where: str = "results.json: similarity") -> dict[str, Similarity]:
    """The similarity section, typed (alias -> Similarity)."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise BbiError(f"{where}: expected an object")
    out = {}
    for alias, raw in obj.items():
        try:
            out[str(alias)] = Similarity.model_validate(raw or {})
        except ValidationError as exc:
            raise _error(exc, f"{where}.{alias}") from None
    return out


def validated_attack(section: dict[str, Any]) -> dict[str, Any]:
    """What ``bbi attack`` writes: its section, checked against the schema and dumped."""
    try:
        return AttackSection.model_validate(
            {**section, "schema_version": ATTACK_SCHEMA_VERSION}
        ).dump()
    except ValidationError as exc:  # a writer bug, not a user error
        raise RuntimeError(f"attack results do not follow the schema: {exc}") from exc


__all__ = [
    "ATTACK_SCHEMA_VERSION",
    "AdversaryResult",
    "AttackSection",
    "Calibration",
    "CategoryFinding",
    "ComparisonResult",
    "CurvePoint",
    "DeltaAdversary",
    "DistillDelta",
    "Estimate",
    "Example",
    "PrimaryTest",
    "Similarity",
    "Verdict",
    "parse_attack",
    "parse_similarity",
    "validated_attack",
]
