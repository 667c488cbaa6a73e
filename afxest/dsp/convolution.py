"""The ``convolution`` effect: an FIR filter, y[n] = sum_k h[k] x[n - k], by FFT (the
convolution theorem), causal; its latency (``latency_samples``) is compensated by the renderers
(:class:`afxest.engines.Chain`), not here, as pedalboard's ``Convolution`` leaves it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


def convolution(x: Tensor, sample_rate: float, *, latency_samples: Tensor, impulse_response: Tensor) -> Tensor:
    """x (batch, channels, T) through each batch item's impulse response (batch, N): the first T
    samples of the full linear convolution (zero-padded FFTs of T + N - 1 or more samples)."""
    import torch

    frames, taps = x.shape[-1], impulse_response.shape[-1]
    n = 1 << (frames + taps - 2).bit_length()
    h = torch.fft.rfft(impulse_response.to(x.dtype), n)[:, None, :]
    return torch.fft.irfft(torch.fft.rfft(x, n) * h, n)[..., :frames]
