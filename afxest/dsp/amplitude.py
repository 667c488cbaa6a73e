"""Memoryless amplitude processors: gain, hard clipping, and a smooth clipper and a
straight-through clipper for training.

Each takes the processors' one signature (:mod:`afxest.processors`): audio x (batch, channels,
time), the sample rate (unused here: they are memoryless) and the catalogue's parameters by name,
each (batch,).
"""

from __future__ import annotations

import torch
from torch import Tensor


def db_to_amplitude(db: Tensor) -> Tensor:
    """The amplitude ratio 10^(db / 20) of a level ``db`` in dB.

    Example:
        >>> db_to_amplitude(torch.tensor([-6.0, 0.0, 20.0]))
        tensor([ 0.5012,  1.0000, 10.0000])
    """
    return torch.pow(10.0, db / 20)


def gain(x: Tensor, sample_rate: float, *, gain_db: Tensor) -> Tensor:
    """Applies a gain, y = x 10^(gain_db / 20), as pedalboard's ``Gain`` does."""
    return x * gain_amplitude(sample_rate, gain_db=gain_db)[:, None, None]


def gain_amplitude(sample_rate: float, *, gain_db: Tensor) -> Tensor:
    """The gain as the broadband amplitude 10^(gain_db / 20), (batch,): what a chain of linear
    time-invariant effects multiplies into its frequency response."""
    return db_to_amplitude(gain_db)


def hard_clip(x: Tensor, sample_rate: float, *, threshold_db: Tensor) -> Tensor:
    """Clips hard, y = clip(x, -t, t) with t = 10^(threshold_db / 20), as pedalboard's ``Clipping`` does.

    Exact, but its gradient to the threshold only flows through clipped samples and its
    gradient to x is zero where it clips: use :func:`soft_clip` to train through it.
    """
    t = db_to_amplitude(threshold_db)[:, None, None]
    return torch.minimum(torch.maximum(x, -t), t)


def soft_clip(x: Tensor, sample_rate: float, *, threshold_db: Tensor) -> Tensor:
    """Clips smoothly, for training: y = t tanh(x / t) with t = 10^(threshold_db / 20).

    Equals x to first order for |x| << t, saturates at +-t, and has non-zero gradients to x and
    to the threshold everywhere. An approximation of :func:`hard_clip`, not a match.
    """
    t = db_to_amplitude(threshold_db)[:, None, None]
    return t * torch.tanh(x / t)


def straight_through_clip(x: Tensor, sample_rate: float, *, threshold_db: Tensor) -> Tensor:
    """The hard clipper's output with the smooth clipper's gradient (a straight-through
    estimator, Bengio, Leonard & Courville, 2013): y = stop_gradient(h) + (s - stop_gradient(s)), h =
    :func:`hard_clip`, s = :func:`soft_clip`.

    The forward value is exactly pedalboard's (s - s is exactly 0), so training renders the
    clipper that inference renders; gradients to x and the threshold are those of t tanh(x / t).
    """
    s = soft_clip(x, sample_rate, threshold_db=threshold_db)
    return hard_clip(x, sample_rate, threshold_db=threshold_db).detach() + (s - s.detach())
