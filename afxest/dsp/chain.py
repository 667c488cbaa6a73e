"""Apply a sequence of effects, as a preset lists them, with the differentiable processors.

Consecutive linear time-invariant effects (biquads and gains) are merged into one
frequency-domain pass (their responses multiply); the compressor and clipper run in order
between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from afxest.dsp.amplitude import db_to_amplitude, hard_clip, straight_through_clip
from afxest.dsp.filters import BIQUAD_TYPES, apply_biquads, biquad_coefficients

Effect = tuple[str, Mapping[str, Tensor]]


def apply_chain(
    x: Tensor, effects: Sequence[Effect], sample_rate: float, clip_gradient: bool = False
) -> Tensor:
    """Process x (batch, channels, time) by ``effects``: (type, {parameter: (batch,) tensor}).

    Types and parameter names are those of :mod:`afxest.catalogue`. ``clip_gradient`` renders
    the clipper with :func:`afxest.dsp.amplitude.straight_through_clip` (training): the same
    output, with a smooth clipper's gradient where the hard clipper has none.
    """
    biquads: list[tuple[Tensor, Tensor]] = []
    scale: Tensor | None = None

    def flush(x: Tensor) -> Tensor:
        nonlocal biquads, scale
        if biquads:
            x = apply_biquads(x, biquads, sample_rate, scale)
        elif scale is not None:
            x = x * scale[:, None, None]
        biquads, scale = [], None
        return x

    for kind, p in effects:
        if kind in BIQUAD_TYPES:
            biquads.append(
                biquad_coefficients(kind, p["cutoff_frequency_hz"], p["gain_db"], p["q"], sample_rate)
            )
        elif kind == "gain":
            amp = db_to_amplitude(p["gain_db"])
            scale = amp if scale is None else scale * amp
        elif kind == "compressor":
            from afxest.dsp.compressor import compressor

            x = compressor(
                flush(x), p["threshold_db"], p["ratio"], p["attack_ms"], p["release_ms"], sample_rate
            )
        elif kind == "clipping":
            x = (straight_through_clip if clip_gradient else hard_clip)(flush(x), p["threshold_db"])
        else:
            raise ValueError(f"no differentiable processor for effect type {kind!r}")
    return flush(x)
