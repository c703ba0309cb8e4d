"""`bbi distill` commands: build students that close the gap to the teacher.

Every method runs the same loop (``distill.trainer``) with its own objective; the flags
shared by all methods are defined once below. Hyperparameter flags default to None and
are applied onto the settings section (``bbi.config``), which states each default once
and turns a bad value into one ``--flag: message`` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bbi.app.cli.params import path_value, text_value
from bbi.config import KDSettings, LoraSettings
from bbi.errors import BbiError
from bbi.fsafe import removed_on_error
from bbi.runstore import RunDir

app = typer.Typer(
    help="Distil students from the teacher: `lora` (its responses), `kd` (its weights), "
    "`wda` (a Wave-Density-Attention student), `bird` (representation alignment, safe "
    "refusal) and `circuit` (matched-head alignment, entity tracking).",
    no_args_is_help=True,
)

_LORA = LoraSettings()
_KD = KDSettings()


def _d(field: str) -> str:
    value = getattr(_KD, field)
    return f"(default {value})" if value is not None else ""


# ---- options shared by every method --------------------------------------------------
RUN_DIR = typer.Argument(
    ..., help="Run directory (runs/NAME) with teacher responses.", parser=path_value
)
TEACHER_ALIAS = typer.Option(
    None, help="Teacher alias (default: the run's teacher).", parser=text_value
)
STUDENT = typer.Option(
    None,
    help="Base model spec to fine-tune (default: the run's student in run.yaml).",
    parser=text_value,
)
OUT = typer.Option(
    None,
    help="Output directory (default runs/NAME/adapters/ALIAS, or models/ALIAS with --full).",
    parser=path_value,
)
FULL = typer.Option(
    False, "--full", help="Fine-tune every weight instead of a LoRA adapter (saved as hf:OUT)."
)
RANK = typer.Option(None, help=f"LoRA rank r {_d('rank')}.")
ALPHA = typer.Option(None, help=f"LoRA alpha, scale = alpha / rank {_d('alpha')}.")
DROPOUT = typer.Option(None, help=f"LoRA dropout {_d('dropout')}.")
TARGETS = typer.Option(
    None, help="Comma-separated LoRA module names (default: q/k/v/o + MLP projections)."
)
EPOCHS = typer.Option(None, help=f"Passes over the train split {_d('epochs')}.")
LR = typer.Option(None, help=f"Peak learning rate, linear warmup and decay {_d('lr')}.")
BATCH = typer.Option(None, help=f"Examples per micro-batch per process {_d('batch_size')}.")
ACCUM = typer.Option(None, help=f"Micro-batches per optimizer step {_d('grad_accum')}.")
MAX_LEN = typer.Option(None, help=f"Max tokens of prompt + response {_d('max_length')}.")
SEED = typer.Option(None, help=f"Seed: init, data order, dropout, eval split {_d('seed')}.")
EVAL_FRACTION = typer.Option(
    None,
    help=f"Fraction of TRAIN prompts held out for eval (test is never used) {_d('eval_fraction')}.",
)
WARMUP = typer.Option(None, help=f"Fraction of steps spent warming up {_d('warmup_ratio')}.")
WEIGHT_DECAY = typer.Option(None, help=f"AdamW weight decay {_d('weight_decay')}.")
MAX_GRAD_NORM = typer.Option(None, help=f"Gradient clipping norm {_d('max_grad_norm')}.")
GUIDE = typer.Option(
    None,
    help="Attack-guided data: none, or spend training where a train-split attack tells "
    f"the student apart, per category or prompt {_d('guide')}.",
    parser=text_value,
)
GUIDE_MIX = typer.Option(
    None, help=f"Share of sampling that follows the leak; the rest is uniform {_d('guide_mix')}."
)
GUIDE_ADVERSARY = typer.Option(
    None,
    help=f"Adversary cross-fitted on train prompts to score leaks {_d('guide_adversary')}.",
    parser=text_value,
)
GUIDE_FOLDS = typer.Option(
    None, help=f"Cross-fitting folds over train prompts {_d('guide_folds')}."
)
GUIDE_FROM = typer.Option(
    None,
    help="Student alias whose leaks are scored (default: the run's student with the base spec).",
    parser=text_value,
)
SAVE_EVERY = typer.Option(
    0, help="Also checkpoint every N optimizer steps (0: at each epoch end only)."
)
EVAL_EVERY = typer.Option(0, help="Also evaluate every N optimizer steps (0: per epoch).")
STOP_AFTER = typer.Option(
    None, help="Stop with a checkpoint after N optimizer steps in total; --resume later."
)
RESUME = typer.Option(False, help="Continue exactly from the output dir's checkpoint.")
MIXED = typer.Option(
    None,
    help="no|fp16|bf16 (default: from `accelerate launch`/config, else no).",
    parser=text_value,
)
DTYPE = typer.Option(
    "float32", help="Base weights dtype: float32, bfloat16 or float16 (a LoRA adapter stays fp32)."
)
PROGRESS = typer.Option(True, help="Show a progress bar.")
REPLACE = typer.Option(
    False,
    "--replace",
    help="Let --out replace a directory bbi did not write (kept as OUT.replaced-<time>).",
)


def _targets(target_modules: str | None) -> list[str] | None:
    if target_modules is None:
        return None
    targets = [t.strip() for t in target_modules.split(",")]
    if not all(targets):
        raise BbiError(f"--target-modules: empty module name in {target_modules!r}")
    return targets


def _report(result: Any) -> None:
    """Print the new spec on stdout (for scripts), the eval loss change on stderr."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    if result.completed:
        ev = result.record["eval_loss_per_epoch"]
        if ev:
            typer.echo(f"eval loss {ev[0]:.4f} (base) -> {ev[-1]:.4f}", err=True)
        typer.echo(result.spec)
    else:
        typer.echo(f"stopped early; continue with --resume ({result.out_dir})", err=True)


