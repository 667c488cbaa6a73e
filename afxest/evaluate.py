"""``afxest evaluate``: the DAFx 2025 evaluation of a model on the test split.

For each of N test items (item i drawn from its own generator ``default_rng([seed, 2_000_003,
i])``, so results do not depend on batching or on N), the model gives ``samples`` candidates
(one for a deterministic or parameter model); each candidate is rendered with the real effect
(pedalboard) on the dry, or synthesised (``fm``), and scored against the wet by the Mel loss,
the MR-STFT loss, SI-SDR and, for ``fm``, the SOT loss. Reported (DAFx 2025, Tables 1-3):

* the expectation (Eq. 18): the mean over items of the mean over candidates, with the
  entropy of the posterior in bits/dim (Eq. 17: -mean log p(z|y) of the samples / (d ln 2));
* best of N (Table 2): per item the best of the first N candidates by each metric;
* baselines: Input (the dry against the wet; effect tasks) and Uniform (z uniform in [0, 1]^d:
  the mean of one, and the best of 10);
* parameter error (tasks whose truth and model are the same processors: ``fm``, ``master``):
  per parameter the absolute difference between each candidate and the truth in physical
  units (Hz, dB, ms, ratio, ...), averaged over an item's candidates, then mean +- std over
  items; and the posterior's spread per parameter (std of an item's candidates, normalised
  units), and its marginal entropy per parameter in bits (:func:`marginal_entropy_bits` of
  ``ENTROPY_SAMPLES`` extra draws: 0 for a uniform marginal, lower where the audio pins the
  setting down), which say what the audio determines;
* with ``refine`` > 0: every candidate improved by at most that many steps of inference-time
  optimisation (:func:`afxest.search.refine`, the refinement of ``afxest estimate``: Adam on
  logit(z) through the differentiable processors, the learning rate halved when the loss
  stalls, the task's training loss against the wet, the dry known), then rendered with
  pedalboard and scored like the others;
* posterior models: their calibration (:mod:`afxest.calibration`; Talts et al. 2018, Hermans
  et al. 2022): per parameter, how often the central 50 % and 90 % intervals of
  ``calibration_draws`` extra draws hold the truth (drawn from the task's own prior), how often
  the truth lies outside all of them, the SBC rank histogram and the expected-coverage curve;
  for ``eq`` on the quantities the wet determines (:func:`afxest.calibration.identifiable`);
* tasks with a compressor (``master``, ICASSP 2024): the model's candidates also rendered
  through the differentiable processors with each compressor proxy (``dsp``: afxest's
  compressor; ``neural``: a trained TCN given as ``proxy_model``), scored against the wet like
  the pedalboard renders, and each proxy render's SI-SDR against pedalboard's render of the same
  preset (how far the proxy is from the real effect on the presets the model picks).

Every "mean +- std" is over items (population standard deviation, ddof=0). Items are processed
one at a time, so memory does not grow with N.

With ``figures`` (and matplotlib installed), the paper's Figs. 4-8 that apply to the model are
written beside the report as PNG files (:mod:`afxest.figures`); their samples come from their
own seeds, so results.csv is the same with and without them.
"""

from __future__ import annotations

import csv
import io
import math
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from afxest import figures as figs
from afxest.audio import atomic_write_text
from afxest.choices import CALIBRATION_DRAWS, EFFORTS
from afxest.errors import UserError
from afxest.propose import echo_times, snap_to_echoes
from afxest.tables import report_markdown

ITEM_STREAM = 2_000_003
ENTROPY_STREAM = 2_000_011  # seeds of the extra draws for the marginal entropies
ENTROPY_SAMPLES = 1000
CALIBRATION_STREAM = 2_000_017  # seeds of the extra draws of the calibration
ENTROPY_BINS = 100
BEST_OF = (1, 2, 3, 4, 5, 10)
UNIFORM_CANDIDATES = 10
LOWER_IS_BETTER = {"mel": True, "mrstft": True, "si_sdr": False, "sot": True}


