"""``afxest estimate`` as a library: candidate presets for a wet recording, ranked.

For each wet file (any format, rate and channel count; mixed to mono and resampled to the
task's rate while it is read, block by block) the estimator's posterior gives N parameter sets
(a point-estimating model gives one per analysed window). They are ranked

* with a dry file: by the task's reconstruction loss (:func:`afxest.objective.task_loss`) between
  the candidate rendered on the dry (pedalboard by default, or afxest's differentiable
  processors) and the wet, both at the task's rate, mono, over the same excerpt;
* without one, for a synth task (``fm``): by the same loss between the synthesised candidate
  and the wet itself;
* without one, for an effect task: by the posterior log-density ``ln p(z | wet)``
  (``ranked_by: "log_prob"``), computed in float64. A point-estimating model has no density:
  of its windows' estimates the medoid (least summed distance to the others in normalised
  space) is the one candidate, unranked (``ranked_by: null``).

**Long files and pooling.** The wet is cut into windows of the task's clip length (the last
window of an effect task takes the remainder, so the whole file is analysed; a synth task uses
whole clips only). Windows quieter than -60 dBFS RMS are skipped (the loudest window is always
used). Evidence is pooled as a product of experts: the parameters are the same for the whole
file and the model was trained with a uniform prior on [0, 1]^d, so under conditionally
independent windows the posterior given every window is proportional to the product of the
per-window posteriors. Candidates are drawn from the equal mixture of the windows' posteriors
(candidate i from the window at position i U / N among the U usable windows: evenly spread,
each window proposes), which covers the product posterior's mass, and every candidate is then
scored on every usable window: ``log_prob`` is the mean over windows of ln p(z | window) (the
product posterior's log-density up to a constant, divided by the number of windows) and
``loss`` the mean over windows of the window's reconstruction loss (the ranking equals that of
the summed loss). With one window both are the plain values. Memory is bounded: the wet (and
dry) are held once at the task's rate, mono (about 320 MB per hour at 22050 Hz each) and
rendered and scored a few windows at a time.

Rendering with pedalboard streams through one plugin chain per candidate (state carried from
window to window), so the scored signal is exactly ``pedalboard`` applied to the whole dry at
the task's rate: rendering ``candidates[0].preset`` on the dry reproduces it, with no
normalisation anywhere. The ddsp processors have no streaming state: each window is rendered
from rest.

**Search** (with a reference): :func:`search_candidates` sets up :func:`afxest.search.search`
(proposals, cheap scoring, refinement through the differentiable processors); its candidates
join the model's, are measured like them and ranked with them, each with a ``refinement``
record (where it came from, its loss before and after).

**The flow** (:meth:`Analyser.analyse`, top to bottom): the request is checked once
(:func:`check_request`: by the command line for a batch, by :meth:`Analyser.estimate` for a
library call); the inputs are read and checked (:func:`read_inputs`); the wet is cut into windows
(:mod:`afxest.scoring`: :func:`~afxest.scoring.windows_of`,
:func:`~afxest.scoring.usable_windows`); the model proposes candidates
(:class:`afxest.propose.Proposer`); with a reference they are measured against the wet
(:class:`afxest.scoring.Scorer`) and, unless ``refine`` is 0, searched from
(:func:`search_candidates`); they are ranked (:meth:`Candidates.order`) and written down
(:func:`estimate_document`, the one place of the document's shape). :func:`estimate_file` then
writes the document and the audio as one set (:func:`publish_estimate`), and :func:`run_batch`
goes through the files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from afxest import catalogue
from afxest.align import Alignment, align, min_coherence
from afxest.audio import (
    AUDIO_SUFFIXES, DecodedFile, OutputSet, Signal, ahead, atomic_write_text, make_folder, open_audio, placed,
    read_audio, read_mono, resample, resampled_frames, to_mono, write_audio_blocks,
)
from afxest.choices import EFFORTS, ENGINES, ESTIMATE_AUDIO
from afxest.errors import UserError
from afxest.presets import ESTIMATE_FORMAT, estimate_placement
from afxest.propose import Draws, Proposer
from afxest.scoring import Scorer, finite, scored_windows, search_windows, span_windows, usable_windows, windows_of

if TYPE_CHECKING:
    from afxest.search import Searched

MIN_EFFECT_SECONDS = 0.5  # shortest wet (or overlap of wet and dry) an effect task analyses
SILENT_PEAK = 10 ** (-90 / 20)  # a wet whose peak is below -90 dBFS is refused as silent
# a float wet whose peak is above +120 dBFS is refused: the network's float32 spectrogram of it
# overflows (its power passes 3.4e38 near 1e17) and no recording is made at that level
LOUD_PEAK = 10 ** (120 / 20)
# The analysis signals (wet and dry at the task's rate) are resampled with pedalboard's 32-tap
# windowed sinc, 6x faster than the 256-tap one (1.6 s per minute of 44.1 kHz audio): the two
# differ by ~46 dB SNR on music and ~1e-6 in log-mel distance, 4 orders below the losses that
# rank candidates. Rendered outputs are never resampled.
ANALYSIS_RESAMPLING = "fast"
# the search refines each window from this long before it (a compressor's envelope and the
# filters' state settle well within it), so its start matches the wet that ran through them
SEARCH_PREROLL_SECONDS = 1.0
# the reported intervals (interval_entry): their credible level, the posterior draws they are
# read from (their own seed stream), and the share of a parameter's normalised range above
# which the wet leaves it undetermined (issue 22: wider than half the range)
CREDIBLE = 0.9
INTERVAL_DRAWS = 500  # 0.05 s of float64 sampling for master (1000: 0.2 s; blind costs 1.4x `import torch`)
INTERVAL_STREAM = 3_000_017
PLOT_DRAWS = 200  # of those draws, the presets whose curves --plot spreads (afxest.figures.plot_estimate)
UNDETERMINED_ABOVE = 0.5


# ---------------------------------------------------------------------------------------------
# inputs and outputs


@dataclass
class Job:
    """One wet file, its dry file (or None), or why it cannot be paired."""

    wet: Path
    dry: Path | None
    problem: str | None = None


def pair_inputs(wets: Sequence[Path], drys: Sequence[Path]) -> list[Job]:
    """Pairs wet files with dry files: in order, one dry for every wet, or by file name stem when
    ``drys`` is a single folder. Mismatched counts are a UserError; a wet without a match in a
    dry folder becomes a failed job (the others go on)."""
    wets = [Path(w) for w in wets]
    drys = [Path(d) for d in drys]
    if not wets:
        raise UserError("no wet file given")
    if not drys:
        return [Job(w, None) for w in wets]
    if len(drys) == 1 and drys[0].is_dir():
        folder = drys[0]
        by_stem: dict[str, list[Path]] = {}
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES:
                by_stem.setdefault(p.stem, []).append(p)
        jobs = []
        for w in wets:
            found = by_stem.get(w.stem, [])
            if len(found) == 1:
                jobs.append(Job(w, found[0]))
            elif not found:
                jobs.append(Job(w, None, f"{w}: no dry file named {w.stem}.* in {folder}"))
            else:
                names = ", ".join(p.name for p in found)
                jobs.append(Job(w, None, f"{w}: several dry files match its name in {folder} ({names})"))
        return jobs
    if len(drys) == 1:
        return [Job(w, drys[0]) for w in wets]
    if len(drys) != len(wets):
        raise UserError(
            f"{len(wets)} wet files and {len(drys)} dry files: give one dry per wet (paired in order), "
            "one dry for all, or a folder of dry files matched by name"
        )
    return [Job(w, d) for w, d in zip(wets, drys)]


def check_stems(jobs: Sequence[Job]) -> None:
    """Refuses two wet files whose outputs would land in the same ``DIR/<stem>`` folder."""
    seen: dict[str, Path] = {}
    for job in jobs:
        if job.wet.stem in ("", ".", ".."):
            raise UserError(f"{job.wet}: its name would make the output folder {job.wet.stem!r}; rename the file")
        if job.wet.stem in seen and seen[job.wet.stem] != job.wet:
            raise UserError(
                f"{seen[job.wet.stem]} and {job.wet} share the name {job.wet.stem!r}: "
                "their estimates would overwrite each other; estimate them in separate runs"
            )
        seen[job.wet.stem] = job.wet


def _audio_name(rank: int) -> str:
    """The file name of the audio of the candidate at ``rank``."""
    return f"candidate-{rank}.wav"


def _set_files(folder: Path) -> list[Path]:
    """The files besides estimate.json that an earlier estimate left in ``folder``: its
    ``candidate-K.wav`` audio and its figure (``estimate.png``)."""
    from afxest.figures import ESTIMATE_PLOT

    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if re.fullmatch(r"candidate-[0-9]+\.wav", p.name) or p.name == ESTIMATE_PLOT)


def _check_outputs(folder: Path, names: Sequence[str], inputs: Sequence[Path], force: bool) -> None:
    """Refuses (UserError) files ``names`` of ``folder`` that would overwrite an input, are folders
    or exist without ``force``, and a ``folder`` that is not a folder."""
    for name in names:
        path = folder / name
        for source in inputs:
            if path.exists() and source.exists() and os.path.samefile(path, source):
                raise UserError(f"{path}: output would overwrite the input {source}")
        if path.is_dir():
            raise UserError(f"{path}: is a folder")
        if path.exists() and not force:
            raise UserError(f"{path}: already exists (use --force to replace it)")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder")


# ---------------------------------------------------------------------------------------------
# estimation


@dataclass
class EstimateOptions:
    """What ``afxest estimate`` takes besides files, model and device."""

    samples: int = 10
    engine: str = "pedalboard"
    # the search of :mod:`afxest.search` when a reference exists: None at the effort's step
    # cap, 0 off (the posterior draws alone, ranked), N > 0 with a step cap of N
    refine: int | None = None
    effort: str = "default"
    seed: int = 0
    audio: str = "top"  # whose audio is written: a name of afxest.choices.ESTIMATE_AUDIO
    force: bool = False
    plot: bool = False  # write estimate.png (afxest.figures.plot_estimate) with the estimate
    # with a reference: the best candidate corrected (afxest.correct) where the chain cannot hold the wet
    correction: bool = True

    def __post_init__(self) -> None:
        """Refuses an unknown engine, effort or audio choice (:class:`afxest.errors.UserError`)."""
        for what, value, names in (("engine", self.engine, ENGINES), ("effort", self.effort, EFFORTS),
                                   ("audio choice", self.audio, ESTIMATE_AUDIO)):
            if value not in names:
                raise UserError(f"unknown {what} {value!r} ({', '.join(names)})")


@dataclass
class EstimateResult:
    """An estimate document and the files written for it."""

    wet: Path
    folder: Path
    document: dict[str, Any]
    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


LONG_FILE_SECONDS = 60.0


def inference_threads(seconds: float | None = None) -> None:
    """Sets torch's intra-op threads on the CPU, unless OMP_NUM_THREADS says otherwise: one for a
    short file (``seconds`` below :data:`LONG_FILE_SECONDS`, or unknown), every core for a long
    one. A short estimate works on a few windows, too little to share, and a second thread
    stalls when the cores are busy (measured on 2 cores beside a training run: the eq encoder
    took 0.48 s for one 5 s clip with two threads, 0.013 s with one). A long file's batches
    are large enough to share: 10 minutes took 14.9 s with two threads, 19.8 s with one (2
    idle cores)."""
    import torch

    if "OMP_NUM_THREADS" in os.environ:
        return
    long = seconds is not None and seconds >= LONG_FILE_SECONDS
    torch.set_num_threads(max(1, os.cpu_count() or 1) if long else 1)


def refine_workers() -> int:
    """The threads the search may refine candidates in on the CPU (one per candidate, up to
    this): the cores this process may use (:func:`afxest.device.cpu_workers`). Candidates
    refined in threads of their own scale with the cores (their loops release the GIL and never
    wait on each other); torch's intra-op threads on one candidate's few excerpts do not
    (measured on 2 idle cores, 5 s 44.1 kHz stereo pair: the refinement of 2 candidates took
    13.4 s with one thread, 10.2 s with two intra-op threads, 8.7 s with one thread per
    candidate)."""
    from afxest.device import cpu_workers

    return cpu_workers()


# ---------------------------------------------------------------------------------------------
# the request and its inputs


def check_request(task, dry_given: bool, refine: int | None, dry_path: Path | None = None) -> None:
    """Refuses what the task cannot do: a dry file for a synth task, or the search (``refine``
    steps) of an effect task without a dry file. The command line checks once for the batch;
    :meth:`Analyser.estimate` checks each call and names the dry file (``dry_path``)."""
    if refine and not dry_given and not task.has_source:
        raise UserError("--refine needs a dry file for an effect task (it improves the reconstruction of the wet)")
    if dry_given and task.has_source:
        where = "" if dry_path is None else f"{dry_path}: "
        raise UserError(f"{where}the {task.name} model estimates a synth, which needs no dry file; leave out --dry")


@dataclass
class Recording:
    """An input held in memory: its name (for messages and the document), its samples
    (channels, frames) float32 and their rate. :func:`read_inputs` takes one in place of a file."""

    path: Path
    samples: np.ndarray
    rate: int


@dataclass
class Reference:
    """What candidates are measured against, at the rate and with the channels they are rendered
    with: with a dry file, the wet moved onto the dry's timeline (``wet[:, n]`` is the wet's sample
    ``n + alignment.offset``, zeros outside ``span``, the overlap), at the dry file's rate; for a
    synth, the wet itself at the task's rate.

    ``channels``: ``stereo`` (each channel of the pair rendered and measured; any count of two
    or more), ``mono`` (both files mono), or ``mono mix`` (the channel counts differ, or a
    synth: the means of the channels are measured)."""

    wet: np.ndarray  # (C, T)
    dry: np.ndarray | None  # (C, T), or None for a synth
    rate: int
    span: tuple[int, int]
    channels: str
    alignment: Alignment | None = None
    wet_frames: int = 0  # the wet file's length at ``rate`` (the written audio's)


@dataclass
class Inputs:
    """The wet as the network analyses it (mono at the task's rate: the overlap with the dry when
    there is one), the dry file as read (its own rate and channels, (C, T); None without one), the
    reference candidates are measured against (None blind), and the frames analysed."""

    wet: Signal
    dry: Signal | None
    frames: int
    reference: Reference | None = None

    @property
    def wet_x(self) -> np.ndarray:
        """The analysed part of the wet, (frames,) at the task's rate."""
        return self.wet.samples[: self.frames]


