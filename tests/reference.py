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
}


def reference_render(preset: dict[str, Any], dry: np.ndarray, sample_rate: float) -> np.ndarray:
    """pedalboard plugins built from a preset's JSON values; (channels, frames) -> same."""
    board = pedalboard.Pedalboard(
        [PLUGINS[e["type"]](**{k: v for k, v in e.items() if k != "type"}) for e in preset["effects"]]
    )
    return board(np.ascontiguousarray(dry, dtype=np.float32), float(sample_rate))


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