@app.command("lora")
def lora(
    run_dir: Path = RUN_DIR,
    teacher_alias: str = TEACHER_ALIAS,
    student: str = STUDENT,
    alias: str = typer.Option("student_lora", help="Alias of the distilled student."),
    out: Path = OUT,
    full: bool = FULL,
    rank: int = RANK,
    alpha: float = ALPHA,
    dropout: float = DROPOUT,
    target_modules: str = TARGETS,
    epochs: int = EPOCHS,
    lr: float = LR,
    batch_size: int = BATCH,
    grad_accum: int = ACCUM,
    max_length: int = MAX_LEN,
    seed: int = SEED,
    eval_fraction: float = EVAL_FRACTION,
    warmup_ratio: float = WARMUP,
    weight_decay: float = WEIGHT_DECAY,
    max_grad_norm: float = MAX_GRAD_NORM,
    guide: str = GUIDE,
    guide_mix: float = GUIDE_MIX,
    guide_adversary: str = GUIDE_ADVERSARY,
    guide_folds: int = GUIDE_FOLDS,
    guide_from: str = GUIDE_FROM,
    save_every_steps: int = SAVE_EVERY,
    eval_every_steps: int = EVAL_EVERY,
    stop_after_steps: int = STOP_AFTER,
    resume: bool = RESUME,
    mixed_precision: str = MIXED,
    dtype: str = DTYPE,
    replace: bool = REPLACE,
    progress: bool = PROGRESS,
) -> None:
    """Fine-tune the student (LoRA, or --full) on the teacher's train-split responses.

    Prints the new model spec and registers it in run.yaml. Multi-GPU: `accelerate launch --multi_gpu $(which bbi) distill lora runs/NAME`.
    """
    from bbi.app.cli.outputs import check_output_dir

    run = RunDir(run_dir)  # a missing run is one line before the heavy imports below
    check_output_dir(out, "--out")  # before training, which only writes at the end
    from distill.lora import distill_lora

    settings = _LORA.updated(
        rank=rank, alpha=alpha, dropout=dropout, target_modules=_targets(target_modules),
        epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
        max_length=max_length, seed=seed, eval_fraction=eval_fraction,
        warmup_ratio=warmup_ratio, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
        guide=guide, guide_mix=guide_mix, guide_adversary=guide_adversary,
        guide_folds=guide_folds, guide_from=guide_from,
    )  # fmt: skip
    result = distill_lora(
        run,
        teacher_alias=teacher_alias,
        student=student,
        alias=alias,
        out=out,
        settings=settings,
        full=full,
        save_every_steps=save_every_steps,
        eval_every_steps=eval_every_steps,
        stop_after_steps=stop_after_steps,
        resume=resume,
        mixed_precision=mixed_precision,
        dtype=dtype,
        progress=progress,
        replace=replace,
    )
    _report(result)


