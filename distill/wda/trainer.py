"""``bbi distill wda``: build a Wave-Density-Attention student in four phases.

The phases (seed 000; docs/wda.md) all run on the one training loop
(``distill.trainer.train``) with an objective each, on one model:

1. ``align``: the teacher is copied and every attention gets a WDA branch beside the
   frozen teacher attention, mixed = (ts A + s W) / sqrt(ts^2 + s^2) with ts = s = 1; only
   the WDA parameters learn, on CE + ``energy_weight`` x residual energy
   (``distill.objectives.energy``), at the alignment gate temperature.
2. ``detach``: the teacher scale ts and the energy weight fall linearly to 0 while every
   student parameter learns (the teacher attention stays frozen and then goes unused).
3. ``free``: teacher-free cross-entropy, in stages with LR multipliers (``bursts``).
4. ``sft``: instruction SFT on the teacher's responses, loss on the response tokens only
   (the probe's chat format).

Data: the run's TRAIN-split teacher (prompt, response) pairs (``distill.data``); phases
1-3 learn the whole text, phase 4 the responses. A fraction of train prompts is held out
(``eval_fraction``) and never trained on: every eval reports cross-entropy (and
perplexity) there, for the teacher, the untrained transplant and after every phase.
Each phase (and burst stage) has its own checkpoint directory under ``OUT/phases/`` with
model, optimizer, scheduler, RNG and data position (the shared loop's exact resume); a
finished phase is recorded in ``OUT/phases.json`` and skipped by ``--resume``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from bbi.config import WDASettings
from bbi.errors import BbiError
from bbi.results_schema import validated_distill
from bbi.runstore import RunDir, check_alias, read_json_object, write_json
from distill.data import Collator, DistillDataset, distillation_pairs, split_eval
from distill.trainer import METRICS_FILE, train

PHASES_FILE = "phases.json"
LAST_MODEL = "last.safetensors"  # the whole model after the last finished phase


def _attention_config(settings: WDASettings, teacher: Any) -> Any:
    from distill.wda.attention import WDAConfig

    cfg = teacher.config
    return WDAConfig(
        hidden_size=cfg.hidden_size,
        num_heads=cfg.num_attention_heads,
        num_masks=settings.masks,
        num_waves=settings.waves,
        top_k=settings.top_k,
        temperature=settings.align_temperature,
        kernel=settings.kernel,
        distance_scale=settings.distance_scale,
        route_chunk=settings.route_chunk,
        content_rank=settings.content_rank,
    )


@torch.no_grad()
def heldout_ce(model: Any, ds: DistillDataset, collate: Collator, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy over the labelled tokens of ``ds`` (nats/token)."""
    from distill.objectives.sft import token_losses

    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    for i in range(0, len(ds), batch_size):
        batch = collate([ds[j] for j in range(i, min(i + batch_size, len(ds)))])
        sums, counts = token_losses(model, batch)
        total += float(sums.sum())
        count += float(counts.sum())
    model.train(was_training)
    return total / max(count, 1.0)


def _row(name: str, ce: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"phase": name, "ce": ce, "ppl": math.exp(min(ce, 50.0)), **(extra or {})}


def _phase_row(
    name: str, model: Any, ds: DistillDataset, collate: Collator, extra: dict | None = None
) -> dict[str, Any]:
    """Held-out CE of the student as it will be used: teacher-free (ts = 0); while the
    teacher attention is still mixed in, the fused CE is recorded beside it."""
    from distill.wda import student as wda_student

    ts = float(model.config.teacher_scale)
    wda_student.set_teacher_scale(model, 0.0)
    ce = heldout_ce(model, ds, collate)
    info = {"routing": wda_student.routing_stats(model), **(extra or {})}
    wda_student.set_teacher_scale(model, ts)
    if ts > 0:
        info["ce_with_teacher_attention"] = heldout_ce(model, ds, collate)
        info["teacher_scale"] = ts
    return _row(name, ce, info)


