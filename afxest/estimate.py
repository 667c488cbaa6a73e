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

**Refinement** (``refine`` steps): the best candidates (at most :data:`REFINE_TOP`) are
improved by Adam on their normalised parameters through a logit reparameterisation
(z = sigmoid(u)), rendering with the differentiable processors and the task loss against the
wet on up to :data:`REFINE_WINDOWS` windows, keeping each candidate's best iterate. The refined
preset is then scored like every other candidate, and kept only if that loss is not higher than
before; ``refinement`` records both losses.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from afxest.audio import OutputSet, atomic_write_text, check_out_dir, make_folder, open_audio, read_blocks, staged_file
from afxest.data import AUDIO_SUFFIXES
from afxest.engines import board
from afxest.errors import UserError
from afxest.presets import ESTIMATE_FORMAT
AUDIO_CHOICES = ("top", "all", "none")
LENGTH_TOLERANCE_S = 0.005  # wet and dry may differ by this much (the longer one is cut)
MIN_EFFECT_SECONDS = 0.5  # shortest wet an effect task analyses
SILENT_PEAK = 10 ** (-90 / 20)  # a wet whose peak is below -90 dBFS is refused as silent
QUIET_WINDOW_RMS = 10 ** (-60 / 20)  # windows below -60 dBFS RMS are not analysed
REFINE_TOP = 3
REFINE_WINDOWS = 4
# frames per soundfile read: a multiple of pedalboard's internal buffer (8192), so that streamed
# rendering splits the signal where a one-shot call does (JUCE's filters flush denormal state at
# buffer ends: other splits differ from one-shot output by ~1e-26 in decaying tails)
READ_BLOCK = 8 * 8192
# The analysis signals (wet and dry at the task's rate) are resampled with pedalboard's 32-tap
# windowed sinc, 6x faster than the 256-tap one (1.6 s per minute of 44.1 kHz audio): the two
# differ by ~46 dB SNR on music and ~1e-6 in log-mel distance, 4 orders below the losses that
# rank candidates. Rendered outputs are never resampled.
ANALYSIS_RESAMPLING = "fast"
SCORE_BATCH = 32  # rendered items per loss evaluation
# Candidates are ranked on at most SCORE_WINDOWS usable windows spread evenly over the file (a
# minute of audio), so ranking costs the same for a 10-minute file as for a 1-minute one. When a
# file has more usable windows than that, each scored window is rendered by pedalboard from
# SCORE_PREROLL_SECONDS before its start (its plugins' state has settled by then: IIR tails and
# a compressor's envelope forget their start exponentially), instead of streaming the whole file.
SCORE_WINDOWS = 12
# the search refines each window from this long before it (a compressor's envelope and the
# filters' state settle well within it), so its start matches the wet that ran through them
SEARCH_PREROLL_SECONDS = 1.0
ANALYSIS_PROPOSALS = True
SCORE_PREROLL_SECONDS = 5.0
ENCODE_BATCH = 16  # windows per encoder call


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class Signal:
    """A file read as mono float32 at ``rate``, and what it was on disk."""

    path: Path
    samples: np.ndarray  # (frames,) at ``rate``
    rate: int
    file_rate: int
    channels: int
    file_frames: int

    @property
    def seconds(self) -> float:
        return self.file_frames / self.file_rate


class _StreamResampler:
    """pedalboard's windowed-sinc resampler fed block by block, with the same output as
    :func:`afxest.audio.resample` on the whole signal (its latency handling, streamed)."""

    def __init__(self, from_rate: int, to_rate: int, quality: str = ANALYSIS_RESAMPLING) -> None:
        from pedalboard import Resample
        from pedalboard.io import StreamResampler

        from afxest.audio import RESAMPLER_QUALITY

        self.from_rate, self.to_rate = from_rate, to_rate
        quality = getattr(Resample.Quality, RESAMPLER_QUALITY[quality])
        self.resampler = StreamResampler(from_rate, to_rate, 1, quality)
        self.latency = int(self.resampler.input_latency)
        q = from_rate // math.gcd(from_rate, to_rate)
        k = -self.latency % q
        self.to_drop = (self.latency + k) * to_rate // from_rate - math.floor(self.latency * to_rate / from_rate + 0.5)
        self.head = self._run(np.zeros(k, np.float32))

    def _run(self, x: np.ndarray | None) -> np.ndarray:
        if x is None:
            y = self.resampler.process()
        else:
            y = self.resampler.process(np.ascontiguousarray(x, dtype=np.float32)[None])
        y = y[0] if y.ndim == 2 else y
        if self.to_drop:
            cut = min(self.to_drop, y.shape[0])
            y, self.to_drop = y[cut:], self.to_drop - cut
        return y

    def process(self, x: np.ndarray) -> np.ndarray:
        head, self.head = self.head, None
        y = self._run(x)
        return y if head is None or head.size == 0 else np.concatenate([head, y])

    def finish(self) -> np.ndarray:
        tail = self._run(np.zeros(self.latency + 1, np.float32))
        return np.concatenate([tail, self._run(None)])

    def frames_out(self, frames_in: int) -> int:
        return int(round(frames_in * self.to_rate / self.from_rate))


