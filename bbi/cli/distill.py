"""`bbi distill` commands: build students that close the gap to the teacher."""

from __future__ import annotations

from pathlib import Path

import typer

from bbi.errors import BbiError
from bbi.runstore import RunDir

app = typer.Typer(help="Distil students from the teacher's responses (LoRA).", no_args_is_help=True)


@app.command("lora")
def lora(
    run_dir: Path = typer.Argument(..., help="Run directory (runs/NAME) with teacher responses."),
    teacher_alias: str = typer.Option(None, help="Teacher alias (default: the run's teacher)."),
    student: str = typer.Option(
        None, help="Base model spec to fine-tune (default: the run's student in run.yaml)."
    ),
    alias: str = typer.Option("student_lora", help="Alias of the distilled student."),
    out: Path = typer.Option(None, help="Adapter directory (default runs/NAME/adapters/ALIAS)."),
    rank: int = typer.Option(16, help="LoRA rank r."),
    alpha: float = typer.Option(32.0, help="LoRA alpha (scale = alpha / rank)."),
    dropout: float = typer.Option(0.05, help="LoRA dropout."),
    target_modules: str = typer.Option(
        None,
        help="Comma-separated module names (default: q/k/v/o + MLP projections per architecture).",
    ),
    epochs: int = typer.Option(2, help="Passes over the train split."),
    lr: float = typer.Option(2e-4, help="Peak learning rate (linear warmup and decay)."),
    batch_size: int = typer.Option(16, help="Examples per micro-batch per process."),
    grad_accum: int = typer.Option(1, help="Micro-batches per optimizer step."),
    max_length: int = typer.Option(256, help="Max tokens of prompt + response."),
    seed: int = typer.Option(0, help="Seed for adapter init, data order, dropout, eval split."),
    eval_fraction: float = typer.Option(
        0.05, help="Fraction of TRAIN prompts held out for eval loss (test is never used)."
    ),
    warmup_ratio: float = typer.Option(0.03, help="Fraction of steps spent warming up."),
    save_every_steps: int = typer.Option(
        0, help="Also checkpoint every N optimizer steps (0: at each epoch end only)."
    ),
    stop_after_steps: int = typer.Option(
        None, help="Stop with a checkpoint after N optimizer steps in total; --resume later."
    ),
    resume: bool = typer.Option(False, help="Continue exactly from the adapter dir's checkpoint."),
    mixed_precision: str = typer.Option(
        None, help="no|fp16|bf16 (default: from `accelerate launch`/config, else no)."
    ),
    dtype: str = typer.Option(
        "float32", help="Base weights dtype: float32, bfloat16 or float16 (adapter stays fp32)."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """LoRA-distil the student on the teacher's train-split responses; print the new spec.

    Multi-GPU: `accelerate launch --multi_gpu $(which bbi) distill lora runs/NAME`.
    """
    from distill.lora import distill_lora

    if mixed_precision is not None and mixed_precision not in ("no", "fp16", "bf16"):
        raise BbiError(f"--mixed-precision must be no, fp16 or bf16 (got {mixed_precision!r})")
    targets = [t.strip() for t in target_modules.split(",")] if target_modules else None
    if targets is not None and not all(targets):
        raise BbiError(f"--target-modules: empty module name in {target_modules!r}")
    result = distill_lora(
        RunDir(run_dir),
        teacher_alias=teacher_alias,
        student=student,
        alias=alias,
        out=out,
        rank=rank,
        alpha=alpha,
        dropout=dropout,
        target_modules=targets,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        seed=seed,
        eval_fraction=eval_fraction,
        warmup_ratio=warmup_ratio,
        save_every_steps=save_every_steps,
        stop_after_steps=stop_after_steps,
        resume=resume,
        mixed_precision=mixed_precision,
        dtype=dtype,
        progress=progress,
    )
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    if result.completed:
        ev = result.record["eval_loss_per_epoch"]
        if ev:
            typer.echo(f"eval loss {ev[0]:.4f} (base) -> {ev[-1]:.4f}", err=True)
        typer.echo(result.spec)
    else:
        typer.echo(f"stopped early; continue with --resume ({result.adapter_dir})", err=True)
