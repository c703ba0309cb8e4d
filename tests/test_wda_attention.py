"""Wave-Density Attention (``distill.wda.attention``): the math, and the reference's defects.

Small layers (D=32, H=4, M=8, W=4, routing chunks of 16 so that S <= 96 crosses several
chunk boundaries). Each defect listed in shared/specs/wda.md has a test here: dense,
gradient-free top-k; a temperature that never takes effect; non-causal routing; masks
rescaled by the maximum length.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.wda import WaveDensityAttention, WDACache, WDAConfig, longconv
from distill.wda.attention import triangle
from distill.wda.longconv import (
    doubling_boundary,
    doubling_chunk_of,
    doubling_conv,
    doubling_mix,
    doubling_starts,
)

D, H, M, W, R = 32, 4, 8, 4, 16


pytestmark = pytest.mark.usefixtures("one_thread")


def make(seed: int = 0, **kw) -> WaveDensityAttention:
    """A small layer, seeded; ``kw`` overrides config fields."""
    torch.manual_seed(seed)
    base = dict(hidden_size=D, num_heads=H, num_masks=M, num_waves=W, top_k=3, gate_hidden=16,
                route_chunk=R)  # fmt: skip
    base.update(kw)
    return WaveDensityAttention(WDAConfig(**base))


def inputs(b: int = 2, s: int = 80, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, s, D, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------- routing


def test_topk_is_really_sparse():
    model = make(top_k=3)
    model(inputs(s=80))
    w = model.last_routing  # [B, C, H, M]
    assert w is not None and w.shape == (2, 5, H, M)
    assert ((w != 0).sum(-1) == 3).all()  # exactly k masks per decision, M - k exact zeros
    assert torch.allclose(w.sum(-1), torch.ones(()))
    # the kept masks are the k largest logits
    kept = w.topk(3, dim=-1).indices.sort(-1).values
    top = model.last_logits.topk(3, dim=-1).indices.sort(-1).values
    assert torch.equal(kept, top)
    assert model.routing_stats()["active_masks"] == 3.0


def test_gate_gets_gradients_and_unused_masks_do_not():
    model = make(top_k=2)
    out = model(inputs(s=64))
    out.pow(2).mean().backward()
    for name in ("gate_w1", "gate_b1", "gate_w2", "gate_b2", "start"):
        grad = getattr(model, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    # the forward pass touches only the selected masks: a mask never chosen gets no gradient
    used = (model.last_routing != 0).any(0).any(0)  # [H, M]
    assert (~used).any()
    assert (model.amps.grad[~used] == 0).all()
    assert (model.amps.grad[used].abs().sum(-1) > 0).all()


def test_temperature_applies_in_eval():
    model = make(top_k=3).eval()
    x = inputs(s=48)
    with torch.no_grad():
        y1 = model(x)
        h1 = model.routing_stats()["entropy"]
        model.set_temperature(0.1)
        y2 = model(x)
        stats = model.routing_stats()
    assert not torch.allclose(y1, y2, atol=1e-4)
    assert stats["temperature"] == pytest.approx(0.1)
    assert stats["entropy"] < h1  # sharper routing at the temperature actually used
    # the temperature is state: saved and restored with the weights
    other = make(seed=5, top_k=3).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(other(x), y2)
    with pytest.raises(ValueError):
        model.set_temperature(0.0)


def test_routing_stats_shows_collapse():
    model = make(top_k=M)
    with torch.no_grad():  # a gate that ignores its input: uniform routing
        model.gate_w2.zero_()
        model.gate_b2.zero_()
    model(inputs(s=40))
    stats = model.routing_stats()
    assert stats["active_masks"] == M
    assert stats["entropy"] == pytest.approx(math.log(M), abs=1e-5)
    assert stats["entropy_norm"] == pytest.approx(1.0, abs=1e-5)
    assert stats["dense_entropy_norm"] == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------- causality, maths


@pytest.mark.parametrize(("content_rank", "schedule"), [(0, "fixed"), (2, "fixed"), (0, "doubling"), (2, "doubling")])  # fmt: skip
def test_causal_across_chunk_boundaries(content_rank: int, schedule: str):
    model = make(content_rank=content_rank, route_schedule=schedule)
    x = inputs(s=80)
    with torch.no_grad():
        y = model(x)
        for t in (1, 15, 16, 17, 32, 40, 64, 79):
            x2 = x.clone()
            x2[:, t] += 3.0 * torch.randn(2, D)
            y2 = model(x2)
            assert torch.allclose(y2[:, :t], y[:, :t], atol=1e-6, rtol=0), t
            assert not torch.allclose(y2[:, t], y[:, t], atol=1e-3), t


def test_doubling_path_is_causal_at_length():
    """The long path over many dyadic levels (S = 700, R = 16: blocks up to 1024): a large
    change of the future leaves the past exactly as it was (leak 0; allowed <= 1e-5 relative)."""
    model = make(route_schedule="doubling")
    x = inputs(b=1, s=700)
    with torch.no_grad():
        y = model(x)
        for t in (17, 256, 511, 512, 699):
            x2 = x.clone()
            x2[:, t:] = 10.0 * torch.randn(1, 700 - t, D)
            leak = (model(x2)[:, :t] - y[:, :t]).abs().max() / y[:, :t].abs().max()
            assert leak <= 1e-5, (t, float(leak))


def chunk_starts(cfg: WDAConfig, length: int) -> list[int]:
    """Starts of the routing chunks covering positions 0..length-1, written out."""
    R = cfg.route_chunk
    if cfg.route_schedule == "fixed":
        return list(range(0, length, R))
    return [0] + [R * 2**c for c in range(length) if R * 2**c < length]


def naive_forward(
    model: WaveDensityAttention, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The formula as written, in fp64, with an O(S^2) double loop: (output, routing)."""
    cfg = model.config
    B, S, _ = x.shape
    Hd, k_top = cfg.head_dim, cfg.top_k
    p = {n: t.detach().double() for n, t in model.named_parameters()}
    x = x.double()
    # M_m(d) = sum_w a_mw phi(2 pi (f_mw1 d/s + f_mw2 sqrt(d/s)) + theta_mw)
    d = torch.arange(S, dtype=torch.float64)
    p1, p2 = d / cfg.distance_scale, (d / cfg.distance_scale).sqrt()
    f = p["freqs"]
    phase = 2 * math.pi * (f[..., 0:1] * p1 + f[..., 1:2] * p2) + p["phases"][..., None]
    phi = torch.sin if cfg.kernel == "sine" else triangle
    masks = (p["amps"][..., None] * phi(phase)).sum(2)  # [H, M, S]
    # routing of chunk c on the mean of x_j before its start (the start vector for c = 0)
    starts = chunk_starts(cfg, S)
    n_chunks = len(starts)
    routing = torch.zeros(B, n_chunks, cfg.num_heads, cfg.num_masks, dtype=torch.float64)
    for b in range(B):
        for c in range(n_chunks):
            s = starts[c]
            pooled = x[b, :s].mean(0) if s else p["start"]
            for h in range(cfg.num_heads):
                hid = F.gelu(pooled @ p["gate_w1"][h] + p["gate_b1"][h])
                logits = hid @ p["gate_w2"][h] + p["gate_b2"][h]
                top = logits.topk(k_top)
                w = torch.softmax(top.values / float(model.temperature), -1)
                routing[b, c, h, top.indices] = w
    kernel = torch.einsum("bchm,hml->bchl", routing, masks)
    dens = torch.sigmoid(cfg.alpha * kernel)  # D_c(d)
    if cfg.window is not None:
        dens = dens * torch.exp(-(d**2) / (2 * cfg.window**2))
    lin = {
        n: (p[f"{n}.weight"], p.get(f"{n}.bias")) for n in ("k_mod", "q_mod", "v_proj", "o_proj")
    }

    def linear(name: str, t: torch.Tensor) -> torch.Tensor:
        weight, bias = lin[name]
        return F.linear(t, weight, bias)

    k = torch.sigmoid(linear("k_mod", x))  # [B, S, H]
    q = torch.sigmoid(linear("q_mod", x))
    v = linear("v_proj", x).view(B, S, cfg.num_heads, Hd)
    ctx = torch.zeros_like(v)
    for b in range(B):
        for i in range(S):
            c = max(n for n, s in enumerate(starts) if s <= i)
            num = torch.zeros(cfg.num_heads, Hd, dtype=torch.float64)
            den = torch.zeros(cfg.num_heads, dtype=torch.float64)
            for j in range(i + 1):
                dk = dens[b, c, :, i - j] * k[b, j]
                num += dk[:, None] * v[b, j]
                den += dk
            ctx[b, i] = num / (den[:, None] + 1e-8)
    o = q[..., None] * ctx + (1 - q[..., None]) * v
    return linear("o_proj", o.flatten(2)), routing


