"""Wave-Density Attention (WDA): attention whose distance kernel is a routed sum of waves.

One readable file, written from the math in ``shared/specs/wda.md`` (not from the public
reference code, whose defects are listed there). Per head, a token i mixes the values of
the tokens j <= i with a density D(i - j) of their distance, learned as a sparse mixture
of wave masks chosen by a causal router; content enters only through scalar gates
k_j, q_i (and an optional low-rank linear-attention branch). The mixing is a causal FFT
convolution: O(S log S) per routing chunk, never an S x S matrix.

Notation: x [B, S, D] hidden states; H heads, head dim Hd = D // H; M masks of W waves.

Decisions (each one tested in ``tests/test_wda_attention.py``):

- Absolute distance. Features p1(d) = d / s and p2(d) = sqrt(d / s) use a FIXED
  ``distance_scale`` s (default 512), not the maximum sequence length: the reference
  divides by the configured length L, so changing L between phases rescales every mask.
  ``max_seq_len`` is only a guard (forward raises past it); it never enters the kernel.
- Wave masks: M_m(d) = sum_w a_mw phi(2 pi (f_mw1 p1(d) + f_mw2 p2(d)) + theta_mw),
  phi = sin or a triangle wave of the same period and phase; init f ~ N(0, 1.5^2),
  a = 0.5 + 0.02 N(0, 1), theta ~ pi N(0, 1), all from torch's (seedable) RNG.
- Causal chunked routing. The sequence is cut into routing chunks of ``route_chunk``
  positions; chunk c = [cR, (c+1)R) routes on the mean of the (non-padded) hidden states
  of positions < cR, through a per-head gate MLP D -> gate_hidden -> M (GELU). A chunk
  with no such position (the first) routes on a learned start vector (zeros at init, so
  the MLP bias decides; ``learned_start=False`` keeps it at zero). Position i's routing
  thus depends only on positions < start of its chunk <= i. The reference routes on the
  whole-sequence mean and leaks the future.
- Real sparse top-k: w = softmax(top-k(logits) / T) scattered into M slots, the other
  M - k exactly 0. The kernel gathers only the k selected masks; gradients reach the gate
  through the selected logits (the reference's hard + (soft - hard).detach() was dense in
  value and gradient-free for the gate). With ``top_k=1`` the single weight is 1, so the
  temperature has no effect on the forward pass.
- Temperature T is a persistent fp32 buffer (saved in the state dict, so a resumed run
  keeps its schedule) read by every forward pass, train and eval alike;
  ``set_temperature(T)`` changes it in place. (The reference wrote to an attribute that
  was never read, and evaluated at T = 1.) Like any buffer it follows ``module.to``:
  a bf16 module rounds T (0.1 -> 0.1001).
- Density D(d) = sigmoid(alpha K(d)), K(d) = sum_m w_m M_m(d), per (batch, head, chunk);
  optional Gaussian window exp(-d^2 / (2 sigma^2)) with an ABSOLUTE ``window`` sigma in
  tokens, off by default (the reference's always-on window was tied to L / 4).
- Routing schedule (``route_schedule``): "fixed" cuts a chunk every R tokens (the
  original layer, cost ~ S^2 log S / R, see below); "doubling" cuts [0, R), [R, 2R),
  [2R, 4R), ..., so S tokens get 1 + ceil(log2(S / R)) decisions and the mixing is one
  exactly causal dyadic FFT convolution, O(S log S log(S / R)) time and O(S) memory
  (``distill/wda/longconv.py`` has its derivation), computed with the normalisation,
  output gate and projection by one autograd function that keeps one [B, S, H, Hd+1]
  activation and recomputes the rest (``lean_mix``; False composes the same function from separate
  operations). Up to 3R tokens both schedules cut the same chunks; the WDAConfig
  default stays "fixed" so that saved students keep their function, while
  ``bbi distill wda`` defaults to "doubling" (docs/wda.md: measured).
- Mixing, per head: k_j = sigmoid(W_k x_j), q_i = sigmoid(W_q x_i) (one scalar per head,
  biased), v_j = W_v x_j, and
      ctx_i = sum_{j<=i} D(i-j) k_j v_j / (sum_{j<=i} D(i-j) k_j + 1e-8).
  Numerator and denominator are computed together on the stacked signal [k_j v_j, k_j]
  (fp32; fp64 for fp64 inputs). Fixed schedule: each routing chunk c = [s, e) has its
  own kernel D_c and
  keeps only its own outputs, split in two exact parts: the prefix j < s as a causal FFT
  convolution of sig[0, s) with D_c (rfft/irfft, zero-padded to a power of two
  >= s + e, so linear, not circular), and the chunk itself, s <= j <= i, as a direct
  R x R lower-triangular Toeplitz sum. Cost ~ n_chunks * S log S + S * R; never an
  S x S matrix. Neither part ever reads a position > i, so the layer is causal bit for
  bit: a single FFT over the whole sequence would smear ~1e-6 of the future into the
  past through round-off. (The spec's "convolve the prefix [0, e_c)" would leak the same
  way inside a chunk; the in-chunk direct sum also makes the short, large-weight
  distances exact.) The denominator is clamped at 0 before adding 1e-8, since FFT
  round-off can make an exactly-zero sum slightly negative.
- Optional content branch (``content_rank`` r > 0): rank-r causal linear attention with
  feature map elu + 1 (causal cumulative sums, memory B*S*H*r*Hd), mixed in as
  (1 - c) ctx + c content with a fixed c = ``content_mix``. Off by default.
- Output gate o_i = q_i ctx_i + (1 - q_i) v_i, then the output projection D -> D.
- Padding (attention_mask == 0): k_j = 0 (no contribution to any sum), excluded from the
  routing means, and ctx = content = 0 at padded positions (their outputs are finite but
  meaningless). Distances are measured from each row's FIRST REAL token: a left-padded
  row (HF batched generation) is realigned so that its real tokens start at position 0,
  which puts its routing-chunk boundaries where the unpadded row has them; its real
  outputs then equal the unpadded run's. Padding after the first real token (the middle
  of a row) still counts in distances and chunk positions.
- Incremental decoding: ``forward(x, cache=..., return_cache=True)`` with a
  ``WDACache`` (past k_j v_j and k_j, each row's first real index, routing prefix
  sums/counts at the current chunk boundary and within the current chunk, the current
  routing decision, the content branch's running state, the mask bank M_m(d) for the
  distances seen, so a new token evaluates the waves at one new distance only; a cache is
  therefore tied to the weights that built it). New tokens are processed one
  by one with a direct O(T) sum; the results equal the full forward pass up to fp32
  round-off (the FFT path and the direct sum round differently). A near-tie between two
  gate logits could in principle pick a different mask in the two paths, since their
  prefix sums round differently at the ulp level.
- Diagnostics: the last routing weights (dense [B, C, H, M], in the realigned frame)
  and logits are kept; ``routing_stats()`` reports the mean number of active masks
  (weight > 1e-6), the entropy of the weights actually used (nats) and entropy / ln M at
  the temperature in use, plus the entropy of the full softmax over all M masks (ln M,
  i.e. a normalised value of 1, is uniform routing: the collapse signature the
  reference's "routing health" numbers show).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.wda.longconv import (
    doubling_boundary,
    doubling_chunk_of,
    doubling_conv,
    doubling_mix,
    doubling_starts,
    wave_bank,
)

EPS = 1e-8  # the formula's denominator epsilon
ACTIVE = 1e-6  # a routing weight above this counts as an active mask


@dataclass
class WDAConfig:
    """Hyper-parameters of one Wave-Density Attention layer (see the module docstring)."""

    hidden_size: int = 576
    num_heads: int = 9
    num_masks: int = 24  # M
    num_waves: int = 8  # W
    top_k: int = 4
    temperature: float = 1.0  # initial gate temperature T (a buffer; set_temperature)
    kernel: Literal["sine", "triangle"] = "sine"
    distance_scale: float = 512.0  # s in p1 = d / s, p2 = sqrt(d / s); NOT the max length
    max_seq_len: int | None = None  # guard only: never enters the kernel
    alpha: float = 3.0  # D = sigmoid(alpha * K)
    window: float | None = None  # Gaussian window sigma in tokens; None = off
    gate_hidden: int = 128
    route_chunk: int = 64
    # "fixed": a routing decision every route_chunk tokens (cost ~ S^2 log S / R);
    # "doubling": chunks [0, R), [R, 2R), [2R, 4R), ... (cost ~ S log S log(S / R))
    route_schedule: Literal["fixed", "doubling"] = "fixed"
    learned_start: bool = True
    content_rank: int = 0  # 0 = no content branch
    content_mix: float = 0.15
    bias: bool = False  # bias of the value and output projections (q/k gates always have one)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by {self.num_heads}")
        if not 1 <= self.top_k <= self.num_masks:
            raise ValueError(f"top_k must be in [1, num_masks={self.num_masks}]")
        if self.kernel not in ("sine", "triangle"):
            raise ValueError(f"kernel must be 'sine' or 'triangle', not {self.kernel!r}")
        if self.route_schedule not in ("fixed", "doubling"):
            raise ValueError(
                f"route_schedule must be 'fixed' or 'doubling', not {self.route_schedule!r}"
            )
        if self.temperature <= 0 or self.distance_scale <= 0 or self.route_chunk < 1:
            raise ValueError("temperature, distance_scale and route_chunk must be positive")
        if self.window is not None and self.window <= 0:
            raise ValueError("window must be positive (or None)")
        if self.content_rank < 0 or not 0.0 <= self.content_mix <= 1.0:
            raise ValueError("content_rank must be >= 0 and content_mix in [0, 1]")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass
class WDACache:
    """Decoding state after ``seen`` positions (fp32; frames as in the input, padding kept)."""

    kv: Tensor  # [B, T, H, Hd]  k_j * v_j of every past position (0 where padded)
    k: Tensor  # [B, T, H]  k_j (0 where padded)
    first: Tensor  # [B] long  index of the row's first real token, -1 if none yet
    route_sum: Tensor  # [B, D]  sum of real x_j before the current routing chunk
    route_count: Tensor  # [B]
    chunk_sum: Tensor  # [B, D]  sum of real x_j inside the current chunk so far
    chunk_count: Tensor  # [B]
    route_idx: Tensor  # [B, H, k]  the current chunk's selected masks
    route_val: Tensor  # [B, H, k]  and their weights
    content_kv: Tensor | None = None  # [B, H, r, Hd]  sum_j phi(kc_j) v_j^T
    content_k: Tensor | None = None  # [B, H, r]  sum_j phi(kc_j)
    bank: Tensor | None = None  # [H, M, T]  M_m(d) for d < T (the weights must stay fixed)

    @property
    def seen(self) -> int:
        return self.kv.shape[1]


def triangle(x: Tensor) -> Tensor:
    """Triangle wave with sin's period, range and phase: 0 at 0, +1 at pi/2, -1 at 3pi/2."""
    # u = x / 2pi + 1/4; tri = 4 |u - round(u)| - 1
    u = x / (2 * math.pi) + 0.25
    return 4 * (u - torch.floor(u + 0.5)).abs() - 1


