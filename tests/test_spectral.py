"""Spectral front-end: the filterbank against nnAudio's librosa clone, the torch backend against
nnAudio's MelSpectrogram and against a float64 numpy STFT, shapes, state_dict size, gradients
on silence, and the import-time promise (no nnAudio, no scipy)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from nnAudio.librosa_functions import get_mel  # numpy only; nnAudio.features is imported by the backend

from afxest.spectral import MelSpectrogram, hz_to_mel, log_mel, mel_filterbank, mel_to_hz, rfft, stft

SR = 22050
# (n_fft, hop, n_mels): DAFx 2025 loss (Sec. 4.5) and encoder input (Sec. 4.3, hop 23 ms)
SETTINGS = [(4096, 1024, 128), (2048, 512, 64)]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_slaney_mel_scale_values():
    # librosa's documented values for the Slaney scale: 60 Hz -> 0.9, 110/220/440 -> 1.65/3.3/6.6
    hz = torch.tensor([60.0, 110.0, 220.0, 440.0, 1000.0], dtype=torch.float64)
    assert torch.allclose(hz_to_mel(hz), torch.tensor([0.9, 1.65, 3.3, 6.6, 15.0], dtype=torch.float64))
    assert math.isclose(float(mel_to_hz(torch.tensor(3.0, dtype=torch.float64))), 200.0)
    grid = torch.linspace(0, 22050, 1001, dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(grid)), grid, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(
    "sr, n_fft, n_mels, fmin, fmax",
    [
        (22050, 4096, 128, 0.0, None),
        (22050, 2048, 64, 0.0, None),
        (44100, 1024, 40, 30.0, 8000.0),
        (16000, 512, 80, 0.0, None),
    ],
)
def test_filterbank_matches_nnaudio(sr, n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, dtype=torch.float64).numpy()
    theirs = get_mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm=1, dtype=np.float64)
    assert ours.shape == (n_mels, n_fft // 2 + 1)
    assert np.abs(ours - theirs).max() <= 1e-6 * np.abs(theirs).max()
    # float32 default against nnAudio's own float32 basis (what its MelSpectrogram multiplies by)
    ours32 = mel_filterbank(sr, n_fft, n_mels, fmin, fmax).numpy()
    theirs32 = get_mel(sr, n_fft, n_mels, fmin, fmax)
    assert ours32.dtype == np.float32
    assert np.abs(ours32 - theirs32).max() <= 1e-6 * np.abs(theirs32).max()


def test_filterbank_area_normalisation():
    # Slaney normalisation: each triangle has unit area in Hz (up to the sampling of the grid)
    fb = mel_filterbank(SR, 8192, 40, dtype=torch.float64)
    area = fb.sum(dim=1) * (SR / 8192)
    assert torch.allclose(area, torch.ones_like(area), rtol=0.02)


def test_empty_filters_warn():
    with pytest.warns(UserWarning, match="empty mel filters"):
        mel_filterbank(SR, 256, 128)


def numpy_mel_power(x: np.ndarray, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """float64 reference: reflect-padded frames, periodic Hann, |rfft|^2, nnAudio's mel basis."""
    pad = n_fft // 2
    xp = np.pad(x, [(0, 0), (pad, pad)], mode="reflect")
    n_frames = 1 + (xp.shape[-1] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    spec = np.abs(np.fft.rfft(xp[:, idx] * window, axis=-1)) ** 2  # (batch, frames, bins)
    basis = get_mel(SR, n_fft, n_mels, dtype=np.float64)
    return np.einsum("mk,bfk->bmf", basis, spec)


@pytest.fixture(scope="module")
def signals() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(SR) / SR
    noise = 0.3 * torch.randn(1, SR, generator=g)
    chirp = 0.5 * torch.sin(2 * math.pi * (100 * t + 2000 * t * t))[None]
    return torch.cat([noise, chirp])


@pytest.mark.parametrize("n_fft, hop, n_mels", SETTINGS)
def test_torch_backend_matches_float64_reference(signals, n_fft, hop, n_mels):
    a = MelSpectrogram(SR, n_fft, hop, n_mels)(signals)
    assert a.shape == (2, n_mels, SR // hop + 1)
    exact = numpy_mel_power(signals.double().numpy(), n_fft, hop, n_mels)
    assert np.abs(a.double().numpy() - exact).max() <= 5e-7 * exact.max()
    a64 = MelSpectrogram(SR, n_fft, hop, n_mels)(signals.double())
    assert a64.dtype == torch.float64
    assert np.abs(a64.numpy() - exact).max() <= 1e-12 * exact.max()


@pytest.mark.parametrize("n_fft, hop, n_mels", [(2048, 512, 64), (1024, 256, 128)])
def test_torch_backend_matches_nnaudio(signals, n_fft, hop, n_mels):
    # n_fft 4096 is compared by benchmarks/frontend.py (nnAudio takes seconds to build it).
    a = MelSpectrogram(SR, n_fft, hop, n_mels)(signals)
    b = MelSpectrogram(SR, n_fft, hop, n_mels, backend="nnaudio")(signals)
    assert a.shape == b.shape
    # nnAudio's float32 dense-convolution STFT is itself ~1-4e-6 (of the peak) off the exact
    # value; ours (FFT) stays within ~3e-7 of a float64 computation (test above).
    assert (a - b).abs().max() <= 5e-6 * b.abs().max()


@pytest.mark.parametrize(
    "n_fft, hop, center", [(4096, 1024, True), (67, 33, True), (2053, 1026, False), (512, 100, False)]
)
def test_stft_equals_torch_stft(n_fft, hop, center):
    x = torch.randn(2, 9000, dtype=torch.float64)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    ours = stft(x, window, hop, center=center)
    ref = torch.stft(x, n_fft, hop, window=window, center=center, pad_mode="reflect", return_complex=True)
    assert torch.allclose(ours.transpose(1, 2), ref, atol=1e-10)
    short = torch.randn(1, 40, dtype=torch.float64)  # too short to reflect: zero padded
    assert stft(short, torch.hann_window(128, dtype=torch.float64), 32).shape == (1, 2, 65)


def test_stft_zero_padded_fft_matches_numpy():
    """n_fft above the window length pads each windowed frame with zeros (numpy's rfft(n=))."""
    x = torch.randn(2, 3000, dtype=torch.float64)
    window = torch.hann_window(67, dtype=torch.float64)
    ours = stft(x, window, 33, center=False, n_fft=128)
    frames = x.unfold(-1, 67, 33).numpy() * window.numpy()
    assert np.allclose(ours.numpy(), np.fft.rfft(frames, n=128, axis=-1), atol=1e-12)
    with pytest.raises(ValueError):
        stft(x, window, 33, n_fft=64)


@pytest.mark.parametrize("length, n", [(67, 67), (67, 128), (64, 64), (5, 9)])
def test_rfft_gradient_matches_finite_differences(length, n):
    """The cheaper backward of spectral.rfft (an inverse real FFT) against central differences
    of a real loss of the spectrum, odd and even sizes, padded and not."""
    g = torch.Generator().manual_seed(length + n)
    x = torch.randn(3, length, dtype=torch.float64, generator=g, requires_grad=True)
    weights = torch.randn(3, n // 2 + 1, dtype=torch.complex128, generator=g)

    def loss(v: torch.Tensor) -> torch.Tensor:
        spectrum = rfft(v, n)
        return (spectrum.real * weights.real + spectrum.imag * weights.imag).sum() + spectrum.abs().square().sum()

    (grad,) = torch.autograd.grad(loss(x), x)
    eps = 1e-6
    numeric = torch.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(length):
            step = torch.zeros_like(x)
            step[i, j] = eps
            numeric[i, j] = (loss(x.detach() + step) - loss(x.detach() - step)) / (2 * eps)
    assert torch.allclose(grad, numeric, atol=1e-6)


def test_channels_are_mixed_by_mean_and_power_one():
    mel = MelSpectrogram(SR, 1024, 256, 40, power=1.0)
    x = torch.randn(3, 2, 4000)
    assert torch.allclose(mel(x), mel(x.mean(dim=1)))
    stft = torch.stft(x.mean(dim=1), 1024, 256, window=torch.hann_window(1024), return_complex=True)
    assert torch.allclose(mel(x), mel.mel_basis.float() @ stft.abs(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        mel(torch.randn(4000))


def test_state_dict_holds_no_kernels():
    mel = MelSpectrogram(SR, 4096, 1024, 128)
    assert len(mel.state_dict()) == 0
    assert mel.mel_basis.shape == (128, 2049)  # still a buffer: follows .to(device)


@pytest.mark.parametrize("power", [2.0, 1.0, 0.5])
def test_finite_gradients_on_silence(power):
    mel = MelSpectrogram(SR, 2048, 512, 64, power=power)
    x = torch.zeros(2, 8000, requires_grad=True)
    log_mel(x, mel).sum().backward()
    assert torch.isfinite(x.grad).all()
    # half silent, half signal
    x = torch.cat([torch.zeros(1, 4000), 0.1 * torch.randn(1, 4000)], dim=1).requires_grad_()
    log_mel(x, mel).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("power", [2.0, 1.0])
def test_nnaudio_gives_nan_gradients_on_silence_where_ours_are_finite(power):
    """The reason for afxest's own front-end (afxest/spectral.py): nnAudio's MelSpectrogram,
    run here, takes sqrt(re^2 + im^2) and raises it to ``power``, so at a silent frame the
    gradient is inf x 0 = NaN; afxest's, with the same settings on the same input, is finite."""
    from nnAudio.features import MelSpectrogram as NnAudioMel

    theirs = NnAudioMel(sr=SR, n_fft=2048, hop_length=512, n_mels=64, power=power, trainable_mel=False,
                        trainable_STFT=False, verbose=False)
    ours = MelSpectrogram(SR, 2048, 512, 64, power=power)
    x = torch.cat([torch.zeros(1, 4000), 0.1 * torch.randn(1, 4000)], dim=1)  # half silent, half signal
    grads = []
    for mel in (theirs, ours):
        xi = x.clone().requires_grad_()
        torch.log1p(mel(xi)).sum().backward()
        grads.append(xi.grad)
    assert torch.isnan(grads[0][:, :2000]).all()  # frames that see only silence
    assert torch.isfinite(grads[1]).all() and grads[1].abs().sum() > 0
    # the spectrograms themselves agree (as test_torch_backend_matches_nnaudio checks in detail)
    with torch.no_grad():
        a, b = theirs(x), ours(x)
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * float(a.max()))


def test_log_mel_is_log1p():
    mel = MelSpectrogram(SR, 512, 128, 32)
    x = torch.randn(2, 3000)
    assert torch.allclose(log_mel(x, mel), torch.log(mel(x) + 1))


def test_import_pulls_neither_nnaudio_nor_scipy():
    code = (
        "import sys, afxest.spectral, afxest.losses; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('nnAudio', 'scipy')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mel_first_used_in_inference_mode_still_differentiates() -> None:
    """Scoring runs under inference_mode, refinement after it with gradients: the filterbank
    cached by the first call must not be an inference tensor."""
    mel = MelSpectrogram(SR, 1024, 256, 40)
    x = torch.randn(2, 4000)
    with torch.inference_mode():
        mel(x)
    y = x.clone().requires_grad_(True)
    mel(y).sum().backward()
    dense = torch.matmul(mel.mel_basis.float(), mel.spectrogram(x).transpose(1, 2))
    assert torch.allclose(mel(x), dense, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(y.grad).all()


def test_doctests() -> None:
    import doctest

    import afxest.spectral

    result = doctest.testmod(afxest.spectral, raise_on_error=False)
    assert result.failed == 0 and result.attempted > 0


def test_energy_gradient_is_the_finite_difference_one():
    """|X|^2 with its one-product backward: values as Re^2 + Im^2, gradient by finite differences
    (torch.autograd.gradcheck, float64, complex input: dL/dRe X + i dL/dIm X)."""
    from afxest.spectral import energy

    x = torch.randn(3, 5, dtype=torch.complex128, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.equal(energy(x), x.real.square() + x.imag.square())
    assert torch.autograd.gradcheck(energy, (x,))
    assert torch.autograd.gradgradcheck(energy, (x,))


@pytest.mark.parametrize("n_fft, hop, time", [(64, 16, 301), (64, 24, 301), (63, 21, 200), (32, 32, 100)])
def test_power_stft_is_torch_stft_squared_with_finite_difference_gradients(n_fft, hop, time):
    """|STFT|^2 by power_stft (one backward through the transform and the squared magnitude, the
    frames overlap-added by shifted sums where the hop divides the window): values against
    torch.stft's, gradients against central differences (gradcheck, float64), hops that divide
    the window and one that does not, odd and even sizes."""
    from afxest.spectral import power_stft

    g = torch.Generator().manual_seed(n_fft + hop)
    x = torch.randn(2, time, dtype=torch.float64, generator=g, requires_grad=True)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    reference = torch.stft(x.detach(), n_fft, hop, window=window, center=True, pad_mode="reflect",
                           return_complex=True).abs().square().transpose(1, 2)
    assert torch.allclose(power_stft(x, window, hop), reference, atol=1e-10)
    assert torch.autograd.gradcheck(lambda v: power_stft(v, window, hop), (x,))


def test_batches_without_gradient_are_computed_a_few_rows_at_a_time_with_the_same_values(signals, monkeypatch):
    """A batch larger than INFERENCE_CHUNK_SAMPLES, without gradient, is computed a chunk of rows
    at a time: each row still equals the float64 reference, and the chunked batch equals the
    whole batch computed with gradient (one pass)."""
    import afxest.spectral

    monkeypatch.setattr(afxest.spectral, "INFERENCE_CHUNK_SAMPLES", 2 * SR)  # 2 rows a chunk
    n_fft, hop, n_mels = 1024, 256, 64
    batch = torch.cat([signals, 0.5 * signals, signals.flip(-1), -signals, 0.1 * signals[:1]])  # 9 rows
    mel = MelSpectrogram(SR, n_fft, hop, n_mels)
    with torch.inference_mode():
        chunked = mel(batch)
    whole = mel(batch.clone().requires_grad_(True)).detach()
    exact = numpy_mel_power(batch.double().numpy(), n_fft, hop, n_mels)
    assert np.abs(chunked.double().numpy() - exact).max() <= 5e-7 * exact.max()
    assert torch.allclose(chunked, whole, rtol=0, atol=1e-6 * float(whole.abs().max()))
