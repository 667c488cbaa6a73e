"""The processors of the other-implementation families of ``benchmarks/foreign_chains.py``.

Written here with numpy and scipy only, independently of pedalboard and of afxest, so that
tests can import them (``tests/test_foreign_families.py``) and afxest gains no dependency.
Signals are float64 arrays shaped (T,) or (C, T); a processor keeps the shape it is given.

* ``cookbook``: RBJ Audio EQ Cookbook biquads with the cookbook's other width conventions, an
  RMS soft-knee compressor and a tanh clipper (:func:`rbj_sos`, :func:`rms_soft_knee_compressor`);
* ``match-limit``: a linear-phase matching FIR from the ratio of two long-term average spectra,
  fractional-octave smoothed (:func:`matching_fir`), then a lookahead brickwall limiter
  (:func:`brickwall_limiter`);
* ``compander``: shelves and peaks designed from RBJ's analog prototypes by the matched-z
  transform (:func:`matched_z_sos`), then a multi-segment soft-knee compander
  (:class:`Curve`, :func:`compander`) and make-up gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.signal

KNEE_DB = 6.0  # the cookbook family's compressor knee
RMS_MS = 5.0  # the cookbook family's RMS detector


# ---------------------------------------------------------------------------------------------
# shared pieces


def one_pole(time_ms: float, rate: float) -> float:
    """The coefficient of a one-pole smoother with time constant ``time_ms``."""
    return math.exp(-1000.0 / (time_ms * rate))


def per_channel(x: np.ndarray, f) -> np.ndarray:
    """``f`` applied to each channel of ``x`` (T,) or (C, T) (as pedalboard renders a chain)."""
    return f(x) if x.ndim == 1 else np.stack([f(c) for c in x])


def smooth_gain(target_db: np.ndarray, attack_ms: float, release_ms: float, rate: float) -> np.ndarray:
    """A gain reduction (dB, <= 0) smoothed by attack / release one-poles in the dB domain, the
    attack where more reduction is asked (Giannoulis, Massberg & Reiss, JAES 2012, Eq. 17)."""
    c_att, c_rel = one_pole(attack_ms, rate), one_pole(release_ms, rate)
    gain = np.empty_like(target_db)
    g = 0.0
    for n, t in enumerate(target_db.tolist()):
        k = c_att if t < g else c_rel
        g = k * g + (1 - k) * t
        gain[n] = g
    return gain


def rms_level_db(x: np.ndarray, rms_ms: float, rate: float) -> np.ndarray:
    """The level (dB) of a one-pole mean-square detector, (T,); a (C, T) signal is linked: the
    mean of its channels' powers."""
    power = x * x if x.ndim == 1 else np.mean(x * x, axis=0)
    c = one_pole(rms_ms, rate)
    return 10 * np.log10(scipy.signal.lfilter([1 - c], [1, -c], power) + 1e-12)


# ---------------------------------------------------------------------------------------------
# cookbook: RBJ biquads, RMS soft-knee compressor, tanh clipper


def rbj_sos(kind: str, f0: float, gain_db: float, width: float, rate: float) -> np.ndarray:
    """One RBJ cookbook biquad as a normalised second-order section (1, 6): ``width`` is the
    shelf slope S for shelves and the bandwidth in octaves for a peak."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / rate
    cos_w, sin_w = math.cos(w0), math.sin(w0)
    if kind == "peak":
        alpha = sin_w * math.sinh(math.log(2) / 2 * width * w0 / sin_w)
        b = [1 + alpha * a, -2 * cos_w, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cos_w, 1 - alpha / a]
    else:
        alpha = sin_w / 2 * math.sqrt((a + 1 / a) * (1 / width - 1) + 2)
        r = 2 * math.sqrt(a) * alpha
        if kind == "low_shelf":
            b = [a * ((a + 1) - (a - 1) * cos_w + r), 2 * a * ((a - 1) - (a + 1) * cos_w), a * ((a + 1) - (a - 1) * cos_w - r)]
            den = [(a + 1) + (a - 1) * cos_w + r, -2 * ((a - 1) + (a + 1) * cos_w), (a + 1) + (a - 1) * cos_w - r]
        else:
            b = [a * ((a + 1) + (a - 1) * cos_w + r), -2 * a * ((a - 1) + (a + 1) * cos_w), a * ((a + 1) + (a - 1) * cos_w - r)]
            den = [(a + 1) - (a - 1) * cos_w + r, 2 * ((a - 1) - (a + 1) * cos_w), (a + 1) - (a - 1) * cos_w - r]
    return np.array([b + den]) / den[0]


def rms_soft_knee_compressor(x: np.ndarray, threshold_db: float, ratio: float, attack_ms: float, release_ms: float,
                             rate: float) -> np.ndarray:
    """Feed-forward compressor on one channel (T,): RMS level in dB, a quadratic soft knee of
    KNEE_DB, the gain reduction smoothed by attack / release one-poles in dB (Giannoulis et al.
    2012, Eqs. 4, 17)."""
    over = rms_level_db(x, RMS_MS, rate) - threshold_db
    slope = 1 / ratio - 1
    target = np.where(2 * over < -KNEE_DB, 0.0,
                      np.where(2 * np.abs(over) <= KNEE_DB, slope * (over + KNEE_DB / 2) ** 2 / (2 * KNEE_DB), slope * over))
    return x * 10 ** (smooth_gain(target, attack_ms, release_ms, rate) / 20)


def cookbook_chain(x: np.ndarray, preset, rate: float) -> np.ndarray:
    """The master task's chain (its processors in order, ``preset`` in physical units) rendered
    by this module's cookbook implementation, each channel on its own."""
    y = np.asarray(x, np.float64)
    for e in preset.effects:
        p = e.params
        if e.type in ("low_shelf", "high_shelf"):
            y = scipy.signal.sosfilt(rbj_sos(e.type, p["cutoff_frequency_hz"], p["gain_db"], p["q"] / 1.5, rate), y)
        elif e.type == "peak":
            y = scipy.signal.sosfilt(rbj_sos("peak", p["cutoff_frequency_hz"], p["gain_db"], 1 / p["q"], rate), y)
        elif e.type == "compressor":
            y = per_channel(y, lambda c: rms_soft_knee_compressor(c, p["threshold_db"], p["ratio"], p["attack_ms"],
                                                                  p["release_ms"], rate))
        elif e.type == "gain":
            y = y * 10 ** (p["gain_db"] / 20)
        elif e.type == "clipping":
            c = 10 ** (p["threshold_db"] / 20)
            y = c * np.tanh(y / c)
        else:
            raise ValueError(f"no foreign implementation of {e.type}")
    return y


