"""The correction stage of an estimate with a reference (issue 23): what the task's chain
cannot hold of a wet that another tool made, added after it as effects pedalboard renders.

A task's chain has a few equaliser bands and one compressor curve; a user's master may carry an
equaliser with far more detail (a matching EQ) and a brickwall limiter. After the search, the
best candidate is corrected in three steps, each measured on the scored windows against the wet
and kept only where it lowers the task's loss:

0. **Dynamics.** The chain's compressor refitted on pedalboard's rendering of the chain against
   the wet (:func:`dynamics_step`): its threshold, ratio, attack and release by Nelder-Mead,
   the time constants free of the task's ranges (within :data:`ATTACK_MS` and
   :data:`RELEASE_MS`), the output level matched to the wet's RMS by a ``gain`` after the chain.
   A compander whose curve has several segments and a soft knee, on an RMS detector with its
   gain smoothed in dB, is matched by JUCE's hard-knee peak compressor only with time constants
   far longer than a task's ranges hold (releases of 1-3 s: docs/estimate.md).
1. **Equaliser**, in two forms (:data:`EQUALISERS`), each fitted and rendered, the one of
   lower loss kept:

   * *graphic*: the long-term spectra (Welch) of the wet and of the candidate's rendering give
     the residual ratio in dB, gathered into log-spaced bands. It is fitted by fixed-frequency
     ``peak`` filters a 24th of an octave apart (from :data:`LOWEST_CENTRE_HZ` up to
     :data:`HIGHEST_CENTRE` of Nyquist) and a broadband ``gain``: their gains by damped
     Gauss-Newton (Levenberg-Marquardt) on sum_j (ratio_j - sum_i |H_i(f_j)|_dB - g_0)^2 +
     lambda sum_i g_i^2, the ridge keeping bands the music leaves empty at 0 dB. Every band is
     minimum-phase: it matches a linear-phase equaliser's magnitude, not its phase;
   * *FIR*: a filter from the rendering to the wet with the phase of the least-squares one and
     the magnitude of their spectral ratio (:func:`fit_fir`, :data:`FIR_SECONDS` long), as a
     ``convolution`` whose latency the renderers compensate: it holds a linear-phase matching
     equaliser's phase, which no biquad has.
2. **Limiter.** Where the wet sits at a ceiling (a share of its samples within
   :data:`CEILING_DB` of its peak, as a brickwall limiter leaves; music does not), pedalboard's
   ``Limiter`` on a grid of input levels, thresholds and releases (:func:`limiter_step`), each
   followed by the ``gain`` that best matches the wet's level (least squares), keeping the best.

Where there are more excerpts than :data:`SEARCH_EXCERPTS` (an estimate's scored windows of a
file longer than 30 s), the dynamics step and the limiter's grid search on that many of them,
and what they find is kept by its loss on all.

The limiter comes after the equaliser, as a matching equaliser's does in a mastering chain.
The corrected preset is the task's effects (its compressor refitted where step 0 was kept)
followed by the correction's, one ``afxest-preset/1`` document; :func:`correct` says where the
correction starts and which of the task's effects it refitted. A candidate the chain already
holds (its loss below :data:`HELD_BELOW` of the dry's own) is not corrected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LOWEST_CENTRE_HZ = 25.0
HIGHEST_CENTRE = 0.9  # of Nyquist: the highest band's centre stays below this
BANDS_PER_OCTAVE = 24  # a matching equaliser's 1/6-1/12-octave detail: 6, 12, 16, 24 measured (docs/estimate.md)
BAND_Q = 16.0  # RBJ Q of each band (neighbours overlap, so the sum is smooth)
BAND_LIMIT_DB = 18.0  # each band's gain is kept within +-this
FIT_ITERATIONS = 20
RIDGE = 1e-3  # lambda: dB^2 of misfit per dB^2 of band gain
CEILING_DB = 0.5  # a wet with CEILING_SHARE of its samples within this of its peak sits at a ceiling
CEILING_SHARE = 1e-3
LIMITER_INPUT_PEAKS_DB = (-9.0, -6.0, -3.0, 0.0, 3.0)  # the limiter's input peak (the first stage acts from -10 dBFS)
LIMITER_REDUCTIONS_DB = (0.0, 1.0, 2.0, 3.0, 4.5, 6.0, 8.0, 10.0)  # its threshold this far below that peak
LIMITER_RELEASES_MS = (10.0, 50.0, 200.0)
ATTACK_MS = (0.1, 1000.0)  # the dynamics step's attack and release bounds (ms)
RELEASE_MS = (1.0, 5000.0)
DYNAMICS_EVALUATIONS = 80  # renderings of the chain the dynamics step's Nelder-Mead may take
DYNAMICS_SIMPLEX = (3.0, 0.5, 1.0, 1.0)  # its first steps: threshold (dB), ln(ratio - 1), ln attack, ln release
# the dynamics and limiter steps search on at most this many of the excerpts, evenly spread, and
# what they find is kept by its loss on all: on 6 val compander pairs of 60 s (12 excerpts; 44.1 kHz
# stereo) rank 1 22.14 dB mean with 6, 22.06 with all 12, 4 items of 6 within 0.2 dB; with 4, up
# to 0.7 dB lower (benchmarks/foreign_chains.py, docs/estimate.md)
SEARCH_EXCERPTS = 6
MIN_IMPROVEMENT = 0.1  # a step is kept where it lowers the loss by at least this share
# a candidate whose loss is below this share of the dry's own is held by the task's chain: it is
# not corrected (the README's pedalboard-made master: rank 1 at 1/8 600 of its Input, 40 dB)
HELD_BELOW = 1 / 200
# the FIR equaliser (step 1's other form): its length, 8191 taps at 22050 Hz, 16383 at 44.1 kHz.
# On 12 val match-limit pairs at 22050 Hz (the correction with the FIR alone after rank 1's chain,
# on the whole clip), 2047, 4095, 8191 and 16383 taps: rank 1's log-mel at 1/86, 1/115, 1/124
# and 1/128 of the Input's (ratio of means), the worst item at 1/15, 1/19, 1/20.4 and 1/17,
# SI-SDR 15.5, 17.6, 18.4 and 19.0 dB (Input 3.9)
FIR_SECONDS = 0.372
FIR_LIMIT_DB = 24.0  # its response's magnitude is kept within +-this
EQUALISERS = ("bands", "fir")  # step 1's forms, each tried; the one of lower loss kept


def band_centres(sample_rate: float) -> np.ndarray:
    """The graphic equaliser's centres (Hz): 1000 * 2^(k / n), n :data:`BANDS_PER_OCTAVE`, from
    :data:`LOWEST_CENTRE_HZ` to :data:`HIGHEST_CENTRE` of Nyquist (and at most 20 kHz)."""
    n = BANDS_PER_OCTAVE
    top = min(20000.0, HIGHEST_CENTRE * sample_rate / 2)
    k = np.arange(np.ceil(n * np.log2(LOWEST_CENTRE_HZ / 1000)), np.floor(n * np.log2(top / 1000)) + 1)
    return 1000.0 * 2.0 ** (k / n)


def spectrum_db(x: np.ndarray) -> np.ndarray:
    """The long-term power spectrum (dB) of x (C, T): the mean over channels of
    :func:`afxest.search.long_term_spectrum_db` (Welch's estimate, the equaliser fit's FFT size)."""
    from afxest.search import long_term_spectrum_db

    power = np.mean([10 ** (long_term_spectrum_db(c) / 10) for c in np.atleast_2d(x)], axis=0)
    return 10 * np.log10(power + 1e-20)


def residual_bands(rendered: np.ndarray, wet: np.ndarray, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """The wet's long-term spectrum over the rendering's (dB), (C, T) each, gathered into the
    equaliser fit's log-spaced bands (:func:`afxest.search.log_bands`) where the rendering has
    energy (:func:`afxest.search.equaliser_fit_weight`): their frequencies (Hz) and ratios (dB)."""
    from afxest.search import equaliser_fit_weight, log_bands

    rendered_db, wet_db = spectrum_db(rendered), spectrum_db(wet)
    freqs, ratio, _ = log_bands(wet_db - rendered_db, equaliser_fit_weight(rendered_db), sample_rate)
    return freqs, ratio


def band_responses_db(gains: np.ndarray, centres: np.ndarray, freqs: np.ndarray, sample_rate: float) -> np.ndarray:
    """Each ``peak`` band's response in dB at ``freqs``, 20 log10 |H_i(f_j)|, (B, len(freqs)):
    the bands at ``centres`` with ``gains`` (dB, (B,)) and Q :data:`BAND_Q`, by the processors'
    own RBJ coefficients (:func:`afxest.dsp.filters.peak_coefficients`)."""
    import torch

    from afxest.dsp.filters import peak_coefficients
    from afxest.processors import _biquad_at

    f64 = torch.float64
    b, a = peak_coefficients(sample_rate, cutoff_frequency_hz=torch.as_tensor(centres, dtype=f64),
                             gain_db=torch.as_tensor(gains, dtype=f64), q=torch.full((len(centres),), BAND_Q, dtype=f64))
    h = _biquad_at(b, a, torch.as_tensor(freqs, dtype=f64), sample_rate)
    return (10 * torch.log10(h.real.square() + h.imag.square())).numpy()


def fit_bands(freqs: np.ndarray, ratio_db: np.ndarray, sample_rate: float) -> tuple[np.ndarray, float]:
    """The graphic equaliser fitted to a residual ratio (module docstring, step 1): each band's
    gain (dB, at :func:`band_centres`) and the broadband gain g_0 (dB).

    Each band's response depends on its own gain only, so the Jacobian's columns are the bands'
    responses differentiated one by one, all at once by a forward difference."""
    centres = band_centres(sample_rate)
    b = len(centres)
    scale = 1 / np.sqrt(len(freqs))

    def residual(gains: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        responses = band_responses_db(gains, centres, freqs, sample_rate)
        misfit = (ratio_db - responses.sum(axis=0) - level) * scale
        return np.concatenate([misfit, np.sqrt(RIDGE) * gains]), responses

    gains, level = np.zeros(b), float(np.mean(ratio_db))
    r, responses = residual(gains, level)
    cost, damping, h = float(r @ r), 1e-2, 1e-4
    for _ in range(FIT_ITERATIONS):
        slopes = (band_responses_db(gains + h, centres, freqs, sample_rate) - responses) / h  # (B, P)
        jac = np.zeros((r.size, b + 1))
        jac[: len(freqs), :b] = -slopes.T * scale
        jac[: len(freqs), b] = -scale
        jac[len(freqs) :, :b] = np.sqrt(RIDGE) * np.eye(b)
        normal = jac.T @ jac
        step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-12), -jac.T @ r)
        trial = np.clip(gains + step[:b], -BAND_LIMIT_DB, BAND_LIMIT_DB)
        r_trial, responses_trial = residual(trial, level + step[b])
        if float(r_trial @ r_trial) < cost:
            gains, level, r, responses = trial, level + step[b], r_trial, responses_trial
            cost, damping = float(r @ r), damping / 3
        else:
            damping *= 4
    return gains, level


def fir_taps(sample_rate: float) -> int:
    """The FIR equaliser's length: 2^round(log2(:data:`FIR_SECONDS` x rate)) - 1 (odd, type I)."""
    return 2 ** round(np.log2(FIR_SECONDS * sample_rate)) - 1


