"""Encoders: wet audio -> embedding (DAFx 2025, Sec. 4.3 and 5.3).

* :class:`MelConvNeXt`: log-mel spectrogram (64 bands, hop 512 = 23 ms at 22050 Hz) seen as a
  64-channel signal -> 1-D ConvNeXt blocks (Liu et al., CVPR 2022) with Swish, 3 x 64 then
  3 x 128 channels -> mean over time -> MLP with batch norm and Swish. About 295 k parameters
  with the posterior head, as in the paper.
* :class:`DFTMLP`: magnitude DFT of the whole (stationary) sound -> MLP with Swish; about
  170 k parameters with its head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvNeXtBlock1d(nn.Module):
    """Depthwise conv (k = 7) -> LayerNorm -> pointwise expand -> Swish -> pointwise -> layer
    scale, with a residual connection (ConvNeXt, Liu et al. 2022, in 1-D)."""

    def __init__(self, channels: int, kernel_size: int = 7, expansion: int = 2) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.expand = nn.Linear(channels, expansion * channels)
        self.project = nn.Linear(expansion * channels, channels)
        self.scale = nn.Parameter(torch.full((channels,), 1e-2))

    def forward(self, x: Tensor) -> Tensor:  # (batch, channels, frames)
        y = self.depthwise(x).transpose(1, 2)
        y = self.project(nn.functional.silu(self.expand(self.norm(y))))
        return x + (self.scale * y).transpose(1, 2)


class MelConvNeXt(nn.Module):
    """Log-mel -> 1-D ConvNeXt (3 x 64, 3 x 128 channels) -> time mean -> MLP (BN, Swish)."""

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
        """wet (batch, channels, time) -> embedding (batch, embed_dim)."""
        features = torch.log(self.mel(wet) + 1e-5)
        h = self.blocks(self.input_norm(features))
        return self.mlp(h.mean(dim=-1))


class DFTMLP(nn.Module):
    """ln(1 + |DFT|) of the whole sound -> MLP with Swish (DAFx Sec. 5.3)."""

    def __init__(self, frames: int, hidden: int = 56, embed_dim: int = 64) -> None:
        super().__init__()
        self.frames = frames
        bins = frames // 2 + 1
        self.mlp = nn.Sequential(
            nn.Linear(bins, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, embed_dim),
            nn.SiLU(),
        )
        self.embed_dim = embed_dim

    def forward(self, wet: Tensor) -> Tensor:
        """wet (batch, channels, time) -> embedding (batch, embed_dim); mono mix, fixed length."""
        x = wet.mean(dim=1)
        x = nn.functional.pad(x, (0, max(0, self.frames - x.shape[-1])))[..., : self.frames]
        return self.mlp(torch.log1p(torch.fft.rfft(x).abs()))


def build_encoder(task) -> nn.Module:
    """The encoder a task names (``Task.encoder``)."""
    if task.encoder == "convnext":
        return MelConvNeXt(task.sample_rate)
    if task.encoder == "dft_mlp":
        return DFTMLP(task.clip_samples)
    raise ValueError(f"unknown encoder {task.encoder!r}")