@pytest.mark.parametrize(
    ("kernel", "window", "schedule"),
    [("sine", None, "fixed"), ("triangle", None, "fixed"), ("sine", 8.0, "fixed"),
     ("sine", None, "doubling"), ("triangle", 8.0, "doubling")],
)  # fmt: skip
def test_fft_path_equals_naive_double_loop(kernel: str, window: float | None, schedule: str):
    model = make(kernel=kernel, window=window, route_schedule=schedule)
    # fixed: chunks [0,16), [16,32), [32,40); doubling: [0,16), [16,32), [32,64) with
    # dyadic blocks of 32 and 64 (positions padded to 64)
    x = inputs(s=40 if schedule == "fixed" else 45)
    with torch.no_grad():
        y = model(x)
    ref, routing = naive_forward(model, x)
    assert torch.allclose(model.last_routing.double(), routing, atol=1e-6)
    assert torch.allclose(y.double(), ref, atol=1e-5, rtol=0)


def test_doubling_chunks_route_once_per_doubling():
    model = make(route_schedule="doubling")
    model(inputs(s=80))  # chunks [0,16), [16,32), [32,64), [64,80): 4 decisions, not 5
    assert model.last_routing is not None and model.last_routing.shape == (2, 4, H, M)
    model(inputs(s=16))
    assert model.last_routing.shape == (2, 1, H, M)
    assert doubling_starts(100, 16) == [0, 16, 32, 64]
    pos = torch.arange(130)
    assert torch.equal(doubling_chunk_of(pos, 16), torch.tensor([max(n for n, s in enumerate([0, 16, 32, 64, 128]) if s <= p) for p in range(130)]))  # fmt: skip
    assert pos[doubling_boundary(pos, 16)].tolist() == [0, 16, 32, 64, 128]


