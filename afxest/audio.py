"""Audio files: reading, resampling, channel handling and atomic, non-destructive writing.

Audio arrays are float32 numpy arrays shaped (channels, frames). Reading never clips (float
files keep values beyond +-1): a whole file (:func:`read_audio`), or mixed to mono and resampled
block by block (:func:`read_mono`, what ``afxest estimate`` analyses); resampling uses
pedalboard's windowed-sinc resampler (anti-aliased); writing goes to a temporary file in the
target folder, then an atomic rename (:func:`atomic_output`, through which every file afxest
writes goes).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from afxest.errors import UserError, shortened

_SUBTYPES = {
    ".wav": {"float": "FLOAT", "16": "PCM_16", "24": "PCM_24"},
    ".flac": {"16": "PCM_16", "24": "PCM_24"},
}


@dataclass(frozen=True)
class WriteReport:
    """What :func:`write_audio` did: the path written and how many samples a PCM write clipped."""

    path: Path
    clipped_samples: int


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"}  # what afxest reads from a folder
MIN_FILE_RATE = 4000  # Hz: a lower rate is refused (a hostile header would make resampling explode)
# frames per soundfile read: a multiple of pedalboard's internal buffer (8192), so that streamed
# rendering splits the signal where a one-shot call does (JUCE's filters flush denormal state at
# buffer ends: other splits differ from one-shot output by ~1e-26 in decaying tails)
READ_BLOCK = 8 * 8192


def open_audio(path: str | os.PathLike[str]):
    """Opens an audio file for reading (a ``soundfile.SoundFile``) after checking what its header
    promises against the file itself, before anything is allocated: a sample rate of at least
    :data:`MIN_FILE_RATE`, and (WAV) a data chunk that the file really holds. Raises
    :class:`~afxest.errors.UserError` for a missing, unreadable, truncated or implausible file."""
    import soundfile

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an audio file")
    try:
        f = soundfile.SoundFile(str(path))
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
        raise _unreadable(path, err, "format not recognised") from None
    try:
        if f.samplerate < MIN_FILE_RATE:
            raise UserError(f"{path}: sample rate {f.samplerate} Hz is below the {MIN_FILE_RATE} Hz afxest reads")
        truncated = _wav_truncation(path)
        if truncated:
            raise UserError(f"{path}: is truncated: {truncated}")
    except BaseException:
        f.close()
        raise
    return f


def read_blocks(f, frames: int, path: Path) -> Iterator[np.ndarray]:
    """The rest of a file that :func:`open_audio` opened, in blocks of ``frames`` frames (the
    last one shorter), each float32 (frames, channels); a decoding failure raises a one-line
    UserError naming ``path``."""
    import soundfile

    while True:
        try:
            block = f.read(frames, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
            raise _unreadable(path, err) from None
        if block.shape[0] == 0:
            return
        yield block


def _unreadable(path: Path, err: BaseException, fallback: str = "") -> UserError:
    """The one-line error of a file soundfile cannot open or decode: the last part of its message."""
    detail = str(err).split(":")[-1].strip() or fallback
    return UserError(f"{path}: not a readable audio file ({shortened(detail)})")


def _wav_truncation(path: Path) -> str | None:
    """For a RIFF WAVE file whose data chunk claims more bytes than the file holds, what the
    header announces and what is there (in seconds); None otherwise (other formats too)."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = rate = 0
        for _ in range(1000):  # a bounded walk over the chunks
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            kind, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if kind == b"fmt ":
                fmt = fh.read(min(length, 16))
                if len(fmt) >= 14:
                    rate, block_align = struct.unpack("<I", fmt[4:8])[0], struct.unpack("<H", fmt[12:14])[0]
                fh.seek(length - len(fmt) + (length & 1), 1)
            elif kind == b"data":
                held = size - fh.tell()
                if length in (0, 0xFFFFFFFF) or held >= length or not (rate and block_align):
                    return None  # 0 and 0xFFFFFFFF: a length left open by a streaming writer
                per_second = rate * block_align
                return f"its header announces {length / per_second:.3f} s of audio, the file holds {held / per_second:.3f} s"
            else:
                fh.seek(length + (length & 1), 1)
    return None


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Reads an audio file as float32 (channels, frames) and its sample rate.

    Integer formats are scaled to [-1, 1); float formats are returned unchanged, never clipped.
    The file is read block by block, so memory follows the audio really decoded, whatever the
    header claims. Raises :class:`~afxest.errors.UserError` for a missing, unreadable, empty,
    truncated or non-finite file.
    """
    path = Path(path)
    with open_audio(path) as f:
        sample_rate = int(f.samplerate)
        blocks = [block.T for block in read_blocks(f, READ_BLOCK, path)]
    _refuse_empty(path, len(blocks))
    audio = np.ascontiguousarray(np.concatenate(blocks, axis=1))
    _refuse_non_finite(path, audio)
    return audio, sample_rate


def _refuse_empty(path: Path, frames: int) -> None:
    """Refuses a file that decoded to no frames (``frames`` 0) with a one-line UserError."""
    if frames == 0:
        raise UserError(f"{path}: contains no audio")


def _refuse_non_finite(path: Path, samples: np.ndarray) -> None:
    """Refuses a file whose decoded ``samples`` hold a NaN or an Inf with a one-line UserError."""
    if not np.isfinite(samples).all():
        raise UserError(f"{path}: contains non-finite samples (NaN or Inf)")


@dataclass
class Signal:
    """A file read as mono float32 at ``rate`` (:func:`read_mono`), or as it is, and what it was on
    disk."""

    path: Path
    samples: np.ndarray  # (frames,) at ``rate`` (mono), or (channels, frames) as read
    rate: int
    file_rate: int
    channels: int
    file_frames: int

    @property
    def seconds(self) -> float:
        """The file's length in seconds."""
        return self.file_frames / self.file_rate


