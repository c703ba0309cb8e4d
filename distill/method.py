"""A distillation method = data from a run + a trainable student + an objective + the loop.

``distil`` is what every ``bbi distill`` command runs: it takes the teacher's TRAIN-split
pairs from the run (``distill.data``), loads the student and makes it trainable as a
LoRA adapter or fully (``distill.student``), builds the method's objective
(``distill.objectives``), trains with the one loop (``distill.trainer``), saves a
student a bbi model spec loads, and registers it: ``results.json["distill"][alias]``
and ``models.<alias>`` in run.yaml, so ``bbi probe run`` answers it next. Only a
completed run registers anything.

Output directory: LoRA, a peft ``save_pretrained`` directory (spec ``BASE+lora:DIR``);
full fine-tuning, a ``save_pretrained`` model with its tokenizer (spec ``hf:DIR``). Both
also hold ``bbi_distill.json`` (provenance and metrics), ``metrics.jsonl`` (one line per
optimizer step and per eval) and ``checkpoint/`` (for ``--resume``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbi.chat import format_prompt
from bbi.config import LoraSettings
from bbi.errors import BbiError
from bbi.fsafe import check_output_dir, prepare_output_dir, removed_on_error, staged_files
from bbi.results_schema import CURVE_RECORD_VERSION, snapshot_alias_of, validated_distill
from bbi.runstore import RunDir, check_alias, write_json
from distill.data import DistillDataset, distillation_pairs, split_eval
from distill.objectives import Objective
from distill.student import (
    load_student,
    make_trainable,
    normalize_base_spec,
    save_student,
    student_spec,
    target_modules_of,
)
from distill.trainer import (
    CHECKPOINT_DIR,
    METRICS_FILE,
    check_steps,
    read_checkpoint_state,
    train,
)

PROVENANCE_FILE = "bbi_distill.json"
CURVE_DIR = "curve"  # token-milestone snapshots: curve/t<tokens seen>/ (a loadable student)
SNAPSHOT_FILE = "bbi_snapshot.json"
MIXED_PRECISION = ("no", "fp16", "bf16")
TRAIN_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class DistillResult:
    """What a distillation produced; ``record`` is results.json["distill"][alias]."""

    alias: str
    spec: str
    out_dir: Path
    completed: bool
    record: dict[str, Any] = field(default_factory=dict)


def pick_student_spec(run: RunDir) -> str:
    """The run's student spec: alias ``student`` if present, else the only student."""
    models = run.models()
    students = {a: m for a, m in models.items() if m.get("role") == "student" and m.get("spec")}
    if "student" in students:
        return students["student"]["spec"]
    if len(students) == 1:
        return next(iter(students.values()))["spec"]
    raise BbiError(
        f"{run.path}: cannot tell which student to fine-tune "
        f"({len(students)} student specs in run.yaml); pass --student SPEC"
    )


ObjectiveFactory = Callable[[Any, str], Objective]
"""(student tokenizer, student base spec) -> the method's objective."""

SampleWeights = Callable[[DistillDataset], Any]
"""train dataset -> per-example sampling weights, or (weights, summary for the record)."""


