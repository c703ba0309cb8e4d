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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bbi.config import KD_LOSSES as LOSSES
from bbi.config import KDLoss, KDSettings
from bbi.errors import BbiError
from distill.data import IGNORE_INDEX, Collator
from distill.objectives import Objective, StepContext, response_logits
from distill.objectives.chunked import chunked_rows, response_rows


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


def _beta(loss: KDLoss, beta: float) -> float:
    return {"forward_kl": 0.0, "reverse_kl": 1.0}.get(loss, beta)


def divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    loss: KDLoss,
    beta: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-position divergence between softened student and teacher distributions
    (``loss`` is one of ``bbi.config.KD_LOSSES``, checked there)."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return generalized_jsd(s, t, _beta(loss, beta))


# A log-probability standing for "no mass": exp() of it is exactly 0 in float32, and
# unlike -inf it never makes 0 * inf = nan inside the divergence.
NO_MASS = -1.0e4


def topk_divergence(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_tail: torch.Tensor,
    loss: KDLoss,
    beta: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-position divergence against a teacher known by its top-k only.

    The teacher gives, per position, the log-probabilities of its k most likely tokens
    (``teacher_ids``, ``teacher_logprobs``, already softened by ``temperature``) and the
    log of the rest of its mass (``teacher_tail``). Both distributions are coarsened the
    same way, to k + 1 outcomes (the k tokens, and "any other token" as one bucket), and
    the divergence is taken between the coarsened ones. The approximation, stated: this is
    the exact divergence of the coarsened distributions, and for the KLs never more than
    the full-vocabulary divergence (data processing); it differs from it only by how the
    two spread their tail mass over the other tokens.
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    ids = teacher_ids.long()
    s_top = s.gather(-1, ids)
    s_tail = s.scatter(-1, ids, float("-inf")).logsumexp(-1, keepdim=True)
    s_c = torch.cat([s_top, s_tail], dim=-1).clamp(min=NO_MASS)
    t_c = torch.cat([teacher_logprobs.float(), teacher_tail.float()[..., None]], dim=-1)
    return generalized_jsd(s_c, t_c.clamp(min=NO_MASS), _beta(loss, beta))


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
        self.sampler = settings.on_policy_sampler
        self.max_new_tokens, self.max_length = int(max_new_tokens), settings.max_length
        self.kl_chunk = settings.kl_chunk
        self.pad_id, self.eos_id = pad_id, eos_id
        self.teacher_spec, self.teacher_fingerprint = teacher_spec, teacher_fingerprint
        self._autocast: Any = contextlib.nullcontext
        self._on = self._off = 0
        self._generate_s, self._samples = 0.0, 0

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
        if self.kl_chunk:
            return self._chunked_token_losses(model, batch)
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

    def _chunked_token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same loss, ``kl_chunk`` response tokens at a time (``objectives.chunked``)."""
        s_rows, s_head, mask = response_rows(model, batch)
        with torch.no_grad(), self._autocast():
            t_rows, t_head, _ = response_rows(self.teacher, batch)

        def per_row(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            s_logits = s_head(s) if s_head is not None else s
            with torch.no_grad(), self._autocast():
                t_logits = t_head(t) if t_head is not None else t
            v = min(s_logits.size(-1), t_logits.size(-1))
            return divergence(
                s_logits[:, :v], t_logits[:, :v], self.loss, self.beta, self.temperature
            )

        per_token = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        per_token[mask] = chunked_rows(per_row, s_rows, t_rows, chunk=self.kl_chunk)
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
        t0 = time.perf_counter()
        gen_model.eval()
        cuda = [device] if device.type == "cuda" else []
        try:
            if self.sampler == "backend":
                gens = self._backend_samples(gen_model, ids, prompt_len, budget, seed)
            else:
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
                gens = [out[i, width:].tolist() for i in range(len(prompt_len))]
        finally:
            gen_model.train(was_training)
            self._generate_s += time.perf_counter() - t0
            self._samples += len(prompt_len)
        examples = []
        for i, n in enumerate(prompt_len):
            gen = gens[i]
            if self.eos_id is not None and self.eos_id in gen:
                gen = gen[: gen.index(self.eos_id) + 1]
            gen = gen[: max(self.max_length - n, 1)] or [self.eos_id or self.pad_id]
            prompt = ids[i, :n].tolist()
            examples.append({"input_ids": prompt + gen, "labels": [IGNORE_INDEX] * n + gen})
        return {k: v.to(device) for k, v in Collator(self.pad_id)(examples).items()}

    def _backend_samples(
        self, model: Any, ids: torch.Tensor, prompt_len: list[int], budget: int, seed: int
    ) -> list[list[int]]:
        """The student's samples through bbi's generation path (``bbi.backends.hf``:
        KV cache, finished rows dropped, output layer on the last position, one seeded
        sampler per row) instead of HF ``generate``."""
        from bbi.backends.hf import decode_rows
        from distill.objectives import accepts_logits_to_keep

        encoded = [ids[i, :n].tolist() for i, n in enumerate(prompt_len)]
        return decode_rows(
            model,
            encoded,
            [(seed + i) % 2**31 for i in range(len(encoded))],
            pad_id=self.pad_id,
            eos_ids=[self.eos_id] if self.eos_id is not None else [],
            max_new_tokens=budget,
            temperature=self.temperature,
            device=ids.device,
            keeps_logits=accepts_logits_to_keep(model),
        )

    def stats(self) -> dict[str, Any]:
        """On-policy runs: wall time spent sampling (HF ``generate``), for its share of
        the training time (``train_time_s`` in the record)."""
        if self.lambda_on_policy <= 0.0:
            return {}
        return {"generate_s": self._generate_s, "on_policy_samples": self._samples}

    def step_metrics(self) -> dict[str, Any]:
        if self.lambda_on_policy <= 0.0 or not (self._on + self._off):
            return {}
        out = {"on_policy": self._on / (self._on + self._off)}
        self._on = self._off = 0
        return out


class LocalTeacher:
    """The teacher model in this process as a cache's row source
    (``distill.teacher_cache.TeacherSource``): top-k of its softened logits, in chunks of
    ``kl_chunk`` positions when set."""

    def __init__(
        self, teacher: Any, accelerator: Any, *, pad_id: int, top_k: int, temperature: float,
        vocab: int, kl_chunk: int = 0,
    ):  # fmt: skip
        self.teacher = teacher.eval().requires_grad_(False)
        self.teacher.to(accelerator.device)
        self.accelerator, self.pad_id, self.top_k = accelerator, pad_id, top_k
        self.temperature, self.vocab, self.kl_chunk = temperature, vocab, kl_chunk

    def rows(self, examples: list[dict]) -> list[Any]:
        from distill.teacher_cache import topk_rows

        acc = self.accelerator
        batch = {k: v.to(acc.device) for k, v in Collator(self.pad_id)(examples).items()}
        with torch.no_grad(), acc.autocast():
            rows, head, mask = response_rows(self.teacher, batch)
            chunk = self.kl_chunk or rows.size(0) or 1
            parts = []
            for i in range(0, rows.size(0), chunk):
                logits = head(rows[i : i + chunk]) if head is not None else rows[i : i + chunk]
                parts.append(topk_rows(logits[:, : self.vocab], self.top_k, self.temperature))
        ids, lp, tail = (np.concatenate([p[j] for p in parts]) for j in range(3))
        edges = np.concatenate([[0], np.cumsum(mask.sum(dim=1).cpu().numpy())])
        return [(ids[a:b], lp[a:b], tail[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def close(self) -> None:
        self.teacher = None


class CachedKD(Objective):
    """Token-level KD from the teacher's cached top-k log-probabilities (``--teacher-logits
    cache``): the teacher runs once, before training, over the examples of the train and
    held-out sets whose cache is missing (``distill.teacher_cache``), and is dropped before
    the first step. ``open_source(accelerator)`` gives the rows' source: the teacher model
    here (:class:`LocalTeacher`) or a served one (``teacher_cache.ServedTeacher``), opened
    only when a cache is missing. The loss is ``topk_divergence`` (top-k plus one tail
    bucket, its approximation stated there), for training and for the held-out eval alike."""

    name = "kd"

    def __init__(
        self,
        open_source: Callable[[Any], Any],
        settings: KDSettings,
        *,
        cache_root: Path,
        vocab: int,
        teacher_spec: str = "",
        teacher_fingerprint: str = "",
        progress: bool = False,
        build_batch: int | None = None,
    ):
        if settings.lambda_on_policy > 0:
            raise BbiError(
                "--teacher-logits cache scores fixed data; on-policy samples "
                "(--lambda-on-policy) need the teacher model (--teacher-logits model)"
            )
        self.open_source = open_source
        self.loss, self.beta = settings.loss, settings.beta
        self.temperature, self.top_k = settings.temperature, settings.top_k
        self.kl_chunk, self.batch_size = settings.kl_chunk, settings.batch_size
        self.build_batch = build_batch or settings.batch_size
        self.cache_root, self.vocab = Path(cache_root), int(vocab)
        self.teacher_spec, self.teacher_fingerprint = teacher_spec, teacher_fingerprint
        self.progress = progress
        self.shards_computed = 0
        self.cache_dirs: list[str] = []

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "teacher": self.teacher_spec,
            "teacher_fingerprint": self.teacher_fingerprint,
            "teacher_logits": "cache",
            "top_k": self.top_k,
        }

    def datasets(self, train_ds: Any, eval_ds: Any, accelerator: Any) -> tuple[Any, Any]:
        import gc

        from distill.teacher_cache import TeacherCache, TeacherSignalDataset, cache_key

        caches = [
            TeacherCache(
                self.cache_root
                / cache_key(
                    self.teacher_fingerprint, ds.fingerprint(), self.top_k, self.temperature,
                    self.vocab,
                ),
                len(ds),
            )
            for ds in (train_ds, eval_ds)
        ]  # fmt: skip
        source = None
        try:
            for cache, ds in zip(caches, (train_ds, eval_ds), strict=True):
                if cache.complete():
                    continue
                if accelerator.is_main_process:  # one process scores, the others wait
                    if source is None:
                        source = self.open_source(accelerator)
                    self.shards_computed += cache.build(
                        source.rows,
                        ds,
                        batch_size=self.build_batch,
                        meta={
                            "teacher": self.teacher_spec,
                            "teacher_fingerprint": self.teacher_fingerprint,
                            "data": ds.fingerprint(),
                            "top_k": self.top_k,
                            "temperature": self.temperature,
                            "vocab": self.vocab,
                        },
                        progress=self.progress,
                    )
                accelerator.wait_for_everyone()
        finally:
            if source is not None:
                source.close()  # trained without it
            del source
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.cache_dirs = [c.root.as_posix() for c in caches]
        return tuple(
            TeacherSignalDataset(ds, c.load())
            for c, ds in zip(caches, (train_ds, eval_ds), strict=True)
        )  # type: ignore[return-value]

    def stats(self) -> dict[str, Any]:
        return {"teacher_cache": self.cache_dirs, "cache_shards_computed": self.shards_computed}

    def collator(self, pad_id: int) -> Any:
        from distill.teacher_cache import SignalCollator

        return SignalCollator(pad_id)

    def token_losses(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kl_chunk:
            s_rows, s_head, mask = response_rows(model, batch)
        else:
            s_logits, _, mask = response_logits(model, batch)
            s_rows, s_head = s_logits[mask], None
        start = batch["teacher_tail"].size(1) - mask.size(1)
        t_ids = batch["teacher_ids"][:, start:][mask]
        t_lp = batch["teacher_logprobs"][:, start:][mask]
        t_tail = batch["teacher_tail"][:, start:][mask]

        def per_row(
            s: torch.Tensor, ids: torch.Tensor, lp: torch.Tensor, tail: torch.Tensor
        ) -> torch.Tensor:
            s_logits = s_head(s) if s_head is not None else s
            return topk_divergence(s_logits, ids, lp, tail, self.loss, self.beta, self.temperature)

        per_token = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        per_token[mask] = chunked_rows(per_row, s_rows, t_ids, t_lp, t_tail, chunk=self.kl_chunk)
        return per_token.sum(dim=1), mask.sum(dim=1)


__all__ = [
    "KD",
    "LOSSES",
    "CachedKD",
    "LocalTeacher",
    "NO_MASS",
    "divergence",
    "generalized_jsd",
    "topk_divergence",
]
