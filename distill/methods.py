"""The distillation-method registry: ``bbi distill <method>`` is generated from it.

A method declares its name, a one-line help, its settings model (``bbi.config``: the
hyperparameters, every field one command-line option and one ``--config`` key), its run
options model (where the data comes from and where the student goes: run directory,
alias, output, resume, ...) and its run function ``run(settings, options, **needs)``. A
plug-in method is one module with a :class:`DistillMethod` plus its entry point in the
group ``bbi.distill_methods``; the application layer builds its command, help included.

Naming, one story: a method's *name* is its command and its ``bbi run`` key (``lora``,
``kd``, ``wda``, ``bird``, ``circuit``); the record's ``method`` is the objective it trains
(``lora`` trains the SFT objective on the teacher's responses, so its record says
``sft``; ``kd`` says ``kd``), and ``finetune`` says how the weights train (``lora``: an
adapter, ``full``: every weight). Three different questions, not three names for one.

``needs`` names what only the application layer can give (it wires the sibling
packages together, distillation imports none of them): ``sample_weights`` (attack-guided
data from ``discriminators.leak``, when the settings ask for a guide), ``corpus_pairs``
(the teacher's answers to ``probes``' training-corpus prompts, ``--corpus-prompts``) and
``behaviour`` / ``groups`` (``probes``' safety behaviour for BIRD's table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bbi.config import (
    BirdSettings,
    CircuitSettings,
    KDSettings,
    LoraSettings,
    Section,
    WDASettings,
)
from bbi.registry import Registry


@dataclass
class MethodOutput:
    """What a command prints: notes on stderr, then ``stdout`` (default: the new
    student's spec, for scripts)."""

    spec: str | None = None
    notes: list[str] = field(default_factory=list)
    stdout: str | None = None
    result: Any = None


@dataclass(frozen=True)
class DistillMethod:
    """One distillation method (see the module docstring)."""

    name: str
    help: str
    settings: type[Section]
    options: type[BaseModel]
    run: Callable[..., MethodOutput]
    doc: str = ""
    needs: tuple[str, ...] = ()


def _check(name: str, item: Any) -> None:
    if not isinstance(item, DistillMethod):
        raise TypeError(f"expected a distill.methods.DistillMethod, got {type(item).__name__}")
    if item.name != name:
        raise ValueError(f"registered as {name!r} but declares name {item.name!r}")
    if not (isinstance(item.settings, type) and issubclass(item.settings, Section)):
        raise TypeError("settings must be a bbi.config.Section subclass")
    if not (isinstance(item.options, type) and issubclass(item.options, BaseModel)):
        raise TypeError("options must be a pydantic model")
    if not callable(item.run):
        raise TypeError("run must be callable")
    if not item.help.strip() or "\n" in item.help.strip():
        raise ValueError("help must be one non-empty line")
    clash = set(item.settings.model_fields) & set(item.options.model_fields)
    if clash:
        raise ValueError(f"settings and options share fields {sorted(clash)}")


METHODS: Registry[DistillMethod] = Registry(
    "distillation method",
    "bbi.distill_methods",
    builtins={
        "lora": "distill.methods:LORA",
        "kd": "distill.methods:KD",
        "wda": "distill.methods:WDA",
        "bird": "distill.methods:BIRD",
        "circuit": "distill.methods:CIRCUIT",
    },
    check=_check,
)


def get_method(name: str) -> DistillMethod:
    """The method ``name`` (a BbiError lists the known ones)."""
    return METHODS.get(name)


# ---- run options ---------------------------------------------------------------------


def _arg(description: str) -> Any:
    return Field(..., description=description, json_schema_extra={"argument": True})


REPLACE_HELP = (
    "Let --out replace a directory bbi did not write, or another kind of bbi output "
    "(the old one is kept as OUT.replaced-<time>)."
)


class Options(BaseModel):
    """Base of the run options: unknown keys refused; ``replace`` (``--replace``) lets
    the output replace a directory that is not this method's own earlier output (bbi
    keeps the old one as ``OUT.replaced-<time>``; without it such a directory is refused)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    replace: bool = Field(False, description=REPLACE_HELP)


class RunOptions(Options):
    """A method trained on a run's teacher responses (``bbi distill lora RUN``)."""

    run_dir: Path = _arg("Run directory (runs/NAME) with teacher responses.")
    teacher_alias: str | None = Field(
        None, description="Teacher alias (default: the run's teacher)."
    )
    student: str | None = Field(
        None, description="Base model spec to fine-tune (default: the run's student in run.yaml)."
    )
    alias: str = Field("student_lora", description="Alias of the distilled student.")
    out: Path | None = Field(
        None,
        description="Output directory (default runs/NAME/adapters/ALIAS, or models/ALIAS with --full).",
    )
    full: bool = Field(
        False, description="Fine-tune every weight instead of a LoRA adapter (saved as hf:OUT)."
    )
    save_every_steps: int = Field(
        0, description="Also checkpoint every N optimizer steps (0: at each epoch end only)."
    )
    eval_every_steps: int = Field(
        0, description="Also evaluate every N optimizer steps (0: per epoch)."
    )
    stop_after_steps: int | None = Field(
        None, description="Stop with a checkpoint after N optimizer steps in total; --resume later."
    )
    resume: bool = Field(False, description="Continue exactly from the output dir's checkpoint.")
    mixed_precision: str | None = Field(
        None, description="no|fp16|bf16 (default: from `accelerate launch`/config, else no)."
    )
    dtype: str = Field(
        "float32",
        description="Base weights dtype: float32, bfloat16 or float16 (a LoRA adapter stays fp32).",
    )
    progress: bool = Field(True, description="Show progress bars.")


class KDOptions(RunOptions):
    """``bbi distill kd``: the run options plus the teacher's weights."""

    teacher_spec: str | None = Field(
        None,
        description="Teacher model spec (default: the teacher alias's spec in run.yaml); with "
        "--teacher-logits cache also openai:URL#MODEL, a served teacher (vLLM, bbi serve).",
    )
    alias: str = Field("student_kd", description="Alias of the distilled student.")


class WDAOptions(Options):
    """``bbi distill wda RUN``."""

    run_dir: Path = _arg("Run directory (runs/NAME) with teacher responses.")
    teacher_alias: str | None = Field(
        None, description="Teacher alias (default: the run's teacher)."
    )
    teacher_spec: str | None = Field(
        None, description="Teacher model spec (default: the teacher alias's spec in run.yaml)."
    )
    alias: str = Field("student_wda", description="Alias of the WDA student.")
    out: Path | None = Field(None, description="Output directory (default runs/NAME/models/ALIAS).")
    resume: bool = Field(False, description="Continue from OUT's phase checkpoints.")
    stop_after_steps: int | None = Field(
        None, description="Stop with a checkpoint after N optimizer steps in total; --resume later."
    )
    progress: bool = Field(True, description="Show progress bars.")


class TaskOptions(Options):
    """A method beside its controls on a generated task (``bbi distill circuit STUDENT``)."""

    student: str = _arg("Student model spec to train (hf: or zoo:, e.g. zoo:student).")
    run: Path | None = Field(
        None,
        description="Run directory to register the method's student in (bbi probe run answers "
        "it; the report shows its table beside its eps).",
    )
    alias: str = Field("student_circuit", description="Alias of the circuit student in --run.")
    out: Path | None = Field(
        None, description="Output dir (default runs/NAME/models/ALIAS, or distilled/circuit)."
    )
    progress: bool = Field(True, description="Show progress bars.")


class BirdOptions(TaskOptions):
    """``bbi distill bird STUDENT``."""

    alias: str = Field("student_bird", description="Alias of the BIRD student in --run.")
    out: Path | None = Field(
        None, description="Output dir (default runs/NAME/models/ALIAS, or distilled/bird)."
    )
    diagnose: bool = Field(
        False, description="Print the layer scan and teacher-selection diagnostics; no training."
    )


# ---- run functions -------------------------------------------------------------------


def _loop_output(result: Any) -> MethodOutput:
    """The spec on stdout, the eval loss change on stderr (main process only)."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return MethodOutput(result=result)
    if not result.completed:
        return MethodOutput(
            notes=[f"stopped early; continue with --resume ({result.out_dir})"], result=result
        )
    ev = result.record["eval_loss_per_epoch"]
    notes = [f"eval loss {ev[0]:.4f} (base) -> {ev[-1]:.4f}"] if ev else []
    return MethodOutput(spec=result.spec, notes=notes, result=result)


def _loop_kwargs(o: RunOptions) -> dict[str, Any]:
    return dict(
        teacher_alias=o.teacher_alias, student=o.student, alias=o.alias, out=o.out, full=o.full,
        save_every_steps=o.save_every_steps, eval_every_steps=o.eval_every_steps,
        stop_after_steps=o.stop_after_steps, resume=o.resume,
        mixed_precision=o.mixed_precision, dtype=o.dtype, progress=o.progress,
        replace=o.replace,
    )  # fmt: skip


def run_lora(
    settings: LoraSettings, options: RunOptions, sample_weights: Any = None
) -> MethodOutput:
    """``bbi distill lora``: SFT on the teacher's responses (LoRA or full)."""
    from bbi.runstore import RunDir
    from distill.lora import distill_lora

    result = distill_lora(
        RunDir(options.run_dir), settings=settings, sample_weights=sample_weights,
        **_loop_kwargs(options),
    )  # fmt: skip
    return _loop_output(result)


def run_kd(
    settings: KDSettings,
    options: KDOptions,
    sample_weights: Any = None,
    corpus_pairs: Any = None,
) -> MethodOutput:
    """``bbi distill kd``: token-level KD from the teacher's weights."""
    from bbi.runstore import RunDir
    from distill.kd import distill_kd

    result = distill_kd(
        RunDir(options.run_dir), settings=settings, teacher_spec=options.teacher_spec,
        sample_weights=sample_weights, extra_pairs=corpus_pairs, **_loop_kwargs(options),
    )  # fmt: skip
    return _loop_output(result)


def run_wda(settings: WDASettings, options: WDAOptions) -> MethodOutput:
    """``bbi distill wda``: the four phases; held-out CE per phase."""
    from bbi.runstore import RunDir
    from distill.wda.trainer import distill_wda

    rec = distill_wda(
        RunDir(options.run_dir), settings=settings, teacher_alias=options.teacher_alias,
        teacher_spec=options.teacher_spec, alias=options.alias, out=options.out,
        resume=options.resume, stop_after_steps=options.stop_after_steps,
        progress=options.progress, replace=options.replace,
    )  # fmt: skip
    if not rec["completed"]:
        return MethodOutput(
            notes=[f"stopped early; continue with --resume ({rec['out_dir']})"], result=rec
        )
    notes = [
        f"{row['phase']}: held-out CE {row['ce']:.4f} (PPL {row['ppl']:.1f})"
        for row in rec["phases"]
    ]
    return MethodOutput(spec=rec["spec"], notes=notes, result=rec)


def _task_out(options: TaskOptions, method: str) -> tuple[Any, Path, bool]:
    """The run (if any), the checked and marked output directory, and whether this
    command created it. The run's files are read and the alias checked first: a damaged
    run.yaml, or an alias that names the run's own base student or teacher, fails before
    any training; the output must be new, empty or this method's own (``--replace``)."""
    from bbi.runstore import RunDir
    from distill.experiment import check_out, default_out
    from distill.method import check_new_alias

    run = RunDir(options.run) if options.run is not None else None
    if run is not None:
        run.check_files()  # a missing or broken run file fails before any training
        check_new_alias(run, options.alias)
    out = options.out or default_out(run, options.alias, method)
    created = not out.exists()
    out = check_out(out, f"distill-{method}", run=run, replace=options.replace)
    return run, out, created


def _table_output(record: dict) -> MethodOutput:
    from distill.experiment import table_markdown

    return MethodOutput(
        spec=record["spec"], notes=[table_markdown(record["behaviour"])], result=record
    )


def run_bird(
    settings: BirdSettings, options: BirdOptions, behaviour: Any, groups: list[str]
) -> MethodOutput:
    """``bbi distill bird``: the table (mean over seeds with CIs) and the student's spec."""
    import json

    from bbi.fsafe import removed_on_error
    from distill.bird import distill_bird

    run, out, created = _task_out(options, "bird")
    # A new output is removed if the command fails before the tuned teacher is saved.
    with removed_on_error(out, created, unless=out / "teacher"):
        record = distill_bird(
            options.student, settings, out, behaviour=behaviour, groups=groups, run=run,
            alias=options.alias, diagnose_only=options.diagnose, progress=options.progress,
        )  # fmt: skip
    if options.diagnose:
        shown = {k: record[k] for k in ("layers", "diagnostics")}
        return MethodOutput(stdout=json.dumps(shown, indent=2), result=record)
    return _table_output(record)


def run_circuit(settings: CircuitSettings, options: TaskOptions) -> MethodOutput:
    """``bbi distill circuit``: the table (mean over seeds with CIs) and the student's spec."""
    from bbi.fsafe import removed_on_error
    from distill.circuit import distill_circuit

    run, out, created = _task_out(options, "circuit")
    with removed_on_error(out, created, unless=out / "teacher"):
        record = distill_circuit(
            options.student, settings, out, run=run, alias=options.alias,
            progress=options.progress,
        )  # fmt: skip
    return _table_output(record)


LORA = DistillMethod(
    name="lora",
    help="Fine-tune the student (LoRA, or --full) on the teacher's train-split responses.",
    settings=LoraSettings,
    options=RunOptions,
    run=run_lora,
    needs=("sample_weights",),
    doc="Prints the new model spec and registers it in run.yaml. Multi-GPU: "
    "`accelerate launch --multi_gpu $(which bbi) distill lora runs/NAME`.",
)
KD = DistillMethod(
    name="kd",
    help="White-box KD: match the teacher model token by token on train-split prompts.",
    settings=KDSettings,
    options=KDOptions,
    run=run_kd,
    needs=("sample_weights", "corpus_pairs"),
    doc="LoRA or --full; prints the new model spec and registers it in run.yaml. Needs the "
    "teacher's weights (hf: or zoo: spec) and the student's vocabulary, or, with "
    "--teacher-logits cache, a teacher served elsewhere (--teacher-spec openai:URL#MODEL of "
    "vLLM's server or `bbi serve`), which is never loaded.",
)
WDA = DistillMethod(
    name="wda",
    help="Wave-Density-Attention student: transplant the teacher, align, detach, train "
    "teacher-free, SFT.",
    settings=WDASettings,
    options=WDAOptions,
    run=run_wda,
    doc="Held-out CE per phase; prints the new model spec.",
)
BIRD = DistillMethod(
    name="bird",
    help="BIRD: the student's own safety data + (1 - CKA) to an aligned teacher's layer.",
    settings=BirdSettings,
    options=BirdOptions,
    run=run_bird,
    needs=("behaviour", "groups"),
    doc="Against no training and task-only training, on held-out refusal and "
    "over-refusal. Prints the table (mean over seeds with CIs) and the BIRD student's spec.",
)
CIRCUIT = DistillMethod(
    name="circuit",
    help="Circuit distillation on entity tracking: matched-head CKA on the student's "
    "circuit heads.",
    settings=CircuitSettings,
    options=TaskOptions,
    run=run_circuit,
    doc="Against CE only and a random circuit; held-out accuracy, circuit-only accuracy and "
    "faithfulness. Prints the table (mean over seeds with CIs) and the circuit student's spec.",
)


__all__ = [
    "METHODS",
    "BirdOptions",
    "DistillMethod",
    "KDOptions",
    "MethodOutput",
    "Options",
    "REPLACE_HELP",
    "RunOptions",
    "TaskOptions",
    "WDAOptions",
    "get_method",
    "run_bird",
    "run_circuit",
    "run_kd",
    "run_lora",
    "run_wda",
]
