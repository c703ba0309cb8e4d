"""The typed, versioned schema of the records bbi writes in a run directory.

results.json's ``attack`` (with its sweep ``config``) and ``similarity`` sections, each
``distill.<alias>`` record (a union by method), the per-point attack files
(``attack/<comparison>/<adversary>__<strategy>__q<budget>__s<seed>.json``) and the
report's JSON summary.

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
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from bbi.errors import BbiError

ATTACK_SCHEMA_VERSION = 2
# distill.<alias>.curve (the snapshots a training kept) and results.json["token_curve"].
CURVE_RECORD_VERSION = 1
TOKEN_CURVE_SCHEMA_VERSION = 1
# attack.comparisons.<alias>.verdict.equality (its own version: an optional record).
EQUALITY_SCHEMA_VERSION = 1


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


class EqualityTest(_Model):
    """One MMD test of the equality claim; ``test`` names it in full."""

    name: str
    label: str  # as the claim's wording names it, e.g. "MMD k-spectrum"
    test: str
    statistic: float
    p: float
    p_holm: float
    rejected: bool


class EqualityCheck(_Model):
    """In the A/A comparison: the equality claim must not reject."""

    ok: bool
    text: str


class EqualityClaim(_Model):
    """The verdict's second declared question (discriminators.equality): do the responses
    differ in distribution at all (H0: P_teacher = P_other)? Never an eps claim. Written
    with its own ``schema_version`` so the record can change without the section's."""

    schema_version: Literal[1] = EQUALITY_SCHEMA_VERSION
    null: str
    design: str
    alpha: float
    n_prompts: int
    responses: int
    n_permutations: int
    tests: list[EqualityTest]
    rejected: bool
    decided_by: str | None = None
    text: str
    blocks_indistinguishable: bool = False
    calibration: EqualityCheck | None = None


class EqualitySkipped(_Model):
    skipped: str


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
    # Beside the decision, its own question: do the responses differ at all (MMD)?
    equality: EqualityClaim | EqualitySkipped | None = None


class Example(_Model):
    prompt_id: str
    scores: dict[str, float]


def _not_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    return v


# A number as written: an int stays an int, a float a float (the dump keeps its bytes).
Number = Annotated[int | float, BeforeValidator(_not_bool)]


class AttackConfigRecord(_Model):
    """The sweep that produced the attack results (``attack.config``, and each
    comparison's ``config``): budgets q, strategies, seeds, k values, the verdict's eps
    and alpha, adversaries, resampling counts. Fields are in the order they are written;
    a key this bbi does not know is kept as written (a newer sweep option)."""

    model_config = ConfigDict(extra="allow")

    budgets: list[int] = Field(default_factory=list)
    strategies: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    test_queries: list[int] = Field(default_factory=list)
    epsilon: Number | None = None
    alpha: Number | None = None
    adversaries: list[str] = Field(default_factory=list)
    n_bootstrap: int | None = None
    n_permutations: int | None = None
    threshold_folds: int | None = None
    n_examples: int | None = None
    blas_threads: int | None = None
    adversary_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    statistics: str | None = None  # how the numbers were computed, in words

    def as_dict(self) -> dict[str, Any]:
        """The recorded keys only (the report's methods table lists them)."""
        return self.dump()


class ComparisonResult(_Model):
    reference: str
    role: str
    n_train: int | None = None
    n_test: int | None = None
    adversaries: dict[str, AdversaryResult]
    verdict: Verdict
    examples: dict[str, list[Example]] = Field(default_factory=dict)
    config: AttackConfigRecord | None = None  # the sweep that produced it
    explain: dict[str, Any] | None = None  # what gives it away (bbi.explain_schema)


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
    config: AttackConfigRecord = Field(default_factory=AttackConfigRecord)
    comparisons: dict[str, ComparisonResult] = Field(default_factory=dict)
    deltas: dict[str, DistillDelta] = Field(default_factory=dict)


class Similarity(_Model):
    """results.json["similarity"][alias]: cosine to the teacher, overall/test/per category."""

    model_config = ConfigDict(extra="ignore")

    overall: Estimate | None = None
    test: Estimate | None = None
    per_category: dict[str, Estimate] = Field(default_factory=dict)


