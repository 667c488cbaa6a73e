"""Differentiable feedback delay that reproduces pedalboard's ``Delay``.

pedalboard's ``Delay`` (pedalboard/plugins/Delay.h) runs JUCE's ``dsp::DelayLine`` without
interpolation, per channel and per sample n, reading before it writes:

    w[n] = v[n - D]                            (0 before the first write)
    v[n] = x[n] + feedback * w[n]
    y[n] = (1 - mix) * x[n] + mix * w[n]

with D = trunc(float32(delay_seconds) * sample_rate) samples (the seconds are held as a
float32, the product taken in double). A delay of exactly 0 s leaves x unchanged whatever the
mix. A delay shorter than one sample (D = 0) reads the line's oldest slot: the line holds
30 s + 2 samples (JUCE's ``DelayLine`` keeps max(4, maximum + 2) slots, pedalboard's maximum
is 30 s), so D is that length instead.

Forward and backward each run as one compiled loop over the samples (numba, imported on first
use, as the compressor's): the forward in x's dtype with pedalboard's float arithmetic, so that
in float32 it equals pedalboard's output bit for bit; the backward as the adjoint recursion,
lam_v[n] = lam_w[n + D], lam_w[n] = mix dL/dy[n] + feedback lam_v[n], accumulated in float64.
The delay time is a whole number of samples: its gradient is 0, and
:func:`straight_through_delay` gives it a surrogate one for training.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Callable

import torch
from torch import Tensor

from afxest.dsp.loops import as_param, cpu, run_rows

__all__ = ["delay", "delay_samples", "straight_through_delay"]

MAXIMUM_SECONDS = 30  # pedalboard's MAXIMUM_DELAY_TIME_SECONDS


def delay_samples(delay_seconds: Tensor, sample_rate: float) -> Tensor:
    """The delay D in samples, (batch,) int64, as pedalboard sets it:
    trunc(float32(delay_seconds) * sample_rate), and the line's length, 30 s + 2 samples, for a
    delay below one sample (JUCE reads its oldest slot then).

    Example:
        >>> delay_samples(torch.tensor([0.1, 0.5, 1e-5], dtype=torch.float64), 22050).tolist()
        [2205, 11025, 661502]
    """
    seconds = delay_seconds.detach().to(device="cpu", dtype=torch.float32).double()
    d = torch.floor(seconds * float(sample_rate)).long()
    line = int(MAXIMUM_SECONDS * float(sample_rate)) + 2
    return torch.where(d > 0, d, torch.full_like(d, line))


@cache
def _kernels() -> tuple[Callable[..., None], Callable[..., None]]:
    """Compiles (or loads from numba's on-disk cache) the forward and backward loops."""
    import numba
    import numpy as np

    @numba.njit(cache=True, nogil=True)
    def forward(x, d, feedback, wet, dry, y, v):
        # pedalboard's order of operations, in the arrays' dtype; v is the line's input
        rows, n = x.shape
        for r in range(rows):
            dr, fb, wr, dr_gain = d[r], feedback[r], wet[r], dry[r]
            for i in range(n):
                w = v[r, i - dr] if i >= dr else fb - fb
                v[r, i] = x[r, i] + fb * w
                y[r, i] = x[r, i] * dr_gain + wr * w

    @numba.njit(cache=True, nogil=True)
    def backward(grad_y, x, v, d, feedback, wet, dry, grad_x, grad_p):
        # adjoint of `forward` in float64; grad_p[r] = dL/d(feedback, wet, dry, D) of row r,
        # D's as if the line read v[n - D - e] = (1 - e) v[n - D] + e v[n - D - 1], at e = 0+
        rows, n = x.shape
        buf = np.zeros(n)
        for r in range(rows):
            dr = d[r]
            fb, wr, dg = float(feedback[r]), float(wet[r]), float(dry[r])
            g_fb = g_wet = g_dry = g_d = 0.0
            for i in range(n - 1, -1, -1):
                gy = float(grad_y[r, i])
                lam_v = buf[i + dr] if i + dr < n else 0.0  # lam_w[i + D]
                w = float(v[r, i - dr]) if i >= dr else 0.0
                before = float(v[r, i - dr - 1]) if i > dr else 0.0
                lam_w = wr * gy + fb * lam_v
                buf[i] = lam_w
                grad_x[r, i] = dg * gy + lam_v
                g_fb += lam_v * w
                g_wet += gy * w
                g_dry += gy * float(x[r, i])
                g_d += lam_w * (before - w)
            grad_p[r, 0] = g_fb
            grad_p[r, 1] = g_wet
            grad_p[r, 2] = g_dry
            grad_p[r, 3] = g_d

    return forward, backward


class _Delay(torch.autograd.Function):
    """Rows (rows, time); per row: the delay D (int64, not differentiated), feedback, wet and
    dry gains, and the delay in seconds, which gets the surrogate gradient of
    :func:`straight_through_delay` when ``surrogate`` is set, else none."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, d: Tensor, feedback: Tensor, wet: Tensor, dry: Tensor, seconds: Tensor,
        sample_rate: float, surrogate: bool,
    ) -> Tensor:
        fwd, _ = _kernels()
        xc = cpu(x)
        y, v = torch.empty_like(xc), torch.empty_like(xc)
        params = [cpu(p, xc.dtype).numpy() for p in (feedback, wet, dry)]
        d = cpu(d)
        run_rows(fwd, [xc.numpy(), d.numpy(), *params, y.numpy(), v.numpy()])
        ctx.save_for_backward(xc, v, d, feedback, wet, dry)
        ctx.device, ctx.sample_rate, ctx.surrogate = x.device, sample_rate, surrogate
        ctx.seconds_like = (seconds.dtype, seconds.device)
        return y.to(x.device)

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        xc, v, d, feedback, wet, dry = ctx.saved_tensors
        _, bwd = _kernels()
        grad_x = torch.empty_like(xc)
        grad_p = torch.empty((xc.shape[0], 4), dtype=torch.float64)
        params = [cpu(p, xc.dtype).numpy() for p in (feedback, wet, dry)]
        arrays = [cpu(grad_y, xc.dtype).numpy(), xc.numpy(), v.numpy(), d.numpy()]
        run_rows(bwd, [*arrays, *params, grad_x.numpy(), grad_p.numpy()])
        g = grad_p.to(device=feedback.device, dtype=feedback.dtype)
        dtype, device = ctx.seconds_like
        grad_seconds = (grad_p[:, 3] * ctx.sample_rate).to(dtype=dtype, device=device) if ctx.surrogate else None
        return grad_x.to(ctx.device), None, g[:, 0], g[:, 1], g[:, 2], grad_seconds, None, None


def _render(x: Tensor, sample_rate: float, params: dict[str, Tensor | float], surrogate: bool) -> Tensor:
    """:func:`delay`, with the surrogate gradient to the delay time when ``surrogate``."""
    batch, channels, n = x.shape
    if n == 0 or channels == 0 or batch == 0:
        return x * 1.0
    rows = batch * channels

    def per_row(p: Tensor) -> Tensor:
        return p[:, None].expand(batch, channels).reshape(rows)

    seconds = as_param(params["delay_seconds"], batch, x, "delay_seconds")
    wet = as_param(params["mix"], batch, x, "mix").to(x.dtype)
    fb = as_param(params["feedback"], batch, x, "feedback").to(x.dtype)
    d = delay_samples(seconds, sample_rate)
    y = _Delay.apply(x.reshape(rows, n), per_row(d), per_row(fb), per_row(wet), per_row(1 - wet), per_row(seconds),
                     float(sample_rate), surrogate)
    bypass = (seconds.detach().to(torch.float32) == 0)[:, None, None]
    return torch.where(bypass, x, y.reshape(batch, channels, n))


def delay(
    x: Tensor, sample_rate: float, *, delay_seconds: Tensor | float, feedback: Tensor | float, mix: Tensor | float
) -> Tensor:
    """Delays x with feedback and mixes it with x, as pedalboard's ``Delay`` does (the
    recursion and its corner cases are in the module docstring).

    The loops run on the CPU; CUDA tensors are copied to the CPU for them and back.

    Arguments:
        x: The audio, shaped (batch, channels, time), float32 or float64; each channel has its
            own line.
        sample_rate: The sample rate in Hz.
        delay_seconds: The delay in seconds (pedalboard: 0 to 30).
        feedback: The gain fed back into the line (0 to 1).
        mix: The wet gain; the dry gain is 1 - mix (0 to 1).

        Each parameter is a tensor shaped (batch,) or a float shared by the batch.

    Returns:
        The audio shaped and typed like x, differentiable with respect to x, the feedback and
        the mix (the delay time, a whole number of samples, has none: see
        :func:`straight_through_delay`). In float32 it equals pedalboard's output bit for bit.
    """
    return _render(x, sample_rate, {"delay_seconds": delay_seconds, "feedback": feedback, "mix": mix}, False)


def straight_through_delay(
    x: Tensor, sample_rate: float, *, delay_seconds: Tensor | float, feedback: Tensor | float, mix: Tensor | float
) -> Tensor:
    """:func:`delay`'s output, with a surrogate gradient to the delay time, for training and
    refinement (the clipper's straight-through idea, afxest.dsp.amplitude).

    The gradient is that of a delay line read by linear interpolation, v[n - D - e] =
    (1 - e) v[n - D] + e v[n - D - 1], at e = 0+ (the right derivative at the whole delay),
    times the sample rate: sample_rate * sum_n lam_w[n] (v[n - D - 1] - v[n - D]), lam_w the
    adjoint of the line's output. The other gradients are :func:`delay`'s.
    """
    return _render(x, sample_rate, {"delay_seconds": delay_seconds, "feedback": feedback, "mix": mix}, True)