@dataclass
class Evaluation:
    """What ``evaluate`` measured: per-item arrays and the summary tables."""

    task: str
    kind: str
    items: int
    samples: int
    metrics: list[str]
    source: str  # "music", "procedural" or "synth"
    expectation: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (mean, std)
    entropy: tuple[float, float] | None = None
    best_of: dict[int, dict[str, tuple[float, float]]] = field(default_factory=dict)
    input_baseline: dict[str, tuple[float, float]] | None = None
    uniform_mean: dict[str, tuple[float, float]] = field(default_factory=dict)
    uniform_best10: dict[str, tuple[float, float]] = field(default_factory=dict)
    figures: list[figs.WrittenFigure] = field(default_factory=list)
    figures_note: str | None = None  # why figures are missing, for the report
    refine_steps: int = 0
    param_error: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (mean, std)
    param_spread: dict[str, tuple[float, float]] = field(default_factory=dict)
    param_units: dict[str, str] = field(default_factory=dict)
    param_entropy: dict[str, tuple[float, float]] = field(default_factory=dict)  # bits, per parameter
    refined_expectation: dict[str, tuple[float, float]] = field(default_factory=dict)
    refined_best_of: dict[int, dict[str, tuple[float, float]]] = field(default_factory=dict)
    # proxy name -> metric -> (mean, std): the expectation, the best of all candidates, and the
    # proxy render's SI-SDR against pedalboard's render of the same candidate (best_of always
    # holds the best of all candidates, N = samples, for pedalboard's renders)
    proxy_expectation: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    proxy_best: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    proxy_agreement: dict[str, tuple[float, float]] = field(default_factory=dict)
    # rank 1 of ``afxest estimate`` with the reference (its search at this effort), or None
    effort: str | None = None
    default_estimate: dict[str, tuple[float, float]] = field(default_factory=dict)
    # how it was measured, for the reports: the N of Table 2's best-of rows, the uniform draws
    # of its last row, the extra draws behind param_entropy
    best_of_rows: tuple[int, ...] = BEST_OF
    uniform_candidates: int = UNIFORM_CANDIDATES
    entropy_samples: int = ENTROPY_SAMPLES
    calibration: Any = None  # :class:`afxest.calibration.Calibration` of a posterior, or None
    calibration_figures: list[figs.WrittenFigure] = field(default_factory=list)  # its rank histograms, coverage


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """The mean and the population standard deviation (ddof=0) of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std())


def marginal_entropy_bits(z: np.ndarray, bins: int = ENTROPY_BINS) -> np.ndarray:
    """The differential entropy in bits of each column of samples z (n, d) in [0, 1]: the plug-in
    estimate of a ``bins``-bin histogram, -sum p log2 p + log2(1 / bins), with the Miller-Madow
    correction (occupied bins - 1) / (2 n ln 2). A uniform marginal has 0 bits; a normal one
    of std s, log2(s sqrt(2 pi e)) while s is well above the bin width."""
    z = np.asarray(z, dtype=np.float64)
    n, d = z.shape
    out = np.empty(d)
    for j in range(d):
        counts = np.bincount(np.clip((z[:, j] * bins).astype(np.int64), 0, bins - 1), minlength=bins)
        p = counts[counts > 0] / n
        out[j] = -(p * np.log2(p)).sum() - math.log2(bins) + (len(p) - 1) / (2 * n * math.log(2))
    return out


def best_of_n(per_candidate: np.ndarray, n: int, lower_is_better: bool) -> np.ndarray:
    """The best of the first ``n`` candidates (columns) of each item (rows).

    Example:
        >>> best_of_n(np.array([[3.0, 1.0, 2.0], [0.5, 5.0, 4.0]]), 2, lower_is_better=True)
        array([1. , 0.5])
    """
    head = per_candidate[:, :n]
    return head.min(axis=1) if lower_is_better else head.max(axis=1)


def _metric_fns(task):
    """The metrics by name, each fn(y_hat, y) -> (batch,): the SOT loss (a synth), the log-mel and
    MR-STFT losses, SI-SDR."""
    from afxest import losses

    fns: dict[str, Callable] = {}
    if task.has_source:
        fns["sot"] = losses.SpectralOTLoss(task.sample_rate, unit="bins")
    fns["mel"] = losses.LogMelLoss(task.sample_rate)
    fns["mrstft"] = losses.MRSTFTRevisitedLoss()
    fns["si_sdr"] = losses.si_sdr
    return fns


def _score(fns, candidates: np.ndarray, wet: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric of each candidate (n, 1, frames) against the wet (1, frames): (n,)."""
    import torch

    y_hat = torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(wet, dtype=np.float32))[None].expand_as(y_hat).contiguous()
    with torch.no_grad():
        return {name: fn(y_hat, y).double().numpy() for name, fn in fns.items()}


def _render_all(task, z: np.ndarray, dry: np.ndarray | None) -> np.ndarray:
    """Renders each normalised model vector of z (n, d) with pedalboard (or the synth)."""
    from afxest.engines import render_candidates

    return render_candidates(task, z, dry, "pedalboard")


def _render_proxy(task, z: np.ndarray, dry: np.ndarray, compressor) -> np.ndarray:
    """Renders each normalised model vector of z (n, d) with afxest's differentiable processors,
    ``compressor`` in place of the dsp compressor (None: the dsp one): (n, 1, frames)."""
    from afxest.engines import render_candidates

    return render_candidates(task, z.astype(np.float32), dry, "ddsp", compressor)


