"""afxest.audio: reading every supported format, resampling, and safe writing."""

from __future__ import annotations

import itertools
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile
from scipy.signal import chirp, correlate, resample_poly

from afxest import audio
from afxest.audio import check_output_path, read_audio, read_mono, resample, to_mono, write_audio
from afxest.errors import UserError


def snr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Signal-to-noise ratio of ``estimate`` against ``reference`` in dB."""
    noise = np.sum((np.asarray(estimate, np.float64) - reference) ** 2)
    return float(10 * np.log10(np.sum(np.asarray(reference, np.float64) ** 2) / max(noise, 1e-300)))


def stereo_chirps(sample_rate: int, seconds: float = 0.5) -> np.ndarray:
    """Two different log chirps (not periodic, so alignment is unambiguous), (2, frames)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return np.stack(
        [
            0.5 * chirp(t, 100, t[-1], 4000, method="log"),
            0.3 * chirp(t, 200, t[-1], 3000, method="log", phi=40),
        ]
    ).astype(np.float32)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- reading ---------------------------------------------------------------------------------

LOSSLESS = [
    # (file name, soundfile subtype, max abs error of the round trip)
    ("pcm16.wav", "PCM_16", 2.0**-15 * 1.01),
    ("pcm24.wav", "PCM_24", 2.0**-23 * 1.01),
    ("pcm32.wav", "PCM_32", 2.0**-31 * 4),
    ("float32.wav", "FLOAT", 0.0),
    ("float64.wav", "DOUBLE", 0.0),
    ("pcm16.flac", "PCM_16", 2.0**-15 * 1.01),
    ("pcm24.flac", "PCM_24", 2.0**-23 * 1.01),
]


@pytest.mark.parametrize(("name", "subtype", "tolerance"), LOSSLESS, ids=[c[0] for c in LOSSLESS])
def test_read_lossless_round_trip(tmp_path: Path, name: str, subtype: str, tolerance: float) -> None:
    x = stereo_chirps(44100)
    soundfile.write(tmp_path / name, x.T, 44100, subtype=subtype)
    y, sample_rate = read_audio(tmp_path / name)
    assert sample_rate == 44100
    assert y.dtype == np.float32
    assert y.shape == x.shape  # (channels, frames), stereo kept
    assert np.max(np.abs(y - x)) <= tolerance


LOSSY = [
    # (file name, format, subtype, minimum correlation, minimum SNR in dB); measured on this
    # signal: Vorbis 0.996 / 21 dB, MP3 0.9999 / 36-40 dB at 22.05-48 kHz.
    ("a.ogg", "OGG", "VORBIS", 0.98, 14.0),
    ("a.mp3", "MP3", "MPEG_LAYER_III", 0.999, 28.0),
]


@pytest.mark.parametrize("sample_rate", [22050, 44100, 48000])
@pytest.mark.parametrize(("name", "fmt", "subtype", "min_corr", "min_snr"), LOSSY, ids=["ogg", "mp3"])
def test_read_lossy_round_trip(
    tmp_path: Path, sample_rate: int, name: str, fmt: str, subtype: str, min_corr: float, min_snr: float
) -> None:
    if fmt not in soundfile.available_formats() or subtype not in soundfile.available_subtypes(fmt):
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}")
    x = stereo_chirps(sample_rate)
    soundfile.write(tmp_path / name, x.T, sample_rate, format=fmt, subtype=subtype)
    y, rate = read_audio(tmp_path / name)
    assert rate == sample_rate
    assert y.dtype == np.float32
    assert y.shape[0] == 2
    assert abs(y.shape[1] - x.shape[1]) <= 0.01 * x.shape[1]
    # The codec delay, if any, is found by cross-correlation and removed before comparing.
    lag = int(np.argmax(correlate(y[0], x[0], "full"))) - (x.shape[1] - 1)
    assert abs(lag) < 0.05 * sample_rate
    a = y[:, max(lag, 0):]
    b = x[:, max(-lag, 0):]
    n = min(a.shape[1], b.shape[1])
    edge = int(0.02 * sample_rate)  # codec start/end transients
    a, b = a[:, edge : n - edge], b[:, edge : n - edge]
    for ch in range(2):  # each channel matches its own source, so none were swapped or mixed
        assert np.corrcoef(a[ch], b[ch])[0, 1] >= min_corr
        assert snr_db(a[ch], b[ch]) >= min_snr
        assert abs(np.corrcoef(a[ch], b[1 - ch])[0, 1]) < 0.5


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_read_float_beyond_full_scale_is_not_clipped(tmp_path: Path, subtype: str) -> None:
    x = np.array([[0.0, 1.5, -2.25, 4.0, -0.5]], np.float32)
    soundfile.write(tmp_path / "hot.wav", x.T, 8000, subtype=subtype)
    y, _ = read_audio(tmp_path / "hot.wav")
    np.testing.assert_array_equal(y, x)