@app.command("kd")
def kd(
    run_dir: Path = RUN_DIR,
    teacher_alias: str = TEACHER_ALIAS,
    teacher_spec: str = typer.Option(
        None,
        help="Teacher model spec (default: the teacher alias's spec in run.yaml).",
        parser=text_value,
    ),
    student: str = STUDENT,
    alias: str = typer.Option("student_kd", help="Alias of the distilled student."),
    out: Path = OUT,
    full: bool = FULL,
    loss: str = typer.Option(
        None, help=f"forward_kl = KL(teacher||student), reverse_kl, or jsd {_d('loss')}."
    ),
    beta: float = typer.Option(
        None, help=f"jsd mixture weight: 0 = forward KL, 1 = reverse KL {_d('beta')}."
    ),
    temperature: float = typer.Option(
        None, help=f"Softens both distributions (and on-policy sampling) {_d('temperature')}."
    ),
    lambda_on_policy: float = typer.Option(
        None,
        help=f"Probability a step trains on the student's own samples (GKD) {_d('lambda_on_policy')}.",
    ),
    max_new_tokens: int = typer.Option(
        None, help="Max tokens of an on-policy sample (default: the run's generation setting)."
    ),
    rank: int = RANK,
    alpha: float = ALPHA,
    dropout: float = DROPOUT,
    target_modules: str = TARGETS,
    epochs: int = EPOCHS,
    lr: float = LR,
    batch_size: int = BATCH,
    grad_accum: int = ACCUM,
    max_length: int = MAX_LEN,
    seed: int = SEED,
    eval_fraction: float = EVAL_FRACTION,
    warmup_ratio: float = WARMUP,
    weight_decay: float = WEIGHT_DECAY,
    max_grad_norm: float = MAX_GRAD_NORM,
    guide: str = GUIDE,
    guide_mix: float = GUIDE_MIX,
    guide_adversary: str = GUIDE_ADVERSARY,
    guide_folds: int = GUIDE_FOLDS,
    guide_from: str = GUIDE_FROM,
    save_every_steps: int = SAVE_EVERY,
    eval_every_steps: int = EVAL_EVERY,
    stop_after_steps: int = STOP_AFTER,
    resume: bool = RESUME,
    mixed_precision: str = MIXED,
    dtype: str = DTYPE,
    replace: bool = REPLACE,
    progress: bool = PROGRESS,
) -> None:
    """White-box KD: match the teacher model token by token on train-split prompts.

    LoRA or --full; prints the new model spec and registers it in run.yaml. Needs the
    teacher's weights (hf: or zoo: spec) and the student's vocabulary.
    """
    from bbi.app.cli.outputs import check_output_dir

    run = RunDir(run_dir)  # a missing run is one line before the heavy imports below
    check_output_dir(out, "--out")  # before training, which only writes at the end
    from distill.kd import distill_kd

    settings = _KD.updated(
        loss=loss, beta=beta, temperature=temperature, lambda_on_policy=lambda_on_policy,
        max_new_tokens=max_new_tokens,
        rank=rank, alpha=alpha, dropout=dropout, target_modules=_targets(target_modules),
        epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
        max_length=max_length, seed=seed, eval_fraction=eval_fraction,
        warmup_ratio=warmup_ratio, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
        guide=guide, guide_mix=guide_mix, guide_adversary=guide_adversary,
        guide_folds=guide_folds, guide_from=guide_from,
    )  # fmt: skip
    result = distill_kd(
        run,
        teacher_alias=teacher_alias,
        teacher_spec=teacher_spec,
        student=student,
        alias=alias,
        out=out,
        settings=settings,
        full=full,
        save_every_steps=save_every_steps,
        eval_every_steps=eval_every_steps,
        stop_after_steps=stop_after_steps,
        resume=resume,
        mixed_precision=mixed_precision,
        dtype=dtype,
        progress=progress,
        replace=replace,
    )
    _report(result)