def default_estimate(analyser, wet: np.ndarray, dry: np.ndarray | None, samples: int, effort: str, seed: int,
                     plot: Path | None = None) -> np.ndarray:
    """The rank 1 of ``afxest estimate`` (:meth:`afxest.estimate.Analyser.analyse_inputs`) for one
    test item, with its search at ``effort``, rendered by pedalboard (or the synth).

    Arguments:
        analyser: The :class:`afxest.estimate.Analyser` of the evaluated model.
        wet: The item's wet, (1, T) at the task's rate.
        dry: Its dry, (1, T), or None (a synth).
        samples: The candidates drawn from the posterior.
        effort: The search's effort (a name of :data:`afxest.choices.EFFORTS`).
        seed: The estimate's seed.
        plot: Where to write the estimate's figure (:func:`afxest.figures.plot_estimate`), or None.

    Returns:
        The rank 1 rendered, (1, 1, T).
    """
    from afxest.estimate import EstimateOptions, Recording, plot_spread, read_inputs

    task = analyser.task

    def signal(name: str, x: np.ndarray) -> Recording:
        return Recording(Path(name), np.ascontiguousarray(x, dtype=np.float32), task.sample_rate)

    inputs = read_inputs(signal("wet", wet), None if dry is None else signal("dry", dry), task)
    options = EstimateOptions(samples=samples, effort=effort, seed=seed, audio="none")
    document, presets, _, spread = analyser.analyse_inputs(inputs, options)
    if plot is not None:
        document["wet"] = "test item 0"
        figs.plot_estimate(plot, document, presets, wet[0] if dry is None else None,
                           spread=plot_spread(task, spread, document))
    z = np.array([[r.to_normalised(v) for r, v in zip(task.model.ranges, _values(presets[0], task))]])
    return _render_all(task, z, dry)


def _values(preset, task) -> list[float]:
    """A preset's estimated parameters in the order of ``task.model.ranges`` (physical units)."""
    return [proc.params[r.name] for space, proc in zip(task.model.processors, preset.processors) for r in space.ranges]


REPORT_FILE = "report.md"
RESULTS_FILE = "results.csv"
CALIBRATION_FILE = "calibration.csv"


@dataclass(frozen=True)
class EvaluateOptions:
    """The choices of one evaluation: the options of ``afxest evaluate`` (see :func:`evaluate`)."""

    data: Path | None = None  # a music folder (its test split); None: procedural music (a synth needs none)
    n: int = 256  # test items
    samples: int = 10  # candidates per item (a posterior; other models give one)
    seed: int = 0  # seed of the items, the samples and the figures
    force: bool = False  # overwrite existing outputs
    log: Callable[[str], None] = print
    figures: bool = True  # the paper's figures that apply (DAFx 2025, Figs. 4-8)
    compare: Any = None  # a loaded deterministic (or parameter) model marked on Figs. 5-7
    figure_settings: figs.FigureSettings = field(default_factory=figs.FigureSettings)
    refine: int = 0  # step cap of the refinement of every candidate (0: none)
    proxy_model: Path | None = None  # a trained compressor proxy whose renders are scored too
    effort: str | None = None  # the default estimate's search effort (None: no such row)
    calibration_draws: int = CALIBRATION_DRAWS  # posterior draws per item of the calibration (0: none)

    def check(self) -> None:
        """Refuses impossible values (:class:`afxest.errors.UserError`) before anything is read."""
        if self.n < 1:
            raise UserError("--n must be at least 1")
        if self.samples < 1:
            raise UserError("--samples must be at least 1")
        if self.refine < 0:
            raise UserError("--refine must be at least 0")
        if self.calibration_draws < 0 or self.calibration_draws == 1:
            raise UserError("--calibration-draws must be 0 (none) or at least 2")
        if self.effort is not None and self.effort not in EFFORTS:
            raise UserError(f"unknown effort {self.effort!r} ({', '.join(EFFORTS)})")


@dataclass
class Plan:
    """One evaluation, checked and set up before its first item (:func:`plan_evaluation`)."""

    loaded: Any  # :class:`afxest.store.LoadedModel`
    out: Path
    options: EvaluateOptions
    model: Any  # the estimator, on the CPU in eval mode
    candidates: int  # per item: ``samples`` for a posterior, else 1
    source: Any  # :class:`afxest.data.DrySource` of the drys; None for a synth
    source_name: str  # "music", "procedural" or "synth"
    proxies: dict[str, Any]  # name -> compressor function in place of the dsp one (None: the dsp one)
    figure_keys: list[str]  # the figures to draw (:func:`afxest.figures.applicable`)
    figures_note: str | None  # why figures are missing, for the report
    estimate_plot: Path | None  # item 0's default estimate figure (``--effort`` with figures)
    analyser: Any  # :class:`afxest.estimate.Analyser` for the default estimate, or None
    fns: dict[str, Callable]  # metric -> fn(y_hat, y) -> (batch,)
    refine_loss: Callable | None  # the task's loss, with ``refine``

    @property
    def task(self):
        """The model's task."""
        return self.loaded.task

    @property
    def kind(self) -> str:
        """The model's estimator kind (``posterior``, ``deterministic`` or ``param``)."""
        return self.loaded.kind


