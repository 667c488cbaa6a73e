"""afxest.engines.memory_seconds against pedalboard's own renderings: a linear effect's impulse
response has decayed by 80 dB within it (and not long before), and a window of a chain with a
compressor rendered from that long before its start is the whole rendering's slice to -80 dB."""

from __future__ import annotations

import numpy as np
import pytest

from afxest.data import procedural_music
from afxest.engines import MEMORY_DB, board, memory_seconds
from afxest.presets import parse_preset

RATE = 44100


def preset(*effects: dict):
    return parse_preset({"format": "afxest-preset/1", "sample_rate": RATE, "effects": list(effects)}, "test")


LINEAR = [
    {"type": "peak", "cutoff_frequency_hz": 30.0, "gain_db": 12.0, "q": 3.0},
    {"type": "peak", "cutoff_frequency_hz": 1000.0, "gain_db": -12.0, "q": 0.3},
    {"type": "low_shelf", "cutoff_frequency_hz": 30.0, "gain_db": 12.0, "q": 1.5},
    {"type": "high_shelf", "cutoff_frequency_hz": 2000.0, "gain_db": -12.0, "q": 0.5},
    {"type": "delay", "delay_seconds": 0.3, "feedback": 0.6, "mix": 0.5},
    {"type": "delay", "delay_seconds": 0.05, "feedback": 0.0, "mix": 0.3},
    {"type": "reverb", "room_size": 0.8, "damping": 0.0, "wet_level": 0.5, "dry_level": 0.5, "width": 1.0},
    {"type": "reverb", "room_size": 0.3, "damping": 0.9, "wet_level": 0.3, "dry_level": 0.8, "width": 1.0},
    {"type": "convolution", "impulse_response": [1.0, 0.5, -0.25, 0.1], "latency_samples": 0},
]


@pytest.mark.parametrize("effect", LINEAR, ids=lambda e: e["type"])
def test_a_linear_effect_has_forgotten_an_impulse_within_its_memory(effect: dict) -> None:
    p = preset(effect)
    memory = memory_seconds(p)
    impulse = np.zeros((1, int((2 * memory + 0.5) * RATE)), np.float32)
    impulse[0, 0] = 1.0
    y = np.abs(board(p)(impulse, RATE)[0])
    audible = np.flatnonzero(y > y.max() * 10 ** (-MEMORY_DB / 20))
    decayed = audible[-1] / RATE  # the lag of pedalboard's last sample above -80 dB
    assert decayed <= memory <= 4 * decayed + 1e-3


def test_gain_and_clipping_forget_at_once_and_a_chain_adds_up() -> None:
    shelf, line = LINEAR[2], LINEAR[4]
    assert memory_seconds(preset({"type": "gain", "gain_db": 6.0}, {"type": "clipping", "threshold_db": -3.0})) == 0
    both = memory_seconds(preset(shelf, {"type": "gain", "gain_db": 6.0}, line))
    assert both == pytest.approx(memory_seconds(preset(shelf)) + memory_seconds(preset(line)))
    assert memory_seconds(preset({"type": "delay", "delay_seconds": 0.3, "feedback": 1.0, "mix": 0.5})) == np.inf


def test_a_window_rendered_from_its_memory_before_is_the_whole_renderings_slice() -> None:
    """A master-like chain (its compressor's release the slowest part): rendered afresh from
    memory_seconds before a window, the window equals the whole rendering to -80 dB of its peak;
    from a quarter of that before, it does not."""
    rng = np.random.default_rng(3)
    music = procedural_music(rng, 6 * RATE, RATE)
    music[: 3 * RATE] *= 4.0  # loud, then quiet: the compressor recovers at its release
    x = np.stack([music, np.roll(music, 300)]).astype(np.float32)
    p = preset(
        {"type": "low_shelf", "cutoff_frequency_hz": 60.0, "gain_db": 6.0, "q": 1.0},
        {"type": "compressor", "threshold_db": -30.0, "ratio": 8.0, "attack_ms": 20.0, "release_ms": 500.0},
        {"type": "clipping", "threshold_db": -1.0},
    )
    whole = board(p)(x, RATE)
    a, b = 3 * RATE, 4 * RATE
    memory = memory_seconds(p)

    def error(preroll: float) -> float:
        start = a - int(np.ceil(preroll * RATE))
        window = board(p)(x[:, start:b], RATE)[:, a - start :]
        return float(np.abs(window - whole[:, a:b]).max() / np.abs(whole[:, a:b]).max())

    assert error(memory) <= 10 ** (-MEMORY_DB / 20)
    assert error(memory / 4) > 10 ** (-MEMORY_DB / 20)