class AttackPoint(_Model):
    """One sweep point, ``attack/<comparison>/<adversary>__<strategy>__q<budget>__s<seed>.json``
    (file name: ``bbi.runstore.RunDir.attack_point_name``). ``model`` is the alias of the
    model compared with the teacher (``reference``); the statistics are those of
    ``discriminators.evaluate.run_point``, kept as written."""

    model_config = ConfigDict(extra="allow")

    adversary: str
    kind: Literal["pointwise", "pairwise", "test"]
    budget: int = Field(gt=0)
    seed: int
    queries: Queries
    strategy: str
    comparison: str
    model: str
    reference: str
    compute_s: float | None = None
    acquisition_s: float | None = None
    threshold: float | None = None
    kept_fraction: float | None = None
    eps: dict[str, Any] | None = None
    auroc: dict[str, Any] | None = None
    eps_k: dict[str, dict[str, Any]] = Field(default_factory=dict)
    per_category: dict[str, dict[str, Any]] = Field(default_factory=dict)
    two_sample: TwoSample | None = None
    mean_margin: float | None = None
    notes: str | None = None


class _Record(BaseModel):
    # Records carry provenance beyond the typed fields (kept as written).
    model_config = ConfigDict(extra="allow")


# ---- suite and models: written by `bbi probe run` -----------------------------------------


class SuiteSummary(_Record):
    """results.json["suite"]: which prompts the run's numbers are about."""

    name: str | None = None
    hash: str
    n: int = Field(ge=0)
    n_train: int = Field(ge=0)
    n_test: int = Field(ge=0)
    categories: list[str]
    subset_of: int | None = None  # a stratified --limit subset of a suite this large


class ModelEntry(_Record):
    """results.json["models"][alias]: the model's spec, role and weights fingerprint."""

    spec: str | None = None
    role: Literal["teacher", "null", "student"]
    fingerprint: str | None = None


_MODELS = TypeAdapter(dict[str, ModelEntry])


def validated_suite(suite: dict[str, Any]) -> dict[str, Any]:
    """results.json["suite"] as ``bbi probe run`` writes it, checked; returned unchanged."""
    try:
        SuiteSummary.model_validate(suite)
    except ValidationError as exc:  # a writer bug, not a user error
        raise RuntimeError(f"suite summary does not follow the schema: {exc}") from exc
    return suite


def validated_models(models: dict[str, Any]) -> dict[str, Any]:
    """results.json["models"], checked; returned unchanged."""
    try:
        _MODELS.validate_python(models)
    except ValidationError as exc:  # a writer bug, not a user error
        raise RuntimeError(f"models section does not follow the schema: {exc}") from exc
    return models


# ---- token_curve.<alias>: eps against distillation tokens (bbi.app.curve) ---------------


class TokenCurvePoint(_Model):
    """One point of the curve: a student (the base at 0 tokens, a snapshot, or the final
    distilled student) and the eps of the analysis that decides its verdict against the
    teacher (``test`` says which): the cross-fitted adversary over every prompt (no
    strategy or q), or under the split decision the (adversary, strategy, q) selected on
    the selection half of the test split, its eps and 95% CI on the confirmation half."""

    alias: str
    kind: Literal["base", "snapshot", "final"]
    tokens_seen: int = Field(ge=0)
    loss_tokens: int | None = Field(None, ge=0)
    step: int | None = Field(None, ge=0)
    adversary: str | None = None
    strategy: str | None = None
    q: int | None = None
    eps: Estimate | None = None
    test: str  # where eps comes from, in words
    status: str | None = None  # the comparison's verdict
    similarity: Estimate | None = None  # cosine to the teacher on the test split


class TokenCurveBand(_Model):
    """The A/A band: the same analysis's eps CI for the teacher against its own
    independent resample (what eps looks like when there is nothing to find)."""

    alias: str
    adversary: str | None = None
    strategy: str | None = None
    q: int | None = None
    eps: Estimate | None = None
    test: str


class TokenCurve(_Model):
    """``results.json["token_curve"][<distilled alias>]``: eps against distillation tokens."""

    schema_version: Literal[1] = TOKEN_CURVE_SCHEMA_VERSION
    distilled: str
    teacher: str
    base: str | None = None
    attack: dict[str, Any]  # the sweep's config record (every point attacked with it)
    points: list[TokenCurvePoint]
    band: TokenCurveBand | None = None
    unreached: list[int] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


