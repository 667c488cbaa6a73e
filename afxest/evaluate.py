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
* with ``refine`` > 0: every candidate improved by that many steps of inference-time
  optimisation (:func:`afxest.estimate.refine_candidates`: Adam on logit(z) through the
  differentiable processors, the task's training loss against the wet, the dry known, as
  ``afxest estimate --refine``), then rendered with pedalboard and scored like the others;
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from afxest import figures as figs
from afxest.audio import atomic_write_text
from afxest.errors import UserError
from afxest.tables import report_markdown

ITEM_STREAM = 2_000_003
ENTROPY_STREAM = 2_000_011  # seeds of the extra draws for the marginal entropies
ENTROPY_SAMPLES = 1000
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


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std())


def marginal_entropy_bits(z: np.ndarray, bins: int = ENTROPY_BINS) -> np.ndarray:
    """Differential entropy in bits of each column of samples z (n, d) in [0, 1]: the plug-in
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
    """Per item (rows) the best of the first ``n`` candidates (columns)."""
    head = per_candidate[:, :n]
    return head.min(axis=1) if lower_is_better else head.max(axis=1)


def _metric_fns(task):
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
    """Render each normalised model vector of z (n, d) with pedalboard (or the synth)."""
    from afxest.engines import render

    out = np.empty((len(z), 1, task.clip_samples), np.float32)
    for j, v in enumerate(z):
        preset = task.model.preset(v.astype(np.float64), task.name, task.sample_rate)
        y = render(preset, dry, task.sample_rate, "pedalboard")
        out[j] = y[:, : task.clip_samples] if y.shape[-1] >= task.clip_samples else np.pad(
            y, ((0, 0), (0, task.clip_samples - y.shape[-1]))
        )
    return out


def _render_proxy(task, z: np.ndarray, dry: np.ndarray, compressor) -> np.ndarray:
    """Render each normalised model vector of z (n, d) with afxest's differentiable processors,
    ``compressor`` in place of the dsp compressor (None: the dsp one): (n, 1, frames)."""
    import torch

    from afxest.objective import render_model

    x = torch.from_numpy(np.array(np.broadcast_to(dry, (len(z), *dry.shape)), dtype=np.float32))
    with torch.no_grad():
        y = render_model(task, torch.from_numpy(z.astype(np.float32)), x, clip_gradient=False, compressor=compressor)
    return y.numpy()


def default_estimate(analyser, wet: np.ndarray, dry: np.ndarray | None, samples: int, effort: str, seed: int,
                     plot: Path | None = None) -> np.ndarray:
    """Rank 1 of :meth:`afxest.estimate.Analyser.estimate` for one item (wet (1, T), dry (1, T)
    or None), with its search at ``effort``, rendered by pedalboard (or the synth): (1, 1, T).
    With ``plot``, the estimate's figure (:func:`afxest.figures.plot_estimate`) is written there."""
    import tempfile

    import soundfile

    from afxest.estimate import EstimateOptions

    task = analyser.task
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for name, x in (("wet", wet), ("dry", dry)):
            if x is not None:
                paths.append(Path(folder) / f"{name}.wav")
                soundfile.write(paths[-1], x[0], task.sample_rate, subtype="FLOAT")
        options = EstimateOptions(samples=samples, effort=effort, seed=seed, audio="none")
        document, presets, _ = analyser.estimate(paths[0], paths[1] if dry is not None else None, options)
    if plot is not None:
        document["wet"] = "test item 0"
        figs.plot_estimate(plot, document, presets, wet[0] if dry is None else None)
    z = np.array([[r.to_normalised(v) for r, v in zip(task.model.ranges, _values(presets[0], task))]])
    return _render_all(task, z, dry)


def _values(preset, task) -> list[float]:
    """A preset's estimated parameters in the order of ``task.model.ranges`` (physical units)."""
    processors = ([preset.source] if preset.source is not None else []) + list(preset.effects)
    return [proc.params[r.name] for space, proc in zip(task.model.processors, processors) for r in space.ranges]


