"""afxest.dsp.delay against pedalboard.Delay (JUCE dsp::DelayLine, no interpolation) and its gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from afxest.dsp.delay import delay, delay_samples
from reference import snr_db, time_effect_signals

pedalboard = pytest.importorskip("pedalboard")

RATES = (22050, 44100, 48000)
# delay_seconds, feedback, mix across pedalboard's ranges: no delay (a bypass), below one sample
# (JUCE reads its 30 s line's oldest slot), one sample, and musical delays
GRID = list(itertools.product([0.0, 1e-5, "one sample", 0.0123, 0.25, 0.8], [0.0, 0.6, 1.0], [0.0, 0.3, 1.0]))


def render(x: np.ndarray, sr: int, dtype: torch.dtype, settings: list[tuple[float, float, float]]) -> np.ndarray:
    p = torch.tensor(settings, dtype=torch.float64)
    xb = torch.from_numpy(x).to(dtype).expand(len(settings), -1, -1)
    return delay(xb, sr, delay_seconds=p[:, 0], feedback=p[:, 1], mix=p[:, 2]).numpy()


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("kind", ["music", "impulse", "mono"])
def test_matches_pedalboard_at_every_setting(sr: int, kind: str) -> None:
    signals = time_effect_signals(sr)
    x = signals["music"][:1] if kind == "mono" else signals[kind]
    settings = [(1.0 / sr if d == "one sample" else d, fb, mix) for d, fb, mix in GRID]
    ref = np.stack([pedalboard.Delay(delay_seconds=d, feedback=fb, mix=mix)(x, sr) for d, fb, mix in settings])
    y32, y64 = render(x, sr, torch.float32, settings), render(x, sr, torch.float64, settings)
    for s, r, a, b in zip(settings, ref, y32, y64):
        # float32: pedalboard's arithmetic, so equal up to a platform's rounding; float64: the
        # difference is pedalboard's own float32 rounding (measured >= 122 dB)
        assert np.abs(r - a).max() <= 1e-6 and snr_db(r, a) >= 120, s
        assert snr_db(r, b) >= 100, s
    # guard against a vacuous match: echoes change the signal
    assert snr_db(x, ref[GRID.index((0.25, 0.6, 0.3))]) < 20


def test_delay_in_samples_is_where_pedalboard_puts_the_first_echo() -> None:
    # trunc(float32(seconds) * rate): a float32 just below k / rate truncates to k - 1
    seconds = np.concatenate([np.arange(1, 400) * 37 / 44100, np.random.default_rng(1).uniform(0.05, 0.8, 100)])
    found = delay_samples(torch.from_numpy(seconds), 44100).numpy()
    impulse = np.zeros((1, 40000), np.float32)
    impulse[0, 0] = 1.0
    firsts = [int(np.flatnonzero(pedalboard.Delay(delay_seconds=s, feedback=0.0, mix=1.0)(impulse, 44100)[0])[0]) for s in seconds]
    assert found.tolist() == firsts
    assert any(f != round(s * 44100) for f, s in zip(firsts, seconds))  # the truncation is exercised


def test_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(3, 2, 240, generator=gen, dtype=torch.float64) * 0.4).requires_grad_()
    feedback = torch.tensor([0.0, 0.6, 1.0], dtype=torch.float64, requires_grad=True)
    mix = torch.tensor([0.3, 1.0, 0.0], dtype=torch.float64, requires_grad=True)
    seconds = torch.tensor([0.005, 0.0123, 0.002], dtype=torch.float64)

    def f(x: torch.Tensor, feedback: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        return delay(x, 8000, delay_seconds=seconds, feedback=feedback, mix=mix)

    assert torch.autograd.gradcheck(f, (x, feedback, mix), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_float32_gradients_close_to_float64_and_no_gradient_to_the_delay_time() -> None:
    x = torch.from_numpy(time_effect_signals(22050, 0.5)["music"])[None]
    grads = []
    for dtype in (torch.float32, torch.float64):
        xx = x.to(dtype).detach().requires_grad_()
        params = [torch.tensor([v], dtype=dtype, requires_grad=True) for v in (0.1, 0.5, 0.4)]
        delay(xx, 22050, delay_seconds=params[0], feedback=params[1], mix=params[2]).square().sum().backward()
        assert params[0].grad is None
        grads.append([xx.grad.double(), params[1].grad.double(), params[2].grad.double()])
    for g32, g64 in zip(*grads):
        assert torch.allclose(g32, g64, rtol=1e-4, atol=1e-5 * g64.abs().max().item())


def test_items_of_a_batch_are_independent() -> None:
    x = torch.from_numpy(time_effect_signals(22050, 0.5)["music"])[None].expand(3, -1, -1)
    p = {"delay_seconds": torch.tensor([0.0, 0.1, 0.31]), "feedback": torch.tensor([0.5, 0.2, 0.9]),
         "mix": torch.tensor([0.5, 0.5, 0.25])}
    y = delay(x, 22050, **p)
    for b in range(3):
        assert torch.equal(y[b : b + 1], delay(x[b : b + 1], 22050, **{k: v[b : b + 1] for k, v in p.items()}))
    assert torch.equal(y[0], x[0])  # 0 s: unchanged whatever the mix


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x = torch.from_numpy(time_effect_signals(22050, 0.5)["music"])[None]
    p = [torch.tensor([v]) for v in (0.1, 0.5, 0.4)]
    outs = []
    for device in ("cpu", "cuda"):
        xx = x.to(device).detach().requires_grad_()
        pp = [q.to(device).requires_grad_() for q in p]
        y = delay(xx, 22050, delay_seconds=pp[0], feedback=pp[1], mix=pp[2])
        y.square().sum().backward()
        outs.append([y.cpu(), xx.grad.cpu(), pp[1].grad.cpu(), pp[2].grad.cpu()])
    for a, b in zip(*outs):
        assert torch.allclose(a, b)


def test_python_floats_are_shared_by_the_batch() -> None:
    x = torch.from_numpy(time_effect_signals(22050, 0.3)["music"])[None].expand(2, -1, -1)
    floats = delay(x, 22050, delay_seconds=0.1, feedback=0.5, mix=0.4)
    tensors = delay(x, 22050, delay_seconds=torch.full((2,), 0.1), feedback=torch.full((2,), 0.5), mix=torch.full((2,), 0.4))
    assert torch.equal(floats, tensors)


def interpolated_delay(x: np.ndarray, d: int, fraction: float, feedback: float, mix: float) -> np.ndarray:
    """A feedback delay line read at D + fraction by linear interpolation (float64 reference)."""
    v = np.zeros_like(x)
    y = np.zeros_like(x)
    for i in range(x.shape[-1]):
        now = v[..., i - d] if i >= d else 0.0
        before = v[..., i - d - 1] if i >= d + 1 else 0.0
        w = (1 - fraction) * now + fraction * before
        v[..., i] = x[..., i] + feedback * w
        y[..., i] = (1 - mix) * x[..., i] + mix * w
    return y


def test_straight_through_keeps_the_output_and_gives_the_interpolated_lines_time_gradient() -> None:
    from afxest.dsp.delay import straight_through_delay

    sr, d = 8000, 37
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 400, generator=gen, dtype=torch.float64)
    weights = torch.randn(1, 2, 400, generator=gen, dtype=torch.float64)
    seconds = torch.tensor([(d + 0.5) / sr], dtype=torch.float64, requires_grad=True)
    y = straight_through_delay(x, sr, delay_seconds=seconds, feedback=0.6, mix=0.4)
    assert torch.equal(y, delay(x, sr, delay_seconds=seconds, feedback=0.6, mix=0.4))
    (y * weights).sum().backward()

    def loss(fraction: float) -> float:
        return float(np.sum(interpolated_delay(x[0].numpy(), d, fraction, 0.6, 0.4) * weights[0].numpy()))

    assert loss(0.0) == pytest.approx(float((y * weights).sum().detach()), rel=1e-12)
    step = 1e-7
    assert seconds.grad.item() / sr == pytest.approx((loss(step) - loss(0.0)) / step, rel=1e-5)
