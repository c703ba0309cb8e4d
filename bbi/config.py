"""The one typed, validated config layer: every setting of every stage, with its default.

The CLI flags, the YAML files given with ``--config`` and ``bbi run``'s pipeline all build
these models, so a bad value anywhere gives the same one-line ``error: <where>: <what>``
(exit 2) and a default is stated exactly once, here.

Sections (each also a key of ``bbi run --config`` YAML):

- ``GenerationSettings`` (``generation:``): how responses are sampled in ``bbi probe run``.
- ``LoraSettings`` (``distill:``): the LoRA distiller's hyperparameters.
- ``KDSettings``: ``bbi distill kd`` (LoRA settings plus the KD divergence).
- ``AttackSettings`` (``attack:``): the adversary sweep.
- ``ProbeConfig``: ``bbi probe run --config`` (models, suite, run, ``generation``).
- ``RunConfig``: ``bbi run --config`` (all of the above).

Models are strict (``"abc"`` is not an int, ``yes`` is not a number) and reject unknown
keys, so a typo is an error rather than a silently ignored setting. The A/A-null switch is
``aa_null`` because YAML reads a bare ``null:`` key as None.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from bbi.errors import BbiError

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_SEED_MAX = 2**31 - 1

S = TypeVar("S", bound="Section")


class Section(BaseModel):
    """Base of every config section: strict types, unknown keys refused, checked on set."""

    model_config = ConfigDict(
        extra="forbid", strict=True, validate_assignment=True, validate_default=True
    )
    # Command-line flags whose name is not ``--`` + the field name with dashes.
    FLAG_NAMES: ClassVar[dict[str, str]] = {}

    @classmethod
    def parse(cls: type[S], data: Any, where: str = "config") -> S:
        """Validate ``data`` (a mapping); every problem is one BbiError line naming the key."""
        if data is None:
            data = {}
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise BbiError(f"{where}: expected a mapping, got {_type_name(data)}")
        bad = [k for k in data if not isinstance(k, str)]
        if bad:
            raise BbiError(f"{where}: keys must be strings, got {_describe_key(bad[0])}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise BbiError(format_error(exc, where)) from None

    def updated(self: S, **flags: Any) -> S:
        """A validated copy with command-line ``flags`` applied (None: the flag was not
        given); an error names the flag, e.g. ``--max-new-tokens: ...``."""
        flags = {k: v for k, v in flags.items() if v is not None}
        if not flags:
            return self
        try:
            return type(self).model_validate({**self.model_dump(), **flags})
        except ValidationError as exc:
            raise BbiError(format_error(exc, "", flags=self.FLAG_NAMES)) from None


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _describe_key(key: Any) -> str:
    if key is None:
        return "the null key (YAML reads a bare 'null:' as None; the A/A switch is 'aa_null')"
    return f"{key!r} ({_type_name(key)})"


def format_error(
    exc: ValidationError, where: str, flags: dict[str, str] | bool | None = None
) -> str:
    """One line: ``where: key.sub: message`` for the first error (and how many more);
    with ``flags`` the key is shown as the command-line flag (``--max-new-tokens``, or the
    name ``flags`` maps the field to)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
    if flags is not None and flags is not False and loc:
        field = loc.split(".")[0]
        names = flags if isinstance(flags, dict) else {}
        loc = names.get(field, "--" + field.replace("_", "-"))
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        msg = "unknown key"
    elif first.get("type") == "missing":
        msg = "required key is missing"
    inp = first.get("input")
    if first.get("type") not in ("extra_forbidden", "missing") and not isinstance(inp, dict | list):
        shown = repr(inp)
        msg += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    head = ": ".join(p for p in (where, loc) if p)
    return f"{head + ': ' if head else ''}{msg}{more if len(errors) > 1 else ''}"


def _finite(v: float, name: str) -> float:
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number")
    return v


# ---- generation --------------------------------------------------------------------------


class GenerationSettings(Section):
    """Sampling settings shared by every model of a run (response length is an easy artifact,
    so every model gets the same)."""

    max_new_tokens: int = Field(96, ge=1, le=1_000_000)
    temperature: float = Field(0.7, ge=0.0, le=100.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    batch_size: int = Field(32, ge=1, le=1_000_000)
    seed: int = Field(0, ge=0, le=_SEED_MAX)
    samples: int = Field(1, ge=1, le=10_000)
    limit: int | None = Field(None, ge=1)
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False

    @field_validator("temperature", "top_p")
    @classmethod
    def _check_finite(cls, v: float, info: Any) -> float:
        return _finite(v, info.field_name)

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        if not _DEVICE_RE.match(v):
            raise ValueError("use auto, cpu, mps, cuda or cuda:N")
        return v

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: list[str]) -> list[str]:
        if any(not s for s in v):
            raise ValueError("stop strings must be non-empty")
        return v