def read_inputs(wet: Path | Recording, dry: Path | Recording | None, task) -> Inputs:
    """Reads the wet (and dry) files, or takes them as read (:class:`Recording`), and checks them.

    Without a dry file the wet is read as mono at the task's rate (block by block,
    :func:`afxest.audio.read_mono`); a synth's reference is that wet. With one, both are read
    whole at their own rate and channels, the wet resampled to the dry's rate (where candidates
    are rendered), aligned to it (:func:`afxest.align.align`) and cut to their overlap
    (:func:`reference_of`); the network analyses the overlap's mono mix at the task's rate.

    Refused (:class:`~afxest.errors.UserError`): a silent wet (peak below :data:`SILENT_PEAK`), a
    pair that does not match (:func:`afxest.align.min_coherence`), and a wet (or overlap) too short
    for the task.
    """
    if dry is None:
        signal = _mono_signal(wet, task)
        _refuse_level(signal.path, signal.samples)
        frames = signal.samples.shape[0]
        _check_length(signal.path, frames, task.sample_rate, task)
        reference = None
        if task.has_source:
            reference = Reference(signal.samples[None, :frames], None, task.sample_rate, (0, frames), "mono mix")
        return Inputs(signal, None, frames, reference)
    from concurrent.futures import ThreadPoolExecutor

    wet_rec, dry_rec = _recordings(wet, dry)
    _refuse_level(wet_rec.path, wet_rec.samples)
    # the wet's mono mix at the task's rate, made in a second thread while the pair is aligned
    # (both release the GIL: a 10-minute 44.1 kHz pair 2.3 s sooner on two idle cores)
    with ThreadPoolExecutor(1) as pool:
        analysed = pool.submit(
            lambda: resample(to_mono(wet_rec.samples), wet_rec.rate, task.sample_rate, ANALYSIS_RESAMPLING)[0])
        reference = reference_of(wet_rec, dry_rec, task.sample_rate)
        whole = analysed.result()
    a, b = reference.span
    _check_length(wet_rec.path, b - a, reference.rate, task, overlap=True)
    mono = analysed_overlap(whole, reference, task.sample_rate)
    channels, frames = wet_rec.samples.shape
    signal = Signal(wet_rec.path, np.ascontiguousarray(mono), task.sample_rate, wet_rec.rate, channels, frames)
    dry_signal = Signal(dry_rec.path, dry_rec.samples, dry_rec.rate, dry_rec.rate, *dry_rec.samples.shape)
    return Inputs(signal, dry_signal, mono.shape[0], reference)


