"""Two-operator FM synthesizer (DAFx 2025, Eq. 19; Chowning 1973).

    y(t) = I_c sin(2 pi f_c t + I_m sin(2 pi f_m t)),   f_m = ratio * f_c,   t = n / fs

Phase 0 at t = 0. Phases are accumulated in float64 and wrapped to one period before the sine,
so long sounds keep their precision; gradients flow to every parameter.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def fm_synth(
    frames: int,
    sample_rate: float,
    *,
    carrier_hz: Tensor,
    amplitude: Tensor,
    modulation_index: Tensor,
    frequency_ratio: Tensor,
    start: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Synthesise (batch, 1, frames) from parameters shaped (batch,) (DAFx Eq. 19), from sample
    ``start`` on (a long sound is synthesised block by block, sample for sample the same).

    The sources' one signature (:mod:`afxest.processors`): the length and the sample rate, then
    the catalogue's parameters by name (all but ``duration_s``, which ``frames`` replaces)."""
    n = torch.arange(start, start + frames, device=carrier_hz.device, dtype=torch.float64)
    t = n / sample_rate
    fc = carrier_hz.double()[:, None]
    fm = fc * frequency_ratio.double()[:, None]

    def phase(freq: Tensor) -> Tensor:  # 2 pi frac(f t): same value, same gradient 2 pi t
        cycles = freq * t
        return 2 * math.pi * (cycles - cycles.detach().floor())

    y = amplitude.double()[:, None] * torch.sin(
        phase(fc) + modulation_index.double()[:, None] * torch.sin(phase(fm))
    )
    return y.to(dtype)[:, None, :]
