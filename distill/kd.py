"""White-box knowledge distillation from the run's teacher model (``bbi distill kd``).

Where ``distill.lora`` only sees the teacher's sampled text, this matches the teacher's
full next-token distribution at every response position (``distill.objectives.kd``:
forward/reverse KL or generalised JSD, temperature, optionally on-policy as in GKD). It
needs the teacher's weights (an ``hf:`` or ``zoo:`` spec; an API or imported teacher has
none) and a tokenizer with the student's vocabulary. Data, loop, checkpoints, outputs and
registration are the shared ones (``distill.method``): the teacher's TRAIN-split prompts
and responses of the run; the test split is never used.

Settings select the variants for real pairs (docs/distillation-at-scale.md): ``kl_chunk``
(the loss in chunks of positions), ``teacher_logits="cache"`` (the teacher's top-k
log-probabilities computed once and trained from without the teacher, ``CachedKD``),
``loss="uld"`` (another tokenizer, ``distill.objectives.uld``). With the cache, the teacher
may also be served on another machine (``--teacher-spec openai:URL#MODEL`` of vLLM's server
or ``bbi serve``): its top-k log-probabilities are fetched over HTTP and it is never loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bbi.config import GenerationSettings, KDSettings
from bbi.errors import BbiError
from bbi.runstore import RunDir
from distill.method import DistillResult, distil
from distill.objectives.kd import KD, CachedKD, LocalTeacher
from distill.objectives.uld import ULD
from distill.student import check_same_vocabulary, load_model
from distill.teacher_cache import SHARD_EXAMPLES

TEACHER_CACHE_DIR = "cache/teacher"
"""Where ``--teacher-logits cache`` keeps the teacher's top-k log-probabilities in a run."""


def teacher_model_spec(
    run: RunDir, teacher_alias: str, teacher_spec: str | None = None, *, served: bool = False
) -> str:
    """The teacher's loadable spec: ``teacher_spec``, else the alias's spec in run.yaml.
    With ``served`` (``--teacher-logits cache``) a spec whose endpoint returns
    log-probabilities (``openai:URL#MODEL``) will do too: it is scored, never loaded."""
    from bbi.specs import can

    spec = teacher_spec or run.models().get(teacher_alias, {}).get("spec")
    hint = (
        "white-box KD needs the teacher's weights: pass --teacher-spec (an hf: or zoo: spec)"
        if not served
        else "cached KD needs the teacher's weights or a served teacher: pass --teacher-spec "
        "(an hf: or zoo: spec, or openai:URL#MODEL of a server returning log-probabilities)"
    )
    if not spec:
        raise BbiError(
            f"{run.path}: teacher {teacher_alias!r} has no model spec in run.yaml; {hint}"
        )
    if can(spec, "weights") or (served and can(spec, "logprobs")):
        return spec
    served_hint = (
        ""
        if served or not can(spec, "logprobs")
        else "; a served teacher distils with --teacher-logits cache"
    )
    raise BbiError(
        f"teacher {teacher_alias!r} is {spec!r}, which has no local weights "
        f"(imported or API responses); {hint}, or use `bbi distill lora`{served_hint}"
    )


# A text whose tokens, with token ids spread over the vocabulary, probe that a served
# teacher reads the student's ids as the same tokens.
TOKENIZER_PROBE = (
    "What is 7 plus 5? Answer in one word, then explain: why is the sky blue?",
    "Twelve. Sunlight scatters off air molecules (Rayleigh scattering, ~1/λ^4);\nblue wins.",
)
PROBE_SPREAD = 64


def probe_ids(tokenizer: Any) -> list[int]:
    """Token ids the same-tokenizer check asks a served teacher about: the student's
    tokens of :data:`TOKENIZER_PROBE` in its chat format, then ``PROBE_SPREAD`` ids
    spread evenly over the rest of its vocabulary (special tokens left out)."""
    from bbi.chat import format_prompt, response_suffix

    text, fmt = format_prompt(tokenizer, TOKENIZER_PROBE[0])
    text += response_suffix(fmt, TOKENIZER_PROBE[1], None)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    special = set(tokenizer.all_special_ids)
    n = len(tokenizer)
    spread = sorted({int(i) for i in np.linspace(0, n - 1, PROBE_SPREAD)} - special)
    return ids + spread


def check_served_settings(settings: KDSettings) -> None:
    """What a served teacher cannot give, refused before anything loads."""
    if settings.temperature != 1.0:
        raise BbiError(
            "a served teacher returns log-probabilities at temperature 1 (the top k alone "
            "cannot be re-softened): use --temperature 1, or a local teacher"
        )


def served_teacher(spec: str, tokenizer: Any, settings: KDSettings) -> Any:
    """A ``distill.teacher_cache.ServedTeacher`` on ``spec``'s endpoint, checked now
    (reachable, serves the model, returns ``top_k`` prompt log-probabilities, tokenizes
    like the student), before any output is written."""
    from bbi.backends import load_backend
    from distill.teacher_cache import ServedTeacher

    check_served_settings(settings)
    backend = load_backend(spec)
    source = ServedTeacher(backend, k=settings.top_k, vocab=len(tokenizer))
    try:
        source.check_vocabulary(tokenizer, probe_ids(tokenizer))
    except BaseException:
        backend.close()
        raise
    return source


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
    t_spec = teacher_model_spec(
        run, teacher_alias, teacher_spec, served=hp.teacher_logits == "cache"
    )
    max_new = hp.max_new_tokens or _run_max_new_tokens(run)
    if hp.loss == "uld" and hp.teacher_logits != "model":
        raise BbiError("--loss uld compares full distributions: use --teacher-logits model")

    def make_cached(tokenizer: Any, base_spec: str) -> CachedKD:
        from bbi.fingerprint import spec_fingerprint
        from bbi.specs import can

        progress = bool(options.get("progress", False))
        build_batch = None
        if can(t_spec, "weights"):

            def open_source(accelerator: Any) -> LocalTeacher:
                teacher, t_tok, _ = load_model(t_spec, dtype)
                check_same_vocabulary(tokenizer, t_tok, base_spec, t_spec)
                return LocalTeacher(
                    teacher, accelerator, pad_id=tokenizer.pad_token_id, top_k=hp.top_k,
                    temperature=hp.temperature, vocab=len(tokenizer), kl_chunk=hp.kl_chunk,
                )  # fmt: skip
        else:  # served: reached (and checked) only if a cache is missing; a shard at a time
            check_served_settings(hp)
            build_batch = SHARD_EXAMPLES

            def open_source(accelerator: Any) -> Any:
                return served_teacher(t_spec, tokenizer, hp)

        return CachedKD(
            open_source,
            hp,
            cache_root=run.path / TEACHER_CACHE_DIR,
            vocab=len(tokenizer),
            teacher_spec=t_spec,
            teacher_fingerprint=spec_fingerprint(t_spec),
            progress=progress,
            build_batch=build_batch,
        )

    def make_uld(tokenizer: Any, base_spec: str) -> ULD:
        teacher, t_tok, t_fp = load_model(t_spec, dtype)
        return ULD(teacher, t_tok, hp, teacher_spec=t_spec, teacher_fingerprint=t_fp)

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
        make_objective=make_uld
        if hp.loss == "uld"
        else make_cached
        if hp.teacher_logits == "cache"
        else make_objective,
        hp=hp,
        teacher_alias=teacher_alias,
        alias=alias,
        dtype=dtype,
        **options,
    )


__all__ = ["TEACHER_CACHE_DIR", "TOKENIZER_PROBE", "distill_kd", "probe_ids",
           "served_teacher", "teacher_model_spec"]  # fmt: skip
