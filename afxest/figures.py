"""The figures of ``afxest evaluate`` (DAFx 2025, Figs. 4-8) and of ``afxest estimate --plot``
(issue 11: the estimate's equaliser responses and compressor curves, or a synth's spectra;
issue 24: a delay's taps and a reverb's energy decay), written as PNG files.

Each figure has a data function (numpy and the model; no plotting) and a thin plotting
function. matplotlib is an optional extra (``pip install 'afxest[plots]'``): it is imported
inside the plotting functions only, and drawn with the non-interactive Agg canvas (no pyplot,
no global backend switch), so afxest imports and runs without it.

* Fig. 4 (posterior models): the mean over test items of the Pearson correlation matrix of
  ``correlation_samples`` (20, Sec. 4.7.2) normalised parameter vectors sampled per item.
* Fig. 5 (posterior models): 2-D histograms of samples for one test item (item 0), one panel
  per pair of parameters (eq: the same parameter of the two shelves), with the truth in model
  space (:meth:`afxest.tasks.Task.truth_to_model`: the canonical solution for eq) and, with
  ``--compare``, a deterministic model's estimate.
* Figs. 6-7 (fm): the SOT loss (``unit="bins"``) of every point of a grid over (v1, v2)
  against a target with a low (Fig. 6) and a high (Fig. 7) modulation index, beside a
  histogram of posterior samples for that target.
* Fig. 8 (fm, posterior): the conditional entropy (bits/dim, Eq. 17) against the modulation
  index I_m (Eq. 20a): the mean over frequency ratios and the band of its 1st-9th deciles.
* Calibration (posterior models; :mod:`afxest.calibration`, not in the paper): the SBC rank
  histogram of each calibrated quantity with the 99 % band of a calibrated posterior (Talts et
  al. 2018), and the expected-coverage curve of each against the credible level (Hermans et
  al. 2022).
"""

from __future__ import annotations

import dataclasses

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from afxest.audio import atomic_output
from afxest.catalogue import parameter_label
from afxest.engines import render_candidates, synthesise
from afxest.processors import entry, power_response

FIGURE_STREAM = 2_000_029  # seeds of the samples drawn for the figures only
MATPLOTLIB_MISSING = "figures skipped: matplotlib is not installed (pip install 'afxest[plots]')"

FILES = {
    "fig4": "fig4-correlation.png",
    "fig5": "fig5-marginals.png",
    "fig6": "fig6-loss-map-low-index.png",
    "fig7": "fig7-loss-map-high-index.png",
    "fig8": "fig8-entropy-vs-index.png",
}

CALIBRATION_FILES = {
    "ranks": "calibration-ranks.png",
    "coverage": "calibration-coverage.png",
}

# Figs. 6-7: the normalised (v1, v2) of the targets with a low and a high modulation index
# (v1 = 0.25: I_m = 0.02, "negligible"; v1 = 0.9: I_m = 5.4)
LOW_INDEX_TARGET = (0.25, 0.5)
HIGH_INDEX_TARGET = (0.9, 0.3)

ANNOTATE_UP_TO = 8  # Fig. 4 prints each cell's value for at most this many dimensions


@dataclass(frozen=True)
class FigureSettings:
    """How much each figure computes, and the PNG resolution."""

    correlation_samples: int = 20  # Fig. 4: samples per item (Sec. 4.7.2)
    histogram_samples: int = 2000  # Figs. 5-7: samples of the one item shown
    bins: int = 40  # Figs. 5-7: histogram bins per axis
    grid: int = 64  # Figs. 6-7: loss map of grid x grid points
    batch: int = 512  # sounds rendered and scored at once
    index_points: int = 32  # Fig. 8: modulation indices
    ratio_points: int = 16  # Fig. 8: frequency ratios per index
    entropy_samples: int = 32  # Fig. 8: samples per sound
    dpi: int = 100


@dataclass(frozen=True)
class WrittenFigure:
    """A PNG written beside the report: its key (``fig4``...), file name and caption."""

    key: str
    file: str
    caption: str


# ---------------------------------------------------------------------------------------------
# which figures apply


def is_fm_like(task) -> bool:
    """Figs. 6-8 need a synth task with exactly (modulation index, frequency ratio) to estimate."""
    names = [r.name for r in task.model.ranges]
    return task.has_source and task.truth == task.model and names == ["modulation_index", "frequency_ratio"]


def applicable(task, kind: str) -> list[str]:
    """The keys of the figures that apply to a ``kind`` model of ``task``, in order."""
    keys = []
    if kind == "posterior":
        keys += ["fig4", "fig5"]
    if is_fm_like(task):
        keys += ["fig6", "fig7"]
        if kind == "posterior":
            keys.append("fig8")
    return keys


def not_applicable_note(task, kind: str) -> str | None:
    """One sentence naming the figures that do not apply, and why (None when all apply)."""
    missing = [k for k in FILES if k not in applicable(task, kind)]
    if not missing:
        return None
    reasons = []
    if kind != "posterior":
        reasons.append("Figs. 4, 5 and 8 need a posterior model")
    if not is_fm_like(task):
        reasons.append("Figs. 6-8 concern the fm task")
    names = ", ".join(f"Fig. {k[3:]}" for k in missing)
    return f"Not written: {names} ({'; '.join(reasons)})."


def matplotlib_available() -> bool:
    """Whether matplotlib and its Agg canvas import."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        return False
    return True


def require_matplotlib() -> None:
    """Refuses a requested figure (``estimate --plot``) when matplotlib is missing: a UserError
    (one line, exit 2) before any work."""
    if not matplotlib_available():
        from afxest.errors import UserError

        raise UserError("--plot needs matplotlib, which is not installed (pip install 'afxest[plots]')")


# ---------------------------------------------------------------------------------------------
# data (no plotting)


def draw(estimator, wet: np.ndarray, n: int, seed: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Draws samples of the estimator's output for each sound, global random state untouched.

    Arguments:
        estimator: The model (:class:`afxest.nn.estimator.Estimator`).
        wet: The sounds, shaped (batch, 1, frames).
        n: The samples per sound.
        seed: The seed of ``numpy.random.default_rng``, which draws the torch seed.

    Returns:
        z (batch, n, d) and log p(z|y) (batch, n) in nats (None for a deterministic model).
    """
    import torch

    torch_seed = int(np.random.default_rng(list(seed)).integers(0, 2**62))
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        s = estimator.sample(torch.from_numpy(np.ascontiguousarray(wet, dtype=np.float32)), n)
    log_prob = None if s.log_prob is None else s.log_prob.double().numpy()
    return s.z.double().numpy(), log_prob


