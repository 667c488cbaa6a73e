"""Audio files: reading, resampling, channel handling and atomic, non-destructive writing.

Audio arrays are float32 numpy arrays shaped (channels, frames). Reading never clips (float
files keep values beyond +-1); resampling uses pedalboard's windowed-sinc resampler
(anti-aliased); writing goes to a temporary file in the target folder, then an atomic rename.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from afxest.errors import UserError

BIT_DEPTHS = ("float", "16", "24")
_SUBTYPES = {
    ".wav": {"float": "FLOAT", "16": "PCM_16", "24": "PCM_24"},
    ".flac": {"16": "PCM_16", "24": "PCM_24"},
}


@dataclass(frozen=True)
class WriteReport:
    """What :func:`write_audio` did: the path written and how many samples a PCM write clipped."""

    path: Path
    clipped_samples: int


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 (channels, frames) and its sample rate.

    Integer formats are scaled to [-1, 1); float formats are returned unchanged, never clipped.
    Raises UserError for a missing, unreadable, empty or non-finite file.
    """
    import soundfile

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an audio file")
    try:
        data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        detail = str(err).split(":")[-1].strip() or "format not recognised"
        raise UserError(f"{path}: not a readable audio file ({detail})") from None
    audio = np.ascontiguousarray(data.T)
    if audio.shape[1] == 0:
        raise UserError(f"{path}: contains no audio")
    if not np.isfinite(audio).all():
        raise UserError(f"{path}: contains non-finite samples (NaN or Inf)")
    return audio, int(sample_rate)


RESAMPLER_QUALITY = {"best": "WindowedSinc256", "fast": "WindowedSinc32"}


def resample(audio: np.ndarray, from_rate: float, to_rate: float, quality: str = "best") -> np.ndarray:
    """Resample (channels, frames) audio with pedalboard's windowed-sinc resampler.

    ``quality`` "best" uses 256 taps; "fast" 32 taps, 7x faster (used to cache training music,
    where its slightly wider transition band does not matter). The output has
    round(frames * to_rate / from_rate) frames, time-aligned with the input (the resampler's
    latency is removed).
    """
    if from_rate == to_rate:
        return audio
    from pedalboard import Resample
    from pedalboard.io import StreamResampler

    channels, frames = audio.shape
    from_rate, to_rate = int(from_rate), int(to_rate)
    resampler = StreamResampler(from_rate, to_rate, channels, getattr(Resample.Quality, RESAMPLER_QUALITY[quality]))
    # The resampler removes round(L * to / from) output samples of its latency L (in input
    # samples) and leaves the fractional part as a sub-sample delay. Prepending k zeros so that
    # (L + k) * to / from is an integer turns the whole delay into whole samples we can drop.
    latency = int(resampler.input_latency)
    q = from_rate // math.gcd(from_rate, to_rate)
    k = -latency % q
    drop = (latency + k) * to_rate // from_rate - math.floor(latency * to_rate / from_rate + 0.5)
    padded = np.concatenate(
        [np.zeros((channels, k), np.float32), audio, np.zeros((channels, latency + 1), np.float32)],
        axis=1,
    )
    out = np.concatenate([resampler.process(np.ascontiguousarray(padded)), resampler.process()], axis=1)
    n_out = int(round(frames * to_rate / from_rate))
    return np.ascontiguousarray(out[:, drop : drop + n_out])


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Mix (channels, frames) down to (1, frames) by averaging channels (the mid signal)."""
    return audio.mean(axis=0, keepdims=True)


def check_output_path(
    path: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str]] = (),
    force: bool = False,
    suffixes: Iterable[str] | None = None,
) -> Path:
    """Refuse an output path that would overwrite an input, or an existing file without force.

    Call before any work so nothing is computed for an output that cannot be written.
    """
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise UserError(f"{path}: output must end in one of {', '.join(sorted(suffixes))}")
    if not path.parent.is_dir():
        raise UserError(f"{path}: output folder {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{path}: output folder {path.parent} is not writable")
    for source in inputs:
        source = Path(source)
        if source.exists() and path.exists() and os.path.samefile(source, path):
            raise UserError(f"{path}: output would overwrite the input {source}")
        if path.resolve() == source.resolve():
            raise UserError(f"{path}: output would overwrite the input {source}")
    if path.exists() and not force:
        raise UserError(f"{path}: already exists (use --force to replace it)")
    return path


def write_audio(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    bit_depth: str = "float",
) -> WriteReport:
    """Write (channels, frames) audio atomically as WAV or FLAC.

    ``bit_depth`` is "float" (32-bit float WAV), "16" or "24" (PCM). A PCM write clips samples
    beyond [-1, 1]: their count is returned so the caller can warn. Callers check the path
    first with :func:`check_output_path`.
    """
    import soundfile

    path = Path(path)
    suffix = path.suffix.lower()
    subtypes = _SUBTYPES.get(suffix)
    if subtypes is None:
        raise UserError(f"{path}: can only write {', '.join(_SUBTYPES)} files")
    if bit_depth not in subtypes:
        raise UserError(
            f"{path}: bit depth {bit_depth!r} is not available for {suffix} "
            f"(choose {', '.join(subtypes)})"
        )
    if not np.isfinite(audio).all():
        raise RuntimeError("refusing to write non-finite audio")
    clipped = 0 if bit_depth == "float" else int(np.count_nonzero(np.abs(audio) > 1.0))
    fd, tmp = temporary_in(path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:  # a file object: libsndfile never sees the (long) path
            soundfile.write(
                fh,
                np.clip(audio, -1.0, 1.0).T if clipped else audio.T,
                int(sample_rate),
                subtype=subtypes[bit_depth],
                format=suffix[1:].upper(),
            )
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return WriteReport(path=path, clipped_samples=clipped)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    fd, tmp = temporary_in(path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temporary_in(folder: Path) -> tuple[int, str]:
    """Create a short-named temporary file in ``folder`` (same file system: atomic rename)."""
    try:
        return tempfile.mkstemp(prefix=".afxest-", suffix=".part", dir=folder)
    except OSError as err:
        raise UserError(f"{folder}: cannot write here ({err.strerror})") from None


def publish(tmp: str, path: Path) -> None:
    """Give a finished temporary file the usual permissions and rename it onto ``path``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
