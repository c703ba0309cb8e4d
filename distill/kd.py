"""White-box knowledge distillation from the run's teacher model (``bbi distill kd``).

Where ``distill.lora`` only sees the teacher's sampled text, this matches the teacher's
full next-token distribution at every response position (``distill.objectives.kd``:
forward/reverse KL or generalised JSD, temperature, optionally on-policy as in GKD). It
needs the teacher's weights (an ``hf:`` or ``zoo:`` spec; an API or imported teacher has
none) and a tokenizer with the student's vocabulary. Data, loop, checkpoints, outputs and
registration are the shared ones (``distill.method``): the teacher's TRAIN-split prompts
and responses of the run; the test split is never used.
"""

from __future__ import annotations

from typing import Any

from bbi.config import GenerationSettings, KDSettings
from bbi.errors import BbiError
from bbi.runstore import RunDir
from distill.method import DistillResult, distil
from distill.objectives.kd import KD
from distill.student import check_same_vocabulary, load_model


def teacher_model_spec(run: RunDir, teacher_alias: str, teacher_spec: str | None = None) -> str:
    """The teacher's loadable spec: ``teacher_spec``, else the alias's spec in run.yaml."""
    from bbi.specs import can

    spec = teacher_spec or run.models().get(teacher_alias, {}).get("spec")
    hint = "white-box KD needs the teacher's weights: pass --teacher-spec (an hf: or zoo: spec)"
    if not spec:
        raise BbiError(
            f"{run.path}: teacher {teacher_alias!r} has no model spec in run.yaml; {hint}"
        )
    if not can(spec, "weights"):
        raise BbiError(
            f"teacher {teacher_alias!r} is {spec!r}, which has no local weights "
            f"(imported or API responses); {hint}, or use `bbi distill lora`"
        )
    return spec


def _run_max_new_tokens(run: RunDir) -> int:
    """The run's generation max_new_tokens (run.yaml), checked like any setting."""
    value = (run.config().get("generation") or {}).get("max_new_tokens")
    if value is None:
        return GenerationSettings().max_new_tokens
    where = f"{run.config_path}: generation"
    return GenerationSettings.parse({"max_new_tokens": value}, where).max_new_tokens


def distill_kd(
    run: RunDir,
    *,
    teacher_alias: str | None = None,
    teacher_spec: str | None = None,
    alias: str = "student_kd",
    settings: KDSettings | None = None,
    dtype: str = "float32",
    **options: Any,
) -> DistillResult:
    """Distil the run's teacher model into the student token by token; register it.

    Same options (``options``: :func:`distill.method.distil`'s run options) and outputs as
    ``distill.lora.distill_lora``; ``settings`` is a
    ``bbi.config.KDSettings`` and ``teacher_spec`` overrides the teacher's spec from
    run.yaml (the responses still come from ``teacher_alias``). The eval loss is the
    configured divergence on held-out train-split prompts' teacher responses.
    """
    hp = settings if settings is not None else KDSettings()
    if not isinstance(hp, KDSettings):
        raise TypeError(f"settings must be a KDSettings, got {type(hp).__name__}")
    teacher_alias = teacher_alias or run.teacher_alias()
    t_spec = teacher_model_spec(run, teacher_alias, teacher_spec)
    max_new = hp.max_new_tokens or _run_max_new_tokens(run)

    def make_objective(tokenizer: Any, base_spec: str) -> KD:
        teacher, t_tok, t_fp = load_model(t_spec, dtype)
        check_same_vocabulary(tokenizer, t_tok, base_spec, t_spec)
        return KD(
            teacher,
            hp,
            max_new_tokens=int(max_new),
            pad_id=tokenizer.pad_token_id,
            eos_id=tokenizer.eos_token_id,
            teacher_spec=t_spec,
            teacher_fingerprint=t_fp,
        )

    return distil(
        run,
        method="kd",
        make_objective=make_objective,
        hp=hp,
        teacher_alias=teacher_alias,
        alias=alias,
        dtype=dtype,
        **options,
    )


__all__ = ["distill_kd", "teacher_model_spec"]
