r"""Calibration of a posterior: does the spread of its draws say how unsure it really is?

For test items whose truth :math:`\theta^\star` is drawn from the task's own prior (uniform in
normalised space) and whose wet is rendered from it, the posterior gives :math:`N` draws per
item. Simulation-based calibration (SBC; Talts et al., 2018) looks, per parameter, at the
truth's *rank* among the draws,

.. math:: r = \#\{k : \theta_k < \theta^\star\} \in \{0, \dots, N\},

which is uniform on :math:`\{0, \dots, N\}` whenever the draws come from the exact posterior
(the truth and the draws are then exchangeable). Everything here is a function of the ranks,
so it does not depend on the units (Hz or normalised) of a parameter:

* the truth lies in the *central* :math:`\alpha` interval of the draws when
  :math:`N(1-\alpha)/2 \le r \le N(1+\alpha)/2`; a calibrated posterior does so with
  probability :func:`nominal_coverage` (:math:`51/101` for :math:`\alpha = 0.5` and
  :math:`91/101` for :math:`\alpha = 0.9` with :math:`N = 100`); less is over-confident (the
  draws too narrow), more under-confident (too wide);
* the truth lies outside all draws when :math:`r \in \{0, N\}`: :math:`2/(N+1)` when calibrated;
* the rank histogram (Talts et al., Sec. 4) is flat when calibrated, U-shaped when the draws
  are too narrow, a hump when too wide, and lopsided when they are biased;
* the expected-coverage curve (Hermans et al., 2022, Sec. 3) is the coverage against the
  credible level :math:`\alpha` over :math:`[0, 1]`: on the diagonal when calibrated, below it
  when over-confident ("unfaithful"), above it when conservative. Hermans et al. use the
  highest-density regions of the joint posterior; here the regions are each parameter's
  central intervals, the ones :mod:`afxest.estimate` would report.

Where the model estimates more processors than made the truth (``eq``: one true high shelf,
two estimated), single model parameters have no truth to be ranked against. What the wet does
determine is calibrated instead (:func:`identifiable`): the summed gain of the copies, and
their cutoff and Q, each the |gain|-weighted mean of the copies' (geometric for an
exponential range), which is the truth's own where the copies agree (the canonical solution
of :meth:`afxest.tasks.Task.truth_to_model`). Cutoff and Q of a shelf with no gain are not
determined by any audio; such truths rank anywhere.

References:
    | Validating Bayesian Inference Algorithms with Simulation-Based Calibration
    | (Talts, Betancourt, Simpson, Vehtari & Gelman, 2018) https://arxiv.org/abs/1804.06788

    | A Trust Crisis In Simulation-Based Inference? Your Posterior Approximations Can Be
    | Unfaithful (Hermans, Delaunoy, Rozet, Wehenkel, Begy & Louppe, TMLR 2022)
    | https://arxiv.org/abs/2110.06581
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = [
    "BANDS",
    "CURVE_LEVELS",
    "Calibration",
    "LEVELS",
    "OUTSIDE_MAX",
    "calibrate",
    "central_coverage",
    "coverage_curve",
    "histogram_band",
    "identifiable",
    "nominal_coverage",
    "outside_share",
    "rank_histogram",
    "ranks",
]

#: The credible levels of the coverage table (central intervals).
LEVELS = (0.5, 0.9)
#: The credible levels of the expected-coverage curve.
CURVE_LEVELS = tuple(np.round(np.linspace(0.0, 1.0, 21), 10))
#: The coverage a posterior should reach on the test split, per level (issue 22's targets for
#: 512 items or more): a calibrated one lands inside with near certainty at that size.
BANDS = {0.5: (0.40, 0.60), 0.9: (0.85, 0.95)}
#: The largest share of truths outside all draws the targets allow (calibrated: 2 / (N + 1)).
OUTSIDE_MAX = 0.06
#: The bins of the rank histogram (at most N + 1; 5 or 6 ranks each for N = 100).
HISTOGRAM_BINS = 20


def ranks(draws: np.ndarray, truth: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    r"""The rank of each truth among its item's draws, per parameter (Talts et al., 2018, Alg. 1).

    The rank is the number of draws below the truth; draws equal to it (a float32 sample at a
    range's edge, a constant posterior) count below for a uniformly drawn share, as Talts et
    al. break ties, so that a calibrated posterior's ranks stay uniform.

    Arguments:
        draws: The posterior draws, (items, N, d).
        truth: The truths, (items, d), in the same units as the draws.
        rng: The generator of the tie breaks (default: ``default_rng(0)``).

    Returns:
        The ranks in :math:`\{0, \dots, N\}`, (items, d) int64.

    Example:
        >>> ranks(np.array([[[0.1], [0.5], [0.9]]]), np.array([[0.6]]))
        array([[2]])
    """
    draws, truth = np.asarray(draws, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if draws.ndim != 3 or truth.shape != (draws.shape[0], draws.shape[2]):
        raise ValueError(f"draws (items, N, d) and truth (items, d) expected, got {draws.shape} and {truth.shape}")
    below = (draws < truth[:, None, :]).sum(axis=1)
    equal = (draws == truth[:, None, :]).sum(axis=1)
    if equal.any():
        rng = np.random.default_rng(0) if rng is None else rng
        below = below + _uniform_integers(rng, equal)
    return below.astype(np.int64)


def _uniform_integers(rng: np.random.Generator, upper: np.ndarray) -> np.ndarray:
    """An integer uniform on {0, ..., upper} for each element of ``upper``."""
    return np.floor(rng.random(upper.shape) * (upper + 1)).astype(np.int64)


def _inside(r: np.ndarray, n_draws: int, level: float) -> np.ndarray:
    """Whether rank ``r`` of ``n_draws`` lies in the central ``level`` interval (module docstring)."""
    half = level / 2
    # a small allowance so that the bounds N(1 -+ level)/2 count inside despite rounding
    return np.abs(np.asarray(r, dtype=np.float64) / n_draws - 0.5) <= half + 1e-12


def nominal_coverage(n_draws: int, level: float) -> float:
    r"""The coverage of the central ``level`` interval of ``n_draws`` draws for a calibrated
    posterior: the share of the :math:`N + 1` equally likely ranks inside it.

    Example:
        >>> nominal_coverage(100, 0.9), nominal_coverage(100, 0.5)
        (0.900990099009901, 0.504950495049505)
    """
    return float(_inside(np.arange(n_draws + 1), n_draws, level).mean())


def central_coverage(r: np.ndarray, n_draws: int, level: float) -> np.ndarray:
    """The share of items (axis 0) whose truth lies in the central ``level`` interval of the
    draws, per parameter: ranks ``r`` (items, d) of ``n_draws`` draws -> (d,)."""
    return _inside(r, n_draws, level).mean(axis=0)


def outside_share(r: np.ndarray, n_draws: int) -> np.ndarray:
    """The share of items whose truth lies outside all draws (rank 0 or N), per parameter:
    (items, d) -> (d,). A calibrated posterior has 2 / (N + 1)."""
    r = np.asarray(r)
    return ((r == 0) | (r == n_draws)).mean(axis=0)


def _bin_of(n_draws: int, bins: int) -> np.ndarray:
    """The histogram bin of each rank 0..N: ``floor(r * bins / (N + 1))``."""
    return (np.arange(n_draws + 1) * bins) // (n_draws + 1)


def rank_histogram(r: np.ndarray, n_draws: int, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """The SBC rank histogram: the counts of ranks (items, d) in ``bins`` bins of nearly equal
    width (rank r goes to bin ``floor(r * bins / (N + 1))``), per parameter: (bins, d).

    Example:
        >>> rank_histogram(np.array([[0], [1], [2], [3]]), 3, bins=2)[:, 0]
        array([2, 2])
    """
    if not 1 <= bins <= n_draws + 1:
        raise ValueError(f"bins must be in [1, N + 1 = {n_draws + 1}], got {bins}")
    r = np.asarray(r)
    which = _bin_of(n_draws, bins)[r]  # (items, d)
    return np.stack([np.bincount(which[:, j], minlength=bins) for j in range(r.shape[1])], axis=1)


def histogram_band(items: int, n_draws: int, bins: int = HISTOGRAM_BINS, mass: float = 0.99) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a calibrated posterior's rank histogram holds, per bin: the expected count and the
    central ``mass`` interval of the binomial count (Talts et al., Fig. 1's grey band).

    Returns:
        The expected counts, the band's lower and upper ends, each (bins,).
    """
    width = np.bincount(_bin_of(n_draws, bins), minlength=bins)
    p = width / (n_draws + 1)
    lower, upper = zip(*(_binomial_interval(items, float(q), mass) for q in p))
    return items * p, np.array(lower, dtype=np.float64), np.array(upper, dtype=np.float64)


def _binomial_interval(n: int, p: float, mass: float) -> tuple[int, int]:
    """The ((1 - mass)/2, (1 + mass)/2) quantiles of Binomial(n, p), from its pmf in log space."""
    k = np.arange(n + 1)
    log_pmf = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k])
    with np.errstate(divide="ignore"):
        log_pmf = log_pmf + k * math.log(p) + (n - k) * math.log1p(-p) if 0 < p < 1 else np.where(k == round(n * p), 0.0, -np.inf)
    cdf = np.cumsum(np.exp(log_pmf))
    tail = (1 - mass) / 2
    return int(np.searchsorted(cdf, tail)), int(np.searchsorted(cdf, 1 - tail))


