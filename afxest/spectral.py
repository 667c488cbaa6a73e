"""Spectral front-end: Slaney mel filterbank, mel spectrogram, log-mel (DAFx 2025, Eq. 16).

The DAFx 2025 and ICASSP 2024 papers compute their mel spectrograms with nnAudio
(Cheuk et al., IEEE Access 2020), whose ``MelSpectrogram`` is librosa's: a Hann-windowed STFT
(periodic window, ``center=True``, reflect padding), magnitude raised to ``power`` (2: power
spectrogram), times a Slaney mel filterbank with Slaney ("area") normalisation. This module
computes the same thing with an FFT (frames by ``unfold``, ``torch.fft.rfft``) and a filterbank
written here:

* equal to nnAudio's output to about 2e-6 of the spectrogram's peak (float32 rounding);
* no STFT kernels stored: nnAudio keeps its Fourier basis as 2 x (n_fft/2+1) x n_fft float32
  buffers (68 MB at n_fft = 4096) in every ``state_dict``; here the window and the mel basis
  are non-persistent buffers, rebuilt from the constructor's arguments;
* finite gradients on silent input: nnAudio takes ``sqrt(re^2 + im^2)`` and then raises it to
  ``power``; at a zero bin d sqrt(s)/ds = inf meets ds/dre = 0 and the product is NaN. Here the
  power spectrogram ``re^2 + im^2`` is used directly (power 2), or a power with a zero-safe
  derivative (other powers);
* several times faster (FFT instead of a dense convolution with the Fourier basis; see
  docs/losses.md for the figures of benchmarks/frontend.py).

``backend="nnaudio"`` runs nnAudio itself with the same settings (for comparisons and
benchmarks); it is imported lazily because ``nnAudio.features`` imports ``scipy.signal``
(about 0.9 s): importing this module imports neither nnAudio nor scipy.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
from torch import Tensor

Backend = Literal["torch", "nnaudio"]
INFERENCE_CHUNK_SAMPLES = 1 << 19  # MelSpectrogram without gradient on the CPU: rows per pass

# Slaney's Auditory Toolbox mel scale (as in librosa with htk=False): linear below 1 kHz at
# 200/3 Hz per mel, logarithmic above with 27 mels per factor 6.4.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: Tensor) -> Tensor:
    """The Slaney mel scale: hz / (200/3) below 1 kHz, 15 + ln(hz / 1000) / (ln 6.4 / 27) above.

    Example:
        >>> hz_to_mel(torch.tensor([500.0, 1000.0, 6400.0]))  # 27 mels per factor 6.4 above 1 kHz
        tensor([ 7.5000, 15.0000, 42.0000])
    """
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + torch.log(torch.clamp(hz, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: Tensor) -> Tensor:
    """The inverse of :func:`hz_to_mel`."""
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (torch.clamp(mel, min=_MIN_LOG_MEL) - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log, linear)


def mel_filterbank(
    sample_rate: float,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The Slaney mel filterbank with Slaney area normalisation, shaped (n_mels, n_fft // 2 + 1).

    Triangles between n_mels + 2 frequencies f_0..f_{n_mels+1} equally spaced on the Slaney mel
    scale from ``fmin`` to ``fmax`` (default: Nyquist); filter m rises from f_m to f_{m+1} and
    falls to f_{m+2}, and is scaled by 2 / (f_{m+2} - f_m) so each has unit area in Hz.
    This is librosa's ``filters.mel(norm="slaney", htk=False)`` and nnAudio's ``get_mel``
    default. Computed in float64, returned in ``dtype``. Bin k sits at k * sample_rate / n_fft
    (for odd n_fft, old librosa and nnAudio space the bins by linspace(0, sr/2) instead).
    """
    if fmax is None:
        fmax = sample_rate / 2
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}")
    f64 = torch.float64
    bins = torch.arange(n_fft // 2 + 1, dtype=f64) * (sample_rate / n_fft)
    mels = torch.linspace(
        float(hz_to_mel(torch.tensor(fmin, dtype=f64))), float(hz_to_mel(torch.tensor(fmax, dtype=f64))),
        n_mels + 2, dtype=f64,
    )
    edges = mel_to_hz(mels)  # (n_mels + 2,)
    widths = edges[1:] - edges[:-1]  # (n_mels + 1,)
    rising = (bins[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - bins[None, :]) / widths[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights = weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    if not torch.all((edges[:-2] == 0) | (weights.max(dim=1).values > 0)):
        warnings.warn(
            f"empty mel filters: {n_mels} mels are too many for n_fft={n_fft} at {sample_rate} Hz",
            stacklevel=2,
        )
    return weights.to(dtype)


def _mono(x: Tensor) -> Tensor:
    """(batch, time) or (batch, channels, time) -> (batch, time), channels mixed by their mean."""
    if x.dim() == 3:
        return x.mean(dim=1)
    if x.dim() != 2:
        raise ValueError(f"expected (batch, time) or (batch, channels, time), got shape {tuple(x.shape)}")
    return x


class _RealFFT(torch.autograd.Function):
    """``torch.fft.rfft`` along the last axis with a cheaper backward.

    For X_k = sum_j x_j e^{-2 pi i j k / n} (k = 0..n/2) and a real loss with gradient
    g_k = dL/dRe X_k + i dL/dIm X_k, dL/dx_j = Re sum_k g_k e^{2 pi i j k / n}, which is
    n * irfft(g') with the bins that have a mirror image (0 < k < n/2) halved. torch's own
    backward runs a complex-to-complex FFT instead, about twice the time on CPU.
    """

    @staticmethod
    def forward(ctx, x: Tensor, n: int) -> Tensor:  # type: ignore[override]
        ctx.n, ctx.length = n, x.shape[-1]
        return torch.fft.rfft(x, n=n, dim=-1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        n = ctx.n
        mirrored = grad * n  # the factor n before the transform: one pass fewer over the frames
        mirrored[..., 1 : (n + 1) // 2] *= 0.5
        return torch.fft.irfft(mirrored, n=n, dim=-1)[..., : ctx.length], None


def rfft(x: Tensor, n: int | None = None) -> Tensor:
    """``torch.fft.rfft(x, n, dim=-1)``, whose gradient costs an inverse real FFT (:class:`_RealFFT`)."""
    n = x.shape[-1] if n is None else n
    if not x.requires_grad:
        return torch.fft.rfft(x, n=n, dim=-1)
    return _RealFFT.apply(x, n)


def stft(x: Tensor, window: Tensor, hop_length: int, center: bool = True, n_fft: int | None = None) -> Tensor:
    """The complex STFT of x (batch, time) -> (batch, frames, n_fft // 2 + 1), n_fft = len(window)
    unless given: a larger ``n_fft`` zero pads each windowed frame, which samples the same
    spectrum on a finer grid (and lets a prime window length use a fast FFT size).

    The values of ``torch.stft(x, n_fft, hop_length, window=window, center=center,
    pad_mode="reflect", return_complex=True)`` (transposed). Centred: padded by n_fft // 2 on
    each side (reflected; zeros if x is too short to reflect), so frames = time // hop + 1 for
    even n_fft; otherwise frames = 1 + (time - n_fft) // hop. Framed by ``unfold`` and transformed by ``rfft``, which
    makes forward + backward about 2x faster on CPU than torch.stft, whose backward runs a full
    complex FFT.
    """
    length = window.shape[-1]
    if n_fft is not None and n_fft < length:
        raise ValueError(f"n_fft {n_fft} is shorter than the window ({length})")
    if center:
        x = _centred(x, length)
    return rfft(x.unfold(-1, length, hop_length) * window, n_fft)


def _centred(x: Tensor, length: int) -> Tensor:
    """x (batch, time) padded by length // 2 on each side for centred frames: reflected, or
    zeros where x is too short to reflect."""
    half = length // 2
    mode = "reflect" if x.shape[-1] > half else "constant"
    return torch.nn.functional.pad(x[:, None], (half, half), mode=mode)[:, 0]


class _Frames(torch.autograd.Function):
    """The frames of x (batch, time) -> (batch, frames, length) at ``hop`` (``x.unfold``), for a
    ``length`` that is a multiple of ``hop``. The backward overlap-adds the frames' gradients as
    length / hop shifted sums of hop-long chunks instead of unfold's scatter: 4 chunks at n_fft
    4096, hop 1024 (2 x 108 frames: about 2.5 ms -> 0.5 ms)."""

    @staticmethod
    def forward(ctx, x: Tensor, length: int, hop: int) -> Tensor:  # type: ignore[override]
        ctx.time, ctx.hop = x.shape[-1], hop
        return x.unfold(-1, length, hop)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        batch, frames, length = grad.shape
        hop, chunks = ctx.hop, length // ctx.hop
        parts = grad.reshape(batch, frames, chunks, hop)
        # chunk j of frame i covers the samples of chunk i + j of the signal
        out = grad.new_zeros(batch, frames + chunks - 1, hop)
        for j in range(chunks):
            out[:, j : j + frames] += parts[:, :, j]
        out = out.reshape(batch, -1)
        if out.shape[-1] < ctx.time:  # samples past the last frame
            out = torch.nn.functional.pad(out, (0, ctx.time - out.shape[-1]))
        return out, None, None


def frames(x: Tensor, length: int, hop: int) -> Tensor:
    """``x.unfold(-1, length, hop)`` of x (batch, time), with a cheap overlap-add backward
    (:class:`_Frames`) where ``hop`` divides ``length``."""
    if x.requires_grad and length % hop == 0:
        return _Frames.apply(x, length, hop)
    return x.unfold(-1, length, hop)


class _PowerRFFT(torch.autograd.Function):
    """P_k = |X_k|^2 of X = rfft(x, n) along the last axis, as one step: the backward of
    :class:`_Energy` (dL/dX_k = 2 g_k X_k, g = dL/dP) composed with :class:`_RealFFT`'s (n times
    the inverse real FFT, bins with a mirror image halved): dL/dx = irfft(w X)[:length] with
    w_k = n g_k at 0 < k < n/2 and 2 n g_k at DC and Nyquist. One real weighting of the bins
    instead of a complex product, a scaling and a halving (2 x 108 frames of 4096: the three
    took about 9 ms of a refinement step)."""

    @staticmethod
    def forward(ctx, x: Tensor, n: int) -> Tensor:  # type: ignore[override]
        spectrum = torch.fft.rfft(x, n=n, dim=-1)
        ctx.save_for_backward(spectrum)
        ctx.n, ctx.length = n, x.shape[-1]
        return _squared_magnitude(spectrum)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (spectrum,) = ctx.saved_tensors
        n = ctx.n
        scale = torch.full((spectrum.shape[-1],), float(n), dtype=grad.dtype, device=grad.device)
        scale[0] = 2.0 * n
        if n % 2 == 0:
            scale[-1] = 2.0 * n
        w = grad * scale
        weighted = torch.complex(spectrum.real * w, spectrum.imag * w)
        return torch.fft.irfft(weighted, n=n, dim=-1)[..., : ctx.length], None


def power_stft(x: Tensor, window: Tensor, hop_length: int) -> Tensor:
    """|STFT|^2 of x (batch, time) -> (batch, frames, n_fft // 2 + 1), n_fft = len(window):
    ``energy(stft(x, window, hop_length))`` (centred, reflect padding), with one backward
    through the transform and the squared magnitude (:class:`_PowerRFFT`) and the frames'
    overlap-add by shifted sums (:func:`frames`)."""
    length = window.shape[-1]
    windowed = frames(_centred(x, length), length, hop_length) * window
    if not windowed.requires_grad:
        return _squared_magnitude(torch.fft.rfft(windowed, n=length, dim=-1))
    return _PowerRFFT.apply(windowed, length)


class _Energy(torch.autograd.Function):
    """|X|^2 = Re(X)^2 + Im(X)^2 of a complex tensor, elementwise, with a one-product backward.

    For a real loss L, torch's gradient of a complex input is dL/dRe X + i dL/dIm X, which for
    |X|^2 is 2 X dL/d|X|^2. Autograd through ``X.real`` and ``X.imag`` instead builds it from
    two zero-filled complex tensors and two copies: about 3x the time on CPU (16 x 108 x 2049
    bins: 47 ms forward and backward against 18 ms), with the same values bit for bit.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return _squared_magnitude(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # real products on the (re, im) pairs: a complex times real product would first make the
        # gradient complex (a copy), 1.5-2x the time
        return torch.view_as_complex(torch.view_as_real(x) * (2 * grad).unsqueeze(-1))


def energy(x: Tensor) -> Tensor:
    """|X|^2 of a complex tensor, elementwise (real, same shape), with a cheap gradient (:class:`_Energy`).

    Example:
        >>> energy(torch.tensor([3 + 4j, 1j])).tolist()
        [25.0, 1.0]
    """
    return _Energy.apply(x) if x.requires_grad else _squared_magnitude(x)


def _squared_magnitude(x: Tensor) -> Tensor:
    """Re(x)^2 + Im(x)^2, on the (re, im) pairs of a complex tensor."""
    parts = torch.view_as_real(x)
    return parts[..., 0].square() + parts[..., 1].square()


def power_spectrogram(stft: Tensor, power: float) -> Tensor:
    """|X|^power of a complex STFT, with finite gradients where X = 0 (no sqrt of zero)."""
    squared = energy(stft)
    if power == 2.0:
        return squared
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    # d/ds s^(p/2) = p/2 s^(p/2-1) is infinite at s = 0 for p < 2: take 0 there instead
    positive = squared > 0
    safe = torch.where(positive, squared, torch.ones_like(squared))
    return torch.where(positive, safe.pow(power / 2), torch.zeros_like(squared))


class MelSpectrogram(torch.nn.Module):
    """Mel spectrogram (batch, n_mels, frames) of x (batch, time) or (batch, channels, time).

    Channels are mixed by their mean first. Hann window (periodic) of n_fft samples,
    ``center=True`` with reflect padding (frames = time // hop_length + 1), ``|STFT|^power``,
    then the Slaney mel filterbank: nnAudio's ``MelSpectrogram`` defaults, which the DAFx 2025
    paper used (Sec. 4.3: 64 mels, hop 23 ms; Sec. 4.5: n_fft 4096, hop 1024, 128 mels).
    ``backend="nnaudio"`` runs ``nnAudio.features.MelSpectrogram`` instead (same settings;
    NaN gradients on silence, 68 MB of kernels at n_fft 4096).

    Arguments:
        sample_rate: The sample rate of the input in Hz.
        n_fft: The window and FFT length.
        hop_length: The hop between frames.
        n_mels: The number of mel bands.
        power: The exponent of the magnitude (2: the power spectrogram).
        backend: ``torch`` (this module) or ``nnaudio``.
        fmin: The lowest frequency of the filterbank in Hz.
        fmax: The highest, in Hz (None: the Nyquist frequency).
    """

    def __init__(
        self,
        sample_rate: float,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        power: float = 2.0,
        backend: Backend = "torch",
        fmin: float = 0.0,
        fmax: float | None = None,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.power = power
        self.backend = backend
        if backend == "torch":
            # float64 buffers, cast to the input's dtype per call: exact for float64 input
            f64 = torch.float64
            self.register_buffer("window", torch.hann_window(n_fft, periodic=True, dtype=f64), persistent=False)
            self.register_buffer(
                "mel_basis", mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, f64), persistent=False
            )
            self.nnaudio = None
            self._sparse: dict = {}  # the filterbank as a sparse CSR tensor, per dtype and device
        elif backend == "nnaudio":
            import nnAudio.features  # lazy: pulls in scipy.signal

            self.nnaudio = nnAudio.features.MelSpectrogram(
                sr=sample_rate, n_fft=n_fft, n_mels=n_mels, hop_length=hop_length, window="hann",
                center=True, pad_mode="reflect", power=power, htk=False, fmin=fmin, fmax=fmax,
                norm=1, trainable_mel=False, trainable_STFT=False, verbose=False,
            )
        else:
            raise ValueError(f"backend must be 'torch' or 'nnaudio', got {backend!r}")

    def forward(self, x: Tensor) -> Tensor:
        """The mel spectrogram (batch, n_mels, frames) of x (batch, time) or (batch, channels, time).

        On the CPU with no gradient wanted (scoring, the network's input), a few rows at a time
        (at most :data:`INFERENCE_CHUNK_SAMPLES` samples): the frames, their spectra and powers
        of a whole batch are hundreds of MB, written and read once each, while a chunk's stay
        in cache; 64 rows of 5 s at 44.1 kHz, n_fft 4096: 0.71-0.80 s at once, 0.19-0.30 s by
        chunks of 1 to 3 rows (4: up to 0.49 s). The same values, row for row."""
        x = _mono(x)
        if self.nnaudio is not None:
            return self.nnaudio(x)
        rows = max(1, INFERENCE_CHUNK_SAMPLES // max(1, x.shape[-1]))
        if x.device.type != "cpu" or x.shape[0] <= rows or (x.requires_grad and torch.is_grad_enabled()):
            return self.from_spectrogram(self.spectrogram(x))
        return torch.cat([self.from_spectrogram(self.spectrogram(chunk)) for chunk in x.split(rows)])

    def spectrogram(self, x: Tensor) -> Tensor:
        """The spectrogram |STFT|^power of x (batch, time) or (batch, channels, time) -> (batch, frames, bins)
        (torch backend): the spectrogram :meth:`from_spectrogram` maps onto the mel bands."""
        x = _mono(x)
        window = self.window.to(x.dtype)
        if self.power == 2.0:
            return power_stft(x, window, self.hop_length)
        return power_spectrogram(stft(x, window, self.hop_length), self.power)

    def from_spectrogram(self, spectrogram: Tensor) -> Tensor:
        """The mel bands (batch, n_mels, frames) of a spectrogram (batch, frames, bins).

        The filterbank is sparse (each bin feeds at most two bands: 4 037 of 262 272 weights
        are non-zero at n_fft 4096, 128 mels). On the CPU the product is the spectrogram, as
        it comes (frames by bins, no transposed copy), times the transposed filterbank as a
        sparse CSR matrix: forward and backward about 1.5x as fast as the sparse-dense product
        with the filterbank on the left and 1.5x as fast as the dense product (16 x 108 frames
        of 2049 bins: 22 ms against 32 and 33). Other devices take the dense product."""
        batch, frames, bins = spectrogram.shape
        rows = spectrogram.reshape(batch * frames, bins)
        if spectrogram.device.type == "cpu":
            bands = rows @ self._sparse_basis_t(spectrogram.dtype, spectrogram.device)
        else:
            bands = rows @ self.mel_basis.to(spectrogram.dtype).T
        return bands.reshape(batch, frames, self.n_mels).transpose(1, 2)

    def _sparse_basis_t(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The transposed filterbank (bins, n_mels) as a sparse CSR tensor of ``dtype`` on ``device``
        (kept for the last pair asked)."""
        key = (dtype, device)
        if self._sparse.get("key") != key:
            # a normal tensor even when first built under inference_mode (scoring), so that a
            # later differentiable call (refinement, training) may save it for backward
            with warnings.catch_warnings(), torch.inference_mode(False):
                warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta": tested here
                basis = self.mel_basis.T.to(dtype=dtype, device=device).contiguous().to_sparse_csr()
            self._sparse = {"key": key, "basis": basis}
        return self._sparse["basis"]

    def extra_repr(self) -> str:
        """The settings, as ``print(module)`` shows them."""
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"n_mels={self.n_mels}, power={self.power}, backend={self.backend!r}"
        )


def log_mel(x: Tensor, mel: MelSpectrogram) -> Tensor:
    """ln(Mel{x} + 1): the log-scaled mel spectrogram of DAFx 2025, Eq. 16 (and Sec. 4.3's input)."""
    return torch.log1p(mel(x))
