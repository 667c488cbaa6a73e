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


def _reverb_features(wet: np.ndarray, sr: int = 22050) -> np.ndarray:
    from afxest.nn.encoders import ReverbFeatures, wet_cepstrum

    with torch.no_grad():
        return ReverbFeatures(sr).values(wet_cepstrum(torch.from_numpy(wet))).numpy()


def test_reverb_features_read_echoes_at_the_freeverb_comb_lengths_as_the_cepstrums_closed_form() -> None:
    """ln |1 + a e^(-jwN)| = a cos(wN) + O(a^2): an echo of gain a at lag N puts a / 2 in the
    real cepstrum at N. Echoes at the design's comb lengths (JUCE's 1116 ... 1617 samples at
    44.1 kHz, 558 ... 808 at 22.05 kHz) read a / 2 in the comb features of k = 1 and at k = 2..4
    at most the second order's a^2 / 2; the same echoes 7 samples later (outside the features'
    2-sample guard) read 0."""
    sr, a = 22050, 0.1
    rng = np.random.default_rng(3)
    x = rng.standard_normal(5 * sr)
    lags = [1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617]

    def echoed(shift: int) -> np.ndarray:
        y = x.copy()
        for lag in lags:
            n = lag * sr // 44100 + shift
            y[n:] += a * x[:-n]
        return y[None, None]

    on, off = _reverb_features(echoed(0)), _reverb_features(echoed(7))
    peaks_on, peaks_off = on[0, :32].reshape(8, 4), off[0, :32].reshape(8, 4)
    noise = 0.006  # white noise's largest of 5 cepstral values: 0.001-0.004
    np.testing.assert_allclose(peaks_on[:, 0], a / 2, atol=noise)
    assert np.abs(peaks_on[:, 1:]).max() < noise + a**2 / 2  # second order: a^2 / 2 where two lengths add up to k N
    assert np.abs(peaks_off).max() < noise


def test_reverb_features_of_pedalboards_reverb_rise_with_its_room_size() -> None:
    """pedalboard's Reverb (wet and dry levels 0.5, no damping) on noise: the comb features (k = 1,
    mean of the 8 combs) stand well above what the dry alone reads (0.003-0.004 on three
    noises), the more so in a larger room (measured 0.011-0.012 at room size 0.2, 0.026 at
    0.9), and so does the envelope at 0.1-1 s (-2.65 and -2.51: log10 of the RMS)."""
    import pedalboard

    sr = 22050
    x = (0.1 * np.random.default_rng(4).standard_normal((1, 5 * sr))).astype(np.float32)
    dry = _reverb_features(x[None].astype(np.float64))
    small, large = (_reverb_features(pedalboard.Reverb(room_size=r, damping=0.0, wet_level=0.5, dry_level=0.5, width=1.0)(x, sr)[None].astype(np.float64))
                    for r in (0.2, 0.9))
    combs = slice(0, 32, 4)
    assert dry[0, combs].mean() < 0.006
    assert small[0, combs].mean() > 2 * dry[0, combs].mean()
    assert large[0, combs].mean() > 1.5 * small[0, combs].mean()
    envelope = slice(40 + 10, 40 + 20)  # bands 10-19 of 24: 0.1-1 s
    assert large[0, envelope].mean() > small[0, envelope].mean() + 0.08


def test_init_widens_an_encoder_that_hears_more_to_the_same_embedding() -> None:
    """``afxest train --init`` from a ``convnext_echo`` encoder into a ``convnext_echo_reverb`` one:
    the new inputs start at 0, so the widened encoder embeds a wet exactly as the old one
    does; a weight of another shape is refused in one line."""
    import dataclasses
    from pathlib import Path

    import pytest

    from afxest.errors import UserError
    from afxest.nn.encoders import build_encoder
    from afxest.tasks import TASKS
    from afxest.train import load_widened

    task = TASKS["mix"]
    torch.manual_seed(5)
    old = build_encoder(dataclasses.replace(task, encoder="convnext_echo")).eval()
    new = build_encoder(dataclasses.replace(task, encoder="convnext_echo_reverb")).eval()
    assert new.reverb is not None and old.reverb is None
    load_widened(new, old.state_dict(), Path("old.pt"))
    wet = torch.from_numpy(np.random.default_rng(6).standard_normal((3, 1, 22050 * 2)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(new(wet), old(wet), rtol=0, atol=1e-5)
    bad = dict(old.state_dict())
    bad["mlp.0.bias"] = torch.zeros(3)
    with pytest.raises(UserError, match="mlp.0.bias"):
        load_widened(new, bad, Path("old.pt"))