# ---- distillation ------------------------------------------------------------------------


MAX_CURVE_POINTS = 32  # snapshots of one training (each is a student to probe and attack)


class LoopSettings(Section):
    """The one training loop's settings (``distill.trainer.train``), declared once: every
    method's settings compose them, and a method whose default differs re-declares only
    that field (with its own default) on its own model."""

    epochs: int = Field(2, ge=1, le=10_000, description="Passes over the train split.")
    lr: float = Field(
        2e-4, gt=0.0, le=10.0, description="Peak learning rate (linear warmup and decay)."
    )
    batch_size: int = Field(
        16, ge=1, le=100_000, description="Examples per micro-batch per process."
    )
    grad_accum: int = Field(1, ge=1, le=100_000, description="Micro-batches per optimizer step.")
    max_length: int = Field(256, ge=2, le=1_000_000, description="Max tokens of prompt + response.")
    eval_fraction: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Fraction of TRAIN prompts held out for eval (test is never used).",
    )
    warmup_ratio: float = Field(
        0.03, ge=0.0, lt=1.0, description="Fraction of steps spent warming up."
    )
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    seed: int = Field(
        0, ge=0, le=_SEED_MAX, description="Seed: init, data order, dropout, eval split."
    )
    curve_tokens: list[int] = Field(
        default_factory=list,
        description="Token milestones (ascending): keep a student snapshot when the tokens "
        "seen first pass each, for the eps-vs-tokens curve (bbi curve; empty: none).",
    )

    @field_validator("lr", "weight_decay", "max_grad_norm", check_fields=False)
    @classmethod
    def _check_loop_finite(cls, v: float, info: Any) -> float:
        return _finite(v, info.field_name)

    @field_validator("curve_tokens", check_fields=False)
    @classmethod
    def _check_curve_tokens(cls, v: list[int]) -> list[int]:
        if any(t < 1 for t in v):
            raise ValueError("token milestones must be >= 1")
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("token milestones must be strictly increasing")
        if len(v) > MAX_CURVE_POINTS:
            raise ValueError(f"at most {MAX_CURVE_POINTS} token milestones")
        return v

    @model_serializer(mode="wrap")
    def _dump_curve_when_set(self, handler: Any) -> dict[str, Any]:
        # Without milestones the dump (recorded hyperparameters, checkpoint identity,
        # cache keys) is what it was before the setting existed.
        data = handler(self)
        if isinstance(data, dict) and not data.get("curve_tokens"):
            data.pop("curve_tokens", None)
        return data

    def loop_settings(self, **changes: Any) -> LoopSettings:
        """Only the loop's fields (what the trainer records and a resume must match),
        with ``changes`` applied."""
        fields = {k: getattr(self, k) for k in LoopSettings.model_fields}
        return LoopSettings(**{**fields, **changes})


class AdapterSettings(Section):
    """The LoRA adapter's shape (unused with full fine-tuning)."""

    rank: int = Field(16, ge=1, le=4096, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0.0, description="LoRA alpha; scale = alpha / rank.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] | None = Field(
        None, description="LoRA module names (default: q/k/v/o + MLP projections)."
    )

    @field_validator("alpha")
    @classmethod
    def _check_alpha(cls, v: float, info: Any) -> float:
        return _finite(v, info.field_name)

    @field_validator("target_modules")
    @classmethod
    def _check_targets(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(not t.strip() for t in v)):
            raise ValueError("give at least one module name, none empty")
        return v


class GuideSettings(Section):
    """Attack-guided data: sample examples by their train-split leak (computed by the
    application layer with ``discriminators.leak``, handed to the loop as sample weights)."""

    guide: Literal["none", "category", "prompt"] = Field(
        "none",
        description="Attack-guided data: none, or spend training where a train-split attack "
        "tells the student apart, per category or prompt.",
    )
    guide_mix: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Share of sampling that follows the leak; the rest is uniform.",
    )
    guide_adversary: str = Field(
        "tfidf", min_length=1, description="Adversary cross-fitted on train prompts to score leaks."
    )
    guide_folds: int = Field(5, ge=2, le=100, description="Cross-fitting folds over train prompts.")
    guide_from: str | None = Field(
        None,
        min_length=1,
        description="Student alias whose leaks are scored (default: the run's student with the base spec).",
    )

    @field_validator("guide_mix")
    @classmethod
    def _check_mix(cls, v: float, info: Any) -> float:
        return _finite(v, info.field_name)


