"""Echoes: a delay line's time, feedback and mix read from audio (issue 24).

pedalboard's ``Delay`` (:mod:`afxest.dsp.delay`) of D samples, feedback f and mix m has the
impulse response (1 - m) at lag 0 and m f^(k - 1) at lag k D (k >= 1), so

    H(w) = (1 - m) + m e^(-jwD) / (1 - f e^(-jwD)) = (1 - m) (1 - (f - r) e^(-jwD)) / (1 - f e^(-jwD)),

with r = m / (1 - m) <= 1 for m <= 1/2 (minimum phase where |f - r| < 1). Two readings:

* **with the dry** (:func:`measure_delay`): the impulse response of the wet over the dry by
  regularised (Wiener) deconvolution, h = IFFT(Y X* / (|X|^2 + lambda)), whose taps at 0, D,
  2D stand in the ratios 1 - m : m : m f, each tap the same kernel (the equaliser, the
  compressor's mean gain and the reverb before and after the line are common to all): D is
  the lag of the largest tap in the delay's range, r = a_1 / a_0 and f = a_2 / a_1 (each tap
  at lag k corrected for the clip's edge, below);
* **blind** (:func:`cepstrum`, :func:`cepstral_peaks`): the real cepstrum of the wet, the
  inverse transform of ln |Y| (Bogert, Healy & Tukey 1963; Childers, Skinner & Kemerait,
  "The cepstrum: a guide to processing", Proc. IEEE 65(10), 1977). ln |H| expands as
  ln (1 - m) + sum_k (f^k - (f - r)^k) / k cos(k w D), so the wet's cepstrum is the dry's plus
  a peak r / 2 at D and (2 f r - r^2) / 4 at 2 D; music's own cepstrum is small at the 50-800
  ms quefrencies of the mix task's delays (its pitch periods are shorter).

Measured on the first 32 of the mix task's validation items (docs/effects.md, "Delay"): the
cepstrum's largest peak in the delay's range was the delay to the sample on every item of mix
>= 0.2, the deconvolution's on every item of mix >= 0.05.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

FLOOR = 1e-4  # the magnitude spectrum's floor before the log, relative to its largest bin (-80 dB)
REGULARISATION = 1e-3  # lambda of the deconvolution, relative to the dry's mean power per bin
GUARD_SECONDS = 0.002  # two peaks closer than this are one (the cepstrum's and the taps' search)
TAP_SECONDS = 0.01  # the kernel of a tap: the response this long from its lag (at most half the delay)


def cepstrum(x: Tensor) -> Tensor:
    """The real cepstrum of x (..., T), IFFT(ln |FFT(x)|) over 2T points (zero padded, so an echo
    in x is not wrapped around), its first T quefrencies (..., T). The magnitude is floored at
    :data:`FLOOR` times its largest bin (silent bands would dominate the log)."""
    n = 2 * x.shape[-1]
    magnitude = torch.fft.rfft(x, n).abs()
    floor = FLOOR * magnitude.amax(dim=-1, keepdim=True) + torch.finfo(x.dtype).tiny
    return torch.fft.irfft(torch.log(magnitude + floor), n)[..., : x.shape[-1]]


def local_peaks(values: Tensor, lo: int, hi: int, k: int, guard: int) -> Tensor:
    """The indices (..., k) of the k largest local maxima of values (..., T) at indices
    [lo, hi), a maximum being the largest value within ``guard`` samples either side, largest
    first (ties and flat stretches give several indices of one peak; past the maxima there are,
    the indices are arbitrary ones of the range)."""
    segment = values[..., lo:hi]
    flat = segment.reshape(-1, 1, segment.shape[-1])
    pooled = torch.nn.functional.max_pool1d(flat, 2 * guard + 1, stride=1, padding=guard).reshape(segment.shape)
    score = torch.where(segment >= pooled, segment, torch.full_like(segment, -torch.inf))
    return score.topk(min(k, segment.shape[-1]), dim=-1).indices + lo


def quefrency_peaks(c: Tensor, sample_rate: float, lo_seconds: float, hi_seconds: float, k: int) -> Tensor:
    """The lags in samples (..., k) of the k largest peaks of a cepstrum c (..., T) at delays in
    [lo_seconds, hi_seconds), largest first (:func:`local_peaks`, peaks :data:`GUARD_SECONDS`
    apart)."""
    n = c.shape[-1]
    lo = max(1, int(lo_seconds * sample_rate))
    hi = min(n, int(np.ceil(hi_seconds * sample_rate)))
    return local_peaks(c, lo, hi, k, max(1, int(GUARD_SECONDS * sample_rate)))


def cepstral_peaks(x: Tensor, sample_rate: float, lo_seconds: float, hi_seconds: float, k: int) -> tuple[Tensor, Tensor]:
    """The k strongest echoes the cepstrum of x (..., T) shows at delays in [lo_seconds,
    hi_seconds): their lags in samples (..., k), largest peak first, and the cepstrum at 1, 2
    and 3 times each lag (..., k, 3) (0 past the clip): r / 2 and (2 f r - r^2) / 4 at a delay's
    first two multiples (module docstring)."""
    return peaks_of_cepstrum(cepstrum(x), sample_rate, lo_seconds, hi_seconds, k)


def peaks_of_cepstrum(c: Tensor, sample_rate: float, lo_seconds: float, hi_seconds: float, k: int) -> tuple[Tensor, Tensor]:
    """:func:`cepstral_peaks` of a cepstrum c (..., T) already computed (:func:`cepstrum`)."""
    n = c.shape[-1]
    lags = quefrency_peaks(c, sample_rate, lo_seconds, hi_seconds, k)
    multiples = lags.unsqueeze(-1) * torch.arange(1, 4, device=c.device)
    padded = torch.nn.functional.pad(c, (0, 1))  # index n: 0
    values = padded.gather(-1, multiples.clamp(max=n).flatten(-2)).reshape(multiples.shape)
    return lags, values


@dataclass(frozen=True)
class Echo:
    """A delay measured from a dry/wet pair: ``samples`` D, ``seconds`` (D + 1/2) / rate (the
    middle of the times pedalboard truncates to D), ``feedback`` and ``mix`` (clipped to [0, 1)
    and [0, 1/2]: what the ratios of the taps give), and ``strength`` a_1 / a_0 before clipping."""

    samples: int
    seconds: float
    feedback: float
    mix: float
    strength: float


def impulse_response(dry: Sequence[np.ndarray], wet: Sequence[np.ndarray], length: int) -> np.ndarray:
    """The first ``length`` lags of the impulse response from dry to wet, from one or several
    pairs of segments (each (T_s,), a pair of equal length) by regularised deconvolution over 2T
    points (T the longest segment): IFFT(sum_s Y_s X_s* / (sum_s |X_s|^2 + lambda)), lambda
    :data:`REGULARISATION` times the mean of sum_s |X_s|^2."""
    n = 2 * max(len(x) for x in dry)
    cross, power = 0.0, 0.0
    for x_s, y_s in zip(dry, wet):
        x, y = np.fft.rfft(np.asarray(x_s, np.float64), n), np.fft.rfft(np.asarray(y_s, np.float64), n)
        cross, power = cross + y * np.conj(x), power + np.abs(x) ** 2
    return np.fft.irfft(cross / (power + REGULARISATION * np.mean(power) + 1e-30), n)[:length]


def tap(h: np.ndarray, lag: int, width: int) -> float:
    """The height of the tap of h at ``lag`` as a multiple of the tap at 0: the least-squares
    scale of h[lag : lag + width] onto h[0 : width] (0 where the tap runs past h)."""
    kernel = h[:width]
    segment = h[lag : lag + width]
    if len(segment) < width:
        return 0.0
    return float(segment @ kernel / max(kernel @ kernel, 1e-30))


def measure_delay(dry: Sequence[np.ndarray], wet: Sequence[np.ndarray], sample_rate: float, lo_seconds: float,
                  hi_seconds: float) -> Echo:
    """The delay that best explains the wet from the dry (one or several pairs of segments, as
    :func:`impulse_response` takes them): the largest tap of their impulse response at lags in
    [lo_seconds, hi_seconds], and the feedback and mix from the taps' ratios (module docstring).
    The other effects of a chain around the delay (equaliser, compressor, reverb) are common to
    every tap."""
    n = max(len(x) for x in dry)
    lo, hi = max(1, int(lo_seconds * sample_rate)), min(n - 1, int(np.ceil(hi_seconds * sample_rate)) + 1)
    h = impulse_response(dry, wet, n)
    d = int(local_peaks(torch.from_numpy(np.abs(h)), lo, hi, 1, max(1, int(GUARD_SECONDS * sample_rate)))[0])
    width = max(1, min(d // 2, int(TAP_SECONDS * sample_rate)))
    # the wet of a segment holds the echoes at lag k of only the first T - k samples of its dry:
    # a tap reads low by (T - k) / T, its share of the dry's energy were it spread evenly
    seen = [(n - k) / n if k < n else 0.0 for k in (d, 2 * d)]
    r = tap(h, d, width) / seen[0]
    ratio = tap(h, 2 * d, width) / seen[1] / r if r > 0 and seen[1] > 0 else 0.0
    return Echo(
        samples=d,
        seconds=(d + 0.5) / sample_rate,
        feedback=float(np.clip(ratio, 0.0, 0.999)),
        mix=float(np.clip(r / (1 + r), 0.0, 0.5)) if r > 0 else 0.0,
        strength=r,
    )
