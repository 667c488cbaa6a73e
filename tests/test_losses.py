"""Losses and metrics, each against an independent computation: numpy STFTs for the log-mel and
revisited MR-STFT losses, scipy's Wasserstein distance and the closed form for pure tones for
the spectral OT loss, the closed form for SI-SDR and for the entropy of known densities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import scipy.stats
import torch
from nnAudio.librosa_functions import get_mel

from afxest.losses import (
    FAST_FFT_SIZES,
    REVISITED_WINDOWS,
    LogMelLoss,
    MRSTFTRevisitedLoss,
    SpectralOTLoss,
    bits_per_dim,
    flattop_window,
    histogram_quantiles,
    log_mel_loss,
    mrstft_revisited,
    quantile_levels,
    si_sdr,
    spectral_ot,
    wasserstein_1d,
)
from afxest.spectral import MelSpectrogram

SR_EQ = 22050  # equaliser experiment
SR_FM = 44100  # FM experiment: 125 ms sounds
N_FM = 5512


pytestmark = pytest.mark.usefixtures("one_thread")


def np_frames(x: np.ndarray, n: int, hop: int, center: bool) -> np.ndarray:
    """(batch, time) -> (batch, frames, n), reflect padded by n // 2 when centred."""
    if center:
        x = np.pad(x, [(0, 0), (n // 2, n // 2)], mode="reflect")
    count = 1 + (x.shape[-1] - n) // hop
    return x[:, np.arange(n)[None, :] + hop * np.arange(count)[:, None]]


def np_log_mel_loss(y_hat: np.ndarray, y: np.ndarray, n_fft=4096, hop=1024, n_mels=128) -> np.ndarray:
    basis = get_mel(SR_EQ, n_fft, n_mels, dtype=np.float64)
    window = scipy.signal.get_window("hann", n_fft)

    def lm(x):
        power = np.abs(np.fft.rfft(np_frames(x, n_fft, hop, True) * window, axis=-1)) ** 2
        return np.log(np.einsum("mk,bfk->bmf", basis, power) + 1)

    return ((lm(y_hat) - lm(y)) ** 2).mean(axis=(1, 2))


def np_mrstft_revisited(y_hat: np.ndarray, y: np.ndarray, fft_sizes=None) -> np.ndarray:
    total = 0.0
    for n, n_fft in zip(REVISITED_WINDOWS, fft_sizes or REVISITED_WINDOWS):
        window = scipy.signal.get_window("flattop", n)

        def compressed(x):
            return np.log1p(np.abs(np.fft.rfft(np_frames(x, n, n // 2, True) * window, n=n_fft, axis=-1)))

        total = total + ((compressed(y_hat) - compressed(y)) ** 2).mean(axis=(1, 2))
    return total / len(REVISITED_WINDOWS)


@pytest.fixture(scope="module")
def music_like() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 1 s clips and a filtered (darker, quieter) version of them, float64."""
    g = torch.Generator().manual_seed(3)
    t = torch.arange(SR_EQ, dtype=torch.float64) / SR_EQ
    y = torch.stack([
        0.3 * torch.randn(SR_EQ, generator=g, dtype=torch.float64),
        0.4 * torch.sin(2 * math.pi * 220 * t) + 0.2 * torch.sin(2 * math.pi * 3300 * t),
    ])
    b, a = scipy.signal.butter(2, 2000, fs=SR_EQ)
    y_hat = torch.from_numpy(0.7 * scipy.signal.lfilter(b, a, y.numpy()))
    return y_hat, y


def test_log_mel_loss_matches_numpy(music_like):
    y_hat, y = music_like
    loss = LogMelLoss(SR_EQ)
    ours = loss(y_hat, y)
    assert ours.shape == (2,)
    expected = np_log_mel_loss(y_hat.numpy(), y.numpy())
    assert np.allclose(ours.numpy(), expected, rtol=1e-6)
    assert torch.all(loss(y, y) == 0)
    # float32 signals (training) within float32 rounding
    assert np.allclose(loss(y_hat.float(), y.float()).numpy(), expected, rtol=1e-4)


def test_log_mel_loss_against_a_fixed_target_matches_numpy(music_like):
    """``LogMelLoss.against(y)`` (the target's spectrogram computed once, for a search) gives
    the numpy reference's values and the plain loss's gradient, on (batch, channels, time) too."""
    y_hat, y = music_like
    loss = LogMelLoss(SR_EQ)
    fixed = loss.against(y)
    assert np.allclose(fixed(y_hat).numpy(), np_log_mel_loss(y_hat.numpy(), y.numpy()), rtol=1e-6)
    stereo_hat = torch.stack([y_hat, y_hat.flip(0)], 1).requires_grad_(True)
    stereo = torch.stack([y, y.flip(0)], 1)
    (g_fixed,) = torch.autograd.grad(loss.against(stereo)(stereo_hat).sum(), stereo_hat)
    (g_plain,) = torch.autograd.grad(loss(stereo_hat, stereo).sum(), stereo_hat)
    assert torch.allclose(g_fixed, g_plain, rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError):
        fixed(y_hat[:, :100])


def test_log_mel_loss_against_repeated_targets_matches_numpy(music_like):
    """``against(y, repeats)`` scores several renderings of each target (a ranking's batch) as the
    numpy reference does against each target repeated, per item and per channel; a batch that is
    not ``repeats`` renderings of each target is refused."""
    from afxest.losses import against

    y_hat, y = music_like  # (B, T)
    b = y.shape[0]
    stereo = torch.stack([y, 0.5 * y.flip(0)], 1)  # (B, 2, T)
    renderings = torch.cat([torch.stack([y_hat, y_hat.flip(0)], 1), torch.stack([0.3 * y_hat, y], 1),
                            torch.stack([y, y_hat], 1)])  # (3B, 2, T), reordered below: 3 per target
    order = torch.arange(3 * b).reshape(3, b).T.reshape(-1)
    renderings = renderings[order]
    paired = stereo.repeat_interleave(3, 0)
    expected = np.mean([np_log_mel_loss(renderings[:, ch].numpy(), paired[:, ch].numpy()) for ch in range(2)], axis=0)
    assert np.allclose(against(LogMelLoss(SR_EQ), stereo, 3)(renderings).numpy(), expected, rtol=1e-6)
    assert np.allclose(against(si_sdr, stereo, 3)(renderings).numpy(), si_sdr(renderings, paired).numpy())
    with pytest.raises(ValueError):
        against(LogMelLoss(SR_EQ), stereo, 2)(renderings)


def test_log_mel_loss_per_channel_mean(music_like):
    y_hat, y = music_like
    mel = MelSpectrogram(SR_EQ, 1024, 256, 64)
    stereo = log_mel_loss(torch.stack([y_hat, y_hat.flip(0)], 0), torch.stack([y, y.flip(0)], 0), mel)
    mono = log_mel_loss(y_hat, y, mel)
    assert torch.allclose(stereo, mono.mean().expand(2))
    with pytest.raises(ValueError):
        log_mel_loss(y_hat, y[:, :100], mel)


def test_flattop_window_matches_scipy():
    for n in (67, 2053, 4096):
        assert np.allclose(flattop_window(n, torch.float64).numpy(), scipy.signal.get_window("flattop", n), atol=1e-15)


def test_mrstft_revisited_matches_numpy(music_like):
    y_hat, y = music_like
    ours = MRSTFTRevisitedLoss()(y_hat, y)
    assert ours.shape == (2,)
    assert np.allclose(ours.numpy(), np_mrstft_revisited(y_hat.numpy(), y.numpy()), rtol=1e-9)
    assert torch.all(mrstft_revisited(y, y) == 0)
    # silence is 0 after ln(1 + .), and gradients stay finite there
    z = torch.zeros(2, 3000, requires_grad=True)
    mrstft_revisited(z, torch.zeros(2, 3000)).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_mrstft_revisited_with_fast_fft_sizes(music_like):
    """The training variant zero pads each prime window to a power of two: numpy's padded FFT
    gives the same values, and they stay within a few per cent of the letter's loss."""
    y_hat, y = music_like
    assert FAST_FFT_SIZES == (128, 128, 512, 512, 1024, 4096)
    fast = MRSTFTRevisitedLoss(fft_sizes=FAST_FFT_SIZES)(y_hat, y)
    assert np.allclose(fast.numpy(), np_mrstft_revisited(y_hat.numpy(), y.numpy(), FAST_FFT_SIZES), rtol=1e-9)
    exact = MRSTFTRevisitedLoss()(y_hat, y)
    assert torch.allclose(fast, exact, rtol=0.05)
    with pytest.raises(ValueError):
        mrstft_revisited(y_hat, y, fft_sizes=(128,))


# --- spectral optimal transport ---------------------------------------------------------------


def fm_tone(fc: float, ratio: float, index: float, n: int = N_FM) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / SR_FM
    return torch.sin(2 * math.pi * fc * t + index * torch.sin(2 * math.pi * fc * ratio * t))


@pytest.fixture(scope="module")
def fm_spectra() -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitude spectra (batch, frames, bins) of FM tones and noise, as spectral_ot sees them."""
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(2, N_FM, generator=g, dtype=torch.float64)
    x = torch.stack([fm_tone(110, 1.5, 2.0), fm_tone(110, 3.7, 5.0), noise[0]])
    y = torch.stack([fm_tone(110, 2.0, 1.0), fm_tone(110, 3.5, 6.0), noise[1]])
    w = flattop_window(4096, torch.float64)

    def spec(s):
        return torch.stft(s, 4096, 1024, window=w, center=False, return_complex=True).abs().transpose(1, 2)

    return spec(x), spec(y)


def test_sot_wasserstein_matches_scipy(fm_spectra):
    u, v = fm_spectra
    spacing = SR_FM / 4096
    centres = np.arange(u.shape[-1]) * spacing
    sub = 50  # each bin's mass spread over 50 atoms: the histogram our quantiles invert
    atoms = (centres[:, None] + ((np.arange(sub) + 0.5) / sub - 0.5)[None, :] * spacing).ravel()
    fine = wasserstein_1d(u, v, spacing, n_quantiles=65536, p=1).ravel().numpy()
    coarse = wasserstein_1d(u, v, spacing, n_quantiles=64, p=1).ravel().numpy()
    frames = [(b, f) for b in range(u.shape[0]) for f in range(u.shape[1])]
    for i, (b, f) in enumerate(frames):
        ub, vb = u[b, f].numpy(), v[b, f].numpy()
        histogram = scipy.stats.wasserstein_distance(atoms, atoms, np.repeat(ub, sub), np.repeat(vb, sub))
        at_centres = scipy.stats.wasserstein_distance(centres, centres, ub, vb)
        assert fine[i] == pytest.approx(histogram, rel=1e-3)
        assert fine[i] == pytest.approx(at_centres, rel=5e-3)  # bin-centre atoms: nearly the same
        assert coarse[i] == pytest.approx(at_centres, rel=0.05)  # 64 levels: midpoint-rule error


def test_sot_shifted_histograms_closed_form():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(3, 20, generator=g, dtype=torch.float64)
    for shift in (1, 7):
        u = torch.nn.functional.pad(base, (0, shift))
        v = torch.nn.functional.pad(base, (shift, 0))
        for p in (1.0, 2.0, 3.0):
            assert torch.allclose(wasserstein_1d(u, v, 2.5, 64, p), torch.full((3,), 2.5 * shift, dtype=torch.float64))
        squared = wasserstein_1d(u, v, 1.0, 64, 2.0, root=False)
        assert torch.allclose(squared, torch.full((3,), float(shift**2), dtype=torch.float64))


def test_sot_quantile_index_is_clamped():
    # cumulative mass ending just below the top level (as float rounding can leave it): the
    # search lands one past the last bin; the clamp keeps it in range and the value finite.
    w = torch.tensor([[0.25, 0.25, 0.25, 0.25 - 1e-3]])
    levels = torch.tensor([0.1, 0.5, 0.9995])
    q = histogram_quantiles(w, levels)
    assert torch.isfinite(q).all()
    assert q[0, 2] == pytest.approx(3.5)  # top of the last bin
    assert q[0, 0] == pytest.approx(-0.5 + 0.4) and q[0, 1] == pytest.approx(1.5)
    assert torch.allclose(quantile_levels(4), torch.tensor([0.125, 0.375, 0.625, 0.875]))


@pytest.mark.parametrize("offset_hz", [0.5, 3.0, 20.0, 150.0])
def test_sot_pure_tones_distance_is_frequency_difference(offset_hz):
    ref = fm_tone(440.0, 1.0, 0.0)[None]
    for sign in (1, -1):
        tone = fm_tone(440.0 + sign * offset_hz, 1.0, 0.0)[None]
        assert spectral_ot(tone, ref, SR_FM).item() == pytest.approx(offset_hz, rel=0.02)
        in_bins = spectral_ot(tone, ref, SR_FM, unit="bins").item()
        assert in_bins == pytest.approx(offset_hz / (SR_FM / 4096), rel=0.02)


def test_sot_monotonic_in_frequency_offset():
    ref = fm_tone(330.0, 1.0, 0.0)[None]
    offsets = [0.1, 0.3, 1, 2, 5, 10, 25, 60, 120, 300]  # 330 - 300 Hz stays positive
    for sign in (1, -1):
        values = [spectral_ot(fm_tone(330.0 + sign * d, 1.0, 0.0)[None], ref, SR_FM).item() for d in offsets]
        assert all(a < b for a, b in zip(values, values[1:])), values
    assert spectral_ot(ref, ref, SR_FM).item() == 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sot_gradient_points_to_the_target_frequency(dtype):
    ref = fm_tone(220.0, 1.0, 0.0).to(dtype)[None]
    t = torch.arange(N_FM, dtype=dtype) / SR_FM
    for start, sign in ((228.0, 1.0), (212.0, -1.0), (221.5, 1.0), (600.0, 1.0), (90.0, -1.0)):
        f = torch.tensor(start, dtype=dtype, requires_grad=True)
        loss = SpectralOTLoss(SR_FM)(torch.sin(2 * math.pi * f * t)[None], ref)
        loss.sum().backward()
        assert torch.isfinite(f.grad) and torch.sign(f.grad).item() == sign
        assert abs(f.grad.item()) == pytest.approx(1.0, rel=0.1)  # d W / d f = 1 Hz per Hz
    # gradient of W_2^p form and at the optimum are finite too
    f = torch.tensor(220.0, dtype=dtype, requires_grad=True)
    spectral_ot(torch.sin(2 * math.pi * f * t)[None], ref, SR_FM, root=False).sum().backward()
    assert torch.isfinite(f.grad)


def test_sot_guides_the_fm_frequency_ratio():
    # DAFx 2025 Sec. 5: carrier 110 Hz, ratio in [0.5, 10]; target ratio 4, index 2
    from afxest.dsp.fm import fm_synth

    def synth(ratio):
        n = ratio.shape[0]
        return fm_synth(N_FM, SR_FM, carrier_hz=torch.full((n,), 110.0), amplitude=torch.ones(n),
                        modulation_index=torch.full((n,), 2.0), frequency_ratio=ratio)

    target = synth(torch.tensor([4.0]))
    ratios = torch.tensor([0.6, 1.0, 2.0, 3.0, 3.6, 3.9, 4.1, 4.5, 5.5, 7.0, 9.5], requires_grad=True)
    loss = spectral_ot(synth(ratios), target.expand(len(ratios), -1, -1), SR_FM)
    loss.sum().backward()
    assert torch.equal(torch.sign(ratios.grad), torch.sign(ratios.detach() - 4.0))
    below, above = loss[:6].detach(), loss[6:].detach()
    assert torch.all(below[1:] < below[:-1]) and torch.all(above[1:] > above[:-1])


def test_sot_shapes_silence_and_short_signals():
    y = torch.randn(4, 2, N_FM)
    out = spectral_ot(torch.zeros_like(y, requires_grad=True), y, SR_FM)
    assert out.shape == (4,) and torch.isfinite(out).all()
    x = torch.zeros(3, 1000, requires_grad=True)
    spectral_ot(x, torch.randn(3, 1000), SR_FM).sum().backward()  # shorter than n_fft: padded
    assert torch.isfinite(x.grad).all()


# --- metrics -----------------------------------------------------------------------------------


def test_si_sdr_closed_form():
    g = torch.Generator().manual_seed(5)
    s = torch.randn(3, 8000, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 8000, generator=g, dtype=torch.float64)
    noise = noise - (noise * s).sum(-1, keepdim=True) / s.square().sum(-1, keepdim=True) * s  # orthogonal to s
    scale = torch.tensor([[0.5], [2.0], [-3.0]], dtype=torch.float64)
    noise = noise * torch.tensor([[0.1], [1.0], [0.01]], dtype=torch.float64)
    estimate = scale * s + noise
    energy = s.square().sum(-1, keepdim=True)
    expected = 10 * torch.log10(scale.square() * energy / noise.square().sum(-1, keepdim=True))
    assert torch.allclose(si_sdr(estimate, s), expected.squeeze(1), atol=1e-9)
    assert torch.allclose(si_sdr(7.0 * estimate, s), si_sdr(estimate, s), atol=1e-9)  # scale invariant
    assert torch.allclose(si_sdr(estimate[:, None], s[:, None]), si_sdr(estimate, s))  # channels


def test_si_sdr_zero_mean_and_silence():
    g = torch.Generator().manual_seed(6)
    s = torch.randn(2, 4000, generator=g) + 0.5
    e = s + 0.1 * torch.randn(2, 4000, generator=g) + 0.3
    centred = si_sdr(e - e.mean(-1, keepdim=True), s - s.mean(-1, keepdim=True))
    assert torch.allclose(si_sdr(e, s, zero_mean=True), centred)
    silent = torch.zeros(2, 4000)
    assert torch.isfinite(si_sdr(e, silent)).all() and (si_sdr(e, silent) < -50).all()
    assert torch.all(si_sdr(silent, silent) == 0)
    x = torch.zeros(2, 4000, requires_grad=True)
    si_sdr(x, silent).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_bits_per_dim_uniform_and_gaussian():
    d = 6
    assert torch.all(bits_per_dim(torch.zeros(5), d) == 0)  # uniform on [0, 1]^d: density 1
    # Gaussian N(0, sigma^2 I_d): E[-ln p] = d/2 ln(2 pi e sigma^2) nats
    sigma = 0.05
    normal = torch.distributions.Normal(torch.zeros(d, dtype=torch.float64), sigma)
    z = normal.sample((200_000,))
    estimate = bits_per_dim(normal.log_prob(z).sum(-1), d).mean().item()
    assert estimate == pytest.approx(0.5 * math.log2(2 * math.pi * math.e * sigma**2), abs=0.01)
    assert bits_per_dim(torch.tensor(-math.log(2) * d * 1.5), d).item() == pytest.approx(1.5)


def test_doctests() -> None:
    import doctest

    import afxest.losses

    result = doctest.testmod(afxest.losses, raise_on_error=False)
    assert result.failed == 0 and result.attempted > 0
