"""The other-implementation families of benchmarks/foreign_chains.py (their DSP in
benchmarks/foreign_families.py) against closed forms and scipy's analog responses."""

import math

import numpy as np
import pytest
import scipy.signal

import foreign_families as ff

RATE = 22050


def test_limiter_never_exceeds_its_ceiling_on_loud_stereo():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, RATE)) * np.linspace(0.1, 4.0, RATE)  # up to ~20 dB over the ceiling
    y = ff.brickwall_limiter(x, -1.0, 80.0, 3.0, RATE)
    assert np.abs(x).max() > 4 * 10 ** (-1 / 20)
    assert np.abs(y).max() <= 10 ** (-1 / 20) * (1 + 1e-12)
    # linked: both channels get the same gain
    np.testing.assert_allclose(y[0] / x[0], y[1] / x[1], rtol=1e-12)


def test_limiter_is_transparent_below_its_ceiling():
    x = np.random.default_rng(1).uniform(-0.5, 0.5, RATE)
    np.testing.assert_allclose(ff.brickwall_limiter(x, -1.0, 80.0, 3.0, RATE), x, rtol=1e-12, atol=0)


def test_limiter_attack_is_a_linear_ramp_of_the_lookahead_ending_on_the_step():
    n0, quiet, loud, ceiling_db, lookahead_ms = 4000, 0.1, 2.0, -1.0, 2.0
    x = np.where(np.arange(8000) < n0, quiet, loud)
    gain = ff.brickwall_limiter(x, ceiling_db, 100.0, lookahead_ms, RATE) / x
    L = round(lookahead_ms * RATE / 1000)
    target = 10 ** (ceiling_db / 20) / loud
    expected = 1 - (1 - target) * np.clip(np.arange(8000) - n0 + L, 0, L) / L
    np.testing.assert_allclose(gain, expected, rtol=1e-9)


def test_limiter_release_is_exponential_in_db_after_the_step():
    n0, loud, quiet, ceiling_db, release_ms, lookahead_ms = 2000, 2.0, 0.1, -0.5, 50.0, 3.0
    n = np.arange(8000)
    x = np.where(n < n0, loud, quiet)
    gain = ff.brickwall_limiter(x, ceiling_db, release_ms, lookahead_ms, RATE) / x
    L = round(lookahead_ms * RATE / 1000)
    g0 = ceiling_db - 20 * math.log10(loud)  # the reduction held while loud (dB)
    held_db = g0 * np.exp(-np.maximum(n - n0 + 1, 0) * 1000 / (release_ms * RATE))  # one-pole decay
    held = 10 ** (held_db / 20)
    mean = np.array([held[max(0, k - L + 1) : k + 1].sum() + held[0] * max(0, L - 1 - k) for k in n]) / L
    np.testing.assert_allclose(gain, mean, rtol=1e-9)
    assert gain[n0 + L + int(0.2 * RATE)] == pytest.approx(10 ** (g0 * math.exp(-4.0) / 20), rel=2e-3)


def bump_db(f: np.ndarray) -> np.ndarray:
    """A broad +8 dB bump at 1 kHz (1/2 octave sd) and a -10 dB dip at 4 kHz (1/4 octave sd)."""
    octaves = np.log2(np.maximum(f, 1.0))
    return 8 * np.exp(-0.5 * ((octaves - math.log2(1000)) / 0.5) ** 2) - 10 * np.exp(-0.5 * ((octaves - 12) / 0.25) ** 2)


def test_matching_fir_follows_the_spectra_ratio_at_the_design_frequencies():
    nfft = 4096
    freqs = np.fft.rfftfreq(nfft, 1 / RATE)
    source = 1 / np.maximum(freqs, 20.0)  # pink-like
    target = source * 10 ** (bump_db(freqs) / 10)
    curve = ff.match_curve_db(source, target, freqs, 1 / 6, 12.0)
    h = ff.matching_fir(curve, freqs, nfft - 1, RATE)
    np.testing.assert_allclose(h, h[::-1], atol=1e-12)  # linear phase
    check = np.geomspace(200, 9000, 60)
    _, response = scipy.signal.freqz(h, worN=check, fs=RATE)
    # power-neutral on the source: the ratio less its source-weighted mean
    offset = 10 * math.log10(np.sum(source * 10 ** (bump_db(freqs) / 10)) / np.sum(source))
    np.testing.assert_allclose(20 * np.log10(np.abs(response)), bump_db(check) - offset, atol=0.3)