def analysed_overlap(wet_mono: np.ndarray, reference: Reference, rate: int) -> np.ndarray:
    """The part of ``wet_mono`` (the whole wet's mono mix at ``rate``) that the overlap
    ``reference.span`` holds: wet sample n + offset at the reference's rate is sample
    (n + offset) rate / reference.rate here (to the nearest: the network's analysis does not
    need the alignment's sub-sample), round((b - a) rate / reference.rate) samples, zero padded
    past the wet's end."""
    a, b = reference.span
    offset = 0 if reference.alignment is None else reference.alignment.offset
    start = int(round((a + offset) * rate / reference.rate))
    frames = resampled_frames(b - a, reference.rate, rate)
    part = wet_mono[start : start + frames]
    if part.shape[0] < frames:
        part = np.concatenate([part, np.zeros(frames - part.shape[0], np.float32)])
    return np.ascontiguousarray(part, dtype=np.float32)


def reference_of(wet: Recording, dry: Recording, task_rate: int) -> Reference:
    """The :class:`Reference` of a wet and its dry: both at the dry's rate (the rate the
    candidates are rendered at; a dry below ``task_rate``, the task's, whose ranges may not fit
    under its Nyquist frequency, is measured at ``task_rate``), resampled where needed (256-tap
    windowed sinc), aligned on their mono mixes, the wet moved onto the dry's timeline and cut
    to the overlap. A silent dry, and a pair whose aligned coherence is below
    :func:`afxest.align.min_coherence`, are refused: the wet was not made from this dry."""
    rate = max(dry.rate, task_rate)
    x = wet.samples if wet.rate == rate else resample(wet.samples, wet.rate, rate, "best")
    d = dry.samples if dry.rate == rate else resample(dry.samples, dry.rate, rate, "best")
    dry_mono = to_mono(d)[0]
    if float(np.max(np.abs(dry_mono), initial=0.0)) < SILENT_PEAK:
        raise UserError(f"{dry.path}: is silent (its mono mix peaks below -90 dBFS): {wet.path} cannot have been made from it")
    found = align(dry_mono, to_mono(x)[0], rate)
    if not found.matches:
        raise UserError(
            f"{wet.path} does not match {dry.path} (coherence {found.coherence:.3f} where they align best, at least "
            f"{min_coherence(found.frames):.3g} for a wet made from its dry): pair each wet with the dry it was made from"
        )
    if x.shape[0] == d.shape[0]:
        mode = "stereo" if d.shape[0] > 1 else "mono"
    else:
        x, d, mode = to_mono(x), to_mono(d), "mono mix"
    a, b = found.overlap(d.shape[1], x.shape[1])
    placed = np.zeros(d.shape, np.float32)
    if b > a:
        placed[:, a:b] = x[:, a + found.offset : b + found.offset]
    return Reference(placed, np.ascontiguousarray(d, dtype=np.float32), rate, (a, max(a, b)), mode, found, x.shape[1])