class LoraSettings(GuideSettings, LoopSettings, AdapterSettings):
    """``bbi distill lora``: supervised fine-tuning (the SFT objective) on the teacher's
    responses, as a LoRA adapter or fully; a resumed run must match it exactly. Fields in
    the order adapter, loop, guide (the order results.json records them in)."""


KD_LOSSES = ("forward_kl", "reverse_kl", "jsd", "uld")
KDLoss = Literal["forward_kl", "reverse_kl", "jsd", "uld"]


class KDSettings(LoraSettings):
    """White-box KD (``bbi distill kd``): the LoRA/loop settings, inherited so each default
    is stated once, plus the divergence and on-policy sampling (GKD; TRL's conventions:
    ``jsd`` with beta 0 is forward KL(teacher||student), with beta 1 reverse KL). The one
    place the divergence's defaults and its name are checked (``distill.objectives.kd``
    takes this model)."""

    loss: KDLoss = Field(
        "forward_kl",
        description="forward_kl = KL(teacher||student), reverse_kl, jsd, or uld (universal "
        "logit distillation: cross-entropy + sorted-probability distance; works across "
        "tokenizers).",
    )
    beta: float = Field(
        0.5, ge=0.0, le=1.0, description="jsd mixture weight: 0 = forward KL, 1 = reverse KL."
    )
    temperature: float = Field(
        1.0, gt=0.0, le=100.0, description="Softens both distributions (and on-policy sampling)."
    )
    lambda_on_policy: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Probability a step trains on the student's own samples (GKD).",
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Max tokens of an on-policy sample (default: the run's generation setting).",
    )
    uld_weight: float = Field(
        1.0,
        ge=0.0,
        le=1000.0,
        description="Weight of the ULD distance next to the CE (--loss uld).",
    )
    on_policy_sampler: Literal["generate", "backend"] = Field(
        "generate",
        description="How on-policy samples are drawn: generate (HF generate) or backend "
        "(bbi's generation path: KV cache, finished rows dropped, one seeded sampler per row).",
    )
    corpus_prompts: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="Also train on N prompts of the suite builders' training corpus (never a "
        "suite prompt), answered by the teacher like the probe (0: the train split only).",
    )
    kl_chunk: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Response tokens per chunk of the KD loss: each chunk's logits are made, "
        "used and dropped (recomputed for the gradient), so memory does not grow with "
        "vocabulary x length (0: all at once).",
    )
    teacher_logits: Literal["model", "cache"] = Field(
        "model",
        description="model: run the teacher beside the student at every step; cache: run it "
        "once over the data (here, or served: --teacher-spec openai:URL#MODEL), keep its "
        "top-k log-probabilities on disk, train without it.",
    )
    top_k: int = Field(
        64,
        ge=1,
        le=65_536,
        description="Teacher log-probabilities kept per token with --teacher-logits cache "
        "(the rest of the mass is one tail bucket).",
    )

    @field_validator("beta", "temperature", "lambda_on_policy", "uld_weight")
    @classmethod
    def _check_kd_finite(cls, v: float, info: Any) -> float:
        return _finite(v, info.field_name)


WDA_PHASES = ("align", "detach", "free", "sft")


