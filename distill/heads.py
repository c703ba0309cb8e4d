"""Attention heads as units: read, mean-ablate and train them one by one.

A head's output is its slice of the attention output *before* the output projection
(``o_proj``'s input, shape [B, S, H * d] viewed as [B, S, H, d]); this is where circuit
work reads and ablates heads. Llama/Qwen2/Mistral-style decoders (``model.layers[i]
.self_attn.o_proj``) are supported; anything else is a one-line error.

Position convention: task batches are *left*-padded to one fixed width, so the final
prompt token is column -1 in every batch and a column index means the same place in the
template for every prompt of the same shape. Mean-ablation means are per column (masked
over padding), so an ablated head gets the average of what it wrote at that position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from bbi.errors import BbiError

Head = tuple[int, int]  # (layer, head)


@dataclass(frozen=True)
class AttentionLayout:
    """Where the heads live: one ``self_attn`` module per layer, and their shapes."""

    attns: list[Any]
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def heads(self) -> list[Head]:
        return [(layer, h) for layer in range(len(self.attns)) for h in range(self.n_heads)]


def layout(model: Any) -> AttentionLayout:
    """The attention layout of a Llama-style causal LM (peft/Accelerate wrappers allowed)."""
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    cfg = inner.config
    layers = getattr(getattr(inner, "model", None), "layers", None)
    if layers is None or not all(hasattr(getattr(b, "self_attn", None), "o_proj") for b in layers):
        raise BbiError(
            f"{type(inner).__name__}: per-head circuits need a Llama-style decoder "
            "(model.layers[i].self_attn.o_proj)"
        )
    n_heads = int(cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    return AttentionLayout([b.self_attn for b in layers], n_heads, n_kv, head_dim)


class HeadTap:
    """Forward pre-hooks on every ``o_proj``: capture heads at the final token, replace
    heads by their means. Use as a context manager; configure between forwards::

        with HeadTap(model) as tap:
            tap.capture = {(0, 1), (2, 3)}     # read these heads at column -1
            model(**batch); tap.captured[(0, 1)]  # [B, head_dim], with grad
            tap.ablate = {(1, 0)}; tap.means = means  # mean-ablate (1, 0)
    """

    def __init__(self, model: Any):
        self.layout = layout(model)
        self.capture: set[Head] = set()
        self.captured: dict[Head, torch.Tensor] = {}
        self.every_position = False  # capture [B, S, head_dim] instead of column -1
        self.ablate: set[Head] = set()
        self.means: torch.Tensor | None = None  # [L, W, H, d], aligned from the right
        self._handles: list[Any] = []

    def __enter__(self) -> HeadTap:
        for layer, attn in enumerate(self.layout.attns):
            self._handles.append(attn.o_proj.register_forward_pre_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, layer: int) -> Any:
        lay = self.layout

        def hook(_module: Any, args: tuple) -> tuple | None:
            x = args[0]
            b, s, _ = x.shape
            xh = x.view(b, s, lay.n_heads, lay.head_dim)
            drop = [h for (lyr, h) in self.ablate if lyr == layer]
            if drop:
                if self.means is None:
                    raise RuntimeError("HeadTap.ablate needs means")
                if s > self.means.size(1):
                    raise BbiError(f"a batch of width {s} is wider than the ablation means")
                xh = xh.clone()
                xh[:, :, drop] = self.means[layer, -s:, drop].to(xh.dtype).unsqueeze(0)
            for lyr, h in self.capture:
                if lyr == layer:
                    self.captured[(lyr, h)] = xh[:, :, h] if self.every_position else xh[:, -1, h]
            return (xh.reshape(b, s, -1), *args[1:]) if drop else None

        return hook


@torch.no_grad()
def head_means(model: Any, batches: Iterator[dict[str, torch.Tensor]], width: int) -> torch.Tensor:
    """[L, width, H, d] mean of every head's output per column (right-aligned, padding
    excluded) over ``batches``: the values mean ablation writes."""
    lay = layout(model)
    sums = torch.zeros(len(lay.attns), width, lay.n_heads, lay.head_dim, dtype=torch.float64)
    counts = torch.zeros(width, dtype=torch.float64)
    store: dict[int, torch.Tensor] = {}
    handles = [
        attn.o_proj.register_forward_pre_hook(
            lambda _m, args, layer=layer: store.__setitem__(layer, args[0])
        )
        for layer, attn in enumerate(lay.attns)
    ]
    try:
        for batch in batches:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            mask = batch["attention_mask"].double()  # [B, S]
            s = mask.size(1)
            counts[-s:] += mask.sum(0).cpu()
            for layer, x in store.items():
                xh = x.view(x.size(0), s, lay.n_heads, lay.head_dim).double().cpu()
                sums[layer, -s:] += (xh * mask.cpu()[:, :, None, None]).sum(0)
    finally:
        for h in handles:
            h.remove()
    return (sums / counts.clamp(min=1)[None, :, None, None]).float()


@contextlib.contextmanager
def train_only_heads(model: Any, heads: set[Head]) -> Iterator[int]:
    """Freeze everything but the q/k/v rows and o_proj columns of ``heads`` (gradient
    masks), yielding the number of trainable weights. With grouped-query attention a
    trained head's key/value rows are shared with the other heads of its group.

    The optimiser must not use weight decay (it would move masked weights); Adam leaves
    a weight whose gradient is always 0 where it is.
    """
    lay = layout(model)
    for p in model.parameters():
        p.requires_grad_(False)
    handles = []
    n = 0
    group = lay.n_heads // lay.n_kv_heads
    d = lay.head_dim
    for layer, attn in enumerate(lay.attns):
        mine = sorted(h for (lyr, h) in heads if lyr == layer)
        if not mine:
            continue
        rows_q = torch.zeros(lay.n_heads * d, dtype=torch.bool)
        rows_kv = torch.zeros(lay.n_kv_heads * d, dtype=torch.bool)
        for h in mine:
            rows_q[h * d : (h + 1) * d] = True
            rows_kv[(h // group) * d : (h // group + 1) * d] = True
        masks = {
            attn.q_proj.weight: rows_q[:, None],
            attn.k_proj.weight: rows_kv[:, None],
            attn.v_proj.weight: rows_kv[:, None],
            attn.o_proj.weight: rows_q[None, :],
        }
        for proj, rows in ((attn.q_proj, rows_q), (attn.k_proj, rows_kv), (attn.v_proj, rows_kv)):
            if getattr(proj, "bias", None) is not None:
                masks[proj.bias] = rows
        for param, mask in masks.items():
            m = mask.to(param.device, param.dtype).expand_as(param).contiguous()
            param.requires_grad_(True)
            handles.append(param.register_hook(lambda g, m=m: g * m))
            n += int(m.sum())
    try:
        yield n
    finally:
        for h in handles:
            h.remove()


__all__ = ["AttentionLayout", "Head", "HeadTap", "head_means", "layout", "train_only_heads"]
