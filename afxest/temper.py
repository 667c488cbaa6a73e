r"""The calibration of a posterior model (issue 22): fitted on its validation split, stored in
its checkpoint, applied where the model's spread is the answer.

Two corrections, neither of which retrains or changes a weight:

* **A temperature per parameter** on the flow's base Gaussian: :math:`z_0 \sim
  \mathcal{N}(\mu(h), \operatorname{diag}(T \sigma(h))^2)` (:attr:`afxest.nn.heads.PosteriorHead.temperature`).
  :math:`T_j > 1` widens the draws of parameter :math:`j` after the flows, :math:`T_j < 1`
  narrows them. Fitted (:func:`afxest.fit_calibration.fit`) by simulation-based calibration on validation items
  (:mod:`afxest.calibration`): first one T for all from a grid (the one whose mean 90 % coverage
  is nearest 90 %), then a few multiplicative steps per parameter,
  :math:`T_j \leftarrow T_j\, z_{0.95} / z_{(1 + c_j)/2}` with :math:`c_j` its 90 % coverage and
  :math:`z_q` the standard normal quantile (the widening a Gaussian error would need). Where the
  model's parameters are not what the wet determines (``eq``: two shelves for one), the
  coverage is that of the quantity the parameter feeds (:func:`afxest.calibration.quantities`:
  the summed gain, the shared cutoff and Q).
* **Recalibrated interval levels** (split-conformal, in the spirit of CANVI, Patel et al. 2024):
  per quantity the wet determines (the model's parameters; ``eq``'s summed gain, cutoff and Q)
  and credible level :math:`\alpha` (50 %, 90 %), the smallest central level of the
  tempered draws whose interval held at least :math:`\alpha` of the validation truths. The
  reported 90 % interval of quantity :math:`j` is the central ``levels[0.9][j]`` interval of the
  draws. This changes which interval is reported, not the draws.

Where it applies: every interval ``afxest estimate`` reports (and ``--plot``'s spread), and
``afxest evaluate``'s calibration draws and coverage. Not the candidates, blind or not: on
``master`` the widened draws cost the blind estimate's rank 1 3.2 dB SI-SDR (one draw 3.0 dB, the
best of 10 0.2 dB; 512 test items), and as the proposals of a search with a dry 8 dB
(docs/evaluate.md). The calibration says how unsure the model is; it does not pick the answer.

References:
    | Variational Inference with Coverage Guarantees in Simulation-Based Inference (CANVI;
    | Patel, McNamara, Loper, Regier & Tewari, ICML 2024) https://arxiv.org/abs/2305.14275
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from afxest import calibration as cal
from afxest.errors import UserError

__all__ = ["ModelCalibration", "apply", "central_interval", "interval_levels", "read", "tempered", "write"]

#: The grid of central levels searched for the recalibrated interval levels.
LEVEL_GRID = np.linspace(0.0, 1.0, 401)


@dataclass
class ModelCalibration:
    """A posterior model's calibration, as its checkpoint stores it (key ``calibration``).

    Attributes:
        temperature: T per model parameter (d,).
        levels: Per credible level (``"0.5"``, ``"0.9"``), the central level of the tempered
            draws that is reported as that interval, per quantity the wet determines (q,:
            :func:`afxest.calibration.quantities`; the model's parameters, q = d, but for
            ``eq``).
        fitted: How it was fitted: split, items, draws, seed, data, and the validation coverage.
    """

    temperature: list[float]
    levels: dict[str, list[float]]
    fitted: dict[str, Any] = field(default_factory=dict)

    def level(self, credible: float) -> np.ndarray:
        """The central levels of the draws reported as the ``credible`` interval, (q,)."""
        return np.asarray(self.levels[str(credible)], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """As stored in a checkpoint (plain lists, floats and strings)."""
        return asdict(self)


def read(state: dict[str, Any], d: int, q: int, path: Path) -> ModelCalibration | None:
    """The calibration stored in a loaded checkpoint, None without one; UserError when it does
    not fit a model of ``d`` parameters whose wet determines ``q`` quantities."""
    stored = state.get("calibration")
    if stored is None:
        return None
    try:
        found = ModelCalibration(list(map(float, stored["temperature"])),
                                 {str(k): list(map(float, v)) for k, v in stored["levels"].items()},
                                 dict(stored.get("fitted", {})))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{path}: unreadable calibration in the checkpoint (refit it: afxest models --calibrate)") from None
    sizes = {len(v) for v in found.levels.values()}
    wanted = {str(a) for a in cal.LEVELS}
    if len(found.temperature) != d or sizes != {q} or not wanted <= set(found.levels) or not all(t > 0 and np.isfinite(t) for t in found.temperature):
        raise UserError(f"{path}: its calibration does not fit its {d} parameters (refit it: afxest models --calibrate)")
    return found


def apply(head, temperature: Sequence[float] | None) -> None:
    """Sets a posterior head's :attr:`~afxest.nn.heads.PosteriorHead.temperature` (None: 1)."""
    import torch

    t = head.temperature
    with torch.no_grad():
        t.copy_(torch.ones_like(t) if temperature is None else torch.as_tensor(temperature, dtype=t.dtype))


@contextmanager
def tempered(head, temperature: Sequence[float] | None) -> Iterator[None]:
    """The head at ``temperature`` (None: 1) inside the block, at its own temperature again after."""
    import torch

    before = head.temperature.clone()
    apply(head, temperature)
    try:
        yield
    finally:
        with torch.no_grad():
            head.temperature.copy_(before)


def interval_levels(c: cal.Calibration) -> dict[str, list[float]]:
    """Per level of :data:`afxest.calibration.LEVELS` and quantity, the smallest central level of
    :data:`LEVEL_GRID` whose interval held at least that share of the truths (1 where none did)."""
    found = {}
    for level in cal.LEVELS:
        per = []
        for j in range(c.ranks.shape[1]):
            cover = cal.coverage_curve(c.ranks[:, j:j + 1], c.draws, LEVEL_GRID)[:, 0]
            ok = np.nonzero(cover >= level)[0]
            per.append(float(LEVEL_GRID[ok[0]]) if len(ok) else 1.0)
        found[str(level)] = per
    return found


def write(path: Path, calibration: ModelCalibration | None, out: Path | None = None) -> Path:
    """Writes a checkpoint with its ``calibration`` key set (None: removed) to ``out`` (default:
    ``path`` itself), atomically; every other key is kept as it is."""
    from afxest.checkpoints import load_checkpoint, save_checkpoint

    state = load_checkpoint(Path(path))
    if calibration is None:
        state.pop("calibration", None)
    else:
        state["calibration"] = calibration.to_dict()
    dest = Path(path) if out is None else Path(out)
    save_checkpoint(dest, state)
    return dest


def central_interval(z: np.ndarray, level: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """The central ``level`` interval of draws z (N, d), per parameter: the ``(1 - level) / 2``
    and ``(1 + level) / 2`` quantiles of each column (numpy's linear interpolation between order
    statistics), ``level`` one for all or (d,).

    Example:
        >>> central_interval(np.linspace(0.0, 1.0, 101)[:, None], 0.9)
        (array([0.05]), array([0.95]))
    """
    z = np.asarray(z, dtype=np.float64)
    level = np.broadcast_to(np.asarray(level, dtype=np.float64), (z.shape[1],))
    low = np.array([np.quantile(z[:, j], (1 - a) / 2) for j, a in enumerate(level)])
    high = np.array([np.quantile(z[:, j], (1 + a) / 2) for j, a in enumerate(level)])
    return low, high