def coverage_curve(r: np.ndarray, n_draws: int, levels: Sequence[float] = CURVE_LEVELS) -> np.ndarray:
    """The expected-coverage curve (Hermans et al., 2022): the coverage of the central interval
    at each credible level, per parameter: ranks (items, d) -> (levels, d)."""
    return np.stack([central_coverage(r, n_draws, a) for a in levels])


@dataclass
class Calibration:
    """The calibration of a posterior on test items (:func:`calibrate`)."""

    names: list[str]  # the calibrated quantities
    items: int
    draws: int  # N per item
    coverage: dict[float, np.ndarray]  # level -> (d,) share of truths in the central interval
    nominal: dict[float, float]  # level -> what a calibrated posterior gives (nominal_coverage)
    outside: np.ndarray  # (d,) share of truths outside all draws
    histogram: np.ndarray  # (bins, d) rank counts
    levels: np.ndarray  # the curve's credible levels
    curve: np.ndarray  # (levels, d) coverage
    notes: list[str] = field(default_factory=list)  # how each quantity is formed (eq), or ""
    ranks: np.ndarray | None = None  # (items, d): each truth's rank among its draws
    # level -> (d,) the central level of the draws reported as that interval (a model's
    # recalibrated levels, afxest.temper), or None: the level itself
    interval_levels: dict[float, np.ndarray] | None = None

    @property
    def outside_nominal(self) -> float:
        """The share outside all draws of a calibrated posterior: 2 / (N + 1)."""
        return 2 / (self.draws + 1)

    def verdict(self, j: int) -> str:
        """Quantity ``j`` against the :data:`BANDS`: ``over-confident`` (a level's coverage below
        its band), ``under-confident`` (above it), ``mixed`` (one level each way) or ``in band``."""
        low = any(self.coverage[a][j] < lo for a, (lo, _) in BANDS.items() if a in self.coverage)
        high = any(self.coverage[a][j] > hi for a, (_, hi) in BANDS.items() if a in self.coverage)
        return "mixed" if low and high else "over-confident" if low else "under-confident" if high else "in band"

    def mean(self) -> dict[str, float]:
        """The means over parameters: ``coverage_50``, ``coverage_90`` (the :data:`LEVELS`) and
        ``outside``."""
        found = {f"coverage_{round(100 * a)}": float(v.mean()) for a, v in self.coverage.items()}
        found["outside"] = float(self.outside.mean())
        return found


