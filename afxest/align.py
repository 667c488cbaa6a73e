"""Where the wet lies against its dry: the offset between them, and whether they match at all.

A user's wet is rarely sample-aligned with the dry it was made from: lookahead limiters,
linear-phase equalisers, oversampling and converters add latency, and a master is often
trimmed, padded or given a tail. :func:`align` finds the offset d (in samples, either sign)
such that ``wet[n + d]`` is the processed ``dry[n]``, by the generalized cross-correlation
with phase transform (GCC-PHAT; Knapp & Carter, IEEE TASSP 24(4), 1976):

    r(j) = IFFT( conj(E(f)) G(f) / |conj(E(f)) G(f)| )(j)

over an excerpt e of the wet and the stretch g of the dry that can hold it. The phase
transform whitens the cross-spectrum, so an equaliser (which changes magnitudes, and phases
only smoothly) does not move or blur the peak, and a compressor or clipper (a slowly varying
gain, sparse distortion) leaves most bins' phases as they were. Bins where either signal has
no energy (below :data:`PHAT_FLOOR_DB` of the cross-spectrum's peak, such as the empty band
above a resampled signal's old Nyquist frequency) carry no phase and are left out.

The peak's height, normalised by the number of bins that take part, is :attr:`Alignment.match`:
1 for a pure delay of a linear filter, small for unrelated signals (a dry from another song,
noise), but the largest of many lags: a dry of another song peaked at 0.054, above a heavily
compressed pair's 0.30 less than an order of magnitude away. Whether the pair matches is judged
at the offset found, by the magnitude-squared coherence of the aligned signals
(:func:`coherence`, :attr:`Alignment.coherence`): near 1 where the wet is the dry through
effects that vary slowly against a frame (an equaliser, a compressor, a limiter, a clipper's
sparse distortion, a lossy codec), lower where a long reverberation or echoes outlast a frame,
and about 1/frames for unrelated signals. Below :func:`min_coherence` of its frames (at least
:data:`MIN_COHERENCE`, more for a short pair) the pair is refused.

The whitened peak lies at the delay plus the filters' phase-weighted group delay, a sample or
two late for the minimum-phase biquads of an equaliser (measured: 2 of 40 random mastering
chains). So the peak is sought again once that phase is taken out
(:func:`chain_phase_offset`): the chain's transfer function is estimated from the cross- and
auto-spectra of the two, its minimum phase rebuilt from its magnitude (:func:`minimum_phase`),
and the phase left over is read as a delay within :data:`ONSET_REACH` samples of the first
peak. Offsets are whole samples at the rate aligned at. Where the music leaves part of the band
empty, the chain's magnitude there is unknown and its phase in the band with it; a sample's
error remains possible (48 val excerpts through master chains at 44.1 kHz: 1 pair a sample
off; at 48 kHz: 2; ``benchmarks/alignment_accuracy.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_OFFSET_SECONDS = 30.0  # the wet may be this much late or early against the dry
EXCERPT_SECONDS = 30.0  # the wet's excerpt correlated against the dry (its loudest stretch)
PHAT_FLOOR_DB = 100.0  # cross-spectrum bins this far below its peak carry no phase
# The aligned pair's coherence (Alignment.coherence) below which it is refused, whatever its
# length (min_coherence). Measured on 5 s pairs: 24 val pairs of the master task's chains at
# 22.05 kHz, 12 each of benchmarks/foreign_chains.py's match-limit and compander families, also
# through pedalboard's MP3Compressor at its lowest quality: 0.77 or more; 64 val pairs of the mix
# task's chains at 44.1 kHz stereo: 0.248 or more (0.248: room size 1, wet 0.4, dry 0.61, and a
# delay of mix 0.42; the next 0.43); 64 pairs of excerpts of two val songs: at most 0.119 (30 s:
# 0.089); the README's master example with the render example's dry (another excerpt): 0.015.
MIN_COHERENCE = 0.15
# A short pair's coherence must also reach UNRELATED_FRAMES / frames (the coherence's Welch
# frames): unrelated excerpts reach about 1/frames on average, and at most 4.0-4.7 / frames (64
# pairs each: 0.52 at 0.5 s and 0.44 at 1 s, 9 frames at 22.05 kHz; 0.18 at 2 s, 20 frames),
# where 48 val pairs of 1 and 2 s through the mix task's chains reach 0.45 or more, and the
# master task's 0.62 or more
UNRELATED_FRAMES = 4.0
COHERENCE_FFT = 4096  # the longest frame of the coherence's Welch estimate
COHERENCE_FRAMES = 8  # shorter frames where the overlap holds fewer of the longest
# samples either side of the first GCC-PHAT peak searched for the corrected one: an equaliser's
# phase can move the whitened correlation's peak by more than a few samples (2 of 24 val eq pairs
# at 44.1 kHz, 17 samples on one) and 8 samples did not reach it; 32 finds both, master unchanged
ONSET_REACH = 32
ONSET_FFT = 4096  # frames of the power spectra whose ratio estimates the chain's magnitude
# bins where the dry is this far below its loudest carry no estimate of the chain (where a
# clipper's harmonics fill the band a codec left empty, the ratio says nothing of an equaliser)
CHAIN_FLOOR_DB = 60.0
MAX_GAIN_LOG = np.log(10 ** (40 / 20))  # the chain's magnitude is kept within +-40 dB


@dataclass(frozen=True)
class Alignment:
    """The wet against its dry, at one sample rate.

    ``offset``: whole samples by which the wet is late (``wet[n + offset]`` is the processed
    ``dry[n]``; negative: early); ``match``: the normalised GCC-PHAT peak (module docstring),
    in [0, 1]; ``rate``: the sample rate of ``offset``; ``coherence``: the aligned signals'
    coherence (:func:`coherence`), in [0, 1], on ``frames`` frames: what says whether the pair
    matches (:attr:`matches`)."""

    offset: int
    match: float
    rate: int
    coherence: float = 0.0
    frames: int = 0  # the Welch frames the coherence was estimated on

    @property
    def matches(self) -> bool:
        """Whether the wet can have been made from the dry: its coherence reaches
        :func:`min_coherence` of its frames."""
        return self.coherence >= min_coherence(self.frames)

    def overlap(self, dry_frames: int, wet_frames: int) -> tuple[int, int]:
        """The overlap (start, stop) on the dry's timeline: the dry samples n whose wet sample
        n + offset exists (empty when start >= stop)."""
        return max(0, -self.offset), min(dry_frames, wet_frames - self.offset)


def _loudest(x: np.ndarray, length: int) -> int:
    """The start of the ``length``-sample stretch of x (T,) with the most energy, on a grid of
    a sixth of ``length``.

    The running energy C[p] = sum of x[:p]^2 is needed at the grid's points s and s + length
    only: from float64 sums of whole grid steps (a step at a time, so no float64 copy of a long
    file) and the few samples by which ``length`` passes a whole number of steps."""
    if x.shape[0] <= length:
        return 0
    hop = max(1, length // 6)
    whole, rest = divmod(length, hop)  # rest < 6
    steps = x.shape[0] // hop
    sums = np.empty(steps + 1)
    sums[0] = 0.0
    for k in range(steps):
        block = x[k * hop : (k + 1) * hop].astype(np.float64)
        sums[k + 1] = block @ block
    running = np.cumsum(sums)  # C at k hop
    k = np.arange((x.shape[0] - length) // hop + 1)
    ends = running[k + whole]
    if rest:
        tail = x[((k + whole) * hop)[:, None] + np.arange(rest)].astype(np.float64)
        ends = ends + np.square(tail).sum(axis=1)
    return int(k[np.argmax(ends - running[k])] * hop)


def gcc_phat(e: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, int]:
    """The normalised GCC-PHAT of e (L,) against g (M,): r (L + M - 1,) with r[j + L - 1] the
    correlation at lag j (e[t] against g[t + j]), j from -(L - 1) to M - 1, and the bins that
    took part (those within :data:`PHAT_FLOOR_DB` of the cross-spectrum's largest). r is 1 at the lag of a
    pure delay of a linear filter whose response is nonzero on those bins. The transforms are
    of a 5-smooth length (a 10-minute pair's 60 s + 30 s: 5.3 M points where a power of two
    would take 8.4 M, about half the time)."""
    from afxest.dsp.filters import next_fast_len

    n = next_fast_len(e.shape[0] + g.shape[0] - 1)
    cross = np.conj(np.fft.rfft(e.astype(np.float64), n)) * np.fft.rfft(g.astype(np.float64), n)
    magnitude = np.abs(cross)
    used = magnitude > magnitude.max() * 10 ** (-PHAT_FLOOR_DB / 20)
    used[0] = False  # DC carries no timing
    weight = np.where(used, 1.0 / np.maximum(magnitude, 1e-300), 0.0)
    bins = int(used.sum())
    # irfft of a one-sided spectrum counts each bin but DC and Nyquist twice: this scale makes
    # r = 1 at the peak when every used bin is in phase
    r = np.fft.irfft(cross * weight, n) * n / max(1, 2 * bins)
    lags = np.concatenate([r[n - (e.shape[0] - 1) :], r[: g.shape[0]]])
    return lags, bins


def align(dry: np.ndarray, wet: np.ndarray, rate: int, max_offset_seconds: float = MAX_OFFSET_SECONDS,
          excerpt_seconds: float = EXCERPT_SECONDS) -> Alignment:
    """The offset of the wet against the dry (module docstring), both mono (T,) at ``rate``.

    The wet's loudest stretch of ``excerpt_seconds`` (or all of it) is correlated against the
    dry around the same place, ``max_offset_seconds`` to either side; so the cost is bounded
    whatever the files' lengths, and an offset beyond that is not found (the match is then low).
    """
    excerpt = min(wet.shape[0], int(round(excerpt_seconds * rate)))
    a = _loudest(wet, excerpt)
    reach = int(round(max_offset_seconds * rate))
    s0 = max(0, a - reach)
    g = dry[s0 : min(dry.shape[0], a + excerpt + reach)]
    e = wet[a : a + excerpt]
    if g.shape[0] == 0 or not np.any(e) or not np.any(g):
        return Alignment(0, 0.0, rate)
    r, _ = gcc_phat(e, g)
    k = int(np.argmax(r))
    # e[t] = g[t + j] = dry[s0 + t + j] = wet[a + t], so wet[n + offset] = dry[n] for offset a - s0 - j
    coarse = a - s0 - (k - (e.shape[0] - 1))
    offset = coarse + chain_phase_offset(dry, wet, coarse, a, excerpt)
    start, stop = max(a, offset), min(a + excerpt, dry.shape[0] + offset)  # the excerpt's wet with a dry
    found = coherence(dry[start - offset : stop - offset], wet[start:stop]) if stop > start else 0.0
    return Alignment(offset, float(np.clip(r[k], 0.0, 1.0)), rate, found, welch_frames(max(0, stop - start))[1])


def min_coherence(frames: int) -> float:
    """The coherence a pair of ``frames`` Welch frames must reach to match:
    max(:data:`MIN_COHERENCE`, :data:`UNRELATED_FRAMES` / frames)."""
    return max(MIN_COHERENCE, UNRELATED_FRAMES / max(1, frames))


def welch_frames(length: int) -> tuple[int, int]:
    """The frame size and count of :func:`coherence`'s Welch estimate on ``length`` samples:
    :data:`COHERENCE_FFT`, halved (to 64 at least) until :data:`COHERENCE_FRAMES` frames fit at
    half overlap."""
    n = COHERENCE_FFT
    while n > 64 and length < n * (COHERENCE_FRAMES + 1) // 2:
        n //= 2
    return n, max(0, (length - n) // (n // 2) + 1)


def coherence(x: np.ndarray, y: np.ndarray) -> float:
    r"""How much of y (T,) is a slowly varying linear filtering of x (T,): the magnitude-squared
    coherence :math:`C(f) = |S_{xy}(f)|^2 / (S_{xx}(f) S_{yy}(f))` (Welch's averaged
    periodograms over Hann frames of :data:`COHERENCE_FFT` samples, or shorter so that at least
    :data:`COHERENCE_FRAMES` fit, hop half a frame; Carter, Knapp & Nuttall, IEEE Trans. Audio
    Electroacoust. 21(4), 1973), averaged over the bins where x has energy (within 60 dB of its
    loudest) weighted by :math:`\sqrt{S_{xx} S_{yy}}`. 1 for a linear filter; for independent
    signals its expectation is about 1/frames. 0 when fewer than two frames fit.

    Example:
        >>> x = np.random.default_rng(0).standard_normal(44100)
        >>> round(coherence(x, 0.5 * x), 6), coherence(x, np.random.default_rng(1).standard_normal(44100)) < 0.1
        (1.0, True)
    """
    n, frames = welch_frames(x.shape[0])
    hop = n // 2
    if frames < 2:
        return 0.0
    window = np.hanning(n)
    index = np.arange(frames)[:, None] * hop + np.arange(n)[None]
    spectra_x = np.fft.rfft(window * x.astype(np.float64)[index])
    spectra_y = np.fft.rfft(window * y.astype(np.float64)[index])
    sxy = np.mean(np.conj(spectra_x) * spectra_y, axis=0)
    sxx = np.mean(np.abs(spectra_x) ** 2, axis=0)
    syy = np.mean(np.abs(spectra_y) ** 2, axis=0)
    used = sxx > sxx.max() * 1e-6
    if not used.any() or not np.any(syy[used] > 0):
        return 0.0
    weight = np.sqrt(sxx[used] * syy[used])
    c = np.abs(sxy[used]) ** 2 / np.maximum(sxx[used] * syy[used], 1e-300)
    return float(np.sum(c * weight) / np.sum(weight))


def minimum_phase(log_magnitude: np.ndarray) -> np.ndarray:
    """The minimum-phase frequency response whose log-magnitude (natural log) is given at the
    n // 2 + 1 bins of an n-point rfft: the folded real cepstrum (Oppenheim & Schafer, Discrete-Time
    Signal Processing, Sec. 5.6 and 13.5). (n // 2 + 1,) complex."""
    n = 2 * (log_magnitude.shape[0] - 1)
    cepstrum = np.fft.irfft(log_magnitude, n)
    fold = np.zeros(n)
    fold[0], fold[n // 2] = cepstrum[0], cepstrum[n // 2]
    fold[1 : n // 2] = 2 * cepstrum[1 : n // 2]
    return np.exp(np.fft.rfft(fold))


def chain_phase_offset(dry: np.ndarray, wet: np.ndarray, offset: int, start: int, length: int) -> int:
    """The correction, in whole samples within +-:data:`ONSET_REACH`, to ``offset`` once the
    processing's own phase is taken out (module docstring): the wet's ``length`` samples from
    ``start`` against the dry ``offset`` samples earlier.

    From Welch spectra of both (Hann frames of :data:`ONSET_FFT`, half overlap): the chain's
    magnitude is that of the transfer function S_yx / S_xx (the H1 estimate: a clipper's
    harmonics and other distortion uncorrelated with the dry leave it unbiased, where the ratio
    of power spectra counts them as gain), its phase the minimum phase of that magnitude
    (:func:`minimum_phase`; equalisers' biquads are minimum phase). What phase is left,
    angle(S_yx) minus that, is the delay's linear phase; the lag j maximising
    sum_f W(f) cos(residual(f) + 2 pi f j / N) is taken, with the maximum-likelihood weight
    W = C / (1 - C) of each bin's magnitude-squared coherence C (Hannan & Thomson 1973; Knapp &
    Carter 1976), so bins dominated by distortion count little. 0 when too little overlaps.

    Measured (``benchmarks/alignment_accuracy.py``, 48 val excerpts through master chains, 64
    samples late and 777 early): pairs off by a sample, the ratio of power spectra with GCC-PHAT
    of the filtered dry before: 4 / 4 of 48 at 44.1 kHz, 6 / 5 at 48 kHz; this: 1 / 1 and 2 / 2;
    at 22.05 kHz none either way. 24 val excerpts through eq chains, aligned and 64 samples late:
    none off at 44.1 and 48 kHz (2 of 24 with a reach of 8 samples)."""
    n, hop = ONSET_FFT, ONSET_FFT // 2
    a = max(start, offset, 0)
    b = min(start + length, dry.shape[0] + offset, wet.shape[0])
    frames = (b - a - n) // hop + 1
    if frames < 1:
        return 0
    x, y = dry[a - offset : b - offset].astype(np.float64), wet[a:b].astype(np.float64)
    idx = np.arange(n)[None, :] + hop * np.arange(frames)[:, None]
    window = np.hanning(n)
    spectra_x = np.fft.rfft(x[idx] * window, axis=-1)
    spectra_y = np.fft.rfft(y[idx] * window, axis=-1)
    power_x = np.mean(np.abs(spectra_x) ** 2, axis=0)
    power_y = np.mean(np.abs(spectra_y) ** 2, axis=0)
    cross = np.mean(spectra_y * np.conj(spectra_x), axis=0)
    valid = power_x > power_x.max() * 10 ** (-CHAIN_FLOOR_DB / 10)
    valid[0] = False
    if valid.sum() < 2:
        return 0
    bins = np.arange(power_x.shape[0])
    log_gain = np.clip(np.log((np.abs(cross) + 1e-30) / (power_x + 1e-30)), -MAX_GAIN_LOG, MAX_GAIN_LOG)
    log_magnitude = np.interp(bins, bins[valid], log_gain[valid])  # flat beyond the band with energy
    residual = np.angle(cross) - np.angle(minimum_phase(log_magnitude))
    c = np.abs(cross) ** 2 / np.maximum(power_x * power_y, 1e-300)
    weight = np.where(valid, np.minimum(c / np.maximum(1.0 - c, 1e-3), 1e3), 0.0)
    lags = np.arange(-ONSET_REACH, ONSET_REACH + 1)
    score = np.cos(residual[None, :] + 2 * np.pi * np.outer(lags, bins) / n) @ weight
    return int(lags[np.argmax(score)])
