"""Training data: music folders (split by file, decoded once to a cache), a procedural
music-like generator, and batches of (dry, wet, truth parameters) for each task.

Ground-truth wet audio for effect tasks is rendered by pedalboard (the real effect, which the
estimator never sees inside); synth targets by the FM synth. Parameters are drawn uniformly in
normalised space (DAFx 2025, Sec. 4.2 and 5.2).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from afxest.audio import AUDIO_SUFFIXES, atomic_output, read_audio, resample, to_mono
from afxest.errors import UserError

Split = Literal["train", "val", "test"]
SPLIT_FRACTIONS = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}
SILENCE_RMS = 10 ** (-50 / 20)  # excerpts quieter than -50 dBFS RMS are skipped


def cache_dir() -> Path:
    """Where decoded audio is cached: $AFXEST_CACHE_DIR or the platform's user cache folder."""
    env = os.environ.get("AFXEST_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("afxest"))


def _position(relative_path: str) -> float:
    """A file's place in [0, 1) by a hash of its relative path."""
    return int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big") / 2**64


def split_of(relative_path: str) -> Split:
    """The deterministic train/val/test assignment of a file by a hash of its relative path (80/10/10)."""
    u = _position(relative_path)
    for name, (lo, hi) in SPLIT_FRACTIONS.items():
        if lo <= u < hi:
            return name  # type: ignore[return-value]
    return "test"


def folder_splits(relative_paths: list[str]) -> dict[str, Split]:
    """The split of each file of a folder: :func:`split_of`, except that a folder of two or more
    files whose hash split leaves no train or no validation file lends one: the validation file
    is the train file (or, without two of those, the test file) nearest the validation range,
    and a missing train file is the test file nearest the train range. A folder whose hash split
    has both (any folder of a few dozen files or more, in practice) keeps it unchanged."""
    splits = {p: split_of(p) for p in relative_paths}
    if len(splits) < 2:
        return splits

    def members(name: str) -> list[str]:
        return sorted((p for p, s in splits.items() if s == name), key=_position)

    if not members("val"):
        train = members("train")
        donor = train[-1] if len(train) >= 2 else members("test")[0] if members("test") else train[-1]
        splits[donor] = "val"
    if not members("train"):
        spare = members("test") or members("val")
        splits[spare[0]] = "train"
    return splits


@dataclass(frozen=True)
class Track:
    """One decoded, resampled, mono track in the cache (a float32 .npy file)."""

    source: Path
    cache: Path
    frames: int


class MusicFolder:
    """The tracks of one split of a folder of music, in any format, rate and length.

    Files are assigned to splits by :func:`folder_splits`, so a track is never in two splits.
    :meth:`prepare` decodes, mixes to mono and resamples each file once into the cache; later
    runs (and epochs) read the cache through memory maps.

    Arguments:
        root: The folder, searched recursively for files with one of ``AUDIO_SUFFIXES``.
        sample_rate: The rate the tracks are resampled to.
        split: The split to hold (``train``, ``val`` or ``test``).
        min_seconds: The shortest track kept by :meth:`prepare`.
    """

    def __init__(self, root: Path, sample_rate: int, split: Split, min_seconds: float = 0.0) -> None:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"{root}: no such folder (--data expects a folder of music files)")
        self.root = root
        self.sample_rate = sample_rate
        self.split = split
        self.min_frames = int(min_seconds * sample_rate)
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise UserError(f"{root}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
        splits = folder_splits([p.relative_to(root).as_posix() for p in files])
        self.files = [p for p in files if splits[p.relative_to(root).as_posix()] == split]
        self.counts = {name: sum(1 for s in splits.values() if s == name) for name in SPLIT_FRACTIONS}
        self.tracks: list[Track] = []

    def prepare(self, progress: Callable[[int, int], None] | None = None) -> "MusicFolder":
        """Decodes every file of the split into the cache (once); returns self."""
        folder = cache_dir() / "audio"
        folder.mkdir(parents=True, exist_ok=True)
        tracks = []
        for i, path in enumerate(self.files):
            stat = path.stat()
            key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.sample_rate}"
            cache = folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".npy")
            if not cache.exists():
                try:
                    audio, rate = read_audio(path)
                except UserError:
                    continue  # unreadable files are skipped, not fatal
                mono = resample(to_mono(audio), rate, self.sample_rate, quality="fast")[0]
                with atomic_output(cache) as fh:
                    np.save(fh, mono.astype(np.float32))
            frames = int(np.load(cache, mmap_mode="r").shape[0])
            if frames >= max(self.min_frames, 1):
                tracks.append(Track(path, cache, frames))
            if progress:
                progress(i + 1, len(self.files))
        self.tracks = tracks
        return self

    @property
    def seconds(self) -> float:
        """The length of the prepared tracks together, in seconds."""
        return sum(t.frames for t in self.tracks) / self.sample_rate

    def shard(self, rank: int, world: int) -> "MusicFolder":
        """Keeps every ``world``-th track from ``rank`` (each data-parallel rank reads its own);
    returns self."""
        if world > 1 and len(self.tracks) >= world:
            self.tracks = self.tracks[rank::world]
        return self

    def excerpt(self, rng: np.random.Generator, frames: int, tries: int = 50) -> np.ndarray:
        """A random non-silent excerpt of ``frames`` samples (tracks weighted by length)."""
        usable = [t for t in self.tracks if t.frames >= frames]
        if not usable:
            raise UserError(f"{self.root}: no {self.split} track is {frames / self.sample_rate:.1f} s long")
        weights = np.array([t.frames - frames + 1 for t in usable], dtype=np.float64)
        weights /= weights.sum()
        x = None
        for _ in range(tries):
            track = usable[rng.choice(len(usable), p=weights)]
            start = int(rng.integers(0, track.frames - frames + 1))
            x = np.array(np.load(track.cache, mmap_mode="r")[start : start + frames], dtype=np.float32)
            if np.sqrt(np.mean(x.astype(np.float64) ** 2)) >= SILENCE_RMS:
                return x
        assert x is not None
        return x