def _recordings(wet: Path | Recording, dry: Path | Recording) -> tuple[Recording, Recording]:
    """The wet and the dry as read (:func:`_recording`), the dry decoded in a second thread while
    the wet is (the decoder releases the GIL: two 10-minute 44.1 kHz stereo FLAC files in 1.6 s
    instead of 2.1, one core busy with another process); the wet's error first where both fail."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        dry_read = pool.submit(_recording, dry)
        try:
            wet_rec = _recording(wet)
        except BaseException:
            dry_read.cancel()  # not read if not yet started
            raise
        return wet_rec, dry_read.result()


def _recording(source: Path | Recording) -> Recording:
    """``source`` as read (:func:`afxest.audio.read_audio`), or as it is."""
    if isinstance(source, Recording):
        return source
    samples, rate = read_audio(source)
    return Recording(Path(source), samples, rate)


def _mono_signal(source: Path | Recording, task) -> Signal:
    """``source`` as mono at the task's rate (:data:`ANALYSIS_RESAMPLING`): a file read block by
    block (:func:`afxest.audio.read_mono`), or a :class:`Recording` mixed and resampled."""
    if not isinstance(source, Recording):
        return read_mono(source, task.sample_rate, ANALYSIS_RESAMPLING)
    mono = resample(to_mono(source.samples), source.rate, task.sample_rate, ANALYSIS_RESAMPLING)[0]
    return Signal(source.path, np.ascontiguousarray(mono), task.sample_rate, source.rate, *source.samples.shape)


def _refuse_level(path: Path, samples: np.ndarray) -> None:
    """Refuses a wet whose mono mix peaks below :data:`SILENT_PEAK`, or above :data:`LOUD_PEAK`."""
    mono = samples if samples.ndim == 1 else samples.mean(axis=0)
    peak = float(np.max(np.abs(mono), initial=0.0))
    if peak < SILENT_PEAK:
        raise UserError(f"{path}: is silent (its mono mix peaks below -90 dBFS): nothing to estimate")
    if peak > LOUD_PEAK:
        raise UserError(f"{path}: peaks at {20 * np.log10(peak):.0f} dBFS, above +120 dBFS: scale the file to a "
                        "recording's level")


def _check_length(path: Path, frames: int, rate: int, task, overlap: bool = False) -> None:
    """Refuses a wet (or an ``overlap`` of wet and dry) of ``frames`` at ``rate`` too short for the task."""
    what = "overlaps its dry file for" if overlap else "is"
    seconds = frames / rate
    if task.has_source and frames < round(task.clip_seconds * rate):
        raise UserError(f"{path}: {what} {seconds:.3f} s; the {task.name} model needs at least {task.clip_seconds:g} s")
    if not task.has_source and seconds < MIN_EFFECT_SECONDS:
        raise UserError(f"{path}: {what} {seconds:.3f} s; at least {MIN_EFFECT_SECONDS:g} s is needed")


# ---------------------------------------------------------------------------------------------
# candidates and their ranking


@dataclass
class Candidates:
    """Candidates in the order they were made (the model's, then the search's): z (M, d)
    float64, their presets, ln p(z | wet) (M,) pooled over windows (None without a posterior),
    each metric (M,) against the wet (none without a reference), and the search's record of
    each candidate it made, by index."""

    z: np.ndarray
    presets: list
    log_prob: np.ndarray | None
    matches: dict[str, np.ndarray] = field(default_factory=dict)
    refinement: dict[int, dict[str, Any]] = field(default_factory=dict)
    correction: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def losses(self) -> np.ndarray | None:
        """The reconstruction loss of each candidate (M,), or None without a reference."""
        return self.matches.get("loss")

    def order(self) -> list[int]:
        """Indices by rank: by loss (lowest first), else by log-density (highest first), else
        as made; non-finite values last, ties in the order made."""
        m = self.z.shape[0]
        if self.losses is not None:
            key = [(v if math.isfinite(v) else math.inf) for v in self.losses]
            return sorted(range(m), key=lambda i: (key[i], i))
        if self.log_prob is not None:
            key = [(float(v) if math.isfinite(float(v)) else -math.inf) for v in self.log_prob]
            return sorted(range(m), key=lambda i: (-key[i], i))
        return list(range(m))


def presets_of(task, z: np.ndarray, rate: int | None = None) -> list:
    """The task's presets of normalised parameters z (M, d), for audio at ``rate`` (default: the task's)."""
    return [task.model.preset(v, task.name, task.sample_rate if rate is None else rate) for v in z]


def distinct(z: np.ndarray) -> np.ndarray:
    """The rows of z (M, d) without repeats, in their first order: several windows' point
    estimates, of which those that agree need ranking once."""
    unique: dict[bytes, np.ndarray] = {}
    for row in z:
        unique.setdefault(row.tobytes(), row)
    return np.stack(list(unique.values()))


def medoid(z: np.ndarray) -> int:
    """The index of the point of z (M, d) with the least summed L1 distance to the others:
    of several windows' point estimates (each window's, those that agree each counted), the
    one kept when nothing can rank them."""
    distances = np.abs(z[:, None, :] - z[None, :, :]).sum(axis=(1, 2))
    return int(np.argmin(distances))


# ---------------------------------------------------------------------------------------------
# the search (with a reference)


def search_proposals(task, z: np.ndarray, wet: np.ndarray, dry: np.ndarray | None,
                     spans: Sequence[tuple[int, int]], effort, seed: int, rate: int) -> dict[str, np.ndarray]:
    """Where the search starts (:mod:`afxest.search`, step 1).

    Arguments:
        task: The model's task.
        z: The model's candidates, (M, d) normalised.
        wet: The wet, (C, T) at ``rate``.
        dry: The dry, (C, T), or None (a synth task).
        spans: The (start, stop) of the windows searched on.
        effort: The search's :class:`afxest.choices.Effort`.
        seed: The seed of the Sobol design.
        rate: The sample rate of wet and dry.

    Returns:
        The proposals (K, d) by origin: ``posterior`` (``z``); ``design``, a Sobol design, for
        tasks of at most :data:`afxest.search.DESIGN_MAX_DIM` parameters; ``analysis``, with a
        dry, as many equalisers fitted to the long-term spectral ratio of the wet over the dry
        on ``spans`` (their mono mixes), from ``z`` and from spread starts
        (:func:`afxest.search.equaliser_proposals`); ``echo``, with a dry and a delay in the
        chain, those with the delay measured on the spans (:func:`afxest.search.delay_proposals`);
        ``spectrum``, for an FM synth, ``z`` and a design of :data:`afxest.search.RATIO_STARTS`
        with the frequency ratio read from the wet's spectrum (:func:`afxest.search.ratio_proposals`).
    """
    from afxest import search as s

    proposals = {"posterior": z}
    if task.model.dim <= s.DESIGN_MAX_DIM:
        proposals["design"] = s.design(task.model.dim, effort.design, seed)
    if task.has_source:
        spectrum = s.ratio_proposals(task.model, z, wet.mean(axis=0), rate, s.RATIO_STARTS, seed)
        if spectrum is not None:
            proposals["spectrum"] = spectrum
    if dry is not None:
        dry_spans = [dry[:, a:b].mean(axis=0) for a, b in spans]
        wet_spans = [wet[:, a:b].mean(axis=0) for a, b in spans]
        ratio, weight = s.long_term_ratio_db(np.concatenate(dry_spans), np.concatenate(wet_spans))
        proposals["analysis"] = s.equaliser_proposals(task.model, z, ratio, weight, rate, seed=seed)
        echo = s.delay_proposals(task.model, proposals["analysis"], dry_spans, wet_spans, rate)
        if echo is not None:
            proposals["echo"] = echo
    return proposals


def search_spans(windows: Sequence[tuple[int, int]], use: Sequence[int], effort) -> list[tuple[int, int]]:
    """The (start, stop) of the windows the search works on: ``effort.windows`` of the usable
    ones (:func:`~afxest.scoring.search_windows`)."""
    return [windows[i] for i in search_windows(windows, use, effort.windows)]


def start_proposals(at: "Measured", z: np.ndarray, options: EstimateOptions):
    """:func:`search_proposals` for :func:`search_candidates` (the request's effort), started in
    a thread of its own (:class:`afxest.search.Background`): the equaliser fits are small
    Python-bound torch steps that overlap with the draws' measurement (plugin renders and FFTs,
    which release the GIL)."""
    from afxest.search import Background

    ref, task, effort = at.reference, at.scorer.task, EFFORTS[options.effort]
    spans = search_spans(at.windows, at.use, effort)
    return Background(lambda: search_proposals(task, z, ref.wet, ref.dry, spans, effort, options.seed, ref.rate))


def search_excerpts(signal: np.ndarray, spans: Sequence[tuple[int, int]], preroll: int, length: int, device: Any,
                    joint: bool = False):
    """One excerpt of ``signal`` (C, T) per span: its first ``length`` samples (at most the
    span's), from ``preroll`` samples before its start (zeros before the signal's start), of
    channel j mod C for the j-th span, as a tensor (R, 1, preroll + length) on ``device``; with
    ``joint``, of every channel, (R, C, preroll + length).

    One channel per span where the processors treat channels alike and apart (a compressor
    detector per channel): a stereo pair's channels are two more excerpts of the same chain, and
    taking them in turn keeps the refinement's cost that of a mono pair. ``joint`` where a
    processor mixes them (:attr:`afxest.catalogue.ProcessorType.mixes_channels`: the reverb
    feeds both channels' sum to each side's tank), whose stereo output a channel alone does
    not give."""
    import torch

    padded = np.concatenate([np.zeros((signal.shape[0], preroll), np.float32), signal], axis=1)
    length = min([length] + [b - a for a, b in spans])
    if joint:
        return torch.from_numpy(np.stack([padded[:, a : a + preroll + length] for a, _ in spans])).to(device)
    rows = [padded[j % signal.shape[0], a : a + preroll + length] for j, (a, _) in enumerate(spans)]
    return torch.from_numpy(np.stack(rows)[:, None]).to(device)


# A joint excerpt (every channel of a window, for a chain that mixes them: search_excerpts) counts
# as this many of the effort's windows in the refinement: 2 keeps its cost that of a mono pair
# (a stereo pair's refinement on one window's two channels where a mono pair's is on two windows)
JOINT_EXCERPT_WINDOWS = 2


def mixes_channels(task) -> bool:
    """Whether a processor of the task's model chain mixes a stereo input's channels
    (:attr:`afxest.catalogue.ProcessorType.mixes_channels`)."""
    return catalogue.mixes_channels(p.type for p in task.model.processors)


def search_candidates(scorer: Scorer, z: np.ndarray, wet: np.ndarray, dry: np.ndarray | None,
                      windows: Sequence[tuple[int, int]], use: Sequence[int], options: EstimateOptions,
                      effort=None, proposals: dict[str, np.ndarray] | None = None):
    """Runs :func:`afxest.search.search` from the model's candidates: proposals
    (:func:`search_proposals`) scored by the real renderer on
    :func:`~afxest.scoring.search_windows`, the best refined through the differentiable
    processors (from :data:`SEARCH_PREROLL_SECONDS` before each window).

    Arguments:
        scorer: The task's :class:`~afxest.scoring.Scorer` (its loss, its device, its rate).
        z: The model's candidates, (M, d) normalised.
        wet: The wet, (C, T) at the scorer's rate.
        dry: The dry, (C, T), or None (a synth task).
        windows: Every analysis window (:func:`~afxest.scoring.windows_of`).
        use: The usable windows (:func:`~afxest.scoring.usable_windows`).
        options: The request: its effort, step cap (``refine``) and seed.
        effort: The search's :class:`afxest.choices.Effort` (default: the request's).
        proposals: Where the search starts (default: :func:`search_proposals` of ``z``).

    Returns:
        The search's :class:`afxest.search.Searched`.
    """
    import torch

    from afxest import search as s
    from afxest.engines import render_model

    task, rate = scorer.task, scorer.rate
    effort = EFFORTS[options.effort] if effort is None else effort
    spans = search_spans(windows, use, effort)
    if proposals is None:
        proposals = search_proposals(task, z, wet, dry, spans, effort, options.seed, rate)

    # excerpts from a pre-roll before each window (zeros before the file's start: the real
    # renders started from rest there too); none when every window starts the file. As many
    # samples as the network's windows at any rate (5 s at 22 050 Hz, 2.5 s at 44.1 kHz): the
    # refinement's cost does not grow with the rate
    preroll = 0 if task.has_source or all(a == 0 for a, _ in spans) else int(round(SEARCH_PREROLL_SECONDS * rate))
    length = s.EXCERPT_FRAMES or task.clip_samples
    joint = dry is not None and dry.shape[0] > 1 and mixes_channels(task)
    refined = spans[: max(1, len(spans) // JOINT_EXCERPT_WINDOWS)] if joint else spans
    # the proposals are scored by the real renderer on the whole windows, each from a pre-roll,
    # though the refinement works on their first `length` samples: scored on those excerpts
    # only (session 19; half the scoring's cost, about 1 s of the 5 s mix clip's 20), rank 1 was
    # the same or better on the 32 val pairs at 44.1 kHz stereo (mix: two items +0.95 and +2.67
    # dB) but 13.3 dB worse on one of 32 test pairs (30.7 -> 17.3 dB): starts that fit the
    # excerpt best refined into a chain that fits the rest of the clip worse

    def cheap(zs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return scorer.measure(presets_of(task, zs, rate), wet, dry, spans, range(len(spans)), "pedalboard",
                                  {"loss": scorer.loss_fn}, prerolled=True)["loss"]

    return s.search(
        proposals, cheap, lambda zs, x: render_model(task, zs, x, sample_rate=rate), s.search_loss(scorer.loss_fn),
        search_excerpts(wet, refined, preroll, length, scorer.device, joint),
        None if dry is None else search_excerpts(dry, refined, preroll, length, scorer.device, joint), effort,
        max_steps=options.refine or None, skip=preroll,
        workers=refine_workers() if torch.device(scorer.device).type == "cpu" else 1,
        held=np.array([r.param.stepped for r in task.model.ranges]),
    )


# ---------------------------------------------------------------------------------------------
# the document


@dataclass
class Analysis:
    """What the analysis of one wet file found, before it is written down."""

    wet_path: Path
    dry_path: Path | None
    frames: int  # analysed by the network, at the task's rate
    windows: list[tuple[int, int]]  # the network's
    use: list[int]  # the usable windows (the network's)
    candidates: Candidates
    ranked_by: str | None  # the task's loss, "log_prob", or None (one point estimate)
    entropy: float | None  # nats, mean over the proposing windows
    baseline: dict[str, float | None] | None  # the dry's own match to the wet
    found: Searched | None = None  # the search's result, None without a search
    reference: Reference | None = None  # what candidates were measured against (None blind)
    scored: int = 0  # the windows they were measured on
    intervals: dict[str, Any] | None = None  # the document's ``intervals`` (interval_entry)
    echoes: np.ndarray | None = None  # the wet's echo times (s) drawn delays snap to (afxest.propose)


def alignment_entry(reference: Reference | None) -> dict[str, Any] | None:
    """The document's ``alignment``: where the wet lies against its dry (None without a dry)."""
    if reference is None or reference.alignment is None:
        return None
    found, rate = reference.alignment, reference.rate
    a, b = reference.span
    return {
        "offset_samples": found.offset,
        "offset_seconds": found.offset / rate,
        "sample_rate": rate,
        "match": found.match,
        "coherence": found.coherence,
        "overlap": {"wet_start_seconds": (a + found.offset) / rate, "dry_start_seconds": a / rate,
                    "seconds": (b - a) / rate},
        "wet_frames": reference.wet_frames,
    }


