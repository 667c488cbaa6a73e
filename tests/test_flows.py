"""Conditional DSF layer and sigmoid bijection: inverse, Jacobian, masks, extremes.

References used here, independent of the code under test: autograd Jacobians
(``torch.autograd.functional.jacobian``) and their ``slogdet``, finite differences
(``gradcheck``), the exact affine case of the DSF (all units equal) and 50-digit mpmath.
"""

from __future__ import annotations

import doctest
import math

import mpmath
import pytest
import torch
from torch.autograd.functional import jacobian

import afxest.nn.flows as flows
from afxest.nn.flows import (
    AutoregressiveConditioner,
    ConditionalDSF,
    SigmoidBijection,
    dsf,
    dsf_inverse,
    log_softplus,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def perturbed_layer(d: int, reverse: bool, seed: int, scale: float = 0.5) -> ConditionalDSF:
    """A float64 layer far from its near-identity initialisation."""
    torch.manual_seed(seed)
    layer = ConditionalDSF(d, context=5, conditioner_hidden=16, reverse=reverse).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn_like(p))
    return layer


def test_doctests() -> None:
    result = doctest.testmod(flows, raise_on_error=False)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_inverse_recovers_input(d: int, reverse: bool) -> None:
    layer = perturbed_layer(d, reverse, seed=d)
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(256, d, generator=g, dtype=F64)
    h = torch.randn(256, 5, generator=g, dtype=F64)
    y, _ = layer(x, h)
    x_back = layer.inverse(y, h)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer(x_back, h)[0], y, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_log_abs_det_matches_autograd_jacobian(d: int, reverse: bool) -> None:
    layer = perturbed_layer(d, reverse, seed=10 + d)
    g = torch.Generator().manual_seed(1)
    rank = torch.empty(d, dtype=torch.long)
    rank[layer.order] = torch.arange(d)
    for _ in range(4):
        x = 2 * torch.randn(d, generator=g, dtype=F64)
        h = torch.randn(5, generator=g, dtype=F64)
        jac = jacobian(lambda v: layer(v, h)[0], x)
        _, ladj = layer(x, h)
        # triangular in the autoregressive order: y_i ignores x_j unless rank j < rank i
        later = rank[None, :] > rank[:, None]
        assert (jac[later] == 0).all()
        assert (jac.diagonal() > 0).all()
        sign, logdet = torch.linalg.slogdet(jac)
        assert sign == 1
        torch.testing.assert_close(ladj, logdet, rtol=1e-10, atol=1e-10)


def test_order_alternates_and_masks_hide_later_dimensions() -> None:
    assert ConditionalDSF(4, 3).order == [0, 1, 2, 3]
    assert ConditionalDSF(4, 3, reverse=True).order == [3, 2, 1, 0]
    torch.manual_seed(0)
    net = AutoregressiveConditioner(4, 3, outputs=5, hidden=12, order=[2, 0, 3, 1])
    x, h = torch.randn(4), torch.randn(3)
    base = net(x, h)
    rank = {2: 0, 0: 1, 3: 2, 1: 3}
    for j in range(4):
        moved = x.clone()
        moved[j] += 10.0
        changed = (net(moved, h) - base).abs().amax(dim=-1) > 0
        for i in range(4):
            assert bool(changed[i]) == (rank[j] < rank[i]), (i, j)
    with pytest.raises(ValueError):
        AutoregressiveConditioner(3, 2, 1, order=[0, 0, 1])


def test_initialisation_is_close_to_identity() -> None:
    torch.manual_seed(0)
    layer = ConditionalDSF(6, context=128)
    x = torch.linspace(-3, 3, 61)[:, None].expand(61, 6)
    y, ladj = layer(x, torch.randn(61, 128))
    assert (y - x).abs().max() < 0.1
    assert ladj.abs().max() < 0.1
    with torch.no_grad():
        layer.conditioner.out.weight.zero_()
    y, ladj = layer(x, torch.randn(61, 128))
    torch.testing.assert_close(y, x)  # a = 1, b = 0, w = 1/K: exactly the identity
    torch.testing.assert_close(ladj, torch.zeros(61))


def test_parameter_count() -> None:
    layer = ConditionalDSF(6, context=128)  # K = 8, conditioner hidden 64
    expected = (128 * 64 + 64) + 6 * 64 + (64 * 6 * 24 + 6 * 24)
    assert sum(p.numel() for p in layer.parameters()) == expected == 18000