def distil(
    run: RunDir,
    *,
    method: str,
    make_objective: ObjectiveFactory,
    hp: LoraSettings,
    teacher_alias: str | None = None,
    student: str | None = None,
    alias: str,
    out: str | os.PathLike | None = None,
    full: bool = False,
    save_every_steps: int = 0,
    stop_after_steps: int | None = None,
    eval_every_steps: int = 0,
    resume: bool = False,
    mixed_precision: str | None = None,
    dtype: str = "float32",
    progress: bool = True,
    sample_weights: SampleWeights | None = None,
    replace: bool = False,
    extra_pairs: Any = None,
) -> DistillResult:
    """Run one distillation method end to end (see the module docstring).

    ``sample_weights(train_ds)`` gives each training example's sampling weight, or
    ``(weights, summary)`` with a summary recorded as the record's ``guide``. Attack-guided
    data (``hp.guide``) is such a function, made by the application layer from the run's
    train-split leaks (``bbi.app.guide``): distillation itself never runs an attack.
    ``out`` must be new, empty or this method's own earlier output (bbi's marker);
    ``replace`` lets it replace another directory, kept as ``OUT.replaced-<time>``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    t_start = time.perf_counter()
    if not isinstance(hp, LoraSettings):
        raise TypeError(f"settings must be a LoraSettings (or subclass), got {type(hp).__name__}")
    if mixed_precision is not None and mixed_precision not in MIXED_PRECISION:
        raise BbiError(f"--mixed-precision must be no, fp16 or bf16 (got {mixed_precision!r})")
    if dtype not in TRAIN_DTYPES:
        raise BbiError(f"--dtype must be one of {', '.join(TRAIN_DTYPES)} (got {dtype!r})")
    if full and dtype == "float16":
        raise BbiError("--full trains the weights themselves: use --dtype float32 or bfloat16")
    check_alias(alias)
    check_steps(save_every_steps, eval_every_steps, stop_after_steps)
    teacher_alias = teacher_alias or run.teacher_alias()
    models = run.models()
    if alias == teacher_alias or models.get(alias, {}).get("role") in ("teacher", "null"):
        raise BbiError(f"alias {alias!r} is taken by a teacher model; choose another --alias")
    run.check_files()  # the files registering the student updates: damaged ones fail now
    check_new_alias(run, alias)
    base_spec = normalize_base_spec(student or pick_student_spec(run))
    out_dir = (
        Path(out) if out is not None else run.path / ("models" if full else "adapters") / alias
    )
    kind = f"distill-{'full' if full else 'lora'}"
    check_output_dir(out_dir, kind, run_path=run.path, replace=replace)
    ckpt = out_dir / CHECKPOINT_DIR
    if resume:
        read_checkpoint_state(ckpt)  # fail before loading anything

    # Data first: a run without usable teacher responses fails before any model loads.
    pairs = distillation_pairs(run, teacher_alias)
    n_corpus = 0
    if extra_pairs is not None and len(extra_pairs):
        pairs, n_corpus = with_extra_pairs(run, pairs, extra_pairs)
    train_pairs, eval_pairs = split_eval(pairs, hp.eval_fraction, hp.seed)
    if train_pairs.empty:
        raise BbiError(f"{run.path}: no training pairs left after holding out the eval set")
    if hp.guide != "none" and sample_weights is None:
        raise BbiError(
            f"guide {hp.guide!r} needs the guide's sample weights (bbi.app.guide.guide_weights_for); "
            "bbi distill and bbi run compute them"
        )

    accelerator = Accelerator(mixed_precision=mixed_precision)
    check_launch(accelerator, hp.grad_accum)
    model, tokenizer, base_fingerprint = load_student(base_spec, dtype)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise BbiError(f"{base_spec}: tokenizer has neither a pad nor an EOS token")
    train_ds = DistillDataset(train_pairs, tokenizer, hp.max_length)
    eval_ds = DistillDataset(eval_pairs, tokenizer, hp.max_length)
    if len(train_ds) == 0:
        raise BbiError(f"every prompt is longer than --max-length {hp.max_length} tokens")
    weights, guide = None, None
    if sample_weights is not None:
        weights = sample_weights(train_ds)
        if isinstance(weights, tuple):
            weights, guide = weights
    objective = make_objective(tokenizer, base_spec)
    created = accelerator.is_main_process and not out_dir.exists()
    if accelerator.is_main_process:
        prepare_output_dir(out_dir, kind, replace=replace)
    if accelerator.is_main_process and not resume:
        shutil.rmtree(out_dir / CURVE_DIR, ignore_errors=True)  # an earlier training's
    accelerator.wait_for_everyone()
    set_seed(hp.seed)  # adapter init, dropout: a function of the seed alone
    model = make_trainable(model, hp, full)
    # A new output left with nothing to resume (a full disk, Ctrl-C before the first
    # checkpoint) is removed: no partial adapters/ALIAS directory stays behind.
    with removed_on_error(out_dir, created, unless=ckpt / "state.json"):
        loop_train_ds, loop_eval_ds = objective.datasets(train_ds, eval_ds, accelerator)
        outcome = train(
            model,
            objective,
            loop_train_ds,
            loop_eval_ds,
            hp=hp,
            accelerator=accelerator,
            collate=objective.collator(tokenizer.pad_token_id),
            ckpt_dir=ckpt,
            identity={
                "method": method,
                "finetune": "full" if full else "lora",
                "base": base_spec,
                "base_fingerprint": base_fingerprint,
                "dtype": dtype,
                "teacher": teacher_alias,
            },
            resume=resume,
            save_every_steps=save_every_steps,
            stop_after_steps=stop_after_steps,
            eval_every_steps=eval_every_steps,
            metrics_path=out_dir / METRICS_FILE,
            sample_weights=weights,
            progress=progress,
            desc=f"distill {alias}",
            on_snapshot=_snapshot_saver(
                out_dir, alias, base_spec, full, tokenizer, accelerator.save
            )
            if hp.curve_tokens
            else None,
        )
    spec = student_spec(base_spec, out_dir, full)
    result = DistillResult(alias=alias, spec=spec, out_dir=out_dir, completed=outcome.completed)
    if not outcome.completed:
        return result

    state = outcome.state
    train_s = outcome.train_time_s
    record = {
        "spec": spec,
        "method": method,
        "finetune": "full" if full else "lora",
        "objective": state["objective"],
        "base": base_spec,
        "base_fingerprint": base_fingerprint,
        "teacher": teacher_alias,
        ("model_dir" if full else "adapter_dir"): out_dir.as_posix(),
        "n_train_examples": len(train_ds),
        "n_eval_examples": len(eval_ds),
        "n_train_prompts": int(train_pairs["prompt_id"].nunique()),
        "n_eval_prompts": int(eval_pairs["prompt_id"].nunique()),
        "n_skipped_too_long": train_ds.n_skipped + eval_ds.n_skipped,
        "eval_loss_per_epoch": state["eval_loss_per_epoch"],
        "train_loss": state["train_loss_per_epoch"][-1],
        "train_loss_per_epoch": state["train_loss_per_epoch"],
        "hyperparameters": hp.model_dump(),
        "target_modules": target_modules_of(outcome.model),
        "steps": outcome.total_steps,
        "seed": hp.seed,
        "num_processes": accelerator.num_processes,
        "mixed_precision": str(accelerator.mixed_precision),
        "chat_format": format_prompt(tokenizer, "")[1],
        "time_s": time.perf_counter() - t_start,
        "train_time_s": train_s,
        "train_cpu_s": outcome.train_cpu_s,
        "tokens_per_s": outcome.tokens / train_s if train_s > 0 and outcome.tokens > 0 else None,
        "resumed": bool(resume),
        "metrics": (out_dir / METRICS_FILE).as_posix(),
        "loss_tokens": state.get("loss_tokens"),
        "guide": guide,
    }
    if hp.curve_tokens:  # the token-milestone snapshots (records without them are unchanged)
        record["curve"] = curve_record(out_dir, alias, base_spec, full, hp.curve_tokens, state)
    if n_corpus:  # prompts beyond the train split (records without them are unchanged)
        record["n_corpus_prompts"] = n_corpus
    if objective.stats():  # e.g. on-policy sampling time, the teacher cache
        record["objective_stats"] = objective.stats()
    result.record = record = validated_distill(record)
    if accelerator.is_main_process:
        with staged_files(out_dir) as stage:  # the student appears whole or not at all
            save_student(outcome.model, tokenizer, stage, save_function=accelerator.save)
            write_json(stage / PROVENANCE_FILE, {**record, "train_data": state["train_data"]})
        register(run, alias, spec, record)
    accelerator.wait_for_everyone()
    return result


def snapshot_alias(alias: str, tokens_seen: int) -> str:
    """The model alias of a student's snapshot after ``tokens_seen`` tokens."""
    return f"{alias}.t{int(tokens_seen)}"