def evaluate(loaded, out: Path, options: EvaluateOptions | None = None, **keywords: Any) -> Evaluation:
    """Evaluates a loaded model (:class:`afxest.store.LoadedModel`); writes ``out/report.md``,
    ``out/results.csv`` and, with ``figures``, the PNG figures that apply (DAFx 2025, Figs. 4-8;
    without matplotlib they are skipped with one message), and returns the summary.

    The options are an :class:`EvaluateOptions`, or its fields as keywords (which override
    ``options``). ``compare``: a loaded deterministic (or parameter) model of the same task
    whose estimate is marked on Figs. 5-7. ``refine``: the step cap of the inference-time
    optimisation of every candidate (reported separately). ``proxy_model``: a trained compressor
    proxy (``afxest train-proxy``) whose renders are scored too (tasks with a compressor; the dsp
    proxy always is). ``effort`` (``fast``, ``default``, ``best``): also the rank 1 of ``afxest
    estimate`` given the dry (or, for a synth, the wet) as its reference, with the search of
    :mod:`afxest.search` at that effort ("default estimate": :func:`default_estimate`).

    The steps: :func:`plan_evaluation` (every check, then the set-up), per item
    :func:`draw_item` and :func:`measure_item`, then :func:`summarise` and :func:`write_outputs`.
    """
    from afxest.temper import tempered

    options = replace(options or EvaluateOptions(), **keywords)
    plan = plan_evaluation(loaded, Path(out), options)
    measured = Measurements.start(plan)
    n = options.n
    head = plan.model.head if plan.kind == "posterior" else None
    # the candidates (and figures) are the untempered model's, as afxest estimate's; only the
    # calibration's draws are the calibrated posterior's (calibration_item)
    with tempered(head, None) if head is not None else nullcontext():
        for i in range(n):
            measure_item(plan, measured, draw_item(plan.task, plan.source, options.seed, i))
            if n >= 20 and (i + 1) % max(1, n // 10) == 0 and i + 1 < n:
                options.log(f"evaluated {i + 1}/{n} items")
    result = summarise(plan, measured)
    write_outputs(plan, measured, result)
    return result


# ---------------------------------------------------------------------------------------------
# checks and set-up


def plan_evaluation(loaded, out: Path, options: EvaluateOptions) -> Plan:
    """Checks what can be refused before the first item (the options, ``out``, ``--compare``, the
    proxy checkpoint, outputs that exist without ``force``, the data folder), in that order, and
    sets the evaluation up: the model on the CPU, the dry source, the metrics."""
    import torch

    from afxest.objective import task_loss

    options.check()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (--out expects a folder)")
    task, kind = loaded.task, loaded.kind
    check_compare(loaded, options.compare)
    proxies = compressor_proxies(task, options.proxy_model)
    figure_keys, figures_note, estimate_plot = figure_plan(task, kind, out, options)
    calibration_files = [out / CALIBRATION_FILE, *(out / f for f in figs.CALIBRATION_FILES.values())] \
        if kind == "posterior" and options.calibration_draws else []
    refuse_existing([out / REPORT_FILE, out / RESULTS_FILE, *(out / figs.FILES[k] for k in figure_keys),
                     *([estimate_plot] if estimate_plot else []), *calibration_files], options.force)
    model = loaded.estimator.to("cpu").eval()
    if options.compare is not None:
        options.compare.estimator.to("cpu").eval()
    source, source_name = item_source(task, options.data, options.log)
    analyser = None
    if options.effort is not None:
        from afxest.estimate import Analyser

        analyser = Analyser(loaded)
    refine_loss = task_loss(task, torch.device("cpu")) if options.refine else None
    return Plan(loaded, out, options, model, options.samples if kind == "posterior" else 1, source, source_name,
                proxies, figure_keys, figures_note, estimate_plot, analyser, _metric_fns(task), refine_loss)


def compressor_proxies(task, proxy_model: Path | None) -> dict[str, Any]:
    """The compressor proxies whose renders are scored: ``dsp`` (afxest's compressor, None
    here) for an effect task with a compressor, and ``neural``, the trained proxy loaded from
    ``proxy_model`` (:func:`afxest.nn.proxy.load_task_proxy`) when one is given."""
    proxies: dict[str, Any] = {}
    if task.has_compressor and not task.has_source:
        proxies["dsp"] = None
    if proxy_model is not None:
        from afxest.nn.proxy import load_task_proxy

        proxies["neural"] = load_task_proxy(proxy_model, task)
    return proxies


def figure_plan(task, kind: str, out: Path, options: EvaluateOptions) -> tuple[list[str], str | None, Path | None]:
    """The figures to draw (:func:`afxest.figures.applicable`), the report's note on why there
    are none (not requested, matplotlib missing; logged once), and the path of the default
    estimate's figure of item 0 (as ``estimate --plot`` draws it; with ``effort`` only)."""
    keys: list[str] = []
    note = None if options.figures else "Figures: not requested (--no-figures)."
    if options.figures:
        if figs.matplotlib_available():
            keys = figs.applicable(task, kind)
        else:
            options.log(figs.MATPLOTLIB_MISSING)
            note = "Figures: not written: matplotlib is not installed (`pip install 'afxest[plots]'`)."
    plot = options.effort is not None and options.figures and figs.matplotlib_available()
    return keys, note, out / figs.EVALUATE_ESTIMATE_PLOT if plot else None


def refuse_existing(paths: list[Path], force: bool) -> None:
    """Refuses to overwrite any of ``paths`` without ``force``."""
    for path in paths:
        if not force and path.exists():
            raise UserError(f"{path}: exists (use --force to overwrite)")


def item_source(task, data: Path | None, log: Callable[[str], None]) -> tuple[Any, str]:
    """Where the items' drys come from, and its name for the report: the test split of the
    music folder ``data``, procedural music without one (announced), none for a synth."""
    from afxest.data import DrySource, MusicFolder

    if task.has_source:
        return None, "synth"
    if data is None:
        log("no --data: evaluating on procedural music (not the paper's test set)")
        return DrySource(None, task.sample_rate), "procedural"
    folder = MusicFolder(Path(data), task.sample_rate, "test", min_seconds=task.clip_seconds).prepare()
    if not folder.tracks:
        raise UserError(f"{data}: no test-split track is {task.clip_seconds:g} s long")
    return DrySource(folder, task.sample_rate), "music"


# ---------------------------------------------------------------------------------------------
# the items


@dataclass
class Item:
    """One test item: its index, the batch of one (:class:`afxest.data.Batch`: wet (1, 1, T),
    dry (1, 1, T) or None, truth v (1, d_truth)), the torch seed of its candidates and its
    uniform baseline draws (:data:`UNIFORM_CANDIDATES`, d)."""

    index: int
    batch: Any
    torch_seed: int
    uniform_z: np.ndarray

    @property
    def wet(self) -> np.ndarray:
        """The wet, (1, T)."""
        return self.batch.wet[0]

    @property
    def dry(self) -> np.ndarray | None:
        """The dry, (1, T), or None for a synth."""
        return None if self.batch.dry is None else self.batch.dry[0]


def draw_item(task, source, seed: int, i: int) -> Item:
    """Item ``i`` from its own generator ``default_rng([seed, ITEM_STREAM, i])``: the same for
    any N and batching (:func:`afxest.data.make_batch`, then the seeds of its candidates)."""
    from afxest.data import make_batch

    rng = np.random.default_rng([seed, ITEM_STREAM, i])
    batch = make_batch(task, source, rng, 1)
    torch_seed = int(rng.integers(0, 2**62))
    return Item(i, batch, torch_seed, rng.random((UNIFORM_CANDIDATES, task.model.dim)))


@dataclass
class Measurements:
    """What the items measured. ``scores``: row kind (``model``, ``proxy-dsp``, ``refined``,
    ``uniform``, ``input``, ``default-estimate``, ...) -> metric -> (items, candidates);
    ``rows``: results.csv after its header; the rest per item, for the summary and figures."""

    fns: dict[str, Callable]  # metric -> fn(y_hat, y) -> (batch,)
    n: int
    d: int
    entropy: np.ndarray  # (items,) bits/dim (Eq. 17); nan but for a posterior
    param_error: np.ndarray | None  # (items, d) physical units; None where truth and model differ
    param_spread: np.ndarray  # (items, d)
    param_entropy: np.ndarray  # (items, d) bits
    agreement: dict[str, np.ndarray]  # proxy -> (items,) SI-SDR against pedalboard's render
    correlation: np.ndarray | None  # (items, k, d): Fig. 4's samples
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    rows: list[list[Any]] = field(default_factory=list)
    item_wet: np.ndarray | None = None  # item 0's wet (1, 1, T) and truth, for Fig. 5
    item_v: np.ndarray | None = None
    # the calibration: its quantities' names and notes, draws (items, N, q) and truths (items, q)
    calibration_names: list[str] = field(default_factory=list)
    calibration_notes: list[str] = field(default_factory=list)
    calibration_draws: np.ndarray | None = None
    calibration_truth: np.ndarray | None = None

    @classmethod
    def start(cls, plan: Plan) -> Measurements:
        """Empty measurements for ``plan``'s items."""
        n, task = plan.options.n, plan.task
        d = task.model.dim
        same_space = task.truth.processors == task.model.processors
        k = plan.options.figure_settings.correlation_samples
        return cls(plan.fns, n, d, np.full(n, np.nan), np.empty((n, d)) if same_space else None,
                   np.empty((n, d)), np.empty((n, d)), {p: np.empty(n) for p in plan.proxies},
                   np.empty((n, k, d)) if "fig4" in plan.figure_keys else None)

    @property
    def metrics(self) -> list[str]:
        """The metrics' names, in the order of results.csv."""
        return list(self.fns)

    def measure(self, i: int, kind: str, audio: np.ndarray, wet: np.ndarray, z: np.ndarray | None,
                entropy: float = math.nan) -> dict[str, np.ndarray]:
        """Scores renders of an item by every metric, keeps them as row ``i`` of
        ``scores[kind]`` and appends their results.csv rows.

        Arguments:
            i: The item's index.
            kind: What was rendered (``model``, ``uniform``, ``default-estimate``, ...).
            audio: The K renders, (K, 1, T).
            wet: The item's wet, (1, T).
            z: Each render's normalised parameters (K, d), or None (empty cells).
            entropy: The item's entropy estimate, for its rows.

        Returns:
            Each metric by name, (K,).
        """
        scores = _score(self.fns, audio, wet)
        table = self.scores.setdefault(kind, {m: np.empty((self.n, len(audio))) for m in self.fns})
        for m in self.fns:
            table[m][i] = scores[m]
        for j in range(len(audio)):
            params = [""] * self.d if z is None else [repr(float(x)) for x in z[j]]
            self.rows.append([i, kind, j, *(repr(float(scores[m][j])) for m in self.fns), repr(float(entropy)), *params])
        return scores


def measure_item(plan: Plan, m: Measurements, item: Item) -> None:
    """Everything measured on one item, in the order of its results.csv rows: the truth, the
    model's candidates rendered by pedalboard (or the synth) and by each proxy, refined, the
    uniform draws, the input (the dry) and the default estimate."""
    task, i, wet, dry = plan.task, item.index, item.wet, item.dry
    z = model_candidates(plan, m, item)
    if m.param_error is not None:
        v_true = item.batch.v[0].astype(np.float64)
        m.param_error[i] = [
            np.abs(r.to_physical(z[:, j]) - r.to_physical(v_true[j])).mean() for j, r in enumerate(task.model.ranges)
        ]
        m.rows.append([i, "truth", 0, *([""] * len(m.fns)), "nan", *(repr(float(x)) for x in v_true)])
    if i == 0:  # Fig. 5's item
        m.item_wet, m.item_v = item.batch.wet, item.batch.v[0]
    rendered = _render_all(task, z, dry)
    m.measure(i, "model", rendered, wet, z, m.entropy[i])
    for p, compressor in plan.proxies.items():
        through = _render_proxy(task, z, dry, compressor)
        m.measure(i, f"proxy-{p}", through, wet, z)
        m.agreement[p][i] = proxy_agreement(m.fns, through, rendered)
    if plan.options.refine:
        z_refined = refine_candidates(plan, z, wet, dry)
        m.measure(i, "refined", _render_all(task, z_refined, dry), wet, z_refined)
    m.measure(i, "uniform", _render_all(task, item.uniform_z, dry), wet, item.uniform_z)
    if not task.has_source:
        m.measure(i, "input", dry[None], wet, None)
    if plan.analyser is not None:
        plot = plan.estimate_plot if i == 0 else None
        if plot is not None:
            plan.out.mkdir(parents=True, exist_ok=True)
        o = plan.options
        m.measure(i, "default-estimate", default_estimate(plan.analyser, wet, dry, o.samples, o.effort, o.seed, plot),
                  wet, None)


def model_candidates(plan: Plan, m: Measurements, item: Item) -> np.ndarray:
    """The model's candidates of one item, z (K, d) float64 from the item's torch seed, and
    what the posterior says besides: its entropy (Eq. 17), the spread of the candidates, the
    marginal entropies (:data:`ENTROPY_SAMPLES` draws of their own seed) and Fig. 4's samples."""
    import torch

    i, d, model, seed = item.index, m.d, plan.model, plan.options.seed
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(item.torch_seed)
        s = model.sample(torch.from_numpy(item.batch.wet), plan.candidates)
    z = snap_to_echoes(plan.task.model, s.z[0].double().numpy(), item_echoes(plan.task, item), plan.task.sample_rate)
    if plan.kind == "posterior" and s.log_prob is not None:
        m.entropy[i] = float(-s.log_prob[0].double().mean()) / (d * math.log(2))  # Eq. 17
    if m.correlation is not None:  # Fig. 4: the drawn samples, topped up to k
        k = m.correlation.shape[1]
        m.correlation[i] = figs.correlation_samples(model, item.batch.wet, z, k, [seed, figs.FIGURE_STREAM, 4, i])
    m.param_spread[i] = z.std(axis=0)
    if plan.kind == "posterior":
        extra, _ = figs.draw(model, item.batch.wet, ENTROPY_SAMPLES, [seed, ENTROPY_STREAM, i])
        m.param_entropy[i] = marginal_entropy_bits(extra[0])
        if plan.options.calibration_draws:
            calibration_item(plan, m, item)
    return z


def item_echoes(task, item: Item) -> np.ndarray | None:
    """The echo times of an item's wet that the estimate snaps its drawn delay times to
    (:func:`afxest.propose.echo_times`; None without a delay in the chain)."""
    return echo_times(task.model, item.batch.wet[0].astype(np.float64), task.sample_rate)


def calibration_item(plan: Plan, m: Measurements, item: Item) -> None:
    """The calibration's draws of one item (:data:`CALIBRATION_DRAWS` by default, their own
    seed; from the calibrated posterior where the model has a calibration) and its truth, as the
    quantities :func:`afxest.calibration.identifiable` defines."""
    from afxest.calibration import identifiable

    from afxest.temper import tempered

    n, i = plan.options.calibration_draws, item.index
    stored = plan.loaded.calibration
    with tempered(plan.model.head, None if stored is None else stored.temperature):
        z, _ = figs.draw(plan.model, item.batch.wet, n, [plan.options.seed, CALIBRATION_STREAM, i])
    z = snap_to_echoes(plan.task.model, z[0], item_echoes(plan.task, item), plan.task.sample_rate,
                       np.random.default_rng([plan.options.seed, CALIBRATION_STREAM, i]))[None]
    names, draws, truth, notes = identifiable(plan.task, z, item.batch.v[:1].astype(np.float64))
    if m.calibration_draws is None:
        m.calibration_names, m.calibration_notes = names, notes
        m.calibration_draws = np.empty((m.n, n, len(names)))
        m.calibration_truth = np.empty((m.n, len(names)))
    m.calibration_draws[i], m.calibration_truth[i] = draws[0], truth[0]


def proxy_agreement(fns: dict[str, Callable], through: np.ndarray, rendered: np.ndarray) -> float:
    """The mean SI-SDR of proxy renders ``through`` against pedalboard's renders of the same
    candidates ``rendered`` (K, 1, T)."""
    import torch

    return float(fns["si_sdr"](torch.from_numpy(through), torch.from_numpy(rendered)).double().mean())


def refine_candidates(plan: Plan, z: np.ndarray, wet: np.ndarray, dry: np.ndarray | None) -> np.ndarray:
    """The candidates z (K, d) refined by :func:`afxest.search.refine` (Adam on logit(z), at
    most ``refine`` steps) through the differentiable processors, the task's loss against the
    wet (1, T), the dry (1, T) known (None: a synth); each candidate's best iterate, (K, d)."""
    import torch

    from afxest.engines import render_model
    from afxest.search import refine

    def batch(signal: np.ndarray):
        return torch.from_numpy(np.array(np.broadcast_to(signal, (len(z), *signal.shape)), dtype=np.float32))

    x = None if dry is None else batch(dry)
    with torch.enable_grad():
        return refine(lambda zs: render_model(plan.task, zs, x), plan.refine_loss, z, batch(wet), plan.options.refine).z


# ---------------------------------------------------------------------------------------------
# the summary and the outputs


def _expectation(scores: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """The expectation of DAFx 2025, Eq. 18: per item the mean over its candidates, then mean and
    std over items."""
    return {m: _mean_std(v.mean(axis=1)) for m, v in scores.items()}


def _best(scores: dict[str, np.ndarray], k: int) -> dict[str, tuple[float, float]]:
    """Per item the best of the first ``k`` candidates by each metric, then mean and std over items."""
    return {m: _mean_std(best_of_n(v, k, LOWER_IS_BETTER[m])) for m, v in scores.items()}


def _first(scores: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """The mean and std over items of each item's first candidate."""
    return {m: _mean_std(v[:, 0]) for m, v in scores.items()}


def summarise(plan: Plan, m: Measurements) -> Evaluation:
    """The summary tables of the measurements: expectation and entropy, best of N (always the
    best of all candidates), the baselines, the parameters, the refined, proxy and default
    estimate rows."""
    task, kind, n_cand, s = plan.task, plan.kind, plan.candidates, m.scores
    names = task.model.names
    result = Evaluation(task=task.name, kind=kind, items=m.n, samples=n_cand, metrics=m.metrics,
                        source=plan.source_name)
    result.expectation = _expectation(s["model"])
    if kind == "posterior":
        result.entropy = _mean_std(m.entropy)
    best_ks = [k for k in sorted({*BEST_OF, n_cand}) if k <= n_cand]  # always the best of all candidates
    result.best_of = {k: _best(s["model"], k) for k in best_ks}
    if "input" in s:
        result.input_baseline = _first(s["input"])
    if m.param_error is not None:
        result.param_error = {name: _mean_std(m.param_error[:, j]) for j, name in enumerate(names)}
        result.param_units = {name: r.param.unit for name, r in zip(names, task.model.ranges)}
    if kind == "posterior":
        result.param_spread = {name: _mean_std(m.param_spread[:, j]) for j, name in enumerate(names)}
        result.param_entropy = {name: _mean_std(m.param_entropy[:, j]) for j, name in enumerate(names)}
    if m.calibration_draws is not None:
        from afxest.calibration import LEVELS, calibrate

        stored = plan.loaded.calibration  # the model's recalibrated interval levels (afxest.temper), if any
        result.calibration = calibrate(m.calibration_draws, m.calibration_truth, m.calibration_names,
                                       m.calibration_notes, rng=np.random.default_rng([plan.options.seed, CALIBRATION_STREAM]),
                                       interval_levels=None if stored is None else {a: stored.level(a) for a in LEVELS})
    if plan.options.refine:
        result.refine_steps = plan.options.refine
        result.refined_expectation = _expectation(s["refined"])
        result.refined_best_of = {k: _best(s["refined"], k) for k in best_ks}
    for p in plan.proxies:
        result.proxy_expectation[p] = _expectation(s[f"proxy-{p}"])
        result.proxy_best[p] = _best(s[f"proxy-{p}"], n_cand)
        result.proxy_agreement[p] = _mean_std(m.agreement[p])
    if plan.analyser is not None:
        result.effort = plan.options.effort
        result.default_estimate = _first(s["default-estimate"])
    result.uniform_mean = _first(s["uniform"])
    result.uniform_best10 = _best(s["uniform"], UNIFORM_CANDIDATES)
    result.figures_note = plan.figures_note
    return result


def results_csv(m: Measurements, names: list[str]) -> str:
    """results.csv: a header (item, kind, candidate, the metrics, entropy_bits, the normalised
    parameters by name), then the measured rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["item", "kind", "candidate", *m.metrics, "entropy_bits", *names])
    writer.writerows(m.rows)
    return buf.getvalue()


def calibration_csv(m: Measurements, calibration) -> str:
    """calibration.csv: per item and calibrated quantity, the truth and its rank among the draws
    (:func:`afxest.calibration.ranks`), with the number of draws."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["item", "quantity", "truth", "rank", "draws"])
    r = calibration.ranks
    for i in range(m.n):
        for j, name in enumerate(m.calibration_names):
            writer.writerow([i, name, repr(float(m.calibration_truth[i, j])), int(r[i, j]), calibration.draws])
    return buf.getvalue()


def write_outputs(plan: Plan, m: Measurements, result: Evaluation) -> None:
    """Writes results.csv, calibration.csv (a posterior), the figures (recorded in ``result``)
    and report.md into ``plan.out``."""
    out, options, task = plan.out, plan.options, plan.task
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RESULTS_FILE, results_csv(m, task.model.names))
    if result.calibration is not None:
        atomic_write_text(out / CALIBRATION_FILE, calibration_csv(m, result.calibration))
    if plan.figure_keys:
        options.log(f"drawing {len(plan.figure_keys)} figure(s)")
        result.figures = figs.write_figures(
            plan.loaded, out, plan.figure_keys, m.correlation, m.item_wet, m.item_v, compare=options.compare,
            settings=options.figure_settings, seed=options.seed, log=options.log,
        )
        result.figures_note = figs.not_applicable_note(task, plan.kind)
    if result.calibration is not None and options.figures and figs.matplotlib_available():
        result.calibration_figures = figs.write_calibration_figures(out, result.calibration, task.name, options.figure_settings.dpi)
    if plan.estimate_plot is not None:
        result.figures.append(figs.WrittenFigure("estimate", plan.estimate_plot.name, (
            f"The default estimate (--effort {options.effort}) of test item 0, as `afxest estimate --plot` draws it: "
            "the top candidates' equaliser responses and compressor curves, or the spectra of wet and rank 1.")))
    atomic_write_text(out / REPORT_FILE, report_markdown(result, plan.loaded))


def check_compare(loaded, compare) -> None:
    """Refuses a ``--compare`` model that is not a deterministic (or parameter) model of the same task."""
    if compare is None:
        return
    if compare.task.name != loaded.task.name:
        raise UserError(f"--compare {compare.name}: a {compare.task.name!r} model; the evaluated one is {loaded.task.name!r}")
    if compare.kind == "posterior":
        raise UserError(f"--compare {compare.name}: a posterior model; give a deterministic one (its estimate is marked)")


def report_folder_name(name: str) -> str:
    """The subfolder of ``--out`` for a compared model: its name (or path) as one safe component."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def check_comparable(loaded, others) -> None:
    """Refuses models compared with ``loaded`` (``--also``) that are of another task or named twice."""
    folders = {report_folder_name(loaded.name)}
    for other in others:
        if other.task.name != loaded.task.name:
            raise UserError(f"--also {other.name}: a model of task {other.task.name!r}, not {loaded.task.name!r}")
        folder = report_folder_name(other.name)
        if folder in folders:
            raise UserError(f"--also {other.name}: given twice (or named like another model); compare distinct ones")
        folders.add(folder)
