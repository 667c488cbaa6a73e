"""FM synth (DAFx Eq. 19) against the closed form in numpy, and its gradients."""

from __future__ import annotations

import numpy as np
import torch

from afxest.dsp.fm import fm_synth


def closed_form(fc: float, amp: float, index: float, ratio: float, n: int, fs: float) -> np.ndarray:
    t = np.arange(n) / fs
    return amp * np.sin(2 * np.pi * fc * t + index * np.sin(2 * np.pi * ratio * fc * t))


def test_matches_closed_form_batched() -> None:
    fs, n = 44100, 5513  # 125 ms
    params = [(110.0, 1.0, 3.2, 2.0), (110.0, 0.5, 4 * np.pi, 10.0), (440.0, 1.0, 0.0, 0.5)]
    fc, amp, index, ratio = (torch.tensor(c, dtype=torch.float64) for c in zip(*params))
    y = fm_synth(n, fs, carrier_hz=fc, amplitude=amp, modulation_index=index, frequency_ratio=ratio, dtype=torch.float64)
    assert y.shape == (3, 1, n)
    for i, p in enumerate(params):
        np.testing.assert_allclose(y[i, 0].numpy(), closed_form(*p, n, fs), atol=1e-9)


def test_phase_zero_at_start_and_long_sounds_keep_precision() -> None:
    fs = 44100
    one = torch.ones(1, dtype=torch.float64)
    # a 10-minute sound: check the last samples against the closed form in extended precision
    n = fs * 600
    y = fm_synth(n, fs, carrier_hz=110.0 * one, amplitude=one, modulation_index=2.0 * one, frequency_ratio=1.5 * one)
    assert y[0, 0, 0].item() == 0.0
    t = np.arange(n - 100, n, dtype=np.longdouble) / fs
    tail = np.sin(2 * np.pi * 110 * t + 2.0 * np.sin(2 * np.pi * 165 * t)).astype(np.float64)
    np.testing.assert_allclose(y[0, 0, -100:].numpy(), tail, atol=1e-5)


def test_gradients_match_finite_differences() -> None:
    fs = 8000
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in ([110.0, 200.0], [1.0, 0.7], [2.0, 5.0], [1.5, 3.0])]

    def synth(fc, amp, index, ratio):
        return fm_synth(64, fs, carrier_hz=fc, amplitude=amp, modulation_index=index, frequency_ratio=ratio, dtype=torch.float64)

    assert torch.autograd.gradcheck(synth, params)
