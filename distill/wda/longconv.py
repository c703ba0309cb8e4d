"""WDA's long-context mixing: doubling routing chunks and an exactly causal FFT convolution.

With a new routing decision every R tokens, each chunk has its own kernel and its outputs
need their own convolution of the whole prefix: n_chunks FFTs of the sequence, cost
~ S^2 log S / R. With ``route_schedule="doubling"`` the chunks are [0, R), [R, 2R),
[2R, 4R), [4R, 8R), ...: chunk c >= 1 starts at R 2^(c-1) and is as long as everything
before it, so a sequence of S tokens has 1 + ceil(log2(S / R)) routing decisions, each
still made on the mean of the positions before its chunk (causal, as before).

The convolution y_i = sum_{j<=i} D_{c(i)}(i - j) sig_j (c(i) the chunk of i) is computed
by the dyadic ("relaxed") decomposition of a causal product. Pad the sequence to
P = R 2^m >= S; every pair j <= i either lies in one R-block (a direct R x R
lower-triangular Toeplitz sum) or has a lowest common dyadic block [a, a + L), L >= 2R,
with j in its left half and i in its right half [a + L/2, a + L). Each right half lies
inside a single routing chunk (a right half [mid, mid + L/2) has L/2 dividing mid; the
chunk containing mid is [R 2^k, R 2^(k+1)) and both its ends are multiples of L/2), so
all blocks of one size are one batched FFT of size L with one kernel per block:

    y[mid:a+L] += irfft(rfft(sig[a:mid], L) * rfft(D_c[0:L], L))[L/2:L]

(a linear convolution of length 1.5 L - 1 folded mod L only disturbs indices < L/2, which
are not read). Cost: sum over log2(P/R) sizes of P log L, i.e. O(S log S log(S/R)) with
no S x S matrix, and every output reads only sig_j, j <= i: the FFT of a left half mixes
positions before the output block only, so the result is causal bit for bit (an FFT
over the whole sequence would smear ~1e-6 of the future into the past).

The backward pass needs no causality of its own: for each routing chunk [s, e), one FFT
correlation of size >= 2e gives both grad sig_j = sum_{i in chunk} D_c(i - j) g_i and
grad D_c(d) = sum_{i in chunk} <g_i, sig_{i-d}>, O(S log S) in all; only sig and the
densities are kept for it (the spectra are recomputed, so memory stays O(S)).

The layer runs the whole mixing (stacked signal, this convolution, normalisation, output
gate) as one autograd function, :class:`DoublingMix`, one group of heads at a time: it
keeps the convolution's output and recomputes the rest in the backward pass, so the
doubling path holds fewer full-size activations than SDPA's fused attention.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

_BUDGET = 1 << 20  # elements per head group of the FFT work arrays (bounds peak memory)


def doubling_starts(n: int, chunk: int) -> list[int]:
    """Starts of the doubling routing chunks that cover positions 0..n (inclusive)."""
    starts, s = [0], chunk
    while s <= n:
        starts.append(s)
        s *= 2
    return starts


def doubling_chunk_of(pos: Tensor, chunk: int) -> Tensor:
    """Index of the doubling routing chunk of each position (0 for pos < chunk)."""
    q = pos // chunk
    # floor(log2 q) + 1 for q >= 1, exact for any int64 via the bit length
    bits = torch.zeros_like(q)
    rest = q.clone()
    while bool((rest > 0).any()):
        bits = bits + (rest > 0).long()
        rest = rest // 2
    return bits


def doubling_boundary(pos: Tensor, chunk: int) -> Tensor:
    """True where a doubling routing chunk starts: 0, R, 2R, 4R, ..."""
    q = pos // chunk
    return (pos % chunk == 0) & ((q & (q - 1)) == 0)


def _padded(n: int, chunk: int) -> int:
    p = chunk
    while p < n:
        p *= 2
    return p


def _head_groups(heads: int, per_head: int) -> list[slice]:
    size = max(1, _BUDGET // max(1, per_head))
    return [slice(h, min(h + size, heads)) for h in range(0, heads, size)]


def _conv_forward(xs: Tensor, ker: Tensor, chunk: int) -> Tensor:
    """y [B, H, E, P] from xs [B, H, E, P] and the chunks' kernels ker [B, C, H, P]."""
    B, H, E, P = xs.shape
    R = chunk
    starts = doubling_starts(P - 1, R)
    ends = [*starts[1:], P]
    y = torch.empty_like(xs)
    # within each R-block: y_i = sum_{block start <= j <= i} D_c(i - j) sig_j, direct
    lag = torch.arange(R, device=xs.device)
    lag = lag[:, None] - lag[None, :]  # i - j
    for c, (s, e) in enumerate(zip(starts, ends, strict=True)):
        toe = ker[:, c, :, :R][..., lag.clamp_min(0)] * (lag >= 0)  # [B, H, R, R]
        blocks = xs[..., s:e].reshape(B, H, E, (e - s) // R, R)
        y[..., s:e] = torch.einsum("bhij,bhenj->bheni", toe, blocks).reshape(B, H, E, e - s)
    # across blocks: the left half of every dyadic block of size L feeds its right half
    size = 2 * R
    while size <= P:
        n, half = P // size, size // 2
        mids = torch.arange(n, device=xs.device) * size + half
        cid = doubling_chunk_of(mids, R)  # each right half lies in one routing chunk
        f_ker = torch.fft.rfft(ker[..., :size], n=size)[:, cid]  # [B, n, H, F]
        f_ker = f_ker.permute(0, 2, 1, 3)[:, :, None]  # [B, H, 1, n, F]
        left = xs.view(B, H, E, n, size)[..., :half]
        spec = torch.fft.rfft(left, n=size).mul_(f_ker)
        part = torch.fft.irfft(spec, n=size)[..., half:]
        y.view(B, H, E, n, size)[..., half:] += part
        size *= 2
    return y


def _conv_backward(
    xs: Tensor, ker: Tensor, g: Tensor, chunk: int, need: tuple[bool, bool]
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients wrt xs [B, H, E, S] and ker [B, C, H, L] from g [B, H, E, S]."""
    B, H, E, S = xs.shape
    C, L = ker.shape[1], ker.shape[-1]
    starts = doubling_starts(S - 1, chunk)
    ends = [*starts[1:], S]
    g_x = torch.zeros_like(xs) if need[0] else None
    g_k = torch.zeros_like(ker) if need[1] else None
    for c, (s, e) in enumerate(zip(starts, ends, strict=True)):
        e = min(e, S)
        if c >= C or s >= e:
            break
        n = _padded(2 * e, 1)
        # g' = g on the chunk, g'_u = g_{s+u}; a correlation with g' at lag m gives the
        # result at j = s + m, i.e. index m mod n (no wrap: n >= 2e)
        f_g = torch.fft.rfft(g[..., s:e], n=n)
        if g_k is not None:
            # grad D_c(d) = sum_{i in [s, e)} <g_i, sig_{i-d}> = sum_t <sig_t, g'_{t + d - s}>
            f_x = torch.fft.rfft(xs[..., :e], n=n)
            # conj(f_x) f_g summed over channels, in f_x's storage (no conjugated copy)
            corr = torch.fft.irfft(f_x.conj_physical_().mul_(f_g).sum(dim=2), n=n)
            del f_x
            d = min(e, L)
            g_k[:, c, :, : min(s, d)] += corr[..., n - s : n - s + min(s, d)]
            if d > s:
                g_k[:, c, :, s:d] += corr[..., : d - s]
        if g_x is not None:
            # grad sig_j = sum_{i in [s, e)} D_c(i - j) g_i = sum_t D_c(t) g'_{t + j - s}
            f_k = torch.fft.rfft(ker[:, c, :, : min(e, L)], n=n)[:, :, None]
            r = torch.fft.irfft(f_g.mul_(f_k.conj()), n=n)
            g_x[..., :s] += r[..., n - s :]
            g_x[..., s:e] += r[..., : e - s]
    return g_x, g_k


class DoublingConv(torch.autograd.Function):
    """y_i = sum_{j<=i} D_{c(i)}(i - j) sig_j over doubling routing chunks (module docstring).

    ``sig`` [B, S, H, E]; ``dens`` [B, C, H, L] with C the chunks covering S, L >= 1 the
    kernel length (distances >= L count as 0); returns y [B, S, H, E].
    """

    @staticmethod
    def forward(ctx: Any, sig: Tensor, dens: Tensor, chunk: int) -> Tensor:
        ctx.save_for_backward(sig, dens)
        ctx.chunk = chunk
        B, S, H, E = sig.shape
        P = _padded(S, chunk)
        L = dens.shape[-1]
        ker = torch.nn.functional.pad(dens, (0, P - L)) if L < P else dens[..., :P]
        if ker.shape[1] < len(doubling_starts(P - 1, chunk)):  # chunks past S: never read
            extra = len(doubling_starts(P - 1, chunk)) - ker.shape[1]
            ker = torch.cat([ker, ker[:, -1:].expand(-1, extra, -1, -1)], dim=1)
        xs = torch.nn.functional.pad(sig.permute(0, 2, 3, 1), (0, P - S))  # [B, H, E, P]
        y = torch.empty_like(xs)
        for hs in _head_groups(H, B * E * P):
            y[:, hs] = _conv_forward(xs[:, hs].contiguous(), ker[:, :, hs], chunk)
        return y[..., :S].permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        sig, dens = ctx.saved_tensors
        need = (bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]))
        B, S, H, E = sig.shape
        xs = sig.permute(0, 2, 3, 1)
        g = grad.permute(0, 2, 3, 1)
        g_x = torch.zeros_like(xs) if need[0] else None
        g_k = torch.zeros_like(dens) if need[1] else None
        for hs in _head_groups(H, B * E * S):
            gx, gk = _conv_backward(
                xs[:, hs].contiguous(), dens[:, :, hs], g[:, hs].contiguous(), ctx.chunk, need
            )
            if g_x is not None and gx is not None:
                g_x[:, hs] = gx
            if g_k is not None and gk is not None:
                g_k[:, :, hs] = gk
        return (None if g_x is None else g_x.permute(0, 3, 1, 2), g_k, None)


def _phi(phase: Tensor, kernel: str) -> tuple[Tensor, Tensor]:
    """phi(phase) and phi'(phase) for the sine or the triangle wave (sin's period and phase)."""
    if kernel == "sine":
        return torch.sin(phase), torch.cos(phase)
    u = phase / (2 * math.pi) + 0.25
    frac = u - torch.floor(u + 0.5)
    return 4 * frac.abs() - 1, (2 / math.pi) * torch.sign(frac)


class WaveBank(torch.autograd.Function):
    """M_hm(d) = sum_w a_hmw phi(2 pi (f_hmw1 p1(d) + f_hmw2 p2(d)) + theta_hmw): [H, M, L].

    The same values as ``WaveDensityAttention.wave_masks``, evaluated in blocks of
    distances with a hand-written backward that recomputes the phases: autograd would keep
    the [H, M, W, L] phases and waves (W times the bank) for every distance.
    """

    @staticmethod
    def forward(
        ctx: Any, freqs: Tensor, amps: Tensor, phases: Tensor, feats: Tensor, kernel: str
    ) -> Tensor:
        ctx.save_for_backward(freqs, amps, phases, feats)
        ctx.kernel = kernel
        parts = []
        for i in range(0, feats.shape[0], _BLOCK):
            phase = _phase(freqs, phases, feats[i : i + _BLOCK])
            wave, _ = _phi(phase, kernel)
            parts.append(torch.einsum("hmw,hmwl->hml", amps, wave))
        return torch.cat(parts, dim=-1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:
        freqs, amps, phases, feats = ctx.saved_tensors
        g_amp = torch.zeros_like(amps)
        g_lin = freqs.new_zeros(*amps.shape, 3)  # d/d(f1, f2, theta) without the amplitude
        lin = torch.cat([2 * math.pi * feats, torch.ones_like(feats[:, :1])], dim=1)  # [L, 3]
        for i in range(0, feats.shape[0], _BLOCK):
            phase = _phase(freqs, phases, feats[i : i + _BLOCK])
            wave, slope = _phi(phase, kernel=ctx.kernel)
            g = grad[..., i : i + _BLOCK]
            g_amp += torch.einsum("hml,hmwl->hmw", g, wave)
            g_lin += torch.einsum("hmwl,hmlc->hmwc", slope, g[..., None] * lin[i : i + _BLOCK])
        g_lin = g_lin * amps[..., None]
        return g_lin[..., :2], g_amp, g_lin[..., 2], None, None


_BLOCK = 512  # distances per block of the wave bank


def _phase(freqs: Tensor, phases: Tensor, feats: Tensor) -> Tensor:
    # phase_hmwl = 2 pi (f_hmw1 p1_l + f_hmw2 p2_l) + theta_hmw
    return 2 * math.pi * torch.einsum("hmwc,lc->hmwl", freqs, feats) + phases[..., None]


def wave_bank(freqs: Tensor, amps: Tensor, phases: Tensor, feats: Tensor, kernel: str) -> Tensor:
    """The mask bank [H, M, L] at features ``feats`` [L, 2] = (p1, p2) (see :class:`WaveBank`)."""
    return WaveBank.apply(freqs, amps, phases, feats, kernel)


def doubling_conv(sig: Tensor, dens: Tensor, chunk: int) -> Tensor:
    """Causal mixing over doubling routing chunks (see :class:`DoublingConv`)."""
    return DoublingConv.apply(sig, dens, chunk)


def _signal(k: Tensor, v: Tensor, length: int) -> Tensor:
    """The stacked signal [k_j v_j, k_j] of k [B, S, h], v [B, S, h, Hd] as [B, h, Hd+1, length]."""
    B, S, h, Hd = v.shape
    xs = v.new_zeros(B, h, Hd + 1, length)
    torch.mul(k.permute(0, 2, 1)[:, :, None], v.permute(0, 2, 3, 1), out=xs[:, :, :Hd, :S])
    xs[:, :, Hd, :S] = k.permute(0, 2, 1)
    return xs


def _kernels(dens: Tensor, P: int, chunk: int) -> Tensor:
    """dens [B, C, H, L] padded or cut to P distances, with a kernel for every chunk below P."""
    L = dens.shape[-1]
    ker = torch.nn.functional.pad(dens, (0, P - L)) if L < P else dens[..., :P]
    extra = len(doubling_starts(P - 1, chunk)) - ker.shape[1]
    if extra > 0:  # chunks past S: never read
        ker = torch.cat([ker, ker[:, -1:].expand(-1, extra, -1, -1)], dim=1)
    return ker


class DoublingMix(torch.autograd.Function):
    """The whole mixing of the doubling path in one function, lean in memory.

    From k [B, S, H] (0 on padding), v [B, S, H, Hd], the mask m [B, S], the kernels
    dens [B, C, H, L], optionally q [B, S, H] and, with q, an output projection
    (weight [D_out, H Hd], bias [D_out] or None):

        y = DoublingConv([k v, k], dens)   ctx_i = m_i y_i[:Hd] / (max(y_i[Hd], 0) + eps)
        out = q ctx + (1 - q) v            (out = ctx when q is None)
        result = out W^T + b               (result = out without a weight)

    Composed of separate operations, autograd keeps the stacked signal, y, the context and
    each product's operands, and the backward pass makes full-size gradients of each.
    This function keeps only y (and its inputs, which the layer holds anyway) and works
    one group of heads at a time, so every temporary is the size of a head group: the
    signal is rebuilt from k and v in the backward pass, the context from y, and the
    projection's input (never whole: the projection sums the head groups' columns in
    turn) from both. The result and its gradients equal the composed operations' up to
    round-off (tested).
    """

    @staticmethod
    def forward(
        ctx: Any, k: Tensor, v: Tensor, m: Tensor, dens: Tensor, q: Tensor | None,
        weight: Tensor | None, bias: Tensor | None, chunk: int, eps: float,
    ) -> Tensor:  # fmt: skip
        B, S, H, Hd = v.shape
        P = _padded(S, chunk)
        ker = _kernels(dens, P, chunk)
        y = v.new_empty(B, H, Hd + 1, S)  # kept for the backward pass
        out = torch.empty_like(v) if weight is None else None
        res = None  # the projected output, accumulated over head groups
        if weight is not None:
            res = v.new_zeros(B * S, weight.shape[0]) if bias is None else bias.repeat(B * S, 1)
        mt = m[:, None, None, :]
        for hs in _head_groups(H, B * (Hd + 1) * P):
            yg = _conv_forward(_signal(k[:, :, hs], v[:, :, hs], P), ker[:, :, hs], chunk)
            y[:, hs] = yg[..., :S]
            del yg
            c = y[:, hs, :Hd] / (y[:, hs, Hd:].clamp_min(0) + eps) * mt  # [B, h, Hd, S]
            c = c.permute(0, 3, 1, 2)  # [B, S, h, Hd]
            if q is None and out is not None:
                out[:, :, hs] = c
            elif q is not None:
                qg = q[:, :, hs, None]
                o = qg * c + (1 - qg) * v[:, :, hs]
                if res is not None and weight is not None:
                    # the output projection too, one head group's columns at a time: its
                    # input is never whole, and recomputed per group in the backward pass
                    res.addmm_(o.reshape(B * S, -1), weight[:, hs.start * Hd : hs.stop * Hd].t())
                elif out is not None:
                    out[:, :, hs] = o
                del o
        ctx.save_for_backward(k, v, m, dens, q, y, weight)
        ctx.chunk, ctx.eps = chunk, eps
        if res is not None:
            return res.view(B, S, -1)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        k, v, m, dens, q, y, weight = ctx.saved_tensors
        B, S, H, Hd = v.shape
        need_k, need_v, _, need_d, need_q, need_w, need_b = ctx.needs_input_grad[:7]
        g2 = g_w = g_b = None
        if weight is not None:  # grad is the projection's output gradient [B, S, D_out]
            g2 = grad.reshape(B * S, -1)
            g_w = torch.zeros_like(weight) if need_w else None
            g_b = g2.sum(0) if need_b else None
        g_k = torch.zeros_like(k) if need_k else None
        g_v = torch.zeros_like(v) if need_v or (q is not None) else None
        g_q = torch.zeros_like(q) if (q is not None and need_q) else None
        g_d = torch.zeros_like(dens) if need_d else None
        mt = m[:, None, None, :]
        for hs in _head_groups(H, B * (Hd + 1) * S):
            num, den_raw = y[:, hs, :Hd], y[:, hs, Hd:]
            den = den_raw.clamp_min(0) + ctx.eps
            if g2 is not None and weight is not None:  # through the output projection
                h = hs.stop - hs.start
                cols = slice(hs.start * Hd, hs.stop * Hd)
                g_c = (g2 @ weight[:, cols]).view(B, S, h, Hd)
            else:
                g_c = grad[:, :, hs]  # [B, S, h, Hd]
            if q is not None:
                qg = q[:, :, hs, None]
                if g_q is not None or g_w is not None:
                    c = (num / den * mt).permute(0, 3, 1, 2)
                    if g_q is not None:
                        g_q[:, :, hs] = (g_c * (c - v[:, :, hs])).sum(-1)
                    if g_w is not None and g2 is not None:  # the projection's input, again
                        o = (qg * c + (1 - qg) * v[:, :, hs]).reshape(B * S, -1)
                        g_w[:, hs.start * Hd : hs.stop * Hd] = g2.t() @ o
                        del o
                    del c
                if g_v is not None:
                    g_v[:, :, hs] = (1 - qg) * g_c
                g_c = qg * g_c
            g_c = g_c.permute(0, 2, 3, 1) * mt  # [B, h, Hd, S]
            # ctx = num / den: d/dnum = 1 / den, d/dden = -num / den^2 (0 where clamped)
            g_y = torch.empty_like(y[:, hs])
            torch.div(g_c, den, out=g_y[:, :, :Hd])
            g_den = (g_c * num).sum(2, keepdim=True).div_(den * den).neg_()
            g_y[:, :, Hd:] = g_den.masked_fill_(den_raw < 0, 0)
            del g_c, g_den
            vg = v[:, :, hs].permute(0, 2, 3, 1)  # [B, h, Hd, S]
            gx, gk = _conv_backward(
                _signal(k[:, :, hs], v[:, :, hs], S), dens[:, :, hs], g_y, ctx.chunk,
                (need_k or need_v, need_d),
            )  # fmt: skip
            del g_y
            if gx is not None:
                if g_k is not None:  # sig = [k v, k]
                    g_k[:, :, hs] = (gx[:, :, Hd] + (gx[:, :, :Hd] * vg).sum(2)).transpose(1, 2)
                if g_v is not None and need_v:
                    g_v[:, :, hs] += (
                        gx[:, :, :Hd] * k[:, :, hs].transpose(1, 2)[:, :, None]
                    ).permute(0, 3, 1, 2)
            if g_d is not None and gk is not None:
                g_d[:, :, hs] = gk
        return g_k, (g_v if need_v else None), None, g_d, g_q, g_w, g_b, None, None


def doubling_mix(
    k: Tensor, v: Tensor, m: Tensor, dens: Tensor, q: Tensor | None, chunk: int, eps: float,
    weight: Tensor | None = None, bias: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """The doubling path's normalised mixing, gated given q, then projected given a weight
    (an output projection [D_out, H * Hd], with q only; see :class:`DoublingMix`)."""
    if weight is not None and q is None:
        raise ValueError("the output projection needs the gate q")
    return DoublingMix.apply(k, v, m, dens, q, weight, bias, chunk, eps)