class _Buffer:
    """A growable float32 array (preallocated from the file's frame count)."""

    def __init__(self, size: int) -> None:
        self.data = np.empty(max(size, 1), np.float32)
        self.n = 0

    def append(self, x: np.ndarray) -> None:
        if self.n + x.size > self.data.size:
            grown = np.empty(max(2 * self.data.size, self.n + x.size), np.float32)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : self.n + x.size] = x
        self.n += x.size

    def result(self, frames: int) -> np.ndarray:
        """The first ``frames`` values (a view: no second copy of a long signal)."""
        if frames > self.n:  # cannot happen with the resampler's padding; keep the length exact
            self.append(np.zeros(frames - self.n, np.float32))
        return self.data[:frames]


def read_mono(path: str | os.PathLike[str], rate: int, quality: str = ANALYSIS_RESAMPLING) -> Signal:
    """Read an audio file block by block, mixed to mono and resampled to ``rate`` as it goes.

    Peak memory is the output (4 bytes per frame at ``rate``) plus one block, whatever the
    file's length, rate or channel count. The result equals
    ``afxest.audio.resample(afxest.audio.to_mono(read_audio(path)), file_rate, rate, quality)``.
    """
    path = Path(path)
    with open_audio(path) as f:
        file_rate, channels = int(f.samplerate), int(f.channels)
        resampler = None if file_rate == rate else _StreamResampler(file_rate, rate, quality)
        # the header's frame count sizes the buffer, but never beyond what the file's bytes can
        # hold at one byte per frame (a hostile header cannot make it allocate more)
        hint = max(READ_BLOCK, min(int(f.frames or 0), path.stat().st_size))
        out = _Buffer(hint if resampler is None else resampler.frames_out(hint) + 1)
        total = 0
        for block in read_blocks(f, READ_BLOCK, path):
            total += block.shape[0]
            # the mean of the channels as a matrix-vector product (BLAS; a strided numpy mean is
            # several times slower); a NaN or Inf in any channel makes the mix non-finite
            mono = block[:, 0] if channels == 1 else block @ np.full(channels, 1 / channels, np.float32)
            if not np.isfinite(mono).all():
                raise UserError(f"{path}: contains non-finite samples (NaN or Inf)")
            out.append(mono if resampler is None else resampler.process(mono))
        if total == 0:
            raise UserError(f"{path}: contains no audio")
        frames = total
        if resampler is not None:
            out.append(resampler.finish())
            frames = resampler.frames_out(total)
    return Signal(path, out.result(frames), rate, file_rate, channels, total)


# ---------------------------------------------------------------------------------------------
# inputs and outputs


@dataclass
class Job:
    """One wet file, its dry file (or None), or why it cannot be paired."""

    wet: Path
    dry: Path | None
    problem: str | None = None




def pair_inputs(wets: Sequence[Path], drys: Sequence[Path]) -> list[Job]:
    """Pair wet files with dry files: in order, one dry for every wet, or by file name stem when
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
    """Refuse two wet files whose outputs would land in the same ``DIR/<stem>`` folder."""
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
    audio: str = "top"  # "top", "all" or "none"
    force: bool = False
    plot: bool = False  # write estimate.png (afxest.figures.plot_estimate) with the estimate


@dataclass
class EstimateResult:
    """An estimate document and the files written for it."""

    wet: Path
    folder: Path
    document: dict[str, Any]
    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def windows_of(frames: int, task) -> list[tuple[int, int]]:
    """Analysis windows (start, stop) of a signal of ``frames`` samples at the task's rate.

    Effect tasks: consecutive clips, the last one extended to the end (so windows cover the
    whole signal; a signal shorter than a clip is one window). Synth tasks: whole clips only.
    """
    clip = task.clip_samples
    if task.has_source:
        return [(i * clip, (i + 1) * clip) for i in range(frames // clip)]
    n = max(1, frames // clip)
    windows = [(i * clip, (i + 1) * clip) for i in range(n)]
    windows[-1] = (windows[-1][0], frames)
    return windows


def _usable(wet: np.ndarray, windows: Sequence[tuple[int, int]]) -> list[int]:
    rms = np.array([np.sqrt(np.mean(np.square(wet[a:b], dtype=np.float64))) for a, b in windows])
    usable = [i for i, r in enumerate(rms) if r >= QUIET_WINDOW_RMS]
    loudest = int(np.argmax(rms))
    if loudest not in usable:
        usable = sorted(usable + [loudest])
    return usable


LONG_FILE_SECONDS = 60.0


def inference_threads(seconds: float | None = None) -> None:
    """torch's intra-op threads on the CPU, unless OMP_NUM_THREADS says otherwise: one for a
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


