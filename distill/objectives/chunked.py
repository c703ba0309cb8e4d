"""Losses over the output layer in chunks of positions, so memory does not grow with
vocabulary x length.

A KD step over a 150k-token vocabulary materialises, per response token, the student's
and the teacher's logits plus their float32 log-softmaxes and the elementwise KL terms:
several ``tokens x vocab`` tensors, all kept for the backward pass. Here the model runs to
its last hidden state only (the output layer on one position, ``logits_to_keep=1``), and
the loss takes the response positions ``chunk`` at a time: each chunk applies the output
layer, computes its per-position loss and drops the logits; under
``torch.utils.checkpoint`` the backward recomputes one chunk's logits at a time (the idea
of Liger-Kernel's fused linear cross-entropy, in plain PyTorch). Peak memory is then
``chunk x vocab`` instead of ``tokens x vocab``; the loss and its gradient are the same
computation row by row (equal to the unchunked loss within float rounding; the tests
state the tolerance).

A model whose logits are not ``output_embeddings(last_hidden_state)`` (logit
soft-capping or scaling) is detected on its first batch (the last position's logits are
compared) and falls back to full logits, still chunking the loss itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from distill.data import IGNORE_INDEX
from distill.objectives import accepts_logits_to_keep, response_logits

_HEAD_OK: dict[type, bool] = {}


def _inner(model: Any) -> Any:
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)
    if hasattr(inner, "get_base_model"):  # peft: the LoRA layers are injected in place
        inner = inner.get_base_model()
    return inner


def response_rows(
    model: Any, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor] | None, torch.Tensor]:
    """(rows, head, mask): the trained positions' last hidden states and the output layer
    that turns rows into logits, or (their logits, None) where the model cannot be split
    there. ``mask`` is the (batch, positions) trained mask of ``response_logits``; rows
    are ``mask``'s True positions in order."""
    inner = _inner(model)
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    usable = decoder is not None and head is not None and accepts_logits_to_keep(model)
    if not usable or _HEAD_OK.get(type(inner)) is False:
        logits, _, mask = response_logits(model, batch)
        return logits[mask], None, mask
    captured: list[torch.Tensor] = []

    def hook(_module: Any, _args: Any, out: Any) -> None:
        captured.append(out[0] if isinstance(out, tuple) else out.last_hidden_state)

    handle = decoder.register_forward_hook(hook)
    try:
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=1
        )
    finally:
        handle.remove()
    hidden = captured[-1]
    if type(inner) not in _HEAD_OK:  # once per architecture: is logits == head(hidden)?
        with torch.no_grad():
            mine = head(hidden[:, -1:]).float()
            _HEAD_OK[type(inner)] = bool(
                mine.shape == out.logits.shape
                and torch.allclose(mine, out.logits.float(), rtol=1e-4, atol=1e-4)
            )
        if not _HEAD_OK[type(inner)]:
            return response_rows(model, batch)
    labels = batch["labels"][:, 1:]
    mask_full = labels != IGNORE_INDEX
    cols = mask_full.any(dim=0).nonzero()
    start = int(cols[0]) if len(cols) else 0
    mask = mask_full[:, start:]
    return hidden[:, start : labels.size(1)][mask], head, mask


def chunked_rows(
    fn: Callable[..., torch.Tensor],
    rows: torch.Tensor,
    *extras: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
    """``fn(rows[i:j], *(e[i:j] for e in extras))`` over chunks of ``chunk`` rows,
    concatenated; each chunk is checkpointed (its intermediates recomputed in the backward
    pass) when gradients flow. ``chunk`` <= 0 or >= the row count: one call, no
    checkpoint (exactly the unchunked computation)."""
    n = rows.size(0)
    if chunk <= 0 or chunk >= n:
        return fn(rows, *extras)
    grad = torch.is_grad_enabled() and rows.requires_grad
    out = []
    for i in range(0, n, chunk):
        args = (rows[i : i + chunk], *(e[i : i + chunk] for e in extras))
        out.append(checkpoint(fn, *args, use_reentrant=False) if grad else fn(*args))
    return torch.cat(out)


__all__ = ["chunked_rows", "response_rows"]
