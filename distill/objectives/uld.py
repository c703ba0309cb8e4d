"""Token-level KD across tokenizers: Universal Logit Distillation (``--loss uld``).

Forward KL compares the two distributions token by token, so it needs one vocabulary.
ULD (Boizard et al. 2024, "Towards Cross-Tokenizer Distillation: the Universal Logit
Distillation Loss for LLMs") compares what does not depend on which token is which: the
Wasserstein-1 distance between the two next-token distributions under a uniform transport
cost has the closed form ``sum_i |sort(p_s)_i - sort(p_t)_i|`` (both sorted in decreasing
order, the smaller vocabulary padded with zeros). The student's loss per response token is
its cross-entropy on the teacher's text plus ``uld_weight`` times that distance.

Alignment (the paper's): the same (prompt, response) pair is tokenized by each model's own
tokenizer and format; the i-th response token of the student is paired with the i-th of
the teacher, up to the shorter of the two (the student's extra tokens get the
cross-entropy only). The teacher runs on its own token ids, so any two causal LMs pair.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F

from bbi.config import KDSettings
from bbi.errors import BbiError
from distill.data import IGNORE_INDEX, Collator, DatasetView, encode_pair
from distill.objectives import Objective, response_logits


def uld_distance(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-position sorted-probability L1 distance (ULD), any two vocabulary sizes."""
    p_s = F.softmax(student_logits.float(), dim=-1).sort(dim=-1, descending=True).values
    p_t = F.softmax(teacher_logits.float(), dim=-1).sort(dim=-1, descending=True).values
    width = max(p_s.size(-1), p_t.size(-1))
    p_s = F.pad(p_s, (0, width - p_s.size(-1)))
    p_t = F.pad(p_t, (0, width - p_t.size(-1)))
    return (p_s - p_t).abs().sum(-1)


class TeacherTokensDataset(DatasetView):
    """A dataset's examples plus the same pair in the teacher's tokenization
    (``teacher_input_ids`` / ``teacher_labels``); same order and fingerprint."""

    def __init__(self, dataset: Any, teacher_tokenizer: Any, max_length: int):
        super().__init__(dataset)
        self.teacher: list[dict[str, list[int]]] = []
        eos = teacher_tokenizer.eos_token_id or 0
        for prompt, response in dataset.texts:
            enc = encode_pair(teacher_tokenizer, prompt, response, max_length)
            self.teacher.append(enc or {"input_ids": [eos], "labels": [IGNORE_INDEX]})

    def __getitem__(self, i: int) -> dict[str, Any]:
        t = self.teacher[i]
        return {
            **self.dataset[i],
            "teacher_input_ids": t["input_ids"],
            "teacher_labels": t["labels"],
        }


class TwoTokenizerCollator(Collator):
    """The student's batch plus the teacher's, padded with the teacher's pad id."""

    def __init__(self, pad_id: int, teacher_pad_id: int):
        super().__init__(pad_id)
        self.teacher = Collator(teacher_pad_id)

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out = super().__call__(batch)
        t = self.teacher(
            [{"input_ids": ex["teacher_input_ids"], "labels": ex["teacher_labels"]} for ex in batch]
        )
        return {**out, **{f"teacher_{k}": v for k, v in t.items()}}


class ULD(Objective):
    """Cross-entropy on the teacher's text plus ``uld_weight`` x ULD to the teacher."""

    name = "kd_uld"

    def __init__(
        self,
        teacher: Any,
        teacher_tokenizer: Any,
        settings: KDSettings,
        *,
        teacher_spec: str = "",
        teacher_fingerprint: str = "",
    ):
        if settings.lambda_on_policy > 0:
            raise BbiError("--loss uld trains on the teacher's text; use --lambda-on-policy 0")
        self.teacher = teacher.eval().requires_grad_(False)
        self.teacher_tokenizer = teacher_tokenizer
        self.weight, self.temperature = settings.uld_weight, settings.temperature
        self.max_length = settings.max_length
        self.teacher_spec, self.teacher_fingerprint = teacher_spec, teacher_fingerprint
        self._autocast: Any = contextlib.nullcontext

    def setup(self, accelerator: Any) -> None:
        self.teacher.to(accelerator.device)
        self._autocast = accelerator.autocast

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "teacher": self.teacher_spec,
            "teacher_fingerprint": self.teacher_fingerprint,
        }

    def datasets(self, train_ds: Any, eval_ds: Any, accelerator: Any) -> tuple[Any, Any]:
        # The teacher's format may be longer (a chat template): give it room to match.
        n = 2 * self.max_length
        return (
            TeacherTokensDataset(train_ds, self.teacher_tokenizer, n),
            TeacherTokensDataset(eval_ds, self.teacher_tokenizer, n),
        )

    def collator(self, pad_id: int) -> Any:
        t_pad = self.teacher_tokenizer.pad_token_id
        if t_pad is None:
            t_pad = self.teacher_tokenizer.eos_token_id or 0
        return TwoTokenizerCollator(pad_id, t_pad)

    def token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s_logits, labels, s_mask = response_logits(model, batch)
        t_batch = {
            "input_ids": batch["teacher_input_ids"],
            "attention_mask": batch["teacher_attention_mask"],
            "labels": batch["teacher_labels"],
        }
        with torch.no_grad(), self._autocast():
            t_logits, _, t_mask = response_logits(self.teacher, t_batch)
        ce = F.cross_entropy(
            s_logits.float().transpose(1, 2), labels.clamp(min=0), reduction="none"
        )
        per_token = torch.where(s_mask, ce, torch.zeros_like(ce))
        tau = self.temperature
        sums = []
        for i in range(s_logits.size(0)):
            s_rows, t_rows = s_logits[i][s_mask[i]], t_logits[i][t_mask[i]]
            n = min(len(s_rows), len(t_rows))
            dist = uld_distance(s_rows[:n] / tau, t_rows[:n] / tau) if n else s_rows.new_zeros(0)
            sums.append(per_token[i].sum() + self.weight * dist.float().sum())
        return torch.stack(sums), s_mask.sum(dim=1)


__all__ = ["ULD", "TeacherTokensDataset", "TwoTokenizerCollator", "uld_distance"]
