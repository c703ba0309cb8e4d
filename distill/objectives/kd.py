"""White-box token-level knowledge distillation, off- and on-policy (GKD).

The student matches the teacher's next-token distribution at every response position,
not only the token the teacher happened to sample: far more signal per example than
sequence-level SFT, but it needs the teacher's weights and a shared vocabulary.

Divergences follow TRL's ``GKDTrainer.generalized_jsd_loss`` (Agarwal et al. 2024,
"On-Policy Distillation of Language Models", eq. 1), with T = teacher, S = student, both
softened by the same temperature tau (logits / tau; no tau**2 factor)::

    forward_kl = KL(T || S) = sum_v T_v (log T_v - log S_v)      (mode covering)
    reverse_kl = KL(S || T) = sum_v S_v (log S_v - log T_v)      (mode seeking)
    jsd(beta)  = beta KL(T || M) + (1 - beta) KL(S || M),  M = beta T + (1 - beta) S

``jsd`` at beta = 0 and 1 is defined as forward_kl and reverse_kl (TRL's special cases;
the continuous limits are jsd/beta -> KL(T||S) as beta -> 0 and jsd/(1-beta) -> KL(S||T)
as beta -> 1). Each is summed over the vocabulary per position and averaged over the
response tokens, like the SFT loss.

On-policy (GKD): with probability ``lambda_on_policy`` a step's responses are replaced by
the student's own samples for the same prompts (temperature tau, up to
``max_new_tokens``), which the teacher then scores; otherwise the step trains on the
teacher's responses from the run. The coin and the sampling seed are pure functions of
(seed, epoch, micro-batch), so a resumed run draws exactly the same.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bbi.config import KD_LOSSES as LOSSES
from bbi.config import KDLoss, KDSettings
from distill.data import IGNORE_INDEX, Collator
from distill.objectives import Objective, StepContext, response_logits


def generalized_jsd(
    student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, beta: float
) -> torch.Tensor:
    """Generalised JSD per position (summed over the last, vocabulary, axis).

    Inputs are log-probabilities; beta = 0 is KL(T||S), beta = 1 is KL(S||T) (TRL's
    convention, see the module docstring).
    """
    s, t = student_logprobs, teacher_logprobs
    # F.kl_div(input, target, log_target=True) = KL(target || input), elementwise.
    if beta == 0.0:
        return F.kl_div(s, t, reduction="none", log_target=True).sum(-1)
    if beta == 1.0:
        return F.kl_div(t, s, reduction="none", log_target=True).sum(-1)
    mix = torch.logsumexp(torch.stack([s + math.log1p(-beta), t + math.log(beta)]), dim=0)
    kl_t = F.kl_div(mix, t, reduction="none", log_target=True).sum(-1)
    kl_s = F.kl_div(mix, s, reduction="none", log_target=True).sum(-1)
    return beta * kl_t + (1.0 - beta) * kl_s


def divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    loss: KDLoss,
    beta: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-position divergence between softened student and teacher distributions
    (``loss`` is one of ``bbi.config.KD_LOSSES``, checked there)."""
    b = {"forward_kl": 0.0, "reverse_kl": 1.0}.get(loss, beta)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return generalized_jsd(s, t, b)