def _snapshot_entry(
    out_dir: Path, alias: str, base_spec: str, full: bool, point: dict[str, Any]
) -> dict[str, Any]:
    snap = out_dir / CURVE_DIR / f"t{int(point['tokens_seen'])}"
    return {
        "alias": snapshot_alias(alias, point["tokens_seen"]),
        "spec": student_spec(base_spec, snap, full),
        "dir": snap.as_posix(),
        **{k: point[k] for k in ("tokens_seen", "loss_tokens", "step", "epoch", "milestones")},
    }


def _snapshot_saver(
    out_dir: Path, alias: str, base_spec: str, full: bool, tokenizer: Any, save_function: Any
) -> Callable[[Any, dict[str, Any]], None]:
    """What the loop calls at a token milestone: the student as it is now, saved whole
    (adapter or full model, like the final student) into ``curve/t<tokens>/`` or not at all."""

    def save(model: Any, point: dict[str, Any]) -> None:
        entry = _snapshot_entry(out_dir, alias, base_spec, full, point)
        name = Path(entry["dir"]).name
        with staged_files(out_dir / CURVE_DIR) as stage:
            save_student(model, tokenizer, stage / name, save_function=save_function)
            write_json(stage / name / SNAPSHOT_FILE, entry)

    return save


def curve_record(
    out_dir: Path,
    alias: str,
    base_spec: str,
    full: bool,
    milestones: list[int],
    state: dict[str, Any],
) -> dict[str, Any]:
    """``distill.<alias>.curve``: the milestones asked for, the snapshots kept (tokens
    seen, loss tokens, step, spec) and the milestones the training never reached."""
    points = list(state.get("curve") or [])
    reached = {m for p in points for m in p["milestones"]}
    return {
        "version": CURVE_RECORD_VERSION,
        "milestones": list(milestones),
        "tokens_seen": int(state.get("tokens_seen", 0)),
        "loss_tokens": int(state.get("loss_tokens", 0)),
        "steps": int(state["global_step"]),
        "snapshots": [_snapshot_entry(out_dir, alias, base_spec, full, p) for p in points],
        "unreached": [m for m in milestones if m not in reached],
    }


