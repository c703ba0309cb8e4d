"""BIRD (seed 002): the student's own task loss + (1 - CKA) to a frozen teacher's layer.

Per batch of the student's data (prompt + target response)::

    L = task_weight * CE(response tokens) + cka_weight * (1 - CKA(u, v))

u = the teacher's *guiding* layer, v = the student's *guided* layer, both read by forward
hooks on modules named like ``model.layers.3`` and pooled over the prompt (``last``: the
final prompt token, where the decision to refuse or answer is made; ``mean``: the mean
over prompt tokens). Pooling stops at the prompt so the target response, which spells out
the label, never enters the features. CKA is taken over the batch plus ``bank`` rows of
earlier batches (``distill.cka.FeatureBank``): the paper's batch 128 on a CPU budget.
The teacher may be a causal LM or a sequence classifier; it reads the prompt in its own
tokenization (``t_input_ids``, left-padded). Held-out eval reports the task CE.
"""

from __future__ import annotations

from typing import Any

import torch

from distill.data import IGNORE_INDEX
from distill.objectives import FrozenTeacherCKA
from distill.objectives.sft import token_losses as sft_token_losses

POOLS = ("last", "mean")


def module_named(model: Any, name: str) -> Any:
    """The submodule ``name`` of a (possibly wrapped) model; unknown names list the layers."""
    from accelerate.utils import extract_model_from_parallel

    from bbi.errors import BbiError

    inner = extract_model_from_parallel(model)
    modules = dict(inner.named_modules())
    if name not in modules:
        layers = [n for n in modules if n.count(".") == 2 and ".layers." in n]
        raise BbiError(f"no layer named {name!r} (layers: {', '.join(layers[:4])}, ...)")
    return modules[name]


class LayerTap:
    """Forward hook keeping a module's output hidden states ([B, S, D])."""

    def __init__(self, model: Any, name: str):
        self.module = module_named(model, name)
        self.value: torch.Tensor | None = None

    def __enter__(self) -> LayerTap:
        def hook(_m: Any, _args: Any, out: Any) -> None:
            self.value = out[0] if isinstance(out, tuple) else out

        self.handle = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


def pool(hidden: torch.Tensor, mask: torch.Tensor, last: torch.Tensor, how: str) -> torch.Tensor:
    """[B, D] prompt features: the row at index ``last`` per example, or the mean over
    positions where ``mask`` (the prompt tokens) is 1."""
    if how == "last":
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last].float()
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return ((hidden * m).sum(1) / m.sum(1).clamp_min(1)).float()


def student_prompt_span(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of the last prompt token, prompt mask) of right-padded prompt+response rows."""
    trained = batch["labels"] != IGNORE_INDEX
    first = trained.float().argmax(dim=1)  # the first response token
    last = (first - 1).clamp_min(0)
    cols = torch.arange(trained.size(1), device=trained.device)[None, :]
    return last, (cols < first[:, None]) & batch["attention_mask"].bool()


def teacher_features(
    teacher: Any, layer: str, ids: torch.Tensor, mask: torch.Tensor, how: str
) -> torch.Tensor:
    """Pooled prompt features of a frozen teacher (left-padded prompts: last column)."""
    with torch.no_grad(), LayerTap(teacher, layer) as tap:
        teacher(input_ids=ids, attention_mask=mask)
    last = torch.full((ids.size(0),), ids.size(1) - 1, device=ids.device)
    return pool(tap.value, mask, last, how)


def student_features(
    model: Any, layer: str, batch: dict[str, torch.Tensor], how: str
) -> torch.Tensor:
    """Pooled prompt features of the student on a prompt+response batch (with grad)."""
    with LayerTap(model, layer) as tap:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    last, pmask = student_prompt_span(batch)
    return pool(tap.value, pmask, last, how)


class Bird(FrozenTeacherCKA):
    """``task_weight`` x CE on the target response + ``cka_weight`` x (1 - CKA)."""

    name = "bird"

    def __init__(
        self,
        teacher: Any,
        teacher_layer: str,
        student_layer: str,
        *,
        task_weight: float,
        cka_weight: float,
        bank: int = 0,
        unbiased: bool = False,
        how: str = "last",
    ):
        if how not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}")
        super().__init__(teacher, bank, unbiased)
        self.teacher_layer, self.student_layer = teacher_layer, student_layer
        self.task_weight, self.cka_weight = task_weight, cka_weight
        self.how = how

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "teacher_layer": self.teacher_layer,
            "student_layer": self.student_layer,
            "task_weight": self.task_weight,
            "cka_weight": self.cka_weight,
            "bank": self.bank.size,
            "unbiased": self.unbiased,
            "pool": self.how,
        }

    def token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.cka_weight:
            sums, counts = sft_token_losses(model, batch)
            return self.task_weight * sums, counts
        with LayerTap(model, self.student_layer) as tap:
            sums, counts = sft_token_losses(model, batch)
        last, pmask = student_prompt_span(batch)
        v = pool(tap.value, pmask, last, self.how)
        u = teacher_features(
            self.teacher, self.teacher_layer, batch["t_input_ids"], batch["t_attention_mask"],
            self.how,
        )  # fmt: skip
        cka = self.cka("layer", v, u)
        return self.task_weight * sums + self.cka_weight * (1 - cka) * counts, counts

    def eval_token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return sft_token_losses(model, batch)


__all__ = [
    "POOLS",
    "Bird",
    "LayerTap",
    "module_named",
    "pool",
    "student_features",
    "student_prompt_span",
    "teacher_features",
]