class KD(Objective):
    """Token-level KD from a frozen teacher; optionally on the student's own samples.

    The divergence, its temperature, the on-policy rate and the sequence length come from
    ``settings`` (``bbi.config.KDSettings``, where their defaults and checks live);
    ``max_new_tokens`` is the resolved on-policy sample length (the settings' own, or the
    run's generation setting)."""

    name = "kd"

    def __init__(
        self,
        teacher: Any,
        settings: KDSettings,
        *,
        max_new_tokens: int,
        pad_id: int = 0,
        eos_id: int | None = None,
        teacher_spec: str = "",
        teacher_fingerprint: str = "",
    ):
        self.teacher = teacher.eval().requires_grad_(False)
        self.loss, self.beta = settings.loss, settings.beta
        self.temperature = settings.temperature
        self.lambda_on_policy = settings.lambda_on_policy
        self.max_new_tokens, self.max_length = int(max_new_tokens), settings.max_length
        self.pad_id, self.eos_id = pad_id, eos_id
        self.teacher_spec, self.teacher_fingerprint = teacher_spec, teacher_fingerprint
        self._autocast: Any = contextlib.nullcontext
        self._on = self._off = 0

    def setup(self, accelerator: Any) -> None:
        self.teacher.to(accelerator.device)
        self._autocast = accelerator.autocast

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "teacher": self.teacher_spec,
            "teacher_fingerprint": self.teacher_fingerprint,
            "max_new_tokens": self.max_new_tokens,
        }

    # ---- the loss ------------------------------------------------------------------
    def token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s_logits, _, mask = response_logits(model, batch)
        with torch.no_grad(), self._autocast():
            t_logits, _, _ = response_logits(self.teacher, batch)
        # Checkpoints may pad the output layer past the tokenizer; the shared part counts.
        v = min(s_logits.size(-1), t_logits.size(-1))
        per_token = torch.zeros(mask.shape, dtype=torch.float32, device=s_logits.device)
        per_token[mask] = divergence(
            s_logits[mask][:, :v], t_logits[mask][:, :v], self.loss, self.beta, self.temperature
        )
        return per_token.sum(dim=1), mask.sum(dim=1)

    # ---- on-policy sampling ----------------------------------------------------------
    def prepare_batch(
        self, model: Any, batch: dict[str, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        if self.lambda_on_policy <= 0.0:
            return batch
        coin = np.random.default_rng([ctx.seed, ctx.epoch, ctx.micro, 0x6B64]).random()
        if coin >= self.lambda_on_policy:
            self._off += 1
            return batch
        self._on += 1
        return self.sample_responses(model, batch, ctx)

    def sample_responses(
        self, model: Any, batch: dict[str, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        """The batch's prompts with the student's own sampled responses (loss on those)."""
        from accelerate.utils import extract_model_from_parallel

        gen_model = extract_model_from_parallel(model)
        ids, labels = batch["input_ids"], batch["labels"]
        device = ids.device
        prompt_len = (labels != IGNORE_INDEX).int().argmax(dim=1).tolist()
        width = max(prompt_len)
        inp = torch.full((len(prompt_len), width), self.pad_id, dtype=torch.long, device=device)
        attn = torch.zeros_like(inp)
        for i, n in enumerate(prompt_len):  # left-pad: generation continues every row at once
            inp[i, width - n :] = ids[i, :n]
            attn[i, width - n :] = 1
        budget = max(1, min(self.max_new_tokens, self.max_length - min(prompt_len)))
        seed = int(
            np.random.default_rng([ctx.seed, ctx.epoch, ctx.micro, ctx.process_index, 1]).integers(
                2**62
            )
        )
        was_training = gen_model.training
        gen_model.eval()
        cuda = [device] if device.type == "cuda" else []
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed)
                out = gen_model.generate(
                    input_ids=inp,
                    attention_mask=attn,
                    do_sample=True,
                    temperature=self.temperature,
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=budget,
                    pad_token_id=self.pad_id,
                    eos_token_id=self.eos_id,
                )
        finally:
            gen_model.train(was_training)
        examples = []
        for i, n in enumerate(prompt_len):
            gen = out[i, width:].tolist()
            if self.eos_id is not None and self.eos_id in gen:
                gen = gen[: gen.index(self.eos_id) + 1]
            gen = gen[: max(self.max_length - n, 1)] or [self.eos_id or self.pad_id]
            prompt = ids[i, :n].tolist()
            examples.append({"input_ids": prompt + gen, "labels": [IGNORE_INDEX] * n + gen})
        return {k: v.to(device) for k, v in Collator(self.pad_id)(examples).items()}

    def step_metrics(self) -> dict[str, Any]:
        if self.lambda_on_policy <= 0.0 or not (self._on + self._off):
            return {}
        out = {"on_policy": self._on / (self._on + self._off)}
        self._on = self._off = 0
        return out


__all__ = ["KD", "LOSSES", "divergence", "generalized_jsd"]
