"""Windows of a recording, and candidates measured against the wet on them (``afxest estimate``).

An estimate analyses the wet in windows of the task's clip length (:func:`windows_of`), skips
the quiet ones (:func:`usable_windows`), ranks candidates on at most :data:`SCORE_WINDOWS` of
the rest spread over the file (:func:`scored_windows`) and searches on a few of equal length
(:func:`search_windows`). The network's windows are at the task's rate; with a dry file the
candidates are measured at the rate they are rendered at (the dry file's), on windows of the
same length within the overlap of wet and dry (:func:`span_windows`).

:class:`Scorer` renders candidates on those windows and measures them against the wet with the
task's loss (the ranking), SI-SDR and the log-mel distance (DAFx 2025, Eq. 16), each the mean
over the scored windows and the channels (a stereo pair is rendered and measured in stereo:
each channel has its own compressor detector, as in pedalboard). Signals are (channels,
frames). One renderer per case, each a generator of rendered windows:

* a synth task: the synthesised candidates, the same for every window (:meth:`Scorer._synthesise`);
* pedalboard, streamed: one plugin chain per candidate through the whole dry
  (:func:`pedalboard_windows`), so the windows are slices of pedalboard on the whole file;
* pedalboard, pre-rolled: each window rendered afresh from :data:`SCORE_PREROLL_SECONDS`
  before it (:func:`pedalboard_prerolled`), for files with more usable windows than are scored;
* afxest's differentiable processors (``ddsp``): each window rendered from rest
  (:meth:`Scorer._ddsp`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from afxest.audio import READ_BLOCK
from afxest.device import cpu_workers
from afxest.engines import board

QUIET_WINDOW_RMS = 10 ** (-60 / 20)  # windows below -60 dBFS RMS are not analysed
SCORE_BATCH = 32  # rendered items per loss evaluation
# Candidates are ranked on at most SCORE_WINDOWS usable windows spread evenly over the file (a
# minute of audio), so ranking costs the same for a 10-minute file as for a 1-minute one. When a
# file has more usable windows than that, each scored window is rendered by pedalboard from as
# long before its start as the preset's chain remembers its input (afxest.engines.memory_seconds:
# IIR tails and a compressor's envelope forget their start exponentially), at most
# SCORE_PREROLL_SECONDS, instead of streaming the whole file.
SCORE_WINDOWS = 12
SCORE_PREROLL_SECONDS = 5.0

Windows = Sequence[tuple[int, int]]  # (start, stop) of each window, in samples
# what a renderer yields: the window's index (None: rendered on the way, not scored), the
# candidates' rendering of it (M, C, T), and the fraction of the rendering done
Rendered = Iterator[tuple[int | None, np.ndarray, float]]


# ---------------------------------------------------------------------------------------------
# windows


def windows_of(frames: int, task) -> list[tuple[int, int]]:
    """The analysis windows (start, stop) of a signal of ``frames`` samples at the task's rate.

    Effect tasks: consecutive clips, the last one extended to the end (so windows cover the
    whole signal; a signal shorter than a clip is one window). Synth tasks: whole clips only.

    Example:
        >>> from types import SimpleNamespace
        >>> windows_of(10, SimpleNamespace(clip_samples=4, has_source=False))
        [(0, 4), (4, 10)]
        >>> windows_of(10, SimpleNamespace(clip_samples=4, has_source=True))
        [(0, 4), (4, 8)]
    """
    clip = task.clip_samples
    if task.has_source:
        return [(i * clip, (i + 1) * clip) for i in range(frames // clip)]
    n = max(1, frames // clip)
    windows = [(i * clip, (i + 1) * clip) for i in range(n)]
    windows[-1] = (windows[-1][0], frames)
    return windows


def span_windows(start: int, stop: int, clip: int) -> list[tuple[int, int]]:
    """Consecutive windows of ``clip`` samples from ``start``, the last extended to ``stop`` (one
    window when the span is shorter than two clips): the windows of :func:`windows_of` for an
    effect task, moved to the span.

    Example:
        >>> span_windows(3, 13, 4)
        [(3, 7), (7, 13)]
    """
    n = max(1, (stop - start) // clip)
    windows = [(start + i * clip, start + (i + 1) * clip) for i in range(n)]
    windows[-1] = (windows[-1][0], stop)
    return windows


def usable_windows(wet: np.ndarray, windows: Windows) -> list[int]:
    """The windows analysed: those whose RMS (float64, over the channels of a (channels, frames)
    wet or of a (frames,) one) is at least :data:`QUIET_WINDOW_RMS`, and the loudest one in any
    case, in order."""
    rms = np.array([np.sqrt(np.mean(np.square(wet[..., a:b], dtype=np.float64))) for a, b in windows])
    usable = [i for i, r in enumerate(rms) if r >= QUIET_WINDOW_RMS]
    loudest = int(np.argmax(rms))
    if loudest not in usable:
        usable = sorted(usable + [loudest])
    return usable


def scored_windows(use: Sequence[int], limit: int | None = None) -> list[int]:
    """The usable windows candidates are ranked on: all of them, or ``limit`` (default
    :data:`SCORE_WINDOWS`) spread evenly from the first to the last.

    Example:
        >>> scored_windows([0, 1, 2, 4, 5, 6, 7, 8, 9, 10], limit=4)
        [0, 4, 7, 10]
    """
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


# ---------------------------------------------------------------------------------------------
# renderers


def pedalboard_windows(presets: Sequence, dry: np.ndarray, windows: Sequence[tuple[int, int]], rate: int,
                       threads: int = 1):
    """Yields each window of every preset's pedalboard rendering of ``dry`` (C, frames), (M, C, T).

    One plugin chain per preset streams through the whole signal in blocks of READ_BLOCK from
    the start (state carried over, blocks on pedalboard's own 8192-sample grid), so the windows
    are exactly slices of ``pedalboard`` applied to the whole signal in one call (a chain with a
    latency, :class:`afxest.engines.Chain`, lags the input by it, and is flushed at the end).
    Windows must be consecutive; at most a window and a block per preset are held. The chains
    of a block are rendered in ``threads`` threads (pedalboard releases the GIL), each chain in
    one thread at a time."""
    from concurrent.futures import ThreadPoolExecutor

    boards = [board(p) for p in presets]
    fed, start = 0, 0  # the dry fed up to `fed`; `held` starts at `start`
    held = [np.zeros((dry.shape[0], 0), np.float32) for _ in boards]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for a, b in windows:
            while min(h.shape[1] for h in held) < b - start:
                if fed < dry.shape[1]:
                    x = np.ascontiguousarray(dry[:, fed : min(fed + READ_BLOCK, dry.shape[1])])
                    blocks = list(pool.map(lambda chain, x=x: chain(x, float(rate), reset=False), boards))
                    fed += x.shape[1]
                else:
                    blocks = [chain.flush(rate) for chain in boards]
                    if not any(y.shape[1] for y in blocks):
                        raise ValueError(f"window ({a}, {b}) ends after the signal ({dry.shape[1]} frames)")
                held = [np.concatenate([h, y], axis=1) for h, y in zip(held, blocks)]
            yield np.stack([h[:, a - start : b - start] for h in held])
            held, start = [h[:, b - start :] for h in held], b


def pedalboard_prerolled(presets: Sequence, dry: np.ndarray, windows: Sequence[tuple[int, int]], rate: int,
                         threads: int = 1):
    """Yields each window of every preset's pedalboard rendering of ``dry`` (C, frames), (M, C, T),
    each rendered afresh from as long before the window (or the file's start) as its chain
    remembers (:func:`afxest.engines.memory_seconds`, at most :data:`SCORE_PREROLL_SECONDS`) to
    its chain's latency after it (:class:`afxest.engines.Chain`); the presets of a window
    rendered in ``threads`` threads (pedalboard releases the GIL while it renders)."""
    from concurrent.futures import ThreadPoolExecutor

    from afxest.engines import memory_seconds

    boards = [board(p) for p in presets]
    prerolls = [int(math.ceil(min(SCORE_PREROLL_SECONDS, memory_seconds(p)) * rate)) for p in presets]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for a, b in windows:

            def render(k: int, a: int = a, b: int = b) -> np.ndarray:
                chain, start = boards[k], max(0, a - prerolls[k])
                return chain(np.ascontiguousarray(dry[:, start : b + chain.latency]), float(rate))[:, a - start : b - start]

            yield np.stack(list(pool.map(render, range(len(boards)))))


def _streamed(presets: Sequence, dry: np.ndarray, windows: Windows, use: Sequence[int], rate: int) -> Rendered:
    """:func:`pedalboard_windows` through every window, the ``use`` ones scored, in as many
    threads as the process may use (:func:`afxest.device.cpu_workers`)."""
    used = set(use)
    for k, rendered in enumerate(pedalboard_windows(presets, dry, windows, rate, cpu_workers())):
        yield (k if k in used else None), rendered, (k + 1) / len(windows)


def _prerolled(presets: Sequence, dry: np.ndarray, windows: Windows, use: Sequence[int], rate: int) -> Rendered:
    """:func:`pedalboard_prerolled` on the ``use`` windows, in as many threads as the process may
    use (:func:`afxest.device.cpu_workers`; whatever torch's intra-op threads: these are Python
    threads that wait without spinning, so a short file's 30 mix chains at 44.1 kHz take 0.57 s
    instead of 1.0 on 2 idle cores)."""
    rendered_windows = pedalboard_prerolled(presets, dry, [windows[i] for i in use], rate, cpu_workers())
    for k, (i, rendered) in enumerate(zip(use, rendered_windows)):
        yield i, rendered, (k + 1) / len(use)


# ---------------------------------------------------------------------------------------------
# measuring


def finite(x: float | None) -> float | None:
    """``x`` as a float, or None when it is None, NaN or infinite (a JSON document's value)."""
    return None if x is None or not math.isfinite(x) else float(x)


class _Sums:
    """Sums over windows of each metric (y_hat, y) -> (batch,) of M candidates, (M,) float64,
    evaluated :data:`SCORE_BATCH` rendered items at a time (windows of one length per batch;
    a metric of (batch, channels, T) is the mean over the channels)."""

    def __init__(self, metrics: dict[str, Callable], m: int, device: Any) -> None:
        self.metrics, self.m, self.device = metrics, m, device
        self.total = {name: np.zeros(m) for name in metrics}
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []  # (rendered (M, C, T), wet (C, T))

    def add(self, rendered: np.ndarray, target: np.ndarray) -> None:
        """Queues the candidates' rendering (M, C, T) of one window and its wet (C, T); evaluates the
        queue first when the window's length differs, and after it when a batch is full."""
        if self.pending and self.pending[0][1].shape != target.shape:
            self.flush()
        self.pending.append((rendered, target))
        if len(self.pending) * self.m >= SCORE_BATCH:
            self.flush()

    def flush(self) -> None:
        """Evaluates every metric on the queued windows and adds it to :attr:`total`."""
        import torch

        if not self.pending:
            return
        from afxest.losses import against

        m, pending = self.m, self.pending
        y_hat = torch.from_numpy(np.ascontiguousarray(np.concatenate([r for r, _ in pending]))).to(self.device)
        y = torch.from_numpy(np.stack([w for _, w in pending])).to(self.device)
        values: dict[int, np.ndarray] = {}  # by metric: a loss that is also a metric is computed once
        for name, fn in self.metrics.items():
            if id(fn) not in values:
                values[id(fn)] = against(fn, y, m)(y_hat).double().cpu().numpy().reshape(len(pending), m).sum(axis=0)
            self.total[name] += values[id(fn)]
        pending.clear()


class Scorer:
    """Candidates of one task rendered on the windows of a dry (or synthesised) at ``rate``
    (default: the task's) and measured against the wet, on ``device``: the task's loss at that
    rate is :attr:`loss_fn`."""

    def __init__(self, task, device: Any, rate: int | None = None) -> None:
        from afxest.objective import task_loss

        self.task, self.device = task, device
        self.rate = task.sample_rate if rate is None else int(rate)
        self.loss_fn = task_loss(task, device, sample_rate=self.rate)
        self._metrics: dict[str, Callable] | None = None

    def match_metrics(self) -> dict[str, Callable]:
        """What each rendered candidate is measured by against the wet: the task's loss (the
        ranking), SI-SDR (dB) and the log-mel distance (DAFx 2025, Eq. 16)."""
        from afxest import losses

        if self._metrics is None:
            mel = self.loss_fn if self.task.loss == "log_mel" else losses.LogMelLoss(self.rate).to(self.device)
            self._metrics = {"loss": self.loss_fn, "si_sdr": losses.si_sdr, "log_mel": mel}
        return self._metrics

    def baseline(self, wet: np.ndarray, dry: np.ndarray, windows: Windows, use: Sequence[int],
                 metrics: dict[str, Callable]) -> dict[str, float | None]:
        """The dry's own distance to the wet: each of ``metrics`` (by name, fn(y_hat, y) ->
        (batch,)) of the dry against the wet (both (C, T)), the mean over the scored windows of
        the ``use`` ones of ``windows``; None where it is not finite."""
        import torch

        values: dict[str, list[float]] = {name: [] for name in metrics}
        for i in scored_windows(use):
            a, b = windows[i]
            pair = [torch.from_numpy(np.ascontiguousarray(x[:, a:b]))[None].to(self.device) for x in (dry, wet)]
            for name, fn in metrics.items():
                values[name].append(float(fn(*pair)[0]))
        return {name: finite(float(np.mean(v))) for name, v in values.items()}

    def measure(
        self,
        presets: Sequence,
        wet: np.ndarray,
        dry: np.ndarray | None,
        windows: Windows,
        use: Sequence[int],
        engine: str,
        metrics: dict[str, Callable],
        progress: Callable[[float], None] | None = None,
        prerolled: bool = False,
    ) -> dict[str, np.ndarray]:
        """Measures presets against the wet: the mean over the scored windows
        (:func:`scored_windows` of the usable ones) of each metric of each preset.

        Arguments:
            presets: The M candidates.
            wet: The wet, (C, T) at :attr:`rate`.
            dry: The dry, (C, T), or None for a synth task (the candidates are synthesised).
            windows: Every analysis window (:func:`windows_of`).
            use: The usable windows (:func:`usable_windows`), of which the scored ones are measured.
            engine: The renderer, ``pedalboard`` or ``ddsp``.
            metrics: Each metric by name, fn(y_hat, y) -> (batch,).
            progress: Called with the fraction of the rendering done.
            prerolled: Render each window from :data:`SCORE_PREROLL_SECONDS` before it (pedalboard),
                never streaming through the whole file.

        Returns:
            Each metric's mean by name, (M,) float64.
        """
        streamed = len(use) <= SCORE_WINDOWS and not prerolled  # stream the whole file, exact
        use = scored_windows(use)
        sums = _Sums(metrics, len(presets), self.device)
        for i, rendered, done in self._renderings(presets, dry, windows, use, engine, streamed):
            if i is not None:
                a, b = windows[i]
                sums.add(rendered, wet[:, a:b])
            if progress:
                progress(done)
        sums.flush()
        return {name: v / len(use) for name, v in sums.total.items()}

    def _renderings(self, presets: Sequence, dry: np.ndarray | None, windows: Windows, use: Sequence[int],
                    engine: str, streamed: bool) -> Rendered:
        """The candidates rendered on the ``use`` windows by the renderer of this case."""
        rate = self.rate
        if dry is None:  # synth task: every window is one clip; the candidates do not change
            return self._synthesised(presets, use)
        if engine == "pedalboard" and streamed:
            return _streamed(presets, dry, windows, use, rate)
        if engine == "pedalboard":
            return _prerolled(presets, dry, windows, use, rate)
        return self._differentiable(presets, dry, windows, use)

    def _synthesised(self, presets: Sequence, use: Sequence[int]) -> Rendered:
        synth = self._synthesise(presets)
        for k, i in enumerate(use):
            yield i, synth, (k + 1) / len(use)

    def _differentiable(self, presets: Sequence, dry: np.ndarray, windows: Windows, use: Sequence[int]) -> Rendered:
        for k, i in enumerate(use):
            a, b = windows[i]
            yield i, self._ddsp(presets, dry[:, a:b]), (k + 1) / len(use)

    def _synthesise(self, presets: Sequence) -> np.ndarray:
        """The candidates synthesised by the ddsp engine, (M, 1, clip samples)."""
        from afxest.engines import render_batch

        return render_batch(presets, None, self.task.sample_rate, "ddsp", self.task.clip_samples)

    def _ddsp(self, presets: Sequence, dry: np.ndarray) -> np.ndarray:
        """The candidates rendered on one window of the dry (C, T) by the ddsp engine from rest, (M, C, T)."""
        from afxest.engines import render_batch

        return render_batch(presets, dry, self.rate, "ddsp")
