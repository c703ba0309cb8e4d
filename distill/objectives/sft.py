"""Black-box sequence-level distillation: cross-entropy on the teacher's response tokens.

Only the teacher's text is needed (any backend, even imported generations), so this is
the objective that works for every teacher; the prompt tokens carry no loss.
"""

from __future__ import annotations

from typing import Any

import torch

from distill.data import IGNORE_INDEX
from distill.objectives import Objective, response_logits


def token_losses(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example summed next-token loss over response tokens, and their counts."""
    logits, labels, trained = response_logits(model, batch)
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(labels.shape)
    return loss.sum(dim=1), trained.sum(dim=1)


class SFT(Objective):
    """Cross-entropy on response tokens (the LoRA distiller's objective)."""

    name = "sft"

    def token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return token_losses(model, batch)


__all__ = ["SFT", "token_losses"]
