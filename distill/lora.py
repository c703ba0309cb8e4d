"""Black-box sequence-level distillation: fine-tune a student on the teacher's responses.

The student is fine-tuned (a peft LoRA adapter, or every weight with ``full=True``) on
the teacher's responses to the TRAIN split of a run, with cross-entropy on response
tokens only (``distill.objectives.sft``), in exactly the prompt format the probe uses.
Only the teacher's text is needed, so any teacher works (an API, imported generations).
Test prompts never enter the data; the held-out eval set is carved out of the train
split by prompt id.

Training is the shared loop (``distill.trainer``): a checkpoint holds everything needed
to continue bit-for-bit, and one that does not match the requested run (other data,
hyperparameters, base model or process count) is refused, never silently dropped.

Multi-GPU needs no code change; launch the console script or the module under Accelerate::

    accelerate launch --multi_gpu --num_processes 4 $(which bbi) distill lora runs/demo
    accelerate launch --multi_gpu --num_processes 4 -m bbi.app.cli distill lora runs/demo

Both forms work (``bbi/app/cli/__main__.py`` makes the package runnable); so does
``torchrun --nproc_per_node 4 $(which bbi) ...``. A multi-process run on CPU (gloo) needs
``ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 $(which bbi) ...`` since
``accelerate launch --cpu`` starts one process. ``--batch-size`` is per process (the
global batch is batch size x processes x grad accum); eval loss is gathered over all
processes; only the main process writes files. A checkpoint records the process count
and is refused under another one (the data order per process would differ). Mixed
precision comes from ``accelerate launch --mixed_precision bf16`` / ``accelerate
config`` unless ``--mixed-precision`` is given.

The output directory is a standard peft ``save_pretrained`` directory
(``adapter_config.json``, ``adapter_model.safetensors``), or with ``full`` a
``save_pretrained`` model plus tokenizer, and in both cases ``bbi_distill.json``
(provenance and metrics), ``metrics.jsonl`` and ``checkpoint/`` (for ``--resume``).
"""

from __future__ import annotations

from typing import Any

from bbi.config import LoraSettings
from bbi.runstore import RunDir
from distill.data import (
    IGNORE_INDEX,
    Collator,
    DistillDataset,
    distillation_pairs,
    encode_pair,
    split_eval,
)
from distill.method import PROVENANCE_FILE, DistillResult, distil, pick_student_spec
from distill.objectives.sft import SFT, token_losses
from distill.student import default_target_modules, load_student, make_lora_model
from distill.trainer import CHECKPOINT_DIR, epoch_order


def distill_lora(
    run: RunDir,
    *,
    alias: str = "student_lora",
    settings: LoraSettings | None = None,
    **options: Any,
) -> DistillResult:
    """Fine-tune the student on the teacher's train-split responses; register the student.

    ``settings`` holds the hyperparameters (``bbi.config.LoraSettings``; its defaults when
    omitted); ``full`` trains every weight instead of a LoRA adapter (rank, alpha, dropout
    and target modules are then unused) and saves a model loadable as ``hf:OUT``.
    ``save_every_steps`` adds checkpoints between the per-epoch ones; ``stop_after_steps``
    ends the session (with a checkpoint) after that many optimizer steps in total, to be
    continued with ``resume=True`` (useful for preemptible slots). Only a completed run
    writes results.json["distill"][alias] and adds ``alias`` to run.yaml. ``dtype`` is the
    base weights' dtype (a LoRA adapter trains in fp32); ``mixed_precision`` overrides
    Accelerate's (``no``/``fp16``/``bf16``). ``eval_loss_per_epoch[0]`` is the base model's
    held-out loss before training (empty when ``eval_fraction`` is 0). ``options`` are
    :func:`distill.method.distil`'s run options (teacher_alias, student, out, full,
    save_every_steps, stop_after_steps, eval_every_steps, resume, mixed_precision, dtype,
    progress, sample_weights), stated once there.
    """
    return distil(
        run,
        method="sft",
        make_objective=lambda tokenizer, base: SFT(),
        hp=settings if settings is not None else LoraSettings(),
        alias=alias,
        **options,
    )


__all__ = [
    "CHECKPOINT_DIR",
    "IGNORE_INDEX",
    "PROVENANCE_FILE",
    "Collator",
    "DistillDataset",
    "default_target_modules",
    "distill_lora",
    "distillation_pairs",
    "encode_pair",
    "epoch_order",
    "load_student",
    "make_lora_model",
    "pick_student_spec",
    "split_eval",
    "token_losses",
]
