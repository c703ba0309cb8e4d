"""A distillation method from outside bbi: SFT on the teacher's responses with label
smoothing (Szegedy et al. 2016), on bbi's shared loop. One module plus its entry point
(``bbi.distill_methods``) make ``bbi distill smooth_sft`` with its own options."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bbi.config import LoraSettings
from distill.methods import DistillMethod, MethodOutput, RunOptions


class SmoothSFTSettings(LoraSettings):
    """The LoRA/SFT settings plus the smoothing."""

    label_smoothing: float = Field(
        0.1, ge=0.0, lt=1.0, description="Probability mass spread uniformly over the vocabulary."
    )
    lr: float = Field(1e-3, gt=0.0, le=10.0)  # this method's own default


class SmoothOptions(RunOptions):
    alias: str = Field("student_smooth_sft", description="Alias of the distilled student.")


def _objective(smoothing: float) -> Any:
    import torch

    from distill.data import IGNORE_INDEX
    from distill.objectives import Objective, response_logits

    class SmoothedSFT(Objective):
        """Cross-entropy with label smoothing on the response tokens."""

        name = "smooth_sft"

        def identity(self) -> dict[str, Any]:
            return {"name": self.name, "label_smoothing": smoothing}

        def token_losses(self, model: Any, batch: dict) -> tuple[Any, Any]:
            logits, labels, trained = response_logits(model, batch)
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)),
                labels.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="none",
                label_smoothing=smoothing,
            ).view(labels.shape)
            return loss.sum(dim=1), trained.sum(dim=1)

    return SmoothedSFT()


def run(settings: SmoothSFTSettings, options: SmoothOptions) -> MethodOutput:
    from bbi.runstore import RunDir
    from distill.method import distil

    o = options
    result = distil(
        RunDir(o.run_dir), method="smooth_sft",
        make_objective=lambda tokenizer, base: _objective(settings.label_smoothing),
        hp=settings, teacher_alias=o.teacher_alias, student=o.student, alias=o.alias,
        out=o.out, full=o.full, save_every_steps=o.save_every_steps,
        eval_every_steps=o.eval_every_steps, stop_after_steps=o.stop_after_steps,
        resume=o.resume, mixed_precision=o.mixed_precision, dtype=o.dtype,
        progress=o.progress,
    )  # fmt: skip
    if not result.completed:
        return MethodOutput(notes=["stopped early; continue with --resume"], result=result)
    return MethodOutput(spec=result.spec, result=result)


METHOD = DistillMethod(
    name="smooth_sft",
    help="SFT on the teacher's responses with label smoothing (an example plug-in).",
    settings=SmoothSFTSettings,
    options=SmoothOptions,
    run=run,
)