def fit_fir(rendered: Sequence[np.ndarray], wet: Sequence[np.ndarray], taps: int) -> np.ndarray:
    """The FIR from the renderings to the wet, (C, T) each: in each frequency bin, H has the
    phase of the cross-spectrum sum S_rw (that of the least-squares, Wiener, filter S_rw / S_rr)
    and the magnitude of the spectral ratio sqrt(sum S_ww / sum S_rr) (the auto-spectra; all by
    Welch: Hann segments of taps + 1 samples, half overlap, summed over excerpts and channels),
    kept within +-:data:`FIR_LIMIT_DB`. The Wiener magnitude is that ratio times the coherence,
    which the chain's nonlinearities (a clipper, a limiter) lower, so it leaves bands too quiet
    for a log-magnitude loss: on 12 val match-limit pairs (8191 taps) the ratio's magnitude gave
    1/127 of the Input's log-mel and 18.4 dB SI-SDR, the Wiener one 1/124 and 18.4 dB (and on a
    test pair whose chain distorts, the Wiener FIR left the loss at 0.207, the chain's 0.210,
    where the graphic equaliser reached 0.098).

    Returns its impulse response (the inverse DFT), centred on sample (taps - 1) / 2 (the
    latency the renderers compensate) and tapered by a Tukey window (cosine tapers over a
    quarter of its length at each end, flat between: on 12 val match-limit pairs, from the dry,
    15.0 dB of SI-SDR against 14.8 with a Hann window), ``taps`` long. A linear-phase equaliser
    between the renderings and the wet gives a linear-phase FIR."""
    n = taps + 1
    cross, auto, target = np.zeros(n // 2 + 1, complex), np.zeros(n // 2 + 1), np.zeros(n // 2 + 1)
    for r, w in zip(rendered, wet):
        if r.shape[-1] < n:
            continue
        r_spectra, w_spectra = welch_segments(r, n), welch_segments(w, n)
        cross += (np.conj(r_spectra) * w_spectra).mean(axis=1).sum(axis=0)
        auto += np.square(np.abs(r_spectra)).mean(axis=1).sum(axis=0)
        target += np.square(np.abs(w_spectra)).mean(axis=1).sum(axis=0)
    if not auto.any():
        raise ValueError(f"no excerpt holds the FIR's {n} samples")
    h = np.exp(1j * np.angle(cross)) * np.sqrt(target / np.maximum(auto, 1e-12 * auto.max()))
    magnitude = np.abs(h)
    lo, hi = 10 ** (-FIR_LIMIT_DB / 20), 10 ** (FIR_LIMIT_DB / 20)
    h = np.where(magnitude > 0, h / np.maximum(magnitude, 1e-30) * np.clip(magnitude, lo, hi), lo)
    response = np.roll(np.fft.irfft(h, n), (taps - 1) // 2)[:taps]
    return response * tukey(taps, 0.5)


def welch_segments(x: np.ndarray, n: int) -> np.ndarray:
    """The spectra of x's (C, T) Welch segments (Welch 1967): n samples each, half overlapping
    (a hop of n - n // 2, the last segment ending within x), under a periodic Hann window;
    (C, segments, n // 2 + 1). Averaged, their products are scipy.signal.welch's and csd's
    spectra up to a constant factor (tests/test_correct.py)."""
    hop = n - n // 2
    starts = hop * np.arange((x.shape[-1] - n) // hop + 1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    return np.fft.rfft(x[:, starts[:, None] + np.arange(n)] * window, axis=-1)


def tukey(m: int, alpha: float) -> np.ndarray:
    """The symmetric Tukey window of m samples (Harris 1978): cosine tapers over alpha / 2 of
    its length at each end, 1 between."""
    w = np.ones(m)
    edge = alpha * (m - 1) / 2
    k = np.arange(int(np.floor(edge)) + 1)
    w[k] = w[m - 1 - k] = 0.5 * (1 - np.cos(np.pi * k / edge))
    return w


def fir_effect(h: np.ndarray) -> dict[str, Any]:
    """The ``convolution`` effect of a centred odd-length FIR h: its latency (len - 1) / 2, its
    samples to float32's 7 significant digits."""
    return {"type": "convolution", "latency_samples": (len(h) - 1) // 2,
            "impulse_response": [float(f"{v:.7g}") for v in h]}


@dataclass
class Correction:
    """A candidate's correction: the task's effects as corrected (``chain``: its compressor
    refitted where ``dynamics``), the effects added after them (``afxest-preset/1`` effect
    dicts), what each step found (``fir``: the equaliser is the FIR), and the loss before and after."""

    chain: list[dict[str, Any]]
    effects: list[dict[str, Any]]
    dynamics: bool
    equaliser: bool
    fir: bool
    limiter: bool
    loss_before: float
    loss_after: float


def correct(
    effects: Sequence[dict[str, Any]],
    render: Callable[[Sequence[dict[str, Any]]], list[np.ndarray]],
    wet: Sequence[np.ndarray],
    loss: Callable[[list[np.ndarray]], float],
    sample_rate: float,
    equalisers: Sequence[str] = EQUALISERS,
    map_windows: Callable[..., Any] = map,
    searched: Sequence[int] | None = None,
) -> Correction:
    """Corrects a candidate's chain (module docstring) on excerpts of the wet.

    Arguments:
        effects: The candidate's effects (dicts of an ``afxest-preset/1`` document).
        render: Renders a chain (its effect dicts) on the dry's excerpts: one (C, T) per excerpt,
            aligned with ``wet``.
        wet: The wet's excerpts, (C, T) each.
        loss: The task's loss of renderings (one per excerpt) against the wet's, lower is better.
        sample_rate: Their rate.
        equalisers: Step 1's forms tried (:func:`equaliser_step`), the one of lower loss kept
            (none: no equaliser).
        map_windows: How the limiter step maps a function over the excerpts (``map``, or a
            thread pool's: pedalboard releases the GIL).
        searched: The excerpts (indices) the dynamics and limiter steps search on, their
            results then scored on all and kept by that score (None: all). ``render`` and
            ``loss`` then take them as a second argument (a chain on those excerpts, the loss of
            renderings of those excerpts).

    Returns:
        The correction (the chain as given and no effects where no step lowered the loss by
        :data:`MIN_IMPROVEMENT`).
    """
    chain = [dict(e) for e in effects]
    rendered = render(chain)
    before = best = loss(rendered)
    if searched is not None and len(set(searched)) >= len(wet):  # all of them: as None, no loss computed twice
        searched = None
    ids = list(range(len(wet)) if searched is None else searched)
    if searched is None:
        search_render, search_loss = render, loss
    else:
        search_render, search_loss = (lambda e: render(e, ids)), (lambda ys: loss(ys, ids))
    level = 0.0  # dB: the correction's broadband gain after the chain
    refitted = dynamics_step(chain, search_render, [wet[i] for i in ids], search_loss,
                             best if searched is None else search_loss([rendered[i] for i in ids]))
    if refitted is not None:  # kept where it lowers the loss of all the excerpts
        index, compressor, level, _ = refitted
        trial = render([*chain[:index], compressor, *chain[index + 1 :], {"type": "gain", "gain_db": level}])
        if (trial_loss := loss(trial)) < (1 - MIN_IMPROVEMENT) * best:
            chain[index], rendered, best = compressor, trial, trial_loss
        else:
            refitted, level = None, 0.0
    added: list[dict[str, Any]] = []
    scored = []  # (loss, rendering, effects) of each form of the equaliser
    for form in equalisers:
        effects = equaliser_step(form, rendered, wet, level, sample_rate)
        trial = render([*chain, *effects])
        scored.append((loss(trial), trial, effects))
    trial_loss, trial, effects = min(scored, key=lambda t: t[0], default=(np.inf, None, []))
    if trial_loss < (1 - MIN_IMPROVEMENT) * best:
        added, rendered, best = effects, trial, trial_loss
    elif refitted is not None:
        added = [{"type": "gain", "gain_db": level}]
    part = [rendered[i] for i in ids]
    limited = limiter_step(part, [wet[i] for i in ids], search_loss, best if searched is None else search_loss(part),
                           sample_rate, map_windows)
    if limited is not None:  # kept where it lowers the loss of all the excerpts
        limited = _limited_everywhere(limited, rendered, loss, best, sample_rate, map_windows)
    if limited is not None:
        drive, limit, out, best = limited
        if added:  # the equaliser's (or the dynamics step's) broadband gain drives the limiter
            added[-1] = {"type": "gain", "gain_db": added[-1]["gain_db"] + drive}
        else:
            added = [{"type": "gain", "gain_db": drive}]
        added += [limit, {"type": "gain", "gain_db": out}]
    return Correction(chain, added, refitted is not None, any(e["type"] in ("peak", "convolution") for e in added),
                      any(e["type"] == "convolution" for e in added), limited is not None, before, best)


def equaliser_step(form: str, rendered: Sequence[np.ndarray], wet: Sequence[np.ndarray], level: float,
                   sample_rate: float) -> list[dict[str, Any]]:
    """Step 1 of the module docstring in one of its forms, fitted to the renderings so far (the
    chain and the dynamics step's ``level``): ``bands``, the graphic equaliser and its broadband
    gain; ``fir``, the FIR equaliser (:func:`fit_fir`, its gain in it) and that level. The
    effects end on a ``gain``."""
    if form == "fir":  # no longer than the longest excerpt holds
        taps = min(fir_taps(sample_rate), 2 ** int(np.log2(max(r.shape[-1] for r in rendered))) - 1)
        return [fir_effect(fit_fir(rendered, wet, taps)), {"type": "gain", "gain_db": level}]
    freqs, ratio = residual_bands(np.concatenate(rendered, axis=1), np.concatenate(wet, axis=1), sample_rate)
    gains, fitted = fit_bands(freqs, ratio, sample_rate)
    return [{"type": "peak", "cutoff_frequency_hz": float(c), "gain_db": float(g), "q": BAND_Q}
            for c, g in zip(band_centres(sample_rate), gains)] + [{"type": "gain", "gain_db": level + fitted}]


def rms_gain_db(rendered: Sequence[np.ndarray], wet: Sequence[np.ndarray]) -> float:
    """The gain (dB) that gives the renderings the wet's RMS level, all excerpts together."""
    power = sum(float(np.vdot(r, r)) for r in rendered)
    return float(10 * np.log10(sum(float(np.vdot(w, w)) for w in wet) / max(power, 1e-30)))


def kept_prefix(chain: Sequence[dict[str, Any]]) -> int:
    """How many of the chain's leading effects no step of :func:`correct` changes: those before
    its compressor where it has one (:func:`dynamics_step` refits it), else all of them."""
    found = [i for i, e in enumerate(chain) if e["type"] == "compressor"]
    return found[0] if len(found) == 1 else len(chain)


def dynamics_step(chain: Sequence[dict[str, Any]], render: Callable[[Sequence[dict[str, Any]]], list[np.ndarray]],
                  wet: Sequence[np.ndarray], loss: Callable[[list[np.ndarray]], float],
                  best: float) -> tuple[int, dict[str, Any], float, float] | None:
    """Step 0 of the module docstring: the chain's compressor refitted by Nelder-Mead (scipy) on
    x = (threshold dB, ln(ratio - 1), ln attack, ln release) from its own settings (first steps
    :data:`DYNAMICS_SIMPLEX`, at most :data:`DYNAMICS_EVALUATIONS` renderings), each rendering
    brought to the wet's RMS level (:func:`rms_gain_db`) and scored by ``loss``; the time
    constants clipped to :data:`ATTACK_MS` and :data:`RELEASE_MS`.

    Returns:
        The compressor's index in the chain, its refitted settings, the level (dB) and their
        loss; or None where the chain has no single compressor or the refit does not lower
        ``best`` by :data:`MIN_IMPROVEMENT`.
    """
    import scipy.optimize

    index = kept_prefix(chain)
    if index == len(chain):
        return None
    c = chain[index]

    def compressor(x: np.ndarray) -> dict[str, Any]:
        return {"type": "compressor", "threshold_db": float(x[0]), "ratio": float(1 + np.exp(x[1])),
                "attack_ms": float(np.clip(np.exp(x[2]), *ATTACK_MS)), "release_ms": float(np.clip(np.exp(x[3]), *RELEASE_MS))}

    def scored(x: np.ndarray) -> tuple[float, float]:
        rendered = render([*chain[:index], compressor(x), *chain[index + 1 :]])
        level = rms_gain_db(rendered, wet)
        return loss([r * 10 ** (level / 20) for r in rendered]), level

    x0 = np.array([c["threshold_db"], np.log(max(c["ratio"] - 1, 1e-3)),
                   np.log(np.clip(c["attack_ms"], *ATTACK_MS)), np.log(np.clip(c["release_ms"], *RELEASE_MS))])
    simplex = np.vstack([x0, x0 + np.diag(DYNAMICS_SIMPLEX)])
    result = scipy.optimize.minimize(lambda x: scored(x)[0], x0, method="Nelder-Mead",
                                     options={"maxfev": DYNAMICS_EVALUATIONS, "initial_simplex": simplex})
    refitted, level = scored(result.x)
    if not refitted < (1 - MIN_IMPROVEMENT) * best:
        return None
    return index, compressor(result.x), level, refitted


def _limited_everywhere(limited: tuple[float, dict[str, Any], float, float], rendered: list[np.ndarray],
                        loss: Callable[[list[np.ndarray]], float], best: float, sample_rate: float,
                        map_windows: Callable[..., Any]) -> tuple[float, dict[str, Any], float, float] | None:
    """The limiter step's result (found on some excerpts) on all of ``rendered``: its drive,
    limiter and output gain with their loss, or None where they do not lower ``best`` by
    :data:`MIN_IMPROVEMENT`."""
    import pedalboard

    drive, limit, out, _ = limited
    settings = {k: v for k, v in limit.items() if k != "type"}
    y = list(map_windows(lambda r: pedalboard.Limiter(**settings)(
        np.ascontiguousarray(r * 10 ** (drive / 20), dtype=np.float32), float(sample_rate)), rendered))
    trial = loss([a * 10 ** (out / 20) for a in y])
    return (drive, limit, out, trial) if trial < (1 - MIN_IMPROVEMENT) * best else None


def at_ceiling(x: np.ndarray) -> bool:
    """Whether x sits at a ceiling: :data:`CEILING_SHARE` of its samples or more within
    :data:`CEILING_DB` of its peak."""
    peak = float(np.max(np.abs(x)))
    return peak > 0 and float(np.mean(np.abs(x) >= peak * 10 ** (-CEILING_DB / 20))) >= CEILING_SHARE


def limiter_step(rendered: list[np.ndarray], wet: Sequence[np.ndarray], loss: Callable[[list[np.ndarray]], float],
                 best: float, sample_rate: float, map_windows: Callable[..., Any] = map,
                 ) -> tuple[float, dict[str, Any], float, float] | None:
    """Step 2 of the module docstring on renderings of the chain so far: where the wet sits at a
    ceiling, pedalboard's ``Limiter`` fed the renderings at a peak level of
    :data:`LIMITER_INPUT_PEAKS_DB` (a drive, in dB), reducing their peaks by
    :data:`LIMITER_REDUCTIONS_DB` (its threshold that far below them), with each release of
    :data:`LIMITER_RELEASES_MS`, then the output gain that best matches the wet (least squares).

    Returns:
        The drive (dB), the ``limiter`` effect, the output gain (dB) and their loss, or None
        where the wet sits at no ceiling or nothing lowers ``best`` by :data:`MIN_IMPROVEMENT`.
    """
    import pedalboard

    if not at_ceiling(np.concatenate(wet, axis=1)):
        return None
    peak_db = 20 * np.log10(max(max(float(np.max(np.abs(r))) for r in rendered), 1e-12))
    found = None
    for input_peak in LIMITER_INPUT_PEAKS_DB:
        drive = input_peak - peak_db
        fed = [np.ascontiguousarray(r * 10 ** (drive / 20), dtype=np.float32) for r in rendered]
        for reduction in LIMITER_REDUCTIONS_DB:
            for release in LIMITER_RELEASES_MS:
                settings = {"threshold_db": input_peak - reduction, "release_ms": release}
                # a limiter per excerpt (plugins keep state), ``map_windows`` maybe in threads
                y = list(map_windows(lambda r: pedalboard.Limiter(**settings)(r, float(sample_rate)), fed))
                scale = sum(float(np.vdot(a, w)) for a, w in zip(y, wet)) / max(sum(float(np.vdot(a, a)) for a in y), 1e-30)
                if scale <= 0:
                    continue
                trial = loss([a * scale for a in y])
                if trial < (1 - MIN_IMPROVEMENT) * best:
                    best = trial
                    found = (float(drive), {"type": "limiter", "threshold_db": input_peak - reduction, "release_ms": release},
                             float(20 * np.log10(scale)), trial)
    return found