@app.command("wda")
def wda(
    run_dir: Path = RUN_DIR,
    teacher_alias: str = TEACHER_ALIAS,
    teacher_spec: str = typer.Option(
        None,
        help="Teacher model spec (default: the teacher alias's spec in run.yaml).",
        parser=text_value,
    ),
    alias: str = typer.Option("student_wda", help="Alias of the WDA student."),
    out: Path = typer.Option(
        None, help="Output directory (default runs/NAME/models/ALIAS).", parser=path_value
    ),
    config: Path = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML with WDA settings (bbi/config.py WDASettings).",
        parser=path_value,
    ),  # fmt: skip
    phases: str = typer.Option(
        None, help="Comma-separated phases to run: align,detach,free,sft (default: all)."
    ),
    align_epochs: int = typer.Option(None, help="Epochs of teacher-on alignment."),
    detach_epochs: int = typer.Option(None, help="Epochs of detachment (teacher scale -> 0)."),
    free_epochs: int = typer.Option(None, help="Epochs per teacher-free LR-burst stage."),
    sft_epochs: int = typer.Option(None, help="Epochs of instruction SFT."),
    masks: int = typer.Option(None, help="Wave masks per head."),
    top_k: int = typer.Option(None, help="Masks routed per chunk (real sparse top-k)."),
    energy_weight: float = typer.Option(None, help="Residual-energy loss weight in alignment."),
    kl_weight: float = typer.Option(None, help="Optional logit KL to the teacher (off: 0)."),
    lr: float = LR,
    batch_size: int = BATCH,
    max_length: int = MAX_LEN,
    seed: int = SEED,
    resume: bool = typer.Option(False, help="Continue from OUT's phase checkpoints."),
    stop_after_steps: int = STOP_AFTER,
    replace: bool = REPLACE,
    progress: bool = PROGRESS,
) -> None:
    """Wave-Density-Attention student: transplant the teacher, align, detach, train
    teacher-free, SFT; held-out CE per phase; prints the new model spec."""
    from bbi.config import WDASettings
    from bbi.runstore import read_yaml_mapping
    from distill.wda.trainer import distill_wda

    base = WDASettings.parse(
        read_yaml_mapping(config) if config else {}, str(config) if config else "config"
    )
    phase_list = [p.strip() for p in phases.split(",")] if phases is not None else None
    settings = base.updated(
        phases=phase_list, align_epochs=align_epochs, detach_epochs=detach_epochs,
        free_epochs=free_epochs, sft_epochs=sft_epochs, masks=masks, top_k=top_k,
        energy_weight=energy_weight, kl_weight=kl_weight, lr=lr, batch_size=batch_size,
        max_length=max_length, seed=seed,
    )  # fmt: skip
    rec = distill_wda(
        RunDir(run_dir),
        settings=settings,
        teacher_alias=teacher_alias,
        teacher_spec=teacher_spec,
        alias=alias,
        out=out,
        resume=resume,
        stop_after_steps=stop_after_steps,
        progress=progress,
        replace=replace,
    )
    if not rec["completed"]:
        typer.echo(f"stopped early; continue with --resume ({rec['out_dir']})", err=True)
        return
    for row in rec["phases"]:
        typer.echo(f"{row['phase']}: held-out CE {row['ce']:.4f} (PPL {row['ppl']:.1f})", err=True)
    typer.echo(rec["spec"])