def read_mono(path: str | os.PathLike[str], rate: int, quality: str) -> Signal:
    """Reads an audio file block by block, mixed to mono and resampled to ``rate`` as it goes.

    Peak memory is the output (4 bytes per frame at ``rate``) plus one block, whatever the
    file's length, rate or channel count.

    Arguments:
        path: The audio file (any format soundfile reads).
        rate: The sample rate of the result.
        quality: The resampler's, a key of :data:`RESAMPLER_QUALITY` (as for :func:`resample`).

    Returns:
        The :class:`Signal`, whose samples equal
        ``resample(to_mono(read_audio(path)[0]), file_rate, rate, quality)[0]`` (the mix to 1 ulp:
        a dot product here, a mean there). Raises :class:`~afxest.errors.UserError` as
        :func:`read_audio` does.
    """
    path = Path(path)
    with open_audio(path) as f:
        file_rate, channels = int(f.samplerate), int(f.channels)
        resampler = None if file_rate == rate else _StreamResampler(file_rate, rate, quality)
        # the header's frame count sizes the buffer, but never beyond what the file's bytes can
        # hold at one byte per frame (a hostile header cannot make it allocate more)
        hint = max(READ_BLOCK, min(int(f.frames or 0), path.stat().st_size))
        out = _Buffer(hint if resampler is None else resampled_frames(hint, file_rate, rate) + 1)
        total = 0
        for block in read_blocks(f, READ_BLOCK, path):
            total += block.shape[0]
            # the mean of the channels as a matrix-vector product (BLAS; a strided numpy mean is
            # several times slower); a NaN or Inf in any channel makes the mix non-finite
            mono = block[:, 0] if channels == 1 else block @ np.full(channels, 1 / channels, np.float32)
            _refuse_non_finite(path, mono)
            out.append(mono if resampler is None else resampler.process(mono))
        _refuse_empty(path, total)
        frames = total
        if resampler is not None:
            out.append(resampler.finish())
            frames = resampled_frames(total, file_rate, rate)
    return Signal(path, out.result(frames), rate, file_rate, channels, total)


class _Buffer:
    """A growable float32 array (preallocated from the file's frame count)."""

    def __init__(self, size: int) -> None:
        self.data = np.empty(max(size, 1), np.float32)
        self.n = 0

    def append(self, x: np.ndarray) -> None:
        """Appends ``x`` (1-D), growing the array (at least twice its size) when it is full."""
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


RESAMPLER_QUALITY = {"best": "WindowedSinc256", "fast": "WindowedSinc32"}