def estimate_document(model, options: EstimateOptions, analysis: Analysis, order: Sequence[int]) -> dict[str, Any]:
    """The ``afxest-estimate/1`` document of an analysis, the one place of its shape.

    Arguments:
        model: The loaded model (its name, sha256, kind and task).
        options: The request (engine, seed, effort).
        analysis: What the analysis found.
        order: The candidates' indices by rank (:meth:`Candidates.order`).

    Returns:
        The document, candidates by rank, their ``audio`` None until written.
    """
    task, found, c = model.task, analysis.found, analysis.candidates
    return {
        "format": ESTIMATE_FORMAT,
        "task": task.name,
        "model": {"name": model.name, "sha256": model.sha256},
        "wet": str(analysis.wet_path),
        "dry": None if analysis.dry_path is None else str(analysis.dry_path),
        "sample_rate": task.sample_rate if analysis.reference is None else analysis.reference.rate,
        "channels": {"analysed": "mono mix", "scored": None if analysis.reference is None else analysis.reference.channels},
        "alignment": alignment_entry(analysis.reference),
        "ranked_by": analysis.ranked_by,
        "entropy_bits_per_dim": None if analysis.entropy is None else finite(analysis.entropy / (task.model.dim * math.log(2))),
        "candidates": [_candidate_entry(c, k, rank) for rank, k in enumerate(order, start=1)],
        "baseline": analysis.baseline,
        "summary": summary([c.presets[k] for k in order], task),
        "intervals": analysis.intervals,
        "analysis": {
            "estimator": model.kind,
            "engine": options.engine if analysis.dry_path is not None else None,
            "seed": options.seed,
            "seconds": analysis.frames / task.sample_rate,
            "window_seconds": task.clip_seconds,
            "windows": len(analysis.windows),
            "windows_used": len(analysis.use),
            "windows_scored": analysis.scored if c.losses is not None else 0,
            "refine_steps": int(found.steps.max()) if found is not None else 0,
            "echoes": None if analysis.echoes is None else [finite(float(t)) for t in analysis.echoes],
            "search": None if found is None else {
                "effort": options.effort,
                "proposals": found.proposals,
                "windows": found.windows,
                "step_cap": found.step_cap,
                "refined": len(found.z),
            },
        },
    }


def _candidate_entry(candidates: Candidates, k: int, rank: int) -> dict[str, Any]:
    """Candidate ``k``'s entry in the document, at ``rank``."""
    entry: dict[str, Any] = {
        "rank": rank,
        "loss": None if candidates.losses is None else finite(candidates.losses[k]),
        "log_prob": None if candidates.log_prob is None else finite(float(candidates.log_prob[k])),
        "preset": candidates.presets[k].to_dict(),
        "audio": None,
    }
    for name in ("si_sdr", "log_mel"):
        if name in candidates.matches:
            entry[name] = finite(float(candidates.matches[name][k]))
    if k in candidates.refinement:
        entry["refinement"] = candidates.refinement[k]
    if k in candidates.correction:
        entry["correction"] = candidates.correction[k]
    return entry


# ---------------------------------------------------------------------------------------------
# the flow


