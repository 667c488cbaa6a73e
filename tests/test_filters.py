"""RBJ biquads: against an independent transcription of the cookbook run by scipy's recursive
filter in float64, against pedalboard's plugins, and gradients against finite differences."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pedalboard
import pytest
import scipy.signal
import torch

from afxest.dsp import filters
from afxest.dsp.filters import apply_biquads, frequency_response, next_fast_len
from reference import cookbook  # tests/reference.py

PLUGINS = {
    "low_shelf": pedalboard.LowShelfFilter,
    "high_shelf": pedalboard.HighShelfFilter,
    "peak": pedalboard.PeakFilter,
}


def t64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


FILTERS = {  # type: (filter, coefficients)
    "low_shelf": (filters.low_shelf, filters.low_shelf_coefficients),
    "high_shelf": (filters.high_shelf, filters.high_shelf_coefficients),
    "peak": (filters.peak, filters.peak_coefficients),
}


def biquad(x: torch.Tensor, kind: str, f: torch.Tensor, g: torch.Tensor, q: torch.Tensor, fs: float) -> torch.Tensor:
    return FILTERS[kind][0](x, fs, cutoff_frequency_hz=f, gain_db=g, q=q)


def biquad_coefficients(kind: str, f: torch.Tensor, g: torch.Tensor, q: torch.Tensor, fs: float):
    return FILTERS[kind][1](fs, cutoff_frequency_hz=f, gain_db=g, q=q)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return 10 * math.log10(np.sum(reference**2) / np.sum((estimate - reference) ** 2))


GRID = list(itertools.product(PLUGINS, [2.0, 30.0, 100.0, 1000.0, 9000.0, 10900.0], [-20.0, -6.0, 6.0, 20.0], [0.1, 0.707, 3.0, 10.0]))


# both of apply_biquads' ways: its input requiring a gradient (the frequency-domain pass), or not
# (the compiled recursion)
PATHS = {"frequency": True, "recursion": False}


def signal(x: np.ndarray, path: str) -> torch.Tensor:
    """``x`` as the tensor that takes ``path`` through :func:`apply_biquads`."""
    return torch.from_numpy(x).requires_grad_(PATHS[path])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", PLUGINS)
def test_matches_recursive_float64_filter_everywhere(kind: str, path: str) -> None:
    """Both ways of filtering equal scipy's recursive filter (scipy.signal.lfilter, float64) on
    the whole grid, extreme q, gains and cutoffs near Nyquist included."""
    fs = 22050
    x = np.random.default_rng(0).standard_normal((1, 1, 8000))
    for _, f, g, q in (c for c in GRID if c[0] == kind):
        b, a = cookbook(kind, f, g, q, fs)
        reference = scipy.signal.lfilter(b, a, x[0, 0])
        ours = biquad(signal(x, path), kind, t64(f), t64(g), t64(q), fs)[0, 0].detach().numpy()
        assert snr_db(reference, ours) > 150, (kind, f, g, q)


@pytest.mark.parametrize("fs", [22050, 44100, 48000])
def test_magnitude_response_matches_pedalboard(fs: int) -> None:
    """Within 0.01 dB of pedalboard's impulse response on a 65537-bin grid (20 Hz to Nyquist),
    for cutoffs from 1 kHz up to 0.49 fs, every q in [0.1, 10] and gains of +-20 dB.

    Below 1 kHz pedalboard's float32 arithmetic itself departs from the exact filter near DC
    (see test_pedalboard_low_cutoff_error_is_its_float32_arithmetic)."""
    n = 1 << 17
    impulse = np.zeros((1, n), np.float32)
    impulse[0, 0] = 1
    band = np.arange(n // 2 + 1) * fs / n >= 20
    for kind, f, g, q in itertools.product(PLUGINS, [1000.0, 5000.0, 0.45 * fs, 0.49 * fs], [-20.0, -6.0, 6.0, 20.0], [0.1, 0.707, 3.0, 10.0]):
        h = PLUGINS[kind](cutoff_frequency_hz=f, gain_db=g, q=q)(impulse, fs)[0].astype(np.float64)
        theirs = 20 * np.log10(np.abs(np.fft.rfft(h)))
        b, a = biquad_coefficients(kind, t64(f), t64(g), t64(q), fs)
        ours = 20 * np.log10(np.abs(frequency_response(b, a, n)[0].numpy()))
        assert np.abs(theirs - ours)[band].max() < 0.01, (kind, f, g, q)
        # and the phase matches too
        phase_error = np.angle(np.fft.rfft(h) / frequency_response(b, a, n)[0].numpy())
        assert np.abs(phase_error)[band].max() < 2e-3, (kind, f, g, q)


def test_pedalboard_low_cutoff_error_is_its_float32_arithmetic() -> None:
    """At 30 Hz pedalboard differs from us; it differs equally from scipy's float64 recursion
    with the cookbook coefficients, while we agree with that recursion to float64 precision."""
    fs = 44100
    x = np.random.default_rng(1).standard_normal((1, 44100)).astype(np.float32) * 0.1
    for kind in PLUGINS:
        b, a = cookbook(kind, 30.0, -6.0, 3.0, fs)
        exact = scipy.signal.lfilter(b, a, x[0].astype(np.float64))
        theirs = PLUGINS[kind](cutoff_frequency_hz=30.0, gain_db=-6.0, q=3.0)(x, fs)[0]
        ours = biquad(torch.from_numpy(x.astype(np.float64))[None], kind, t64(30.0), t64(-6.0), t64(3.0), fs)[0, 0].numpy()
        assert snr_db(exact, ours) > 150
        assert abs(snr_db(theirs, ours) - snr_db(theirs, exact)) < 0.5


@pytest.mark.parametrize("path", PATHS)
def test_music_like_signal_snr_against_pedalboard(path: str) -> None:
    """>= 50 dB SNR against pedalboard on a stereo music-like signal over the task ranges, the
    float32 signal in float32 out."""
    fs = 22050
    rng = np.random.default_rng(2)
    t = np.arange(fs * 2) / fs
    notes = sum(np.sin(2 * np.pi * f0 * k * t) / k * np.exp(-3 * (t % 0.5)) for f0 in (110, 220 * 1.26, 330) for k in range(1, 8))
    x = np.stack([notes, np.roll(notes, 300)]) * 0.05 + rng.standard_normal((2, t.size)) * 0.01
    x = x.astype(np.float32)
    for kind, f, g, q in itertools.product(PLUGINS, [30.0, 200.0, 1000.0, 4000.0, 10000.0], [-20.0, 12.0], [0.1, 1.0, 3.0]):
        theirs = PLUGINS[kind](cutoff_frequency_hz=f, gain_db=g, q=q)(x, fs)
        ours = biquad(signal(x[None], path), kind, t64(f), t64(g), t64(q), fs)[0].detach()
        assert ours.dtype == torch.float32
        assert snr_db(theirs, ours.numpy()) > 50, (kind, f, g, q)


@pytest.mark.parametrize("path", PATHS)
def test_cascade_and_batch(path: str) -> None:
    """A cascade with per-item parameters and a broadband gain equals scipy filtering item by
    item, channel by channel, filter after filter."""
    fs = 22050
    x = signal(np.random.default_rng(3).standard_normal((3, 2, 3000)), path)
    f, g, q = t64(300.0, 1000.0, 5000.0), t64(-6.0, 3.0, 12.0), t64(0.5, 1.0, 2.0)
    coefs = [biquad_coefficients("low_shelf", f, g, q, fs), biquad_coefficients("peak", f * 2, -g, q, fs)]
    y = (apply_biquads(x, coefs, fs, scale=t64(0.5, 1.0, 2.0)) / t64(0.5, 1.0, 2.0)[:, None, None]).detach()
    x = x.detach()
    for i in range(3):
        b1, a1 = cookbook("low_shelf", f[i].item(), g[i].item(), q[i].item(), fs)
        b2, a2 = cookbook("peak", 2 * f[i].item(), -g[i].item(), q[i].item(), fs)
        ref = scipy.signal.lfilter(b2, a2, scipy.signal.lfilter(b1, a1, x[i].numpy(), axis=-1), axis=-1)
        assert snr_db(ref, y[i].numpy()) > 150


def test_overlap_add_blocks_equal_single_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long signals are filtered in blocks (bounded memory) with the same result."""
    fs = 22050
    x = torch.randn(1, 2, 20000, dtype=torch.float64)
    b, a = cookbook("peak", 60.0, -12.0, 3.0, fs)
    ref = scipy.signal.lfilter(b, a, x[0].numpy(), axis=-1)
    monkeypatch.setattr(filters, "BLOCK", 4096)
    y = biquad(x.requires_grad_(), "peak", t64(60.0), t64(-12.0), t64(3.0), fs)  # the frequency-domain pass
    assert snr_db(ref, y[0].detach().numpy()) > 150


