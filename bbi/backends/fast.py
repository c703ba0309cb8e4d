"""A decode engine for Llama-family models on the CPU: ``fast:zoo:smollm2``, ``fast:hf:./dir``.

Why. Every prompt of a run is answered by four models, so on a CPU generation is the
run's cost. ``model.generate`` (and bbi's own ``hf:`` loop over the model's forward) pay,
every decoded token, for transformers' general machinery: a few hundred small tensor ops
and Python calls per step, a growing KV cache re-allocated by ``torch.cat`` and rows
that stay in the batch after they finished. This engine runs the same weights (the
model's own modules, read once) with:

- fused projections: q/k/v as one matrix, gate/up as one, so a layer is five GEMMs;
- a static, preallocated KV cache of ``batch_size`` slots;
- the prompts' common prefix (a chat template's system turn) prefilled once, not per
  prompt;
- continuous batching: a slot whose answer ended (EOS, stop string, length) takes the
  next prompt at once, so every decode step runs a full batch until the queue is empty
  (then finished slots are compacted away);
- optional bfloat16 weights and activations (``dtype=bfloat16``; the CPU's avx512_bf16
  path through oneDNN), with RMSNorm, softmax and the sampler in float32;
- the sampler of ``hf:`` (:class:`bbi.backends.hf.SeededSampler`: top-k pre-filter, exact
  top-p, Gumbel-max with a counter-based stream keyed by (seed, step)).

Because the sampler's draw for a row depends only on that row's seed and step, a row's
answer does not depend on which prompts shared its batch, nor on when it entered a slot:
the engine in float32 gives the answers of ``hf:`` (up to float rounding of differently
shaped matrix products), and the response cache stays sound.

Architectures: those whose decoder layer is the Llama layer (``llama``, ``mistral`` without
a sliding window, ``qwen2``, with q/k/v biases). Any other model, or a model placed by
Accelerate / quantised, runs through ``hf:``'s loop instead (a warning says so): same
answers, same precision, without the speed.

Arguments: ``dtype`` (``float32``, the default, or ``bfloat16``; part of the fingerprint,
so answers of the two precisions never share cache entries, nor with ``hf:``),
``threads`` (torch intra-op threads while generating; 0 leaves torch's setting).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from bbi.backends.base import Generation, GenerationConfig, TokenScores, check_generate_args
from bbi.backends.hf import SeededSampler, TokenFinisher, decode_rows, resolve_dtype
from bbi.backends.kinds import FAST_DTYPES, fast_fingerprint, fast_inner
from bbi.chat import format_prompt
from bbi.errors import BbiError
from bbi.specs import ModelSpec

SUPPORTED = ("llama", "mistral", "qwen2")


def unsupported_reason(model: Any) -> str | None:
    """Why the engine cannot run ``model`` (None when it can)."""
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED:
        return f"architecture {kind!r} is not one of {', '.join(SUPPORTED)}"
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", kind != "qwen2"):
        return "sliding-window attention"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r}"
    if getattr(cfg, "mlp_bias", False):
        return "MLP biases"
    if getattr(model, "hf_device_map", None) or getattr(model, "is_quantized", False):
        return "a model placed by Accelerate or quantised"
    dev = next(model.parameters()).device
    if dev.type != "cpu":
        return f"device {dev.type} (the engine runs on the CPU)"
    return None


class _Layer:
    """One decoder layer's weights, fused (q|k|v and gate|up)."""

    def __init__(self, layer: Any, dtype: torch.dtype):
        att, mlp = layer.self_attn, layer.mlp

        def w(*mods: Any) -> torch.Tensor:
            return torch.cat([m.weight.detach() for m in mods]).to(dtype).contiguous()

        def b(*mods: Any) -> torch.Tensor | None:
            if all(m.bias is None for m in mods):
                return None
            return torch.cat(
                [
                    m.bias.detach() if m.bias is not None else m.weight.new_zeros(m.out_features)
                    for m in mods
                ]
            ).to(dtype)

        self.qkv, self.qkv_b = (
            w(att.q_proj, att.k_proj, att.v_proj),
            b(att.q_proj, att.k_proj, att.v_proj),
        )
        self.o, self.o_b = w(att.o_proj), b(att.o_proj)
        self.gate_up = w(mlp.gate_proj, mlp.up_proj)
        self.down = w(mlp.down_proj)
        self.ln1 = layer.input_layernorm.weight.detach().float()
        self.ln2 = layer.post_attention_layernorm.weight.detach().float()
        self.eps1 = float(layer.input_layernorm.variance_epsilon)
        self.eps2 = float(layer.post_attention_layernorm.variance_epsilon)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's RMSNorm: normalise in float32, scale in the activation dtype."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (weight * h.to(x.dtype)).to(x.dtype) if x.dtype != torch.float32 else weight * h


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


