"""The run skeleton shared by ``afxest train`` (:mod:`afxest.train`) and ``afxest train-proxy``
(:mod:`afxest.train_proxy`): the run folder, its files, resuming, the data and the loop.

* The folder (:class:`RunFolder`): a new run needs a new or empty folder, ``--resume`` its
  ``last.pt``. It holds ``config.json`` (the resolved configuration, written once),
  ``metrics.jsonl`` (one line per step; on resume, cut back to the checkpoint's step),
  ``last.pt`` (every N steps and at the end) and ``best.pt`` (the best validation figure).
* Resuming (:func:`check_same_run`, :func:`restore`): a setting that would change the run is
  refused; the weights, optimiser, step and best figure come back from ``last.pt``.
* Randomness (:func:`step_generator`): every draw of step s comes from a generator seeded by
  the run's seed (and rank) and s, so a resumed run continues exactly as it would have.
* Prefetching (:class:`Prefetcher`): step s + 1's batch is drawn on a worker thread while step s
  trains; being a function of s alone, it is the batch a synchronous draw gives.
* The loop (:func:`run_loop`): a step, validation every N steps (keeping ``best.pt``), a line
  of metrics, a checkpoint every N steps.

The options both commands take (:class:`RunOptions`) are written here too. It imports
neither command; both import it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Generic, Iterable, Protocol, TypeVar

import numpy as np

from afxest.audio import atomic_write_text
from afxest.checkpoints import save_checkpoint
from afxest.errors import UserError

PROCEDURAL = "data: no --data given, so training on PROCEDURAL music-like audio (not real music)"
NEW_RUN_FILES = ("config.json", "metrics.jsonl")  # all a run that never checkpointed leaves


def enlarge_malloc_thresholds() -> None:
    """Sets glibc mallopt(M_MMAP_THRESHOLD, M_TRIM_THRESHOLD = 1 GiB): large audio buffers are then
    reused instead of mapped and unmapped every step (measured: 191-211 ms/step instead of
    218-317 ms for the eq task on 2 cores). No effect elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