def test_gradients_match_finite_differences() -> None:
    fs = 8000
    x = torch.randn(2, 1, 48, dtype=torch.float64, requires_grad=True)
    f = t64(400.0, 1500.0).requires_grad_()
    g = t64(-5.0, 7.0).requires_grad_()
    q = t64(0.7, 2.0).requires_grad_()
    for kind in PLUGINS:
        assert torch.autograd.gradcheck(lambda x, f, g, q: biquad(x, kind, f, g, q, fs), (x, f, g, q), fast_mode=True)


def test_cascade_gradients_over_blocks_match_finite_differences(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cascade's closed-form gradient (each biquad's dH/db, dH/da) and the overlap-add of
    several blocks, against central differences in float64."""
    fs = 8000
    monkeypatch.setattr(filters, "BLOCK", 64)
    x = torch.randn(2, 2, 1200, dtype=torch.float64, requires_grad=True)
    f = t64(300.0, 900.0).requires_grad_()
    g = t64(-5.0, 7.0).requires_grad_()
    q = t64(0.7, 2.0).requires_grad_()

    def coefficients(f, g, q):
        return [biquad_coefficients("low_shelf", f, g, q, fs), biquad_coefficients("peak", 2 * f, -g, q, fs),
                biquad_coefficients("high_shelf", 3 * f, g / 2, q, fs)]

    def cascade(x, f, g, q):
        return apply_biquads(x, coefficients(f, g, q), fs)

    denominators = torch.cat([a for _, a in coefficients(f, g, q)])
    assert 2 * filters.tail_length(denominators, fs) < x.shape[-1] // 2  # several blocks, not one
    assert torch.autograd.gradcheck(cascade, (x, f, g, q), fast_mode=True)


def test_next_fast_len() -> None:
    for n in [1, 2, 7, 97, 1000, 44101, 123457]:
        m = next_fast_len(n)
        assert m >= n
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        assert k == 1
        assert all(not _is_smooth(j) for j in range(n, m))


def _is_smooth(n: int) -> bool:
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1
