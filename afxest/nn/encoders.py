"""Encoders: wet audio -> embedding (DAFx 2025, Sec. 4.3 and 5.3).

* :class:`MelConvNeXt`: log-mel spectrogram (64 bands, hop 512 = 23 ms at 22050 Hz) seen as a
  64-channel signal -> 1-D ConvNeXt blocks (Liu et al., CVPR 2022) with Swish, 3 x 64 then
  3 x 128 channels -> mean over time -> MLP with batch norm and Swish. About 295 k parameters
  with the posterior head, as in the paper.
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
        self.mlp = nn.Sequential(nn.Linear(channels, embed_dim), nn.BatchNorm1d(embed_dim), nn.SiLU())
        self.embed_dim = embed_dim

    def forward(self, wet: Tensor) -> Tensor:
        """Embeds wet audio (batch, channels, time) as (batch, embed_dim)."""
        features = torch.log(self.mel(wet) + 1e-5)
        h = self.blocks(self.input_norm(features))
        return self.mlp(h.mean(dim=-1))


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
    if task.encoder == "hann_dft_resmlp":
        return DFTMLP(task.clip_samples)
    raise ValueError(f"unknown encoder {task.encoder!r}")