def test_doubling_conv_gradients():
    """The convolution's hand-written backward against finite differences (fp64)."""
    g = torch.Generator().manual_seed(0)
    S, R = 13, 2  # chunks [0,2), [2,4), [4,8), [8,16); dyadic blocks up to 16
    sig = torch.randn(1, S, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    dens = torch.rand(1, 4, 2, S, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: doubling_conv(a, b, R), (sig, dens))


def doubling_run(lean: bool, x: torch.Tensor, mask: torch.Tensor | None, **kw):
    """Output and every gradient (input first) of a doubling layer, lean mixing or composed."""
    model = make(route_schedule="doubling", **kw).to(x.dtype)
    model.lean_mix = lean
    x = x.clone().requires_grad_(True)
    y = model(x, attention_mask=mask)
    (y * torch.linspace(-1, 1, y.numel(), dtype=x.dtype).view_as(y)).sum().backward()
    grads = [x.grad] + [
        torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()
    ]
    return y.detach(), grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("content_rank", [0, 2])
@pytest.mark.parametrize("padding", ["none", "left", "right"])
def test_lean_mixing_equals_composed_operations(
    dtype: torch.dtype, content_rank: int, padding: str
):
    """The fused mixing (one autograd function, recomputing its intermediates) against the
    composed operations: the same forward values (bit for bit here, where all heads form
    one group; with several groups the output projection sums them in turn, 1e-6 apart),
    gradients equal to 1e-5 relative in fp32, 1e-11 in fp64 (round-off of the
    recomputation and of the grouped reductions). S = 150 crosses 4 dyadic levels."""
    x = inputs(s=150).to(dtype)
    mask = torch.ones(2, 150, dtype=torch.long)
    if padding == "left":
        mask[0, :9] = 0
    elif padding == "right":
        mask[1, -11:] = 0
    lean_y, lean_g = doubling_run(True, x, None if padding == "none" else mask, content_rank=content_rank)  # fmt: skip
    ref_y, ref_g = doubling_run(False, x, None if padding == "none" else mask, content_rank=content_rank)  # fmt: skip
    assert torch.equal(lean_y, ref_y)
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    for a, b in zip(lean_g, ref_g, strict=True):
        assert (a - b).abs().max() <= tol * b.abs().max().clamp_min(1e-12)


def test_lean_mixing_in_head_groups_equals_composed(monkeypatch: pytest.MonkeyPatch):
    """Head groups of one head (the grouped loops, the projection summed group by group):
    forward 1e-6 and gradients 1e-5 relative of the composed operations (fp32)."""
    monkeypatch.setattr(longconv, "_BUDGET", 1)
    mask = torch.ones(2, 150, dtype=torch.long)
    mask[0, :9] = 0
    lean_y, lean_g = doubling_run(True, inputs(s=150), mask)
    ref_y, ref_g = doubling_run(False, inputs(s=150), mask)
    assert (lean_y - ref_y).abs().max() <= 1e-6 * ref_y.abs().max()
    for a, b in zip(lean_g, ref_g, strict=True):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max().clamp_min(1e-12)


def test_doubling_mix_gradients():
    """The fused mixing's hand-written backward against finite differences (fp64): ungated,
    gated, and gated with the output projection, with a padded position and head groups of
    one head (the grouped loop)."""
    g = torch.Generator().manual_seed(0)
    B, S, Hh, Hd, R = 1, 13, 2, 2, 2
    k = torch.rand(B, S, Hh, dtype=torch.float64, generator=g)
    m = torch.ones(B, S, dtype=torch.float64)
    m[0, 3] = 0
    k = (k * m[..., None]).requires_grad_(True)
    v = torch.randn(B, S, Hh, Hd, dtype=torch.float64, generator=g, requires_grad=True)
    q = torch.rand(B, S, Hh, dtype=torch.float64, generator=g, requires_grad=True)
    dens = torch.rand(B, 4, Hh, S, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, Hh * Hd, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(longconv, "_BUDGET", 1)
        assert torch.autograd.gradcheck(lambda a, b, c: doubling_mix(a, b, m, c, None, R, 1e-8), (k, v, dens))  # fmt: skip
        assert torch.autograd.gradcheck(lambda a, b, c, d: doubling_mix(a, b, m, c, d, R, 1e-8), (k, v, dens, q))  # fmt: skip
        assert torch.autograd.gradcheck(lambda a, b, c, d, e, f: doubling_mix(a, b, m, c, d, R, 1e-8, e, f), (k, v, dens, q, w, bias))  # fmt: skip
        # the projection's output equals projecting the gated output
        gated = doubling_mix(k, v, m, dens, q, R, 1e-8)
        torch.testing.assert_close(
            doubling_mix(k, v, m, dens, q, R, 1e-8, w, bias), F.linear(gated.flatten(2), w, bias)
        )
    with pytest.raises(ValueError, match="gate"):
        doubling_mix(k, v, m, dens, None, R, 1e-8, w, bias)


def saved_activations(model: WaveDensityAttention, x: torch.Tensor) -> int:
    """Bytes of the distinct storages of at least x's size (activations, not routing or
    weights) that autograd keeps for the backward pass of one forward, x itself excluded."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    own = x.untyped_storage().data_ptr()
    return sum(n for p, n in seen.items() if p != own and n >= x.numel() * x.element_size())


def test_lean_mixing_is_the_default_and_keeps_less():
    model = make(route_schedule="doubling", num_masks=2, top_k=1, route_chunk=64)
    assert WaveDensityAttention.lean_mix and model.lean_mix
    x = inputs(b=1, s=512).requires_grad_(True)
    nodes, todo = set(), [model(x).grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None and fn not in nodes:
            nodes.add(fn)
            todo.extend(f for f, _ in fn.next_functions)
    assert "DoublingMixBackward" in {type(f).__name__ for f in nodes}
    lean = saved_activations(model, x)
    model.lean_mix = False
    composed = saved_activations(model, x)
    # lean: v and the convolution y; composed: also the stacked signal, the normalised
    # context and the output projection's input (5 of x's size where the lean path keeps 2)
    assert lean <= 0.45 * composed, (lean, composed)


@pytest.mark.parametrize("kernel", ["sine", "triangle"])
def test_lean_masks_equal_masks_with_gradients(kernel: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(longconv, "_BLOCK", 16)  # 4 blocks of distances, recomputed
    model = make(kernel=kernel)
    d = torch.arange(50)
    ref = model.wave_masks(d)
    (ref * torch.linspace(-1, 1, 50)).sum().backward()
    grads = [p.grad.clone() for p in (model.freqs, model.amps, model.phases)]
    model.zero_grad()
    blocked = model.wave_masks_lean(d)
    (blocked * torch.linspace(-1, 1, 50)).sum().backward()
    assert_same_across_lengths(blocked, ref)
    for p, ref_grad in zip((model.freqs, model.amps, model.phases), grads, strict=True):
        torch.testing.assert_close(p.grad, ref_grad, rtol=1e-5, atol=1e-5)


def test_triangle_wave():
    x = torch.tensor([0.0, math.pi / 2, math.pi, 3 * math.pi / 2, 2 * math.pi, -math.pi / 2])
    assert torch.allclose(triangle(x), torch.tensor([0.0, 1.0, 0.0, -1.0, 0.0, -1.0]), atol=1e-6)
    z = torch.linspace(-10, 10, 101)
    assert torch.allclose(triangle(z + 2 * math.pi), triangle(z), atol=1e-5)
    assert (triangle(z).abs() <= 1 + 1e-6).all()
    assert (torch.sign(triangle(z)) == torch.sign(torch.sin(z))).float().mean() > 0.95


# ------------------------------------------------------------------------ decoding


@pytest.mark.parametrize(("content_rank", "schedule"), [(0, "fixed"), (2, "fixed"), (2, "doubling")])  # fmt: skip
def test_incremental_decoding_matches_full_forward(content_rank: int, schedule: str):
    model = make(content_rank=content_rank, route_schedule=schedule).eval()
    x = inputs(s=70 if schedule == "doubling" else 50)
    S = x.shape[1]
    with torch.no_grad():
        full = model(x)
        out, cache = model(x[:, :21], return_cache=True)
        outs = [out]
        for t in range(21, S):  # crosses the boundaries at 32 and 48 (doubling: 32, 64)
            out, cache = model(x[:, t : t + 1], cache=cache, return_cache=True)
            outs.append(out)
        assert isinstance(cache, WDACache) and cache.seen == S
        assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5, rtol=0)
        # several new tokens in one call, and decoding from an empty cache
        _, cache = model(x[:, :30], return_cache=True)
        assert torch.allclose(model(x[:, 30:], cache=cache), full[:, 30:], atol=1e-5, rtol=0)
        cache = model.init_cache(2)
        assert torch.allclose(model(x[:, :20], cache=cache), full[:, :20], atol=1e-5, rtol=0)


@pytest.mark.parametrize("schedule", ["fixed", "doubling"])
def test_decoding_with_left_padding(schedule: str):
    model = make(content_rank=2, route_schedule=schedule).eval()
    x = inputs(s=45)
    mask = torch.ones(2, 45, dtype=torch.long)
    mask[1, :7] = 0  # row 1 is left-padded, as HF batched generation does
    with torch.no_grad():
        full = model(x, attention_mask=mask)
        out, cache = model(x[:, :20], attention_mask=mask[:, :20], return_cache=True)
        outs = [out]
        for t in range(20, 45):  # HF passes the mask of all positions so far
            out, cache = model(x[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache, return_cache=True)  # fmt: skip
            outs.append(out)
    assert torch.allclose(torch.cat(outs, 1)[mask.bool()], full[mask.bool()], atol=1e-5, rtol=0)


# ------------------------------------------------------------ distance and padding


def assert_same_across_lengths(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float32 rounding. The masks are computed over tensors of different
    lengths (the 96 distances here, the 10 or 4096 of another module), and vectorised
    kernels (AVX-512 vs AVX2 vs scalar tails) round the same element differently
    depending on where it falls in the vector, so bit equality holds on some CPUs only.
    A genuine dependence on max_seq_len (a mask rescaled by the table length) changes
    values by orders of magnitude more than 1e-6 relative."""
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_absolute_distance_ignores_max_length():
    short, long = make(max_seq_len=128), make(seed=7, max_seq_len=4096)
    long.load_state_dict(short.state_dict())
    unbounded = make(seed=8, max_seq_len=None)
    unbounded.load_state_dict(short.state_dict())
    x = inputs(s=96)
    with torch.no_grad():
        y = short(x)
        assert_same_across_lengths(long(x), y)
        assert_same_across_lengths(unbounded(x), y)
        # a mask's value at distance d does not depend on how far it is evaluated
        d = torch.arange(96)
        assert_same_across_lengths(short.wave_masks(d)[..., :10], long.wave_masks(d[:10]))
        with pytest.raises(ValueError, match="max_seq_len"):
            short(inputs(s=130))


@pytest.mark.parametrize(("content_rank", "schedule"), [(0, "fixed"), (2, "fixed"), (2, "doubling")])  # fmt: skip
def test_left_padding_equals_unpadded(content_rank: int, schedule: str):
    model = make(content_rank=content_rank, route_schedule=schedule)
    real = inputs(b=1, s=40)
    junk = 5.0 * inputs(b=1, s=7, seed=9)  # padded positions hold garbage: it must not matter
    x = torch.cat([torch.cat([junk, real], 1), inputs(b=1, s=47, seed=3)], 0)
    mask = torch.ones(2, 47, dtype=torch.long)
    mask[0, :7] = 0
    with torch.no_grad():
        ref = model(real)
        y = model(x, attention_mask=mask)
    assert torch.isfinite(y).all()
    assert torch.allclose(y[0, 7:], ref[0], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def _optim_imported() -> None:
    # The first torch.optim optimizer imports torch._dynamo (~1.5 s, once per process):
    # pay it in setup so the test's own time measures the layer.
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])


@pytest.mark.parametrize(("kernel", "schedule"), [("sine", "fixed"), ("triangle", "fixed"), ("sine", "doubling")])  # fmt: skip
def test_trains_with_finite_gradients(kernel: str, schedule: str, _optim_imported: None):
    model = make(kernel=kernel, content_rank=2, route_schedule=schedule)
    x = inputs(s=48)
    target = torch.roll(x, 1, dims=1)  # copy the previous token: needs the distance kernel
    target[:, 0] = 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = F.mse_loss(model(x), target)
        loss.backward()
        for name, param in model.named_parameters():
            assert param.grad is None or torch.isfinite(param.grad).all(), name
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