_TOKEN_CURVES = TypeAdapter(dict[str, TokenCurve])


def validated_token_curve(curve: dict[str, Any]) -> dict[str, Any]:
    """One ``token_curve`` entry as ``bbi curve`` builds it, checked and dumped."""
    try:
        return TokenCurve.model_validate(
            {**curve, "schema_version": TOKEN_CURVE_SCHEMA_VERSION}
        ).dump()
    except ValidationError as exc:  # a writer bug, not a user error
        raise RuntimeError(f"token curve does not follow the schema: {exc}") from exc


def parse_token_curves(obj: Any, where: str = "results.json: token_curve") -> dict[str, TokenCurve]:
    """results.json["token_curve"], typed; a version or shape error is one BbiError line."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise BbiError(f"{where}: expected an object")
    for alias, raw in obj.items():
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        if version != TOKEN_CURVE_SCHEMA_VERSION:
            raise BbiError(
                f"{where}.{alias}: schema_version {version!r}, this bbi reads "
                f"{TOKEN_CURVE_SCHEMA_VERSION}; rerun `bbi curve` on the run"
            )
    try:
        return _TOKEN_CURVES.validate_python(obj)
    except ValidationError as exc:
        raise _error(exc, where) from None


def snapshot_alias_of(distilled: str, alias: str) -> bool:
    """Whether ``alias`` names a token snapshot of ``distilled`` (``<distilled>.t<tokens>``)."""
    head, sep, tokens = alias.rpartition(".t")
    return bool(sep) and head == distilled and tokens.isdigit()


def snapshot_aliases(results: dict[str, Any], candidates: Any = ()) -> set[str]:
    """The aliases of every snapshot a distill record lists (``distill.<alias>.curve``),
    plus those of ``candidates`` named like a distilled student's snapshot (an earlier
    training's): points of a token curve, reported in its section, not each as a student."""
    out: set[str] = set()
    distill = results.get("distill") if isinstance(results, dict) else None
    distill = distill if isinstance(distill, dict) else {}
    for rec in distill.values():
        curve = rec.get("curve") if isinstance(rec, dict) else None
        snaps = curve.get("snapshots") if isinstance(curve, dict) else None
        for snap in snaps if isinstance(snaps, list) else []:
            if isinstance(snap, dict) and isinstance(snap.get("alias"), str):
                out.add(snap["alias"])
    out |= {
        c for c in candidates if any(snapshot_alias_of(str(d), str(c)) for d in distill)
    }  # fmt: skip
    return out


# ---- distill.<alias>: one record per distilled student, a union by method -----------------


class DistillBase(_Record):
    """What every distilled student records: its spec (what ``bbi probe`` loads), the
    method, the student it started from and the teacher."""

    spec: str
    method: str
    finetune: str | None = None
    base: str | None = None
    base_fingerprint: str | None = None
    teacher: str | None = None
    model_dir: str | None = None
    seed: int | None = None
    time_s: float | None = None


class TokenSnapshot(_Model):
    """One student snapshot kept at a token milestone (``distill.method``): a loadable
    student (``spec``), registered under ``alias`` when the curve probes it."""

    alias: str
    spec: str
    dir: str
    tokens_seen: int = Field(ge=0)  # prompt + response tokens fed to the student so far
    loss_tokens: int = Field(ge=0)  # of which the loss was taken on
    step: int = Field(ge=1)
    epoch: int = Field(ge=0)
    milestones: list[int] = Field(min_length=1)  # the milestones first reached at this step


