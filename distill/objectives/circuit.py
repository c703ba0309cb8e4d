"""Circuit distillation (seed 003): CE on the teacher's answers + matched-head CKA.

Loss per batch, at the final prompt token (the answer is the next token)::

    L = CE(student logits, teacher label) + lambda * sum_{(s, t) matched} (1 - CKA(a_s, a_t))

with a_s, a_t the per-head attention outputs before the output projection
(``distill.heads``) of a student head and the teacher head it was matched to, over the
batch plus ``bank`` rows of earlier batches (``distill.cka.FeatureBank``). Which student
weights learn is decided outside (``distill.heads.train_only_heads``). Held-out eval
reports plain CE.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from distill.heads import Head, HeadTap
from distill.objectives import FrozenTeacherCKA, Objective, accepts_logits_to_keep


def final_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, V] logits at the last column (batches are left-padded: the final token)."""
    kwargs = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    return out.logits[:, -1].float()


class FinalTokenCE(Objective):
    """Cross-entropy of the answer token after the prompt (teacher tuning, CE control)."""

    name = "final_token_ce"

    def token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = final_logits(model, batch["input_ids"], batch["attention_mask"])
        ce = F.cross_entropy(logits, batch["label"], reduction="none")
        return ce, torch.ones_like(ce)

    def eval_token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return FinalTokenCE.token_losses(self, model, batch)


class CircuitCKA(FrozenTeacherCKA, FinalTokenCE):
    """CE + ``weight`` x sum over matched (student head, teacher head) of (1 - CKA)."""

    name = "circuit_cka"

    def __init__(
        self,
        teacher: Any,
        pairs: list[tuple[Head, Head]],
        weight: float,
        bank: int = 0,
        unbiased: bool = False,
    ):
        super().__init__(teacher, bank, unbiased)
        self.pairs = [(tuple(s), tuple(t)) for s, t in pairs]
        self.weight = weight

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pairs": [[list(s), list(t)] for s, t in self.pairs],
            "weight": self.weight,
            "bank": self.bank.size,
            "unbiased": self.unbiased,
        }

    def token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with HeadTap(model) as tap:
            tap.capture = {s for s, _ in self.pairs}
            logits = final_logits(model, batch["input_ids"], batch["attention_mask"])
        ce = F.cross_entropy(logits, batch["label"], reduction="none")
        if not self.weight or not self.pairs:
            return ce, torch.ones_like(ce)
        with torch.no_grad(), HeadTap(self.teacher) as ttap:
            ttap.capture = {t for _, t in self.pairs}
            self.teacher(input_ids=batch["t_input_ids"], attention_mask=batch["t_attention_mask"])
        term = sum(
            1 - self.cka(i, tap.captured[s].float(), ttap.captured[t].float())
            for i, (s, t) in enumerate(self.pairs)
        )
        return ce + self.weight * term, torch.ones_like(ce)


__all__ = ["CircuitCKA", "FinalTokenCE", "final_logits"]