class WDASettings(LoopSettings):
    """``bbi distill wda``: the Wave-Density-Attention student and its four phases
    (docs/wda.md). Phase lengths are epochs over the run's train-split data; 0 skips.
    The loop's fields are :class:`LoopSettings`' (WDA's own defaults re-declared here);
    ``epochs`` is per phase instead."""

    epochs: ClassVar[int] = 1  # not a setting: each phase has its own epochs
    curve_tokens: ClassVar[list[int]] = []  # snapshots are taken by the lora/kd methods only
    # The attention (distill.wda.attention.WDAConfig).
    masks: int = Field(24, ge=2, le=512, description="Wave masks per head.")
    waves: int = Field(8, ge=1, le=256, description="Waves per mask.")
    top_k: int = Field(4, ge=1, le=512, description="Masks routed per chunk (real sparse top-k).")
    kernel: Literal["sine", "triangle"] = Field(
        "sine", description="Wave kernel: sine or triangle."
    )
    route_chunk: int = Field(64, ge=1, le=1_000_000, description="Tokens per routing chunk.")
    route_schedule: Literal["fixed", "doubling"] = Field(
        "doubling",
        description="Routing chunks: fixed (every route_chunk tokens) or doubling "
        "(R, 2R, 4R, ...: the long-context path, cost ~ S log S).",
    )
    distance_scale: float = Field(512.0, gt=0.0, description="Distance scale of the waves.")
    content_rank: int = Field(0, ge=0, le=4096, description="Rank of the content term (0: off).")
    # Phases: teacher-on alignment, detachment, teacher-free CE (LR bursts), SFT.
    phases: list[Literal["align", "detach", "free", "sft"]] = Field(
        default_factory=lambda: list(WDA_PHASES), description="Phases to run, in order."
    )
    align_epochs: int = Field(1, ge=0, le=10_000, description="Epochs of teacher-on alignment.")
    detach_epochs: int = Field(
        1, ge=0, le=10_000, description="Epochs of detachment (teacher scale -> 0)."
    )
    free_epochs: int = Field(
        1, ge=0, le=10_000, description="Epochs per teacher-free LR-burst stage."
    )
    sft_epochs: int = Field(1, ge=0, le=10_000, description="Epochs of instruction SFT.")
    energy_weight: float = Field(
        0.02, ge=0.0, le=1e6, description="Residual-energy loss weight in alignment."
    )
    # off by default: not part of the method
    kl_weight: float = Field(
        0.0, ge=0.0, le=1e6, description="Optional logit KL to the teacher (0: off)."
    )
    align_temperature: float = Field(
        0.1, gt=0.0, le=100.0, description="Routing temperature during alignment."
    )
    temperature: float = Field(
        0.1, gt=0.0, le=100.0, description="Routing temperature after alignment."
    )
    lr: float = Field(
        5e-4, gt=0.0, le=10.0, description="Peak learning rate (linear warmup and decay)."
    )
    # LR multiplier of each teacher-free stage (free_epochs each), e.g. [2.0, 1.0, 1.5, 1.0].
    bursts: list[float] = Field(
        default_factory=lambda: [2.0], description="LR multiplier of each teacher-free stage."
    )
    batch_size: int = Field(
        8, ge=1, le=100_000, description="Examples per micro-batch per process."
    )
    max_length: int = Field(160, ge=8, le=1_000_000, description="Max tokens of prompt + response.")
    eval_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="Fraction of TRAIN prompts held out for eval (test is never used).",
    )

    @field_validator("bursts")
    @classmethod
    def _check_bursts(cls, v: list[float]) -> list[float]:
        if not v or any(not (0 < x <= 100) or not math.isfinite(x) for x in v):
            raise ValueError("give at least one LR multiplier, each in (0, 100]")
        return v

    @field_validator("phases")
    @classmethod
    def _check_phases(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("give each phase at most once, at least one")
        if [p for p in WDA_PHASES if p in v] != v:
            raise ValueError(f"phases run in the order {', '.join(WDA_PHASES)}")
        return v

    @model_validator(mode="after")
    def _top_k_fits(self) -> WDASettings:
        if self.top_k > self.masks:
            raise ValueError(f"top_k {self.top_k} exceeds masks {self.masks}")
        return self

    def loop(self, phase: str, lr_mult: float = 1.0) -> LoopSettings:
        """The shared loop's settings for one phase (full fine-tuning)."""
        return self.loop_settings(
            epochs=max(getattr(self, f"{phase}_epochs"), 1), lr=self.lr * lr_mult
        )


class TaskDistillSettings(LoopSettings):
    """What ``bbi distill bird`` and ``bbi distill circuit`` share: a method trained
    beside its controls on a small generated task, each arm over several seeds. The
    loop's fields are :class:`LoopSettings`' with the task defaults; ``seeds`` replaces
    ``seed``, and there is no weight decay (it would move weights a gradient mask keeps
    fixed) nor an eval split (the task has its own held-out split)."""

    seed: ClassVar[int] = 0
    eval_fraction: ClassVar[float] = 0.0
    weight_decay: ClassVar[float] = 0.0
    grad_accum: ClassVar[int] = 1
    curve_tokens: ClassVar[list[int]] = []  # snapshots are taken by the lora/kd methods only

    teacher: str = Field(
        "zoo:teacher", min_length=1, description="Teacher model spec, tuned on the task first."
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2], description="Seeds; each arm runs once per seed."
    )
    epochs: int = Field(3, ge=1, le=10_000, description="Passes over the train split.")
    lr: float = Field(
        1e-3, gt=0.0, le=10.0, description="Peak learning rate (linear warmup and decay)."
    )
    batch_size: int = Field(
        32, ge=2, le=100_000, description="Examples per micro-batch per process."
    )
    warmup_ratio: float = Field(
        0.05, ge=0.0, lt=1.0, description="Fraction of steps spent warming up."
    )
    # Teacher tuning on the task's teacher split (cached next to the output).
    teacher_epochs: int = Field(
        3, ge=0, le=10_000, description="Epochs of teacher tuning on the task."
    )
    teacher_lr: float = Field(1e-3, gt=0.0, le=10.0, description="Learning rate of teacher tuning.")
    # CKA: weight of (1 - CKA), rows of earlier batches kept to enlarge the CKA batch,
    # and the unbiased minibatch estimator as an option.
    cka_weight: float = Field(0.5, ge=0.0, le=1e6, description="Weight of (1 - CKA) in the loss.")
    cka_bank: int = Field(
        96, ge=0, le=1_000_000, description="Rows of earlier batches added to each CKA batch."
    )
    cka_unbiased: bool = Field(False, description="Use the unbiased minibatch CKA estimator.")
    confidence: float = Field(
        0.95, gt=0.0, lt=1.0, description="Confidence level of the table's intervals."
    )

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v) or any(not 0 <= s <= _SEED_MAX for s in v):
            raise ValueError("give at least one seed, each once, in [0, 2**31 - 1]")
        return v

    @field_validator("teacher_lr", "cka_weight")
    @classmethod
    def _check_finite(cls, v: float, info: Any) -> float:
        return _finite(v, info.field_name)

    def loop(self, seed: int, teacher: bool = False) -> LoopSettings:
        """The shared loop's settings for one training (full or masked fine-tuning)."""
        return self.loop_settings(
            epochs=max(self.teacher_epochs, 1) if teacher else self.epochs,
            lr=self.teacher_lr if teacher else self.lr,
            seed=seed,
        )


