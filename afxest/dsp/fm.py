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
    """Synthesises the two-operator FM tone of DAFx 2025, Eq. 19 (see the module docstring) from
    sample ``start`` on; a long sound synthesised block by block is sample for sample the same.

    This is the sources' one signature (:mod:`afxest.processors`): the length and the sample
    rate, then the catalogue's parameters by name (all but ``duration_s``, which ``frames``
    replaces).

    Arguments:
        frames: The number of samples.
        sample_rate: The sample rate fs in Hz.
        carrier_hz: The carrier frequency f_c in Hz, shaped (batch,).
        amplitude: The carrier amplitude I_c, shaped (batch,).
        modulation_index: The modulation index I_m in radians, shaped (batch,).
        frequency_ratio: The ratio f_m / f_c, shaped (batch,).
        start: The index of the first sample (phase 0 at sample 0).
        dtype: The dtype of the output (the phases are float64 whatever it is).

    Returns:
        The audio, shaped (batch, 1, frames).

    Example:
        >>> one = torch.tensor([1.0])
        >>> fm_synth(4, 8.0, carrier_hz=one, amplitude=0.5 * one, modulation_index=0 * one,
        ...          frequency_ratio=2 * one)  # I_m = 0: a sine at f_c = fs / 8
        tensor([[[0.0000, 0.3536, 0.5000, 0.3536]]])
    """
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