class WaveDensityAttention(nn.Module):
    """Causal WDA layer: x [B, S, D] -> [B, S, D] (optionally with a decoding cache)."""

    # the doubling path's mixing as one memory-lean autograd function (longconv.DoublingMix);
    # False composes it from separate operations (the same function, more activations kept)
    lean_mix: bool = True

    def __init__(self, config: WDAConfig) -> None:
        super().__init__()
        self.config = cfg = config
        H, M, W = cfg.num_heads, cfg.num_masks, cfg.num_waves
        D, G = cfg.hidden_size, cfg.gate_hidden
        # wave parameters per (head, mask, wave): f (two features), a, theta
        self.freqs = nn.Parameter(1.5 * torch.randn(H, M, W, 2))
        self.amps = nn.Parameter(0.5 + 0.02 * torch.randn(H, M, W))
        self.phases = nn.Parameter(math.pi * torch.randn(H, M, W))
        # per-head gate MLP D -> G -> M, batched over heads (nn.Linear's uniform init)
        self.gate_w1 = nn.Parameter(_uniform((H, D, G), D))
        self.gate_b1 = nn.Parameter(_uniform((H, G), D))
        self.gate_w2 = nn.Parameter(_uniform((H, G, M), G))
        self.gate_b2 = nn.Parameter(_uniform((H, M), G))
        if cfg.learned_start:
            self.start = nn.Parameter(torch.zeros(D))
        else:
            self.register_buffer("start", torch.zeros(D))
        self.q_mod = nn.Linear(D, H)  # q_i: one scalar gate per head
        self.k_mod = nn.Linear(D, H)  # k_j: one scalar weight per head
        self.v_proj = nn.Linear(D, D, bias=cfg.bias)
        self.o_proj = nn.Linear(D, D, bias=cfg.bias)
        r = cfg.content_rank
        self.content_q = nn.Linear(D, H * r, bias=False) if r else None
        self.content_k = nn.Linear(D, H * r, bias=False) if r else None
        self.register_buffer("temperature", torch.tensor(float(cfg.temperature)))
        self.last_routing: Tensor | None = None  # [B, C, H, M] dense weights of the last call
        self.last_logits: Tensor | None = None  # [B, C, H, M]
        self.last_valid: Tensor | None = None  # [B, C] decisions that route a real token

    # ----------------------------------------------------------------- building blocks

    def set_temperature(self, temperature: float) -> None:
        """Set the gate temperature T used by every later forward pass (train and eval)."""
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature.fill_(float(temperature))

    def wave_masks(self, dist: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """All masks M_m(d) at distances ``dist`` [L]: [H, M, L] (fp32 unless asked)."""
        # p1 = d / s, p2 = sqrt(d / s) with a fixed absolute scale s
        u = dist.to(dtype) / self.config.distance_scale
        p = torch.stack([u, u.sqrt()], dim=-1)  # [L, 2]
        # phase_hmw(d) = 2 pi (f_hmw1 p1(d) + f_hmw2 p2(d)) + theta_hmw
        phase = 2 * math.pi * torch.einsum("hmwc,lc->hmwl", self.freqs.to(dtype), p)
        phase = phase + self.phases.to(dtype)[..., None]
        waves = torch.sin(phase) if self.config.kernel == "sine" else triangle(phase)
        # M_hm(d) = sum_w a_hmw phi(phase_hmw(d))
        return (self.amps.to(dtype)[..., None] * waves).sum(dim=2)

    def wave_masks_lean(self, dist: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """``wave_masks`` with O(H M L) memory: blocks of distances, a fused backward.

        Autograd through ``wave_masks`` keeps the [H, M, W, L] phases and waves, W times the
        bank, for every distance; the long path recomputes them (``longconv.WaveBank``).
        """
        u = dist.to(dtype) / self.config.distance_scale
        feats = torch.stack([u, u.sqrt()], dim=-1)  # [L, 2]
        return wave_bank(
            self.freqs.to(dtype), self.amps.to(dtype), self.phases.to(dtype), feats,
            self.config.kernel,
        )  # fmt: skip

    def route(self, pooled: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gate MLP on pooled states [N, D] -> (top-k indices, weights [N, H, k], logits)."""
        dt = pooled.dtype  # fp32 (fp64 for fp64 inputs)
        h = torch.einsum("nd,hdg->nhg", pooled, self.gate_w1.to(dt))
        h = F.gelu(h + self.gate_b1.to(dt))
        logits = torch.einsum("nhg,hgm->nhm", h, self.gate_w2.to(dt)) + self.gate_b2.to(dt)
        # sparse top-k: w = softmax(top-k(l) / T) on the k kept logits, exact 0 elsewhere;
        # the gradient flows to the gate through the kept logits
        top_val, top_idx = logits.topk(self.config.top_k, dim=-1)
        weights = torch.softmax(top_val / self.temperature.to(dt), dim=-1)
        return top_idx, weights, logits

    def density(self, bank: Tensor, idx: Tensor, val: Tensor, dist: Tensor) -> Tensor:
        """D(d) = sigmoid(alpha sum_{m in top-k} w_m M_m(d)): [N, H, L] from idx/val [N, H, k]."""
        n, _, k = idx.shape
        length = bank.shape[-1]
        sel = bank.unsqueeze(0).expand(n, -1, -1, -1)  # [N, H, M, L]
        sel = sel.gather(2, idx.unsqueeze(-1).expand(n, -1, k, length))  # only k masks
        kernel = (val.unsqueeze(-1) * sel).sum(dim=2)  # K(d) [N, H, L]
        dens = torch.sigmoid(self.config.alpha * kernel)
        if self.config.window is not None:  # optional absolute Gaussian window
            dens = dens * torch.exp(-(dist.to(dens.dtype) ** 2) / (2 * self.config.window**2))
        return dens

    def _project(self, x: Tensor, m: Tensor) -> tuple[Tensor, ...]:
        """Pointwise parts: k [B,S,H] (0 on padding), q [B,S,H], v [B,S,H,Hd], content features."""
        B, S, _ = x.shape
        H, Hd = self.config.num_heads, self.config.head_dim
        dt = m.dtype  # the working precision: fp32, or fp64 for fp64 inputs
        k = torch.sigmoid(self.k_mod(x)).to(dt) * m[..., None]
        q = torch.sigmoid(self.q_mod(x)).to(dt)
        v = self.v_proj(x).to(dt).view(B, S, H, Hd)
        if self.content_q is None or self.content_k is None:
            return k, q, v, None, None
        r = self.config.content_rank
        # linear-attention features phi(z) = elu(z) + 1 > 0; padded keys contribute nothing
        fq = F.elu(self.content_q(x).to(dt).view(B, S, H, r)) + 1
        fk = (F.elu(self.content_k(x).to(dt).view(B, S, H, r)) + 1) * m[..., None, None]
        return k, q, v, fq, fk

    def _pooled(self, total: Tensor, count: Tensor) -> Tensor:
        """Routing input: mean of the prefix, or the start vector when the prefix is empty."""
        mean = total / count.clamp_min(1)[..., None]
        return torch.where(count[..., None] > 0, mean, self.start.to(mean.dtype).expand_as(mean))

    def _output(self, x: Tensor, q: Tensor, ctx: Tensor, v: Tensor) -> Tensor:
        # o_i = q_i ctx_i + (1 - q_i) v_i, then the output projection
        o = q[..., None] * ctx + (1 - q[..., None]) * v
        return self.o_proj(o.flatten(2).to(x.dtype))

    # ----------------------------------------------------------------------- forward

    def forward(
        self,
        x: Tensor,
        attention_mask: Tensor | None = None,
        cache: WDACache | None = None,
        return_cache: bool = False,
    ) -> Tensor | tuple[Tensor, WDACache]:
        """Mix x [B, S, D]; ``attention_mask`` [B, S] (1 real, 0 padding).

        Without a cache this is the full (prefill) pass; with one, x holds the new tokens
        after ``cache.seen`` positions (a mask may cover only them or all positions so far).
        Returns the output [B, S, D], plus the updated cache if ``return_cache``.
        """
        if x.dim() != 3 or x.shape[-1] != self.config.hidden_size:
            raise ValueError(f"expected x [B, S, {self.config.hidden_size}], got {tuple(x.shape)}")
        B, S, _ = x.shape
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        if attention_mask is None:
            m = x.new_ones(B, S, dtype=work)
        else:
            if cache is not None and attention_mask.shape[-1] == cache.seen + S:
                attention_mask = attention_mask[:, -S:]
            if attention_mask.shape != (B, S):
                raise ValueError(
                    f"attention_mask must be [B, S], got {tuple(attention_mask.shape)}"
                )
            m = (attention_mask != 0).to(work)
        if cache is None:
            out, new_cache = self._forward_full(x, m, return_cache)
        else:
            out, new_cache = self._decode(x, m, cache)
        return (out, new_cache) if return_cache else out

    def _forward_full(
        self, x: Tensor, m: Tensor, build_cache: bool
    ) -> tuple[Tensor, WDACache | None]:
        cfg = self.config
        B, S, D = x.shape
        H, Hd, R = cfg.num_heads, cfg.head_dim, cfg.route_chunk
        work = m.dtype
        k, q, v, fq, fk = self._project(x, m)

        # realign each row to its first real token (left padding -> right padding)
        has = m.bool().any(dim=1)
        first = torch.where(has, m.argmax(dim=1), torch.zeros_like(has, dtype=torch.long))
        if cfg.max_seq_len is not None and S - int(first.min()) > cfg.max_seq_len:
            raise ValueError(f"sequence of {S - int(first.min())} > max_seq_len {cfg.max_seq_len}")
        pos = torch.arange(S, device=x.device)
        shift = (pos + first[:, None]) % S if bool(first.any()) else None

        def rel(t: Tensor) -> Tensor:  # original -> realigned frame
            if shift is None:
                return t
            idx = shift.view(B, S, *([1] * (t.dim() - 2))).expand_as(t)
            return t.gather(1, idx)

        xr, mr, kr, vr = rel(x), rel(m), rel(k), rel(v)

        # causal chunked routing: chunk c routes on the mean of real x_j before its start
        xm = xr.to(work) * mr[..., None]
        if cfg.route_schedule == "fixed":  # chunk c = [cR, (c+1)R)
            C, Cp = -(-S // R), S // R + 1  # chunks used; +1 so the next position's exists
            pad = Cp * R - S
            chunk_sum = F.pad(xm, (0, 0, 0, pad)).view(B, Cp, R, D).sum(dim=2)
            chunk_cnt = F.pad(mr, (0, pad)).view(B, Cp, R).sum(dim=2)
        else:  # doubling: [0, R), [R, 2R), [2R, 4R), ...
            starts = doubling_starts(S, R)  # chunks covering positions 0..S
            C, Cp = len(doubling_starts(S - 1, R)), len(starts)
            bounds = list(zip(starts, [*starts[1:], S + 1], strict=True))
            chunk_sum = torch.stack([xm[:, s:e].sum(dim=1) for s, e in bounds], dim=1)
            chunk_cnt = torch.stack([mr[:, s:e].sum(dim=1) for s, e in bounds], dim=1)
        del xm  # [B, S, D]: not needed past the chunk sums
        # exclusive prefix over chunks: sum_{c' < c} (sequential, as the decoder adds them)
        route_sum = torch.cat([chunk_sum.new_zeros(B, 1, D), chunk_sum.cumsum(1)[:, :-1]], 1)
        route_cnt = torch.cat([chunk_cnt.new_zeros(B, 1), chunk_cnt.cumsum(1)[:, :-1]], 1)
        idx, val, logits = self.route(self._pooled(route_sum, route_cnt).view(B * Cp, D))
        idx, val = idx.view(B, Cp, H, -1), val.view(B, Cp, H, -1)
        self._keep_routing(
            idx[:, :C], val[:, :C], logits.view(B, Cp, H, -1)[:, :C], chunk_cnt[:, :C] > 0
        )

        # ctx_i = sum_{j<=i} D_c(i-j) k_j v_j / (sum_{j<=i} D_c(i-j) k_j + eps), c = chunk(i),
        # on the stacked signal [k_j v_j, k_j]
        gated = None  # the output gate's result, when the mixing function applies it
        if cfg.route_schedule == "doubling":
            # one kernel per doubling chunk, an exactly causal dyadic FFT convolution
            dist = torch.arange(S, device=x.device)
            bank = self.wave_masks_lean(dist, work)
            dens = self.density(bank, idx[:, :C].flatten(0, 1), val[:, :C].flatten(0, 1), dist)
            dens = dens.view(B, C, H, S)
        if cfg.route_schedule == "doubling" and self.lean_mix:
            # one autograd function for the signal, convolution, normalisation and (without
            # the content branch) the output gate: it keeps one [B, S, H, Hd+1] tensor
            if fq is None:  # with the output projection when it runs in the working dtype
                proj = (self.o_proj.weight, self.o_proj.bias) if x.dtype == work else (None, None)
                gated = doubling_mix(kr, vr, mr, dens, rel(q), R, EPS, *proj)
            else:
                ctx = doubling_mix(kr, vr, mr, dens, None, R, EPS)
        else:
            sig = torch.cat([kr[..., None] * vr, kr[..., None]], dim=-1)  # [B, S, H, Hd+1]
            if cfg.route_schedule == "doubling":
                y = doubling_conv(sig, dens, R)
            else:
                y, bank = self._mix_fixed(sig, idx[:, :C], val[:, :C])
            ctx = y[..., :Hd] / (y[..., Hd:].clamp_min(0) + EPS)
            ctx = ctx * mr[..., None, None]

        skv = sk = None
        if fq is not None and fk is not None:  # rank-r causal linear attention
            fqr, fkr = rel(fq), rel(fk)
            skv = torch.cumsum(fkr[..., None] * vr[..., None, :], dim=1)  # [B, S, H, r, Hd]
            sk = torch.cumsum(fkr, dim=1)  # [B, S, H, r]
            num = torch.einsum("bshr,bshrd->bshd", fqr, skv)
            den = torch.einsum("bshr,bshr->bsh", fqr, sk)
            content = num / (den[..., None] + EPS) * mr[..., None, None]
            ctx = (1 - cfg.content_mix) * ctx + cfg.content_mix * content

        back = None if shift is None else ((pos - first[:, None]) % S).view(B, S, 1, 1)
        if gated is not None:  # o = q ctx + (1 - q) v, already formed (pointwise), maybe projected
            if back is not None:  # back to the original frame
                idx = back.view(B, S, *([1] * (gated.dim() - 2)))
                gated = gated.gather(1, idx.expand_as(gated))
            out = gated if gated.dim() == 3 else self.o_proj(gated.flatten(2).to(x.dtype))
        else:
            if back is not None:  # back to the original frame
                ctx = ctx.gather(1, back.expand_as(ctx))
            out = self._output(x, q, ctx, v)
        if not build_cache:
            return out, None

        # the cache describes the state before the next position (realigned index n_b)
        n_real = torch.where(has, S - first, torch.zeros_like(first))
        fixed = cfg.route_schedule == "fixed"
        c_next = n_real // R if fixed else doubling_chunk_of(n_real, R)
        rows = torch.arange(B, device=x.device)
        new_cache = WDACache(
            kv=k[..., None] * v,
            k=k,
            first=torch.where(has, first, torch.full_like(first, -1)),
            route_sum=route_sum[rows, c_next],
            route_count=route_cnt[rows, c_next],
            chunk_sum=chunk_sum[rows, c_next],
            chunk_count=chunk_cnt[rows, c_next],
            route_idx=idx[rows, c_next],
            route_val=val[rows, c_next],
            content_kv=None if skv is None else skv[:, -1],
            content_k=None if sk is None else sk[:, -1],
            bank=bank[..., :S],
        )
        return out, new_cache

    def _mix_fixed(self, sig: Tensor, idx: Tensor, val: Tensor) -> tuple[Tensor, Tensor]:
        """Mixing with a kernel per fixed R-chunk: (y [B, S, H, Hd+1], mask bank [H, M, C*R]).

        Split j <= i into the chunk's own positions (a direct R x R triangular sum) and the
        prefix j < cR (one causal FFT convolution of the prefix with D_c). Neither part
        reads a position > i, so the result is causal bit for bit, not just up to FFT
        round-off (an FFT over the whole sequence smears ~1e-6 of the future into the past).
        """
        B, S, H, E = sig.shape
        R, C, Hd = self.config.route_chunk, idx.shape[1], E - 1
        dist = torch.arange(C * R, device=sig.device)
        bank = self.wave_masks(dist, sig.dtype)
        dens = self.density(bank, idx.flatten(0, 1), val.flatten(0, 1), dist)
        dens = dens.view(B, C, H, C * R)  # D_c(d), d < C*R
        sig = F.pad(sig, (0, 0, 0, 0, 0, C * R - S))  # [B, C*R, H, Hd+1]
        # within-chunk: y_i += sum_{s_c <= j <= i} D_c(i - j) sig_j
        lag = torch.arange(R, device=sig.device)
        lag = lag[:, None] - lag[None, :]  # i - j
        toeplitz = dens[..., :R][..., lag.clamp_min(0)] * (lag >= 0)  # [B, C, H, R, R]
        y = torch.einsum("bchij,bcjhe->bcihe", toeplitz, sig.view(B, C, R, H, Hd + 1))
        y = y.reshape(B, C * R, H, Hd + 1)
        # prefix: y_i += sum_{j < s_c} D_c(i - j) sig_j, zero-padded FFT, n >= s_c + e_c
        sig_t = sig.permute(0, 2, 3, 1)  # [B, H, Hd+1, C*R]
        cross = [torch.zeros_like(y[:, :R])]
        for c in range(1, C):
            s, e = c * R, (c + 1) * R
            n = 1 << (s + e - 1).bit_length()
            f_sig = torch.fft.rfft(sig_t[..., :s], n=n)
            f_den = torch.fft.rfft(dens[:, c, :, :e], n=n)[:, :, None]
            cross.append(torch.fft.irfft(f_sig * f_den, n=n)[..., s:e].permute(0, 3, 1, 2))
        return (y + torch.cat(cross, dim=1))[:, :S], bank

    def _decode(self, x: Tensor, m: Tensor, cache: WDACache) -> tuple[Tensor, WDACache]:
        """New tokens one at a time, each a direct O(T) sum over the cached past."""
        outs, decisions, logit_rows = [], [], []
        for t in range(x.shape[1]):
            out, cache, dense, logits = self._decode_one(x[:, t : t + 1], m[:, t], cache)
            outs.append(out)
            decisions.append(dense)
            logit_rows.append(logits)
        self.last_routing = torch.stack(decisions, 1).detach()
        self.last_logits = torch.stack(logit_rows, 1).detach()
        self.last_valid = m.bool()
        return torch.cat(outs, dim=1), cache

    def _decode_one(
        self, x: Tensor, m: Tensor, cache: WDACache
    ) -> tuple[Tensor, WDACache, Tensor, Tensor]:
        cfg = self.config
        B, _, D = x.shape
        R, t = cfg.route_chunk, cache.seen
        k, q, v, fq, fk = self._project(x, m[:, None])

        # position relative to the row's first real token
        first = torch.where(
            (cache.first < 0) & (m > 0), torch.full_like(cache.first, t), cache.first
        )
        started = first >= 0
        p = torch.where(started, t - first, torch.zeros_like(first))
        if cfg.max_seq_len is not None and int(p.max()) >= cfg.max_seq_len:
            raise ValueError(f"position {int(p.max())} >= max_seq_len {cfg.max_seq_len}")

        # at a chunk boundary the finished chunk joins the routing prefix and we re-route
        if cfg.route_schedule == "fixed":
            boundary = started & (p % R == 0)
        else:
            boundary = started & doubling_boundary(p, R)
        b1 = boundary[:, None]
        route_sum = torch.where(b1, cache.route_sum + cache.chunk_sum, cache.route_sum)
        route_count = torch.where(
            boundary, cache.route_count + cache.chunk_count, cache.route_count
        )
        chunk_sum = torch.where(b1, torch.zeros_like(cache.chunk_sum), cache.chunk_sum)
        chunk_count = torch.where(boundary, torch.zeros_like(cache.chunk_count), cache.chunk_count)
        idx, val, logits = self.route(self._pooled(route_sum, route_count))
        redo = (boundary | ~started)[:, None, None]
        idx, val = torch.where(redo, idx, cache.route_idx), torch.where(redo, val, cache.route_val)
        chunk_sum = chunk_sum + x[:, 0].to(m.dtype) * m[:, None]
        chunk_count = chunk_count + m

        kv = torch.cat([cache.kv, (k[..., None] * v)], dim=1)  # [B, t+1, H, Hd]
        kk = torch.cat([cache.k, k], dim=1)  # [B, t+1, H]
        # masks at distances 0..t: extend the cached bank by the one new distance t
        dist = torch.arange(t + 1, device=x.device)
        new = self.wave_masks(dist[t:], m.dtype)
        bank = new if cache.bank is None else torch.cat([cache.bank.to(new.dtype), new], dim=-1)
        dens = self.density(bank, idx, val, dist)  # D(d), d = 0..t
        w = dens.flip(-1)  # w[j] = D(t - j)
        num = torch.einsum("bhj,bjhd->bhd", w, kv)
        den = torch.einsum("bhj,bjh->bh", w, kk)
        ctx = num / (den.clamp_min(0)[..., None] + EPS) * m[:, None, None]

        ckv = ck = None
        if fq is not None and fk is not None:
            if cache.content_kv is None or cache.content_k is None:
                raise ValueError("the cache has no content-branch state (content_rank > 0)")
            ckv = cache.content_kv + fk[:, 0, ..., None] * v[:, 0, :, None, :]
            ck = cache.content_k + fk[:, 0]
            cnum = torch.einsum("bhr,bhrd->bhd", fq[:, 0], ckv)
            cden = torch.einsum("bhr,bhr->bh", fq[:, 0], ck)
            content = cnum / (cden[..., None] + EPS) * m[:, None, None]
            ctx = (1 - cfg.content_mix) * ctx + cfg.content_mix * content

        out = self._output(x, q, ctx[:, None], v)
        new_cache = WDACache(
            kv=kv, k=kk, first=first, route_sum=route_sum, route_count=route_count,
            chunk_sum=chunk_sum, chunk_count=chunk_count, route_idx=idx, route_val=val,
            content_kv=ckv, content_k=ck, bank=bank,
        )  # fmt: skip
        dense = torch.zeros_like(logits).scatter(-1, idx, val)
        return out, new_cache, dense, logits

    def init_cache(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> WDACache:
        """An empty cache, to decode from the very first token without a prefill pass."""
        cfg = self.config
        B, H, Hd, D, k, r = (batch_size, cfg.num_heads, cfg.head_dim, cfg.hidden_size,
                             cfg.top_k, cfg.content_rank)  # fmt: skip
        z = dict(device=device, dtype=dtype)
        return WDACache(
            kv=torch.zeros(B, 0, H, Hd, **z), k=torch.zeros(B, 0, H, **z),
            first=torch.full((B,), -1, dtype=torch.long, device=device),
            route_sum=torch.zeros(B, D, **z), route_count=torch.zeros(B, **z),
            chunk_sum=torch.zeros(B, D, **z), chunk_count=torch.zeros(B, **z),
            route_idx=torch.zeros(B, H, k, dtype=torch.long, device=device),
            route_val=torch.zeros(B, H, k, **z),
            content_kv=torch.zeros(B, H, r, Hd, **z) if r else None,
            content_k=torch.zeros(B, H, r, **z) if r else None,
            bank=torch.zeros(H, cfg.num_masks, 0, **z),
        )  # fmt: skip

    # ------------------------------------------------------------------- diagnostics

    def _keep_routing(self, idx: Tensor, val: Tensor, logits: Tensor, valid: Tensor) -> None:
        self.last_routing = torch.zeros_like(logits).scatter(-1, idx, val).detach()
        self.last_logits = logits.detach()
        self.last_valid = valid.detach()

    @torch.no_grad()
    def routing_stats(self) -> dict[str, float]:
        """Routing health of the last forward call, at the temperature in use.

        ``entropy_norm`` = entropy / ln M of the weights actually used (at most ln k / ln M
        with top-k); ``dense_entropy_norm`` is the same for softmax(logits / T) over all M
        masks, where 1.0 means uniform routing: the gate has collapsed.
        """
        if self.last_routing is None or self.last_logits is None or self.last_valid is None:
            raise RuntimeError("routing_stats() needs a forward pass first")
        valid = self.last_valid
        if not bool(valid.any()):
            valid = torch.ones_like(valid)
        w = self.last_routing[valid]  # [N, H, M]
        temp = float(self.temperature)
        dense = torch.softmax(self.last_logits[valid] / temp, dim=-1)
        ln_m = math.log(self.config.num_masks)
        entropy = _entropy(w).mean().item()
        dense_entropy = _entropy(dense).mean().item()
        return {
            "active_masks": (w > ACTIVE).sum(-1).float().mean().item(),
            "entropy": entropy,
            "entropy_norm": entropy / ln_m,
            "dense_entropy": dense_entropy,
            "dense_entropy_norm": dense_entropy / ln_m,
            "temperature": temp,
            "top_k": float(self.config.top_k),
            "num_masks": float(self.config.num_masks),
        }


def _uniform(shape: tuple[int, ...], fan_in: int) -> Tensor:
    """nn.Linear's default init U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound)


def _entropy(p: Tensor) -> Tensor:
    """-sum p ln p over the last dim, with 0 ln 0 = 0."""
    return -torch.where(p > 0, p * p.clamp_min(1e-30).log(), torch.zeros_like(p)).sum(-1)
