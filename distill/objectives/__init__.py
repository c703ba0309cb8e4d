"""Objectives: what a distiller minimises. The loop (``distill.trainer``) is shared.

An objective turns a batch into per-example summed token losses and their token counts
(``token_losses``); the loop averages them over a micro-batch for the gradient and over
the held-out set for eval. It may rewrite a batch before the step (``prepare_batch``,
e.g. on-policy sampling), hold frozen models (a teacher; ``setup`` places them on the
loop's device), and report what a resumed run must match (``identity``). A new
distillation method is one objective file, not a new loop.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from distill.data import IGNORE_INDEX


@dataclass(frozen=True)
class StepContext:
    """Where the loop is when it asks for a batch: enough to seed per-step randomness."""

    seed: int
    epoch: int
    micro: int  # micro-batch index within the epoch (the same on every process)
    process_index: int
    step: int = 0  # optimizer steps completed so far (for schedules inside an objective)
    total_steps: int = 1


class Objective:
    """Base objective: override ``token_losses``; the other hooks default to no-ops."""

    name = "objective"

    def setup(self, accelerator: Any) -> None:
        """Place frozen helper models on the loop's device (called once, before training)."""

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be continued with this objective."""
        return {"name": self.name}

    def prepare_batch(
        self, model: Any, batch: dict[str, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        """The batch the step trains on (default: as loaded)."""
        return batch

    def token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example summed loss over trained tokens, and the per-example token counts."""
        raise NotImplementedError

    def eval_token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the held-out eval reports (default: the training loss itself; an objective
        with auxiliary terms may report plain cross-entropy instead)."""
        return self.token_losses(model, batch)

    def step_metrics(self) -> dict[str, Any]:
        """Extra numbers for the step's metrics line (reset after each call)."""
        return {}


def response_logits(
    model: Any, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, next-token labels, trained mask) from the first trained position on.

    Logits are only computed from the first position any example of the batch trains on
    (``logits_to_keep``, where the model supports it): the output layer over the prompt
    prefix is wasted work, and with large vocabularies it is a large share of the step.
    Position t of the result predicts label t.
    """
    labels = batch["labels"][:, 1:]
    trained = labels != IGNORE_INDEX
    cols = trained.any(dim=0).nonzero()
    start = int(cols[0]) if len(cols) else 0
    kwargs: dict[str, Any] = {}
    if accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = torch.arange(
            start, labels.size(1), device=batch["input_ids"].device
        )
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    logits = out.logits if kwargs else out.logits[:, start : labels.size(1)]
    labels = labels[:, start:]
    return logits, labels, labels != IGNORE_INDEX


_ACCEPTS: dict[type, bool] = {}


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the underlying causal LM's forward takes ``logits_to_keep``."""
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    key = type(inner)
    if key not in _ACCEPTS:
        try:
            _ACCEPTS[key] = "logits_to_keep" in inspect.signature(inner.forward).parameters
        except (TypeError, ValueError):
            _ACCEPTS[key] = False
    return _ACCEPTS[key]


class FrozenTeacherCKA(Objective):
    """Base of the CKA objectives (BIRD, circuit): a frozen teacher placed on the loop's
    device, a feature bank for the CKA batch (``distill.cka.FeatureBank``), the estimator
    choice, and the mean CKA of each step on its metrics line."""

    def __init__(self, teacher: Any, bank: int = 0, unbiased: bool = False):
        from distill.cka import FeatureBank

        self.teacher = teacher.eval().requires_grad_(False)
        self.bank = FeatureBank(bank)
        self.unbiased = unbiased
        self._cka: list[float] = []

    def setup(self, accelerator: Any) -> None:
        self.teacher.to(accelerator.device)

    def cka(self, key: Any, x_student: torch.Tensor, x_teacher: torch.Tensor) -> torch.Tensor:
        """CKA of banked student/teacher features under ``key`` (logged for the step)."""
        from distill.cka import linear_cka

        value = linear_cka(
            self.bank.extend(("student", key), x_student),
            self.bank.extend(("teacher", key), x_teacher),
            unbiased=self.unbiased,
        )
        self._cka.append(float(value.detach()))
        return value

    def step_metrics(self) -> dict[str, Any]:
        if not self._cka:
            return {}
        out = {"cka": sum(self._cka) / len(self._cka)}
        self._cka.clear()
        return out


__all__ = [
    "FrozenTeacherCKA",
    "Objective",
    "StepContext",
    "accepts_logits_to_keep",
    "response_logits",
]
