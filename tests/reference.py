"""Independent references shared by the tests."""

from __future__ import annotations

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
}


def reference_render(preset: dict[str, Any], dry: np.ndarray, sample_rate: float) -> np.ndarray:
    """pedalboard plugins built from a preset's JSON values; (channels, frames) -> same."""
    board = pedalboard.Pedalboard(
        [PLUGINS[e["type"]](**{k: v for k, v in e.items() if k != "type"}) for e in preset["effects"]]
    )
    return board(np.ascontiguousarray(dry, dtype=np.float32), float(sample_rate))