def with_extra_pairs(run: RunDir, pairs: Any, extra: Any) -> tuple[Any, int]:
    """The train split's pairs plus ``extra`` ones (more prompts for the teacher to teach,
    e.g. the builders' training corpus): refused if any extra prompt is one of the run's
    suite prompts (test or train) or reuses a prompt id. Returns (pairs, extra prompt count)."""
    import pandas as pd

    prompts = set(run.suite()["prompt"].astype(str))
    leaked = sorted(set(extra["prompt"].astype(str)) & prompts)
    if leaked:
        raise BbiError(
            f"{len(leaked)} extra distillation prompt(s) are prompts of the run's suite "
            f"(e.g. {leaked[0][:60]!r}); distillation data must never hold a suite prompt"
        )
    clash = set(extra["prompt_id"]) & set(pairs["prompt_id"])
    if clash:
        raise BbiError(f"extra distillation prompts reuse suite prompt ids (e.g. {min(clash)})")
    both = pd.concat([pairs, extra[list(pairs.columns)]], ignore_index=True)
    both = both.sort_values(["prompt_id", "sample"], kind="stable").reset_index(drop=True)
    return both, int(extra["prompt_id"].nunique())


def check_launch(accelerator: Any, grad_accum: int) -> None:
    """Refuse launches under which the loop would train something else than asked.

    - ``accelerate launch --multi_gpu`` / ``torchrun`` on a machine without GPUs start N
      processes (``WORLD_SIZE`` = N) that each find no distributed backend unless
      ``ACCELERATE_USE_CPU=true`` asks for gloo: they would train N independent copies on
      all the data and race to write the same files and register the same alias.
    - Accelerate's own gradient accumulation (``ACCELERATE_GRADIENT_ACCUMULATION_STEPS``)
      would divide every loss again on top of the loop's exact accumulation (``--grad-accum``).
    - FSDP and ZeRO-3 shard the parameters; the loop saves the main process's own, so the
      student would be incomplete.
    - Under DeepSpeed, Accelerate steps the engine after every backward the loop makes
      outside ``accelerator.accumulate``: ``--grad-accum`` above 1 would step per micro-batch.
    """
    try:
        launched = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        launched = 1
    if launched > 1 and accelerator.num_processes != launched:
        raise BbiError(
            f"launched as {launched} processes (WORLD_SIZE) but Accelerate joined "
            f"{accelerator.num_processes}: no distributed backend (without GPUs, set "
            "ACCELERATE_USE_CPU=true to train on CPU processes over gloo)"
        )
    if accelerator.gradient_accumulation_steps != 1:
        raise BbiError(
            f"Accelerate's gradient accumulation is set to {accelerator.gradient_accumulation_steps} "
            "(ACCELERATE_GRADIENT_ACCUMULATION_STEPS or the launch config); bbi accumulates "
            "itself: leave Accelerate's at 1 and pass --grad-accum"
        )
    sharded = accelerator.distributed_type == "FSDP" or (
        accelerator.distributed_type == "DEEPSPEED"
        and getattr(accelerator.state.deepspeed_plugin, "zero_stage", 0) == 3
    )
    if sharded:  # the loop saves the main process's own parameters, not gathered shards
        raise BbiError(
            f"{accelerator.distributed_type} with sharded parameters is not supported yet: "
            "the saved student would hold one process's shard; use DDP or DeepSpeed ZeRO-2 "
            "(docs/multi-gpu.md)"
        )
    if accelerator.distributed_type == "DEEPSPEED" and grad_accum != 1:
        raise BbiError(
            f"--grad-accum {grad_accum} under DeepSpeed: the engine steps after every "
            "micro-batch here; use --grad-accum 1 (raise --batch-size or the process count)"
        )