@dataclass(kw_only=True)
class RunOptions:
    """The options both training commands take (``afxest train``: :class:`afxest.train.TrainConfig`,
    ``afxest train-proxy``: :class:`afxest.train_proxy.ProxyTrainConfig`, which add their own).

    Keyword-only, so that a command's own fields, with or without defaults, may follow; each
    command gives ``val_items`` and ``val_every`` its own default.

    Attributes:
        out: The run folder (``--out``, :class:`RunFolder`).
        data: A folder of music (its train/val splits), or None for procedural audio.
        device: ``auto``, ``cpu`` or ``cuda`` (:func:`afxest.device.resolve_device`).
        seed: The run's seed (:func:`step_generator`; the validation set's).
        val_items: The validation items (fixed for a seed).
        val_every: Validate every N steps (:class:`Cadence`).
        checkpoint_every: Write ``last.pt`` every N steps.
        resume: Continue the run in ``out`` from its ``last.pt``.

    Example:
        >>> RunOptions(out="run", val_items=8, val_every=10).to_dict()  # doctest: +NORMALIZE_WHITESPACE
        {'out': 'run', 'data': None, 'device': 'auto', 'seed': 0, 'val_items': 8, 'val_every': 10,
         'checkpoint_every': 50, 'resume': False}
    """

    out: str
    data: str | None = None
    device: str = "auto"
    seed: int = 0
    val_items: int
    val_every: int
    checkpoint_every: int = 50
    resume: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (the start of a run's ``config.json``)."""
        return asdict(self)


def check_run_folder(out: Path, resume: bool) -> tuple[Path, Path]:
    """Checks a run folder for a new run or a resumed one; returns (last.pt, best.pt) paths.

    A new run needs a new or empty folder (one holding only config.json / metrics.jsonl is a
    run that never checkpointed and may start again); ``resume`` needs its last.pt."""
    from afxest.audio import check_out_dir

    last_path, best_path = out / "last.pt", out / "best.pt"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; --out needs a folder")
    check_out_dir(out)  # only checks (a missing folder is fine); RunFolder.prepare creates it
    if resume:
        if not last_path.exists():
            raise UserError(f"{out}: nothing to resume (no last.pt)")
    elif last_path.exists() or (out.exists() and {p.name for p in out.iterdir()} - set(NEW_RUN_FILES)):
        raise UserError(f"{out}: already holds a run; use --resume to continue it or another --out")
    return last_path, best_path


def step_of(line: str) -> float:
    """The step of a metrics.jsonl line; a torn last line (killed mid-write) counts as after all."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


class RunFolder:
    """A run's folder and files; checked when made (:func:`check_run_folder`).

    Arguments:
        out: The folder (``--out``).
        resume: Whether the run continues from ``last.pt`` (``--resume``).
        writer: Whether this process writes the files (rank 0 of a data-parallel run; the
            others only read ``last.pt``).
    """

    def __init__(self, out: Path, resume: bool, writer: bool = True) -> None:
        self.out, self.resume, self.writer = out, resume, writer
        self.last, self.best = check_run_folder(out, resume)
        self.metrics = out / "metrics.jsonl"

    def prepare(self) -> None:
        """Creates the folder; a new run first drops what one that never checkpointed left."""
        if not self.writer:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.resume:
            for stale in NEW_RUN_FILES:
                (self.out / stale).unlink(missing_ok=True)

    def write_config(self, resolved: dict[str, Any]) -> None:
        """Writes ``config.json``: the resolved configuration of a new run (a resumed run keeps its own)."""
        if self.writer and not self.resume:
            atomic_write_text(self.out / "config.json", json.dumps(resolved, indent=2) + "\n")

    def cut_metrics(self, step: int) -> None:
        """On resume, drops the metrics lines after ``step`` (the checkpoint's): the resumed run
        writes them again."""
        if self.writer and self.resume and self.metrics.exists():
            kept = [line for line in self.metrics.read_text().splitlines() if step_of(line) <= step]
            atomic_write_text(self.metrics, "".join(line + "\n" for line in kept))

    def record(self, entry: dict[str, Any]) -> None:
        """Appends one line to ``metrics.jsonl``."""
        if self.writer:
            with open(self.metrics, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")

    def save(self, path: Path, payload: Callable[[], dict[str, Any]]) -> None:
        """Writes a checkpoint (``self.last`` or ``self.best``) atomically; ``payload`` is only
        built by the writer."""
        if self.writer:
            save_checkpoint(path, payload())


def check_same_run(path: Path, stored: dict[str, Any], resolved: dict[str, Any], keys: Iterable[str]) -> None:
    """Refuses (UserError) to resume a run with a configuration that differs on one of ``keys``:
    it would not continue the same run.

    Arguments:
        path: The run's checkpoint, named in the message.
        stored: The run's resolved configuration, as the checkpoint stores it.
        resolved: The resolved configuration of this invocation.
        keys: The settings that must not change.
    """
    for key in keys:
        if stored.get(key) != resolved[key]:
            raise UserError(
                f"{path}: --resume with a different {key} ({resolved[key]!r}, the run has "
                f"{stored.get(key)!r}) would not continue the same run"
            )


@dataclass
class Best:
    """The best (lowest) validation figure so far and its step; none before a validation."""

    step: int | None = None
    value: float = math.inf

    def stored(self, key: str) -> dict[str, Any]:
        """The best figure as a checkpoint's ``best``: {"step": s, key: value} (None for none yet).

        Example:
            >>> Best().stored("loss"), Best(3, 0.5).stored("objective")
            ({'step': None, 'loss': None}, {'step': 3, 'objective': 0.5})
        """
        return {"step": self.step, key: None if math.isinf(self.value) else self.value}

    @classmethod
    def from_stored(cls, best: dict[str, Any], key: str) -> Best:
        """The inverse of :meth:`stored`."""
        return cls(best["step"], math.inf if best[key] is None else best[key])


def restore(state: dict[str, Any], model: Any, optimizer: Any, key: str) -> tuple[int, Best]:
    """Loads a checkpoint's weights and optimiser state into ``model`` and ``optimizer``.

    Arguments:
        state: The checkpoint (``last.pt``).
        model: The module its ``model`` weights load into.
        optimizer: The optimiser its ``optimizer`` state loads into.
        key: The name of its best figure in ``best`` (:meth:`Best.stored`).

    Returns:
        The checkpoint's step and best figure.
    """
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), Best.from_stored(state["best"], key)


def music_folders(data: str, sample_rate: int, min_seconds: float, empty: Callable[[str, Any], str]) -> dict[str, Any]:
    """The ``train`` and ``val`` splits of a folder of music, decoded into the cache in that order.

    Arguments:
        data: The folder (``--data``).
        sample_rate: The rate the tracks are decoded at.
        min_seconds: The shortest track kept.
        empty: The message of the UserError for a split left without a track, from the split's
            name and its :class:`~afxest.data.MusicFolder`.

    Returns:
        The :class:`~afxest.data.MusicFolder` of each split, by name.
    """
    from afxest.data import MusicFolder

    folders = {}
    for split in ("train", "val"):
        folder = MusicFolder(Path(data), sample_rate, split, min_seconds=min_seconds).prepare()
        if not folder.tracks:
            raise UserError(empty(split, folder))
        folders[split] = folder
    return folders


def step_generator(*key: int, seed_torch: bool = True) -> np.random.Generator:
    """The generator of one step's draws, seeded by ``key`` (the run's seed, its rank where it
    has ranks, and the step); torch's global generator (a posterior's noise) is seeded by its
    first draw. A step's randomness thus depends on ``key`` alone. With ``seed_torch`` False (a
    batch drawn ahead on another thread, :class:`Prefetcher`, must not reseed the step that is
    training) the first draw is skipped all the same, so the generator continues alike."""
    import torch

    rng = np.random.default_rng(list(key))
    first = int(rng.integers(2**62))
    if seed_torch:
        torch.manual_seed(first)
    return rng


T = TypeVar("T")


class Prefetcher(Generic[T]):
    """Draws step s + 1's batch on one worker thread while step s trains: what a step waits for
    is then the longer of the two rather than their sum (pedalboard, numpy and torch's kernels
    release the GIL). ``draw(step)`` must depend on ``step`` alone (:func:`step_generator` with
    ``seed_torch=False``), so the batches are those a synchronous draw gives, in any order.

    Arguments:
        draw: The batch of a step (0-based).
        total: The run's last step + 1 (nothing is drawn ahead beyond it).
    """

    def __init__(self, draw: Callable[[int], T], total: int) -> None:
        self.draw, self.total = draw, total
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="afxest-batches")
        self._ahead: tuple[int, Future[T]] | None = None

    def get(self, step: int) -> T:
        """The batch of ``step`` (drawn ahead if it was the step after the last one asked for),
        and starts drawing the next; an error while drawing is raised here."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == step:
            batch = ahead[1].result()
        else:
            if ahead is not None:
                ahead[1].cancel()
            batch = self.draw(step)
        if step + 1 < self.total:
            self._ahead = (step + 1, self._pool.submit(self.draw, step + 1))
        return batch

    def wait(self) -> None:
        """Blocks until the batch being drawn ahead is ready (benchmarks/train_speed.py counts
        that wait in a step's time)."""
        if self._ahead is not None:
            self._ahead[1].result()

    def close(self) -> None:
        """Stops drawing ahead (a draw under way finishes on its thread; nothing waits for it)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._ahead = None


class Trainer(Protocol):
    """What :func:`run_loop` drives."""

    def step(self, step: int) -> tuple[float, dict[str, float]]:
        """Optimiser step ``step`` (0-based): the loss and its terms (batch means)."""

    def validate(self) -> dict[str, float]:
        """The validation figures (``val_...``)."""

    def payload(self, step: int, metrics: dict[str, float], best: Best) -> dict[str, Any]:
        """The checkpoint after ``step`` steps."""


@dataclass(frozen=True)
class Cadence:
    """The loop's length and rhythm: ``total`` steps, a validation every ``val_every`` steps
    and a ``last.pt`` every ``checkpoint_every``, both at the last step too."""

    total: int
    val_every: int
    checkpoint_every: int

    def due(self, step: int, every: int) -> bool:
        """Whether something done every ``every`` steps is done after step ``step`` (1-based).

        Example:
            >>> [s for s in range(1, 8) if Cadence(7, 3, 1).due(s, 3)]
            [3, 6, 7]
        """
        return step % every == 0 or step == self.total


def run_loop(
    trainer: Trainer,
    folder: RunFolder,
    cadence: Cadence,
    start: int,
    best: Best,
    select: str,
    constants: dict[str, float],
    report: Callable[[int, float, dict[str, float], bool], None],
    after_step: Callable[[int], None] | None = None,
) -> tuple[int, dict[str, float]]:
    """Trains from step ``start`` to ``cadence.total``.

    After each step: a ``metrics.jsonl`` line (step, loss, seconds since the loop started,
    the loss's terms, and where validated the validation figures and ``constants``); a
    validation every ``cadence.val_every`` steps, with ``best.pt`` written (and ``best``
    updated) when its ``select`` figure is the lowest yet; ``last.pt`` every
    ``cadence.checkpoint_every`` steps; then ``report`` and ``after_step``.

    Arguments:
        trainer: The steps, validation and checkpoints of one kind of run.
        folder: The run folder.
        cadence: The run's length and rhythm.
        start: The steps already done (0, or the resumed checkpoint's step).
        best: The best validation figure so far; updated in place.
        select: The validation figure that chooses ``best.pt`` (the lowest).
        constants: Figures added to every validated line (e.g. a baseline's).
        report: Called with (step, loss, last validation figures, whether just validated).
        after_step: Called with each step once it is recorded and checkpointed (tests: a
            process killed there has its last checkpoint on disk).

    Returns:
        The last step and the last validation figures (empty without one).
    """
    last: dict[str, float] = {}
    t_start = time.perf_counter()
    step = start
    while step < cadence.total:
        loss, terms = trainer.step(step)
        step += 1
        entry: dict[str, Any] = {"step": step, "loss": loss, "time_s": round(time.perf_counter() - t_start, 3), **terms}
        validated = cadence.due(step, cadence.val_every)
        if validated:
            last = trainer.validate()
            entry.update(last, **constants)
            if last[select] < best.value:
                best.step, best.value = step, last[select]
                folder.save(folder.best, lambda: trainer.payload(step, last, best))
        folder.record(entry)
        if cadence.due(step, cadence.checkpoint_every):
            folder.save(folder.last, lambda: trainer.payload(step, last, best))
        report(step, loss, last, validated)
        if after_step is not None:
            after_step(step)
    return step, last