CIRCUIT_ARMS = ("none", "ce", "circuit", "random")


class CircuitSettings(TaskDistillSettings):
    """``bbi distill circuit`` (docs/circuit.md): entity tracking, mean-ablation head
    scores, matched-head CKA on a gradient-masked circuit, against CE-only and a random
    circuit of the same size."""

    max_length: ClassVar[int] = 256  # not used: the task's sequences are short

    teacher: str = Field(
        "zoo:teacher",
        min_length=1,
        description="Teacher model spec (tuned on the task first), or binding (a small "
        "teacher trained from scratch for the task on the student's tokenizer).",
    )
    template: Literal["auto", "contains", "is_in", "adjacent"] = Field(
        "auto",
        description="Task template: contains, is_in, adjacent (each object right after its "
        "box label), or auto (adjacent with --teacher binding, else contains).",
    )
    min_boxes: int = Field(3, ge=2, le=20, description="Fewest boxes per example.")
    max_boxes: int = Field(5, ge=2, le=20, description="Most boxes per example.")
    n_train: int = Field(2048, ge=8, le=10_000_000, description="Student training examples.")
    n_teacher_train: int = Field(4096, ge=8, le=10_000_000, description="Teacher tuning examples.")
    teacher_epochs: int = Field(2, ge=0, le=10_000)
    teacher_queries: int = Field(
        4, ge=1, le=64, description="Supervised answers per teacher tuning sequence."
    )
    n_scan: int = Field(256, ge=8, le=10_000_000, description="Examples of the head scan.")
    n_ablation: int = Field(256, ge=8, le=10_000_000, description="Examples of the mean ablation.")
    n_eval: int = Field(512, ge=8, le=10_000_000, description="Held-out evaluation examples.")
    heads_fraction: float = Field(
        0.25, gt=0.0, le=1.0, description="Share of student heads in the circuit."
    )
    score: Literal["accuracy", "logprob"] = Field(
        "accuracy", description="Head score for ablations: accuracy or logprob."
    )
    arms: list[Literal["none", "ce", "circuit", "random"]] = Field(
        default_factory=lambda: list(CIRCUIT_ARMS), description="Arms to train (circuit required)."
    )
    matching: Literal["delta", "group"] = Field(
        "delta",
        description="Teacher head matching: delta (each teacher head ablated alone, each "
        "circuit head matched to the nearest ablation effect) or group (a teacher head scored "
        "by what it restores with the rest of its layer ablated, so heads that back each other "
        "up count; the top ones paired with the circuit heads in layer order).",
    )
    cka_positions: Literal["final", "all"] = Field(
        "final",
        description="Where the matched heads' CKA is taken: final (the answer position) or "
        "all (every prompt token; needs student and teacher to tokenize prompts alike).",
    )

    def task_template(self) -> str:
        """The template the task uses: ``auto`` is adjacent for the binding teacher (the
        layout a small model learns to bind) and contains (Kim & Schuster's) otherwise."""
        if self.template != "auto":
            return self.template
        return "adjacent" if self.teacher == "binding" else "contains"

    @model_validator(mode="after")
    def _boxes(self) -> CircuitSettings:
        if self.min_boxes > self.max_boxes:
            raise ValueError(f"min_boxes {self.min_boxes} exceeds max_boxes {self.max_boxes}")
        if "circuit" not in self.arms or len(set(self.arms)) != len(self.arms):
            raise ValueError("arms: include 'circuit', each arm once")
        return self