def resampled_frames(frames: int, from_rate: float, to_rate: float) -> int:
    """The length of ``frames`` input frames resampled from ``from_rate`` to ``to_rate``:
    round(frames * to_rate / from_rate).

    Example:
        >>> resampled_frames(44100, 44100, 22050), resampled_frames(3, 44100, 22050)
        (22050, 2)
    """
    return int(round(frames * to_rate / from_rate))


def _stream_resampler(from_rate: int, to_rate: int, channels: int, quality: str) -> tuple[Any, int, int, int]:
    """pedalboard's windowed-sinc ``StreamResampler`` (``quality``: a key of
    :data:`RESAMPLER_QUALITY`) and how to remove its latency exactly.

    The resampler removes round(L * to / from) output samples of its latency L (in input
    samples) and leaves the fractional part as a sub-sample delay. Prepending k zeros so that
    (L + k) * to / from is an integer turns the whole delay into whole samples we can drop.

    Returns:
        The resampler, L, k (the zeros to feed first) and the output samples to drop after them;
        L + 1 zeros fed last flush the latency.
    """
    from pedalboard import Resample
    from pedalboard.io import StreamResampler

    resampler = StreamResampler(from_rate, to_rate, channels, getattr(Resample.Quality, RESAMPLER_QUALITY[quality]))
    latency = int(resampler.input_latency)
    q = from_rate // math.gcd(from_rate, to_rate)
    k = -latency % q
    drop = (latency + k) * to_rate // from_rate - math.floor(latency * to_rate / from_rate + 0.5)
    return resampler, latency, k, drop


def resample(audio: np.ndarray, from_rate: float, to_rate: float, quality: str = "best") -> np.ndarray:
    """Resamples (channels, frames) audio with pedalboard's windowed-sinc resampler.

    ``quality`` "best" uses 256 taps; "fast" 32 taps, 7x faster (used to cache training music,
    where its slightly wider transition band does not matter). The output has
    round(frames * to_rate / from_rate) frames, time-aligned with the input (the resampler's
    latency is removed: :func:`_stream_resampler`).
    """
    if from_rate == to_rate:
        return audio
    channels, frames = audio.shape
    from_rate, to_rate = int(from_rate), int(to_rate)
    resampler, latency, k, drop = _stream_resampler(from_rate, to_rate, channels, quality)
    padded = np.concatenate(
        [np.zeros((channels, k), np.float32), audio, np.zeros((channels, latency + 1), np.float32)],
        axis=1,
    )
    out = np.concatenate([resampler.process(np.ascontiguousarray(padded)), resampler.process()], axis=1)
    n_out = resampled_frames(frames, from_rate, to_rate)
    return np.ascontiguousarray(out[:, drop : drop + n_out])


class _StreamResampler:
    """:func:`resample` of one channel fed block by block, with the same output as on the whole
    signal (the same latency handling, :func:`_stream_resampler`, streamed)."""

    def __init__(self, from_rate: int, to_rate: int, quality: str) -> None:
        self.resampler, self.latency, k, self.to_drop = _stream_resampler(from_rate, to_rate, 1, quality)
        self.head = self._run(np.zeros(k, np.float32))

    def _run(self, x: np.ndarray | None) -> np.ndarray:
        """The resampler's output for ``x`` (None: its last samples), less the samples still to
        drop for the latency."""
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
        """The output for the next block ``x`` (after the leading zeros' output, on the first call)."""
        head, self.head = self.head, None
        y = self._run(x)
        return y if head is None or head.size == 0 else np.concatenate([head, y])

    def finish(self) -> np.ndarray:
        """The rest of the output: the latency flushed with zeros, then the resampler's last samples."""
        tail = self._run(np.zeros(self.latency + 1, np.float32))
        return np.concatenate([tail, self._run(None)])


class DecodedFile:
    """Audio already read, (channels, frames) samples at ``rate``, read as a ``soundfile.SoundFile``
    open for reading is (``read``, ``tell``, ``frames``, ``samplerate``, ``channels``): the same
    blocks, without decoding the file again."""

    def __init__(self, samples: np.ndarray, rate: int) -> None:
        self.samples, self.samplerate = samples, int(rate)
        self.channels, self.frames = samples.shape
        self.position = 0

    def tell(self) -> int:
        """The frames read so far."""
        return self.position

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        """The next ``frames`` frames (-1: the rest), (frames, channels) as soundfile reads them."""
        stop = self.frames if frames < 0 else min(self.frames, self.position + frames)
        block = np.asarray(self.samples[:, self.position : stop], dtype).T
        self.position = stop
        return block


