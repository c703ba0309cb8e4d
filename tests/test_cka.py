"""Linear CKA (distill.cka): agreement with a direct HSIC computation, invariances, the
unbiased estimator, numerical safety on degenerate inputs, gradients, and validation."""

from __future__ import annotations

import itertools

import pytest
import torch

from distill.cka import _use_gram, cka_loss, cka_matrix, hsic, linear_cka


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


def _orth(p: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(_randn(p, p, seed=seed))
    return q


def _direct_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Reference: HSIC with an explicit centring matrix H, on uncentred Gram matrices."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - torch.ones(n, n, dtype=torch.float64) / n
    k, g = x.double() @ x.double().T, y.double() @ y.double().T

    def hs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.trace(a @ h @ b @ h) / (n - 1) ** 2

    return float(hs(k, g) / torch.sqrt(hs(k, k) * hs(g, g)))


def _related(n: int, p1: int, p2: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x and a noisy linear map of x (CKA well inside (0, 1)), with non-zero column means."""
    x = _randn(n, p1, seed=seed) + 3.0
    y = x @ _randn(p1, p2, seed=seed + 1) + 2.0 * _randn(n, p2, seed=seed + 2) - 1.0
    return x, y


@pytest.mark.parametrize(("n", "p1", "p2", "gram"), [(20, 50, 70, True), (200, 6, 9, False)])
def test_matches_direct_hsic_both_code_paths(n: int, p1: int, p2: int, gram: bool) -> None:
    assert _use_gram(n, p1, p2) is gram  # each case really exercises its code path
    x, y = _related(n, p1, p2, seed=1)
    ref = _direct_cka(x, y)
    assert 0.05 < ref < 0.95
    assert float(linear_cka(x, y)) == pytest.approx(ref, abs=1e-6)
    assert float(linear_cka(x.float(), y.float())) == pytest.approx(ref, abs=1e-5)
    # hsic() itself against the explicit-H reference.
    k, g = x @ x.T, y @ y.T
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    assert float(hsic(k, g)) == pytest.approx(float(torch.trace(k @ h @ g @ h)) / (n - 1) ** 2)


def test_unbiased_hsic_is_the_u_statistic() -> None:
    """HSIC_1 equals the mean over ordered distinct 4-tuples of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    n = 6
    x, y = _related(n, 3, 4, seed=2)
    k, g = x @ x.T, y @ y.T
    terms = [
        k[i, j] * g[i, j] + k[i, j] * g[q, r] - 2 * k[i, j] * g[i, q]
        for i, j, q, r in itertools.permutations(range(n), 4)
    ]
    ref = float(torch.stack(terms).mean())
    assert float(hsic(k, g, unbiased=True)) == pytest.approx(ref, rel=1e-9, abs=1e-9)
    assert float(hsic(k, g)) != pytest.approx(ref, rel=1e-3)


@pytest.mark.parametrize("unbiased", [False, True])
def test_invariances(unbiased: bool) -> None:
    x, y = _related(40, 8, 12, seed=3)
    base = float(linear_cka(x, y, unbiased=unbiased))
    xt = x @ _orth(8, seed=4) * 7.5
    yt = y @ _orth(12, seed=5) * 0.02
    assert float(linear_cka(xt, yt, unbiased=unbiased)) == pytest.approx(base, abs=1e-6)
    # A non-isotropic scaling of the features changes the geometry, hence CKA.
    d = torch.logspace(-2, 2, 8, dtype=torch.float64)
    assert abs(float(linear_cka(x * d, y, unbiased=unbiased)) - base) > 1e-2


def test_identical_and_rotated_copies_score_one() -> None:
    x = _randn(50, 10, seed=6)
    assert float(linear_cka(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(linear_cka(x, x @ _orth(10, seed=7) * 3)) == pytest.approx(1.0, abs=1e-6)
    assert float(linear_cka(x, x @ _orth(10, seed=7) * 3, unbiased=True)) == pytest.approx(
        1.0, abs=1e-6
    )
    assert float(cka_loss(x, x)) == pytest.approx(0.0, abs=1e-6)


def test_independent_inputs_score_near_zero() -> None:
    x, y = _randn(2000, 5, seed=8), _randn(2000, 5, seed=9)
    assert float(linear_cka(x, y)) < 0.02


def test_unbiased_removes_small_n_bias() -> None:
    biased, unbiased = [], []
    for s in range(4):
        x, y = _randn(32, 256, seed=10 + 2 * s), _randn(32, 256, seed=11 + 2 * s)
        biased.append(abs(float(linear_cka(x, y))))
        unbiased.append(abs(float(linear_cka(x, y, unbiased=True))))
    assert sum(biased) / 4 > 0.3  # the biased estimator is badly inflated here
    assert sum(unbiased) / 4 < 0.1
    assert sum(unbiased) < sum(biased) / 3


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_features_are_safe(unbiased: bool, dtype: torch.dtype) -> None:
    y = _randn(16, 5, seed=12, dtype=dtype).requires_grad_()
    # Equal rows with values whose mean is not exact in floating point: rounding noise
    # must not be mistaken for variance.
    row = torch.tensor([0.1, 1e3, -7.3, 1 / 3], dtype=dtype)
    x = row.repeat(16, 1).requires_grad_()
    value = linear_cka(x, y, unbiased=unbiased)
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    zeros = torch.zeros(16, 3, dtype=dtype, requires_grad=True)
    linear_cka(y, zeros, unbiased=unbiased).backward()
    assert torch.isfinite(zeros.grad).all()
    # One constant column among varying ones: an ordinary, finite CKA.
    xc = _randn(16, 4, seed=13, dtype=dtype)
    xc[:, 2] = 5.0
    xc.requires_grad_()
    y.grad = None
    value = linear_cka(xc, y, unbiased=unbiased)
    value.backward()
    assert (
        torch.isfinite(value.detach())
        and torch.isfinite(xc.grad).all()
        and torch.isfinite(y.grad).all()
    )
    assert xc.grad.abs().sum() > 0


@pytest.mark.parametrize("unbiased", [False, True])
def test_gradients_flow_to_both_sides(unbiased: bool) -> None:
    x, y = _related(24, 6, 30, seed=14)
    x, y = x.float().requires_grad_(), y.float().requires_grad_()
    cka_loss(x, y, unbiased=unbiased).backward()
    assert x.grad.abs().sum() > 1e-6 and y.grad.abs().sum() > 1e-6
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


@pytest.mark.parametrize(("unbiased", "p2"), [(False, 4), (False, 40), (True, 4)])
def test_gradcheck(unbiased: bool, p2: int) -> None:
    x, y = _related(8, 3, p2, seed=15)
    x.requires_grad_()
    y.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: linear_cka(a, b, unbiased=unbiased), (x, y))


def test_half_precision_is_upcast() -> None:
    x, y = _related(64, 16, 24, seed=16)
    value = linear_cka(x.bfloat16(), y.bfloat16())
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx(_direct_cka(x, y), abs=2e-2)


def test_cka_matrix() -> None:
    xs = [_randn(30, p, seed=20 + p) for p in (3, 7, 11)]
    m = cka_matrix(xs, xs)
    assert m.shape == (3, 3) and not m.requires_grad
    assert torch.allclose(torch.diagonal(m), torch.ones(3), atol=1e-5)
    assert torch.allclose(m, m.T, atol=1e-6)
    assert cka_matrix(xs[:2], xs, unbiased=True).shape == (2, 3)
    grad_in = [x.clone().requires_grad_() for x in xs]
    assert not cka_matrix(grad_in, xs).requires_grad


@pytest.mark.parametrize(
    ("x", "y", "unbiased"),
    [
        (torch.zeros(5), torch.zeros(5, 2), False),
        (torch.zeros(5, 2, 1), torch.zeros(5, 2), False),
        (torch.zeros(5, 2), torch.zeros(6, 2), False),
        (torch.zeros(1, 2), torch.zeros(1, 2), False),
        (torch.zeros(3, 2), torch.zeros(3, 2), True),
    ],
)
def test_bad_shapes_raise(x: torch.Tensor, y: torch.Tensor, unbiased: bool) -> None:
    with pytest.raises(ValueError, match="linear_cka"):
        linear_cka(x, y, unbiased=unbiased)


def test_hsic_validation() -> None:
    with pytest.raises(ValueError, match="hsic"):
        hsic(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="hsic"):
        hsic(torch.zeros(4, 4), torch.zeros(5, 5))
    with pytest.raises(ValueError, match="unbiased"):
        hsic(torch.zeros(3, 3), torch.zeros(3, 3), unbiased=True)
    with pytest.raises(ValueError, match="cka_matrix"):
        cka_matrix([], [torch.zeros(3, 2)])