BIRD_ARMS = ("none", "task", "bird")


class BirdSettings(TaskDistillSettings):
    """``bbi distill bird`` (docs/bird.md): safe refusal. The student learns from a small
    set of its own safety data, with and without (1 - CKA) to an aligned teacher's layer;
    held-out prompts ask for requests the student's data never shows."""

    teacher_kind: Literal["causal", "classifier"] = Field(
        "causal", description="causal (a generative teacher) or classifier (a safety classifier)."
    )
    teacher_layer: str = Field(
        "auto", min_length=1, description="Guiding layer name, or auto (scan)."
    )
    student_layer: str = Field(
        "auto", min_length=1, description="Guided layer name, or auto (scan)."
    )
    pool: Literal["last", "mean"] = Field("last", description="Prompt pooling: last token or mean.")
    # The reference's weights: 0.1 CE + 0.9 (1 - CKA); the task-only arm keeps 0.1 CE.
    task_weight: float = Field(0.1, gt=0.0, le=1e6, description="Weight of the student's task CE.")
    cka_weight: float = Field(0.9, ge=0.0, le=1e6)
    epochs: int = Field(8, ge=1, le=10_000)
    lr: float = Field(5e-4, gt=0.0, le=10.0)
    teacher_lr: float = Field(5e-4, gt=0.0, le=10.0)
    n_teacher_train: int = Field(1024, ge=8, le=10_000_000)
    n_train: int = Field(128, ge=8, le=10_000_000)
    n_calibration: int = Field(192, ge=8, le=10_000_000, description="Calibration examples.")
    n_eval: int = Field(320, ge=8, le=10_000_000)
    # Requests (acts / questions) held out for the test split and for calibration.
    heldout_fraction: float = Field(
        0.3, gt=0.0, lt=1.0, description="Share of requests held out for test."
    )
    calibration_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Share of requests held out for calibration."
    )
    split_seed: int = Field(0, ge=0, le=_SEED_MAX, description="Seed of the request split.")
    split_by: Literal["request", "type"] = Field(
        "request",
        description="Hold out harmful requests one by one (request) or whole harm types "
        "(type: weapons, fraud, ...; the student's data then has no refusal of that kind).",
    )
    max_length: int = Field(160, ge=8, le=1_000_000, description="Max tokens of prompt + response.")
    max_new_tokens: int = Field(12, ge=1, le=4096, description="Max tokens of a generated answer.")
    arms: list[Literal["none", "task", "bird"]] = Field(
        default_factory=lambda: list(BIRD_ARMS), description="Arms to train (bird required)."
    )

    @model_validator(mode="after")
    def _splits(self) -> BirdSettings:
        if self.heldout_fraction + self.calibration_fraction >= 0.9:
            raise ValueError("heldout_fraction + calibration_fraction must leave the student data")
        if "bird" not in self.arms or len(set(self.arms)) != len(self.arms):
            raise ValueError("arms: include 'bird', each arm once")
        return self


class PipelineDistill(Section):
    """``bbi run``'s distillation step: which methods run (each gives the student
    ``student_<method>``), full or LoRA fine-tuning, and each method's settings."""

    enabled: bool = True
    methods: list[Literal["lora", "kd"]] = Field(default_factory=lambda: ["lora"])
    full: bool = False
    lora: LoraSettings = Field(default_factory=LoraSettings)
    kd: KDSettings = Field(default_factory=KDSettings)

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each method at most once")
        return v

    def settings(self, method: str) -> LoraSettings:
        """The hyperparameters of one method (what its distiller records and resumes on)."""
        return self.lora if method == "lora" else self.kd


# ---- attack ------------------------------------------------------------------------------

# Beyond these a sweep only runs out of memory.
MIN_RESAMPLES, MAX_RESAMPLES = 10, 100_000
MAX_SEEDS = 1000
DEFAULT_BUDGETS = (50, 100, 200, 400, 800, 1600, 4000)
DEFAULT_TEST_QUERIES = (1, 4, 16)
DEFAULT_STRATEGIES = ("random", "stratified", "disagreement")
DEFAULT_ADVERSARIES = ("surface", "tfidf", "embed", "pairwise")