def ahead(items: Iterable[Any], depth: int = 4) -> Iterator[Any]:
    """The items of ``items``, made in a worker thread up to ``depth`` ahead of their consumer, so
    that a decoder and a renderer (which release the GIL) run while the consumer writes.

    The worker's exception is raised here in order; closing this generator (or an exception in
    the consumer) stops the worker and waits for it, so ``items`` may read from a file its
    caller closes afterwards. Use it in a ``with contextlib.closing(...)`` for that guarantee."""
    import queue
    import threading

    done = object()
    slots: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as exc:  # noqa: BLE001 - raised in the consumer's thread
            put((done, exc))

    worker = threading.Thread(target=work, name="afxest-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, failure = slots.get()
            if item is done:
                if failure is not None:
                    raise failure
                return
            yield item
    finally:
        stop.set()
        worker.join()


def placed(blocks: Iterator[np.ndarray], offset: int, frames: int, channels: int) -> Iterator[np.ndarray]:
    """The signal of ``blocks`` ((channels, n) each) moved ``offset`` samples later (a negative
    offset drops its first -offset samples) and cut or zero padded to ``frames``: output sample m
    is input sample m - offset, or 0 where there is none.

    Example:
        >>> x = np.arange(1, 6, dtype=np.float32)[None]
        >>> np.concatenate(list(placed(iter([x[:, :2], x[:, 2:]]), 2, 6, 1)), axis=1)
        array([[0., 0., 1., 2., 3., 4.]], dtype=float32)
        >>> np.concatenate(list(placed(iter([x]), -3, 4, 1)), axis=1)
        array([[4., 5., 0., 0.]], dtype=float32)
    """
    done = 0  # output samples yielded
    if offset > 0:
        lead = np.zeros((channels, min(offset, frames)), np.float32)
        done = lead.shape[1]
        yield lead
    skip = max(0, -offset)
    for block in blocks:
        if done >= frames:
            return
        if skip:
            cut = min(skip, block.shape[1])
            block, skip = block[:, cut:], skip - cut
        block = block[:, : frames - done]
        if block.shape[1]:
            done += block.shape[1]
            yield block
    if done < frames:
        yield np.zeros((channels, frames - done), np.float32)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Mixes (channels, frames) down to (1, frames) by averaging channels (the mid signal)."""
    return audio.mean(axis=0, keepdims=True)


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    """Checks an output folder before any work: an existing, writable folder, or a missing one
    (which :func:`make_folder` creates with its parents when there is something to write) under
    a writable folder; returns ``out`` as a Path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: output must be a folder")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK):
        raise UserError(f"{out}: output folder {existing} is not writable")
    return out


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Creates an output folder and its missing parents (nothing when it exists); returns its Path."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{path}: cannot create the output folder ({_reason(err)})") from None
    return path