class LlamaEngine:
    """The decode loop (static KV cache, continuous batching) over a Llama-family model."""

    def __init__(self, model: Any, dtype: torch.dtype = torch.float32):
        cfg = model.config
        inner = model.model
        self.dtype = dtype
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv = int(getattr(cfg, "num_key_value_heads", None) or self.n_heads)
        self.head_dim = int(
            getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        )
        self.q_width = self.n_heads * self.head_dim
        self.kv_width = self.n_kv * self.head_dim
        self.embed = inner.embed_tokens.weight.detach().to(dtype)
        self.layers = [_Layer(layer, dtype) for layer in inner.layers]
        self.norm = inner.norm.weight.detach().float()
        self.norm_eps = float(inner.norm.variance_epsilon)
        self.lm_head = model.lm_head.weight.detach().to(dtype).contiguous()
        self.rotary = inner.rotary_emb
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self._rope_len = 0

    # -- tables
    def _rope_tables(self, length: int) -> None:
        if length <= self._rope_len:
            return
        pos = torch.arange(length)[None]
        probe = torch.zeros(1, dtype=torch.float32)
        cos, sin = self.rotary(probe, pos)  # the model's own RoPE (scaling variants included)
        self.cos, self.sin = cos[0].float(), sin[0].float()
        self._rope_len = length

    # -- the transformer
    def _forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor,
        write: Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """Hidden states [B, T, D] -> last-layer normed states; ``write(layer, k, v)`` stores
        the new keys/values and returns the keys/values to attend to."""
        b, t, _ = x.shape
        cos = self.cos[pos][:, None].to(self.dtype)  # [B, 1, T, d]
        sin = self.sin[pos][:, None].to(self.dtype)
        for i, ly in enumerate(self.layers):
            h = _rms(x, ly.ln1, ly.eps1)
            qkv = F.linear(h, ly.qkv, ly.qkv_b)
            q = qkv[..., : self.q_width].view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
            k = (
                qkv[..., self.q_width : self.q_width + self.kv_width]
                .view(b, t, self.n_kv, self.head_dim)
                .transpose(1, 2)
            )
            v = (
                qkv[..., self.q_width + self.kv_width :]
                .view(b, t, self.n_kv, self.head_dim)
                .transpose(1, 2)
            )
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            keys, values = write(i, k, v)
            a = self._attend(q, keys, values, mask)
            a = a.transpose(1, 2).reshape(b, t, self.q_width)
            x = x + F.linear(a, ly.o, ly.o_b)
            h = _rms(x, ly.ln2, ly.eps2)
            gu = F.linear(h, ly.gate_up)
            half = gu.shape[-1] // 2
            x = x + F.linear(F.silu(gu[..., :half]) * gu[..., half:], ly.down)
        return x

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Attention of q [B, H, T, d] over k, v [B, KV, L, d] under mask [B, 1, T, L].

        float32: torch's fused kernel, as ``hf:`` runs it (same answers). bfloat16: two
        batched matrix products per head group with the softmax in float32, since torch's
        fused CPU kernel in bfloat16 ran ~7x slower than in float32 here."""
        if self.dtype == torch.float32:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=True
            )
        b, h, t, d = q.shape
        g = h // self.n_kv
        qg = q.reshape(b, self.n_kv, g * t, d)
        scores = torch.matmul(qg, k.transpose(-1, -2)).float().view(b, self.n_kv, g, t, -1)
        scores = scores.mul_(self.scale).masked_fill_(~mask[:, :, None], -math.inf)
        probs = scores.softmax(-1).to(v.dtype).view(b, self.n_kv, g * t, -1)
        return torch.matmul(probs, v).view(b, h, t, d)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(_rms(x, self.norm, self.norm_eps).to(self.dtype), self.lm_head).float()

    @torch.inference_mode()
    def generate(
        self,
        encoded: list[list[int]],
        seeds: list[int],
        *,
        slots: int,
        eos_ids: list[int],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        do_sample: bool = True,
        stop: Callable[[list[int]], bool] | None = None,
        refill: int | None = None,
    ) -> list[list[int]]:
        """The new token ids of each prompt (EOS included when drawn). Prompts enter free
        slots longest first, prefilled together once ``refill`` slots are free (or none
        is left running)."""
        n = len(encoded)
        rows: list[list[int]] = [[] for _ in encoded]
        if n == 0:
            return rows
        slots = max(1, min(slots, n))
        refill = max(1, refill if refill is not None else slots // 8)
        queue = sorted(range(n), key=lambda i: -len(encoded[i]))
        length = max(len(e) for e in encoded) + max_new_tokens
        self._rope_tables(length)
        shape = (slots, self.n_kv, length, self.head_dim)
        kc = [torch.zeros(shape, dtype=self.dtype) for _ in self.layers]
        vc = [torch.zeros(shape, dtype=self.dtype) for _ in self.layers]
        sampler = SeededSampler(temperature, top_p, seeds, 0) if do_sample else None
        eos = set(eos_ids)
        owner = [-1] * slots  # prompt index in each slot (-1: free)
        pos = torch.zeros(slots, dtype=torch.long)  # where each slot writes next
        step_of = [0] * slots
        logits = torch.zeros(slots, self.lm_head.shape[0])
        width = slots  # slots [0, width) are in use; later ones were compacted away

        # The prompts' common prefix (a chat template's system turn) is computed once:
        # keys/values of a prefix do not depend on what follows it.
        shared = _common_prefix(encoded)
        pk: list[torch.Tensor] = []
        pv: list[torch.Tensor] = []
        if shared:
            pre = torch.tensor(encoded[0][:shared])[None]

            def keep_prefix(i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[Any, Any]:
                pk.append(k)
                pv.append(v)
                return k, v

            causal = torch.ones(shared, shared, dtype=torch.bool).tril()[None, None]
            self._forward(self.embed[pre], torch.arange(shared)[None], causal, keep_prefix)

        def prefill(free: list[int]) -> None:
            take = [queue.pop(0) for _ in free[: len(queue)]]
            free = free[: len(take)]
            g = len(take)
            t = max(len(encoded[i]) for i in take) - shared
            ids = torch.zeros((g, t), dtype=torch.long)
            lens = torch.tensor([len(encoded[i]) - shared for i in take])
            for r, i in enumerate(take):
                ids[r, : len(encoded[i]) - shared] = torch.tensor(encoded[i][shared:])
            p = torch.arange(t)[None].expand(g, t)
            causal = torch.ones(t, t, dtype=torch.bool).tril()
            mask = (causal[None] & (p < lens[:, None])[:, None, :])[:, None]
            if shared:
                mask = torch.cat([mask.new_ones((g, 1, t, shared)), mask], dim=-1)
            sl = torch.tensor(free)

            def write(i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[Any, Any]:
                kc[i][sl, :, shared : shared + t] = k
                vc[i][sl, :, shared : shared + t] = v
                if not shared:
                    return k, v
                kc[i][sl, :, :shared] = pk[i]
                vc[i][sl, :, :shared] = pv[i]
                return kc[i][sl, :, : shared + t], vc[i][sl, :, : shared + t]

            x = self._forward(self.embed[ids], p + shared, mask, write)
            last = x[torch.arange(g), lens - 1]
            logits[sl] = self._logits(last)
            for s, i in zip(free, take, strict=True):
                owner[s], step_of[s] = i, 0
                pos[s] = len(encoded[i])

        prefill(list(range(slots)))
        while True:
            live = [s for s in range(width) if owner[s] >= 0]
            if not live:
                break
            cur = logits[:width]
            if sampler is not None:
                sd = [seeds[owner[s]] if owner[s] >= 0 else 0 for s in range(width)]
                tok = sampler.sample(cur, sd, step_of[:width])
            else:
                tok = cur.argmax(-1)
            toks = tok.tolist()
            for s in live:
                i = owner[s]
                rows[i].append(toks[s])
                step_of[s] += 1
                if (
                    toks[s] in eos
                    or step_of[s] >= max_new_tokens
                    or (stop is not None and stop(rows[i]))
                ):
                    owner[s] = -1
            free = [s for s in range(width) if owner[s] < 0]
            if queue and (len(free) >= refill or len(free) == width):
                prefill(free)
            elif not queue and free:
                n_live = width - len(free)
                if n_live == 0:
                    break
                if n_live <= (3 * width) // 4:  # compact: live slots to the front
                    keep = [s for s in range(width) if owner[s] >= 0]
                    idx = torch.tensor(keep)
                    for i in range(len(self.layers)):
                        kc[i][:n_live] = kc[i][idx]
                        vc[i][:n_live] = vc[i][idx]
                    logits[:n_live] = logits[idx]
                    pos[:n_live] = pos[idx].clone()
                    owner[:n_live] = [owner[s] for s in keep]
                    step_of[:n_live] = [step_of[s] for s in keep]
                    toks = [toks[s] for s in keep]
                    width = n_live
            # one decode step over slots [0, width)
            if all(owner[s] < 0 for s in range(width)):
                continue
            tok_in = torch.tensor(
                [toks[s] if owner[s] >= 0 and step_of[s] > 0 else 0 for s in range(width)]
            )
            active = torch.tensor([owner[s] >= 0 and step_of[s] > 0 for s in range(width)])
            if not bool(active.any()):
                continue  # every live slot was just prefilled: its logits are ready
            p = pos[:width].clone()
            span = int(p.max()) + 1
            mask = (torch.arange(span)[None] <= p[:, None])[:, None, None]  # [W, 1, 1, L]
            ar = torch.arange(width)

            def write_step(
                i: int,
                k: torch.Tensor,
                v: torch.Tensor,
                ar: torch.Tensor = ar,
                p: torch.Tensor = p,
                width: int = width,
                span: int = span,
            ) -> tuple[Any, Any]:
                kc[i][ar, :, p] = k[:, :, 0]
                vc[i][ar, :, p] = v[:, :, 0]
                return kc[i][:width, :, :span], vc[i][:width, :, :span]

            x = self._forward(self.embed[tok_in][:, None], p[:, None], mask, write_step)
            new = self._logits(x[:, 0])
            # slots just prefilled keep their prefill logits (and position)
            logits[:width] = torch.where(active[:, None], new, logits[:width])
            pos[:width] = torch.where(active, p + 1, p)
        return rows


def _common_prefix(encoded: list[list[int]]) -> int:
    """Length of the token prefix every prompt shares, leaving each at least one token."""
    first, n = encoded[0], min(len(e) for e in encoded) - 1
    k = 0
    while k < n and all(e[k] == first[k] for e in encoded):
        k += 1
    return max(k, 0)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    if n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class FastBackend(TokenFinisher):
    """:class:`LlamaEngine` behind the Backend protocol (generation only); the ``hf:`` loop
    where the engine cannot run."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        dtype: str = "float32",
        threads: int = 0,
        trust_remote_code: bool = False,
        **load: Any,
    ):
        self.name = str(spec)
        precision = _precision(dtype, self.name)
        inner = fast_inner(spec)
        weights = inner.backend.fingerprint(inner, trust_remote_code=trust_remote_code)
        self.fingerprint = fast_fingerprint(weights, precision)
        self.precision = precision
        self.threads = int(threads)
        if inner.kind == "zoo":
            load = {k: v for k, v in load.items() if k in ("zoo_config", "progress")}
        else:
            load = {k: v for k, v in load.items() if k == "allow_download"}
            load["trust_remote_code"] = trust_remote_code
        model, tok, _, fp = inner.backend.parts_loader()(
            inner, device="cpu", dtype=precision, **load
        )
        if fp != weights:
            raise BbiError(f"{self.name}: its files changed while it was loading; retry")
        self.model = model
        self.tokenizer = tok
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = tok.eos_token_id
        self.eos_ids = sorted(
            {int(e) for e in (eos if isinstance(eos, list | tuple) else [eos]) if e is not None}
        )
        self.chat_format = format_prompt(tok, "x")[1]
        self.fallback = unsupported_reason(model)
        if self.fallback:
            warnings.warn(
                f"{self.name}: the fast engine cannot run this model ({self.fallback}); "
                "generating with the hf: loop instead",
                stacklevel=2,
            )
            self.engine = None
        else:
            self.engine = LlamaEngine(model, resolve_dtype(precision, torch.device("cpu")))

    def count_prompt_tokens(self, prompt: str) -> int:
        return len(self.encode_prompt(prompt))

    def generate(
        self,
        prompts: list[str],
        config: GenerationConfig,
        seeds: list[int],
        progress: bool = False,
    ) -> list[Generation]:
        """One generation per prompt; row i depends only on (prompt i, config, seeds[i])."""
        check_generate_args(prompts, seeds)
        if not prompts:
            return []
        if self.model is None:
            raise BbiError(f"{self.name}: the engine was closed")
        encoded = [self.encode_prompt(p) for p in prompts]
        stop = (lambda row: self._has_stop(row, config.stop)) if config.stop else None
        with _threads(self.threads):
            if self.engine is None:
                return self._in_batches(encoded, config, seeds, progress, self._hf_batch)
            rows = self.engine.generate(
                encoded,
                seeds,
                slots=config.batch_size,
                eos_ids=self.eos_ids,
                max_new_tokens=config.max_new_tokens,
                temperature=config.temperature,
                top_p=config.top_p,
                do_sample=config.do_sample,
                stop=stop,
            )
        return [self._finish(r, config) for r in rows]

    def _hf_batch(
        self, encoded: list[list[int]], config: GenerationConfig, seeds: list[int]
    ) -> list[Generation]:
        rows = decode_rows(
            self.model,
            encoded,
            seeds,
            pad_id=self.pad_id,
            eos_ids=self.eos_ids,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            do_sample=config.do_sample,
            stop=(lambda row: self._has_stop(row, config.stop)) if config.stop else None,
        )
        return [self._finish(r, config) for r in rows]

    def score(self, prompts: list[str], texts: list[str]) -> list[TokenScores]:
        raise BbiError(f"{self.name}: scoring is not supported on fast:; use the wrapped spec")

    def close(self) -> None:
        self.model = None
        self.engine = None


def _precision(dtype: str, name: str) -> str:
    d = (dtype or "float32").strip().lower()
    d = {"auto": "float32", "fp32": "float32", "bf16": "bfloat16"}.get(d, d)
    if d not in FAST_DTYPES:
        raise BbiError(f"{name}: dtype must be float32 or bfloat16 (got {dtype!r})")
    return d


def load_fast_backend(
    spec: ModelSpec,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    threads: int = 0,
    **load: Any,
) -> FastBackend:
    """Registry entry for ``fast:`` specs. The engine runs on the CPU (``device`` is not
    used); ``dtype`` is its precision (``auto`` = float32)."""
    return FastBackend(
        spec, dtype=dtype, threads=threads, trust_remote_code=trust_remote_code, **load
    )


__all__ = ["FastBackend", "LlamaEngine", "load_fast_backend", "unsupported_reason"]
