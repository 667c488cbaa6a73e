"""The ``afxest`` command line: a thin Typer layer over the library.

Conventions: results go to files (or stdout with ``--json``), messages to stderr; bad usage or
bad input exits with code 2 and one line on stderr, an internal failure with code 1.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from afxest import __version__
from afxest.choices import BIT_DEPTHS, CALIBRATION_DRAWS, DEVICES, EFFORTS, ENGINES, ESTIMATORS, OBJECTIVES, PROXIES, SCHEDULES
from afxest.errors import TrainingDiverged, UserError, shortened

app = typer.Typer(
    name="afxest",
    help="Estimate the audio effects and synth presets that produced a recording.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err = Console(stderr=True, highlight=False)
SEED_MAX = 2**63 - 1  # seeds are 64-bit signed integers for torch and numpy alike
MAX_SAMPLES = 1000  # estimate --samples: scoring holds about 1 MB per candidate and 5 s window
DEVICE_HELP = "Torch device (auto: cuda when available, else the CPU)."


def _choices(name: str, values: Iterable[str]) -> type[Enum]:
    """A str Enum of ``values`` (a library tuple) for a Typer option; members are named by value."""
    return Enum(name, {value: value for value in values}, type=str)


Engine = _choices("Engine", ("auto", *ENGINES))
EstimateEngine = _choices("EstimateEngine", ENGINES)
BitDepth = _choices("BitDepth", BIT_DEPTHS)
Estimator = _choices("Estimator", ESTIMATORS)
Schedule = _choices("Schedule", SCHEDULES)
Objective = _choices("Objective", OBJECTIVES)
Proxy = _choices("Proxy", PROXIES)
Effort = _choices("Effort", EFFORTS)
Device = _choices("Device", DEVICES)


def _say(message: str, warning: bool = False) -> None:
    """One message line on stderr: never parsed as markup, never wrapped."""
    from rich.text import Text

    line = Text("warning: ", style="yellow") + Text(message) if warning else Text(message)
    err.print(line, soft_wrap=True)


def _print_wide(renderable) -> None:
    """A table on stderr: the terminal's width, or 160 columns when stderr is not a terminal."""
    (err if err.is_terminal else Console(stderr=True, highlight=False, width=160)).print(renderable)


def _version(value: bool) -> None:
    """Prints the version and exits (the eager ``--version`` callback)."""
    if value:
        print(f"afxest {__version__}")
        raise typer.Exit()


# The docstrings of the callback and of the commands below are their --help text, written as
# command-line help is (imperative); changing them changes what users read.
@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Estimate the audio effects and synth presets that produced a recording."""
    if ctx.invoked_subcommand is None:
        print(ctx.get_help())


@app.command()
def render(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="[DRY] PRESET",
            help="Dry audio file and a preset (or estimate) JSON; a preset with a synth source needs no dry file.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output audio file (.wav or .flac).", show_default=False)],
    engine: Annotated[
        Engine, typer.Option(help="pedalboard: the real plugins; ddsp: afxest's torch processors; auto: pedalboard when every effect has a plugin.")
    ] = Engine.auto,
    candidate: Annotated[int, typer.Option(min=1, help="Rank of the candidate to render from an estimate file.")] = 1,
    bit_depth: Annotated[BitDepth, typer.Option(help="Output sample format.")] = BitDepth.float,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Apply a preset to a dry file (at the dry's own sample rate and channels), or synthesise it."""
    from afxest.render import render_file

    if len(inputs) > 2:
        raise UserError(f"render takes [DRY] PRESET, got {len(inputs)} paths")
    dry, preset = (None, inputs[0]) if len(inputs) == 1 else inputs
    report = render_file(
        dry=dry,
        preset_path=preset,
        out=out,
        engine=None if engine is Engine.auto else engine.value,
        candidate=candidate,
        bit_depth=bit_depth.value,
        force=force,
    )
    _say(report.summary())
    if report.clipped_samples:
        _say(
            f"{report.clipped_samples} samples beyond full scale were clipped by the "
            f"{bit_depth.value}-bit write; use --bit-depth float to keep them",
            warning=True,
        )