def test_matching_curve_is_clamped():
    freqs = np.linspace(0, RATE / 2, 513)
    target = np.where(freqs < 3000, 1.0, 1e-4)  # -40 dB above 3 kHz
    curve = ff.match_curve_db(np.ones(513), target, freqs, 1 / 12, 12.0)
    assert curve.max() - curve.min() == pytest.approx(12.0)


def test_fir_latency_is_compensated():
    h = ff.matching_fir(np.zeros(5), np.linspace(0, RATE / 2, 5), 101, RATE) * np.hanning(101)
    x = np.random.default_rng(2).standard_normal((2, 3000))
    np.testing.assert_allclose(ff.apply_fir(x, h), np.stack([np.convolve(c, h, mode="same") for c in x]), atol=1e-12)


@pytest.mark.parametrize("kind,f0,gain_db,q", [("peak", 300.0, 6.0, 1.5), ("peak", 500.0, -8.0, 0.5),
                                               ("low_shelf", 120.0, 5.0, ff.shelf_q(5.0, 0.6)),
                                               ("high_shelf", 400.0, -6.0, ff.shelf_q(-6.0, 1.0))])
def test_matched_z_follows_the_analog_prototype_well_below_nyquist(kind, f0, gain_db, q):
    rate = 44100
    check = np.geomspace(20, 2000, 40)
    _, digital = scipy.signal.sosfreqz(ff.matched_z_sos(kind, f0, gain_db, q, rate), worN=check, fs=rate)
    _, analog = scipy.signal.freqs(*ff.analog_prototype(kind, gain_db, q), worN=check / f0)
    np.testing.assert_allclose(20 * np.log10(np.abs(digital)), 20 * np.log10(np.abs(analog)), atol=0.05)


def test_shelf_slope_one_is_the_butterworth_q():
    assert ff.shelf_q(7.0, 1.0) == pytest.approx(1 / math.sqrt(2))


CURVE = ff.Curve(thresholds=(-50.0, -30.0, -15.0), slopes=(2.0, 1.0, 1 / 3, 1 / 10), knees=(6.0, 12.0, 4.0))


def segments(x: float) -> float:
    """CURVE's segments in closed form: 1:2 expansion below -50 dB, 1:1, 3:1 above -30, 10:1 above -15."""
    if x < -50:
        return -50 + 2 * (x + 50)
    if x < -30:
        return x
    if x < -15:
        return -30 + (x + 30) / 3
    return -30 + 15 / 3 + (x + 15) / 10


def sine(level_db: float) -> np.ndarray:
    """1 s of a 1 kHz sine whose RMS level is ``level_db``."""
    return math.sqrt(2) * 10 ** (level_db / 20) * np.sin(2 * math.pi * 1000 * np.arange(RATE) / RATE)


def steady_gain_db(x: np.ndarray, y: np.ndarray) -> float:
    """The gain (dB) from ``x`` to ``y`` over their last quarter second."""
    return 10 * math.log10(np.mean(y[..., -RATE // 4 :] ** 2) / np.mean(x[..., -RATE // 4 :] ** 2))


@pytest.mark.parametrize("level", [-62.0, -40.0, -22.0, -8.0])
def test_compander_on_constant_sines_follows_its_segments(level):
    x = sine(level)
    assert steady_gain_db(x, ff.compander(x, CURVE, 50.0, 5.0, 50.0, RATE)) == pytest.approx(segments(level) - level, abs=0.05)


def test_compander_knee_centre_is_the_quadratic_knee():
    x = sine(-30.0)  # the 12 dB knee's centre: (1 / 3 - 1) (W / 2)^2 / (2 W) below the 1:1 line
    expected = (1 / 3 - 1) * 12 / 8
    assert steady_gain_db(x, ff.compander(x, CURVE, 50.0, 5.0, 50.0, RATE)) == pytest.approx(expected, abs=0.05)


def test_compander_links_channels_on_their_mean_power():
    x = np.stack([sine(-20.0), 0.5 * sine(-20.0)])
    y = ff.compander(x, CURVE, 50.0, 5.0, 50.0, RATE)
    linked = -20.0 + 10 * math.log10((1 + 0.25) / 2)
    for c in range(2):
        assert steady_gain_db(x[c], y[c]) == pytest.approx(segments(linked) - linked, abs=0.05)
