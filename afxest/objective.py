"""The audio side of the training objective: a model's parameters rendered and compared.

The audio term of DAFx 2025, Eq. 7 (and of ICASSP 2024's audio loss) for a batch: normalised
parameters z -> the task's differentiable processors (on the dry signal, or the synth) -> the
task's loss against the wet. Training (:mod:`afxest.train`), estimation's refinement and
evaluation all use it; it imports none of them.

Two ways to compute the same term, chosen by :func:`audio_objective`:

* exact (validation, metrics, refinement): render y_hat in the time domain
  (:func:`afxest.engines.render_model`), then the loss of y_hat against y;
* fast (training steps): where the model's chain is linear and time-invariant (biquads and
  gains, no source: the ``eq`` task) and the loss is the log-mel of Eq. 16, the filtered
  signal's power spectrogram is taken as the dry's times |H|^2, with H the chain's frequency
  response on the loss's own FFT grid (:class:`LTILogMel`). No time-domain filtering, no STFT
  of y_hat and no gradient through an STFT; an approximation that holds while the chain's
  impulse response is short against the 4096-sample window (measured in docs/training.md).
  Elsewhere the fast variant of the task's loss itself (:func:`task_loss`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from afxest.engines import render_model
from afxest.processors import entry, power_response

AudioObjective = Callable[..., Tensor]  # (z, dry, wet, compressor=None) -> (batch,)


def task_loss(task, device: Any, fast: bool = False, sample_rate: int | None = None):
    """The task's audio loss as a callable (y_hat, y) -> per-item values (batch,), for audio at
    ``sample_rate`` (default: the task's).

    ``fast``: the variant training steps use where one exists: the revisited MR-STFT with its
    prime windows zero padded to fast FFT sizes (:data:`afxest.losses.FAST_FFT_SIZES`; within
    a few per cent of the exact loss, docs/losses.md). Validation and metrics use the exact one.
    """
    from afxest import losses

    if task.loss == "log_mel":
        return losses.LogMelLoss(task.sample_rate if sample_rate is None else sample_rate).to(device)
    if task.loss == "sot_mrstft":
        sot = losses.SpectralOTLoss(task.sample_rate, unit="bins").to(device)
        mrstft = losses.MRSTFTRevisitedLoss(fft_sizes=losses.FAST_FFT_SIZES if fast else None).to(device)
        return lambda y_hat, y: sot(y_hat, y) + mrstft(y_hat, y)
    raise ValueError(task.loss)


def is_lti(task) -> bool:
    """Whether the task's model is a chain of linear time-invariant effects only (biquads and
    gains, :attr:`afxest.processors.Entry.linear`; no source)."""
    return not task.has_source and all(entry(p.type).linear for p in task.model.processors)


class LTILogMel(torch.nn.Module):
    """DAFx 2025, Eq. 16 for an LTI model chain, with Mel{y_hat} = Mel(|STFT(x)|^2 |H|^2).

    Same STFT and mel bands as :class:`afxest.losses.LogMelLoss` (n_fft 4096, hop 1024, 128
    mels): the loss is mean (ln(1 + Mel{y_hat}) - ln(1 + Mel{y}))^2 over mels and frames, with
    the dry's power spectrogram (no gradient) weighted per bin by the chain's |H|^2
    (:func:`afxest.processors.power_response`, computed in float64), the only part that
    depends on z. ``task`` must have an LTI model chain (:func:`is_lti`) and the log-mel loss
    (ValueError otherwise).
    """

    def __init__(self, task) -> None:
        from afxest.losses import LogMelLoss

        super().__init__()
        if not is_lti(task) or task.loss != "log_mel":
            raise ValueError(f"{task.name}: LTILogMel needs an LTI chain and the log-mel loss")
        self.task = task
        self.mel = LogMelLoss(task.sample_rate).mel

    def forward(self, z: Tensor, dry: Tensor, wet: Tensor, compressor=None) -> Tensor:
        """The loss (batch,) of the model vectors z (batch, d) for the dry and the wet (batch, 1, T);
        ``compressor`` is accepted, and unused, for the :data:`AudioObjective` signature."""
        with torch.no_grad():
            dry_power = self.mel.spectrogram(dry)
            wet_mel = torch.log1p(self.mel(wet))
        response = power_response(self.task.model.split(z.double()), self.task.sample_rate, self.mel.n_fft)
        filtered = dry_power * response.to(z.dtype)[:, None, :]
        diff = torch.log1p(self.mel.from_spectrogram(filtered)) - wet_mel
        return diff.square().mean(dim=(1, 2))


def audio_objective(task, device: Any, fast: bool = False) -> AudioObjective:
    """The audio term as a callable (z, dry, wet, compressor=None) -> (batch,): exact, or
    ``fast`` for training steps (:class:`LTILogMel` where it applies, else the fast loss)."""
    if fast and is_lti(task) and task.loss == "log_mel":
        return LTILogMel(task).to(device)
    loss_fn = task_loss(task, device, fast=fast)

    def objective(z: Tensor, dry: Tensor | None, wet: Tensor, compressor=None) -> Tensor:
        return loss_fn(render_model(task, z, dry, compressor=compressor), wet)

    return objective
