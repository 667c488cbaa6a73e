"""RBJ cookbook biquads applied in the frequency domain.

Coefficients follow R. Bristow-Johnson, "Cookbook formulae for audio EQ biquad filter
coefficients" (Q form, A = 10^(gain_db / 40)), which is exactly what JUCE's
``IIR::Coefficients::make{Low,High}Shelf/makePeakFilter`` (and so pedalboard) compute.

Filtering multiplies the signal's DFT by the exact frequency response H(e^{jw}) = B/A sampled
on the DFT grid. The DFT is zero padded by the length of the IIR's impulse response tail (until
it has decayed by ``TAIL_DB``), so the circular convolution equals the linear one: the result
matches the recursive filter, with gradients to the input and to every parameter.

Where no gradient is wanted, on the CPU (renderings to score, the search's finite differences),
the cascade runs as its recursion instead (transposed direct form II in float64, one compiled
loop over the biquads: :func:`_recursion`), which equals the frequency-domain pass to the
output's precision at a fraction of its cost: the response is sampled on as many points as the
longest tail needs (a 30 Hz shelf at 44.1 kHz: 2^17), the recursion costs a few operations a
sample and biquad.

The filters take the processors' one signature (:mod:`afxest.processors`): x (batch, channels,
time), the sample rate, then the catalogue's parameters by name, each (batch,); their
coefficient functions take the same parameters, so a chain can merge its biquads into one pass
(:func:`apply_biquads`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

TAIL_DB = 160.0  # impulse-response tail kept: decayed by 160 dB (below float32 resolution)
# Overlap-add block length: at least this, or twice the impulse-response tail. Short blocks
# make the response cheap to compute (it is sampled on block + tail points, not on the whole
# signal) and bound memory; measured on the master task's 5-biquad cascade, 16 x 5 s at
# 22050 Hz, forward + backward: 324 ms with one block of the whole clip, 112 ms with 16384.
BLOCK = 1 << 14


def _common(
    sample_rate: float, cutoff_frequency_hz: Tensor, gain_db: Tensor, q: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The cookbook's intermediates cos(w0), A = 10^(gain_db / 40) and alpha = sin(w0) / (2 Q),
    w0 = 2 pi cutoff / sample_rate."""
    w0 = 2 * math.pi * cutoff_frequency_hz / sample_rate
    big_a = torch.pow(10.0, gain_db / 40)
    return torch.cos(w0), big_a, torch.sin(w0) / (2 * q)


def peak_coefficients(
    sample_rate: float, *, cutoff_frequency_hz: Tensor, gain_db: Tensor, q: Tensor
) -> tuple[Tensor, Tensor]:
    """The RBJ cookbook coefficients b, a of a peaking EQ, shaped (batch, 3), from parameters shaped (batch,)."""
    cos_w, big_a, alpha = _common(sample_rate, cutoff_frequency_hz, gain_db, q)
    b = (1 + alpha * big_a, -2 * cos_w, 1 - alpha * big_a)
    a = (1 + alpha / big_a, -2 * cos_w, 1 - alpha / big_a)
    return torch.stack(b, dim=-1), torch.stack(a, dim=-1)


def _shelf_coefficients(
    s: float, sample_rate: float, cutoff_frequency_hz: Tensor, gain_db: Tensor, q: Tensor
) -> tuple[Tensor, Tensor]:
    """The RBJ cookbook shelf coefficients: s = 1 the low shelf, s = -1 the high shelf (the signs of cos flip)."""
    cos_w, big_a, alpha = _common(sample_rate, cutoff_frequency_hz, gain_db, q)
    ap1, am1 = big_a + 1, big_a - 1
    two_sqrt_a_alpha = 2 * torch.sqrt(big_a) * alpha
    b = (
        big_a * (ap1 - s * am1 * cos_w + two_sqrt_a_alpha),
        s * 2 * big_a * (am1 - s * ap1 * cos_w),
        big_a * (ap1 - s * am1 * cos_w - two_sqrt_a_alpha),
    )
    a = (
        ap1 + s * am1 * cos_w + two_sqrt_a_alpha,
        -s * 2 * (am1 + s * ap1 * cos_w),
        ap1 + s * am1 * cos_w - two_sqrt_a_alpha,
    )
    return torch.stack(b, dim=-1), torch.stack(a, dim=-1)