class Analyser:
    """A loaded model ready to estimate files: ``afxest estimate`` without the command line.

    The model side (:class:`afxest.propose.Proposer`) proposes candidates; a scorer
    (:class:`afxest.scoring.Scorer`, one per sample rate met) measures them against the wet.

    Arguments:
        model: The loaded model (:class:`afxest.store.LoadedModel`).
        device: The torch device the model and the differentiable processors run on.
    """

    def __init__(self, model, device: Any = "cpu") -> None:
        import torch

        self.model = model
        self.task = model.task
        self.device = torch.device(device)
        self.proposer = Proposer(model.estimator, model.kind == "posterior", self.device, model.task)
        self._scorers: dict[int, Scorer] = {}

    def scorer(self, rate: int) -> Scorer:
        """The :class:`~afxest.scoring.Scorer` of audio at ``rate`` (made once per rate)."""
        if rate not in self._scorers:
            self._scorers[rate] = Scorer(self.task, self.device, rate)
        return self._scorers[rate]

    def estimate(
        self,
        wet_path: Path,
        dry_path: Path | None,
        options: EstimateOptions,
        progress: Callable[[float], None] | None = None,
    ) -> tuple[dict[str, Any], list, Signal | None, np.ndarray | None]:
        """Estimates one wet file, writing nothing: the request is checked
        (:func:`check_request`), then analysed (:meth:`analyse`).

        Arguments:
            wet_path: The wet file.
            dry_path: Its dry file, or None.
            options: The request.
            progress: Called with the fraction done, from 0 to 1.

        Returns:
            The estimate document, its presets by rank, the dry as read (for rendering the
            audio; None without a dry), and the :data:`INTERVAL_DRAWS` draws (N, d) of the
            calibrated posterior behind its intervals (None for a point estimator).
        """
        check_request(self.task, dry_path is not None, options.refine, dry_path)
        return self.analyse(wet_path, dry_path, options, progress)

    def analyse(
        self,
        wet: Path | Recording,
        dry: Path | Recording | None,
        options: EstimateOptions,
        progress: Callable[[float], None] | None = None,
    ) -> tuple[dict[str, Any], list, Signal | None, np.ndarray | None]:
        """:meth:`estimate` of a request already checked: the files read, or taken as read
        (:func:`read_inputs`), then :meth:`analyse_inputs`."""
        return self.analyse_inputs(read_inputs(wet, dry, self.task), options, progress)

    def analyse_inputs(
        self,
        inputs: Inputs,
        options: EstimateOptions,
        progress: Callable[[float], None] | None = None,
    ) -> tuple[dict[str, Any], list, Signal | None, np.ndarray | None]:
        """The analysis of inputs already read and checked (:func:`read_inputs`): window,
        propose, measure, search, rank, and write the document down.

        Arguments:
            inputs: The wet (and dry) at the task's rate; the document names their paths.
            options: The request, checked (:func:`check_request`).
            progress: Called with the fraction done, from 0 to 1.

        Returns:
            The estimate document (nothing written), its presets by rank, the dry (or None),
            and the draws (N, d) of the calibrated posterior behind its intervals (None for a
            point estimator).
        """
        task, report = self.task, progress or (lambda _f: None)
        if self.device.type == "cpu":
            inference_threads(inputs.wet.seconds)
        windows = windows_of(inputs.frames, task)
        use = usable_windows(inputs.wet_x, windows)
        report(0.05)
        ref = inputs.reference
        searching = ref is not None and options.refine != 0
        # the candidates are the untempered posterior's draws; the calibrated one gives the
        # intervals (afxest.temper says why)
        draws = self.proposer.draw(inputs.wet_x, windows, use, options.samples, options.seed)
        spread = self._spread(draws, options.seed)
        intervals = None if spread is None else interval_entry(task, spread, self.model.calibration if self.proposer.calibrated else None)
        report(0.15)
        rate = task.sample_rate if ref is None else ref.rate
        z = draws.z if self.proposer.posterior or ref is None else distinct(draws.z)
        candidates = Candidates(z, presets_of(task, z, rate), draws.log_prob)
        baseline, found, scored = None, None, 0
        if ref is not None:
            ranked_by = task.loss
            at = Measured(self.scorer(ref.rate), ref, *reference_windows(task, ref), options.engine)
            scored = len(scored_windows(at.use))
            proposing = start_proposals(at, z, options) if searching else None
            candidates.matches, baseline = self._measure(candidates.presets, at,
                                                         lambda f: report(0.15 + (0.2 if searching else 0.85) * f))
        elif self.proposer.posterior:
            ranked_by = "log_prob"
        else:  # point estimates of several windows and no way to rank them: keep their medoid
            ranked_by = None
            if len(candidates.z) > 1:
                z = candidates.z[[medoid(candidates.z)]]
                candidates = Candidates(z, presets_of(task, z, rate), candidates.log_prob)
        if searching:
            found, candidates = self._search(candidates, at, options, draws.h, proposing.result())
        if searching and options.correction and not task.has_source and baseline is not None:
            self._correct(candidates, at, baseline.get("loss"))
        order = candidates.order()
        report(1.0)
        dry_path = None if inputs.dry is None else inputs.dry.path
        analysis = Analysis(inputs.wet.path, dry_path, inputs.frames, windows, use, candidates, ranked_by,
                            draws.entropy, baseline, found, ref, scored, intervals, draws.echoes)
        return estimate_document(self.model, options, analysis, order), [candidates.presets[k] for k in order], inputs.dry, spread

    def _spread(self, draws: Draws, seed: int) -> np.ndarray | None:
        """:data:`INTERVAL_DRAWS` draws (N, d) of the calibrated posterior, their own seed: what
        the reported intervals and the plot's bands are read from; None for a point estimator."""
        if not self.proposer.posterior:
            return None
        return self.proposer.spread(draws.h, INTERVAL_DRAWS,
                                    int(np.random.default_rng([seed, INTERVAL_STREAM]).integers(0, 2**62)), draws.echoes)

    def _search(self, candidates: Candidates, at: Measured, options: EstimateOptions, h,
                proposals: dict[str, np.ndarray]):
        """The search (:func:`search_candidates`) from ``proposals`` (:func:`start_proposals`)
        and its candidates added (:meth:`_add_found`).

        Returns:
            The search's result and all the candidates.
        """
        ref = at.reference
        found = search_candidates(at.scorer, candidates.z, ref.wet, ref.dry, at.windows, at.use, options,
                                  proposals=proposals)
        return found, self._add_found(candidates, found, h, at)

    def _correct(self, candidates: Candidates, at: Measured, input_loss: float | None) -> None:
        """The best candidate corrected (:func:`afxest.correct.correct`, on the scored windows,
        each rendered by pedalboard from :data:`SEARCH_PREROLL_SECONDS` before it) and, where the
        correction holds effects, added as a candidate of its own, measured like the others.
        Nothing is corrected where the best candidate's loss is within
        :data:`afxest.correct.HELD_BELOW` of the dry's own (``input_loss``): the chain holds the wet."""
        import torch

        from concurrent.futures import ThreadPoolExecutor

        from afxest.correct import HELD_BELOW, SEARCH_EXCERPTS, correct, kept_prefix
        from afxest.device import cpu_workers
        from afxest.engines import ExcerptRenderer
        from afxest.losses import against
        from afxest.presets import Processor

        best = candidates.order()[0]
        if input_loss is None or not candidates.losses[best] > HELD_BELOW * input_loss:
            return
        base, ref, rate = candidates.presets[best], at.reference, at.scorer.rate
        spans = [at.windows[i] for i in scored_windows(at.use)]

        wet = [np.ascontiguousarray(ref.wet[:, a:b]) for a, b in spans]
        with torch.inference_mode():  # the wet's features once, not at each of the ~200 renderings scored
            targets = [against(at.scorer.loss_fn, torch.from_numpy(w)[None]) for w in wet]

        def processors(effects: Sequence[dict[str, Any]]) -> tuple[Processor, ...]:
            return tuple(Processor(e["type"], {k: tuple(map(float, v)) if isinstance(v, (list, tuple, np.ndarray))
                                               else float(v) for k, v in e.items() if k != "type"}) for e in effects)

        task_effects = [e.to_dict() for e in base.effects]
        # the windows rendered in threads (pedalboard releases the GIL): ~200 renderings of the
        # scored windows, half of the correction's time on one core; the effects no step changes
        # rendered once
        pool = ThreadPoolExecutor(cpu_workers())
        excerpts = ExcerptRenderer(ref.dry, spans, int(round(SEARCH_PREROLL_SECONDS * rate)), rate, pool.map,
                                   processors(task_effects[: kept_prefix(task_effects)]))

        def render(effects: Sequence[dict[str, Any]], only: Sequence[int] | None = None) -> list[np.ndarray]:
            return excerpts(processors(effects), only)

        def loss(rendered: list[np.ndarray], only: Sequence[int] | None = None) -> float:
            scorers = targets if only is None else [targets[i] for i in only]
            with torch.inference_mode():
                return float(np.mean([float(to_wet(torch.from_numpy(y)[None])) for y, to_wet in zip(rendered, scorers)]))

        try:
            found = correct(task_effects, render, wet, loss, rate, map_windows=pool.map,
                            searched=scored_windows(range(len(spans)), SEARCH_EXCERPTS))
        finally:
            pool.shutdown()
        if not found.effects:
            return
        corrected = dataclasses.replace(base, effects=processors(found.chain) + processors(found.effects))
        with torch.inference_mode():
            measured = at.measure([corrected])
        k = len(candidates.z)
        candidates.z = np.concatenate([candidates.z, candidates.z[best : best + 1]])
        candidates.presets.append(corrected)
        if candidates.log_prob is not None:
            candidates.log_prob = np.concatenate([candidates.log_prob, candidates.log_prob[best : best + 1]])
        candidates.matches = {name: np.concatenate([v, measured[name]]) for name, v in candidates.matches.items()}
        if best in candidates.refinement:
            candidates.refinement[k] = candidates.refinement[best]
        candidates.correction[k] = {
            "effects_from": len(base.effects), "dynamics": found.dynamics, "equaliser": found.equaliser,
            "fir": found.fir, "limiter": found.limiter, "loss_before": finite(float(candidates.losses[best])),
            "loss_fitted": finite(found.loss_after),
        }
        if found.dynamics:  # the task's settings of the effects the correction refitted
            candidates.correction[k]["task_effects"] = {
                str(i): e for i, (e, f) in enumerate(zip(task_effects, found.chain)) if e != f}

    def _measure(self, presets: Sequence, at: Measured,
                 progress: Callable[[float], None]) -> tuple[dict[str, np.ndarray], dict[str, float | None] | None]:
        """Each metric of :meth:`afxest.scoring.Scorer.match_metrics` of the presets against the
        wet, (M,) each, and the baseline (the dry's own match; None for a synth)."""
        import torch

        with torch.inference_mode():
            matches = at.measure(presets, progress)
        return matches, self._baseline(at)

    @staticmethod
    def _baseline(at: Measured) -> dict[str, float | None] | None:
        """The dry's own match to the wet (None for a synth), by each metric of
        :meth:`afxest.scoring.Scorer.match_metrics`."""
        import torch

        ref = at.reference
        if ref.dry is None:
            return None
        with torch.inference_mode():
            return at.scorer.baseline(ref.wet, ref.dry, at.windows, at.use, at.scorer.match_metrics())

    def _add_found(self, candidates: Candidates, found, h, at: Measured) -> Candidates:
        """The candidates followed by the search's, measured like them, each with its record.

        Each search candidate is measured twice, as refined and as it started (its proposal),
        and reported as the better of the two: a refinement that the real renderer scores worse
        than its start is not kept (``applied`` false in its record)."""
        import torch

        k = len(found.z)
        both = presets_of(self.task, np.concatenate([found.z, found.start]), at.scorer.rate)
        with torch.inference_mode():
            measured = at.measure(both)
        refined_better = measured["loss"][:k] <= measured["loss"][k:]
        pick = [j if refined_better[j] else k + j for j in range(k)]
        z_both = np.concatenate([found.z, found.start])
        # searches that end on the same setting give one candidate
        kept = [j for j in range(k) if not any(np.array_equal(z_both[pick[j]], z_both[pick[i]]) for i in range(j))]
        z = z_both[[pick[j] for j in kept]]
        new = {name: v[[pick[j] for j in kept]] for name, v in measured.items()}
        with torch.inference_mode():
            new_lp = self.proposer.log_prob(z, h) if self.proposer.posterior else None
        m = len(candidates.z)
        refinement = dict(candidates.refinement)
        for i, j in enumerate(kept):
            refinement[m + i] = {
                "steps": int(found.steps[j]),
                "loss_before": finite(found.loss_before[j]),
                "loss_after": finite(measured["loss"][pick[j]]),
                "loss_refined": finite(measured["loss"][j]),
                "applied": bool(refined_better[j]),
                "proposal": found.origin[j],
            }
        return Candidates(
            np.concatenate([candidates.z, z]),
            candidates.presets + [both[pick[j]] for j in kept],
            None if candidates.log_prob is None else np.concatenate([candidates.log_prob, new_lp]),
            {name: np.concatenate([v, new[name]]) for name, v in candidates.matches.items()},
            refinement,
        )