def pedalboard_windows(presets: Sequence, dry: np.ndarray, windows: Sequence[tuple[int, int]], rate: int):
    """Yield each window of every preset's pedalboard rendering of ``dry`` (frames,), (M, T).

    One plugin chain per preset streams through the whole signal in blocks of READ_BLOCK from
    the start (state carried over, blocks on pedalboard's own 8192-sample grid), so the windows
    are exactly slices of ``pedalboard`` applied to the whole signal in one call. Windows must
    be consecutive; at most a window and a block per preset are held."""
    boards = [board(p) for p in presets]
    done, start = 0, 0  # rendered up to `done`; `held` starts at `start`
    held = np.zeros((len(boards), 0), np.float32)
    for a, b in windows:
        while done < b:
            x = dry[None, done : min(done + READ_BLOCK, dry.shape[0])]
            block = np.stack([chain(x, float(rate), reset=False)[0] for chain in boards])
            held = np.concatenate([held, block], axis=1)
            done += x.shape[1]
        yield held[:, a - start : b - start]
        held, start = held[:, b - start :], b


def scored_windows(use: Sequence[int], limit: int | None = None) -> list[int]:
    """The usable windows candidates are ranked on: all of them, or ``limit`` (default
    :data:`SCORE_WINDOWS`) spread evenly from the first to the last."""
    limit = SCORE_WINDOWS if limit is None else limit
    if len(use) <= limit:
        return list(use)
    if limit == 1:
        return [use[len(use) // 2]]
    return [use[round(j * (len(use) - 1) / (limit - 1))] for j in range(limit)]


def search_windows(windows: Sequence[tuple[int, int]], use: Sequence[int], n: int) -> list[int]:
    """Up to ``n`` usable windows of the most common length (so they stack), evenly spread."""
    lengths: dict[int, list[int]] = {}
    for i in use:
        lengths.setdefault(windows[i][1] - windows[i][0], []).append(i)
    ids = max(lengths.values(), key=len)
    n = min(n, len(ids))
    return [ids[(j * len(ids)) // n] for j in range(n)]


def pedalboard_prerolled(presets: Sequence, dry: np.ndarray, windows: Sequence[tuple[int, int]], rate: int):
    """Yield each window of every preset's pedalboard rendering, (M, T), each rendered afresh
    from :data:`SCORE_PREROLL_SECONDS` before the window (or the file's start)."""
    boards = [board(p) for p in presets]
    preroll = int(round(SCORE_PREROLL_SECONDS * rate))
    for a, b in windows:
        start = max(0, a - preroll)
        x = dry[None, start:b]
        yield np.stack([chain(x, float(rate))[0, a - start :] for chain in boards])


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class Analyser:
    """A loaded model ready to estimate files: ``afxest estimate`` without the command line."""

    def __init__(self, model, device: Any = "cpu") -> None:
        import copy

        import torch

        self.model = model
        self.task = model.task
        self.device = torch.device(device)
        self.net = model.estimator.to(self.device).eval()
        # the head is tiny: sampling and log-densities run in float64 on the CPU, so values near
        # the edges of [0, 1] are not rounded onto them, and results do not depend on the device
        self.head = copy.deepcopy(self.net.head).to("cpu", torch.float64).eval()
        self.posterior = model.kind == "posterior"
        from afxest.objective import task_loss

        self.loss_fn = task_loss(self.task, self.device)
        self._metrics: dict[str, Callable] | None = None

    # -- the steps ------------------------------------------------------------------------

    def encode(self, wet: np.ndarray, windows: Sequence[tuple[int, int]], use: Sequence[int]):
        """Embeddings (len(use), C) in float64 of the usable windows (float32 encoder)."""
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

    def propose(self, h, n: int, generator) -> tuple[np.ndarray, np.ndarray | None, float | None]:
        """N candidates z (M, d) in float64 from the mixture of the windows' posteriors, the
        log-density of each under the posterior of the window that drew it (None without a
        posterior), and the mean entropy estimate (nats) of the proposing windows' posteriors.

        Candidate i comes from usable window (i U) // N; a point-estimating model gives one
        candidate per proposing window (identical ones merged)."""
        u = h.shape[0]
        owners = [(i * u) // n for i in range(n)]
        zs, own, entropies = [], [], []
        for w in sorted(set(owners)):
            k = owners.count(w) if self.posterior else 1
            s = self.head.sample(h[w : w + 1], k, generator=generator)
            zs.extend(s.z[0].cpu().numpy().astype(np.float64))
            if s.log_prob is not None:
                own.extend(s.log_prob[0].cpu().numpy().astype(np.float64))
            if s.entropy is not None:
                entropies.append(float(s.entropy[0]))
        if not self.posterior:  # point estimates of several windows may coincide
            unique: dict[bytes, np.ndarray] = {}
            for z in zs:
                unique.setdefault(z.tobytes(), z)
            zs = list(unique.values())
        entropy = sum(entropies) / len(entropies) if entropies else None
        return np.stack(zs), (np.array(own) if own else None), entropy

    def log_prob(self, z: np.ndarray, h) -> np.ndarray:
        """Mean over windows of ln p(z | window), (M,) float64 (posterior models only)."""
        import torch

        zt = torch.from_numpy(z)
        total = torch.zeros(z.shape[0], dtype=torch.float64)
        chunk = max(1, 4096 // max(1, z.shape[0]))
        for s in range(0, h.shape[0], chunk):
            hs = h[s : s + chunk]
            total += self.head.log_prob(zt.expand(hs.shape[0], *zt.shape), hs).sum(dim=0)
        return (total / h.shape[0]).numpy().astype(np.float64)

    def match_metrics(self) -> dict[str, Callable]:
        """What each rendered candidate is measured by against the wet: the task's loss (the
        ranking), SI-SDR (dB) and the log-mel distance (DAFx 2025 Eq. 16)."""
        from afxest import losses

        if self._metrics is None:
            mel = self.loss_fn if self.task.loss == "log_mel" else losses.LogMelLoss(self.task.sample_rate).to(self.device)
            self._metrics = {"loss": self.loss_fn, "si_sdr": losses.si_sdr, "log_mel": mel}
        return self._metrics

    def baseline(self, wet: np.ndarray, dry: np.ndarray, windows, use, metrics: dict[str, Callable]) -> dict[str, float | None]:
        """The dry's own distance to the wet (each metric, mean over the scored windows)."""
        import torch

        values: dict[str, list[float]] = {name: [] for name in metrics}
        for i in scored_windows(use):
            a, b = windows[i]
            pair = [torch.from_numpy(np.ascontiguousarray(x[a:b]))[None, None].to(self.device) for x in (dry, wet)]
            for name, fn in metrics.items():
                values[name].append(float(fn(*pair)[0]))
        return {name: _finite(float(np.mean(v))) for name, v in values.items()}

    def presets(self, z: np.ndarray) -> list:
        return [self.task.model.preset(v, self.task.name, self.task.sample_rate) for v in z]

    def measure(
        self,
        presets: Sequence,
        wet: np.ndarray,
        dry: np.ndarray | None,
        windows: Sequence[tuple[int, int]],
        use: Sequence[int],
        engine: str,
        metrics: dict[str, Callable],
        progress: Callable[[float], None] | None = None,
        prerolled: bool = False,
    ) -> dict[str, np.ndarray]:
        """Mean over the scored windows (:func:`scored_windows` of the usable ones) of each
        metric (y_hat, y) -> (batch,) of each preset, name -> (M,) float64. ``prerolled``:
        render each window from :data:`SCORE_PREROLL_SECONDS` before it, never streaming."""
        import torch

        m = len(presets)
        total = {name: np.zeros(m) for name in metrics}
        streamed = len(use) <= SCORE_WINDOWS and not prerolled  # stream the whole file, exact
        use = scored_windows(use)
        used = set(use)
        pending: list[tuple[np.ndarray, np.ndarray]] = []  # (rendered (M, T), wet (T,))

        def flush() -> None:
            if not pending:
                return
            y_hat = torch.from_numpy(np.concatenate([r for r, _ in pending])[:, None]).to(self.device)
            y = torch.from_numpy(np.stack([w for _, w in pending for _ in range(m)])[:, None]).to(self.device)
            for name, fn in metrics.items():
                total[name] += fn(y_hat, y).double().cpu().numpy().reshape(len(pending), m).sum(axis=0)
            pending.clear()

        def add(rendered: np.ndarray, target: np.ndarray) -> None:
            if pending and pending[0][1].shape != target.shape:
                flush()
            pending.append((rendered, target))
            if len(pending) * m >= SCORE_BATCH:
                flush()

        rate = self.task.sample_rate
        if dry is None:  # synth task: every window is one clip; the candidates do not change
            synth = self._synthesise(presets)
            for k, i in enumerate(use):
                a, b = windows[i]
                add(synth, wet[a:b])
                if progress:
                    progress((k + 1) / len(use))
        elif engine == "pedalboard" and streamed:
            for k, rendered in enumerate(pedalboard_windows(presets, dry, windows, rate)):
                if k in used:
                    a, b = windows[k]
                    add(rendered, wet[a:b])
                if progress:
                    progress((k + 1) / len(windows))
        elif engine == "pedalboard":
            for k, (i, rendered) in enumerate(zip(use, pedalboard_prerolled(presets, dry, [windows[i] for i in use], rate))):
                a, b = windows[i]
                add(rendered, wet[a:b])
                if progress:
                    progress((k + 1) / len(use))
        else:
            for k, i in enumerate(use):
                a, b = windows[i]
                add(self._ddsp(presets, dry[a:b]), wet[a:b])
                if progress:
                    progress((k + 1) / len(use))
        flush()
        return {name: v / len(use) for name, v in total.items()}

    def _synthesise(self, presets: Sequence) -> np.ndarray:
        from afxest.engines import render_batch

        return render_batch(presets, None, self.task.sample_rate, "ddsp", self.task.clip_samples)[:, 0]

    def _ddsp(self, presets: Sequence, dry: np.ndarray) -> np.ndarray:
        from afxest.engines import render_batch

        return render_batch(presets, dry[None], self.task.sample_rate, "ddsp")[:, 0]

    def search(self, z: np.ndarray, wet: np.ndarray, dry: np.ndarray | None, windows, use, options: EstimateOptions):
        """:func:`afxest.search.search` from the candidates ``z`` (M, d): proposals scored by
        the real renderer on :func:`search_windows`, the best refined through the
        differentiable processors (from :data:`SEARCH_PREROLL_SECONDS` before each window)."""
        import torch

        from afxest import search as s
        from afxest.objective import render_model

        task = self.task
        effort = s.EFFORTS[options.effort]
        picks = search_windows(windows, use, effort.windows)
        proposals = {"posterior": z}
        if task.model.dim <= s.DESIGN_MAX_DIM:
            proposals["design"] = s.design(task.model.dim, effort.design, options.seed)
        if dry is not None and ANALYSIS_PROPOSALS:
            spans = [windows[i] for i in picks]
            ratio, weight = s.long_term_ratio_db(np.concatenate([dry[a:b] for a, b in spans]),
                                                 np.concatenate([wet[a:b] for a, b in spans]))
            proposals["analysis"] = s.fit_equaliser(task.model, z, ratio, weight, task.sample_rate)

        def cheap(zs: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return self.measure(self.presets(zs), wet, dry, windows, picks, "pedalboard", {"loss": self.loss_fn},
                                    prerolled=True)["loss"]

        # excerpts from a pre-roll before each window (zeros before the file's start: the real
        # renders started from rest there too); none when every window starts the file
        preroll = 0 if task.has_source or all(windows[i][0] == 0 for i in picks) else int(round(SEARCH_PREROLL_SECONDS * task.sample_rate))

        def excerpts(signal: np.ndarray) -> Any:
            padded = np.concatenate([np.zeros(preroll, np.float32), signal])
            rows = [padded[windows[i][0] : windows[i][1] + preroll] for i in picks]
            return torch.from_numpy(np.stack(rows)[:, None]).to(self.device)

        return s.search(
            proposals, cheap, lambda zs, x: render_model(task, zs, x), s.search_loss(self.loss_fn),
            excerpts(wet), None if dry is None else excerpts(dry), effort,
            max_steps=options.refine or None, skip=preroll,
        )

    # -- one file -------------------------------------------------------------------------

    def estimate(
        self,
        wet_path: Path,
        dry_path: Path | None,
        options: EstimateOptions,
        progress: Callable[[float], None] | None = None,
    ) -> tuple[dict[str, Any], list, Signal | None]:
        """The estimate document of one wet file (nothing written), its presets by rank, and the
        dry as read (for rendering the audio)."""
        import torch

        task = self.task
        report = progress or (lambda _f: None)
        if options.refine and dry_path is None and not task.has_source:
            raise UserError("--refine needs a dry file for an effect task (it improves the reconstruction of the wet)")
        if dry_path is not None and task.has_source:
            raise UserError(f"{dry_path}: the {task.name} model estimates a synth, which needs no dry file; leave out --dry")
        wet = read_mono(wet_path, task.sample_rate)
        if float(np.max(np.abs(wet.samples), initial=0.0)) < SILENT_PEAK:
            raise UserError(f"{wet_path}: is silent (its mono mix peaks below -90 dBFS): nothing to estimate")
        dry = None
        frames = wet.samples.shape[0]
        if self.device.type == "cpu":
            inference_threads(wet.seconds)
        if dry_path is not None:
            dry = read_mono(dry_path, task.sample_rate)
            gap = abs(wet.seconds - dry.seconds)
            if gap > LENGTH_TOLERANCE_S:
                raise UserError(
                    f"{wet_path} ({wet.seconds:.3f} s at {wet.file_rate} Hz) and {dry_path} "
                    f"({dry.seconds:.3f} s at {dry.file_rate} Hz) differ in length by {gap * 1000:.1f} ms "
                    f"(at most {LENGTH_TOLERANCE_S * 1000:g} ms is accepted): pair each wet with the dry it was made from"
                )
            frames = min(frames, dry.samples.shape[0])
        seconds = frames / task.sample_rate
        if task.has_source and frames < task.clip_samples:
            raise UserError(f"{wet_path}: is {seconds:.3f} s long; the {task.name} model needs at least {task.clip_seconds:g} s")
        if not task.has_source and seconds < MIN_EFFECT_SECONDS:
            raise UserError(f"{wet_path}: is {seconds:.3f} s long; at least {MIN_EFFECT_SECONDS:g} s is needed")
        wet_x = wet.samples[:frames]
        dry_x = None if dry is None else dry.samples[:frames]
        windows = windows_of(frames, task)
        use = _usable(wet_x, windows)
        report(0.05)

        generator = torch.Generator().manual_seed(options.seed)
        with torch.inference_mode():
            h = self.encode(wet_x, windows, use)
            z, own_log_prob, entropy = self.propose(h, options.samples, generator)
            # one window: the sampler's own log-density is the pooled one (exact: no inversion)
            log_prob = own_log_prob if len(use) == 1 or own_log_prob is None else self.log_prob(z, h)
        m = z.shape[0]
        report(0.15)
        presets = self.presets(z)
        losses, matches, baseline = None, {}, None
        reference = dry_x is not None or task.has_source
        searching = reference and options.refine != 0
        metrics = self.match_metrics()
        if reference:
            ranked_by = task.loss
            with torch.inference_mode():
                matches = self.measure(
                    presets, wet_x, dry_x, windows, use, options.engine, metrics,
                    lambda f: report(0.15 + (0.2 if searching else 0.85) * f),
                )
                if dry_x is not None:
                    baseline = self.baseline(wet_x, dry_x, windows, use, metrics)
            losses = matches["loss"]
        elif self.posterior:
            ranked_by = "log_prob"
        else:  # point estimates of several windows and no way to rank them: keep their medoid
            ranked_by = None
            if m > 1:
                distances = np.abs(z[:, None, :] - z[None, :, :]).sum(axis=(1, 2))
                z = z[[int(np.argmin(distances))]]
                presets = self.presets(z)
                m = 1
        refinement: dict[int, dict[str, Any]] = {}
        if searching:
            found = self.search(z, wet_x, dry_x, windows, use, options)
            new_presets = self.presets(found.z)
            with torch.inference_mode():
                new = self.measure(new_presets, wet_x, dry_x, windows, use, options.engine, metrics)
                new_lp = self.log_prob(found.z, h) if self.posterior else None
            for j in range(len(found.z)):
                refinement[m + j] = {
                    "steps": found.steps,
                    "loss_before": _finite(found.loss_before[j]),
                    "loss_after": _finite(new["loss"][j]),
                    "applied": True,
                    "proposal": found.origin[j],
                }
            z = np.concatenate([z, found.z])
            presets += new_presets
            matches = {k: np.concatenate([v, new[k]]) for k, v in matches.items()}
            losses = matches["loss"]
            if log_prob is not None:
                log_prob = np.concatenate([log_prob, new_lp])
            m = z.shape[0]
        order = self._order(losses, log_prob, m)
        report(1.0)

        d = task.model.dim
        candidates = []
        for rank, c in enumerate(order, start=1):
            entry: dict[str, Any] = {
                "rank": rank,
                "loss": None if losses is None else _finite(losses[c]),
                "log_prob": None if log_prob is None else _finite(float(log_prob[c])),
                "preset": presets[c].to_dict(),
                "audio": None,
            }
            for k in ("si_sdr", "log_mel"):
                if k in matches:
                    entry[k] = _finite(float(matches[k][c]))
            if c in refinement:
                entry["refinement"] = refinement[c]
            candidates.append(entry)
        document = {
            "format": ESTIMATE_FORMAT,
            "task": task.name,
            "model": {"name": self.model.name, "sha256": self.model.sha256},
            "wet": str(wet_path),
            "dry": None if dry_path is None else str(dry_path),
            "sample_rate": task.sample_rate,
            "ranked_by": ranked_by,
            "entropy_bits_per_dim": None if entropy is None else _finite(entropy / (d * math.log(2))),
            "candidates": candidates,
            "baseline": baseline,
            "summary": summary([presets[c] for c in order], task),
            "analysis": {
                "estimator": self.model.kind,
                "engine": options.engine if dry_x is not None else None,
                "seed": options.seed,
                "seconds": frames / task.sample_rate,
                "window_seconds": task.clip_seconds,
                "windows": len(windows),
                "windows_used": len(use),
                "windows_scored": len(scored_windows(use)) if losses is not None else 0,
                "refine_steps": found.steps if searching else 0,
                "search": None if not searching else {
                    "effort": options.effort,
                    "proposals": found.proposals,
                    "windows": found.windows,
                    "step_cap": found.step_cap,
                },
            },
        }
        return document, [presets[c] for c in order], dry

    @staticmethod
    def _order(losses, log_prob, m: int) -> list[int]:
        if losses is not None:
            key = [(v if math.isfinite(v) else math.inf) for v in losses]
            return sorted(range(m), key=lambda i: (key[i], i))
        if log_prob is not None:
            key = [(float(v) if math.isfinite(float(v)) else -math.inf) for v in log_prob]
            return sorted(range(m), key=lambda i: (-key[i], i))
        return list(range(m))


def summary(presets: Sequence, task) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and 5/50/95 % quantiles of each estimated parameter over the
    candidates, in physical units, keyed by ``Space.names`` (``<index>.<type>.<parameter>``)."""
    values: dict[str, list[float]] = {name: [] for name in task.model.names}
    for preset in presets:
        processors = ([preset.source] if preset.source is not None else []) + list(preset.effects)
        for i, (space, proc) in enumerate(zip(task.model.processors, processors)):
            for r in space.ranges:
                values[f"{i}.{space.type}.{r.name}"].append(proc.params[r.name])
    out = {}
    for name, v in values.items():
        a = np.asarray(v, dtype=np.float64)
        q05, q50, q95 = np.quantile(a, [0.05, 0.5, 0.95])
        out[name] = {"mean": float(a.mean()), "std": float(a.std()), "q05": float(q05), "q50": float(q50), "q95": float(q95)}
    return out


# ---------------------------------------------------------------------------------------------
# writing


def render_to_file(preset, dry_path: Path | None, out: Path, engine: str, task) -> None:
    """Write the candidate's audio: on the dry file at its own rate and channel count, streamed
    block by block (pedalboard: the plugin chain carries its state, so the file equals
    ``afxest render DRY ESTIMATE``; ddsp: the analysis windows, each rendered from rest, as
    scored), or the synthesised source at the task's rate. 32-bit float WAV, written atomically."""
    import soundfile

    from afxest.engines import render

    with staged_file(out) as fh:
        if dry_path is None:
            y = render(preset, None, int(round(preset.sample_rate)), engine)
            with soundfile.SoundFile(fh, "w", int(round(preset.sample_rate)), 1, subtype="FLOAT", format="WAV") as sink:
                fh.write_frames(sink, y.T)
            return
        with open_audio(dry_path) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            chain = board(preset) if engine == "pedalboard" else None
            clip = int(round(task.clip_seconds * rate))
            with soundfile.SoundFile(fh, "w", rate, channels, subtype="FLOAT", format="WAV") as sink:
                while True:
                    if chain is not None:
                        x = f.read(READ_BLOCK, dtype="float32", always_2d=True)
                    else:  # the analysis windows: clips, the last one taking the rest
                        left = f.frames - f.tell()
                        x = f.read(clip if left >= 2 * clip else -1, dtype="float32", always_2d=True)
                    if x.shape[0] == 0:
                        break
                    x = np.ascontiguousarray(x.T)
                    if chain is not None:
                        y = chain(x, float(rate), reset=False)
                    else:
                        y = render(preset, x, rate, "ddsp")
                    if not np.isfinite(y).all():
                        raise RuntimeError("rendering produced non-finite audio")
                    fh.write_frames(sink, y.T)


def estimate_file(
    estimator: Analyser,
    job: Job,
    out_dir: Path,
    options: EstimateOptions,
    progress: Callable[[float], None] | None = None,
) -> EstimateResult:
    """Estimate one file and write ``out_dir/<wet stem>/estimate.json`` and its audio.

    Every check (inputs, lengths, existing outputs) comes before the first write. The files are
    one :class:`afxest.audio.OutputSet`: staged, then published together, so an interrupted or
    failed run leaves nothing, never audio or a figure (``--plot``) without its estimate. A candidate that cannot be
    rendered at the dry file's own rate (a cutoff above its Nyquist frequency) gets no audio
    and a warning; the estimate is still written.
    """
    if job.problem:
        raise UserError(job.problem)
    folder = Path(out_dir) / job.wet.stem
    inputs = [p for p in (job.wet, job.dry) if p is not None]
    from afxest.search import DESIGN_MAX_DIM, EFFORTS

    effort = EFFORTS[options.effort]
    # the search's candidates
    found = 0 if options.refine == 0 else effort.keep_design if estimator.task.model.dim <= DESIGN_MAX_DIM else effort.keep
    m_max = 1 if options.audio == "top" else options.samples + found if options.audio == "all" else 0
    names = ["estimate.json"] + [_audio_name(k) for k in range(1, m_max + 1)]
    if options.plot:
        from afxest.figures import ESTIMATE_PLOT, require_matplotlib

        require_matplotlib()
        names.append(ESTIMATE_PLOT)
    earlier = [p for p in _set_files(folder) if p.name not in names]
    _check_outputs(folder, names + [p.name for p in earlier], inputs, options.force)
    document, presets, dry = estimator.estimate(job.wet, job.dry, options, progress)
    warnings = meaningless_ranking(document, job, dry)
    task = estimator.task
    can_render = dry is not None or task.has_source
    count = 0 if not can_render else {"top": 1, "all": len(presets), "none": 0}[options.audio]
    ranks = list(range(1, count + 1))
    if dry is not None:
        problems = {}
        for rank in ranks:
            try:
                presets[rank - 1].check_sample_rate(dry.file_rate, f"candidate {rank}")
            except UserError as err:
                problems[rank] = str(err)
        if problems:
            ranks = [r for r in ranks if r not in problems]
            first = next(iter(problems.values()))
            warnings.append(
                f"{job.dry}: no audio for candidate{'s' * (len(problems) > 1)} {', '.join(map(str, problems))}: "
                f"it cannot be rendered at the dry file's {dry.file_rate} Hz ({first})"
            )
    make_folder(out_dir)
    staged = OutputSet(folder)
    try:
        for rank in ranks:
            render_to_file(presets[rank - 1], job.dry, staged.path(_audio_name(rank)), options.engine, task)
            document["candidates"][rank - 1]["audio"] = _audio_name(rank)
        document["plot"] = None
        if options.plot:
            from afxest.figures import ESTIMATE_PLOT, plot_estimate

            wet = None if dry is not None else read_mono(job.wet, task.sample_rate).samples
            plot_estimate(staged.path(ESTIMATE_PLOT), document, presets, wet)
            document["plot"] = ESTIMATE_PLOT
        atomic_write_text(staged.path("estimate.json"), json.dumps(document, indent=2) + "\n")
        # --force replaces the whole estimate: audio of an earlier run's ranks this run did not
        # render (or its figure) would otherwise sit beside a document that no longer describes it
        keep = {_audio_name(rank) for rank in ranks} | ({document["plot"]} if document["plot"] else set())
        written = staged.publish("estimate.json", [p for p in _set_files(folder) if p.name not in keep])
    except BaseException:
        staged.discard()
        raise
    return EstimateResult(job.wet, folder, document, written, warnings)


def meaningless_ranking(document: dict[str, Any], job: Job, dry: Signal | None) -> list[str]:
    """A warning when ranking by reconstruction cannot mean anything: the wet file is its own
    dry file, the dry is silent, or every candidate has the same loss."""
    losses = [c["loss"] for c in document["candidates"]]
    if dry is None or any(v is None for v in losses):
        return []
    if os.path.samefile(job.dry, job.wet):
        reason = "the wet file is also the dry file, so no effect separates them"
    elif float(np.max(np.abs(dry.samples), initial=0.0)) < SILENT_PEAK:
        reason = "the dry file is silent, so every candidate renders silence"
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
) -> int:
    """Estimate every job; a failure is reported through ``on_error`` and the rest go on.

    Returns the exit code: 0 when all succeeded, 1 if any failed internally, else 2.
    """
    code = 0
    for k, job in enumerate(jobs):
        def local(f: float, k: int = k) -> None:
            if progress:
                progress(k + min(max(f, 0.0), 1.0))

        try:
            result = estimate_file(estimator, job, out_dir, options, local)
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
