"""afxest.dsp.reverb against pedalboard.Reverb (JUCE's Freeverb) and its gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from afxest.dsp.reverb import reverb
from reference import snr_db, time_effect_signals

pedalboard = pytest.importorskip("pedalboard")

RATES = (22050, 44100, 48000)
NAMES = ("room_size", "damping", "wet_level", "dry_level", "width")
# corners and middles of pedalboard's ranges (freeze mode off)
GRID = [
    (0.5, 0.5, 0.33, 0.4, 1.0),  # pedalboard's defaults
    (0.0, 1.0, 0.2, 1.0, 0.0),
    (1.0, 0.0, 1.0, 0.0, 1.0),
    (0.9, 0.1, 0.5, 0.7, 0.3),
    (0.25, 0.75, 0.05, 0.5, 0.6),
]


def render(x: np.ndarray, sr: int, dtype: torch.dtype) -> np.ndarray:
    p = torch.tensor(GRID, dtype=torch.float64)
    xb = torch.from_numpy(x).to(dtype).expand(len(GRID), -1, -1)
    return reverb(xb, sr, **{k: p[:, i] for i, k in enumerate(NAMES)}).numpy()


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("kind", ["music", "impulse", "mono"])
def test_matches_pedalboard_at_every_setting(sr: int, kind: str) -> None:
    signals = time_effect_signals(sr)
    x = signals["music"][:1] if kind == "mono" else signals[kind]
    ref = np.stack([pedalboard.Reverb(**dict(zip(NAMES, g)))(x, sr) for g in GRID])
    y32, y64 = render(x, sr, torch.float32), render(x, sr, torch.float64)
    for g, r, a, b in zip(GRID, ref, y32, y64):
        # float32: JUCE's arithmetic, so equal up to a platform's rounding; float64: the
        # difference is pedalboard's own float32 rounding (measured >= 99 dB)
        assert np.abs(r - a).max() <= 1e-6 and snr_db(r, a) >= 120, g
        assert snr_db(r, b) >= 90, g
    # guard against a vacuous match: the reverb changes the signal
    assert snr_db(x, ref[2]) < 3


def test_other_channel_counts_pass_through_as_in_pedalboard() -> None:
    x = time_effect_signals(22050, 0.2)["music"]
    x3 = np.concatenate([x, x[:1]])
    p = {k: torch.tensor([v], dtype=torch.float64) for k, v in zip(NAMES, GRID[0])}
    y = reverb(torch.from_numpy(x3)[None], 22050, **p)[0].numpy()
    assert np.array_equal(y, pedalboard.Reverb()(x3, 22050))


@pytest.mark.parametrize("channels", [1, 2])
def test_gradcheck_float64(channels: int) -> None:
    # at 2000 Hz the combs and all-passes are 10 to 78 samples long: 300 samples cross each
    # several times
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(2, channels, 300, generator=gen, dtype=torch.float64) * 0.4).requires_grad_()
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in zip(GRID[3], GRID[4])]

    def f(x: torch.Tensor, *p: torch.Tensor) -> torch.Tensor:
        return reverb(x, 2000, **dict(zip(NAMES, p)))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradients_match_central_differences_on_music() -> None:
    x = torch.from_numpy(time_effect_signals(22050, 0.5)["music"]).double()[None]
    p0 = torch.tensor(GRID[3], dtype=torch.float64)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def loss(p: torch.Tensor) -> torch.Tensor:
        return (reverb(x, 22050, **{k: p[i : i + 1] for i, k in enumerate(NAMES)}) * w).sum()

    p = p0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(p), p)
    for i in range(len(NAMES)):
        step = torch.zeros_like(p0)
        step[i] = 1e-5
        fd = (loss(p0 + step) - loss(p0 - step)).item() / 2e-5
        assert grad[i].item() == pytest.approx(fd, rel=1e-5, abs=1e-6), NAMES[i]


def test_float32_gradients_close_to_float64() -> None:
    x = torch.from_numpy(time_effect_signals(22050, 0.5)["music"])[None]
    grads = []
    for dtype in (torch.float32, torch.float64):
        xx = x.to(dtype).detach().requires_grad_()
        params = [torch.tensor([v], dtype=dtype, requires_grad=True) for v in GRID[3]]
        reverb(xx, 22050, **dict(zip(NAMES, params))).square().sum().backward()
        grads.append([xx.grad.double(), *[q.grad.double() for q in params]])
    for g32, g64 in zip(*grads):
        assert torch.allclose(g32, g64, rtol=1e-3, atol=1e-4 * g64.abs().max().item())


def test_items_of_a_batch_are_independent() -> None:
    x = torch.from_numpy(time_effect_signals(22050, 0.3)["music"])[None].expand(3, -1, -1)
    p = torch.tensor(GRID[:3], dtype=torch.float32)
    y = reverb(x, 22050, **{k: p[:, i] for i, k in enumerate(NAMES)})
    for b in range(3):
        yb = reverb(x[b : b + 1], 22050, **{k: p[b : b + 1, i] for i, k in enumerate(NAMES)})
        assert torch.equal(y[b : b + 1], yb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x = torch.from_numpy(time_effect_signals(22050, 0.3)["music"])[None]
    outs = []
    for device in ("cpu", "cuda"):
        xx = x.to(device).detach().requires_grad_()
        params = [torch.tensor([v], device=device, requires_grad=True) for v in GRID[3]]
        y = reverb(xx, 22050, **dict(zip(NAMES, params)))
        y.square().sum().backward()
        outs.append([y.cpu(), xx.grad.cpu(), *[q.grad.cpu() for q in params]])
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_python_floats_are_shared_by_the_batch() -> None:
    x = torch.from_numpy(time_effect_signals(22050, 0.3)["music"])[None].expand(2, -1, -1)
    floats = reverb(x, 22050, **dict(zip(NAMES, GRID[3])))
    tensors = reverb(x, 22050, **{k: torch.full((2,), v) for k, v in zip(NAMES, GRID[3])})
    assert torch.equal(floats, tensors)