@dataclass
class Measured:
    """Where candidates are measured: a scorer at the reference's rate, the reference, its
    windows and the usable ones, and the engine that renders them."""

    scorer: Scorer
    reference: Reference
    windows: list[tuple[int, int]]
    use: list[int]
    engine: str

    def measure(self, presets: Sequence, progress: Callable[[float], None] | None = None) -> dict[str, np.ndarray]:
        """Each metric of :meth:`~afxest.scoring.Scorer.match_metrics` of ``presets`` against the wet, (M,) each."""
        ref = self.reference
        return self.scorer.measure(presets, ref.wet, ref.dry, self.windows, self.use, self.engine,
                                   self.scorer.match_metrics(), progress)


def reference_windows(task, reference: Reference) -> tuple[list[tuple[int, int]], list[int]]:
    """The windows candidates are measured on against ``reference`` and the usable ones: a
    synth's clips (:func:`~afxest.scoring.windows_of`), or windows of the task's clip length at
    the reference's rate over the overlap of wet and dry (:func:`~afxest.scoring.span_windows`)."""
    if task.has_source:
        windows = windows_of(reference.span[1], task)
    else:
        windows = span_windows(*reference.span, int(round(task.clip_seconds * reference.rate)))
    return windows, usable_windows(reference.wet, windows)


def summary(presets: Sequence, task) -> dict[str, dict[str, float]]:
    """The mean, standard deviation and 5/50/95 % quantiles of each estimated parameter over the
    candidates, in physical units, keyed by ``Space.names`` (``<index>.<type>.<parameter>``)."""
    values: dict[str, list[float]] = {name: [] for name in task.model.names}
    for preset in presets:
        for i, (space, proc) in enumerate(zip(task.model.processors, preset.processors)):
            for r in space.ranges:
                values[f"{i}.{space.type}.{r.name}"].append(proc.params[r.name])
    out = {}
    for name, v in values.items():
        a = np.asarray(v, dtype=np.float64)
        q05, q50, q95 = np.quantile(a, [0.05, 0.5, 0.95])
        out[name] = {"mean": float(a.mean()), "std": float(a.std()), "q05": float(q05), "q50": float(q50), "q95": float(q95)}
    return out


def plot_spread(task, spread: np.ndarray | None, document: dict[str, Any]) -> list | None:
    """The presets (at the document's rate) of the first :data:`PLOT_DRAWS` posterior draws,
    whose curves ``--plot`` spreads; None without draws."""
    return None if spread is None else presets_of(task, spread[:PLOT_DRAWS], document["sample_rate"])


def interval_entry(task, z: np.ndarray, calibration=None) -> dict[str, Any]:
    """The document's ``intervals``: the :data:`CREDIBLE` interval of each quantity the wet
    determines, from draws z (N, d) of the posterior, in physical units, and whether the wet
    leaves it undetermined (the interval spans more than :data:`UNDETERMINED_ABOVE` of its
    range, in the normalised units the prior is uniform in).

    The quantities (:func:`afxest.calibration.quantities`) are the model's parameters (key
    ``parameters``), or where the model has several copies of the truth's one processor (``eq``:
    two shelves for one) the summed gain and the shared cutoff and Q (key ``quantities``, each
    with the ``note`` saying how it is formed). The interval is the central one of the draws
    (:func:`afxest.temper.central_interval`) at the model's recalibrated level of each quantity
    (``calibration``, :mod:`afxest.temper`), or at :data:`CREDIBLE` itself without one (then it
    is the draws' interval, not a calibrated one).
    """
    from afxest.calibration import per_parameter, quantities, quantity_ranges
    from afxest.temper import central_interval

    names, q, notes = quantities(task, z)
    ranges = quantity_ranges(task)
    own = per_parameter(task)
    if not own:  # physical units: into each range's normalised units, as the prior's
        q = np.stack([r.to_normalised(q[:, j]) for j, r in enumerate(ranges)], axis=-1)
    level = np.full(len(names), CREDIBLE) if calibration is None else calibration.level(CREDIBLE)
    low, high = central_interval(q, level)
    entries = {}
    for j, (name, r) in enumerate(zip(names, ranges)):
        width = float(high[j] - low[j])
        entries[name] = {"low": float(r.to_physical(low[j])), "high": float(r.to_physical(high[j])),
                         "unit": r.param.unit, "width": width, "level": float(level[j]),
                         "undetermined": width > UNDETERMINED_ABOVE, **({} if own else {"note": notes[j]})}
    return {"credible": CREDIBLE, "draws": int(z.shape[0]), "calibrated": calibration is not None,
            "undetermined_above": UNDETERMINED_ABOVE, "parameters" if own else "quantities": entries,
            "undetermined": [name for name, v in entries.items() if v["undetermined"]]}


# ---------------------------------------------------------------------------------------------
# writing


def render_to_file(preset, dry_path: Path | None, out: Path, engine: str, task,
                   placement: tuple[int, int] | None = None, dry: Signal | None = None) -> None:
    """Writes a candidate's audio as a 32-bit float WAV, atomically
    (:func:`afxest.audio.write_audio_blocks`).

    Arguments:
        preset: The candidate.
        dry_path: The dry file, rendered at its own rate and channel count block by block
            (:func:`afxest.engines.rendered_blocks`); None: the synthesised source, at the preset's rate.
        dry: The dry file as already read (its own rate and channels), rendered in its place:
            the same blocks without decoding the file again.
        out: The WAV file written.
        engine: ``pedalboard`` or ``ddsp``.
        task: The model's task (its clip length: the ddsp engine renders the analysis windows).
        placement: (offset, frames, rate): the rendering moved onto the wet's timeline,
            ``offset`` samples at ``rate`` late (zeros first; negative: its start dropped) and cut
            or padded to ``frames`` samples at ``rate`` (:func:`afxest.audio.placed`, at the dry file's rate);
            None: as rendered.
    """
    from afxest.engines import render

    if dry_path is None:
        rate = int(round(preset.sample_rate))
        write_audio_blocks(out, [render(preset, None, rate, engine)], 1, rate)
        return
    from afxest.engines import rendered_blocks

    decoded = None if dry is None else DecodedFile(dry.samples, dry.rate)
    with open_audio(dry_path) if decoded is None else contextlib.nullcontext(decoded) as f:
        rate = int(f.samplerate)
        # read and rendered in a worker thread while the blocks before are written (a 10-minute
        # 44.1 kHz stereo file 1.2 s sooner); the worker stops before the file closes
        clip = int(round(task.clip_seconds * rate))
        with contextlib.closing(ahead(rendered_blocks(preset, f, rate, engine, clip))) as blocks:
            if placement is not None:
                offset, frames, at = placement
                blocks = placed(blocks, resampled_frames(offset, at, rate), resampled_frames(frames, at, rate), int(f.channels))
            write_audio_blocks(out, blocks, int(f.channels), rate)


def planned_names(task, options: EstimateOptions) -> list[str]:
    """Every file an estimate with ``options`` may write in its folder: estimate.json, the audio
    of as many candidates as it can have, and the figure."""
    from afxest.search import DESIGN_MAX_DIM

    effort = EFFORTS[options.effort]
    # the search's candidates
    found = 0 if options.refine == 0 else effort.keep_design if task.model.dim <= DESIGN_MAX_DIM else effort.keep
    m_max = 1 if options.audio == "top" else options.samples + found if options.audio == "all" else 0
    names = ["estimate.json"] + [_audio_name(k) for k in range(1, m_max + 1)]
    if options.plot:
        from afxest.figures import ESTIMATE_PLOT

        names.append(ESTIMATE_PLOT)
    return names