def calibrate(draws: np.ndarray, truth: np.ndarray, names: Sequence[str], notes: Sequence[str] | None = None,
              levels: Sequence[float] = LEVELS, bins: int = HISTOGRAM_BINS,
              rng: np.random.Generator | None = None,
              interval_levels: dict[float, np.ndarray] | None = None) -> Calibration:
    """Every diagnostic of the module from the draws (items, N, d) and truths (items, d).

    Arguments:
        draws: The posterior draws of each item.
        truth: The truth of each item, in the draws' units (monotone maps change nothing).
        names: The name of each of the d quantities.
        notes: How each quantity is formed (:func:`identifiable`), or None.
        levels: The credible levels of the coverage table.
        bins: The rank histogram's bins (at most N + 1).
        rng: The generator of the tie breaks (:func:`ranks`).
        interval_levels: Per credible level, the central level of the draws (d,) that a
            calibrated model reports as that interval (:mod:`afxest.temper`): the coverage
            table is then that of the reported intervals. The rank histogram and the curve are
            the draws' own.
    """
    n_draws = np.asarray(draws).shape[1]
    r = ranks(draws, truth, rng)

    def covered(a: float) -> np.ndarray:
        if interval_levels is None:
            return central_coverage(r, n_draws, a)
        at = np.asarray(interval_levels[a], dtype=np.float64)
        return np.array([central_coverage(r[:, j:j + 1], n_draws, float(at[j]))[0] for j in range(r.shape[1])])

    return Calibration(
        names=list(names), items=len(r), draws=n_draws,
        coverage={a: covered(a) for a in levels},
        nominal={a: nominal_coverage(n_draws, a) for a in levels},
        outside=outside_share(r, n_draws),
        histogram=rank_histogram(r, n_draws, min(bins, n_draws + 1)),
        levels=np.asarray(CURVE_LEVELS, dtype=np.float64),
        curve=coverage_curve(r, n_draws),
        notes=list(notes) if notes is not None else [""] * len(names),
        ranks=r,
        interval_levels=None if interval_levels is None else {a: np.asarray(interval_levels[a], dtype=np.float64) for a in levels},
    )


