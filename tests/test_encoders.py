"""Encoders against independent references (numpy's FFT and Hann window)."""

from __future__ import annotations

import numpy as np
import torch

from afxest.nn.encoders import DFTMLP


def test_dft_mlp_input_is_the_normalised_log_magnitude_of_the_hann_windowed_dft() -> None:
    """What the MLP sees: per-bin standardised ln(1 + |rfft(hann * x)|), the window numpy's
    symmetric Hann, the statistics those of the batch (training mode, no affine weights)."""
    rng = np.random.default_rng(0)
    frames = 1000
    x = rng.standard_normal((6, 2, frames)).astype(np.float32)
    encoder = DFTMLP(frames).train()
    seen: list[torch.Tensor] = []
    encoder.mlp[0].register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    encoder(torch.from_numpy(x))
    mono = x.astype(np.float64).mean(axis=1)
    features = np.log1p(np.abs(np.fft.rfft(mono * np.hanning(frames), axis=-1)))
    expected = (features - features.mean(axis=0)) / np.sqrt(features.var(axis=0) + 1e-5)
    np.testing.assert_allclose(seen[0].detach().numpy(), expected, atol=2e-3)


def test_dft_mlp_pads_short_and_cuts_long_input() -> None:
    """A clip shorter than ``frames`` is zero padded, a longer one cut: both give the embedding
    of the explicitly padded / cut clip."""
    torch.manual_seed(0)
    encoder = DFTMLP(800).eval()
    short = torch.randn(2, 1, 500)
    padded = torch.nn.functional.pad(short, (0, 300))
    long = torch.randn(2, 1, 1200)
    assert torch.allclose(encoder(short), encoder(padded))
    assert torch.allclose(encoder(long), encoder(long[..., :800]))