def low_shelf_coefficients(
    sample_rate: float, *, cutoff_frequency_hz: Tensor, gain_db: Tensor, q: Tensor
) -> tuple[Tensor, Tensor]:
    """The RBJ cookbook coefficients b, a of a low shelf, shaped (batch, 3), from parameters shaped (batch,)."""
    return _shelf_coefficients(1.0, sample_rate, cutoff_frequency_hz, gain_db, q)


def high_shelf_coefficients(
    sample_rate: float, *, cutoff_frequency_hz: Tensor, gain_db: Tensor, q: Tensor
) -> tuple[Tensor, Tensor]:
    """The RBJ cookbook coefficients b, a of a high shelf, shaped (batch, 3), from parameters shaped (batch,)."""
    return _shelf_coefficients(-1.0, sample_rate, cutoff_frequency_hz, gain_db, q)


@functools.lru_cache(maxsize=8)
def _delay_powers(n_fft: int, device: torch.device) -> Tensor:
    """e^{-jiw} for i = 0, 1, 2 at the n_fft // 2 + 1 bins of an rfft, (3, bins) complex128
    (kept for the last few sizes: a refinement asks for the same one at every step; made
    outside inference mode, so that a later differentiable call may save it for backward)."""
    with torch.inference_mode(False):  # a normal tensor, which a later backward may save
        w = torch.arange(n_fft // 2 + 1, device=device, dtype=torch.float64) * (2 * math.pi / n_fft)
        i = torch.arange(3, device=device, dtype=torch.float64)[:, None]
        return torch.polar(torch.ones_like(i * w), -i * w)


def frequency_response(b: Tensor, a: Tensor, n_fft: int) -> Tensor:
    """The frequency response H(e^{jw}) = B(e^{jw}) / A(e^{jw}) at the n_fft // 2 + 1 bins of an rfft,
    shaped (batch, bins), in the coefficients' precision (:func:`_delay_powers`)."""
    powers = _delay_powers(n_fft, b.device).to(torch.complex128 if b.dtype == torch.float64 else torch.complex64)
    return (b.to(powers.dtype) @ powers) / (a.to(powers.dtype) @ powers)


def tail_length(a: Tensor, sample_rate: float, tail_db: float = TAIL_DB, ringing: bool = True) -> int:
    """The number of samples until the slowest pole of any denominator in ``a`` (batch, 3) has
    decayed by ``tail_db`` (``ringing``: and by the up to 1 / (1 - r) a pole pair of radius r
    rings with, on top of it); ValueError for an unstable biquad. Computed in numpy, float64:
    one copy of ``a`` off its device, whatever the batch."""
    a0, a1, a2 = a.detach().to(device="cpu", dtype=torch.float64).numpy().T
    disc = a1 * a1 - 4 * a0 * a2
    sqrt_disc = np.sqrt(np.abs(disc))
    radii = np.where(
        disc < 0,
        np.sqrt(np.abs(a2 / a0)),
        np.maximum(np.abs(-a1 + sqrt_disc), np.abs(-a1 - sqrt_disc)) / (2 * np.abs(a0)),
    )
    radius = float(radii.max())
    if radius <= 0:
        return 2
    if radius >= 1:
        raise ValueError("unstable biquad (pole on or outside the unit circle)")
    # a pole pair near the unit circle rings with gain up to about 1 / (1 - r): allow for it
    decay = tail_db / 20 * math.log(10) - (math.log(1 - radius) if ringing else 0.0)
    return int(math.ceil(decay / -math.log(radius))) + 2


def next_fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= ``n`` (the sizes pocketfft and cuFFT handle fastest).

    Example:
        >>> next_fast_len(1000), next_fast_len(1025), next_fast_len(16385)
        (1000, 1080, 16875)
    """
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


class _CascadeResponse(torch.autograd.Function):
    """The frequency response of a cascade of K biquads, H = prod_k B_k / A_k with
    B_k = b_k0 + b_k1 e^{-jw} + b_k2 e^{-2jw} (and A_k alike), at the n_fft // 2 + 1 bins of an
    rfft, computed in complex128, with its gradient in closed form:
    dH/db_ki = H e^{-jiw} / B_k and dH/da_ki = -H e^{-jiw} / A_k, so that for a real loss L
    with g = dL/dRe H + j dL/dIm H, dL/db_ki = Re sum_w conj(g) H e^{-jiw} / B_k.
    One node in the graph instead of a few dozen per biquad (a refinement step's overhead)."""

    @staticmethod
    def forward(ctx, b: Tensor, a: Tensor, n_fft: int) -> Tensor:  # type: ignore[override]
        powers = _delay_powers(n_fft, b.device)  # (3, bins)
        num = b.to(torch.complex128) @ powers  # (batch, K, bins): each biquad's frequency_response numerator
        den = a.to(torch.complex128) @ powers
        h = (num / den).prod(dim=1)
        ctx.save_for_backward(powers, num, den, h)
        ctx.dtypes = (b.dtype, a.dtype)
        return h

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        powers, num, den, h = ctx.saved_tensors
        q = (g.conj().to(torch.complex128) * h)[:, None, :]  # (batch, 1, bins)
        e = powers.T  # (bins, 3)
        grad_b = ((q / num) @ e).real.to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        grad_a = (-(q / den) @ e).real.to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return grad_b, grad_a, None


def cascade_response(coefficients: Sequence[tuple[Tensor, Tensor]], n_fft: int) -> Tensor:
    """The frequency response of biquads in cascade, (batch, n_fft // 2 + 1) complex128: the
    product of each (b, a)'s :func:`frequency_response` (:class:`_CascadeResponse`)."""
    b = torch.stack([b for b, _ in coefficients], dim=1)
    a = torch.stack([a for _, a in coefficients], dim=1)
    return _CascadeResponse.apply(b, a, n_fft)


def apply_biquads(
    x: Tensor, coefficients: Sequence[tuple[Tensor, Tensor]], sample_rate: float, scale: Tensor | None = None
) -> Tensor:
    """Filters x by a cascade of biquads, in the frequency domain (its recursion where no
    gradient is wanted, on the CPU: :func:`_recursion`).

    The signal is processed by overlap-add in blocks of max(``BLOCK``, 2 tail) samples, each
    zero padded by the tail, so the circular convolution of each block is its linear one: the
    result equals the recursive filters' output (zero initial state), and cost and memory grow
    linearly with the signal's length.

    Arguments:
        x: The audio, shaped (batch, channels, time).
        coefficients: The biquads, (b, a) pairs shaped (batch, 3), applied in cascade.
        sample_rate: The sample rate in Hz (it sets the length of the impulse-response tail).
        scale: An optional broadband gain, shaped (batch,).

    Returns:
        The filtered audio, shaped like x.
    """
    batch, channels, n = x.shape
    if not coefficients and scale is None:
        return x
    # the tail sets the blocks; its computation also refuses an unstable biquad, whichever way
    tail = tail_length(torch.cat([a for _, a in coefficients]), sample_rate) if coefficients else 1
    if coefficients and x.device.type == "cpu" and not _differentiable(x, coefficients, scale):
        y = _recursion(x, coefficients)
        return y if scale is None else y * scale.to(y.dtype)[:, None, None]
    block = min(n, max(BLOCK, 2 * tail))
    n_fft = next_fast_len(block + tail)  # at most 2 block where there are several blocks
    # The response is computed in complex128 (poles near the unit circle stay exact), then cast
    # to the signal's precision.
    response = cascade_response(coefficients, n_fft) if coefficients else None
    if scale is not None:
        response = scale[:, None] if response is None else response * scale[:, None]
    complex_dtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
    response = torch.as_tensor(response).to(complex_dtype)
    blocks = -(-n // block)
    frames = torch.nn.functional.pad(x, (0, blocks * block - n)).reshape(batch, channels, blocks, block)
    y = torch.fft.irfft(torch.fft.rfft(frames, n_fft) * response[:, None, None, :], n_fft)
    if blocks == 1:
        return y[:, :, 0, :n]
    # overlap-add the blocks' n_fft-long outputs at hops of `block`: each spills its last
    # n_fft - block <= block samples (block >= 2 tail) into the next block's start
    pad = torch.nn.functional.pad
    head = y[..., :block].reshape(batch, channels, blocks * block)
    spill = pad(y[..., block:], (0, 2 * block - n_fft)).reshape(batch, channels, blocks * block)
    return (pad(head, (0, block)) + pad(spill, (block, 0)))[..., :n]


def _differentiable(x: Tensor, coefficients: Sequence[tuple[Tensor, Tensor]], scale: Tensor | None) -> bool:
    """Whether autograd wants the filter's gradient: grad mode on and an input that requires it."""
    tensors = [x, *(t for pair in coefficients for t in pair), *([] if scale is None else [scale])]
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


@functools.cache
def _cascade_kernel() -> Any:
    """Compiles (or loads from numba's on-disk cache) the cascade's recursion (afxest.dsp.loops)."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def cascade(x, sections, y):
        # x, y (rows, n); sections (rows, K, 5): b0, b1, b2, a1, a2 over a0 of each biquad in
        # order. Transposed direct form II, state and arithmetic in float64, all K biquads per
        # sample; the output rounded once to y's dtype.
        rows, n = x.shape
        k_count = sections.shape[1]
        s1 = np.zeros(k_count)
        s2 = np.zeros(k_count)
        for r in range(rows):
            s1[:] = 0.0
            s2[:] = 0.0
            for i in range(n):
                v = np.float64(x[r, i])
                for k in range(k_count):
                    out = sections[r, k, 0] * v + s1[k]
                    s1[k] = sections[r, k, 1] * v - sections[r, k, 3] * out + s2[k]
                    s2[k] = sections[r, k, 2] * v - sections[r, k, 4] * out
                    v = out
                y[r, i] = v

    return cascade


def _recursion(x: Tensor, coefficients: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """The cascade of biquads as its recursion, from zero state: x (batch, channels, time) ->
    the same shape and dtype (no gradient)."""
    from afxest.dsp.loops import cpu, run_rows

    batch, channels, n = x.shape
    b = torch.stack([b for b, _ in coefficients], dim=1).detach().to("cpu", torch.float64)  # (batch, K, 3)
    a = torch.stack([a for _, a in coefficients], dim=1).detach().to("cpu", torch.float64)
    sections = torch.cat([b, a[..., 1:]], dim=-1) / a[..., :1]  # (batch, K, 5)
    rows = cpu(x).reshape(batch * channels, n)
    y = torch.empty_like(rows)
    per_row = sections.repeat_interleave(channels, dim=0).contiguous()
    run_rows(_cascade_kernel(), [rows.numpy(), per_row.numpy(), y.numpy()])
    return y.reshape(batch, channels, n)


def peak(x: Tensor, sample_rate: float, *, cutoff_frequency_hz: Tensor, gain_db: Tensor, q: Tensor) -> Tensor:
    """Filters x (batch, channels, time) by an RBJ peaking EQ, as pedalboard's ``PeakFilter`` does."""
    coefficients = peak_coefficients(sample_rate, cutoff_frequency_hz=cutoff_frequency_hz, gain_db=gain_db, q=q)
    return apply_biquads(x, [coefficients], sample_rate)


def low_shelf(x: Tensor, sample_rate: float, *, cutoff_frequency_hz: Tensor, gain_db: Tensor, q: Tensor) -> Tensor:
    """Filters x (batch, channels, time) by an RBJ low shelf, as pedalboard's ``LowShelfFilter`` does."""
    coefficients = low_shelf_coefficients(sample_rate, cutoff_frequency_hz=cutoff_frequency_hz, gain_db=gain_db, q=q)
    return apply_biquads(x, [coefficients], sample_rate)


def high_shelf(x: Tensor, sample_rate: float, *, cutoff_frequency_hz: Tensor, gain_db: Tensor, q: Tensor) -> Tensor:
    """Filters x (batch, channels, time) by an RBJ high shelf, as pedalboard's ``HighShelfFilter`` does."""
    coefficients = high_shelf_coefficients(sample_rate, cutoff_frequency_hz=cutoff_frequency_hz, gain_db=gain_db, q=q)
    return apply_biquads(x, [coefficients], sample_rate)