def correlation_samples(estimator, wet: np.ndarray, drawn: np.ndarray, k: int, seed: Sequence[int]) -> np.ndarray:
    """The samples of one item for Fig. 4: the first ``k`` already drawn ones, topped up with
    new samples (:func:`draw`) when fewer were drawn.

    Arguments:
        estimator: The model.
        wet: The item's wet, shaped (1, 1, frames).
        drawn: The samples already drawn, (n, d).
        k: The samples wanted.
        seed: The seed of the new samples.

    Returns:
        The samples, (k, d).
    """
    if len(drawn) >= k:
        return drawn[:k]
    extra, _ = draw(estimator, wet, k - len(drawn), seed)
    return np.concatenate([drawn, extra[0]])


def mean_correlation(z: np.ndarray) -> np.ndarray:
    """Fig. 4: the mean over items of the Pearson correlation matrix of each item's samples.

    ``z`` (items, samples, d) -> (d, d). A parameter with no spread in an item has no
    correlation there: that item is left out of its row and column (NaN if no item is left).
    """
    z = np.asarray(z, dtype=np.float64)
    centred = z - z.mean(axis=1, keepdims=True)
    norm = np.sqrt((centred**2).sum(axis=1))  # (items, d)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = centred / norm[:, None, :]
        corr = np.einsum("isa,isb->iab", unit, unit)  # (items, d, d)
    valid = np.isfinite(corr)
    counts = valid.sum(axis=0)
    total = np.where(valid, corr, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def entropy_bits(log_prob: np.ndarray, d: int) -> np.ndarray:
    """The entropy estimate of DAFx 2025, Eq. 17: -mean over samples (last axis) of ln p(z|y), in
    bits per dimension."""
    return -np.asarray(log_prob, dtype=np.float64).mean(axis=-1) / (d * math.log(2))


def labels(task) -> list[str]:
    """The short names of the model's dimensions: ``v1, v2`` for one processor (the paper's
    names, DAFx 2025, Eq. 20; Figs. 6-7), else the tables' labels without a unit (the values
    are normalised): ``HS0 f, HS0 g, HS0 Q, HS1 f, ...`` (:func:`afxest.catalogue.parameter_label`;
    Figs. 4-5)."""
    procs = task.model.processors
    if len(procs) == 1:
        return [f"v{k + 1}" for k in range(task.model.dim)]
    return [parameter_label(p.type, i, r.name, unit=False) for i, p in enumerate(procs) for r in p.ranges]


def marginal_pairs(task) -> list[tuple[int, int]]:
    """Fig. 5: the pairs of dimensions shown. When the model repeats one processor (eq: two
    shelves), each parameter of the first copy against the same one of the second; else
    consecutive dimensions (0, 1), (2, 3), ... (an odd last one with the one before)."""
    procs = task.model.processors
    if len(procs) >= 2 and all(p == procs[0] for p in procs):
        return [(k, procs[0].dim + k) for k in range(procs[0].dim)]
    d = task.model.dim
    if d == 1:
        return [(0, 0)]
    return [(k, k + 1) if k + 1 < d else (k - 1, k) for k in range(0, d, 2)]


def model_truth(task, v: np.ndarray) -> np.ndarray:
    """The truth ``v`` (truth dim,) in model space: :meth:`Task.truth_to_model` (the canonical
    solution of Sec. 4.1 for eq; ``v`` itself for fm)."""
    import torch

    return np.asarray(task.truth_to_model(torch.as_tensor(np.asarray(v, dtype=np.float64))[None])[0], dtype=np.float64)


def grid_centres(n: int) -> np.ndarray:
    """The centres of ``n`` equal cells of [0, 1]."""
    return (np.arange(n) + 0.5) / n


def sot_loss(task) -> Callable:
    """The loss of the maps (Figs. 6-7): SOT in bins, as the ``sot`` metric of evaluate."""
    from afxest.losses import SpectralOTLoss

    return SpectralOTLoss(task.sample_rate, unit="bins")


def loss_map(task, wet: np.ndarray, grid: int = 64, batch: int = 512) -> np.ndarray:
    """Figs. 6-7: the SOT loss against a target of the sound synthesised at each point of a grid.

    Arguments:
        task: An fm-like task (:func:`is_fm_like`).
        wet: The target, shaped (1, frames).
        grid: The points per axis.
        batch: The sounds synthesised and scored at once.

    Returns:
        The losses, (grid, grid): [i, j] at (v1, v2) = (grid_centres[i], grid_centres[j]).
    """
    import torch

    c = grid_centres(grid)
    points = np.stack(np.meshgrid(c, c, indexing="ij"), axis=-1).reshape(-1, 2)
    loss = sot_loss(task)
    target = torch.from_numpy(np.ascontiguousarray(wet, dtype=np.float32))[None]
    out = np.empty(len(points))
    with torch.no_grad():
        for start in range(0, len(points), batch):
            y_hat = torch.from_numpy(render_candidates(task, points[start : start + batch], None, "ddsp"))
            out[start : start + batch] = loss(y_hat, target.expand_as(y_hat).contiguous()).double().numpy()
    return out.reshape(grid, grid)


@dataclass
class EntropyCurve:
    """Fig. 8 data: entropy (bits/dim) of sounds on a grid of (v1, v2)."""

    v1: np.ndarray  # (index_points,)
    index: np.ndarray  # (index_points,) the modulation index I_m of each v1 (Eq. 20a)
    v2: np.ndarray  # (ratio_points,)
    entropy: np.ndarray  # (index_points, ratio_points)
    mean: np.ndarray  # (index_points,) over frequency ratios
    q10: np.ndarray  # 1st decile over frequency ratios
    q90: np.ndarray  # 9th decile


def decile_band(entropy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row (modulation index): the mean and the 1st and 9th deciles over columns."""
    return entropy.mean(axis=1), np.quantile(entropy, 0.1, axis=1), np.quantile(entropy, 0.9, axis=1)


def entropy_curve(estimator, task, settings: FigureSettings, seed: int) -> EntropyCurve:
    """Fig. 8: synthesises the sounds of a grid of ``index_points`` x ``ratio_points`` (v1, v2)
    cell centres, draws ``entropy_samples`` samples per sound and estimates its entropy (Eq. 17).

    Arguments:
        estimator: A posterior model of ``task``.
        task: An fm-like task (:func:`is_fm_like`).
        settings: The grid, batch and samples (:class:`FigureSettings`).
        seed: The seed of the samples.

    Returns:
        The curve's data.
    """
    v1, v2 = grid_centres(settings.index_points), grid_centres(settings.ratio_points)
    points = np.stack(np.meshgrid(v1, v2, indexing="ij"), axis=-1).reshape(-1, 2)
    entropy = np.empty(len(points))
    for start in range(0, len(points), settings.batch):
        wet = render_candidates(task, points[start : start + settings.batch], None, "ddsp")
        _, log_prob = draw(estimator, wet, settings.entropy_samples, [seed, FIGURE_STREAM, 8, start])
        assert log_prob is not None, "Fig. 8 needs a posterior model"
        entropy[start : start + len(wet)] = entropy_bits(log_prob, task.model.dim)
    entropy = entropy.reshape(len(v1), len(v2))
    mean, q10, q90 = decile_band(entropy)
    index = np.asarray(task.model.ranges[0].to_physical(v1), dtype=np.float64)
    return EntropyCurve(v1=v1, index=index, v2=v2, entropy=entropy, mean=mean, q10=q10, q90=q90)


# ---------------------------------------------------------------------------------------------
# plotting (matplotlib, imported here only)

SIZES = {  # inches; pixels = inches * dpi
    "fig4": (5.5, 4.5),
    "fig5": (4.0, 4.5),  # per panel
    "fig6": (11.0, 5.0),  # loss map and histogram (5.5 for the map alone)
    "fig7": (11.0, 5.0),
    "fig8": (6.0, 4.0),
}


def marginals_size(panels: int) -> tuple[float, float]:
    """Fig. 5's size in inches: 4 x 4.5 per panel, at least 5.5 wide."""
    width, height = SIZES["fig5"]
    return max(5.5, width * panels), height


def _figure(width: float, height: float):
    """A matplotlib Figure of ``width`` x ``height`` inches on the Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path, dpi: int) -> None:
    """Writes ``fig`` as a PNG atomically (:func:`afxest.audio.atomic_output`)."""
    with atomic_output(path) as fh:
        fig.savefig(fh, format="png", dpi=dpi)


def _markers(ax, truth: np.ndarray | None, estimates: Sequence[tuple[str, np.ndarray]], a: int, b: int) -> None:
    """Marks the truth (+) and the estimates (x) in dimensions ``a`` and ``b`` on ``ax``."""
    if truth is not None:
        ax.plot(truth[a], truth[b], "+", color="limegreen", markersize=16, markeredgewidth=3, label="truth")
    for label, z in estimates:
        ax.plot(z[a], z[b], "x", color="red", markersize=12, markeredgewidth=3, label=label)


def _legend(fig, ax, row: bool) -> None:
    """One legend for the figure, below the panels: in a row, or one entry a line."""
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=max(1, len(handles)) if row else 1, fontsize=9)


def plot_correlation(path: Path, matrix: np.ndarray, names: Sequence[str], items: int, samples: int, dpi: int) -> None:
    """Fig. 4: the mean correlation matrix, values printed in the cells (up to
    ``ANNOTATE_UP_TO`` dimensions; larger matrices get a larger figure and colours only).

    Arguments:
        path: The PNG written.
        matrix: The mean correlation matrix, (d, d) (:func:`mean_correlation`).
        names: The dimensions' labels (:func:`labels`).
        items: The items averaged, for the title.
        samples: The samples per item, for the title.
        dpi: The PNG's resolution.
    """
    d = len(names)
    width, height = SIZES["fig4"]
    scale = max(1.0, d / ANNOTATE_UP_TO * 0.75)
    fig = _figure(width * scale, height * scale)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_xticks(range(d), names, rotation=90 if d > ANNOTATE_UP_TO else 0)
    ax.set_yticks(range(d), names)
    if d <= ANNOTATE_UP_TO:
        for a in range(d):
            for b in range(d):
                text = "-" if not np.isfinite(matrix[a, b]) else f"{matrix[a, b]:.2f}"
                ax.text(b, a, text, ha="center", va="center", fontsize=9)
    fig.colorbar(image, ax=ax, label="Pearson correlation")
    ax.set_title(f"Mean correlation, {samples} samples x {items} items")
    save_png(fig, path, dpi)


def plot_marginals(
    path: Path,
    z: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    names: Sequence[str],
    truth: np.ndarray | None,
    estimates: Sequence[tuple[str, np.ndarray]],
    bins: int,
    dpi: int,
) -> None:
    """Fig. 5: one 2-D histogram per pair of dimensions of the samples, with the truth (+) and
    deterministic estimates (x); the legend says when there is no estimate.

    Arguments:
        path: The PNG written.
        z: The samples of one item, (n, d).
        pairs: The pairs of dimensions, one panel each (:func:`marginal_pairs`).
        names: The dimensions' labels (:func:`labels`).
        truth: The truth in model space, (d,), or None.
        estimates: The (label, z (d,)) of each estimate marked.
        bins: The histogram bins per axis.
        dpi: The PNG's resolution.
    """
    fig = _figure(*marginals_size(len(pairs)))
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, (a, b) in zip(axes, pairs):
        ax.hist2d(z[:, a], z[:, b], bins=bins, range=[[0, 1], [0, 1]], cmap="Blues")
        _markers(ax, truth, estimates, a, b)
        ax.set_xlabel(f"{names[a]} (normalised)")
        ax.set_ylabel(f"{names[b]} (normalised)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
    if not estimates:
        axes[0].plot([], [], " ", label="no deterministic estimate (give --compare)")
    _legend(fig, axes[0], row=len(axes) > 1)
    fig.suptitle(f"Samples of p(z|y) for one item ({len(z)} samples)")
    save_png(fig, path, dpi)


def plot_loss_map(
    path: Path,
    losses: np.ndarray,
    samples: np.ndarray | None,
    truth: np.ndarray,
    estimates: Sequence[tuple[str, np.ndarray]],
    title: str,
    bins: int,
    dpi: int,
) -> None:
    """Figs. 6-7: the loss map over (v1, v2) and, for a posterior model, a histogram of its
    samples beside it; truth (+) and estimates (x) on both.

    Arguments:
        path: The PNG written.
        losses: The loss map, (grid, grid) (:func:`loss_map`).
        samples: The posterior's samples, (n, 2), or None (no histogram).
        truth: The target's (v1, v2).
        estimates: The (label, z (2,)) of each estimate marked.
        title: The figure's title.
        bins: The histogram bins per axis.
        dpi: The PNG's resolution.
    """
    width, height = SIZES["fig6"]
    fig = _figure(width if samples is not None else width / 2, height)
    axes = fig.subplots(1, 2 if samples is not None else 1, squeeze=False)[0]
    from matplotlib.colors import PowerNorm

    image = axes[0].imshow(
        losses.T, origin="lower", extent=(0, 1, 0, 1), cmap="viridis", aspect="auto", norm=PowerNorm(0.5)
    )
    fig.colorbar(image, ax=axes[0], label="SOT loss (bins; square-root colour scale)")
    axes[0].set_title("Loss map")
    if samples is not None:
        axes[1].hist2d(samples[:, 0], samples[:, 1], bins=bins, range=[[0, 1], [0, 1]], cmap="Blues")
        axes[1].set_title(f"Samples of p(z|y) ({len(samples)})")
    for ax in axes:
        _markers(ax, truth, estimates, 0, 1)
        ax.set_xlabel("v1 (modulation index, normalised)")
        ax.set_ylabel("v2 (frequency ratio, normalised)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    _legend(fig, axes[0], row=len(axes) > 1)
    fig.suptitle(title)
    save_png(fig, path, dpi)


def plot_entropy_curve(path: Path, curve: EntropyCurve, dpi: int) -> None:
    """Fig. 8: entropy against I_m, mean over frequency ratios and its 1st-9th decile band."""
    fig = _figure(*SIZES["fig8"])
    ax = fig.add_subplot()
    ax.fill_between(curve.index, curve.q10, curve.q90, alpha=0.3, label="1st-9th decile")
    ax.plot(curve.index, curve.mean, label=f"mean over {len(curve.v2)} frequency ratios")
    ax.set_xscale("log")
    ax.set_xlabel("modulation index I_m (log scale)")
    ax.set_ylabel("entropy (bits/dim)")
    ax.legend()
    ax.set_title("Conditional entropy against the modulation index")
    save_png(fig, path, dpi)


# ---------------------------------------------------------------------------------------------
# all figures of one evaluation


def write_figures(
    loaded,
    out: Path,
    keys: Sequence[str],
    correlation: np.ndarray | None,
    item_wet: np.ndarray,
    item_v: np.ndarray,
    compare=None,
    settings: FigureSettings = FigureSettings(),
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[WrittenFigure]:
    """Writes the figures ``keys`` (from :func:`applicable`) into ``out``.

    Arguments:
        loaded: The evaluated model (:class:`afxest.store.LoadedModel`).
        out: The folder.
        keys: The figures to write (``fig4``...).
        correlation: The Fig. 4 samples gathered during the evaluation, (items, k, d).
        item_wet: The wet of the test item of Fig. 5, (1, 1, frames).
        item_v: Its truth, (truth dim,).
        compare: A loaded deterministic model whose estimate is marked (Figs. 5-7), or None.
        settings: How much each figure computes.
        seed: The seed of the figures' own samples.
        log: Where progress lines go.

    Returns:
        The figures written, with their captions.
    """
    run = _Evaluated(loaded, out, compare, settings, seed, log)
    written: list[WrittenFigure] = []
    if "fig4" in keys and correlation is not None:
        written.append(_correlation_figure(run, correlation))
    if "fig5" in keys:
        written.append(_marginals_figure(run, item_wet, item_v))
    written += [_loss_map_figure(run, key) for key in ("fig6", "fig7") if key in keys]
    if "fig8" in keys:
        written.append(_entropy_figure(run))
    return written


@dataclass(frozen=True)
class _Evaluated:
    """What the figures of one evaluation share: the model (and the one compared), the folder,
    the settings, the seed and where progress lines go (:func:`write_figures`' arguments)."""

    loaded: Any
    out: Path
    compare: Any
    settings: FigureSettings
    seed: int
    log: Callable[[str], None]

    def estimates(self, wet: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """The deterministic estimates marked for the sound ``wet`` (1, 1, frames): the model's
        own (not a posterior's) and the compared model's, each (label, z (d,))."""
        found = []
        if self.loaded.kind != "posterior":
            own = draw(self.loaded.estimator, wet, 1, [self.seed])[0][0, 0]
            found.append((f"{self.loaded.kind} estimate (this model)", own))
        if self.compare is not None:
            other = draw(self.compare.estimator, wet, 1, [self.seed])[0][0, 0]
            found.append((f"Deter. ({self.compare.name})", other))
        return found


def _correlation_figure(run: _Evaluated, correlation: np.ndarray) -> WrittenFigure:
    """Fig. 4 from the samples ``correlation`` (items, k, d) gathered during the evaluation."""
    matrix = mean_correlation(correlation)
    items, samples = len(correlation), correlation.shape[1]
    plot_correlation(run.out / FILES["fig4"], matrix, labels(run.loaded.task), items, samples, run.settings.dpi)
    return WrittenFigure("fig4", FILES["fig4"], (
        f"Fig. 4: mean over the {items} items of the Pearson correlation matrix of "
        f"{samples} samples per item (normalised parameters)."
    ))


def _marginals_figure(run: _Evaluated, item_wet: np.ndarray, item_v: np.ndarray) -> WrittenFigure:
    """Fig. 5 for the test item of wet ``item_wet`` (1, 1, frames) and truth ``item_v``."""
    task, settings = run.loaded.task, run.settings
    z, _ = draw(run.loaded.estimator, item_wet, settings.histogram_samples, [run.seed, FIGURE_STREAM, 5])
    found = run.estimates(item_wet)
    plot_marginals(run.out / FILES["fig5"], z[0], marginal_pairs(task), labels(task), model_truth(task, item_v), found,
                   settings.bins, settings.dpi)
    marks = f"the {found[0][0]} (x)" if found else "no deterministic estimate (give --compare MODEL)"
    return WrittenFigure("fig5", FILES["fig5"], (
        f"Fig. 5: 2-D histograms of {settings.histogram_samples} samples for test item 0, the truth "
        f"in model space (+) and {marks}."
    ))


def _loss_map_figure(run: _Evaluated, key: str) -> WrittenFigure:
    """Fig. 6 (``key`` ``fig6``: the low-index target) or Fig. 7 (``fig7``: the high-index one)."""
    task, settings, number = run.loaded.task, run.settings, int(key[3:])
    target, which = (LOW_INDEX_TARGET, "low") if key == "fig6" else (HIGH_INDEX_TARGET, "high")
    run.log(f"computing the {settings.grid}x{settings.grid} loss map of Fig. {number}")
    v = np.asarray(target, dtype=np.float64)
    wet = render_candidates(task, v[None], None, "ddsp")
    losses = loss_map(task, wet[0], settings.grid, settings.batch)
    index = float(task.model.ranges[0].to_physical(v[0]))
    ratio = float(task.model.ranges[1].to_physical(v[1]))
    title = (f"Fig. {number}: {which} modulation index\n"
             f"v = ({v[0]:g}, {v[1]:g}), I_m = {index:.3g}, f_m/f_c = {ratio:.3g}")
    samples = None
    if run.loaded.kind == "posterior":
        z, log_prob = draw(run.loaded.estimator, wet, settings.histogram_samples, [run.seed, FIGURE_STREAM, number])
        samples = z[0]
        title += f", entropy {float(entropy_bits(log_prob[0], task.model.dim)):.2f} bits/dim"
    found = run.estimates(wet)
    plot_loss_map(run.out / FILES[key], losses, samples, v, found, title, settings.bins, settings.dpi)
    what = f" beside a histogram of {settings.histogram_samples} posterior samples" if samples is not None else ""
    marks = "; x: " + ", ".join(label for label, _ in found) if found else ""
    return WrittenFigure(key, FILES[key], (
        f"Fig. {number}: SOT loss over a {settings.grid}x{settings.grid} grid of (v1, v2) against a target "
        f"with a {which} modulation index (v = ({v[0]:g}, {v[1]:g}), I_m = {index:.3g}){what}; +: truth{marks}."
    ))


def _entropy_figure(run: _Evaluated) -> WrittenFigure:
    """Fig. 8: the entropy curve of a posterior model."""
    settings = run.settings
    run.log(f"computing the entropy of {settings.index_points * settings.ratio_points} sounds for Fig. 8")
    curve = entropy_curve(run.loaded.estimator, run.loaded.task, settings, run.seed)
    plot_entropy_curve(run.out / FILES["fig8"], curve, settings.dpi)
    return WrittenFigure("fig8", FILES["fig8"], (
        f"Fig. 8: entropy (bits/dim, {settings.entropy_samples} samples per sound) against the modulation "
        f"index I_m: mean over {settings.ratio_points} frequency ratios and its 1st-9th decile band."
    ))


# ---------------------------------------------------------------------------------------------
# the calibration of a posterior (issue 22)


def calibration_labels(names: Sequence[str]) -> list[str]:
    """Short labels of calibrated quantities named ``<index>.<type>.<parameter>`` (as
    :attr:`afxest.tasks.Space.names`): ``HS0 f``; other names as they are.

    Example:
        >>> calibration_labels(["0.high_shelf.gain_db", "other"])
        ['HS0 g', 'other']
    """
    found = []
    for name in names:
        parts = name.split(".")
        try:
            found.append(parameter_label(parts[1], int(parts[0]), parts[2], unit=False))
        except (IndexError, KeyError, ValueError):
            found.append(name)
    return found


def plot_rank_histograms(path: Path, calibration, title: str, dpi: int) -> None:
    """The SBC rank histogram of each quantity of a :class:`afxest.calibration.Calibration`, one
    panel each, over the 99 % band of a calibrated posterior's counts."""
    from afxest.calibration import histogram_band

    hist = calibration.histogram
    bins, d = hist.shape
    expected, lower, upper = histogram_band(calibration.items, calibration.draws, bins)
    columns = min(d, 6)
    rows = math.ceil(d / columns)
    fig = _figure(2.2 * columns + 0.4, 1.8 * rows + 0.8)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    edges = np.arange(bins + 1)
    for j, (ax, label) in enumerate(zip(axes, calibration_labels(calibration.names))):
        ax.fill_between(edges, np.append(lower, lower[-1]), np.append(upper, upper[-1]), step="post", color="0.85",
                        label="99 % of a calibrated posterior")
        ax.stairs(expected, edges, color="0.5", linestyle="--")
        ax.stairs(hist[:, j], edges, color="C0", linewidth=1.5)
        ax.set_title(f"{label}: {100 * calibration.outside[j]:.0f} % outside", fontsize=9)
        ax.set_xticks([0, bins / 2, bins], ["0", f"{calibration.draws // 2}", f"{calibration.draws}"], fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[d:]:
        ax.set_visible(False)
    fig.supxlabel("rank of the truth among the draws (U: too narrow; hump: too wide; slope: biased)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    save_png(fig, path, dpi)


def plot_coverage_curve(path: Path, calibration, title: str, dpi: int) -> None:
    """The expected-coverage curve of each quantity of a :class:`afxest.calibration.Calibration`
    and their mean, against the credible level: the diagonal is calibrated."""
    from afxest.calibration import nominal_coverage

    fig = _figure(*SIZES["fig8"])
    ax = fig.add_subplot()
    levels = calibration.levels
    nominal = [nominal_coverage(calibration.draws, float(a)) for a in levels]
    ax.plot(levels, nominal, color="0.4", linestyle="--", label="calibrated")
    for j in range(calibration.curve.shape[1]):
        ax.plot(levels, calibration.curve[:, j], color="C0", alpha=0.25, linewidth=0.8,
                label="each quantity" if j == 0 else None)
    ax.plot(levels, calibration.curve.mean(axis=1), color="C3", linewidth=2, label="mean over quantities")
    worst = int(np.argmin(calibration.coverage[max(calibration.coverage)]))
    ax.plot(levels, calibration.curve[:, worst], color="C1", linewidth=1.2,
            label=f"least covered: {calibration_labels(calibration.names)[worst]}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("credible level of the central interval")
    ax.set_ylabel("share of truths inside")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=10)
    save_png(fig, path, dpi)


def write_calibration_figures(out: Path, calibration, task: str, dpi: int = 100) -> list[WrittenFigure]:
    """Writes the rank-histogram and expected-coverage figures of a calibration into ``out``."""
    what = f"{calibration.items} test items, {calibration.draws} draws each"
    plot_rank_histograms(out / CALIBRATION_FILES["ranks"], calibration, f"{task}: SBC rank histograms ({what})", dpi)
    plot_coverage_curve(out / CALIBRATION_FILES["coverage"], calibration, f"{task}: expected coverage ({what})", dpi)
    return [
        WrittenFigure("ranks", CALIBRATION_FILES["ranks"], (
            f"Calibration: the rank of the truth among {calibration.draws} draws for each quantity over "
            f"{calibration.items} test items (simulation-based calibration, Talts et al. 2018), over the 99 % band "
            "a calibrated posterior's histogram stays in (grey); a U shape says the draws are too narrow, a hump "
            "too wide, a slope biased.")),
        WrittenFigure("coverage", CALIBRATION_FILES["coverage"], (
            "Calibration: the share of truths inside each quantity's central interval of the draws against the "
            "interval's credible level (expected coverage, Hermans et al. 2022): on the diagonal when calibrated, "
            "below it when over-confident, above it when conservative.")),
    ]


# ---------------------------------------------------------------------------------------------
# the figure of one estimate (``afxest estimate --plot``; issue 11)

ESTIMATE_PLOT = "estimate.png"  # written beside estimate.json, part of the estimate's file set
EVALUATE_ESTIMATE_PLOT = "default-estimate-item0.png"  # evaluate --effort: item 0's estimate
ESTIMATE_PANEL = (5.5, 4.5)  # inches per panel
ESTIMATE_DPI = 100
PLOT_TOP = 5  # candidates drawn one by one; the band spans all of them
PLOT_POINTS = 400  # frequencies (log-spaced) of the equaliser curves
PLOT_LOWEST_HZ = 20.0
SPECTRUM_FLOOR_DB = -100.0  # the synth spectra's lowest level shown
LEVELS_DB = (-60.0, 0.0)  # input levels of the compressor's static curve (dBFS)
SPREAD_LEVEL = 0.9  # the band of the posterior draws' curves: their central 90 % at each point
DELAY_FLOOR_DB = -60.0  # a delay's echoes drawn down to this level (dB re the input)
DELAY_ECHOES = 64  # and at most this many (a feedback of 1 repeats for ever)
DELAY_SHOWN_ECHOES = 8  # the delay panel's time axis reaches the top candidates' 8th echo at most
REVERB_SPREAD_DRAWS = 64  # the reverb panel's band: the decays of this many draws (12 ms each at 44.1 kHz)
REVERB_FLOOR_DB = -80.0  # the reverb panel's lowest level
REVERB_SECONDS = 3.0  # a reverb's energy decay drawn over its first seconds
REVERB_RENDER_SECONDS = 6.0  # its impulse response rendered this long (the backward integral's tail)
DECAY_FIT_DB = (-5.0, -35.0)  # T30 (ISO 3382-1): the decay's slope fitted between these levels below its start


def plot_frequencies(sample_rate: float, n: int = PLOT_POINTS) -> np.ndarray:
    """``n`` log-spaced frequencies (Hz) from 20 Hz to 0.98 x Nyquist (at most 20 kHz)."""
    return np.geomspace(PLOT_LOWEST_HZ, min(20_000.0, 0.49 * sample_rate), n)


def equaliser_db(preset, freqs: np.ndarray) -> np.ndarray | None:
    """The summed magnitude response in dB of the preset's shelves and peaks (the RBJ cookbook
    coefficients of their registry entries, as pedalboard's filters compute them;
    :func:`afxest.processors.power_response`) and FIRs (``convolution``: |sum_n h[n] e^{-j w n}|,
    ``scipy.signal.freqz``) at ``freqs`` (Hz), (len(freqs),) float64; None when the preset has none."""
    import scipy.signal
    import torch

    biquads = [(e.type, {k: torch.tensor([float(v)], dtype=torch.float64) for k, v in e.params.items()})
               for e in preset.effects if entry(e.type).coefficients is not None]
    firs = [e.params[e.spec.samples] for e in preset.effects if e.spec.samples]
    if not biquads and not firs:
        return None
    freqs = np.asarray(freqs, np.float64)
    db = np.zeros(len(freqs))
    if biquads:
        db += 10 * np.log10(power_response(biquads, preset.sample_rate, torch.from_numpy(freqs))[0].numpy())
    for h in firs:
        response = scipy.signal.freqz(np.asarray(h, np.float64), worN=freqs, fs=preset.sample_rate)[1]
        db += 20 * np.log10(np.maximum(np.abs(response), 1e-12))
    return db


def compressor_curve_db(preset, levels_db: np.ndarray) -> np.ndarray | None:
    """The static curve of the preset's compressor: the output level (dB) of a steady input at
    ``levels_db``, hard knee as JUCE's (pedalboard's): L below the threshold T, T + (L - T) /
    ratio above (docs/compressor.md); None when the preset has no compressor."""
    for e in preset.effects:
        if e.type == "compressor":
            t, ratio = e.params["threshold_db"], e.params["ratio"]
            levels = np.asarray(levels_db, np.float64)
            return np.where(levels < t, levels, t + (levels - t) / ratio)
    return None


def delay_taps(preset, floor_db: float = DELAY_FLOOR_DB) -> tuple[np.ndarray, np.ndarray] | None:
    """The impulse response of the preset's delay as taps: the direct sound, 1 - mix, at 0 s and
    the echoes mix feedback^(k - 1) at k D / rate for k = 1, 2, ... (the recursion of
    :mod:`afxest.dsp.delay`, pedalboard's; D as :func:`afxest.dsp.delay.delay_samples` sets it),
    down to ``floor_db`` and at most :data:`DELAY_ECHOES` echoes: times (s) and levels (dB re the
    input), silent taps left out. None when the preset has no delay."""
    import torch

    from afxest.dsp.delay import delay_samples

    for e in preset.effects:
        if e.type == "delay":
            seconds, feedback, mix = (float(e.params[k]) for k in ("delay_seconds", "feedback", "mix"))
            if seconds == 0.0:  # pedalboard passes the signal through unchanged
                return np.zeros(1), np.zeros(1)
            d = int(delay_samples(torch.tensor([seconds], dtype=torch.float64), preset.sample_rate)[0])
            gains = np.concatenate([[1.0 - mix], mix * feedback ** np.arange(DELAY_ECHOES)])
            times = np.arange(len(gains)) * d / preset.sample_rate
            with np.errstate(divide="ignore"):
                levels = 20 * np.log10(np.abs(gains))
            kept = levels >= floor_db
            return times[kept], levels[kept]
    return None


def reverb_impulse(preset, seconds: float = REVERB_RENDER_SECONDS) -> np.ndarray | None:
    """The reverberation alone of the preset's reverb: pedalboard's response to a unit impulse
    on one channel with the dry level set to 0, ``seconds`` long, (T,) float64; None when the
    preset has no reverb."""
    from afxest.engines import render
    from afxest.presets import Processor

    for e in preset.effects:
        if e.type == "reverb":
            rate = int(round(preset.sample_rate))
            alone = dataclasses.replace(preset, effects=(Processor("reverb", {**e.params, "dry_level": 0.0}),))
            impulse = np.zeros((1, int(round(seconds * rate))), np.float32)
            impulse[0, 0] = 1.0
            return render(alone, impulse, rate, "pedalboard")[0].astype(np.float64)
    return None


def energy_decay_db(h: np.ndarray) -> np.ndarray:
    """Schroeder's backward integral of an impulse response h (T,) (J. Acoust. Soc. Am. 37(3),
    1965): 10 log10 sum_{m >= n} h[m]^2, the energy still to come at each sample, in dB re a
    unit impulse's (T,)."""
    tail = np.cumsum(np.asarray(h, np.float64)[::-1] ** 2)[::-1]
    with np.errstate(divide="ignore"):
        return 10 * np.log10(tail)


def decay_time(edc_db: np.ndarray, sample_rate: float, fit_db: tuple[float, float] = DECAY_FIT_DB) -> float:
    """The reverberation time T60 (s) of an energy decay curve (:func:`energy_decay_db`): the
    least-squares line through the curve from ``fit_db[0]`` to ``fit_db[1]`` dB below its start
    (T30, ISO 3382-1), extended to -60 dB; where the curve ends before the lower level, the line
    through what there is. NaN when it never falls ``fit_db[0]`` dB (or holds no energy)."""
    start = edc_db[0]
    if not np.isfinite(start):
        return float("nan")
    inside = np.nonzero((edc_db <= start + fit_db[0]) & (edc_db >= start + fit_db[1]))[0]
    if len(inside) < 2:
        return float("nan")
    t = inside / sample_rate
    slope = np.polyfit(t, edc_db[inside], 1)[0]
    return float(-60.0 / slope) if slope < 0 else float("inf")


def spectrum_db(x: np.ndarray, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """The magnitude spectrum of ``x`` (T,): a Hann-windowed rfft of the whole signal, in dB
    relative to a full-scale sine (20 log10(2 |X| / sum(window))); frequencies (Hz) and dB."""
    x = np.asarray(x, np.float64)
    window = np.hanning(len(x))
    magnitude = 2 * np.abs(np.fft.rfft(x * window)) / window.sum()
    return np.fft.rfftfreq(len(x), 1 / sample_rate), 20 * np.log10(magnitude + 1e-12)


def estimate_panels(presets: Sequence) -> list[str]:
    """The panels of an estimate's figure: ``eq``, ``compressor``, ``delay`` and ``reverb`` for
    the effect processors rank 1 has, ``spectrum`` for a synth."""
    top = presets[0]
    if top.source is not None:
        return ["spectrum"]
    panels = []
    if equaliser_db(top, np.array([1000.0])) is not None:
        panels.append("eq")
    if compressor_curve_db(top, np.array([0.0])) is not None:
        panels.append("compressor")
    types = {e.type for e in top.effects}
    panels += [kind for kind in ("delay", "reverb") if kind in types]
    return panels


def plot_estimate(path: Path, document: dict, presets: Sequence, wet: np.ndarray | None = None,
                  dpi: int = ESTIMATE_DPI, spread: Sequence | None = None):
    """The figure of one estimate, one panel each of :func:`estimate_panels` (:data:`PANELS`):

    * ``eq``: the equaliser's magnitude response of the top :data:`PLOT_TOP` candidates, over
      the spread of the posterior's draws (``spread``: at each frequency, the central
      :data:`SPREAD_LEVEL` of the draws' responses, and their median), or without draws the
      min-max band over all candidates;
    * ``compressor``: the compressor's static curve of the top candidates (and identity), over
      the same spread of the draws' curves;
    * ``delay``: the direct sound and echoes of the top candidates' delays (times and levels),
      over the first echo of each draw;
    * ``reverb``: the energy decay of the top candidates' reverberation, with its T60, over the
      spread of the draws' decays;
    * ``spectrum`` (a synth): the magnitude spectra of the wet at the task's rate and of rank 1
      synthesised.

    Written atomically as a PNG of ESTIMATE_PANEL x panels inches.

    Arguments:
        path: The PNG written.
        document: The estimate's ``afxest-estimate`` document (its candidates' ranks, origins
            and matches label the curves).
        presets: The candidates' presets, by rank.
        wet: The wet, (T,) at the task's rate (the ``spectrum`` panel), or None.
        dpi: The PNG's resolution.
        spread: Presets of draws of the (calibrated) posterior, or None.

    Returns:
        The matplotlib Figure (its lines hold the plotted data; the spread band, or the delay
        panel's dots, is its axes' only collection, the median their last line).
    """
    panels = estimate_panels(presets)
    if not panels:
        raise ValueError("nothing to plot: the estimate has no equaliser, compressor, delay, reverb or synth")
    width, height = ESTIMATE_PANEL
    fig = _figure(width * len(panels), height)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    names = [_candidate_label(c) for c in document["candidates"][:PLOT_TOP]]
    for ax, panel in zip(axes, panels):
        PANELS[panel](ax, presets, names, wet, spread)
        if panel == "eq":
            _correction_curve(ax, document["candidates"][0], presets[0])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_estimate_title(document))
    save_png(fig, path, dpi)
    return fig


def _spread_band(ax, x: np.ndarray, curves: np.ndarray) -> None:
    """The central :data:`SPREAD_LEVEL` of the draws' curves (draws, len(x)) at each x, and
    their median (a dashed line), beneath the candidates' lines drawn before."""
    low, median, high = np.quantile(curves, [(1 - SPREAD_LEVEL) / 2, 0.5, (1 + SPREAD_LEVEL) / 2], axis=0)
    ax.fill_between(x, low, high, color="0.82", zorder=1,
                    label=f"central {round(100 * SPREAD_LEVEL)} % of {len(curves)} posterior draws")
    ax.plot(x, median, color="0.35", ls="--", lw=1.0, label="median of the draws", zorder=2)


def _equaliser_panel(ax, presets: Sequence, names: Sequence[str], wet: np.ndarray | None,
                     spread: Sequence | None = None) -> None:
    """The ``eq`` panel: the responses of the top candidates (labelled ``names``) over the
    spread of the draws' responses (without draws: the min-max band of all candidates)."""
    freqs = plot_frequencies(presets[0].sample_rate)
    curves = np.array([equaliser_db(p, freqs) for p in presets])
    top = min(len(presets), PLOT_TOP)
    if not spread:
        ax.fill_between(freqs, curves.min(axis=0), curves.max(axis=0), color="0.85",
                        label=f"min-max of all {len(presets)} candidates")
    for k, label in enumerate(names[:top]):
        ax.plot(freqs, curves[k], lw=2.2 if k == 0 else 1.0, label=label, zorder=3 + top - k)
    if spread:
        _spread_band(ax, freqs, np.array([equaliser_db(p, freqs) for p in spread]))
    ax.set_xscale("log")
    ax.set_xlabel("frequency (Hz, log scale)")
    ax.set_ylabel("magnitude (dB)")
    ax.set_title("Equaliser response")


def _correction_curve(ax, candidate: dict, preset) -> None:
    """Rank 1's correction alone (its effects from ``correction.effects_from``: the graphic
    equaliser of afxest/correct.py), dashed on the ``eq`` panel, where rank 1 is corrected."""
    record = candidate.get("correction")
    if record is None:
        return
    correction = dataclasses.replace(preset, effects=preset.effects[record["effects_from"] :])
    freqs = plot_frequencies(preset.sample_rate)
    curve = equaliser_db(correction, freqs)
    if curve is not None:
        ax.plot(freqs, curve, color="black", ls="--", lw=1.2, label="rank 1's correction (after the chain)", zorder=20)


def _compressor_panel(ax, presets: Sequence, names: Sequence[str], wet: np.ndarray | None,
                      spread: Sequence | None = None) -> None:
    """The ``compressor`` panel: the static curves of the top candidates, and identity, over the
    spread of the draws' curves."""
    top = presets[:PLOT_TOP]
    levels = np.linspace(*LEVELS_DB, 241)
    ax.plot(levels, levels, color="0.6", ls="--", lw=1.0, label="no compression")
    for k, (p, label) in enumerate(zip(top, names)):
        ax.plot(levels, compressor_curve_db(p, levels), lw=2.2 if k == 0 else 1.0, label=label,
                zorder=3 + len(top) - k)
    if spread:
        _spread_band(ax, levels, np.array([compressor_curve_db(p, levels) for p in spread]))
    ax.set_xlabel("input level (dBFS)")
    ax.set_ylabel("output level (dBFS)")
    ax.set_title("Compressor static curve (before gain and clipping)")
    ax.set_aspect("equal")


def _spectrum_panel(ax, presets: Sequence, names: Sequence[str], wet: np.ndarray | None,
                    spread: Sequence | None = None) -> None:
    """The ``spectrum`` panel of a synth: the wet's spectrum and rank 1's, synthesised."""
    rate = presets[0].sample_rate
    estimate = synthesise(presets[0], int(round(rate)))[0]
    n = min(len(wet), len(estimate))
    highest = 0.0
    for x, label, style in ((wet, "wet", dict(lw=1.6, color="0.3")),
                            (estimate, names[0], dict(lw=1.0, color="tab:red", alpha=0.85))):
        f, db = spectrum_db(x[:n], rate)
        ax.plot(f, db, label=label, **style)
        highest = max(highest, float(f[db > SPECTRUM_FLOOR_DB].max(initial=0.0)))
    ax.set_xlim(0, min(rate / 2, max(1000.0, 1.2 * highest)))  # up to the last partial shown
    ax.set_ylim(SPECTRUM_FLOOR_DB, 5)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("magnitude (dB re full-scale sine)")
    ax.set_title("Magnitude spectra")


def _delay_panel(ax, presets: Sequence, names: Sequence[str], wet: np.ndarray | None,
                 spread: Sequence | None = None) -> None:
    """The ``delay`` panel: the taps of the top candidates' delays (:func:`delay_taps`), over the
    first echo of each draw (a grey dot: its time and level)."""
    top = presets[:PLOT_TOP]
    right = 0.0
    for k, (p, label) in enumerate(zip(top, names)):
        times, levels = delay_taps(p)
        ax.plot(times, levels, ls="none", marker="o", ms=8 - k, label=label, zorder=3 + len(top) - k)
        right = max(right, times[min(len(times) - 1, DELAY_SHOWN_ECHOES)])
    if spread:
        taps = [delay_taps(p) for p in spread]
        first = np.array([(t[t > 0][0], db[t > 0][0]) for t, db in taps if np.any(t > 0)])
        if len(first):
            ax.scatter(first[:, 0], first[:, 1], s=6, color="0.6", zorder=1,
                       label=f"first echo of {len(first)} posterior draws")
    ax.set_xlim(-0.02 * max(right, 0.1), 1.05 * max(right, 0.1))
    ax.set_ylim(DELAY_FLOOR_DB, 3.0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("level (dB re the input)")
    ax.set_title("Delay: direct sound and echoes")


def _reverb_panel(ax, presets: Sequence, names: Sequence[str], wet: np.ndarray | None,
                  spread: Sequence | None = None) -> None:
    """The ``reverb`` panel: the energy decay (:func:`energy_decay_db`) of the top candidates'
    reverberation over its first :data:`REVERB_SECONDS`, each labelled with its T60
    (:func:`decay_time`), over the spread of the draws' decays (the first
    :data:`REVERB_SPREAD_DRAWS`)."""
    rate = presets[0].sample_rate
    shown = int(round(REVERB_SECONDS * rate))
    at = np.unique(np.linspace(0, shown - 1, PLOT_POINTS).round().astype(int))

    def decay(p) -> np.ndarray:
        return energy_decay_db(reverb_impulse(p))[:shown]

    for k, (p, label) in enumerate(zip(presets[:PLOT_TOP], names)):
        edc = decay(p)
        ax.plot(at / rate, edc[at], lw=2.2 if k == 0 else 1.0, zorder=3 + PLOT_TOP - k,
                label=f"{label}, T60 {decay_time(edc, rate):.2f} s")
    if spread:
        _spread_band(ax, at / rate, np.array([decay(p)[at] for p in spread[:REVERB_SPREAD_DRAWS]]))
    ax.set_ylim(REVERB_FLOOR_DB, None)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("energy to come (dB re the impulse)")
    ax.set_title("Reverb: energy decay of its reverberation")


# each panel of plot_estimate: (axes, presets by rank, the top candidates' labels, the wet,
# presets of posterior draws or None) -> drawn
PANELS: dict[str, Callable[..., None]] = {
    "eq": _equaliser_panel, "compressor": _compressor_panel, "delay": _delay_panel,
    "reverb": _reverb_panel, "spectrum": _spectrum_panel,
}


def _candidate_label(candidate: dict) -> str:
    """``rank 1 (search), SI-SDR 35.2 dB``: a candidate's rank, origin and match."""
    origin = "search" if "refinement" in candidate else "draw"
    text = f"rank {candidate['rank']} ({origin})"
    if candidate.get("si_sdr") is not None:
        text += f", SI-SDR {candidate['si_sdr']:.1f} dB"
    return text


def _estimate_title(document: dict) -> str:
    """The figure's title: the wet file's name, task and model, and the dry's baseline."""
    title = f"{Path(document['wet']).name}: {document['task']} estimate (model {Path(document['model']['name']).name})"
    baseline = document.get("baseline")
    if baseline and baseline.get("si_sdr") is not None:
        title += f"; the dry itself: SI-SDR {baseline['si_sdr']:.1f} dB"
    return title