def check_output_path(
    path: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str]] = (),
    force: bool = False,
    suffixes: Iterable[str] | None = None,
) -> Path:
    """Refuses an output path that would overwrite an input, or an existing file without force.

    Called before any work, so that nothing is computed for an output that cannot be written.

    Arguments:
        path: The output file.
        inputs: The input files it must not overwrite.
        force: Whether an existing file may be replaced.
        suffixes: The allowed suffixes (lower case, with the dot); None allows any.

    Returns:
        ``path`` as a Path.
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


WAV_MAX_BYTES = 2**32 - 1  # a RIFF WAVE file cannot be larger (its sizes are 32-bit)
_SAMPLE_BYTES = {"float": 4, "16": 2, "24": 3}


def check_output_size(path: Path, frames: int, channels: int, bit_depth: str = "float") -> None:
    """Refuses, before any work, a WAV output larger than the format can hold."""
    size = frames * channels * _SAMPLE_BYTES[bit_depth]
    if Path(path).suffix.lower() == ".wav" and size + 1024 > WAV_MAX_BYTES:
        raise UserError(
            f"{path}: {frames} frames of {channels} channel(s) would make a {size / 2**30:.1f} GiB WAV; "
            f"a WAV file holds at most 4 GiB (shorten the sound or lower the sample rate)"
        )


def write_audio(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    bit_depth: str = "float",
) -> WriteReport:
    """Writes (channels, frames) audio atomically as WAV or FLAC.

    ``bit_depth`` is "float" (32-bit float WAV), "16" or "24" (PCM). A PCM write clips samples
    beyond [-1, 1]: their count is returned so the caller can warn. Callers check the path
    first with :func:`check_output_path`.
    """
    return write_audio_blocks(path, [audio], audio.shape[0], sample_rate, bit_depth)


def write_audio_blocks(
    path: str | os.PathLike[str],
    blocks: Iterable[np.ndarray],
    channels: int,
    sample_rate: int,
    bit_depth: str = "float",
) -> WriteReport:
    """:func:`write_audio` for audio that arrives in blocks: streamed to a temporary file,
    renamed onto ``path`` when complete. A write that fails (a full disk, an interruption)
    removes the temporary file and raises UserError (or the interruption); a non-finite block
    raises RuntimeError (a rendering bug, never written).

    Arguments:
        path: The output file, ``.wav`` or ``.flac``.
        blocks: The audio, (channels, frames) blocks, consumed while the file is written.
        channels: The blocks' channel count.
        sample_rate: The file's sample rate.
        bit_depth: ``float`` (32-bit float WAV), ``16`` or ``24`` (PCM, clipped to [-1, 1]).

    Returns:
        The :class:`WriteReport`: the path and how many samples were clipped.
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
    clipped = 0
    with staged_file(path) as fh:
        with soundfile.SoundFile(fh, "w", int(sample_rate), channels, subtype=subtypes[bit_depth], format=suffix[1:].upper()) as sink:
            for audio in blocks:
                if not np.isfinite(audio).all():
                    raise RuntimeError("refusing to write non-finite audio")
                over = 0 if bit_depth == "float" else int(np.count_nonzero(np.abs(audio) > 1.0))
                clipped += over
                fh.write_frames(sink, np.clip(audio, -1.0, 1.0).T if over else audio.T)
    return WriteReport(path=path, clipped_samples=clipped)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Writes a text file atomically (temporary file in the same folder, then rename)."""
    with staged_file(Path(path)) as fh:
        fh.write(text.encode("utf-8"))


class StagedFile:
    """A temporary file being written, handed to libsndfile as a file object.

    libsndfile calls :meth:`write` through a cffi callback, where an exception (a full disk, a
    signal) would only print a traceback: it is kept instead, the write reports 0 bytes, and
    :meth:`write_frames` raises the kept exception once libsndfile returns. ``raw`` is the
    temporary file's binary file object."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self.failure: BaseException | None = None

    def write(self, data: bytes) -> int:
        """Writes ``data``; the number of bytes written, 0 once a write has failed (the failure kept)."""
        if self.failure is not None:
            return 0
        try:
            return _write_bytes(self.raw, data)
        except BaseException as exc:  # noqa: BLE001 - kept and raised by write_frames
            self.failure = exc
            return 0

    def write_frames(self, sink, frames: np.ndarray) -> None:
        """``sink.write(frames)``, raising what a callback kept rather than soundfile's assert."""
        try:
            sink.write(frames)
        except BaseException:
            if self.failure is None:
                raise
        self.check()

    def check(self) -> None:
        """Raises the kept write failure, if any (once)."""
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    def read(self, n: int = -1) -> bytes:
        """The temporary file's ``read``."""
        return self.raw.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        """The temporary file's ``seek``."""
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        """The temporary file's ``tell``."""
        return self.raw.tell()

    def flush(self) -> None:
        """The temporary file's ``flush``."""
        self.raw.flush()


