"""Linear CKA (Kornblith et al. 2019) as a differentiable, numerically safe training loss.

Representation distillation (BIRD) and circuit distillation pull a student's layer towards
a teacher's layer on the same inputs; the layers may differ in width, so the comparison has
to ignore rotations and global scale but not the geometry between inputs. Linear CKA does:

    HSIC(K, L) = tr(K H L H) / (n-1)^2,        H = I - 11^T/n,  K = X X^T,  L = Y Y^T
    CKA(X, Y)  = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
               = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)   (column-centred X_c, Y_c)

The biased HSIC is inflated for small n and wide features (independent inputs score well
above 0); the unbiased estimator (Song et al. 2012; Nguyen, Raghu & Kornblith 2021) with
K~, L~ = K, L with zeroed diagonals fixes that:

    HSIC_1 = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))
"""

from __future__ import annotations

import torch

__all__ = ["FeatureBank", "cka_loss", "cka_matrix", "hsic", "linear_cka"]


def _work_dtype(*ts: torch.Tensor) -> torch.dtype:
    """At least float32: half/bf16 Gram sums lose the digits that CKA differences live in."""
    dt = torch.float32
    for t in ts:
        dt = torch.promote_types(dt, t.dtype)
    return dt


def _hsic1_sum(k: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """n(n-3) * HSIC_1(K, L); callers divide (or not, where only ratios matter)."""
    n = k.shape[0]
    kt = k - torch.diag_embed(torch.diagonal(k))
    lt = g - torch.diag_embed(torch.diagonal(g))
    trace = (kt * lt.mT).sum()
    cross = kt.sum() * lt.sum() / ((n - 1) * (n - 2))
    return trace + cross - 2.0 / (n - 2) * (kt.sum(0) @ lt.sum(1))


def hsic(k: torch.Tensor, l: torch.Tensor, *, unbiased: bool = False) -> torch.Tensor:  # noqa: E741
    """HSIC of two n x n Gram matrices: biased tr(KHLH)/(n-1)^2, or the unbiased HSIC_1."""
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape != l.shape:
        raise ValueError(
            f"hsic: need two n x n Gram matrices, got {tuple(k.shape)} and {tuple(l.shape)}"
        )
    n = k.shape[0]
    if n < (4 if unbiased else 2):
        raise ValueError(
            f"hsic: n={n} too small ({'unbiased needs n >= 4' if unbiased else 'need n >= 2'})"
        )
    dt = _work_dtype(k, l)
    k, g = k.to(dt), l.to(dt)
    if unbiased:
        return _hsic1_sum(k, g) / (n * (n - 3))
    kc = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()  # H K H
    return (kc * g.mT).sum() / (n - 1) ** 2  # tr(HKH L) = tr(K H L H)


def _use_gram(n: int, p1: int, p2: int) -> bool:
    """Gram (n x n) form iff cheaper than feature form (p x p): both give the same CKA."""
    return n * n * (p1 + p2) < n * (p1 * p2 + p1 * p1 + p2 * p2)


def _centre(x: torch.Tensor, dt: torch.dtype, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Column-centred x scaled to unit Frobenius norm, and whether it has any real variance.

    The scale is detached: CKA is scale-invariant, so value and gradient are unchanged, but
    every later sum is O(1) (no fp32 overflow for large activations, and eps means the same
    at any scale). Variance below eps * (raw second moment) is rounding noise of the mean
    (constant features), which normalising would blow up to an arbitrary CKA: flag it.
    """
    x = x.to(dt)
    xc = x - x.mean(0, keepdim=True)
    var, raw = xc.detach().square().sum(), x.detach().square().sum()
    ok = var > eps * raw
    return xc / var.sqrt().clamp_min(torch.finfo(dt).tiny), ok


def linear_cka(
    x: torch.Tensor, y: torch.Tensor, *, unbiased: bool = False, eps: float = 1e-8
) -> torch.Tensor:
    """Linear CKA of n x p1 and n x p2 activations (same n inputs) as a 0-dim tensor.

    Biased CKA lies in [0, 1]; the unbiased one can dip slightly below 0 for independent inputs.

    Safe as a loss: a side without variance scores exactly 0 with finite (zero) gradients,
    and denominators are clamped at eps, so no NaN ever reaches the optimiser.
    """
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(
            f"linear_cka: x and y must be 2-D (n x p), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    n = x.shape[0]
    if y.shape[0] != n or n < 2:
        raise ValueError(
            f"linear_cka: need the same n >= 2 rows in x and y, got {x.shape[0]} and {y.shape[0]}"
        )
    if unbiased and n < 4:
        raise ValueError(f"linear_cka: unbiased CKA needs n >= 4 rows, got {n}")
    dt = _work_dtype(x, y)
    xc, ok_x = _centre(x, dt, eps)
    yc, ok_y = _centre(y, dt, eps)
    if unbiased:
        kx, ky = xc @ xc.mT, yc @ yc.mT
        hkl, hkk, hll = _hsic1_sum(kx, ky), _hsic1_sum(kx, kx), _hsic1_sum(ky, ky)
        cka = hkl / (hkk * hll).clamp_min(eps).sqrt()  # hkk * hll can dip below 0 for small n
    else:
        if _use_gram(n, x.shape[1], y.shape[1]):
            kx, ky = xc @ xc.mT, yc @ yc.mT
            num, sxx, syy = (kx * ky).sum(), kx.square().sum(), ky.square().sum()
        else:
            num = (yc.mT @ xc).square().sum()
            sxx, syy = (xc.mT @ xc).square().sum(), (yc.mT @ yc).square().sum()
        cka = num / (sxx.clamp_min(eps).sqrt() * syy.clamp_min(eps).sqrt())
    return torch.where(ok_x & ok_y, cka, torch.zeros_like(cka))


def cka_loss(x: torch.Tensor, y: torch.Tensor, *, unbiased: bool = False) -> torch.Tensor:
    """1 - linear CKA: the quantity objectives minimise (0 when x and y match up to rotation/scale)."""
    return 1.0 - linear_cka(x, y, unbiased=unbiased)


@torch.no_grad()
def cka_matrix(
    xs: list[torch.Tensor], ys: list[torch.Tensor], *, unbiased: bool = False
) -> torch.Tensor:
    """len(xs) x len(ys) float32 table of CKA values, to scan candidate (student, teacher) layer pairs."""
    if not xs or not ys:
        raise ValueError(f"cka_matrix: need non-empty lists, got {len(xs)} and {len(ys)} tensors")
    vals = [linear_cka(x, y, unbiased=unbiased).float() for x in xs for y in ys]
    return torch.stack(vals).reshape(len(xs), len(ys))


class FeatureBank:
    """A larger CKA batch on a small machine: the last ``size`` rows of earlier batches.

    CKA is a batch statistic and a small one is noisy and biased upward (BIRD: batch 128
    transfers much better than 32). ``extend(key, x)`` returns the bank's rows for ``key``
    (detached: they came from earlier steps) stacked on ``x`` (with its gradient) and keeps
    the newest ``size`` rows. Keys that are compared (a student and a teacher feature)
    must be extended on the same steps, so their rows stay aligned.
    """

    def __init__(self, size: int):
        self.size = int(size)
        self.rows: dict[object, torch.Tensor] = {}

    def extend(self, key: object, x: torch.Tensor) -> torch.Tensor:
        if self.size <= 0:
            return x
        old = self.rows.get(key)
        full = x if old is None else torch.cat([old.to(x.device, x.dtype), x])
        self.rows[key] = full.detach()[-self.size :]
        return full