def test_read_mono_is_one_channel(tmp_path: Path) -> None:
    soundfile.write(tmp_path / "m.wav", np.full(100, 0.25, np.float32), 16000, subtype="FLOAT")
    y, rate = read_audio(tmp_path / "m.wav")
    assert (y.shape, rate) == ((1, 100), 16000)
    assert y.flags.c_contiguous


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: p.write_text("not audio at all"), "not a readable audio file"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(2000)), "not a readable audio file"),
        (lambda p: soundfile.write(p, np.zeros(0, np.float32), 8000, subtype="FLOAT"), "contains no audio"),
        (lambda p: soundfile.write(p, np.array([0.1, np.nan], np.float32), 8000, subtype="FLOAT"), "non-finite"),
        (lambda p: soundfile.write(p, np.array([0.1, -np.inf], np.float32), 8000, subtype="FLOAT"), "non-finite"),
    ],
    ids=["missing", "folder", "text", "random-bytes", "empty", "nan", "inf"],
)
def test_read_refuses_bad_files(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "x.wav"
    make(path)
    for read in (read_audio, lambda p: read_mono(p, 8000, "fast")):
        with pytest.raises(UserError, match=message) as info:
            read(path)
        assert str(path) in str(info.value)
        assert "\n" not in str(info.value)


def test_a_decoding_failure_is_the_same_one_line_error_for_every_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.wav"
    soundfile.write(path, np.zeros(100, np.float32), 8000, subtype="FLOAT")

    def broken(self, *args, **kwargs):
        raise RuntimeError("Error : Internal psf_fseek() failed.")

    monkeypatch.setattr(soundfile.SoundFile, "read", broken)
    for read in (read_audio, lambda p: read_mono(p, 8000, "fast")):
        with pytest.raises(UserError) as info:
            read(path)
        assert str(info.value) == f"{path}: not a readable audio file (Internal psf_fseek() failed.)"


def test_read_mono_streams_like_whole_file_resampling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 5000 frames resampled one by one give the whole file's resampling (scipy's
    polyphase resampler checks that one, above)."""
    monkeypatch.setattr(audio, "READ_BLOCK", 5000)
    rng = np.random.default_rng(5)
    x = (0.2 * rng.standard_normal((3, 3 * 5000 + 123))).astype(np.float32)
    for (file_rate, rate), quality in itertools.product(((48000, 22050), (16000, 22050), (22050, 22050)), ("fast", "best")):
        path = tmp_path / f"x{file_rate}.wav"
        soundfile.write(path, x.T, file_rate, subtype="FLOAT")
        expected = resample(x.mean(axis=0, keepdims=True), file_rate, rate, quality)[0]
        signal = read_mono(path, rate, quality)
        assert (signal.channels, signal.file_rate, signal.file_frames) == (3, file_rate, x.shape[1])
        assert signal.seconds == x.shape[1] / file_rate
        # 3 channels: the stream mixes by a dot product with 1/3, the mean here by a sum (1 ulp apart)
        np.testing.assert_allclose(signal.samples, expected, rtol=0, atol=3e-7)


def test_to_mono_averages_channels() -> None:
    x = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]], np.float32)
    np.testing.assert_allclose(to_mono(x), [[0.5, 0.5, 0.0]])


# --- resampling ------------------------------------------------------------------------------

RATE_PAIRS = [(44100, 22050), (48000, 22050), (22050, 44100), (8000, 22050), (44100, 48000)]


@pytest.mark.parametrize(("from_rate", "to_rate"), RATE_PAIRS)
def test_resample_matches_scipy_resample_poly(from_rate: int, to_rate: int) -> None:
    # Reference: scipy's polyphase resampler with a Kaiser(beta=10) window. (Its default
    # beta=5 window has ~1e-3 pass-band ripple, which limits the comparison to 59-62 dB.)
    # Tones up to a quarter of the lower rate, well inside both pass bands. Measured SNR:
    # 100-106 dB against scipy, 102-119 dB against the exact resampled sines.
    n = int(0.5 * from_rate)
    t = np.arange(n) / from_rate
    low = min(from_rate, to_rate)
    freqs = [110.0, 440.0, 1000.0, 0.25 * low]
    x = np.stack([sum(0.2 * np.sin(2 * np.pi * f * t + ch + k) for k, f in enumerate(freqs)) for ch in range(2)])
    y = resample(x.astype(np.float32), from_rate, to_rate)
    g = math.gcd(from_rate, to_rate)
    ref = resample_poly(x, to_rate // g, from_rate // g, axis=1, window=("kaiser", 10.0))
    assert y.shape == (2, round(n * to_rate / from_rate))
    assert y.dtype == np.float32
    edge = int(0.05 * to_rate)  # both filters see the signal start from silence differently
    assert snr_db(y[:, edge:-edge], ref[:, edge : y.shape[1] - edge]) >= 85.0
    # Independently of scipy: a resampled sine is the same sine sampled at the new rate.
    tt = np.arange(y.shape[1]) / to_rate
    exact = np.stack([sum(0.2 * np.sin(2 * np.pi * f * tt + ch + k) for k, f in enumerate(freqs)) for ch in range(2)])
    assert snr_db(y[:, edge:-edge], exact[:, edge:-edge]) >= 85.0


@pytest.mark.parametrize(
    ("from_rate", "to_rate", "bound_db"),
    # Measured worst case over tones at 1.1-1.5x the new Nyquist: -101 dB (44.1k->22.05k),
    # -81 dB (48k->22.05k), -65 dB (48k->16k), -47 dB (44.1k->8k). Pedalboard's 256-tap
    # windowed sinc rejects less the larger the decimation factor.
    [(44100, 22050, -90.0), (48000, 22050, -75.0), (48000, 16000, -60.0), (44100, 8000, -42.0)],
)
@pytest.mark.parametrize("factor", [1.1, 1.3, 1.5])
def test_resample_removes_tones_above_the_new_nyquist(
    from_rate: int, to_rate: int, bound_db: float, factor: float
) -> None:
    t = np.arange(int(0.3 * from_rate)) / from_rate
    tone = 0.5 * np.sin(2 * np.pi * factor * to_rate / 2 * t)  # above to_rate / 2: would alias
    y = resample(tone[None].astype(np.float32), from_rate, to_rate)
    edge = int(0.05 * to_rate)
    rms = np.sqrt(np.mean(y[:, edge:-edge].astype(np.float64) ** 2))
    assert 20 * np.log10(rms / (0.5 / np.sqrt(2)) + 1e-30) < bound_db
    # while a tone below the new Nyquist passes unchanged
    kept = resample((0.5 * np.sin(2 * np.pi * 0.4 * to_rate * t))[None].astype(np.float32), from_rate, to_rate)
    kept_rms = np.sqrt(np.mean(kept[:, edge:-edge].astype(np.float64) ** 2))
    assert abs(20 * np.log10(kept_rms / (0.5 / np.sqrt(2)))) < 0.05


@pytest.mark.parametrize("frames", [0, 1, 2, 3, 7, 100, 257, 4410, 9999])
@pytest.mark.parametrize(("from_rate", "to_rate"), [(44100, 22050), (22050, 44100), (8000, 22050), (48000, 44100)])
def test_resample_length_is_round_n_times_ratio(frames: int, from_rate: int, to_rate: int) -> None:
    y = resample(np.ones((2, frames), np.float32), from_rate, to_rate)
    assert y.shape == (2, round(frames * to_rate / from_rate))


def test_resample_is_time_aligned() -> None:
    # An impulse in the middle stays in the middle: the resampler's latency is removed.
    x = np.zeros((1, 4410), np.float32)
    x[0, 2205] = 1.0
    y = resample(x, 44100, 22050)
    assert abs(int(np.argmax(np.abs(y[0]))) - 2205 * 22050 / 44100) <= 0.5


def test_resample_same_rate_is_identity() -> None:
    x = np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32)
    np.testing.assert_array_equal(resample(x, 22050, 22050), x)


# --- writing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bit_depth", "subtype", "tolerance"),
    [
        ("o.wav", "float", "FLOAT", 0.0),
        ("o.wav", "16", "PCM_16", 2.0**-15 * 1.01),
        ("o.wav", "24", "PCM_24", 2.0**-23 * 1.01),
        ("o.flac", "16", "PCM_16", 2.0**-15 * 1.01),
        ("o.flac", "24", "PCM_24", 2.0**-23 * 1.01),
    ],
)
def test_write_round_trip(tmp_path: Path, name: str, bit_depth: str, subtype: str, tolerance: float) -> None:
    x = stereo_chirps(22050, 0.2)
    report = write_audio(tmp_path / name, x, 22050, bit_depth)
    assert report.path == tmp_path / name
    assert report.clipped_samples == 0
    info = soundfile.info(tmp_path / name)
    assert (info.subtype, info.samplerate, info.channels, info.frames) == (subtype, 22050, 2, x.shape[1])
    y, _ = read_audio(tmp_path / name)
    assert np.max(np.abs(y - x)) <= tolerance
    assert listing(tmp_path) == [name]  # no temporary file left behind


def test_write_float_keeps_values_beyond_full_scale(tmp_path: Path) -> None:
    x = np.array([[0.5, 1.5, -3.0]], np.float32)
    assert write_audio(tmp_path / "o.wav", x, 8000).clipped_samples == 0
    np.testing.assert_array_equal(read_audio(tmp_path / "o.wav")[0], x)


@pytest.mark.parametrize("bit_depth", ["16", "24"])
def test_write_pcm_clips_and_counts(tmp_path: Path, bit_depth: str) -> None:
    x = np.array([[0.5, 1.5, -3.0, 1.0, -1.0, 2.0]], np.float32)
    report = write_audio(tmp_path / "o.wav", x, 8000, bit_depth)
    assert report.clipped_samples == 3
    y, _ = read_audio(tmp_path / "o.wav")
    np.testing.assert_allclose(y, np.clip(x, -1, 1), atol=2.0**-15 * 1.01)


@pytest.mark.parametrize(
    ("name", "bit_depth"), [("o.mp3", "float"), ("o.ogg", "16"), ("o.flac", "float"), ("o.wav", "32")]
)
def test_write_refuses_unsupported_formats(tmp_path: Path, name: str, bit_depth: str) -> None:
    with pytest.raises(UserError):
        write_audio(tmp_path / name, np.zeros((1, 10), np.float32), 8000, bit_depth)
    assert listing(tmp_path) == []


def disk_full_after(monkeypatch: pytest.MonkeyPatch, calls: int, folder: Path | None = None, seen: list | None = None) -> None:
    """Make the staged-file writes fail like a full disk (ENOSPC) after ``calls`` writes."""
    import errno

    import afxest.audio

    real = afxest.audio._write_bytes
    count = [0]

    def write(raw, data: bytes) -> int:
        if seen is not None and folder is not None:
            seen.append(sorted(p.name for p in folder.iterdir()))
        count[0] += 1
        if count[0] > calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(raw, data)

    monkeypatch.setattr(afxest.audio, "_write_bytes", write)


@pytest.mark.parametrize("calls", [0, 1])  # the header fails, or the samples after it
def test_a_full_disk_is_one_user_error_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: int
) -> None:
    (tmp_path / "keep.txt").write_text("x")
    seen: list = []
    disk_full_after(monkeypatch, calls, tmp_path, seen)
    with pytest.raises(UserError, match=r"o\.wav: cannot write \(No space left on device\)"):
        write_audio(tmp_path / "o.wav", np.zeros((1, 100000), np.float32), 8000)
    assert any(len(names) == 2 for names in seen)  # the temporary file was in the target folder
    assert listing(tmp_path) == ["keep.txt"]


def test_write_failure_keeps_the_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "o.wav"
    target.write_bytes(b"old content")
    disk_full_after(monkeypatch, 0)
    with pytest.raises(UserError):
        write_audio(target, np.zeros((1, 10), np.float32), 8000)
    assert target.read_bytes() == b"old content"
    assert listing(tmp_path) == ["o.wav"]


def test_write_refuses_non_finite_audio(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        write_audio(tmp_path / "o.wav", np.array([[0.0, np.nan]], np.float32), 8000)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_have_normal_permissions(tmp_path: Path, umask: int) -> None:
    # mkstemp creates 0600 files; the published file must get the usual 0666 & ~umask.
    old = os.umask(umask)
    try:
        write_audio(tmp_path / "o.wav", np.zeros((1, 10), np.float32), 8000)
        audio.atomic_write_text(tmp_path / "o.json", "{}\n")
    finally:
        os.umask(old)
    for name in ("o.wav", "o.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert (tmp_path / "o.json").read_text() == "{}\n"
    assert listing(tmp_path) == ["o.json", "o.wav"]


def test_atomic_write_text_failure_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(UserError, match=r"o\.json: cannot write \(rename failed\)"):
        audio.atomic_write_text(tmp_path / "o.json", "{}")
    assert listing(tmp_path) == []


# --- output path checks ----------------------------------------------------------------------


def test_check_output_path_accepts_a_new_file(tmp_path: Path) -> None:
    dry = tmp_path / "dry.wav"
    dry.write_bytes(b"x")
    out = check_output_path(tmp_path / "out.wav", inputs=[dry], suffixes={".wav", ".flac"})
    assert out == tmp_path / "out.wav"
    assert check_output_path(tmp_path / "OUT.WAV", suffixes={".wav"}) == tmp_path / "OUT.WAV"


def test_check_output_path_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dry = tmp_path / "dry.wav"
    dry.write_bytes(b"dry")
    (tmp_path / "sub").mkdir()
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "link.wav").symlink_to(dry)
    os.link(dry, tmp_path / "hard.wav")
    monkeypatch.chdir(tmp_path / "sub")

    def refused(path, match: str, force: bool = False) -> None:
        with pytest.raises(UserError, match=match) as info:
            check_output_path(path, inputs=[dry], force=force, suffixes={".wav", ".flac"})
        assert "\n" not in str(info.value)

    refused(tmp_path / "out.mp3", "output must end in")
    refused(tmp_path / "missing" / "out.wav", "does not exist")
    refused(tmp_path / "folder.wav", "is a folder", force=True)
    for force in (False, True):  # --force never lets an output replace an input
        refused(dry, "overwrite the input", force)
        refused(Path("..") / "dry.wav", "overwrite the input", force)  # relative spelling
        refused(tmp_path / "sub" / ".." / "dry.wav", "overwrite the input", force)
        refused(tmp_path / "link.wav", "overwrite the input", force)  # symlink to the input
        refused(tmp_path / "hard.wav", "overwrite the input", force)  # hard link to the input
    (tmp_path / "exists.wav").write_bytes(b"old")
    refused(tmp_path / "exists.wav", "already exists")
    assert check_output_path(tmp_path / "exists.wav", inputs=[dry], force=True) == tmp_path / "exists.wav"
    assert dry.read_bytes() == b"dry"


@pytest.mark.parametrize("rates", [(44100, 22050), (48000, 22050), (8000, 22050)])
def test_fast_resampler_is_aligned_too(rates: tuple[int, int]) -> None:
    """quality="fast" (32 taps, for caching training music) is time-aligned like "best"."""
    src, dst = rates
    t = np.arange(2 * src) / src
    y = resample(np.sin(2 * np.pi * 300 * t).astype(np.float32)[None], src, dst, quality="fast")[0]
    ref = np.sin(2 * np.pi * 300 * np.arange(y.size) / dst)
    inner = slice(dst // 4, -dst // 4)
    err = y[inner] - ref[inner]
    assert 10 * np.log10(np.sum(ref[inner] ** 2) / np.sum(err**2)) > 70


def _checkpoint(path: Path) -> None:
    from afxest.checkpoints import save_checkpoint

    save_checkpoint(path, {"format": "x", "weights": [1.0, 2.0]})


def _png(path: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from afxest.figures import save_png

    save_png(Figure(figsize=(1, 1)), path, 10)


def _text(path: Path) -> None:
    audio.atomic_write_text(path, "{}\n")


WRITERS = {"checkpoint": _checkpoint, "png": _png, "text": _text}


@pytest.mark.parametrize("write", WRITERS.values(), ids=WRITERS.keys())
def test_every_writer_publishes_atomically_with_normal_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write
) -> None:
    """Checkpoints, figures and text go through one atomic writer: a failed rename keeps the
    old file and leaves no temporary one; a written file gets the usual 0666 & ~umask."""
    target = tmp_path / "out"
    target.write_bytes(b"old")
    real = audio.os.replace
    monkeypatch.setattr(audio.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(UserError, match=r"out: cannot write \(rename failed\)"):
        write(target)
    assert target.read_bytes() == b"old" and listing(tmp_path) == ["out"]
    monkeypatch.setattr(audio.os, "replace", real)
    old = os.umask(0o027)
    try:
        write(target)
    finally:
        os.umask(old)
    assert target.read_bytes() != b"old" and listing(tmp_path) == ["out"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_killed_writers_temporary_file_is_swept_by_the_next_write(tmp_path: Path) -> None:
    stale = tmp_path / ".afxest-999999999-abc123.part"  # no such process
    stale.write_bytes(b"half a checkpoint")
    _checkpoint(tmp_path / "last.pt")
    assert listing(tmp_path) == ["last.pt"]


def test_doctests() -> None:
    import doctest

    result = doctest.testmod(audio, raise_on_error=False)
    assert result.failed == 0 and result.attempted > 0


def test_ahead_yields_every_item_in_order_and_raises_the_workers_error_after_them() -> None:
    from afxest.audio import ahead

    def source():
        yield from range(50)
        raise ValueError("block 50 is broken")

    got = []
    with pytest.raises(ValueError, match="block 50"):
        for item in ahead(source(), depth=3):
            got.append(item)
    assert got == list(range(50))


def test_closing_ahead_stops_its_worker_before_the_source_runs_on() -> None:
    """Closed after two items, the worker has made at most depth + 1 more and is gone: a file
    the source reads can be closed safely right after."""
    import contextlib
    import threading

    from afxest.audio import ahead

    made = []

    def source():
        for i in itertools.count():
            made.append(i)
            yield i

    before = threading.active_count()
    with contextlib.closing(ahead(source(), depth=2)) as items:
        assert [next(items), next(items)] == [0, 1]
    assert len(made) <= 2 + 2 + 1 and threading.active_count() == before
