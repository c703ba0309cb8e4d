"""Cross-entropy plus the residual-energy behavioural target (WDA alignment, seed 000).

The student should not only predict the next token but move its residual stream the way
the teacher does. Per layer l and position t the *residual energy* is the RMS of what the
layer adds to the stream,

    e_l(t) = sqrt(mean_d (h_{l+1}(t) - h_l(t))^2),

with h_l the stream entering layer l and h_L the stream after the last layer *before* the
final norm (HF's last ``hidden_states`` entry is after the norm, which would skew the last
layer's energy). The loss is the depth-weighted squared difference of the two models'
energies, weights w_l = 1/(l + 1) normalised to sum 1, averaged over real (non-padded)
positions:

    L = CE + w_E * mean_t sum_l w_l (e_l^S(t) - e_l^T(t))^2.

A logit KL to the teacher is available only as the named option ``kl_weight`` (off by
default; the public reference silently added one). ``energy_weight`` can follow a schedule
(a callable of the step fraction) so the detachment phase anneals it to 0. Held-out eval
reports plain cross-entropy (``eval_token_losses``), the number the phases are compared on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from distill.data import IGNORE_INDEX
from distill.objectives import Objective, StepContext


def residual_streams(model: Any, batch: dict[str, torch.Tensor]) -> tuple[Any, list[torch.Tensor]]:
    """(model output, [h_0, ..., h_L]): the stream entering each layer, then the pre-norm
    stream after the last layer (captured from the final norm's input)."""
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    captured: list[torch.Tensor] = []
    hook = inner.model.norm.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
    try:
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=True,
        )
    finally:
        hook.remove()
    streams = [*out.hidden_states[:-1], captured[-1]]
    return out, streams


def energies(streams: list[torch.Tensor]) -> torch.Tensor:
    """[L, B, S] residual energies e_l = RMS over the hidden dimension of h_{l+1} - h_l."""
    h = torch.stack([s.float() for s in streams])  # [L+1, B, S, D]
    return (h[1:] - h[:-1]).pow(2).mean(dim=-1).clamp_min(1e-12).sqrt()


def energy_loss(
    e_student: torch.Tensor, e_teacher: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-example mean over real positions of sum_l w_l (e_l^S - e_l^T)^2, w_l = 1/(l+1)."""
    n_layers = e_student.size(0)
    w = 1.0 / torch.arange(1, n_layers + 1, device=e_student.device, dtype=torch.float32)
    w = (w / w.sum()).view(-1, 1, 1)
    per_pos = (w * (e_student - e_teacher.to(e_student.dtype)).pow(2)).sum(dim=0)  # [B, S]
    m = mask.float()
    return (per_pos * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class ResidualEnergy(Objective):
    """CE on the labelled tokens + w_E x residual-energy MSE to a frozen teacher."""

    name = "residual_energy"

    def __init__(
        self,
        teacher: Any | None,
        energy_weight: float | Callable[[float], float] = 0.02,
        kl_weight: float = 0.0,
        kl_temperature: float = 1.0,
        on_step: Callable[[Any, float], None] | None = None,
        diagnostics: Callable[[Any], dict[str, Any]] | None = None,
        teacher_spec: str = "",
        teacher_fingerprint: str = "",
    ):
        # No teacher: plain cross-entropy (the teacher-free phases).
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.energy_weight = energy_weight
        self.kl_weight = float(kl_weight)
        self.kl_temperature = float(kl_temperature)
        self.on_step = on_step  # e.g. anneal the student's teacher-attention scale
        self.diagnostics = diagnostics  # extra numbers about the model for each step's line
        self.teacher_spec, self.teacher_fingerprint = teacher_spec, teacher_fingerprint
        self._w = self._weight_at(0.0)
        self._last: dict[str, float] = {}

    def _weight_at(self, frac: float) -> float:
        w = self.energy_weight
        return float(w(frac) if callable(w) else w)

    def setup(self, accelerator: Any) -> None:
        if self.teacher is not None:
            self.teacher.to(accelerator.device)

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "energy_weight": self._weight_at(0.0),
            "energy_weight_end": self._weight_at(1.0),
            "kl_weight": self.kl_weight,
            "kl_temperature": self.kl_temperature,
            "teacher": self.teacher_spec,
            "teacher_fingerprint": self.teacher_fingerprint,
        }

    def prepare_batch(
        self, model: Any, batch: dict[str, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        frac = ctx.step / max(ctx.total_steps, 1)
        self._w = self._weight_at(frac)
        if self.on_step is not None:
            self.on_step(model, frac)
        return batch

    def _ce(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]):
        labels = batch["labels"][:, 1:]
        loss = F.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.size(-1)),
            labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view(labels.shape)
        trained = labels != IGNORE_INDEX
        return loss, trained

    def token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, s_streams = residual_streams(model, batch)
        ce, trained = self._ce(out.logits, batch)
        counts = trained.sum(dim=1)
        sums = ce.sum(dim=1)
        ce_mean = float(sums.detach().sum() / counts.sum().clamp_min(1))
        need_teacher = self.teacher is not None and (self._w > 0 or self.kl_weight > 0)
        e_loss = torch.zeros_like(sums)
        kl = torch.zeros_like(sums)
        if need_teacher:
            with torch.no_grad():
                t_out, t_streams = residual_streams(self.teacher, batch)
            if self._w > 0:
                e_loss = energy_loss(
                    energies(s_streams), energies(t_streams), batch["attention_mask"]
                )
                sums = sums + self._w * e_loss * counts
            if self.kl_weight > 0:
                tau = self.kl_temperature
                s_lp = F.log_softmax(out.logits[:, :-1].float() / tau, dim=-1)
                t_lp = F.log_softmax(t_out.logits[:, :-1].float() / tau, dim=-1)
                per_tok = (t_lp.exp() * (t_lp - s_lp)).sum(-1) * tau * tau
                kl = (per_tok * trained).sum(dim=1)
                sums = sums + self.kl_weight * kl
        extra = self.diagnostics(model) if self.diagnostics is not None else {}
        self._last = {
            **extra,
            "ce": ce_mean,
            "energy": float(e_loss.detach().mean()),
            "energy_weight": self._w,
            **(
                {"kl": float(kl.detach().sum() / counts.sum().clamp_min(1))}
                if self.kl_weight
                else {}
            ),
        }
        return sums, counts

    def eval_token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        ce, trained = self._ce(out.logits, batch)
        return ce.sum(dim=1), trained.sum(dim=1)

    def step_metrics(self) -> dict[str, Any]:
        last, self._last = self._last, {}
        return last


__all__ = ["ResidualEnergy", "energies", "energy_loss", "residual_streams"]