class SnapshotsRecord(_Model):
    """``distill.<alias>.curve``: the milestones asked for and the snapshots kept."""

    version: Literal[1]
    milestones: list[int]
    tokens_seen: int = Field(ge=0)  # the whole training's
    loss_tokens: int = Field(ge=0)
    steps: int = Field(ge=0)
    snapshots: list[TokenSnapshot] = Field(default_factory=list)
    unreached: list[int] = Field(default_factory=list)

    @field_validator("snapshots")
    @classmethod
    def _increasing(cls, v: list[TokenSnapshot]) -> list[TokenSnapshot]:
        if any(b.tokens_seen <= a.tokens_seen for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("snapshots must have strictly increasing tokens_seen")
        return v


class LoopDistill(DistillBase):
    """``bbi distill lora|kd`` (and methods on the same loop): ``distill.method.distil``."""

    objective: Any = None
    adapter_dir: str | None = None
    n_train_examples: int
    n_eval_examples: int
    n_train_prompts: int
    n_eval_prompts: int
    n_skipped_too_long: int = 0
    eval_loss_per_epoch: list[float] = Field(default_factory=list)
    train_loss: float | None = None
    train_loss_per_epoch: list[float] = Field(default_factory=list)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    target_modules: Any = None
    steps: int | None = None
    num_processes: int | None = None
    mixed_precision: str | None = None
    chat_format: str | None = None
    train_time_s: float | None = None
    train_cpu_s: float | None = None
    tokens_per_s: float | None = None
    resumed: bool = False
    metrics: str | None = None
    loss_tokens: Any = None
    guide: Any = None
    n_corpus_prompts: int = 0  # training-corpus prompts beyond the train split
    objective_stats: dict[str, Any] | None = None  # the objective's totals (sampling time...)
    curve: SnapshotsRecord | None = None  # token-milestone snapshots (curve_tokens)


class WdaDistill(DistillBase):
    """``bbi distill wda``: the phases run (each with its losses) and the loop settings."""

    method: Literal["wda"]
    phases: list[dict[str, Any]] = Field(default_factory=list)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    n_train_examples: int
    n_eval_examples: int
    n_train_prompts: int
    n_eval_prompts: int
    resumed: bool = False
    completed: bool = True


class BehaviourCellRecord(BaseModel):
    """One arm x metric of a behaviour table: seed mean, its interval, per-seed values."""

    model_config = ConfigDict(extra="allow")

    mean: float | None = None
    ci: tuple[float, float] | None = None
    p: float | None = None
    per_seed: list[float] = Field(default_factory=list)


class BehaviourTableRecord(_Record):
    """``distill.experiment.summarise``: a method beside its controls, over seeds."""

    version: int
    method: str
    controls: list[str] = Field(default_factory=list)
    arms: list[str]
    metrics: list[str]
    higher_is_better: dict[str, bool] = Field(default_factory=dict)
    seeds: list[int | str]
    confidence: float = Field(gt=0, lt=1)
    rows: dict[str, dict[str, BehaviourCellRecord]]
    deltas: dict[str, dict[str, BehaviourCellRecord]] = Field(default_factory=dict)


class TaskDistill(DistillBase):
    """``bbi distill bird|circuit``: a behaviour table over seeds and the method's facts."""

    method: str | None = None  # "bird" | "circuit"; the table records it too
    behaviour: BehaviourTableRecord
    arms: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    diagnostics: dict[str, float] = Field(default_factory=dict)  # bird
    layers: dict[str, Any] = Field(default_factory=dict)  # bird
    teacher_accuracy: float | None = None  # circuit
    student_accuracy: float | None = None  # circuit
    circuit: dict[str, Any] = Field(default_factory=dict)  # circuit: k, of, heads, ...


def _distill_kind(v: Any) -> str:
    """wda; a task experiment (a behaviour table: bird, circuit); else the one loop."""
    get = v.get if isinstance(v, dict) else lambda k: getattr(v, k, None)
    if get("method") == "wda":
        return "wda"
    return (
        "task" if get("behaviour") is not None or get("method") in ("bird", "circuit") else "loop"
    )


DistillRecord = Annotated[
    Annotated[LoopDistill, Tag("loop")]
    | Annotated[WdaDistill, Tag("wda")]
    | Annotated[TaskDistill, Tag("task")],
    Discriminator(_distill_kind),
]
_DISTILL = TypeAdapter(DistillRecord)


def validated_distill(record: dict[str, Any]) -> dict[str, Any]:
    """What a distillation writes as ``distill.<alias>``: checked against its method's
    model and returned unchanged (the record's keys and values are written as built)."""
    try:
        _DISTILL.validate_python(record)
    except ValidationError as exc:  # a writer bug, not a user error
        raise RuntimeError(f"distill record does not follow the schema: {exc}") from exc
    return record


def validated_point(record: dict[str, Any]) -> dict[str, Any]:
    """A sweep point as ``bbi attack`` writes it, checked; returned unchanged."""
    try:
        AttackPoint.model_validate(record)
    except ValidationError as exc:  # a writer bug, not a user error
        raise RuntimeError(f"attack point does not follow the schema: {exc}") from exc
    return record


# ---- reading distill records for the report ------------------------------------------------
# A report is written at any stage of a run and from hand-edited files: a distill record
# is read field by field, and a field of the wrong type reads as absent (the report shows
# a gap, or "not available") instead of failing the whole report.


def _num(x: Any) -> float | None:
    """A finite number, or None for anything else (bools, strings, NaN, inf)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _text(x: Any) -> str | None:
    return x if isinstance(x, str) and x else None


def _obj(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _ci(x: Any) -> tuple[float, float] | None:
    if isinstance(x, list | tuple) and len(x) == 2:
        lo, hi = _num(x[0]), _num(x[1])
        if lo is not None and hi is not None:
            return (min(lo, hi), max(lo, hi))
    return None


def _strings(x: Any) -> list[str]:
    return list(dict.fromkeys(m for m in x if isinstance(m, str))) if isinstance(x, list) else []


def _table(x: Any) -> dict[str, dict[str, Any]]:
    """label -> metric -> cell; rows that are not objects are left out, cells that are
    not objects read as None."""
    return {
        str(label): {str(m): (c if isinstance(c, dict) else None) for m, c in row.items()}
        for label, row in _obj(x).items()
        if isinstance(row, dict)
    }


LenientFloat = Annotated[float | None, BeforeValidator(_num)]
LenientInt = Annotated[int | None, BeforeValidator(_int)]
LenientText = Annotated[str | None, BeforeValidator(_text)]


class _View(BaseModel):
    model_config = ConfigDict(extra="ignore")


class BehaviourCell(_View):
    mean: LenientFloat = None
    ci: Annotated[tuple[float, float] | None, BeforeValidator(_ci)] = None
    p: LenientFloat = None
    per_seed: Annotated[
        list[float],
        BeforeValidator(
            lambda x: [v for v in map(_num, x) if v is not None] if isinstance(x, list) else []
        ),
    ] = Field(default_factory=list)


BehaviourRows = Annotated[dict[str, dict[str, BehaviourCell | None]], BeforeValidator(_table)]


class BehaviourView(_View):
    """A behaviour table as the report reads it (see BehaviourTableRecord)."""

    version: LenientInt = None
    method: LenientText = None
    # None when the file has no list of metrics (the rows then say which there are)
    metrics: Annotated[
        list[str] | None, BeforeValidator(lambda x: _strings(x) if isinstance(x, list) else None)
    ] = None
    arms: Annotated[list[str], BeforeValidator(_strings)] = Field(default_factory=list)
    rows: BehaviourRows = Field(default_factory=dict)
    deltas: BehaviourRows = Field(default_factory=dict)
    higher_is_better: Annotated[
        dict[str, bool],
        BeforeValidator(lambda x: {str(m): v for m, v in _obj(x).items() if isinstance(v, bool)}),
    ] = Field(default_factory=dict)
    seeds: Annotated[
        list[int | str],
        BeforeValidator(
            lambda x: (
                [s for s in x if isinstance(s, int | str) and not isinstance(s, bool)]
                if isinstance(x, list)
                else []
            )
        ),
    ] = Field(default_factory=list)
    confidence: Annotated[
        float | None,
        BeforeValidator(lambda x: c if (c := _num(x)) is not None and 0 < c < 1 else None),
    ] = None


class CircuitView(_View):
    k: LenientInt = None
    of: LenientInt = None
    heads: Annotated[
        list[tuple[int, int]],
        BeforeValidator(
            lambda x: (
                [
                    (h[0], h[1])
                    for h in x
                    if isinstance(h, list | tuple)
                    and len(h) == 2
                    and all(_int(v) is not None for v in h)
                ]
                if isinstance(x, list)
                else []
            )
        ),
    ] = Field(default_factory=list)


class TaskDistillView(_View):
    """A ``distill.<alias>`` record with a behaviour table, as the report reads it."""

    method: LenientText = None
    spec: LenientText = None
    base: LenientText = None
    teacher: LenientText = None
    time_s: LenientFloat = None
    seed: LenientInt = None
    behaviour: Annotated[
        BehaviourView | None, BeforeValidator(lambda x: x if isinstance(x, dict) else None)
    ] = None
    diagnostics: Annotated[
        dict[str, float],
        BeforeValidator(
            lambda x: {
                str(k): v for k, v in ((k, _num(v)) for k, v in _obj(x).items()) if v is not None
            }
        ),
    ] = Field(default_factory=dict)
    layers: Annotated[
        dict[str, str],
        BeforeValidator(
            lambda x: {
                k: v
                for k, v in _obj(x).items()
                if k in ("teacher", "student") and isinstance(v, str)
            }
        ),
    ] = Field(default_factory=dict)
    teacher_accuracy: LenientFloat = None
    student_accuracy: LenientFloat = None
    circuit: Annotated[CircuitView, BeforeValidator(_obj)] = Field(default_factory=CircuitView)


def read_task_distill(section: Any) -> dict[str, TaskDistillView]:
    """alias -> the records of ``results.json["distill"]`` that carry a behaviour table
    (``bbi distill bird|circuit``); LoRA/KD/WDA records have none."""
    return {
        str(alias): TaskDistillView.model_validate(rec)
        for alias, rec in _obj(section).items()
        if isinstance(rec, dict) and "behaviour" in rec
    }


# ---- report.json: the report's machine-readable summary ---------------------------------

REPORT_SCHEMA_VERSION = 1
EstimateDict = dict[str, Any] | None  # Estimate.as_dict(): value, ci, n (+ p, p_holm, ...)


class SummaryVerdict(_Model):
    status: str
    epsilon: float | None
    broken_by: str | None
    at_budget: int | None
    confirmed_eps: EstimateDict
    confirmed_by: str | None
    distinguishable_in: list[str]
    text: str | None
    equality: dict[str, Any] | None = None  # verdict.equality (discriminators.equality)


class SummaryComparison(_Model):
    role: str
    spec: str | None
    verdict: SummaryVerdict
    similarity: EstimateDict
    similarity_overall: EstimateDict
    adversaries: dict[str, dict[str, Any]]
    categories: dict[str, dict[str, Any]]
    explain: dict[str, Any] | None = None  # what gives it away (bbi.explain_schema)


class SummaryDistillation(_Model):
    base: str
    method: str | None
    status: str
    reading: str
    similarity: dict[str, EstimateDict]
    adversaries: dict[str, dict[str, Any]]
    skipped: dict[str, str]


class ReportSummary(_Model):
    """``bbi report --format json``: what CI pipelines and dashboards read."""

    schema_version: Literal[1]
    run: str
    suite: dict[str, Any]
    teacher: str | None
    epsilon: float | None
    alpha: float | None
    indistinguishable: bool | None
    null_calibration: dict[str, Any] | None
    comparisons: dict[str, SummaryComparison]
    distillation: dict[str, SummaryDistillation]
    notes: list[str]
    task_distillation: dict[str, dict[str, Any]] | None = None  # bird/circuit students
    sections: dict[str, Any] | None = None  # report sections from plug-ins


def validated_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The report summary, checked against ReportSummary; returned unchanged."""
    try:
        ReportSummary.model_validate(summary)
    except ValidationError as exc:  # a writer bug, not a user error
        raise RuntimeError(f"report summary does not follow the schema: {exc}") from exc
    return summary


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
    "EQUALITY_SCHEMA_VERSION",
    "EqualityClaim",
    "CURVE_RECORD_VERSION",
    "SnapshotsRecord",
    "TOKEN_CURVE_SCHEMA_VERSION",
    "TokenCurve",
    "TokenCurveBand",
    "TokenCurvePoint",
    "TokenSnapshot",
    "parse_token_curves",
    "snapshot_alias_of",
    "snapshot_aliases",
    "validated_token_curve",
    "AdversaryResult",
    "AttackConfigRecord",
    "AttackPoint",
    "BehaviourTableRecord",
    "DistillRecord",
    "LoopDistill",
    "TaskDistill",
    "WdaDistill",
    "REPORT_SCHEMA_VERSION",
    "ReportSummary",
    "read_task_distill",
    "validated_summary",
    "TaskDistillView",
    "ModelEntry",
    "SuiteSummary",
    "validated_distill",
    "validated_models",
    "validated_suite",
    "validated_point",
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
