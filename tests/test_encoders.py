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


def test_residual_block_is_swish_of_input_plus_two_layer_branch() -> None:
    """ResidualBlock(h) = swish(h + W2 swish(W1 h + b1) + b2), written out in numpy."""
    from afxest.nn.encoders import ResidualBlock

    torch.manual_seed(0)
    block = ResidualBlock(5)
    h = torch.randn(3, 5)
    w1, b1 = (t.detach().double().numpy() for t in (block.inner[0].weight, block.inner[0].bias))
    w2, b2 = (t.detach().double().numpy() for t in (block.inner[2].weight, block.inner[2].bias))

    def swish(a: np.ndarray) -> np.ndarray:
        return a / (1 + np.exp(-a))

    x = h.double().numpy()
    expected = swish(x + swish(x @ w1.T + b1) @ w2.T + b2)
    np.testing.assert_allclose(block(h).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