def _write_bytes(raw, data: bytes) -> int:
    """The one place bytes reach a staged file (tests make it fail: a full disk, a signal)."""
    return raw.write(data)


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Writes ``path`` atomically, the one way afxest writes a file: the block writes a binary
    file object, a temporary file in the same folder (:func:`temporary_in`), which is flushed to
    the disk, given the usual permissions and renamed onto ``path`` when the block succeeds, and
    removed when it fails. An OSError while writing (a full disk, a read-only file system)
    becomes a one-line UserError.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "hello.txt"
        >>> with atomic_output(target) as fh:
        ...     _ = fh.write(b"hello")
        >>> target.read_bytes(), [p.name for p in target.parent.iterdir()]
        (b'hello', ['hello.txt'])
        >>> shutil.rmtree(target.parent)
    """
    path = Path(path)
    fd, tmp = temporary_in(path.parent)
    try:
        with os.fdopen(fd, "w+b") as raw:  # a file object: libsndfile never sees the (long) path
            yield raw
            raw.flush()
            os.fsync(raw.fileno())
        _permissions(tmp, 0o666)  # mkstemp made it 0600
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({_reason(err)})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged_file(path: Path) -> Iterator[StagedFile]:
    """:func:`atomic_output` for libsndfile: the block writes a :class:`StagedFile`, whose
    kept write failure is raised before the file is published."""
    with atomic_output(path) as raw:
        staged = StagedFile(raw)
        yield staged
        staged.check()


TEMPORARY = re.compile(r"\.afxest-(?:(?P<pid>[0-9]+)-[a-z0-9_]+|[a-z0-9_]{8})\.part")


def temporary_in(folder: Path, make: Callable[..., Any] = tempfile.mkstemp) -> Any:
    """Creates a short-named temporary file in ``folder`` (same file system: atomic rename),
    ``.afxest-<pid>-*.part`` after this process, once the temporaries that dead runs left there
    are swept; returns mkstemp's (descriptor, path), or the path of a folder for ``make``
    ``tempfile.mkdtemp``."""
    sweep_temporaries(folder)
    try:
        return make(prefix=f".afxest-{os.getpid()}-", suffix=".part", dir=folder)
    except OSError as err:
        raise UserError(f"{folder}: cannot write here ({err.strerror})") from None


def sweep_temporaries(folder: Path) -> None:
    """Removes the ``.afxest-<pid>-*.part`` files and folders in ``folder`` whose process is
    gone (killed before it could clean up), and those of versions without a pid in the name."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = TEMPORARY.fullmatch(name)
        if match is None or (match["pid"] is not None and _alive(int(match["pid"]))):
            continue
        stale = Path(folder) / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` may still run (this one, or one we may not signal, counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _reason(err: OSError) -> str:
    """The short reason of an OSError for a one-line message (its strerror when it has one)."""
    return err.strerror or shortened(str(err)) or err.__class__.__name__


def _permissions(path: str | Path, mode: int) -> None:
    """Sets ``path``'s mode to ``mode`` less the process's umask, as a newly created file gets it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


class OutputSet:
    """Files that belong together (an estimate and its audio), published all at once.

    Every file is written into a hidden staging folder beside ``folder`` (``.afxest-<pid>-*.part``);
    :meth:`publish` then renames the staging folder onto ``folder`` (one atomic step) or, when
    ``folder`` exists, moves the files in with signals held and the ``marker`` file (the one
    that says the set is complete) removed first and moved in last. An interrupted run leaves
    nothing or the whole set; a killed one leaves a staging folder that the next run sweeps."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        if self.folder.is_dir():
            sweep_temporaries(self.folder)
        self.stage = Path(temporary_in(self.folder.parent, tempfile.mkdtemp))

    def path(self, name: str) -> Path:
        """Where the file ``name`` of the set is written before publishing."""
        return self.stage / name

    def publish(self, marker: str, obsolete: Iterable[Path] = ()) -> list[Path]:
        """Publishes the staged files (``marker`` last) and removes ``obsolete`` files of an
        earlier set; returns the published paths."""
        from afxest.interrupt import deferred

        names = sorted(os.listdir(self.stage), key=lambda n: (n == marker, n))
        try:
            with deferred():
                if not self.folder.exists():
                    _permissions(self.stage, 0o777)
                    os.rename(self.stage, self.folder)
                else:
                    (self.folder / marker).unlink(missing_ok=True)
                    for path in obsolete:
                        path.unlink(missing_ok=True)
                    for name in names:
                        os.replace(self.stage / name, self.folder / name)
                    self.stage.rmdir()
        except OSError as err:
            self.discard()
            raise UserError(f"{self.folder}: cannot write ({_reason(err)})") from None
        return [self.folder / n for n in names]

    def discard(self) -> None:
        """Removes the staging folder and everything in it."""
        shutil.rmtree(self.stage, ignore_errors=True)
