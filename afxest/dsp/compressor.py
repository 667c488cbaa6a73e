"""Differentiable feed-forward compressor that reproduces pedalboard's ``Compressor``.

pedalboard's ``Compressor`` is JUCE's ``juce::dsp::Compressor``. Per channel and per sample n
(no look-ahead, no knee, no make-up gain, no stereo link):

    a[n] = |x[n]|
    c[n] = c_att if a[n] > e[n-1] else c_rel                 (peak BallisticsFilter, e[-1] = 0)
    e[n] = a[n] + c[n] * (e[n-1] - a[n])
    g[n] = 1 if e[n] < T else (e[n] / T) ** (1/ratio - 1),    T = 10 ** (threshold_db / 20)
    y[n] = g[n] * x[n]

with c = exp(-2 pi 1000 / (sample_rate * time_ms)), or c = 0 when time_ms < 0.001.

Forward and backward each run as one compiled loop (numba, imported on first use). The
gradient is exact almost everywhere: with the attack/release choice of every sample held
fixed, the recursion is a linear time-varying one-pole filter, and its adjoint
lam[n] = dL/de[n] + c[n+1] lam[n+1] runs backwards in time. The choice itself is piecewise
constant and e is continuous across it, so y is continuous and piecewise smooth in every
input. See docs/compressor.md.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from afxest.dsp.loops import as_param as _as_param
from afxest.dsp.loops import cpu as _cpu
from afxest.dsp.loops import run_rows as _run_rows

__all__ = ["compressor", "ballistics_coefficient"]

_KERNELS: tuple[Callable[..., None], Callable[..., None]] | None = None


def _kernels() -> tuple[Callable[..., None], Callable[..., None]]:
    """Compiles (or loads from numba's on-disk cache) the forward and backward loops."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    import numba

    @numba.njit(cache=True, nogil=True)
    def forward(x, threshold, threshold_inv, exponent, c_att, c_rel, y, env, gain):
        # JUCE's arithmetic in the arrays' own dtype (float32 like pedalboard). g is typed
        # float64, which holds every float32 exactly, and the product g * x is then rounded
        # once to the output dtype, as a float32 product is.
        rows, n = x.shape
        for r in range(rows):
            t = threshold[r]
            t_inv = threshold_inv[r]
            p = exponent[r]
            ca = c_att[r]
            cr = c_rel[r]
            e = ca - ca  # 0 in the arrays' dtype
            for i in range(n):
                v = abs(x[r, i])
                c = ca if v > e else cr
                e = v + c * (e - v)
                g = 1.0 if e < t else (e * t_inv) ** p
                env[r, i] = e
                gain[r, i] = g
                y[r, i] = g * x[r, i]

    @numba.njit(cache=True, nogil=True)
    def backward(
        grad_y, x, env, gain, threshold, threshold_inv, exponent, c_att, c_rel, grad_x, grad_p
    ):
        # Adjoint of `forward`, accumulated in float64.
        # grad_p[r] = dL/d(threshold, exponent, c_att, c_rel) for row r.
        rows, n = x.shape
        for r in range(rows):
            t = float(threshold[r])
            t_inv = float(threshold_inv[r])
            p = float(exponent[r])
            ca = float(c_att[r])
            cr = float(c_rel[r])
            lam = 0.0  # dL/de[i], total (through all later samples)
            c_next = 0.0
            s_over = 0.0  # sum of dL/dg * g over samples above threshold
            g_p = 0.0
            g_ca = 0.0
            g_c = 0.0  # d(loss)/dc summed over all samples; release part = g_c - g_ca
            for i in range(n - 1, -1, -1):
                xi = float(x[r, i])
                gy = float(grad_y[r, i])
                g = float(gain[r, i])
                e = float(env[r, i])
                lam = c_next * lam
                if e >= t:  # above threshold: g = (e / t) ** p
                    dg_g = gy * xi * g
                    lam += p * dg_g / e
                    s_over += dg_g
                    g_p += dg_g * math.log(e * t_inv)
                # ballistics step i: e = a + c (prev - a), with the forward pass's choice of c
                a = abs(x[r, i])
                prev = env[r, i - 1] if i > 0 else a - a
                att = a > prev
                c = ca if att else cr
                d = lam * (float(prev) - float(a))
                g_c += d
                g_ca += d if att else 0.0
                sign = (xi > 0.0) - (xi < 0.0)
                grad_x[r, i] = gy * g + sign * (1.0 - c) * lam
                c_next = c
            grad_p[r, 0] = -p / t * s_over
            grad_p[r, 1] = g_p
            grad_p[r, 2] = g_ca
            grad_p[r, 3] = g_c - g_ca

    _KERNELS = (forward, backward)
    return _KERNELS


class _Compressor(torch.autograd.Function):
    """Rows (rows, time); per row: threshold T (linear) and 1/T (as JUCE stores it, not
    differentiated: the gradient w.r.t. T covers both), exponent 1/ratio - 1, c_att, c_rel."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        threshold: torch.Tensor,
        threshold_inv: torch.Tensor,
        exponent: torch.Tensor,
        c_att: torch.Tensor,
        c_rel: torch.Tensor,
    ) -> torch.Tensor:
        fwd, _ = _kernels()
        xc = _cpu(x)
        y, env, gain = torch.empty_like(xc), torch.empty_like(xc), torch.empty_like(xc)
        params = [_cpu(p).numpy() for p in (threshold, threshold_inv, exponent, c_att, c_rel)]
        _run_rows(fwd, [xc.numpy(), *params, y.numpy(), env.numpy(), gain.numpy()])
        # Saved on the CPU, where the backward loop reads them.
        ctx.save_for_backward(xc, threshold, threshold_inv, exponent, c_att, c_rel, env, gain)
        ctx.device = x.device
        return y.to(x.device)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_y: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        xc, threshold, threshold_inv, exponent, c_att, c_rel, env, gain = ctx.saved_tensors
        _, bwd = _kernels()
        grad_x = torch.empty_like(xc)
        grad_p = torch.empty((xc.shape[0], 4), dtype=torch.float64)
        params = [_cpu(p).numpy() for p in (threshold, threshold_inv, exponent, c_att, c_rel)]
        arrays = [_cpu(grad_y, xc.dtype).numpy(), xc.numpy(), env.numpy(), gain.numpy()]
        _run_rows(bwd, [*arrays, *params, grad_x.numpy(), grad_p.numpy()])
        g = grad_p.to(device=threshold.device, dtype=threshold.dtype)
        return grad_x.to(ctx.device), g[:, 0], None, g[:, 1], g[:, 2], g[:, 3]


def ballistics_coefficient(time_ms: torch.Tensor, sample_rate: float) -> torch.Tensor:
    """The JUCE BallisticsFilter constant exp(-2 pi 1000 / (sample_rate * time_ms)); 0 below 0.001 ms.

    Computed in float64 as JUCE does; differentiable (gradient 0 below 0.001 ms).
    """
    t = time_ms.to(torch.float64)
    small = t < 1e-3
    safe = torch.where(small, torch.ones_like(t), t)
    c = torch.exp((-2.0 * math.pi * 1000.0 / float(sample_rate)) / safe)
    return torch.where(small, torch.zeros_like(c), c)


def compressor(
    x: torch.Tensor,
    sample_rate: float,
    *,
    threshold_db: torch.Tensor | float,
    ratio: torch.Tensor | float,
    attack_ms: torch.Tensor | float,
    release_ms: torch.Tensor | float,
) -> torch.Tensor:
    """Compresses x as a hard-knee peak compressor, sample for sample JUCE's ``dsp::Compressor``
    (pedalboard's ``Compressor``; the recursion is in the module docstring).

    The loops run on the CPU (numba, compiled on first use and cached on disk); CUDA tensors
    are copied to the CPU for them and the results copied back. pedalboard floors thresholds
    at -200 dB to a gain of 0 (and outputs NaN for digital silence); that corner is not
    reproduced.

    Arguments:
        x: The audio, shaped (batch, channels, time), float32 or float64. Each channel has its
            own detector (pedalboard does not link channels).
        sample_rate: The sample rate in Hz.
        threshold_db: The threshold in dB, a float or a tensor shaped (batch,).
        ratio: The compression ratio (pedalboard requires >= 1), a float or (batch,).
        attack_ms: The attack time in ms, a float or (batch,); below 0.001 ms the constant is 0
            (instant), as in JUCE, and the gradient with respect to the time is 0.
        release_ms: The release time in ms, likewise.

    Returns:
        The compressed audio, shaped and typed like x, differentiable with respect to x and all
        four parameters. In float32 the detector and gain are computed as JUCE computes them,
        so the output equals pedalboard's up to the last bit of ``pow``.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be shaped (batch, channels, time), got {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"x must be float32 or float64, got {x.dtype}")
    batch, channels, n = x.shape
    dtype = x.dtype
    thr = _as_param(threshold_db, batch, x, "threshold_db").to(dtype)
    r = _as_param(ratio, batch, x, "ratio").to(dtype)
    att = _as_param(attack_ms, batch, x, "attack_ms").to(dtype)
    rel = _as_param(release_ms, batch, x, "release_ms").to(dtype)
    # Per-item constants, formed as JUCE forms them in the sample type.
    threshold = torch.pow(10.0, thr * 0.05)
    exponent = 1.0 / r - 1.0
    c_att = ballistics_coefficient(att, sample_rate).to(dtype)
    c_rel = ballistics_coefficient(rel, sample_rate).to(dtype)
    if n == 0 or channels == 0 or batch == 0:
        return x * 1.0
    rows = batch * channels

    def per_row(p: torch.Tensor) -> torch.Tensor:
        return p[:, None].expand(batch, channels).reshape(rows)

    y = _Compressor.apply(
        x.reshape(rows, n),
        per_row(threshold),
        per_row(1.0 / threshold.detach()),
        per_row(exponent),
        per_row(c_att),
        per_row(c_rel),
    )
    return y.reshape(batch, channels, n)


# JUCE's dsp::Limiter (pedalboard's ``Limiter``), juce_Limiter.cpp: a fixed first stage, then a
# second whose threshold and release are the limiter's, a make-up gain that brings the threshold
# to 0 dBFS, and a hard clip at 0 dBFS
LIMITER_FIRST_STAGE = {"threshold_db": -10.0, "ratio": 4.0, "attack_ms": 2.0, "release_ms": 200.0}
LIMITER_RATIO = 1000.0
LIMITER_ATTACK_MS = 0.001


def limiter(x: torch.Tensor, sample_rate: float, *, threshold_db: torch.Tensor, release_ms: torch.Tensor) -> torch.Tensor:
    """Limits x as JUCE's ``dsp::Limiter`` (pedalboard's ``Limiter``): :func:`compressor` at
    -10 dB, 4:1, 2 ms / 200 ms; then :func:`compressor` at ``threshold_db``, 1000:1, 0.001 ms /
    ``release_ms``; then the gain 10^(10 (1 - 1/4) / 40) 10^(-threshold_db / 20) (the first
    stage's gain reduction at 0 dBFS made up, the threshold brought to 0 dBFS), then a hard clip
    at +-1.

    Arguments:
        x: The audio, shaped (batch, channels, time); each channel limited on its own.
        sample_rate: The sample rate in Hz.
        threshold_db: The threshold in dB, (batch,).
        release_ms: The second stage's release time in ms, (batch,).
    """
    y = compressor(x, sample_rate, **LIMITER_FIRST_STAGE)
    y = compressor(y, sample_rate, threshold_db=threshold_db, ratio=LIMITER_RATIO, attack_ms=LIMITER_ATTACK_MS,
                   release_ms=release_ms)
    ratio_inverse = 1.0 / LIMITER_FIRST_STAGE["ratio"]
    make_up_db = 10.0 * (1.0 - ratio_inverse) / 2 - _as_param(threshold_db, x.shape[0], x, "threshold_db")
    return (y * torch.pow(10.0, make_up_db / 20)[:, None, None]).clamp(-1.0, 1.0)
