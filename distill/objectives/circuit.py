"""Circuit distillation (seed 003): CE on the teacher's answers + matched-head CKA.

Loss per batch, at the final prompt token (the answer is the next token)::

    L = CE(student logits, teacher label) + lambda * sum_{(s, t) matched} (1 - CKA(a_s, a_t))

with a_s, a_t the per-head attention outputs before the output projection
(``distill.heads``) of a student head and the teacher head it was matched to, over the
batch plus ``bank`` rows of earlier batches (``distill.cka.FeatureBank``); with
``positions="all"`` a row per prompt token instead (where the context's pairs are built). Which student
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


def position_rows(batch: dict[str, torch.Tensor]) -> tuple[int, torch.Tensor]:
    """(width, [B, width] mask) of the columns that hold a prompt token for both models,
    right-aligned (batches are left-padded): the rows of an every-position CKA. Column j
    from the right is the same token for both only when they tokenize the prompt alike,
    which ``distill_circuit`` checks before it uses this."""
    w = min(batch["attention_mask"].size(1), batch["t_attention_mask"].size(1))
    both = batch["attention_mask"][:, -w:].bool() & batch["t_attention_mask"][:, -w:].bool()
    return w, both


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
        positions: str = "final",
    ):
        super().__init__(teacher, bank, unbiased)
        self.pairs = [(tuple(s), tuple(t)) for s, t in pairs]
        self.weight = weight
        self.positions = positions

    def identity(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "pairs": [[list(s), list(t)] for s, t in self.pairs],
            "weight": self.weight,
            "bank": self.bank.size,
            "unbiased": self.unbiased,
        }
        return out if self.positions == "final" else {**out, "positions": self.positions}

    def token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        every = self.positions == "all"
        with HeadTap(model) as tap:
            tap.capture, tap.every_position = {s for s, _ in self.pairs}, every
            logits = final_logits(model, batch["input_ids"], batch["attention_mask"])
        ce = F.cross_entropy(logits, batch["label"], reduction="none")
        if not self.weight or not self.pairs:
            return ce, torch.ones_like(ce)
        with torch.no_grad(), HeadTap(self.teacher) as ttap:
            ttap.capture, ttap.every_position = {t for _, t in self.pairs}, every
            self.teacher(input_ids=batch["t_input_ids"], attention_mask=batch["t_attention_mask"])
        rows = position_rows(batch) if every else None
        term = sum(
            1 - self.cka(i, *self._features(tap.captured[s], ttap.captured[t], rows))
            for i, (s, t) in enumerate(self.pairs)
        )
        return ce + self.weight * term, torch.ones_like(ce)

    @staticmethod
    def _features(
        xs: torch.Tensor, xt: torch.Tensor, rows: tuple[int, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final-token rows [B, d], or (``rows``) every shared prompt position [N, d]."""
        if rows is None:
            return xs.float(), xt.float()
        w, mask = rows
        return xs[:, -w:][mask].float(), xt[:, -w:][mask].float()


__all__ = ["CircuitCKA", "FinalTokenCE", "final_logits", "position_rows"]