def distill_wda(
    run: RunDir,
    *,
    settings: WDASettings | None = None,
    teacher_alias: str | None = None,
    teacher_spec: str | None = None,
    alias: str = "student_wda",
    out: str | os.PathLike | None = None,
    resume: bool = False,
    stop_after_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the selected phases, save the student (``hf:OUT``), register it; the record.

    ``stop_after_steps`` ends this session after that many optimizer steps (over all
    phases) with a checkpoint; the record then has ``completed: False`` and nothing is
    registered; ``resume`` continues exactly where it stopped."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from distill.kd import teacher_model_spec
    from distill.method import register
    from distill.objectives.energy import ResidualEnergy
    from distill.student import load_model, student_spec
    from distill.wda import student as wda_student

    t_start = time.perf_counter()
    hp = settings if settings is not None else WDASettings()
    check_alias(alias)
    teacher_alias = teacher_alias or run.teacher_alias()
    if alias == teacher_alias:
        raise BbiError(f"alias {alias!r} is the teacher's; choose another --alias")
    t_spec = teacher_model_spec(run, teacher_alias, teacher_spec)
    out_dir = Path(out) if out is not None else run.path / "models" / alias
    done_path = out_dir / PHASES_FILE
    done: dict[str, Any] = read_json_object(done_path) if resume and done_path.exists() else {}
    if not resume and done_path.exists():
        raise BbiError(f"{out_dir} holds an earlier WDA run; pass --resume or another --out")

    # Data first: a run without usable teacher responses fails before any model loads.
    pairs = distillation_pairs(run, teacher_alias)
    train_pairs, eval_pairs = split_eval(pairs, hp.eval_fraction, hp.seed)
    if train_pairs.empty or eval_pairs.empty:
        raise BbiError(f"{run.path}: too few train prompts to hold some out for eval")

    teacher, tok, t_fp = load_model(t_spec, "float32")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    collate = Collator(tok.pad_token_id)
    lm_train = DistillDataset(train_pairs, tok, hp.max_length, prompt_loss=True)
    lm_eval = DistillDataset(eval_pairs, tok, hp.max_length, prompt_loss=True)
    sft_train = DistillDataset(train_pairs, tok, hp.max_length)
    sft_eval = DistillDataset(eval_pairs, tok, hp.max_length)
    if not set(lm_train.prompt_ids).isdisjoint(lm_eval.prompt_ids):
        raise RuntimeError("held-out prompts leaked into training data")

    set_seed(hp.seed)
    model = wda_student.transplant(
        teacher, _attention_config(hp, teacher), teacher_scale=1.0, wda_scale=1.0, seed=hp.seed
    )
    last = out_dir / "phases" / LAST_MODEL
    if done.get("completed"):
        # The model as the last finished phase left it (phases checkpoint only what they train).
        from safetensors.torch import load_model as load_weights

        if not last.exists():
            raise BbiError(f"--resume: {last} is missing; start over with another --out")
        load_weights(model, last)
    rows: list[dict[str, Any]] = list(done.get("rows") or [])
    if not rows:
        rows.append(_row("teacher", heldout_ce(teacher, lm_eval, collate)))
        rows.append(_phase_row("transplant", model, lm_eval, collate))
    accelerator = Accelerator()
    identity = {"method": "wda", "teacher": t_spec, "teacher_fingerprint": t_fp}

    budget = {"steps": stop_after_steps, "stopped": False}

    def routing(m: Any) -> dict[str, Any]:
        """Routing health of the last forward pass, for every step's metrics line."""
        from accelerate.utils import extract_model_from_parallel

        stats = wda_student.routing_stats(extract_model_from_parallel(m))
        return {f"routing_{k}": v for k, v in stats.items() if k != "layers"}

    def stage(name: str, objective: Any, train_ds: DistillDataset, eval_ds: DistillDataset,
              loop_hp: Any, trainable: str) -> None:  # fmt: skip
        nonlocal model
        if name in (done.get("completed") or []) or budget["stopped"]:
            return
        ckpt = out_dir / "phases" / name
        resuming = resume and (ckpt / "checkpoint").exists()
        if not resuming:  # each phase's randomness is a function of the seed alone
            set_seed(hp.seed + len(done.get("completed") or []) + 1)
        wda_student.freeze_teacher(model)
        for n, p in model.named_parameters():
            if "teacher" in n:
                continue
            p.requires_grad_(trainable == "all" or ".wda." in f".{n}." or n.startswith("wda."))
        outcome = train(
            model,
            objective,
            train_ds,
            eval_ds,
            hp=loop_hp,
            accelerator=accelerator,
            collate=collate,
            ckpt_dir=ckpt / "checkpoint",
            identity={**identity, "phase": name, "settings": hp.model_dump()},
            resume=resuming,
            stop_after_steps=budget["steps"],
            metrics_path=ckpt / METRICS_FILE,
            progress=progress,
            desc=f"wda {name}",
        )
        model = outcome.model
        if not outcome.completed:
            budget["stopped"] = True
            return
        if budget["steps"] is not None:
            budget["steps"] = max(budget["steps"] - outcome.total_steps, 1)
        rows.append(_phase_row(name, model, lm_eval if name != "sft" else sft_eval, collate,
                               {"steps": outcome.total_steps,
                                "train_time_s": outcome.train_time_s}))  # fmt: skip
        from safetensors.torch import save_model

        save_model(model, str(last.with_suffix(".tmp")))
        os.replace(last.with_suffix(".tmp"), last)
        done.setdefault("completed", []).append(name)
        done["rows"] = rows
        write_json(done_path, done)

    for phase in hp.phases:
        if getattr(hp, f"{phase}_epochs") == 0:
            continue
        if phase == "align":
            wda_student.set_teacher_scale(model, 1.0)
            wda_student.set_temperature(model, hp.align_temperature)
            obj = ResidualEnergy(teacher, hp.energy_weight, kl_weight=hp.kl_weight,
                                 diagnostics=routing, teacher_spec=t_spec,
                                 teacher_fingerprint=t_fp)  # fmt: skip
            stage("align", obj, lm_train, lm_eval, hp.loop("align"), "wda")
        elif phase == "detach":
            wda_student.set_temperature(model, hp.temperature)
            obj = ResidualEnergy(
                teacher,
                lambda f, w0=hp.energy_weight: w0 * (1 - f),
                kl_weight=hp.kl_weight,
                on_step=lambda m, f: wda_student.set_teacher_scale(m, 1.0 - f),
                diagnostics=routing,
                teacher_spec=t_spec,
                teacher_fingerprint=t_fp,
            )
            stage("detach", obj, lm_train, lm_eval, hp.loop("detach"), "all")
            wda_student.set_teacher_scale(model, 0.0)
        elif phase == "free":
            wda_student.set_teacher_scale(model, 0.0)
            wda_student.set_temperature(model, hp.temperature)
            for i, mult in enumerate(hp.bursts):
                obj = ResidualEnergy(None, 0.0, diagnostics=routing)
                stage(f"free{i + 1}", obj, lm_train, lm_eval, hp.loop("free", mult), "all")
        elif phase == "sft":
            wda_student.set_teacher_scale(model, 0.0)
            wda_student.set_temperature(model, hp.temperature)
            obj = ResidualEnergy(None, 0.0, diagnostics=routing)
            stage("sft", obj, sft_train, sft_eval, hp.loop("sft"), "all")

    if budget["stopped"]:
        return {"completed": False, "out_dir": out_dir.as_posix(), "phases": rows}
    wda_student.set_teacher_scale(model, 0.0)
    wda_student.drop_teacher(model)  # the saved student is teacher-free
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    spec = student_spec(t_spec, out_dir, True)
    record = {
        "spec": spec,
        "method": "wda",
        "finetune": "full",
        "base": t_spec,
        "teacher": teacher_alias,
        "model_dir": out_dir.as_posix(),
        "phases": rows,
        "hyperparameters": hp.model_dump(),
        "n_train_examples": len(lm_train),
        "n_eval_examples": len(lm_eval),
        "n_train_prompts": int(train_pairs["prompt_id"].nunique()),
        "n_eval_prompts": int(eval_pairs["prompt_id"].nunique()),
        "seed": hp.seed,
        "time_s": time.perf_counter() - t_start,
        "resumed": bool(resume),
        "completed": True,
    }
    record = validated_distill(record)
    write_json(out_dir / "bbi_distill.json", record)
    register(run, alias, spec, record)
    return record


__all__ = ["PHASES_FILE", "distill_wda", "heldout_ce"]