def procedural_music(rng: np.random.Generator, frames: int, sample_rate: int) -> np.ndarray:
    """A music-like mono signal: harmonic notes with envelopes, kick, snare, hats and noise.

    Broadband and dynamic like real music, so effect tasks are learnable on it; used by tests
    and as the fallback when no music folder is given.
    """
    t = np.arange(frames) / sample_rate
    y = np.zeros(frames)
    beat = 60.0 / rng.uniform(80, 160)
    # notes: harmonic tones with exponential decays
    onset = 0.0
    while onset < t[-1]:
        length = beat * rng.choice([0.5, 1.0, 2.0])
        f0 = 440.0 * 2 ** ((rng.integers(36, 84) - 69) / 12)
        i0, i1 = int(onset * sample_rate), min(frames, int((onset + length * 1.5) * sample_rate))
        tt = t[i0:i1] - onset
        env = (1 - np.exp(-tt / rng.uniform(0.002, 0.03))) * np.exp(-tt / rng.uniform(0.1, 1.0))
        tilt = rng.uniform(0.5, 2.0)
        for k in range(1, int(min(16, (sample_rate / 2) // f0)) + 1):
            y[i0:i1] += env * np.sin(2 * np.pi * k * f0 * tt + rng.uniform(0, 2 * np.pi)) / k**tilt
        onset += length
    # drums on the beat grid
    for b in np.arange(0.0, t[-1], beat / 2):
        i0 = int(b * sample_rate)
        n = min(frames - i0, int(0.3 * sample_rate))
        tt = np.arange(n) / sample_rate
        if rng.random() < 0.5:  # kick: falling sine
            y[i0 : i0 + n] += 1.5 * np.sin(2 * np.pi * (50 * tt + 60 * (1 - np.exp(-tt * 30)) / 30)) * np.exp(-tt * 12)
        if rng.random() < 0.3:  # snare: noise burst
            y[i0 : i0 + n] += 0.5 * rng.standard_normal(n) * np.exp(-tt * 25)
        hat = np.diff(rng.standard_normal(n + 1))  # hats: differentiated (bright) noise
        y[i0 : i0 + n] += 0.15 * hat * np.exp(-tt * 120)
    y += 0.01 * rng.standard_normal(frames)
    rms = np.sqrt(np.mean(y**2)) + 1e-12
    return (y * 10 ** (rng.uniform(-26, -14) / 20) / rms).astype(np.float32)


class DrySource:
    """Dry excerpts: from a music folder, or procedural when none is given."""

    def __init__(self, folder: MusicFolder | None, sample_rate: int) -> None:
        self.folder = folder
        self.sample_rate = sample_rate

    def excerpt(self, rng: np.random.Generator, frames: int) -> np.ndarray:
        """A random excerpt of ``frames`` samples, float32 (frames,) (see :meth:`MusicFolder.excerpt`)."""
        if self.folder is None:
            return procedural_music(rng, frames, self.sample_rate)
        return self.folder.excerpt(rng, frames)


@dataclass
class Batch:
    """A batch of ground truth: dry (None for synth tasks), wet, and normalised truth ``v``."""

    dry: np.ndarray | None  # (batch, 1, frames)
    wet: np.ndarray  # (batch, 1, frames)
    v: np.ndarray  # (batch, truth dim)


def make_batch(task, source: DrySource | None, rng: np.random.Generator, size: int, frames: int | None = None) -> Batch:
    """Draws ``size`` items of ``task``: parameters uniform in [0, 1]^d, wet from pedalboard
    (effect tasks) or from the synth (source tasks), ``frames`` samples long (default: the
    task's clip)."""
    from afxest.engines import render

    v = rng.random((size, task.truth.dim)).astype(np.float32)  # v describes the wet exactly
    frames = task.clip_samples if frames is None else frames
    wet = np.empty((size, 1, frames), np.float32)
    dry = None
    if task.has_source:  # a synth (and no effects): synthesise the whole batch at once
        import torch

        from afxest.engines import synthesise_batch

        ((kind, params),) = task.truth.split(torch.from_numpy(v).double())
        wet = synthesise_batch(kind, params, frames, task.sample_rate).numpy()
    else:
        assert source is not None
        dry = np.stack([source.excerpt(rng, frames)[None] for _ in range(size)])
        for i in range(size):
            preset = task.truth.preset(v[i].astype(np.float64), task.name, task.sample_rate)
            wet[i] = render(preset, dry[i], task.sample_rate, "pedalboard")
    return Batch(dry=dry, wet=wet, v=v)