def per_parameter(task: Any) -> bool:
    """Whether what the wet determines is the model's parameters themselves (its truth and model
    are the same processors: ``fm``, ``master``), not quantities of several copies (``eq``)."""
    return task.truth.processors == task.model.processors


def identifiable(task: Any, z: np.ndarray, v: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """The quantities whose calibration the task defines, from normalised draws z (items, N,
    d_model) and normalised truths v (items, d_truth).

    Where truth and model are the same processors (``fm``, ``master``): every model parameter,
    z and v as they are (normalised units). Where the model has k copies of the truth's one
    processor (``eq``): one quantity per truth parameter, in physical units
    (:func:`quantities`), and the truths in the same units.

    Returns:
        The names (the truth's :attr:`afxest.tasks.Space.names`), the draws (items, N, q), the
        truths (items, q) and a note per quantity saying how it is formed ("" where it is a
        model parameter).
    """
    v = np.asarray(v, dtype=np.float64)
    names, draws, notes = quantities(task, z)
    if per_parameter(task):
        return names, draws, v, notes
    truths = [r.to_physical(v[:, j]) for j, r in enumerate(task.truth.processors[0].ranges)]
    return names, draws, np.stack(truths, axis=-1), notes


def quantities(task: Any, z: np.ndarray) -> tuple[list[str], np.ndarray, list[str]]:
    """What the wet determines, from normalised draws z (..., d_model): the names, the draws
    (..., q) and a note per quantity.

    Where truth and model are the same processors: the model parameters themselves (z as it
    is, normalised; notes ""). Where the model has k copies of the truth's one processor
    (``eq``): per truth parameter, in physical units, the sum of the copies' gains for a gain,
    and for any other parameter the mean of the copies' values weighted by their |gain| (equal
    weights without a gain, or where every gain is 0), taken in the normalised space of its
    range (so a geometric mean for an exponential range such as a cutoff).
    """
    z = np.asarray(z, dtype=np.float64)
    if per_parameter(task):
        return list(task.model.names), z, [""] * task.model.dim
    truth, model = task.truth.processors, task.model.processors
    if len(truth) != 1 or any(p.type != truth[0].type or p.ranges != model[0].ranges for p in model):
        raise ValueError(f"{task.name}: no identifiable quantities defined for this truth and model")
    k, width = len(model), model[0].dim
    copies = [z[..., c * width:(c + 1) * width] for c in range(k)]  # each (..., width)
    model_ranges = model[0].ranges
    gains = [j for j, r in enumerate(model_ranges) if r.name == "gain_db"]
    if gains:
        weights = np.stack([np.abs(model_ranges[gains[0]].to_physical(c[..., gains[0]])) for c in copies])
        flat = weights.sum(axis=0) == 0
        weights = np.where(flat[None], 1.0, weights)
    else:
        weights = np.ones((k, *z.shape[:-1]))
    weights = weights / weights.sum(axis=0, keepdims=True)
    draws, notes = [], []
    kind = truth[0].type
    for j, (tr, mr) in enumerate(zip(truth[0].ranges, model_ranges)):
        if tr.name != mr.name:
            raise ValueError(f"{task.name}: truth and model parameters differ ({tr.name}, {mr.name})")
        if tr.name == "gain_db":
            draws.append(sum(mr.to_physical(c[..., j]) for c in copies))
            notes.append(f"sum of the gains of the model's {k} {kind} processors")
        else:
            mean = sum(w * c[..., j] for w, c in zip(weights, copies))  # in the model range's normalised space
            draws.append(mr.to_physical(mean))
            how = "geometric mean" if mr.mapping == "exp" else "mean"
            notes.append(f"|gain|-weighted {how} of the {tr.name} of the model's {k} {kind} processors")
    return list(task.truth.names), np.stack(draws, axis=-1), notes


def quantity_ranges(task: Any) -> list[Any]:
    """The range of each quantity :func:`quantities` gives (the model's or the truth's
    :class:`afxest.params.ParamRange`): what its normalised width is measured in."""
    return list(task.model.ranges if per_parameter(task) else task.truth.ranges)


def quantity_of(task: Any) -> np.ndarray:
    """The quantity of :func:`quantities` each model parameter feeds, (d_model,) indices: the
    parameter itself where truth and model are the same processors, and the truth parameter
    of the same name for each of ``eq``'s copies.

    Example:
        >>> from afxest.tasks import TASKS
        >>> quantity_of(TASKS["eq"]).tolist()
        [0, 1, 2, 0, 1, 2]
    """
    if per_parameter(task):
        return np.arange(task.model.dim)
    width = task.model.processors[0].dim
    return np.arange(task.model.dim) % width
