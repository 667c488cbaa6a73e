"""Encoders: wet audio -> embedding (DAFx 2025, Sec. 4.3 and 5.3).

* :class:`MelConvNeXt`: log-mel spectrogram (64 bands, hop 512 = 23 ms at 22050 Hz) seen as a
  64-channel signal -> 1-D ConvNeXt blocks (Liu et al., CVPR 2022) with Swish, 3 x 64 then
  3 x 128 channels -> mean over time -> MLP with batch norm and Swish. About 295 k parameters
  with the posterior head, as in the paper. With ``echo`` (the mix task's ``convnext_echo``),
  the wet's strongest cepstral peaks in a delay range join the embedding (:class:`EchoFeatures`).
* :class:`DFTMLP`: magnitude DFT of the whole (stationary) sound, Hann-windowed and
  standardised per bin -> residual MLP with Swish; about 430 k parameters with its head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvNeXtBlock1d(nn.Module):
    """Depthwise conv (k = 7) -> LayerNorm -> pointwise expand -> Swish -> pointwise -> layer
    scale, with a residual connection (ConvNeXt, Liu et al. 2022, in 1-D); ``expansion`` is the
    width factor of the pointwise layers."""

    def __init__(self, channels: int, kernel_size: int = 7, expansion: int = 2) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.expand = nn.Linear(channels, expansion * channels)
        self.project = nn.Linear(expansion * channels, channels)
        self.scale = nn.Parameter(torch.full((channels,), 1e-2))

    def forward(self, x: Tensor) -> Tensor:
        """Applies the block to x (batch, channels, frames); the output has the same shape."""
        y = self.depthwise(x).transpose(1, 2)
        y = self.project(nn.functional.silu(self.expand(self.norm(y))))
        return x + (self.scale * y).transpose(1, 2)


class EchoFeatures(nn.Module):
    """The k strongest cepstral peaks of the wet in a delay range (:func:`afxest.echoes.cepstral_peaks`),
    each as 5 numbers: its lag as the normalised delay t (the exponential map of the range,
    ``ParamRange.to_normalised``, at the middle of the lag's sample), logit(t) (what the
    posterior's base Gaussian needs, before its sigmoid), and the cepstrum at 1, 2 and 3 times
    the lag (a delay's mix and feedback: r / 2, (2 f r - r^2) / 4); batch-normalised.

    Why: the log-mel frames (23 ms) cannot place an echo of 50-800 ms to the 5 % the issue asks,
    and a network trained by the likelihood with them alone did not learn the delay time at
    all in 600 steps, while the cepstrum's largest peak is the delay to a sample wherever the
    mix is 0.2 or more (measured: docs/training.md, "Measured: the mix task's objective and
    encoder").

    Arguments:
        sample_rate: The rate of the input in Hz.
        lo_seconds: The shortest delay.
        hi_seconds: The longest delay.
        k: The peaks kept.
    """

    def __init__(self, sample_rate: int, lo_seconds: float, hi_seconds: float, k: int = 3) -> None:
        super().__init__()
        self.sample_rate, self.lo, self.hi, self.k = sample_rate, lo_seconds, hi_seconds, k
        self.norm = nn.BatchNorm1d(5 * k)
        self.size = 5 * k

    def forward(self, c: Tensor) -> Tensor:
        """The features (batch, 5 k) of the wet's cepstrum c (batch, T) (:func:`wet_cepstrum`)."""
        import math

        from afxest.echoes import peaks_of_cepstrum

        with torch.no_grad():
            lags, values = peaks_of_cepstrum(c, self.sample_rate, self.lo * 0.95, self.hi * 1.05, self.k)
            t = (torch.log((lags + 0.5) / self.sample_rate) - math.log(self.lo)) / math.log(self.hi / self.lo)
            logit = torch.logit(t.clamp(1e-3, 1 - 1e-3))
            features = torch.cat([t.unsqueeze(-1), logit.unsqueeze(-1), values], dim=-1).flatten(1)
        return self.norm(features.float())


def wet_cepstrum(wet: Tensor) -> Tensor:
    """The real cepstrum (:func:`afxest.echoes.cepstrum`, float64, (batch, time)) of the mono mix
    of wet (batch, channels, time): what :class:`EchoFeatures` and :class:`ReverbFeatures` read."""
    from afxest.echoes import cepstrum

    with torch.no_grad():
        return cepstrum(wet.mean(dim=1).double())


class ReverbFeatures(nn.Module):
    """The reverb's trace in the wet's real cepstrum: its value at the Freeverb design's comb and
    all-pass lengths (:func:`afxest.dsp.reverb.tunings`) and its envelope over quefrency;
    batch-normalised.

    Why: pedalboard's ``Reverb`` adds to the dry D X a wet W R X, R the sum of 8 feedback combs
    (lengths N_i, feedback g from the room size, a one-pole low-pass of the damping in each loop)
    followed by 4 all-passes. ln |D + W R| = ln D + ln |1 + (W/D) R|, whose inverse transform is,
    where (W/D) |R| is small, about (W/D) r[n]: the wet's cepstrum is the dry's plus the reverb's
    impulse response scaled by its wet-to-dry ratio, g^k at each k N_i (smeared by the damping)
    and an envelope that decays at the reverb's rate. Music's own cepstrum is small at these
    quefrencies (25-37 ms and beyond). The log-mel frames show the tail's level only mixed with
    the music's own sustain: the mix model read blind with them alone (correlation of the
    posterior median with the truth on 128 val items) wet level 0.47, dry level 0.33, room size
    0.08, damping -0.04; a ridge regression on these features alone (1 536 train, 256 val
    items) reads 0.82, 0.31, 0.32 and 0.32 (docs/training.md, "Measured: the reverb's features").

    Features (:attr:`size` in all): for each comb length N and k = 1..4, the largest value within
    :data:`GUARD` samples of k N; for each all-pass length, the largest and the smallest there;
    then log10 of the root mean square in :data:`ENVELOPE_BANDS` log-spaced quefrency bands
    from :data:`ENVELOPE_SECONDS`. The lengths are the left channel's: a mono render uses them,
    and the mono mix of a stereo render (its combs fed L + R) holds the left channel's reverb at
    the level a mono render of that mix has, and the right channel's beside it (at lengths 23
    samples longer at 44.1 kHz, outside the guard); summed over both channels' lengths, the
    features read 0.72 / 0.30 / 0.27 / 0.19 instead.

    Arguments:
        sample_rate: The rate of the analysed wet in Hz.
    """

    GUARD = 2  # samples either side of a comb's or an all-pass's lag
    MULTIPLES = 4  # lags k N of each comb, k = 1..MULTIPLES
    ENVELOPE_BANDS = 24
    ENVELOPE_SECONDS = (0.01, 2.5)

    def __init__(self, sample_rate: int) -> None:
        import numpy as np

        from afxest.dsp.reverb import tunings

        super().__init__()
        combs, allpasses = tunings(sample_rate)
        k = np.arange(1, self.MULTIPLES + 1)
        self.peak_lags = np.outer(combs[0], k).ravel()  # (8 MULTIPLES,): comb by comb
        self.allpass_lags = allpasses[0]
        lo, hi = self.ENVELOPE_SECONDS
        self.edges = np.unique(np.round(np.geomspace(lo, hi, self.ENVELOPE_BANDS + 1) * sample_rate).astype(int))
        self.size = len(self.peak_lags) + 2 * len(self.allpass_lags) + len(self.edges) - 1
        self.norm = nn.BatchNorm1d(self.size)

    def forward(self, c: Tensor) -> Tensor:
        """The features (batch, :attr:`size`) of the wet's cepstrum c (batch, T) (:func:`wet_cepstrum`)."""
        return self.norm(self.values(c).float())

    def values(self, c: Tensor) -> Tensor:
        """The features before the batch norm, in c's dtype: comb peaks (8 x :data:`MULTIPLES`,
        comb by comb), all-pass highs (4), all-pass lows (4), envelope levels."""
        with torch.no_grad():
            g = self.GUARD
            padded = torch.nn.functional.pad(c, (g, g + 1))  # index n + g: lag n; 0 past the clip

            def around(lags) -> Tensor:  # (batch, lags, 2 g + 1): c within g of each lag
                index = torch.as_tensor(lags, device=c.device).clamp(max=c.shape[-1])[:, None] + torch.arange(2 * g + 1, device=c.device)
                return padded[:, index]

            peaks = around(self.peak_lags).amax(-1)
            allpass = around(self.allpass_lags)
            highs, lows = allpass.amax(-1), allpass.amin(-1)
            envelope = [c[:, a:b].square().mean(-1) if a < c.shape[-1] else c.new_zeros(c.shape[0])
                        for a, b in zip(self.edges[:-1], self.edges[1:])]
            level = 0.5 * torch.log10(torch.stack(envelope, -1) + 1e-20)
            return torch.cat([peaks, highs, lows, level], dim=-1)


class MelConvNeXt(nn.Module):
    """Log-mel -> 1-D ConvNeXt (3 x 64, 3 x 128 channels) -> time mean -> MLP (BN, Swish).

    Arguments:
        sample_rate: The sample rate of the input in Hz.
        n_mels: The number of mel bands (the input channels of the first block).
        n_fft: The STFT size.
        hop_length: The STFT hop.
        widths: The channels of each ConvNeXt block; where the width changes, a strided
            convolution (kernel 2, stride 2) halves the time resolution.
        embed_dim: The size of the embedding.
        backend: The mel spectrogram's backend (:class:`afxest.spectral.MelSpectrogram`).
        echo: A delay range (shortest, longest in seconds): the wet's :class:`EchoFeatures` in
            it enter the MLP beside the time mean and are appended to its output (the head
            reads a peak's lag linearly); None: neither.
        reverb: Whether the wet's :class:`ReverbFeatures` enter the MLP too (after the echo's).
    """

    def __init__(
        self,
        sample_rate: int,
        n_mels: int = 64,
        n_fft: int = 2048,
        hop_length: int = 512,
        widths: tuple[int, ...] = (64, 64, 64, 128, 128, 128),
        embed_dim: int = 128,
        backend: str = "torch",
        echo: tuple[float, float] | None = None,
        reverb: bool = False,
    ) -> None:
        from afxest.spectral import MelSpectrogram

        super().__init__()
        self.mel = MelSpectrogram(sample_rate, n_fft, hop_length, n_mels, backend=backend)
        self.input_norm = nn.BatchNorm1d(n_mels)
        layers: list[nn.Module] = []
        channels = n_mels
        for width in widths:
            if width != channels:  # channel change: 1x1 conv with stride 2 in time
                layers += [nn.Conv1d(channels, width, kernel_size=2, stride=2)]
                channels = width
            layers.append(ConvNeXtBlock1d(width))
        self.blocks = nn.Sequential(*layers)
        self.echo = None if echo is None else EchoFeatures(sample_rate, *echo)
        self.reverb = ReverbFeatures(sample_rate) if reverb else None
        extra = 0 if self.echo is None else self.echo.size
        heard = extra + (0 if self.reverb is None else self.reverb.size)
        self.mlp = nn.Sequential(nn.Linear(channels + heard, embed_dim), nn.BatchNorm1d(embed_dim), nn.SiLU())
        self.embed_dim = embed_dim + extra

    def forward(self, wet: Tensor) -> Tensor:
        """Embeds wet audio (batch, channels, time) as (batch, embed_dim)."""
        features = torch.log(self.mel(wet) + 1e-5)
        h = self.blocks(self.input_norm(features)).mean(dim=-1)
        if self.echo is None and self.reverb is None:
            return self.mlp(h)
        c = wet_cepstrum(wet)
        echo = None if self.echo is None else self.echo(c)
        reverb = None if self.reverb is None else self.reverb(c)
        embedding = self.mlp(torch.cat([f for f in (h, echo, reverb) if f is not None], dim=-1))
        return embedding if echo is None else torch.cat([embedding, echo], dim=-1)


class ResidualBlock(nn.Module):
    """h -> Swish(h + W2 Swish(W1 h)): a two-layer residual block of constant width (He et al.,
    CVPR 2016, in an MLP)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, h: Tensor) -> Tensor:
        """The block's output, shaped like ``h`` (batch, width)."""
        return nn.functional.silu(h + self.inner(h))


class DFTMLP(nn.Module):
    """ln(1 + |DFT(w x)|) of the whole sound, batch-normalised per bin -> residual MLP with
    Swish (DAFx 2025, Sec. 5.3: "the magnitude of the discrete Fourier transform ... fed into a
    MLP").

    Three choices the paper leaves open, measured on the fm task with the parameter loss
    (batch 128; docs/models/fm-deterministic.md):

    * a Hann window ``w`` (symmetric, over the whole clip): without it a partial that does not
      complete a whole number of periods in the clip leaks into every bin with sidelobes
      falling as 1 / distance, which buries the sidebands that reveal the frequency ratio
      (mean ratio error 0.55 with a plain DFT, 0.17 windowed, 6 000 steps);
    * a batch norm without affine weights on the 2 757 log-magnitudes (as the mel encoder's
      input norm): each bin enters the MLP with zero mean and unit variance (0.12);
    * the width: 128 units and two residual blocks (427 k weights with a point head) rather
      than the paper's ~170 k (two layers of 56): at the same budget, 40 000 steps, the median
      ratio error falls from 0.0024 to 0.0015 (normalised) and the SI-SDR of the estimates
      rises from 18.1 to 21.2 dB; the ratio's precision is what limits SI-SDR on this task.

    Arguments:
        frames: The clip length in samples (longer input is cut, shorter zero padded).
        hidden: The width of the MLP.
        blocks: The number of residual blocks after the first layer.
        embed_dim: The size of the embedding given to the head.
    """

    def __init__(self, frames: int, hidden: int = 128, blocks: int = 2, embed_dim: int = 64) -> None:
        super().__init__()
        self.frames = frames
        bins = frames // 2 + 1
        self.register_buffer("window", torch.hann_window(frames, periodic=False), persistent=False)
        self.input_norm = nn.BatchNorm1d(bins, affine=False)
        self.mlp = nn.Sequential(
            nn.Linear(bins, hidden),
            nn.SiLU(),
            *(ResidualBlock(hidden) for _ in range(blocks)),
            nn.Linear(hidden, embed_dim),
            nn.SiLU(),
        )
        self.embed_dim = embed_dim

    def forward(self, wet: Tensor) -> Tensor:
        """Embeds the mono mix of wet audio (batch, channels, time), cut or zero padded to
        ``frames``, as (batch, embed_dim)."""
        x = wet.mean(dim=1)
        x = nn.functional.pad(x, (0, max(0, self.frames - x.shape[-1])))[..., : self.frames]
        magnitude = torch.fft.rfft(x * self.window.to(x.dtype)).abs()
        return self.mlp(self.input_norm(torch.log1p(magnitude)))


def build_encoder(task) -> nn.Module:
    """The encoder a task names (``Task.encoder``); ValueError for an unknown name."""
    if task.encoder == "convnext":
        return MelConvNeXt(task.sample_rate)
    if task.encoder in ("convnext_echo", "convnext_echo_reverb"):
        delay = task.model.processors[task.model.position("delay")]
        (times,) = [r for r in delay.ranges if r.name == "delay_seconds"]
        return MelConvNeXt(task.sample_rate, echo=(times.lo, times.hi), reverb=task.encoder == "convnext_echo_reverb")
    if task.encoder == "hann_dft_resmlp":
        return DFTMLP(task.clip_samples)
    raise ValueError(f"unknown encoder {task.encoder!r}")
