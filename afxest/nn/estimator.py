"""An estimator: a task's encoder and one of four heads (the same backbone for all).

* ``deterministic``: sigmoid output, trained by an audio loss through the differentiable
  processors (ICASSP 2024; DAFx 2025, Fig. 1);
* ``param``: the same network trained by mean squared error on normalised parameters (the
  "traditional" baseline);
* ``bins``: a categorical law over bins per parameter, trained by cross-entropy to the blurred
  truth and read out by a local soft-argmax (CREPE's head; a parameter loss, finer than ``param``);
* ``posterior``: a diagonal Gaussian -> T conditional deep sigmoidal flows -> sigmoid, trained by
  -beta H + E[audio loss] (DAFx 2025, Eqs. 7, 13).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor, nn

from afxest.choices import ESTIMATORS


@dataclass(frozen=True)
class EstimatorConfig:
    """Which head an :class:`Estimator` has (``kind``, one of :data:`afxest.choices.ESTIMATORS`),
    and its size: ``flows`` the number T of DSF layers, ``hidden`` the sigmoid units per layer."""

    kind: str = "posterior"
    flows: int = 1
    hidden: int = 8

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (as checkpoints store them)."""
        return asdict(self)


class Estimator(nn.Module):
    """Encoder + head for a task; ``sample(wet, n)`` gives n normalised parameter vectors.

    Arguments:
        task: The task (:class:`afxest.tasks.Task`): its encoder and its model's dimension d.
        config: The head (:class:`EstimatorConfig`).
    """

    def __init__(self, task, config: EstimatorConfig) -> None:
        from afxest.nn.encoders import build_encoder
        from afxest.nn.heads import BinnedHead, DeterministicHead, ParamHead, PosteriorHead

        super().__init__()
        if config.kind not in ESTIMATORS:
            raise ValueError(f"unknown estimator {config.kind!r}")
        self.config = config
        self.encoder = build_encoder(task)
        d = task.model.dim
        if config.kind == "posterior":
            self.head: nn.Module = PosteriorHead(self.encoder.embed_dim, d, flows=config.flows, hidden=config.hidden)
        elif config.kind == "param":
            self.head = ParamHead(self.encoder.embed_dim, d)
        elif config.kind == "bins":
            self.head = BinnedHead(self.encoder.embed_dim, d)
        else:
            self.head = DeterministicHead(self.encoder.embed_dim, d)

    def forward(self, wet: Tensor, n: int = 1, at: Tensor | None = None):
        """:meth:`sample`, or with ``at`` :meth:`log_prob` (so that data-parallel wrappers see
        either as a forward)."""
        return self.sample(wet, n) if at is None else self.log_prob(at, wet)

    def sample(self, wet: Tensor, n: int = 1):
        """Draws ``n`` normalised parameter vectors per item of wet (batch, channels, time): a
        :class:`afxest.nn.heads.PosteriorSample` with z (batch, n, d) in [0, 1]."""
        return self.head.sample(self.encoder(wet), n)

    def log_prob(self, z: Tensor, wet: Tensor) -> Tensor:
        """Evaluates log p(z | wet) (posterior only) for z (batch, n, d), shaped (batch, n)."""
        return self.head.log_prob(z, self.encoder(wet))