def mp_dsf(x: float, a: list[float], b: list[float], w: list[float]) -> tuple[float, float]:
    """DSF value and log-derivative at 50 digits."""
    with mpmath.workdps(50):
        sig = [1 / (1 + mpmath.exp(-(ai * x + bi))) for ai, bi in zip(a, b)]
        s = mpmath.fsum(wi * si for wi, si in zip(w, sig))
        ds = mpmath.fsum(wi * ai * si * (1 - si) for wi, ai, si in zip(w, a, sig))
        one_minus_s = mpmath.fsum(wi * (1 - si) for wi, si in zip(w, sig))
        return float(mpmath.log(s) - mpmath.log(one_minus_s)), float(
            mpmath.log(ds) - mpmath.log(s) - mpmath.log(one_minus_s)
        )


@pytest.mark.parametrize("x", [-50.0, -8.0, 0.3, 12.0, 50.0])
def test_dsf_matches_high_precision(x: float) -> None:
    g = torch.Generator().manual_seed(3)
    a_raw = 2 * torch.randn(8, generator=g, dtype=F64) + 1
    b = 3 * torch.randn(8, generator=g, dtype=F64)
    w_raw = torch.randn(8, generator=g, dtype=F64)
    a = torch.nn.functional.softplus(a_raw).tolist()
    w = torch.softmax(w_raw, -1).tolist()
    ref_y, ref_ladj = mp_dsf(x, a, b.tolist(), w)
    y, ladj = dsf(torch.tensor(x, dtype=F64), a_raw, b, w_raw)
    assert math.isfinite(ref_ladj)
    scale = 1 + max(abs(ai * x + bi) for ai, bi in zip(a, b.tolist()))
    assert abs(y.item() - ref_y) <= 1e-14 * scale + 1e-13 * abs(ref_y)
    assert abs(ladj.item() - ref_ladj) <= 1e-14 * scale
    y32, ladj32 = dsf(torch.tensor(x), a_raw.float(), b.float(), w_raw.float())
    assert abs(y32.item() - ref_y) <= 1e-6 * scale
    assert abs(ladj32.item() - ref_ladj) <= 1e-6 * scale


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_finite_values_and_gradients_at_extremes(dtype: torch.dtype) -> None:
    # |x| = 50 with slopes up to 1e4 and offsets up to 1e3: every sigmoid saturates.
    x = torch.tensor([-50.0, -50.0, 50.0, 50.0], dtype=dtype, requires_grad=True)
    a_raw = torch.tensor([1e4, 30.0, 1.0, -50.0, 5.0, 1e3, 0.0, 20.0], dtype=dtype)
    a_raw = a_raw.expand(4, 8).clone().requires_grad_()
    b = torch.linspace(-1e3, 1e3, 8, dtype=dtype).expand(4, 8).clone().requires_grad_()
    w_raw = torch.linspace(-3, 3, 8, dtype=dtype).expand(4, 8).clone().requires_grad_()
    y, ladj = dsf(x, a_raw, b, w_raw)
    assert y.isfinite().all() and ladj.isfinite().all()
    (y.sum() + ladj.sum()).backward()
    for t in (x, a_raw, b, w_raw):
        assert t.grad is not None and t.grad.isfinite().all()

    # Equal units: the DSF is exactly y = a x + b with log-derivative log a.
    a_raw = torch.tensor([-7.0, -0.5, 30.0, 1e4], dtype=dtype).unsqueeze(-1).expand(4, 8)
    a = torch.nn.functional.softplus(a_raw[:, 0])
    eps = torch.finfo(dtype).eps
    for sign in (-1.0, 1.0):
        xs = torch.full((4,), 50.0 * sign, dtype=dtype)
        b = torch.full((4, 8), 2.0, dtype=dtype)
        y, ladj = dsf(xs, a_raw, b, torch.zeros(4, 8, dtype=dtype))
        u = a * xs + 2.0
        assert ((y - u).abs() <= 16 * eps * (1 + u.abs())).all()
        # the log-derivative is a difference of terms of size |u|: absolute error ~ |u| eps
        assert ((ladj - torch.log(a)).abs() <= 16 * eps * (1 + u.abs() + a.log().abs())).all()