# ---- bird / circuit: a method beside its controls, over seeds ------------------------
TASK_STUDENT = typer.Argument(
    ..., help="Student model spec to train (hf: or zoo:, e.g. zoo:student).", parser=text_value
)
TASK_TEACHER = typer.Option(
    None, help="Teacher model spec, tuned on the task first (default zoo:teacher).",
    parser=text_value,
)  # fmt: skip
TASK_RUN = typer.Option(
    None,
    "--run",
    help="Run directory to register the method's student in (bbi probe run answers it; "
    "the report shows its table beside its eps).",
    parser=path_value,
)
TASK_CONFIG = typer.Option(
    None, "--config", "-c", help="YAML with the method's settings (bbi/config.py).",
    parser=path_value,
)  # fmt: skip
SEEDS = typer.Option(
    None, help="Comma-separated seeds; each arm runs once per seed (default 0,1,2)."
)
CKA_WEIGHT = typer.Option(None, help="Weight of (1 - CKA) in the loss.")
CKA_BANK = typer.Option(None, help="Rows of earlier batches added to each CKA batch.")
CKA_UNBIASED = typer.Option(None, "--cka-unbiased/--cka-biased", help="CKA estimator.")


def _seeds(seeds: str | None) -> list[int] | None:
    if seeds is None:
        return None
    try:
        return [int(x) for x in seeds.split(",")]
    except ValueError:
        raise BbiError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None


def _task_settings(cls: Any, config: Path | None, **flags: Any) -> Any:
    from bbi.runstore import read_yaml_mapping

    base = cls.parse(read_yaml_mapping(config) if config else {}, str(config or "config"))
    return base.updated(**flags)


def _task_out(
    out: Path | None, run_dir: Path | None, alias: str, method: str, replace: bool = False
) -> tuple:
    from distill.experiment import check_out, default_out
    from distill.method import check_new_alias

    run = RunDir(run_dir) if run_dir is not None else None
    if run is not None:
        run.check_files()  # a missing or broken run file fails before any training
        check_new_alias(run, alias)
    out = out or default_out(run, alias, method)
    created = not out.exists()
    out = check_out(out, f"distill-{method}", run=run, replace=replace)
    return run, out, created


def _print_table(record: dict) -> None:
    from distill.experiment import table_markdown

    typer.echo(table_markdown(record["behaviour"]), err=True)
    typer.echo(record["spec"])


