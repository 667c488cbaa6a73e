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
ECHO_PEAKS = 3  # the wet's strongest cepstral peaks a drawn delay time may be snapped to
ECHO_TOLERANCE = 0.5  # a draw within this relative distance of a peak takes the peak's time


@dataclass
class Draws:
    """What :meth:`Proposer.draw` proposes: the embeddings ``h`` (U, C) float64 of the U usable
    windows, the candidates ``z`` (M, d) float64, their pooled log-density (M,) (None without a
    posterior), the mean entropy estimate (nats) of the proposing windows' posteriors, and the
    wet's echo times the delay times were snapped to (:func:`echo_times`; None without a delay)."""

    h: Any
    z: np.ndarray
    log_prob: np.ndarray | None
    entropy: float | None
    echoes: np.ndarray | None = None


class Proposer:
    """An estimator network (``model.estimator``: encoder and head) in float32 on ``device``,
    and a float64 CPU copy of its head. ``posterior``: the head is a posterior (it has
    log-densities); otherwise it gives one point estimate per window. ``task``: the model's
    task; a chain with a delay has its drawn delay times snapped to the wet's echoes
    (:func:`snap_to_echoes`)."""

    def __init__(self, estimator, posterior: bool, device: Any, task=None) -> None:
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
        self.task = task

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
            The :class:`Draws`: the embeddings, the candidates z (M, d) (delay times snapped to
            the wet's echoes, :attr:`Draws.echoes`) and their log-density pooled over the
            windows (with one window and nothing snapped, the sampler's own: exact, no
            inversion), and the mean entropy.
        """
        import torch

        generator = torch.Generator().manual_seed(seed)
        echoes = self.echoes(wet, windows, use)
        with torch.inference_mode():
            h = self.encode(wet, windows, use)
            drawn, own_log_prob, entropy = self.propose(h, n, generator)
            z = snap_to_echoes(self.task.model, drawn, echoes, self.task.sample_rate) if echoes is not None else drawn
            exact = len(use) == 1 and np.array_equal(z, drawn)
            log_prob = own_log_prob if exact or own_log_prob is None else self.log_prob(z, h)
        return Draws(h, z, log_prob, entropy, echoes)

    def echoes(self, wet: np.ndarray, windows: Sequence[tuple[int, int]], use: Sequence[int]) -> np.ndarray | None:
        """The echo times of the wet's usable windows (:func:`echo_times`), None without a task
        or a delay in its chain."""
        if self.task is None or self.task.model.column("delay", "delay_seconds") is None:
            return None  # nothing to read: no cepstrum
        length = min(windows[i][1] - windows[i][0] for i in use)  # the last window may be longer
        segments = np.stack([wet[windows[i][0] : windows[i][0] + length] for i in use])
        return echo_times(self.task.model, segments, self.task.sample_rate)

    def spread(self, h, n: int, seed: int, echoes: np.ndarray | None = None) -> np.ndarray:
        """``n`` draws (n, d) float64 of the calibrated posterior (the mixture of the windows'
        posteriors, as :meth:`propose`) for the embeddings ``h`` of :meth:`draw`, delay times
        snapped to its ``echoes`` within their sample (:func:`snap_to_echoes`): what the
        reported intervals are read from (posterior models only)."""
        import torch

        with torch.inference_mode():
            z = self.propose(h, n, torch.Generator().manual_seed(seed), True)[0]
        if echoes is None:
            return z
        return snap_to_echoes(self.task.model, z, echoes, self.task.sample_rate, np.random.default_rng(seed))

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


def echo_times(space, wet: np.ndarray, sample_rate: float) -> np.ndarray | None:
    """The times (s) of the :data:`ECHO_PEAKS` largest peaks of the mean cepstrum of the wet's
    windows ``wet`` (U, T) (:func:`afxest.echoes.cepstrum`) in the range of the chain's delay
    time (widened by 5 %, as the encoder reads them), largest first; None for a chain without
    one delay. Each lag is read at the middle of its sample, (lag + 1/2) / rate."""
    import torch

    from afxest.echoes import cepstrum, quefrency_peaks

    column = space.column("delay", "delay_seconds")
    if column is None:
        return None
    r = space.ranges[column]
    c = cepstrum(torch.from_numpy(np.asarray(wet, np.float64))).mean(dim=0)
    lags = quefrency_peaks(c, sample_rate, r.lo * 0.95, r.hi * 1.05, ECHO_PEAKS)
    return (lags.numpy() + 0.5) / sample_rate


def snap_to_echoes(space, z: np.ndarray, times: np.ndarray | None, sample_rate: float,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """The candidates z (M, d) with each delay time within :data:`ECHO_TOLERANCE` (relative) of
    one of the wet's echo ``times`` (:func:`echo_times`, at ``sample_rate``) set to the nearest
    of them; the others, and every candidate of a chain without a delay (``times`` None),
    unchanged. With ``rng``, a snapped time is drawn uniformly within its peak's sample (the
    cepstrum places an echo to a sample, not closer): the draws that intervals are read from.

    Why (issue 24): the posterior picks which echo (the network reads the cepstral peaks' heights
    beside the log-mel frames) but not its sample: its median delay time was within 5 % of the
    truth on 31 % of the validation items of delay mix >= 0.2, the wet's largest cepstral peak
    on 99 % (docs/effects.md, "Delay"). A draw far from every peak (an echo too faint to show,
    the music's own repetition) keeps the time the posterior drew."""
    if times is None or len(times) == 0:
        return z
    column = space.column("delay", "delay_seconds")
    r = space.ranges[column]
    drawn = r.to_physical(z[:, column])
    distance = np.abs(drawn[:, None] / times[None, :] - 1)
    nearest = distance.argmin(axis=1)
    close = distance[np.arange(len(z)), nearest] <= ECHO_TOLERANCE
    snapped = times[nearest[close]]
    if rng is not None:
        snapped = snapped + (rng.random(len(snapped)) - 0.5) / sample_rate
    out = np.array(z, np.float64, copy=True)
    out[close, column] = np.clip(r.to_normalised(snapped), 0.0, 1.0)
    return out