# ---------------------------------------------------------------------------------------------
# match-limit: matching FIR, brickwall limiter


def ltas(x: np.ndarray, nfft: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """The long-term average power spectrum of ``x``'s mono mix: Welch's method, Hann windows of
    ``nfft`` samples, half overlap. Returns (frequencies in Hz, power), (nfft / 2 + 1,) each."""
    mono = x if x.ndim == 1 else x.mean(axis=0)
    return scipy.signal.welch(mono, fs=rate, window="hann", nperseg=nfft, noverlap=nfft // 2)


def octave_smooth(freqs: np.ndarray, power: np.ndarray, fraction: float) -> np.ndarray:
    """Fractional-octave smoothing: each bin becomes the mean of the bins within
    [f 2^(-fraction / 2), f 2^(fraction / 2)] (a 1 / b-octave rectangular window, b = 1 /
    fraction); the DC bin is kept."""
    csum = np.concatenate([[0.0], np.cumsum(power)])
    step = freqs[1] - freqs[0]
    lo = np.clip(np.ceil(freqs * 2 ** (-fraction / 2) / step), 0, len(freqs) - 1).astype(int)
    hi = np.clip(np.floor(freqs * 2 ** (fraction / 2) / step), 0, len(freqs) - 1).astype(int)
    out = (csum[hi + 1] - csum[lo]) / (hi - lo + 1)
    out[0] = power[0]
    return out


def match_curve_db(source: np.ndarray, target: np.ndarray, freqs: np.ndarray, fraction: float,
                   max_db: float) -> np.ndarray:
    """A matching equaliser's magnitude (dB) at ``freqs``: the ratio of the fractional-octave
    smoothed target and source power spectra, clamped to +-``max_db``, then offset so that the
    source's power is unchanged (sum of source |H|^2 = sum of source)."""
    s, t = octave_smooth(freqs, source, fraction), octave_smooth(freqs, target, fraction)
    db = np.clip(10 * np.log10((t + 1e-20) / (s + 1e-20)), -max_db, max_db)
    return db - 10 * np.log10(np.sum(s * 10 ** (db / 10)) / np.sum(s))


def matching_fir(curve_db: np.ndarray, freqs: np.ndarray, taps: int, rate: float) -> np.ndarray:
    """A linear-phase FIR (odd ``taps``, type I) whose magnitude follows ``curve_db`` at
    ``freqs`` (0 to rate / 2): windowed frequency sampling (``scipy.signal.firwin2``, Hamming)."""
    return scipy.signal.firwin2(taps, freqs, 10 ** (curve_db / 20), fs=rate)


def apply_fir(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``x`` through the linear-phase FIR ``h`` with its latency, (len(h) - 1) / 2, compensated
    (as a host's delay compensation does): the output stays aligned with the input."""
    d = (len(h) - 1) // 2
    y = scipy.signal.oaconvolve(np.atleast_2d(x), h[None], axes=-1)[:, d : d + x.shape[-1]]
    return y[0] if x.ndim == 1 else y


def brickwall_limiter(x: np.ndarray, ceiling_db: float, release_ms: float, lookahead_ms: float,
                      rate: float) -> np.ndarray:
    """A lookahead brickwall (sample-peak) limiter, channels linked, latency compensated.

    r[n] = min(1, c / |x[n]|) is the gain that keeps sample n at the ceiling c (the largest
    channel's |x|); m[n] = min of r over [n, n + L - 1] (L lookahead samples) reaches each
    peak's gain L samples ahead; in dB, m recovers by a one-pole release and falls at once;
    the gain is the mean of that over the last L samples (an attack ramp of L samples). Each
    mean covers L values taken from windows that all contain n, so g[n] <= r[n] and |y| <= c.
    """
    c = 10 ** (ceiling_db / 20)
    peak = np.abs(x) if x.ndim == 1 else np.abs(x).max(axis=0)
    r = np.minimum(1.0, c / np.maximum(peak, 1e-30))
    L = max(1, int(round(lookahead_ms * rate / 1000)))
    m = np.lib.stride_tricks.sliding_window_view(np.pad(r, (0, L - 1), constant_values=1.0), L).min(axis=-1)
    m_db = 20 * np.log10(m)
    k = one_pole(release_ms, rate)
    held = np.empty_like(m_db)
    g = 0.0
    for n, t in enumerate(m_db.tolist()):
        g = min(t, k * g + (1 - k) * t)
        held[n] = g
    lin = 10 ** (held / 20)
    gain = np.convolve(np.concatenate([np.full(L - 1, lin[0]), lin]), np.full(L, 1.0 / L), mode="valid")
    return x * gain


# ---------------------------------------------------------------------------------------------
# compander: matched-z shelves and peaks, a multi-segment soft-knee curve


def analog_prototype(kind: str, gain_db: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """RBJ's analog prototypes of a peak and of the shelves, in s normalised by w0 (Audio EQ
    Cookbook): numerator and denominator coefficients, highest power first; A = 10^(gain / 40)."""
    a = 10 ** (gain_db / 40)
    if kind == "peak":
        return np.array([1.0, a / q, 1.0]), np.array([1.0, 1 / (a * q), 1.0])
    r = math.sqrt(a) / q
    if kind == "low_shelf":
        return a * np.array([1.0, r, a]), np.array([a, r, 1.0])
    return a * np.array([a, r, 1.0]), np.array([1.0, r, a])


def shelf_q(gain_db: float, slope: float) -> float:
    """The Q of a cookbook shelf of slope S (S = 1: the steepest monotonic shelf)."""
    a = 10 ** (gain_db / 40)
    return 1 / math.sqrt((a + 1 / a) * (1 / slope - 1) + 2)


def matched_z_sos(kind: str, f0: float, gain_db: float, q: float, rate: float) -> np.ndarray:
    """The analog prototype at ``f0`` mapped by the matched-z transform (each pole and zero s_k
    to z_k = exp(s_k / rate)), its gain matched to the analog's at DC: a normalised
    second-order section (1, 6). No prewarping: near Nyquist the response departs from the
    analog's (unlike the cookbook's bilinear designs, which fit it exactly at f0)."""
    num, den = analog_prototype(kind, gain_db, q)
    w0 = 2 * math.pi * f0
    b = np.real(np.poly(np.exp(np.roots(num) * w0 / rate)))
    a = np.real(np.poly(np.exp(np.roots(den) * w0 / rate)))
    dc = num[-1] / den[-1]
    b = b * dc * a.sum() / b.sum()
    return np.concatenate([b / a[0], a / a[0]])[None]


@dataclass(frozen=True)
class Curve:
    """A compander's static curve in dB: slope ``slopes[0]`` below ``thresholds[0]``, then
    ``slopes[i]`` above ``thresholds[i - 1]``, each change of slope rounded by a quadratic soft
    knee of width ``knees[i]`` dB centred on its threshold (Giannoulis et al. 2012, Eq. 4,
    summed over breakpoints)."""

    thresholds: tuple[float, ...]
    slopes: tuple[float, ...]
    knees: tuple[float, ...]

    def __call__(self, level_db: np.ndarray) -> np.ndarray:
        """The output level (dB) for the input level ``level_db`` (dB)."""
        x = np.asarray(level_db, np.float64)
        t0 = self.thresholds[0]
        y = t0 + self.slopes[0] * (x - t0)
        for t, w, before, after in zip(self.thresholds, self.knees, self.slopes, self.slopes[1:]):
            u = x - t
            ramp = np.where(u <= -w / 2, 0.0, np.where(u >= w / 2, u, (u + w / 2) ** 2 / (2 * w)))
            y = y + (after - before) * ramp
        return y


def compander(x: np.ndarray, curve: Curve, rms_ms: float, attack_ms: float, release_ms: float,
              rate: float) -> np.ndarray:
    """A feed-forward compander, channels linked: the RMS level (one-pole mean square of
    ``rms_ms``), the gain curve(level) - level, smoothed in dB by attack / release one-poles
    (attack where the gain falls), applied to every channel."""
    level = rms_level_db(x, rms_ms, rate)
    return x * 10 ** (smooth_gain(curve(level) - level, attack_ms, release_ms, rate) / 20)