def audio_ranks(presets: Sequence, dry: Signal | None, job: Job, options: EstimateOptions, task) -> tuple[list[int], list[str]]:
    """The ranks whose audio is written, and why some are left out.

    Arguments:
        presets: The candidates by rank.
        dry: The dry as read (its file's rate), or None.
        job: The wet and dry files (the warning names the dry).
        options: The request (``audio``: ``top``, ``all`` or ``none``).
        task: The model's task (a synth can be rendered without a dry).

    Returns:
        The ranks (from 1) of ``options.audio``, none when there is nothing to render on, less
        those a dry file's rate cannot render (a cutoff above its Nyquist frequency); and the
        warning about those (none when all can be rendered).
    """
    can_render = dry is not None or task.has_source
    count = 0 if not can_render else {"top": 1, "all": len(presets), "none": 0}[options.audio]
    ranks = list(range(1, count + 1))
    if dry is None:
        return ranks, []
    problems = {}
    for rank in ranks:
        try:
            presets[rank - 1].check_sample_rate(dry.file_rate, f"candidate {rank}")
        except UserError as err:
            problems[rank] = str(err)
    if not problems:
        return ranks, []
    first = next(iter(problems.values()))
    return [r for r in ranks if r not in problems], [
        f"{job.dry}: no audio for candidate{'s' * (len(problems) > 1)} {', '.join(map(str, problems))}: "
        f"it cannot be rendered at the dry file's {dry.file_rate} Hz ({first})"
    ]


def read_ahead(job: Job) -> Any:
    """A job's pair decoded (:func:`_recordings`) in a daemon thread of its own from now on
    (:class:`afxest.search.Background`; its ``result()`` the two :class:`Recording` objects, or
    what decoding raised), so that the decoder, which releases the GIL, works while the caller
    imports torch and loads the model: a 10-minute 44.1 kHz stereo pair's 2.6 s of decoding
    beside them. None for a job without a dry file (its wet is read block by block at the task's
    rate, which the model gives) or one that cannot be paired."""
    if job.problem or job.dry is None:
        return None
    from afxest.search import Background

    dry = job.dry
    return Background(lambda: _recordings(job.wet, dry))


def estimate_file(
    estimator: Analyser,
    job: Job,
    out_dir: Path,
    options: EstimateOptions,
    progress: Callable[[float], None] | None = None,
    ahead: Any = None,
) -> EstimateResult:
    """Estimates one file and writes ``out_dir/<wet stem>/estimate.json`` and its audio.

    The request must have passed :func:`check_request` (and, with ``--plot``,
    :func:`afxest.figures.require_matplotlib`), as the command line does once for the batch.
    Every other check (inputs, lengths, existing outputs) comes before the first write. The
    files are one :class:`afxest.audio.OutputSet`: staged, then published together, so an
    interrupted or failed run leaves nothing, never audio or a figure (``--plot``) without its
    estimate. A candidate that cannot be rendered at the dry file's own rate (a cutoff above
    its Nyquist frequency) gets no audio and a warning; the estimate is still written.

    Arguments:
        estimator: The :class:`Analyser` of the loaded model.
        job: The wet file and its dry file (or None), or why they could not be paired.
        out_dir: The folder of the estimates.
        options: The request, checked.
        progress: Called with the fraction of the analysis done.
        ahead: The job's pair as :func:`read_ahead` decodes it, or None: read here.

    Returns:
        The :class:`EstimateResult`: the document, the files written and the warnings.
    """
    if job.problem:
        raise UserError(job.problem)
    folder = Path(out_dir) / job.wet.stem
    names = planned_names(estimator.task, options)
    earlier = [p.name for p in _set_files(folder) if p.name not in names]
    _check_outputs(folder, names + earlier, [p for p in (job.wet, job.dry) if p is not None], options.force)
    wet, dry_input = (job.wet, job.dry) if ahead is None else ahead.result()
    document, presets, dry, spread = estimator.analyse(wet, dry_input, options, progress)
    warnings = meaningless_ranking(document, job, dry)
    ranks, unrendered = audio_ranks(presets, dry, job, options, estimator.task)
    make_folder(out_dir)
    written = publish_estimate(folder, job, document, presets, ranks, options, estimator.task, spread, dry)
    return EstimateResult(job.wet, folder, document, written, warnings + unrendered)


def publish_estimate(folder: Path, job: Job, document: dict[str, Any], presets: Sequence, ranks: Sequence[int],
                     options: EstimateOptions, task, spread: np.ndarray | None = None,
                     dry: Signal | None = None) -> list[Path]:
    """Writes an estimate's files into ``folder`` as one :class:`afxest.audio.OutputSet`,
    replacing an earlier estimate's files; nothing is left behind on failure.

    Arguments:
        folder: The estimate's folder (``out_dir/<wet stem>``).
        job: The wet and dry files (the audio is rendered on the dry; a synth's figure shows the wet).
        document: The estimate document; its candidates' ``audio`` and its ``plot`` are filled in.
        presets: The candidates by rank.
        ranks: The ranks (from 1) whose audio is written (:func:`audio_ranks`).
        options: The request (``engine``, ``plot``).
        task: The model's task.
        spread: The posterior draws (N, d) whose spread the figure shows (``plot``), or None.
        dry: The dry file as read, rendered instead of reading ``job.dry`` again (or None).

    Returns:
        The files written, estimate.json last.
    """
    staged = OutputSet(folder)
    try:
        placement = estimate_placement(document)
        for rank in ranks:
            render_to_file(presets[rank - 1], job.dry, staged.path(_audio_name(rank)), options.engine, task, placement, dry)
            document["candidates"][rank - 1]["audio"] = _audio_name(rank)
        document["plot"] = None
        if options.plot:
            from afxest.figures import ESTIMATE_PLOT, plot_estimate

            wet = None if job.dry is not None else _mono_signal(job.wet, task).samples
            plot_estimate(staged.path(ESTIMATE_PLOT), document, presets, wet, spread=plot_spread(task, spread, document))
            document["plot"] = ESTIMATE_PLOT
        atomic_write_text(staged.path("estimate.json"), json.dumps(document, indent=2) + "\n")
        # --force replaces the whole estimate: audio of an earlier run's ranks this run did not
        # render (or its figure) would otherwise sit beside a document that no longer describes it
        keep = {_audio_name(rank) for rank in ranks} | ({document["plot"]} if document["plot"] else set())
        return staged.publish("estimate.json", [p for p in _set_files(folder) if p.name not in keep])
    except BaseException:
        staged.discard()
        raise


def meaningless_ranking(document: dict[str, Any], job: Job, dry: Signal | None) -> list[str]:
    """A warning when ranking by reconstruction cannot mean anything: the wet file is its own
    dry file, or every candidate has the same loss (a silent dry is refused before)."""
    losses = [c["loss"] for c in document["candidates"]]
    if dry is None or any(v is None for v in losses):
        return []
    if os.path.samefile(job.dry, job.wet):
        reason = "the wet file is also the dry file, so no effect separates them"
    elif len(losses) > 1 and max(losses) - min(losses) <= 1e-6 * max(1.0, abs(max(losses))):
        reason = "every candidate has the same loss"
    else:
        return []
    return [f"{job.wet}: the ranking by {document['ranked_by']} means nothing: {reason}"]


def run_batch(
    jobs: Sequence[Job],
    estimator: Analyser,
    out_dir: Path,
    options: EstimateOptions,
    on_result: Callable[[EstimateResult], None],
    on_error: Callable[[Job, BaseException], None],
    progress: Callable[[float], None] | None = None,
    ahead: Any = None,
) -> int:
    """Estimates every job (:func:`estimate_file`); a failure is reported and the rest go on.

    Arguments:
        jobs: The wet files, paired (:func:`pair_inputs`).
        estimator: The :class:`Analyser` of the loaded model.
        out_dir: The folder of the estimates.
        options: The request, checked.
        on_result: Called with each estimate written.
        on_error: Called with each job that failed and its exception (a UserError: bad input).
        progress: Called with the jobs done so far, fractions included (from 0 to ``len(jobs)``).
        ahead: The first job's pair as :func:`read_ahead` decodes it, or None.

    Returns:
        The exit code: 0 when all succeeded, 1 if any failed internally, else 2.
    """
    code = 0
    for k, job in enumerate(jobs):
        def local(f: float, k: int = k) -> None:
            if progress:
                progress(k + min(max(f, 0.0), 1.0))

        try:
            result = estimate_file(estimator, job, out_dir, options, local, ahead if k == 0 else None)
        except UserError as err:
            on_error(job, err)
            code = code or 2
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001 - one file's internal failure must not stop the batch
            on_error(job, err)
            code = 1
        else:
            on_result(result)
        local(1.0)
    return code
