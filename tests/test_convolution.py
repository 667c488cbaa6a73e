"""The ``convolution`` effect (the correction's FIR equaliser): a preset that holds one renders,
by pedalboard and by ddsp, whole and window by window, as scipy's convolution with the impulse
response's latency compensated."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from afxest.engines import board, render
from afxest.errors import UserError
from afxest.presets import parse_preset
from afxest.scoring import pedalboard_prerolled, pedalboard_windows

RATE = 22050
TAPS, LATENCY = 1023, 511  # a linear-phase FIR's centre: (TAPS - 1) / 2


def preset(h: np.ndarray, latency: int = LATENCY):
    """A preset of a gain, the FIR h (latency ``latency``) and another gain."""
    return parse_preset({"format": "afxest-preset/1", "sample_rate": RATE, "effects": [
        {"type": "gain", "gain_db": -2.0},
        {"type": "convolution", "latency_samples": latency, "impulse_response": h.tolist()},
        {"type": "gain", "gain_db": 5.0}]}, "test")


def reference(x: np.ndarray, h: np.ndarray, latency: int) -> np.ndarray:
    """scipy's full convolution of x with h, advanced by ``latency`` and cut to x's length, x the
    input at the gains' 3 dB."""
    y = scipy.signal.convolve(x.astype(np.float64) * 10 ** (3 / 20), h[None].astype(np.float64))
    return y[:, latency : latency + x.shape[1]]


def fir() -> np.ndarray:
    """A linear-phase equaliser with detail (scipy's windowed frequency sampling), far from unit norm."""
    return scipy.signal.firwin2(TAPS, [0, 200, 400, 2000, 3000, 8000, RATE / 2], [0.5, 2.0, 1.0, 3.0, 0.3, 1.0, 0.0], fs=RATE)


def audio(frames: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal((2, frames))).astype(np.float32)


@pytest.mark.parametrize("engine", ["pedalboard", "ddsp"])
def test_a_convolution_preset_renders_as_scipy_with_its_latency_compensated(engine: str) -> None:
    h, x = fir(), audio(3 * RATE)
    for latency in (LATENCY, 0, 100):
        y = render(preset(h, latency), x, RATE, engine)
        expected = reference(x, h, latency)
        assert y.shape == x.shape
        assert np.abs(y - expected).max() < 1e-5 * np.abs(expected).max(), (engine, latency)


def test_its_windows_are_slices_of_the_whole_rendering_streamed_and_prerolled() -> None:
    """The scorer's renderers (a stream through the whole signal, flushed at its end; each window
    rendered afresh with its latency after it, in one thread or two), a window ending at the
    signal's end included."""
    h, x = fir(), audio(2 * RATE + 300)
    expected = reference(x, h, LATENCY)
    windows = [(0, 9000), (9000, 30000), (30000, x.shape[1])]
    plain = parse_preset({"format": "afxest-preset/1", "sample_rate": RATE,
                          "effects": [{"type": "gain", "gain_db": 3.0}]}, "test")
    renderers = (pedalboard_windows, pedalboard_prerolled, lambda *args: pedalboard_prerolled(*args, threads=2))
    for renderer in renderers:
        for (a, b), y in zip(windows, renderer([preset(h), plain], x, windows, RATE)):
            assert np.abs(y[0] - expected[:, a:b]).max() < 1e-5 * np.abs(expected).max(), (renderer.__name__, a)
            np.testing.assert_allclose(y[1], x[:, a:b] * 10 ** (3 / 20), rtol=1e-6)


def test_a_stream_of_blocks_is_the_whole_rendering_once_flushed() -> None:
    h, x = fir(), audio(RATE)
    chain = board(preset(h))
    blocks = [chain(x[:, k : k + 4000], RATE, reset=False) for k in range(0, x.shape[1], 4000)]
    y = np.concatenate([*blocks, chain.flush(RATE)], axis=1)
    expected = reference(x, h, LATENCY)
    assert y.shape == x.shape and np.abs(y - expected).max() < 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("edit, match", [
    ({"impulse_response": []}, "list of 1 to"),
    ({"impulse_response": [0.0, 0.0]}, "all zeros"),
    ({"impulse_response": [1.0, "a"]}, r"impulse_response\[1\] must be a number"),
    ({"latency_samples": 2.5}, "whole number"),
    ({"latency_samples": 3}, "below the 3 samples"),
    ({"latency_samples": -1}, "latency_samples must be >= 0"),
])
def test_invalid_convolutions_are_one_line_errors(edit: dict, match: str) -> None:
    effect = {"type": "convolution", "latency_samples": 1, "impulse_response": [0.5, 1.0, 0.5], **edit}
    with pytest.raises(UserError, match=match):
        parse_preset({"format": "afxest-preset/1", "sample_rate": RATE, "effects": [effect]}, "test")


def test_a_convolution_preset_renders_at_its_own_rate_only() -> None:
    """Its impulse response is in samples at the preset's rate: another rate is a one-line error."""
    with pytest.raises(UserError, match=r"effects\[1\] \(convolution\): its impulse_response is at the preset's"):
        preset(fir()).check_sample_rate(44100, "test")
    preset(fir()).check_sample_rate(RATE, "test")