class AttackSettings(Section):
    """The adversary sweep: ``attack:`` of ``bbi run``, and the flags of ``bbi attack``
    (``discriminators.attack.run_attack`` runs it as it is)."""

    adversaries: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ADVERSARIES), description="Adversaries."
    )
    budgets: list[int] = Field(
        default_factory=lambda: list(DEFAULT_BUDGETS),
        description="Query budgets q (one query = one prompt to one model; q//2 train prompts).",
    )
    strategies: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STRATEGIES),
        description="Acquisition strategies: random, stratified, disagreement, bandit.",
    )
    seeds: int = Field(5, ge=1, le=MAX_SEEDS, description="Number of seeds, 0..N-1.")
    test_queries: list[int] = Field(
        default_factory=lambda: list(DEFAULT_TEST_QUERIES),
        description="k: responses of the unknown model combined per decision.",
    )
    epsilon: float = Field(0.1, gt=0.0, lt=1.0, description="Advantage bound for the verdict.")
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="Significance level (Holm).")
    n_bootstrap: int = Field(
        1000, ge=MIN_RESAMPLES, le=MAX_RESAMPLES, description="Bootstrap resamples."
    )
    n_permutations: int = Field(
        1000, ge=MIN_RESAMPLES, le=MAX_RESAMPLES, description="Permutations."
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Adversary hyperparameters: {adversary: {name: value}}."
    )
    # Which analysis decides the verdict. "crossfit" (default): the cross-fitted stack over
    # every response, one exact test per fold merged by a rule valid under any dependence
    # between folds (proved, docs/statistics.md). "split": select the strongest adversary
    # on half the test prompts, confirm it on the other half. The other analysis is always
    # recorded beside the decision.
    decision: Literal["split", "crossfit"] = Field(
        "crossfit",
        description="What decides the verdict: crossfit (the cross-fitted stack over every "
        "response, exact per-fold tests) or split (select on half the test prompts, "
        "confirm on the other half); the other is recorded beside it.",
    )
    # The equality claim (k-spectrum and Hamming MMD, docs/statistics.md) is opt-in: it
    # answers another question at its own alpha, so with it the whole record's error is
    # at most 2 alpha when the two models are exactly equal (the A/A comparison).
    equality: bool = Field(
        False,
        description="Also test whether the responses differ in distribution at all "
        "(k-spectrum and Hamming MMD, its own alpha; never changes the eps decision "
        "except at eps0 = 0).",
    )
    # Worker processes for the sweep's points (1: serial, -1: all cores); results are
    # identical to the serial sweep's except wall-clock times.
    n_jobs: int = Field(
        1,
        description="Worker processes for the sweep (-1: all cores); the results are those "
        "of the serial sweep, except wall-clock times.",
    )

    FLAG_NAMES: ClassVar[dict[str, str]] = {
        "adversaries": "--adversary",
        "budgets": "--budget",
        "strategies": "--strategy",
        "params": "--param",
    }

    @field_validator("adversaries", "strategies")
    @classmethod
    def _nonempty_names(cls, v: list[str]) -> list[str]:
        if not v or any(not s.strip() for s in v):
            raise ValueError("give at least one name, none empty")
        return v

    @model_validator(mode="after")
    def _p_can_reach_alpha(self) -> AttackSettings:
        # A permutation p is at least 1 / (1 + n_permutations): below 1/alpha permutations
        # nothing could ever be significant, which would look like evidence of no effect.
        need = math.ceil(1 / self.alpha)
        if self.n_permutations < need:
            raise ValueError(
                f"n_permutations {self.n_permutations} cannot give p < alpha {self.alpha:g} "
                f"(the smallest p is 1/(1 + n)); use at least {need}"
            )
        return self

    @field_validator("n_jobs")
    @classmethod
    def _check_n_jobs(cls, v: int) -> int:
        if v < 1 and v != -1:
            raise ValueError("must be >= 1 (worker processes) or -1 (all cores)")
        return v

    @field_validator("budgets", "test_queries")
    @classmethod
    def _check_counts(cls, v: list[int], info: Any) -> list[int]:
        low, msg = {
            "budgets": (4, "give budgets >= 4 (2 train prompts x 2 models)"),
            "test_queries": (1, "test queries k must be >= 1"),
        }[info.field_name]
        if not v or any(x < low for x in v):
            raise ValueError(msg)
        return v


# ---- whole commands ----------------------------------------------------------------------


def _nonempty(v: Any, info: Any) -> Any:
    """A name, path or spec given in a config must not be blank (it is not the default)."""
    if isinstance(v, str) and not v.strip():
        raise ValueError("must not be empty (leave the key out for its default)")
    return v


