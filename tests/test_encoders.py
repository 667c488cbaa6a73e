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


def test_mix_encoder_reads_pedalboards_delay_as_the_normalised_delay_time() -> None:
    """The mix task's encoder (convnext_echo): its first cepstral peak's features are, for wets
    of a pedalboard Delay on noise, the delay time normalised in the task's own range (the
    issue's 0.05-0.8 s, log-uniform: ln(t / 0.05) / ln 16 at the middle of the sample pedalboard
    delays by) and its logit; the embedding carries them after the MLP's output."""
    import math

    import pedalboard

    from afxest.nn.encoders import build_encoder
    from afxest.tasks import TASKS

    sr = 22050
    encoder = build_encoder(TASKS["mix"]).eval()  # batch norm at its initial statistics: the identity
    rng = np.random.default_rng(1)
    times = [0.07, 0.31, 0.74]
    wets = [pedalboard.Delay(delay_seconds=t, feedback=0.3, mix=0.4)((0.1 * rng.standard_normal((1, 3 * sr))).astype(np.float32), sr)
            for t in times]
    with torch.no_grad():
        embedding = encoder(torch.from_numpy(np.stack(wets)))
    features = embedding[:, -encoder.echo.size :].numpy()
    expected = np.array([math.log((math.floor(np.float32(t) * sr) + 0.5) / sr / 0.05) / math.log(16) for t in times])
    np.testing.assert_allclose(features[:, 0], expected, atol=1e-4)
    np.testing.assert_allclose(features[:, 1], np.log(expected / (1 - expected)), atol=1e-3)
    assert embedding.shape == (3, 128 + 15)
