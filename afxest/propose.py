"""The model side of ``afxest estimate``: candidates proposed by the estimator from the wet.

The encoder embeds each usable window of the wet (:meth:`Proposer.encode`); candidates are drawn
from the equal mixture of the windows' posteriors (:meth:`Proposer.propose`), and scored by the
mean over windows of ln p(z | window), the product-of-experts posterior's log-density up to a
constant (:meth:`Proposer.log_prob`; the estimate module's docstring says why). The head is
tiny: sampling and log-densities run on a float64 copy of it on the CPU, so values near the
edges of [0, 1] are not rounded onto them, and results do not depend on the device.

A calibrated model (:mod:`afxest.temper`) has two such copies: the untempered one proposes
the candidates (:meth:`Proposer.draw`) and scores them (:meth:`Proposer.log_prob`), the
calibrated one gives the draws behind the reported intervals (:meth:`Proposer.spread`): widened
candidates cost the blind answer and the search dearly (docs/evaluate.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ENCODE_BATCH = 16  # windows per encoder call


@dataclass
class Draws:
    """What :meth:`Proposer.draw` proposes: the embeddings ``h`` (U, C) float64 of the U usable
    windows, the candidates ``z`` (M, d) float64, their pooled log-density (M,) (None without a
    posterior) and the mean entropy estimate (nats) of the proposing windows' posteriors."""

    h: Any
    z: np.ndarray
    log_prob: np.ndarray | None
    entropy: float | None


class Proposer:
    """An estimator network (``model.estimator``: encoder and head) in float32 on ``device``,
    and a float64 CPU copy of its head. ``posterior``: the head is a posterior (it has
    log-densities); otherwise it gives one point estimate per window."""

    def __init__(self, estimator, posterior: bool, device: Any) -> None:
        import copy

        import torch

        from afxest.temper import apply

        self.device = device
        self.net = estimator.to(device).eval()
        self.head = copy.deepcopy(self.net.head).to("cpu", torch.float64).eval()  # as loaded: calibrated, if it is
        self.raw = self.head  # untempered: the candidates
        if posterior and not bool((self.head.temperature == 1).all()):
            self.raw = copy.deepcopy(self.head)
            apply(self.raw, None)
        self.posterior = posterior

    @property
    def calibrated(self) -> bool:
        """Whether the model has a calibration (its calibrated head differs from the raw one)."""
        return self.raw is not self.head

    def draw(self, wet: np.ndarray, windows: Sequence[tuple[int, int]], use: Sequence[int], n: int, seed: int) -> Draws:
        """Draws candidates for the wet from the posteriors of its windows.

        Arguments:
            wet: The wet, (T,) at the task's rate.
            windows: Every analysis window (start, stop) (:func:`afxest.scoring.windows_of`).
            use: The usable windows, which propose (:func:`afxest.scoring.usable_windows`).
            n: The candidates to draw (a point-estimating model gives one per proposing window).
            seed: The seed of the draws.

        Returns:
            The :class:`Draws`: the embeddings, the candidates z (M, d) and their log-density
            pooled over the windows (with one window, the sampler's own: exact, no inversion),
            and the mean entropy.
        """
        import torch

        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            h = self.encode(wet, windows, use)
            z, own_log_prob, entropy = self.propose(h, n, generator)
            log_prob = own_log_prob if len(use) == 1 or own_log_prob is None else self.log_prob(z, h)
        return Draws(h, z, log_prob, entropy)

    def spread(self, h, n: int, seed: int) -> np.ndarray:
        """``n`` draws (n, d) float64 of the calibrated posterior (the mixture of the windows'
        posteriors, as :meth:`propose`) for the embeddings ``h`` of :meth:`draw`: what the
        reported intervals are read from (posterior models only)."""
        import torch

        with torch.inference_mode():
            return self.propose(h, n, torch.Generator().manual_seed(seed), True)[0]

    def encode(self, wet: np.ndarray, windows: Sequence[tuple[int, int]], use: Sequence[int]):
        """Embeds the usable windows: (len(use), C) in float64 (from the float32 encoder)."""
        import torch

        out = []
        groups: dict[int, list[int]] = {}
        for i in use:
            groups.setdefault(windows[i][1] - windows[i][0], []).append(i)
        order = []
        for ids in groups.values():
            for s in range(0, len(ids), ENCODE_BATCH):
                chunk = ids[s : s + ENCODE_BATCH]
                x = np.stack([wet[windows[i][0] : windows[i][1]] for i in chunk])[:, None]
                out.append(self.net.encoder(torch.from_numpy(x).to(self.device)).double().cpu())
                order.extend(chunk)
        h = torch.cat(out)
        position = {w: k for k, w in enumerate(order)}
        return h[[position[i] for i in use]]

    def propose(self, h, n: int, generator, calibrated: bool = False) -> tuple[np.ndarray, np.ndarray | None, float | None]:
        """Proposes candidates z (M, d) in float64 from the mixture of the windows' posteriors (the
        untempered ones, or the calibrated), the log-density of each under the posterior of the
        window that drew it (None without a posterior), and the mean entropy estimate (nats) of
        the proposing windows' posteriors.

        Candidate i comes from usable window (i U) // N; a point-estimating model gives one
        candidate per proposing window (windows that agree give the same one several times:
        :func:`afxest.estimate.medoid` counts each)."""
        u = h.shape[0]
        owners = [(i * u) // n for i in range(n)]
        zs, own, entropies = [], [], []
        head = self.head if calibrated else self.raw
        for w in sorted(set(owners)):
            k = owners.count(w) if self.posterior else 1
            s = head.sample(h[w : w + 1], k, generator=generator)
            zs.extend(s.z[0].cpu().numpy().astype(np.float64))
            if s.log_prob is not None:
                own.extend(s.log_prob[0].cpu().numpy().astype(np.float64))
            if s.entropy is not None:
                entropies.append(float(s.entropy[0]))
        entropy = sum(entropies) / len(entropies) if entropies else None
        return np.stack(zs), (np.array(own) if own else None), entropy

    def log_prob(self, z: np.ndarray, h) -> np.ndarray:
        """The mean over windows of ln p(z | window), (M,) float64 (posterior models only), under
        the untempered posteriors (whose draws the candidates are)."""
        import torch

        zt = torch.from_numpy(z)
        total = torch.zeros(z.shape[0], dtype=torch.float64)
        chunk = max(1, 4096 // max(1, z.shape[0]))
        for s in range(0, h.shape[0], chunk):
            hs = h[s : s + chunk]
            total += self.raw.log_prob(zt.expand(hs.shape[0], *zt.shape), hs).sum(dim=0)
        return (total / h.shape[0]).numpy().astype(np.float64)