def evaluate(
    loaded,
    out: Path,
    data: Path | None = None,
    n: int = 256,
    samples: int = 10,
    seed: int = 0,
    force: bool = False,
    log: Callable[[str], None] = print,
    figures: bool = True,
    compare=None,
    figure_settings: figs.FigureSettings = figs.FigureSettings(),
    refine: int = 0,
    proxy_model: Path | None = None,
    effort: str | None = None,
) -> Evaluation:
    """Evaluate a loaded model (:class:`afxest.store.LoadedModel`); writes ``out/report.md``,
    ``out/results.csv`` and, with ``figures``, the PNG figures that apply (DAFx 2025 Figs. 4-8;
    without matplotlib they are skipped with one message), and returns the summary.

    ``compare``: a loaded deterministic (or parameter) model of the same task whose estimate is
    marked on Figs. 5-7. ``refine``: steps of inference-time optimisation of every candidate
    (reported separately). ``proxy_model``: a trained compressor proxy (``afxest train-proxy``)
    whose renders are scored too (tasks with a compressor; the dsp proxy always is). ``effort``
    (``fast``, ``default``, ``best``): also the rank 1 of ``afxest estimate`` given the dry (or,
    for a synth, the wet) as its reference, with the search of :mod:`afxest.search` at that
    effort ("default estimate"; the item's wet and dry are handed over as float WAV files)."""
    import torch

    from afxest.data import DrySource, MusicFolder, make_batch
    from afxest.estimate import refine_candidates
    from afxest.nn.proxy import load_task_proxy
    from afxest.objective import task_loss

    if n < 1:
        raise UserError("--n must be at least 1")
    if samples < 1:
        raise UserError("--samples must be at least 1")
    if refine < 0:
        raise UserError("--refine must be at least 0")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (--out expects a folder)")
    task, model, kind = loaded.task, loaded.estimator, loaded.kind
    check_compare(loaded, compare)
    proxies: dict[str, Any] = {}
    if any(p.type == "compressor" for p in task.model.processors) and not task.has_source:
        proxies["dsp"] = None
    if proxy_model is not None:
        proxies["neural"] = load_task_proxy(proxy_model, task)
    figure_keys: list[str] = []
    figures_note = None if figures else "Figures: not requested (--no-figures)."
    if figures:
        if figs.matplotlib_available():
            figure_keys = figs.applicable(task, kind)
        else:
            log(figs.MATPLOTLIB_MISSING)
            figures_note = "Figures: not written: matplotlib is not installed (`pip install 'afxest[plots]'`)."
    # the default estimate's figure of item 0 (as ``estimate --plot`` draws it)
    estimate_plot = out / figs.EVALUATE_ESTIMATE_PLOT if effort is not None and figures and figs.matplotlib_available() else None
    report_path, csv_path = out / "report.md", out / "results.csv"
    for path in (report_path, csv_path, *(out / figs.FILES[k] for k in figure_keys), *([estimate_plot] if estimate_plot else [])):
        if not force and path.exists():
            raise UserError(f"{path}: exists (use --force to overwrite)")
    model = model.to("cpu").eval()
    if compare is not None:
        compare.estimator.to("cpu").eval()
    n_cand = samples if kind == "posterior" else 1

    source = None
    if task.has_source:
        source_name = "synth"
    elif data is None:
        source_name = "procedural"
        log("no --data: evaluating on procedural music (not the paper's test set)")
        source = DrySource(None, task.sample_rate)
    else:
        source_name = "music"
        folder = MusicFolder(Path(data), task.sample_rate, "test", min_seconds=task.clip_seconds).prepare()
        if not folder.tracks:
            raise UserError(f"{data}: no test-split track is {task.clip_seconds:g} s long")
        source = DrySource(folder, task.sample_rate)

    fns = _metric_fns(task)
    metrics = list(fns)
    d = task.model.dim
    names = task.model.names
    model_scores = {m: np.empty((n, n_cand)) for m in metrics}
    refined_scores = {m: np.empty((n, n_cand)) for m in metrics}
    same_space = task.truth.processors == task.model.processors
    param_error = np.empty((n, d)) if same_space else None
    param_spread = np.empty((n, d))
    param_entropy = np.empty((n, d))
    refine_loss = task_loss(task, torch.device("cpu")) if refine else None
    uniform_scores = {m: np.empty((n, UNIFORM_CANDIDATES)) for m in metrics}
    proxy_scores = {p: {m: np.empty((n, n_cand)) for m in metrics} for p in proxies}
    proxy_agreement = {p: np.empty(n) for p in proxies}
    input_scores = {m: np.empty(n) for m in metrics} if not task.has_source else None
    estimate_scores = {m: np.empty(n) for m in metrics}
    analyser = None
    if effort is not None:
        from afxest.estimate import Analyser
        from afxest.search import EFFORTS

        if effort not in EFFORTS:
            raise UserError(f"unknown effort {effort!r} ({', '.join(EFFORTS)})")
        analyser = Analyser(loaded)
    entropy = np.full(n, np.nan)
    rows: list[list[Any]] = []
    k_corr = figure_settings.correlation_samples
    correlation = np.empty((n, k_corr, d)) if "fig4" in figure_keys else None
    item_wet, item_v = None, None

    for i in range(n):
        rng = np.random.default_rng([seed, ITEM_STREAM, i])
        batch = make_batch(task, source, rng, 1)
        wet = batch.wet[0]
        dry = None if batch.dry is None else batch.dry[0]
        torch_seed = int(rng.integers(0, 2**62))
        uniform_z = rng.random((UNIFORM_CANDIDATES, d))
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            s = model.sample(torch.from_numpy(batch.wet), n_cand)
        z = s.z[0].double().numpy()
        if kind == "posterior" and s.log_prob is not None:
            entropy[i] = float(-s.log_prob[0].double().mean()) / (d * math.log(2))  # Eq. 17
        if correlation is not None:  # Fig. 4: the drawn samples, topped up to k_corr
            correlation[i] = figs.correlation_samples(model, batch.wet, z, k_corr, [seed, figs.FIGURE_STREAM, 4, i])
        param_spread[i] = z.std(axis=0)
        if kind == "posterior":
            extra, _ = figs.draw(model, batch.wet, ENTROPY_SAMPLES, [seed, ENTROPY_STREAM, i])
            param_entropy[i] = marginal_entropy_bits(extra[0])
        if param_error is not None:
            v_true = batch.v[0].astype(np.float64)
            param_error[i] = [
                np.abs(r.to_physical(z[:, j]) - r.to_physical(v_true[j])).mean() for j, r in enumerate(task.model.ranges)
            ]
            rows.append([i, "truth", 0, *([""] * len(metrics)), "nan", *(repr(float(x)) for x in v_true)])
        if i == 0:  # Fig. 5's item
            item_wet, item_v = batch.wet, batch.v[0]
        rendered = _render_all(task, z, dry)
        scores = _score(fns, rendered, wet)
        for m in metrics:
            model_scores[m][i] = scores[m]
        for j in range(n_cand):
            rows.append([i, "model", j, *(repr(float(scores[m][j])) for m in metrics), repr(float(entropy[i])), *(repr(float(x)) for x in z[j])])
        for p, compressor in proxies.items():
            through = _render_proxy(task, z, dry, compressor)
            scores = _score(fns, through, wet)
            for m in metrics:
                proxy_scores[p][m][i] = scores[m]
            for j in range(n_cand):
                rows.append([i, f"proxy-{p}", j, *(repr(float(scores[m][j])) for m in metrics), "nan", *(repr(float(x)) for x in z[j])])
            proxy_agreement[p][i] = float(fns["si_sdr"](torch.from_numpy(through), torch.from_numpy(rendered)).double().mean())
        if refine:
            y = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(wet, (n_cand, *wet.shape)), dtype=np.float32))
            x = None if dry is None else torch.from_numpy(
                np.ascontiguousarray(np.broadcast_to(dry, (n_cand, *dry.shape)), dtype=np.float32))
            z_refined = refine_candidates(task, refine_loss, z, y, x, refine)
            scores = _score(fns, _render_all(task, z_refined, dry), wet)
            for m in metrics:
                refined_scores[m][i] = scores[m]
            for j in range(n_cand):
                rows.append([i, "refined", j, *(repr(float(scores[m][j])) for m in metrics), "nan", *(repr(float(x)) for x in z_refined[j])])
        scores = _score(fns, _render_all(task, uniform_z, dry), wet)
        for m in metrics:
            uniform_scores[m][i] = scores[m]
        for j in range(UNIFORM_CANDIDATES):
            rows.append([i, "uniform", j, *(repr(float(scores[m][j])) for m in metrics), "nan", *(repr(float(x)) for x in uniform_z[j])])
        if input_scores is not None:
            scores = _score(fns, dry[None], wet)
            for m in metrics:
                input_scores[m][i] = scores[m][0]
            rows.append([i, "input", 0, *(repr(float(scores[m][0])) for m in metrics), "nan", *([""] * d)])
        if analyser is not None:
            if i == 0 and estimate_plot is not None:
                out.mkdir(parents=True, exist_ok=True)
            plot = estimate_plot if i == 0 else None
            scores = _score(fns, default_estimate(analyser, wet, dry, samples, effort, seed, plot), wet)
            for m in metrics:
                estimate_scores[m][i] = scores[m][0]
            rows.append([i, "default-estimate", 0, *(repr(float(scores[m][0])) for m in metrics), "nan", *([""] * d)])
        if n >= 20 and (i + 1) % max(1, n // 10) == 0 and i + 1 < n:
            log(f"evaluated {i + 1}/{n} items")

    result = Evaluation(task=task.name, kind=kind, items=n, samples=n_cand, metrics=metrics, source=source_name)
    result.expectation = {m: _mean_std(model_scores[m].mean(axis=1)) for m in metrics}
    if kind == "posterior":
        result.entropy = _mean_std(entropy)
    best_ks = [k for k in sorted({*BEST_OF, n_cand}) if k <= n_cand]  # always the best of all candidates
    for k in best_ks:
        result.best_of[k] = {m: _mean_std(best_of_n(model_scores[m], k, LOWER_IS_BETTER[m])) for m in metrics}
    if input_scores is not None:
        result.input_baseline = {m: _mean_std(input_scores[m]) for m in metrics}
    if param_error is not None:
        result.param_error = {name: _mean_std(param_error[:, j]) for j, name in enumerate(names)}
        result.param_units = {name: r.param.unit for name, r in zip(names, task.model.ranges)}
    if kind == "posterior":
        result.param_spread = {name: _mean_std(param_spread[:, j]) for j, name in enumerate(names)}
        result.param_entropy = {name: _mean_std(param_entropy[:, j]) for j, name in enumerate(names)}
    if refine:
        result.refine_steps = refine
        result.refined_expectation = {m: _mean_std(refined_scores[m].mean(axis=1)) for m in metrics}
        for k in best_ks:
            result.refined_best_of[k] = {
                m: _mean_std(best_of_n(refined_scores[m], k, LOWER_IS_BETTER[m])) for m in metrics}
    for p in proxies:
        result.proxy_expectation[p] = {m: _mean_std(proxy_scores[p][m].mean(axis=1)) for m in metrics}
        result.proxy_best[p] = {m: _mean_std(best_of_n(proxy_scores[p][m], n_cand, LOWER_IS_BETTER[m])) for m in metrics}
        result.proxy_agreement[p] = _mean_std(proxy_agreement[p])
    if analyser is not None:
        result.effort = effort
        result.default_estimate = {m: _mean_std(estimate_scores[m]) for m in metrics}
    result.uniform_mean = {m: _mean_std(uniform_scores[m][:, 0]) for m in metrics}
    result.uniform_best10 = {
        m: _mean_std(best_of_n(uniform_scores[m], UNIFORM_CANDIDATES, LOWER_IS_BETTER[m])) for m in metrics
    }

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["item", "kind", "candidate", *metrics, "entropy_bits", *names])
    writer.writerows(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(csv_path, buf.getvalue())
    if figure_keys:
        log(f"drawing {len(figure_keys)} figure(s)")
        result.figures = figs.write_figures(
            loaded, out, figure_keys, correlation, item_wet, item_v, compare=compare,
            settings=figure_settings, seed=seed, log=log,
        )
        figures_note = figs.not_applicable_note(task, kind)
    if estimate_plot is not None:
        result.figures.append(figs.WrittenFigure("estimate", estimate_plot.name, (
            f"The default estimate (--effort {effort}) of test item 0, as `afxest estimate --plot` draws it: "
            "the top candidates' equaliser responses and compressor curves, or the spectra of wet and rank 1.")))
    result.figures_note = figures_note
    atomic_write_text(report_path, report_markdown(result, loaded))
    return result


def check_compare(loaded, compare) -> None:
    """A ``--compare`` model must be a deterministic (or parameter) model of the same task."""
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
    """Models compared with ``loaded`` (``--also``) must be of its task, each named once."""
    folders = {report_folder_name(loaded.name)}
    for other in others:
        if other.task.name != loaded.task.name:
            raise UserError(f"--also {other.name}: a model of task {other.task.name!r}, not {loaded.task.name!r}")
        folder = report_folder_name(other.name)
        if folder in folders:
            raise UserError(f"--also {other.name}: given twice (or named like another model); compare distinct ones")
        folders.add(folder)