def _students(v: Any) -> Any:
    """``students:`` as a list of specs (``alias=SPEC`` allowed) or a mapping alias -> spec."""
    if isinstance(v, dict):
        out = []
        for k, spec in v.items():
            if not isinstance(k, str) or not isinstance(spec, str):
                raise ValueError("a students mapping must map alias -> spec string")
            out.append(f"{k}={spec}")
        return out
    if isinstance(v, str):
        return [v]
    return v


class ProbeConfig(Section):
    """``bbi probe run --config FILE`` (flags override it)."""

    run: str | None = None
    teacher: str | None = None
    students: list[str] = Field(default_factory=list)
    suite: str = "default"
    aa_null: bool = True
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    # Per-model arguments (bbi.model_args): the teacher's (and its A/A resample's), and
    # every student's given on the command line or here.
    teacher_args: dict[str, str | int | float | bool] = Field(default_factory=dict)
    student_args: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("students", mode="before")
    @classmethod
    def _norm_students(cls, v: Any) -> Any:
        return _students(v)

    @field_validator("run", "teacher", "suite")
    @classmethod
    def _check_nonempty(cls, v: Any, info: Any) -> Any:
        return _nonempty(v, info)

    @model_validator(mode="before")
    @classmethod
    def _refuse_null_key(cls, data: Any) -> Any:
        return _check_null_key(data)


# Token milestones of the default KD (about 25,000 tokens seen in two epochs): two
# snapshots, so the report draws eps against tokens with the A/A band.
DEFAULT_CURVE_TOKENS = (4000, 12000)


def _default_distill() -> PipelineDistill:
    # The 24-layer student starts clearly distinguishable; full-weight KD, two short
    # epochs, brings it close (similarity 0.22 -> 0.48 against the A/A level 0.56,
    # held-out KL 1.13 -> 0.58 nats/token; BENCHMARKS.md "Choosing the default student").
    return PipelineDistill(
        methods=["kd"],
        full=True,
        kd=KDSettings(
            epochs=2,
            lr=1e-4,
            batch_size=8,
            max_length=160,
            eval_fraction=0.1,
            curve_tokens=list(DEFAULT_CURVE_TOKENS),
        ),
    )


def _default_attack() -> AttackSettings:
    # Budgets up to the 160 train prompts of the default 200-prompt subset.
    return AttackSettings(budgets=[40, 80, 160, 320], test_queries=[1, 4])


class RunConfig(Section):
    """``bbi run --config FILE``; every key optional. The defaults are the embedded real
    pair: SmolLM2-135M-Instruct and its 24-layer pruned copy (layers 12-17 dropped),
    distilled by white-box KD with two token snapshots for the eps-vs-tokens curve, on a
    stratified 200-prompt subset of the suite (``generation.limit: null`` for all 5,000),
    sized to finish cold within 15 minutes on 2 CPU cores."""

    run: str = "runs/default"
    teacher: str = "zoo:smollm2"
    student: str = "zoo:smollm2-pruned24"
    suite: str = "default"
    aa_null: bool = True
    generation: GenerationSettings = Field(
        default_factory=lambda: GenerationSettings(limit=200, max_new_tokens=48, batch_size=32)
    )
    distill: PipelineDistill = Field(default_factory=_default_distill)
    attack: AttackSettings = Field(default_factory=_default_attack)
    report: bool = True
    # Per-model arguments (bbi.model_args): the teacher's (and its A/A resample's), and
    # the students' (the base and every distilled one).
    teacher_args: dict[str, str | int | float | bool] = Field(default_factory=dict)
    student_args: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("run", "teacher", "student", "suite")
    @classmethod
    def _check_nonempty(cls, v: Any, info: Any) -> Any:
        return _nonempty(v, info)

    @model_validator(mode="before")
    @classmethod
    def _refuse_null_key(cls, data: Any) -> Any:
        return _check_null_key(data)

    @classmethod
    def load(cls, path: Path | None) -> RunConfig:
        """Defaults, overlaid by the YAML file at ``path`` (if any)."""
        if path is None:
            return cls()
        from bbi.runstore import read_yaml_mapping

        raw = read_yaml_mapping(path)
        # A partial section (`distill: {kd: {epochs: 3}}`) overrides `bbi run`'s own
        # defaults, not the bare section class's.
        return cls.parse(_overlay(cls().model_dump(), raw), where=str(path))

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


def _overlay(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``, mapping by mapping (anything else in ``over`` wins)."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return over
    return {k: _overlay(base[k], v) if k in base else v for k, v in {**base, **over}.items()}


def _check_null_key(data: Any) -> Any:
    if isinstance(data, dict) and (None in data or "null" in data):
        raise ValueError(
            "the A/A switch is 'aa_null' (YAML reads a bare 'null:' key as null); rename it"
        )
    return data