@app.command()
def train(
    task: Annotated[str, typer.Option(help="Task to train (see docs/training.md).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Run folder: best.pt, last.pt, metrics.jsonl, config.json.", show_default=False)],
    estimator: Annotated[Estimator, typer.Option(help="posterior (DAFx 2025), deterministic (ICASSP 2024), param (parameter-loss baseline) or bins (parameter loss on binned outputs: finer, for fm).")] = Estimator.posterior,
    flows: Annotated[int, typer.Option(min=1, help="Deep sigmoidal flow layers T (posterior).")] = 1,
    beta: Annotated[Optional[float], typer.Option(help="Entropy weight (posterior); default: the task's.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Folder of music (any format, rate, length); default: procedural audio.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Stop after N optimiser steps.")] = None,
    epochs: Annotated[Optional[float], typer.Option(min=0, help="Stop after N epochs (the task's items per epoch, as in the papers).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Global batch size; default: the task's.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="AdamW learning rate; default: the task's.")] = None,
    device: Annotated[Device, typer.Option(help=DEVICE_HELP)] = Device.auto,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed (data, parameters, initialisation).")] = 0,
    val_items: Annotated[int, typer.Option(min=1, help="Validation items (fixed for a seed).")] = 128,
    val_every: Annotated[int, typer.Option(min=1, help="Validate every N steps.")] = 200,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Write last.pt every N steps.")] = 50,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from last.pt.")] = False,
    init: Annotated[Optional[Path], typer.Option(help="Start from a checkpoint's weights (same task): its encoder, and its head when of the same kind (param and deterministic heads are alike).", show_default=False)] = None,
    schedule: Annotated[Schedule, typer.Option(help="Learning rate: constant, or cosine annealing to 0 at the last step.")] = Schedule.constant,
    proxy: Annotated[Proxy, typer.Option(help="Compressor in training (tasks with one): dsp (exact), neural (a TCN proxy) or hybrid (exact output, the proxy's gradients); see docs/master.md.")] = Proxy.dsp,
    proxy_model: Annotated[Optional[Path], typer.Option(help="Proxy checkpoint from afxest train-proxy (--proxy neural or hybrid).", show_default=False)] = None,
    excerpt_seconds: Annotated[Optional[float], typer.Option(help="Train on excerpts this long (effect tasks; validation keeps the task's clip); default: the task's (2.5 s for eq and master). See docs/training.md.", show_default=False)] = None,
    objective: Annotated[Objective, typer.Option(help="A posterior's loss: audio (DAFx 2025: the expected audio loss minus beta H) likelihood (-ln p(truth | wet), neural posterior estimation) or hybrid (the first plus a weight times the second). See docs/training.md.")] = Objective.audio,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Train an estimator (runs data-parallel under torchrun)."""
    from afxest.runs import enlarge_malloc_thresholds
    from afxest.train import TrainConfig, train as run_training

    enlarge_malloc_thresholds()
    result = run_training(
        TrainConfig(
            task=task, out=str(out), estimator=estimator.value, flows=flows, beta=beta,
            data=None if data is None else str(data), max_steps=max_steps, epochs=epochs,
            batch_size=batch_size, lr=lr, device=device.value, seed=seed, val_items=val_items,
            val_every=val_every, checkpoint_every=checkpoint_every, resume=resume,
            init=None if init is None else str(init), schedule=schedule.value, proxy=proxy.value,
            proxy_model=None if proxy_model is None else str(proxy_model), excerpt_seconds=excerpt_seconds,
            objective=objective.value,
        ),
        log=_say,
        progress=progress and err.is_terminal,
    )
    best = "none" if result.best_objective is None else f"{result.best_objective:.4f} at step {result.best_step}"
    _say(f"done: {result.steps} steps; best validation objective {best}; run in {out}")


@app.command("train-proxy")
def train_proxy(
    out: Annotated[Path, typer.Option("--out", help="Run folder: best.pt, last.pt, metrics.jsonl, config.json.", show_default=False)],
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Stop after N optimiser steps.", show_default=False)] = None,
    task: Annotated[Optional[str], typer.Option(help="Task whose compressor ranges (and chain before it) the proxy learns; default master.", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option(help="Folder of music (its train/val splits); default: procedural audio.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Excerpts per step.", show_default=False)] = None,
    segment_seconds: Annotated[Optional[float], typer.Option(help="Excerpt length in seconds.", show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option(help="AdamW learning rate.", show_default=False)] = None,
    channels: Annotated[Optional[int], typer.Option(min=1, help="TCN channels.", show_default=False)] = None,
    kernel_size: Annotated[Optional[int], typer.Option(min=2, help="TCN kernel size.", show_default=False)] = None,
    blocks: Annotated[Optional[int], typer.Option(min=1, help="TCN blocks (dilation growth^k in block k).", show_default=False)] = None,
    dilation_growth: Annotated[Optional[int], typer.Option(min=1, help="Dilation factor between blocks.", show_default=False)] = None,
    device: Annotated[Device, typer.Option(help=DEVICE_HELP)] = Device.auto,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
    val_items: Annotated[Optional[int], typer.Option(min=1, help="Validation excerpts (fixed for a seed).", show_default=False)] = None,
    val_every: Annotated[Optional[int], typer.Option(min=1, help="Validate every N steps.", show_default=False)] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(min=1, help="Write last.pt every N steps.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from last.pt.")] = False,
) -> None:
    """Train the neural compressor proxy (causal TCN with FiLM, ICASSP 2024) to mimic pedalboard's
    Compressor. Options left out take the defaults listed in docs/master.md."""
    from afxest.runs import enlarge_malloc_thresholds
    from afxest.train_proxy import ProxyTrainConfig, train_proxy as run

    given = dict(
        task=task, max_steps=max_steps, batch_size=batch_size, segment_seconds=segment_seconds, lr=lr,
        channels=channels, kernel_size=kernel_size, blocks=blocks, dilation_growth=dilation_growth,
        val_items=val_items, val_every=val_every, checkpoint_every=checkpoint_every,
    )
    config = ProxyTrainConfig(
        out=str(out), data=None if data is None else str(data), device=device.value, seed=seed, resume=resume,
        **{k: v for k, v in given.items() if v is not None},
    )
    enlarge_malloc_thresholds()
    metrics = run(config, log=_say)
    summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    _say(f"done: {config.max_steps} steps; {summary}; proxy in {out / 'best.pt'}")


@app.command()
def estimate(
    wets: Annotated[
        list[Path], typer.Argument(metavar="WET...", help="Processed audio files (any format, rate, channels).", show_default=False)
    ],
    dry: Annotated[
        Optional[list[Path]],
        typer.Option("--dry", help="Dry file(s), paired with the wet files in order (repeat --dry), one for all, or a folder matched by file name.", show_default=False),
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name (see afxest models) or checkpoint path; default: master, else eq.", show_default=False)] = None,
    samples: Annotated[int, typer.Option(min=1, max=MAX_SAMPLES, help="Candidates to draw from the posterior.")] = 10,
    engine: Annotated[EstimateEngine, typer.Option(help="Renderer for ranking with a dry file: pedalboard (the real plugins) or ddsp.")] = EstimateEngine.pedalboard,
    refine: Annotated[Optional[int], typer.Option(min=0, help="With a reference (a dry file, or a synth's wet): the search's step cap per refinement; 0 turns the search off (the posterior draws alone, ranked). Default: the --effort's cap.", show_default=False)] = None,
    effort: Annotated[Effort, typer.Option(help="How hard the search works when a reference exists (docs/estimate.md).")] = Effort.default,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder that receives <wet name>/estimate.json and audio.")] = Path("."),
    json_out: Annotated[bool, typer.Option("--json", help="Print each estimate as one JSON line on stdout.")] = False,
    device: Annotated[Device, typer.Option(help=DEVICE_HELP)] = Device.auto,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed (the same seed gives the same estimate).")] = 0,
    audio_all: Annotated[bool, typer.Option("--audio-all", help="Write the audio of every candidate, not only the best.")] = False,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Write no audio.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace existing estimates.")] = False,
    plot: Annotated[bool, typer.Option("--plot", help="Also write estimate.png: the equaliser responses and compressor curves of the top candidates, or a synth's spectra (needs matplotlib: the plots extra).")] = False,
    correction: Annotated[bool, typer.Option("--correction/--no-correction", help="With a dry file: correct the best candidate by an equaliser (graphic, or an FIR) and a limiter where the task's chain cannot hold the wet (docs/estimate.md); --no-correction gives the task's chain alone.")] = True,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Estimate the effect or synth preset behind each wet file: ranked candidates and a summary."""
    from afxest.audio import check_out_dir
    from afxest.device import resolve_device
    from afxest.estimate import (
        Analyser, EstimateOptions, check_request, check_stems, inference_threads, pair_inputs, read_ahead, run_batch,
    )
    from afxest.store import load_model

    if audio_all and no_audio:
        raise UserError("give --audio-all or --no-audio, not both")
    if plot:
        from afxest.figures import require_matplotlib

        require_matplotlib()
    check_out_dir(out)
    jobs = pair_inputs(wets, dry or [])
    check_stems(jobs)
    ahead = read_ahead(jobs[0])  # decoded while torch is imported and the model loaded
    torch_device = resolve_device(device.value)
    if torch_device.type == "cpu":
        inference_threads()
    loaded = load_model(model, torch_device)
    options = EstimateOptions(
        samples=samples, engine=engine.value, refine=refine, effort=effort.value, seed=seed,
        audio="all" if audio_all else "none" if no_audio else "top", force=force, plot=plot, correction=correction,
    )
    check_request(loaded.task, bool(dry), refine)
    analyser = Analyser(loaded, torch_device)

    with _progress_bar("estimating", len(jobs), progress and err.is_terminal) as update:
        code = run_batch(jobs, analyser, out, options, lambda result: _print_estimate(result, json_out),
                         _report_failure, progress=update, ahead=ahead)
    if code:
        raise typer.Exit(code)


def _print_estimate(result, json_out: bool) -> None:
    """What ``afxest estimate`` says of one estimate (an :class:`afxest.estimate.EstimateResult`):
    its candidates table, its warnings and the files written on stderr; with ``json_out`` the
    document as one line on stdout."""
    import json

    from afxest.tables import candidates_table

    _print_wide(candidates_table(result.document))
    for warning in result.warnings:
        _say(warning, warning=True)
    audio = sum(1 for c in result.document["candidates"] if c["audio"])
    also = ([f"{audio} audio file{'s' * (audio > 1)}"] if audio else []) + ([result.document["plot"]] if result.document.get("plot") else [])
    _say(f"wrote {result.folder / 'estimate.json'}" + (f" and {' and '.join(also)}" if also else ""))
    if json_out:
        sys.stdout.write(json.dumps(result.document) + "\n")
        sys.stdout.flush()


@contextmanager
def _progress_bar(label: str, total: int, enabled: bool) -> Iterator[Callable[[float], None] | None]:
    """A transient rich progress bar on stderr, ``label`` before it, for ``total`` units of
    work: the block gets the function that sets how many units are done (None when not
    ``enabled``: no bar)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True)
    task = bar.add_task(label, total=total)
    bar.start()
    try:
        yield lambda done: bar.update(task, completed=done)
    finally:
        bar.stop()


def _report_failure(job, exc: BaseException) -> None:
    """The one line of a wet file that failed in a batch (the batch goes on): bad input as
    ``afxest: error: ...``, anything else as an internal error naming the file."""
    if isinstance(exc, UserError):
        print(f"afxest: error: {exc}", file=sys.stderr)
    else:
        _report_internal(exc, f"{job.wet}: ")


def _report_internal(exc: BaseException, where: str = "") -> None:
    """The one line of an internal failure, ``where`` (a file's ``path: ``, or nothing) before the
    exception, and its traceback when AFXEST_DEBUG is set."""
    import os

    print(
        f"afxest: internal error: {where}{exc.__class__.__name__}: {shortened(str(exc))} "
        "(please report it; set AFXEST_DEBUG=1 for a traceback)",
        file=sys.stderr,
    )
    if os.environ.get("AFXEST_DEBUG"):
        import traceback

        traceback.print_exception(exc)


def _calibrate_model(spec: str, data: Path | None, fit_n: int, draws: int, out: Path | None) -> None:
    """``afxest models --calibrate``: fits the calibration (:func:`afxest.fit_calibration.fit`) and writes it."""
    import torch

    from afxest.store import load_model
    from afxest.fit_calibration import fit
    from afxest.temper import write

    if data is not None and not data.is_dir():
        raise UserError(f"{data}: no such folder")
    torch.set_num_threads(1)
    loaded = load_model(spec)
    found = fit(loaded, data, fit_n, draws, log=lambda m: _say(m))
    dest = write(loaded.path, found, out)
    t = ", ".join(f"{v:.3g}" for v in found.temperature)
    _say(f"calibrated {loaded.name}: temperature {t}; written to {dest}")


@app.command()
def models(
    json_out: Annotated[bool, typer.Option("--json", help="Print the list as JSON on stdout.")] = False,
    install: Annotated[Optional[Path], typer.Option(help="Install this checkpoint (run/best.pt) as a user model named --name.", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option(help="Name for --install (then --model NAME finds it).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="With --install: replace a user model of that name.")] = False,
    calibrate: Annotated[Optional[str], typer.Option(help="Fit this posterior model's calibration (a temperature per parameter and its interval levels) on the validation split and store it in its file (or --out).", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option(help="With --calibrate: the music folder whose validation split it is fitted on (default: procedural music; a synth needs none).", show_default=False)] = None,
    fit_n: Annotated[int, typer.Option(min=16, help="With --calibrate: validation items.")] = 256,
    draws: Annotated[int, typer.Option(min=20, max=MAX_SAMPLES, help="With --calibrate: posterior draws per item.")] = 100,
    out: Annotated[Optional[Path], typer.Option(help="With --calibrate: write the calibrated checkpoint here instead of into the model's file.", show_default=False)] = None,
) -> None:
    """List the bundled and user models (name, task, estimator, size, validation metrics),
    install a trained checkpoint under a name, or calibrate a posterior model."""
    import json

    from afxest.store import bundled_models_dir, install_model, list_models, user_models_dir
    from afxest.tables import models_table

    if (install is None) != (name is None):
        raise UserError("--install CHECKPOINT and --name NAME go together")
    if calibrate is not None:
        if install is not None:
            raise UserError("--calibrate and --install go apart")
        _calibrate_model(calibrate, data, fit_n, draws, out)
        return
    if install is not None:
        dest = install_model(install, name, force=force)
        _say(f"installed {install} as model {name!r}: {dest}")
        return
    rows = list_models()
    if json_out:
        bundled = bundled_models_dir()
        print(json.dumps({"models": rows, "user_dir": str(user_models_dir()), "bundled_dir": None if bundled is None else str(bundled)}))
        return
    if not rows:
        _say(f"no models installed: none are bundled yet, and {user_models_dir()} holds none; give --model a checkpoint path (run/best.pt)")
        return
    _print_wide(models_table(rows))
    for row in rows:
        if "error" in row:
            _say(f"{row['name']}: {row['error']}", warning=True)


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Model name (see afxest models) or checkpoint path.", show_default=False)],
    data: Annotated[Optional[Path], typer.Option(help="Folder of music (its test split); default: procedural audio (fm needs none).")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Test items.")] = 256,
    samples: Annotated[int, typer.Option(min=1, max=MAX_SAMPLES, help="Candidates per item (posterior; other models give 1).")] = 10,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Seed of the test items and the samples.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md, results.csv and the figures.")] = Path("evaluation"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing report.")] = False,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Write the paper's Figs. 4-8 that apply as PNG files (needs matplotlib: the plots extra).")] = True,
    compare: Annotated[Optional[str], typer.Option(help="Deterministic model (name or path) whose estimate the figures mark.", show_default=False)] = None,
    refine: Annotated[int, typer.Option(min=0, help="Also score every candidate after this many steps of inference-time optimisation (the dry known; as estimate --refine).")] = 0,
    proxy_model: Annotated[Optional[Path], typer.Option(help="Compressor proxy checkpoint (afxest train-proxy) whose renders of the candidates are scored too (tasks with a compressor).", show_default=False)] = None,
    effort: Annotated[Optional[Effort], typer.Option(help="Also score rank 1 of afxest estimate with the reference (its search at this effort): the 'Default estimate' row.", show_default=False)] = None,
    also: Annotated[Optional[list[str]], typer.Option(help="Another model of the same task to evaluate on the same items (repeatable): its report goes to OUT/NAME, the side-by-side table to OUT/comparison.md.", show_default=False)] = None,
    calibration_draws: Annotated[int, typer.Option(min=0, max=MAX_SAMPLES, help="Posterior draws per item for the calibration (coverage of the draws' intervals, SBC ranks; 0: none).")] = CALIBRATION_DRAWS,
) -> None:
    """Evaluate a model on the test split as in DAFx 2025 (Tables 1-3, Figs. 4-8): report.md, results.csv, PNGs."""
    from dataclasses import replace

    from afxest.audio import atomic_write_text
    from afxest.evaluate import EvaluateOptions, check_comparable, evaluate as run_evaluation, report_folder_name
    from afxest.store import load_model
    from afxest.tables import calibration_rows, comparison_markdown, comparison_rows, main_table, rich_table

    loaded = load_model(model)
    reference = None if compare is None else load_model(compare)
    others = [load_model(name) for name in also or []]
    check_comparable(loaded, others)
    comparison = out / "comparison.md"
    if others and comparison.exists() and not force:
        raise UserError(f"{comparison}: exists (use --force to overwrite)")
    options = EvaluateOptions(
        data=data, n=n, samples=samples, seed=seed, force=force, log=_say, figures=figures, compare=reference,
        refine=refine, proxy_model=proxy_model, effort=None if effort is None else effort.value,
        calibration_draws=calibration_draws,
    )
    result = run_evaluation(loaded, out, options)
    results = [(loaded.name, result)]
    others_options = replace(options, figures=False, compare=None, effort=None)  # figures and estimate: the first only
    for other in others:
        _say(f"evaluating {other.name} on the same items")
        results.append((other.name, run_evaluation(other, out / report_folder_name(other.name), others_options)))
    _print_wide(rich_table(main_table(result), f"{result.task} ({result.kind}), {result.items} items: mean ± std"))
    if result.calibration is not None:
        _print_wide(rich_table(calibration_rows(result), (
            f"calibration: the truth against {result.calibration.draws} posterior draws, {result.items} items")))
    extra = f", {out / 'calibration.csv'}" if result.calibration is not None else ""
    _say(f"wrote {out / 'report.md'}{extra} and {out / 'results.csv'}")
    written = [*result.figures, *result.calibration_figures]
    if written:
        _say(f"wrote {len(written)} figure(s): {', '.join(f.file for f in written)}")
    if others:
        text = comparison_markdown(results)
        atomic_write_text(comparison, text)
        _print_wide(rich_table(comparison_rows(results), f"{result.task}: {len(results)} models on the same items, mean ± std"))
        _say(f"wrote {comparison}")


# torch's OpenMP threads wait for work by sleeping, not spinning, unless the user says otherwise.
# A spinning thread whose core another program holds stalls every parallel operation: measured on
# 2 cores beside a training run (python -m afxest estimate, idle otherwise), a 10-minute 44.1 kHz
# pair took 83.7 s spinning and 40.1 s sleeping (the encoder 6.6 -> 0.7 s, the equaliser
# proposals 11.9 -> 1.1 s), a blind 5 s estimate 1.99x -> 1.31x import torch; on idle cores no
# difference (6 alternating runs each: 5 s with the dry 9.58 / 9.74 s, blind 1.93 / 1.96 s).
OMP_WAIT_POLICY = "PASSIVE"


def main(argv: list[str] | None = None) -> int:
    """Runs the app as the console entry point, mapping every failure to an exit code and one line.

    SIGINT and SIGTERM take one path (:mod:`afxest.interrupt`): exit 130 or 143, one line.
    Before torch is first imported, OpenMP's wait policy defaults to :data:`OMP_WAIT_POLICY`."""
    import os

    from afxest import interrupt

    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    previous = interrupt.install()
    try:
        return _run(argv)
    except (interrupt.Interrupted, KeyboardInterrupt) as exc:
        return _interrupted(exc)
    finally:
        interrupt.restore(previous)


def _interrupted(exc: BaseException) -> int:
    """Prints the one line of an interruption and returns its exit code (130 SIGINT, 143 SIGTERM)."""
    from afxest.interrupt import exit_code_of

    code = exit_code_of(exc)
    print(f"afxest: interrupted ({'SIGTERM' if code == 143 else 'SIGINT' if code == 130 else f'signal {code - 128}'})", file=sys.stderr)
    return code


@functools.cache
def _command() -> typer.core.TyperGroup:
    """The click command of :data:`app`, built once per process: Typer builds it anew from the
    functions' signatures on every call (about 35 ms), which in-process callers (the tests) repeat."""
    return typer.main.get_command(app)


def _run(argv: list[str] | None) -> int:
    """Runs the app on ``argv`` and returns the exit code: 2 and one line for bad usage or input,
    1 for an internal failure (with a traceback when AFXEST_DEBUG is set)."""
    command = _command()
    try:
        result = command.main(args=argv, prog_name="afxest", standalone_mode=False)
    except typer.Exit as exc:  # typer turns a KeyboardInterrupt into Exit(130)
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return _interrupted(exc.__cause__)
        return exc.exit_code
    except typer.TyperException as exc:  # bad usage: unknown option, invalid choice, ...
        ctx = getattr(exc, "ctx", None)
        name = ctx.command_path if ctx is not None else "afxest"
        print(f"{name}: error: {exc.format_message()}", file=sys.stderr)
        return 2
    except typer.Abort as exc:  # click turns a KeyboardInterrupt into Abort
        cause = exc.__cause__ or exc.__context__
        return _interrupted(cause if isinstance(cause, KeyboardInterrupt) else KeyboardInterrupt())
    except UserError as exc:
        print(f"afxest: error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"afxest: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
        _report_internal(exc)
        return 1
    return result if isinstance(result, int) else 0


def console() -> None:
    """The ``afxest`` command and ``python -m afxest``: :func:`main`, then the process's exit.

    After an interruption (130, 143) the process ends at once (``os._exit``) once its one line
    is out, without the interpreter's finalisation: a worker thread still inside torch (a
    candidate's refinement, the search's proposals) would try to take the GIL there, and
    Python ends such a thread by an unwinding that C++ code does not allow ("terminate called
    without an active exception", exit 134). Everything the command writes is published
    atomically by the main thread, which has finished or given up by then."""
    import os

    from afxest import interrupt

    code = main()
    if code in {128 + signum for signum in interrupt.SIGNALS}:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
