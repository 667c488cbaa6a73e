"""Gain and clippers against pedalboard and closed forms."""

from __future__ import annotations

import numpy as np
import pedalboard
import pytest
import torch

from afxest.dsp.amplitude import gain, hard_clip, soft_clip, straight_through_clip


def signal() -> np.ndarray:
    return (np.random.default_rng(0).standard_normal((2, 4000)) * 0.5).astype(np.float32)


def test_gain_matches_pedalboard() -> None:
    x = signal()
    for g in [-24.0, -3.0, 0.0, 6.0, 18.0]:
        ours = gain(torch.from_numpy(x)[None], 22050, gain_db=torch.tensor([g]))[0].numpy()
        np.testing.assert_allclose(ours, pedalboard.Gain(gain_db=g)(x, 22050), rtol=1e-6, atol=1e-7)


def test_hard_clip_matches_pedalboard_exactly() -> None:
    x = signal()
    for th in [-20.0, -6.0, -1.0, 0.0]:
        ours = hard_clip(torch.from_numpy(x)[None], 22050, threshold_db=torch.tensor([th]))[0].numpy()
        np.testing.assert_allclose(ours, pedalboard.Clipping(threshold_db=th)(x, 22050), rtol=0, atol=1e-7)


def test_soft_clip_is_transparent_below_and_bounded_above() -> None:
    x = torch.linspace(-4, 4, 801, dtype=torch.float64)[None, None]
    th = torch.tensor([-6.0], dtype=torch.float64)
    t = 10 ** (-6 / 20)
    y = soft_clip(x, 22050, threshold_db=th)
    assert y.abs().max() < t
    small = x.abs() < 0.01 * t
    torch.testing.assert_close(y[small], x[small], rtol=1e-4, atol=0)
    np.testing.assert_allclose(y.numpy(), t * np.tanh(x.numpy() / t))


def test_soft_clip_gradients_nonzero_where_hard_clip_has_none() -> None:
    x = torch.tensor([[[2.0, -3.0, 0.1]]], dtype=torch.float64, requires_grad=True)
    th = torch.tensor([-6.0], dtype=torch.float64, requires_grad=True)
    soft_clip(x, 22050, threshold_db=th).sum().backward()
    assert (x.grad.abs() > 0).all() and th.grad.abs() > 0
    assert torch.autograd.gradcheck(lambda x, th: soft_clip(x, 22050, threshold_db=th), (x, th))
    assert torch.autograd.gradcheck(lambda x: gain(x, 22050, gain_db=th.detach()), (x,))


def test_straight_through_clip_renders_pedalboard_and_differentiates_like_tanh() -> None:
    """Forward: pedalboard's Clipping (exactly the hard clipper). Backward: the closed-form
    derivatives of t tanh(x / t): dy/dx = 1 - tanh^2(x / t), dy/dt = tanh(u) - u (1 - tanh^2 u)
    with u = x / t, and dt/dthreshold_db = t ln(10) / 20."""
    x = signal()
    for th in [-12.0, -3.0, 0.0]:
        xt = torch.from_numpy(x)[None].double().requires_grad_(True)
        tt = torch.tensor([th], dtype=torch.float64, requires_grad=True)
        y = straight_through_clip(xt, 22050, threshold_db=tt)
        np.testing.assert_array_equal(y.detach()[0].float().numpy(), pedalboard.Clipping(threshold_db=th)(x, 22050))
        y.sum().backward()
        t = 10 ** (th / 20)
        u = x.astype(np.float64) / t
        np.testing.assert_allclose(xt.grad[0].numpy(), 1 - np.tanh(u) ** 2, rtol=1e-10, atol=1e-12)
        dy_dt = (np.tanh(u) - u * (1 - np.tanh(u) ** 2)).sum()
        assert tt.grad.item() == pytest.approx(dy_dt * t * np.log(10) / 20, rel=1e-9)