def guide_source(run: RunDir, base_spec: str, guide_from: str | None) -> str:
    """The student whose train-split leaks guide the data: ``guide_from``, else the run's
    student answering with the base spec being fine-tuned."""
    models = run.models()
    if guide_from is not None:
        if guide_from not in models or models[guide_from].get("role") == "teacher":
            raise BbiError(
                f"--guide-from {guide_from!r}: not a student of {run.path} "
                f"(models: {', '.join(models)})"
            )
        return guide_from
    same = [
        a
        for a, m in models.items()
        if m.get("role") == "student" and normalize_base_spec(str(m.get("spec", ""))) == base_spec
    ]
    if len(same) == 1:
        return same[0]
    raise BbiError(
        f"{run.path}: cannot tell which student's leaks guide the data "
        f"({len(same)} students with spec {base_spec}); pass --guide-from ALIAS"
    )


def check_new_alias(run: RunDir, alias: str) -> None:
    """A distilled student needs an alias of its own: one the run does not hold yet, or
    one an earlier distillation registered (a rerun replaces it). The base student's or
    a teacher's alias would be re-pointed at the new model."""
    check_alias(alias)
    models = run.models()
    if alias not in models:
        return
    entry = models[alias]
    distilled = run.read_results().get("distill") or {}
    if entry.get("role") == "student" and alias in distilled:
        return
    raise BbiError(
        f"--alias {alias!r}: already names the run's {entry.get('role')} "
        f"({entry.get('spec') or 'imported responses'}); a distilled student needs its own "
        "alias: choose another --alias"
    )


def register(run: RunDir, alias: str, spec: str, record: dict) -> None:
    """Record the result and add the new student to run.yaml (``bbi probe`` answers it next).

    Token snapshots of an earlier training under this alias that this one did not keep
    (their directories are gone) leave run.yaml, so no command tries to load them."""
    run.update_results_entry("distill", alias, record)
    cfg = run.config()
    kept = {s["alias"] for s in (record.get("curve") or {}).get("snapshots", [])}
    models = {
        a: m
        for a, m in (cfg.get("models") or {}).items()
        if a in kept or not snapshot_alias_of(alias, str(a))
    }
    models[alias] = {"spec": spec, "role": "student"}
    cfg["models"] = models
    run.write_config(cfg)


__all__ = [
    "CURVE_DIR",
    "DistillResult",
    "curve_record",
    "snapshot_alias",
    "PROVENANCE_FILE",
    "check_launch",
    "check_new_alias",
    "distil",
    "with_extra_pairs",
    "guide_source",
    "pick_student_spec",
    "register",
]