@app.command("bird")
def bird(
    student: str = TASK_STUDENT,
    teacher: str = TASK_TEACHER,
    teacher_kind: str = typer.Option(
        None, help="causal (a generative teacher) or classifier (a safety classifier)."
    ),
    teacher_layer: str = typer.Option(None, help="Guiding layer name, or auto (default)."),
    student_layer: str = typer.Option(None, help="Guided layer name, or auto (default)."),
    pool: str = typer.Option(None, help="Prompt pooling: last token or mean (default last)."),
    run_dir: Path = TASK_RUN,
    alias: str = typer.Option("student_bird", help="Alias of the BIRD student in --run."),
    out: Path = typer.Option(
        None,
        help="Output dir (default runs/NAME/models/ALIAS, or distilled/bird).",
        parser=path_value,
    ),  # fmt: skip
    config: Path = TASK_CONFIG,
    seeds: str = SEEDS,
    epochs: int = EPOCHS,
    lr: float = LR,
    batch_size: int = BATCH,
    task_weight: float = typer.Option(None, help="Weight of the student's task CE."),
    cka_weight: float = CKA_WEIGHT,
    cka_bank: int = CKA_BANK,
    cka_unbiased: bool = CKA_UNBIASED,
    diagnose: bool = typer.Option(
        False,
        "--diagnose",
        help="Print the layer scan and teacher-selection diagnostics; no training.",
    ),
    replace: bool = REPLACE,
    progress: bool = PROGRESS,
) -> None:
    """BIRD: the student's own safety data + (1 - CKA) to an aligned teacher's layer,
    against no training and task-only training, on held-out refusal and over-refusal.

    Prints the table (mean over seeds with CIs) and the BIRD student's spec.
    """
    import json

    from bbi.config import BirdSettings
    from distill.bird import distill_bird
    from probes import safety_behaviour, safety_groups

    settings = _task_settings(
        BirdSettings, config, teacher=teacher, teacher_kind=teacher_kind,
        teacher_layer=teacher_layer, student_layer=student_layer, pool=pool,
        seeds=_seeds(seeds), epochs=epochs, lr=lr, batch_size=batch_size,
        task_weight=task_weight, cka_weight=cka_weight, cka_bank=cka_bank,
        cka_unbiased=cka_unbiased,
    )  # fmt: skip
    run, out, created = _task_out(out, run_dir, alias, "bird", replace)
    # A new output is removed if the command fails before the tuned teacher is saved.
    with removed_on_error(out, created, unless=out / "teacher"):
        record = distill_bird(
            student, settings, out, behaviour=safety_behaviour, groups=safety_groups(), run=run,
            alias=alias, diagnose_only=diagnose, progress=progress,
        )  # fmt: skip
    if diagnose:
        typer.echo(json.dumps({k: record[k] for k in ("layers", "diagnostics")}, indent=2))
        return
    _print_table(record)


@app.command("circuit")
def circuit(
    student: str = TASK_STUDENT,
    teacher: str = TASK_TEACHER,
    run_dir: Path = TASK_RUN,
    alias: str = typer.Option("student_circuit", help="Alias of the circuit student in --run."),
    out: Path = typer.Option(
        None,
        help="Output dir (default runs/NAME/models/ALIAS, or distilled/circuit).",
        parser=path_value,
    ),  # fmt: skip
    config: Path = TASK_CONFIG,
    seeds: str = SEEDS,
    heads_fraction: float = typer.Option(None, help="Share of student heads in the circuit."),
    score: str = typer.Option(None, help="Head score for ablations: accuracy or logprob."),
    epochs: int = EPOCHS,
    lr: float = LR,
    batch_size: int = BATCH,
    cka_weight: float = CKA_WEIGHT,
    cka_bank: int = CKA_BANK,
    cka_unbiased: bool = CKA_UNBIASED,
    replace: bool = REPLACE,
    progress: bool = PROGRESS,
) -> None:
    """Circuit distillation on entity tracking: matched-head CKA on the student's
    circuit heads, against CE only and a random circuit; held-out accuracy,
    circuit-only accuracy and faithfulness.

    Prints the table (mean over seeds with CIs) and the circuit student's spec.
    """
    from bbi.config import CircuitSettings
    from distill.circuit import distill_circuit

    settings = _task_settings(
        CircuitSettings, config, teacher=teacher, seeds=_seeds(seeds),
        heads_fraction=heads_fraction, score=score, epochs=epochs, lr=lr,
        batch_size=batch_size, cka_weight=cka_weight, cka_bank=cka_bank,
        cka_unbiased=cka_unbiased,
    )  # fmt: skip
    run, out, created = _task_out(out, run_dir, alias, "circuit", replace)
    with removed_on_error(out, created, unless=out / "teacher"):
        record = distill_circuit(student, settings, out, run=run, alias=alias, progress=progress)
    _print_table(record)