def test_sigmoid_bijection() -> None:
    sig = SigmoidBijection()
    x = torch.tensor([-3.0, 0.0, 0.7, 5.0], dtype=F64)
    z, ladj = sig(x)
    jac = jacobian(lambda v: sig(v)[0], x)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(jac)[1])
    torch.testing.assert_close(sig.inverse(z), x)
    # saturated in float32: z rounds to 0 or 1, the log-determinant stays exact and finite
    x32 = torch.tensor([-200.0, -50.0, 50.0, 200.0], requires_grad=True)
    z32, ladj32 = sig(x32)
    ladj32.backward()
    assert ladj32.isfinite() and x32.grad is not None and x32.grad.isfinite().all()
    torch.testing.assert_close(ladj32, -x32.detach().abs().sum())


def test_log_softplus_matches_high_precision() -> None:
    xs = [-800.0, -100.0, -15.5, -15.0, -14.5, -1.0, 0.0, 3.0, 50.0]
    got = log_softplus(torch.tensor(xs, dtype=F64))
    with mpmath.workdps(50):
        ref = [float(mpmath.log(mpmath.log1p(mpmath.exp(v)))) for v in xs]
    torch.testing.assert_close(got, torch.tensor(ref, dtype=F64), rtol=4e-16, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_inverse_converges_in_bounded_steps_even_with_huge_brackets(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator().manual_seed(5)
    n = 4000
    a_raw = 3 * torch.randn(n, 8, generator=g, dtype=dtype)
    a_raw[:, 0] = -75.0  # slopes ~ 1e-33: brackets ~ 1e33 wide
    b = 3 * torch.randn(n, 8, generator=g, dtype=dtype)
    w_raw = torch.randn(n, 8, generator=g, dtype=dtype)
    x = 5 * torch.randn(n, generator=g, dtype=dtype)
    y, log_slope = dsf(x, a_raw, b, w_raw)
    calls = 0
    evaluate = flows._evaluate

    def counted(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal calls
        calls += 1
        return evaluate(*args)

    monkeypatch.setattr(flows, "_evaluate", counted)
    for newton_steps in (32, 0):  # 0: bisection on the float order only
        calls = 0
        x_back = dsf_inverse(y, a_raw, b, w_raw, newton_steps=newton_steps)
        assert calls <= newton_steps + 8 * x.element_size() + 2
        y_back, _ = dsf(x_back, a_raw, b, w_raw)
        eps = torch.finfo(dtype).eps
        assert ((y_back - y).abs() <= 8 * eps * (1 + y.abs())).all()
        if dtype == F64:  # in x, as well as the conditioning allows
            u = torch.nn.functional.softplus(a_raw) * x.unsqueeze(-1) + b
            noise = 16 * eps * (1 + y.abs() + u.abs().amax(dim=-1))
            assert ((x_back - x).abs() <= noise / log_slope.exp()).all()
        # (in float32 the map can be flat to float32 resolution over a long stretch, and
        # any point of it is a preimage)


def test_inverse_gradients_by_finite_differences() -> None:
    layer = perturbed_layer(3, reverse=True, seed=7, scale=0.3)
    g = torch.Generator().manual_seed(2)
    y = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    h = torch.randn(2, 5, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(layer.inverse, (y, h))
    # and with respect to the layer's own weights (implicit differentiation), along a
    # random direction, by central differences
    weight = layer.conditioner.out.weight
    w0 = weight.detach().clone()
    probe = torch.randn(2, 3, generator=g, dtype=F64)
    direction = torch.randn(w0.shape, generator=g, dtype=F64)

    def objective(w: torch.Tensor) -> float:
        with torch.no_grad():
            weight.copy_(w)
            return (layer.inverse(y, h) * probe).sum().item()

    step = 1e-6
    numeric = (objective(w0 + step * direction) - objective(w0 - step * direction)) / (2 * step)
    with torch.no_grad():
        weight.copy_(w0)
    (grad,) = torch.autograd.grad((layer.inverse(y, h) * probe).sum(), weight)
    assert (grad * direction).sum().item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_conditional_on_context() -> None:
    layer = perturbed_layer(2, reverse=False, seed=4)
    x = torch.zeros(2, 2, dtype=F64)
    h = torch.randn(2, 5, dtype=F64)
    y, _ = layer(x, h)
    assert (y[0] - y[1]).abs().min() > 1e-6
