"""Independent references shared by the tests."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pedalboard

# pedalboard plugins by preset type, written here independently of afxest's catalogue/engines
PLUGINS = {
    "low_shelf": pedalboard.LowShelfFilter,
    "high_shelf": pedalboard.HighShelfFilter,
    "peak": pedalboard.PeakFilter,
    "compressor": pedalboard.Compressor,
    "gain": pedalboard.Gain,
    "clipping": pedalboard.Clipping,
    "limiter": pedalboard.Limiter,
    "delay": pedalboard.Delay,
    "reverb": pedalboard.Reverb,
    "convolution": lambda latency_samples, impulse_response: causal_fir(impulse_response),
}


def causal_fir(h) -> Any:
    """What the ``convolution`` plugin computes (its latency left to the renderers): scipy's
    direct-form FIR, y[n] = sum_k h[k] x[n - k], in float64; called as a plugin, (x, rate) -> y."""
    import scipy.signal

    return lambda x, sample_rate: scipy.signal.lfilter(np.asarray(h, np.float64), [1.0], np.asarray(x, np.float64), axis=-1)


def reference_render(preset: dict[str, Any], dry: np.ndarray, sample_rate: float) -> np.ndarray:
    """pedalboard plugins built from a preset's JSON values; (channels, frames) -> same (a
    ``convolution`` by :func:`causal_fir`, between Pedalboards of the plugins before and after it,
    its ``latency_samples`` L compensated: the dry followed by L zeros, the first L samples dropped)."""
    plugins = [PLUGINS[e["type"]](**{k: v for k, v in e.items() if k != "type"}) for e in preset["effects"]]
    latency = int(sum(e.get("latency_samples", 0) for e in preset["effects"]))
    y, run = np.pad(np.asarray(dry, dtype=np.float32), ((0, 0), (0, latency))), []
    for p in [*plugins, None]:
        if isinstance(p, pedalboard.Plugin):
            run.append(p)
            continue
        if run:
            y = pedalboard.Pedalboard(run)(np.ascontiguousarray(y, dtype=np.float32), float(sample_rate))
            run = []
        if p is not None:
            y = p(y, float(sample_rate)).astype(np.float32)
    return y[:, latency:]


def cookbook(kind: str, f0: float, gain_db: float, q: float, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """RBJ Audio EQ Cookbook, written out term by term as published (reference only)."""
    A = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / fs
    alpha = math.sin(w0) / (2 * q)
    c = math.cos(w0)
    if kind == "peak":
        b = [1 + alpha * A, -2 * c, 1 - alpha * A]
        a = [1 + alpha / A, -2 * c, 1 - alpha / A]
    elif kind == "low_shelf":
        b = [A * ((A + 1) - (A - 1) * c + 2 * math.sqrt(A) * alpha),
             2 * A * ((A - 1) - (A + 1) * c),
             A * ((A + 1) - (A - 1) * c - 2 * math.sqrt(A) * alpha)]
        a = [(A + 1) + (A - 1) * c + 2 * math.sqrt(A) * alpha,
             -2 * ((A - 1) + (A + 1) * c),
             (A + 1) + (A - 1) * c - 2 * math.sqrt(A) * alpha]
    else:
        b = [A * ((A + 1) + (A - 1) * c + 2 * math.sqrt(A) * alpha),
             -2 * A * ((A - 1) + (A + 1) * c),
             A * ((A + 1) + (A - 1) * c - 2 * math.sqrt(A) * alpha)]
        a = [(A + 1) - (A - 1) * c + 2 * math.sqrt(A) * alpha,
             2 * ((A - 1) - (A + 1) * c),
             (A + 1) - (A - 1) * c - 2 * math.sqrt(A) * alpha]
    return np.array(b), np.array(a)


def time_effect_signals(sample_rate: int, seconds: float = 1.5, seed: int = 0) -> dict[str, np.ndarray]:
    """Stereo float32 test inputs for the delay and the reverb: ``music`` (decaying harmonic notes
    panned apart, with noise) and ``impulse`` (a unit impulse on the left, a smaller one later
    on the right)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    notes = [sum(np.sin(2 * np.pi * f * k * t) / k for k in range(1, 6)) * np.exp(-6 * (t % p)) for f, p in ((196.0, 0.4), (330.0, 0.25))]
    music = 0.3 * np.stack(notes) + 0.02 * rng.standard_normal((2, t.size))
    impulse = np.zeros((2, t.size))
    impulse[0, 0], impulse[1, 331] = 1.0, 0.5
    return {"music": music.astype(np.float32), "impulse": impulse.astype(np.float32)}


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(|reference|^2 / |estimate - reference|^2) in float64; inf when they are equal."""
    reference, estimate = np.asarray(reference, np.float64), np.asarray(estimate, np.float64)
    err = float(np.sum((estimate - reference) ** 2))
    return math.inf if err == 0 else 10 * math.log10(float(np.sum(reference**2)) / err)
