"""Music folders (split, cache, excerpts), the procedural generator and ground-truth batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pedalboard
import pytest
import soundfile

import afxest.data as data
from afxest.data import DrySource, MusicFolder, make_batch, procedural_music, split_of
from afxest.errors import UserError
from afxest.tasks import TASKS


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("AFXEST_CACHE_DIR", str(folder))
    return folder


def make_folder(root: Path, n: int = 40, seconds: float = 1.0, rate: int = 44100) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / f"album{i % 3}"
        sub.mkdir(exist_ok=True)
        x = rng.standard_normal((int(seconds * rate), 2)).astype(np.float32) * 0.1
        soundfile.write(sub / f"track{i}.flac" if i % 2 else sub / f"track{i}.wav", x, rate)
    (root / "notes.txt").write_text("not audio")
    return root


# Fixed assignments, written down once (a SHA-256 of the relative path, docs/training.md): a
# split that changed with the process (Python's salted hash()), the platform or the release
# would move tracks between train and test and fail here.
FIXED_SPLITS = {
    "a/b/track0.ogg": "train", "a/b/track1.ogg": "train", "a/b/track2.ogg": "test", "song.wav": "train",
    "album/01 intro.flac": "train", "x/y/z.mp3": "train", "Ünïcode/träck.wav": "train",
    "track12.ogg": "test", "track16.ogg": "val", "track18.ogg": "test", "music/take1.wav": "test",
    "music/take6.wav": "val", "music/take8.wav": "val", "music/take21.wav": "val", "music/take2.wav": "train",
}


def test_split_is_fixed_by_the_relative_path() -> None:
    assert {name: split_of(name) for name in FIXED_SPLITS} == FIXED_SPLITS


def test_split_is_roughly_80_10_10(tmp_path: Path) -> None:
    names = [f"a/b/track{i}.ogg" for i in range(3000)]
    splits = [split_of(n) for n in names]
    counts = {s: splits.count(s) / len(names) for s in ("train", "val", "test")}
    assert abs(counts["train"] - 0.8) < 0.03 and abs(counts["val"] - 0.1) < 0.02


def test_splits_partition_the_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "music")
    parts = {s: {p.name for p in MusicFolder(root, 22050, s).files} for s in ("train", "val", "test")}
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"]) and not (parts["val"] & parts["test"])
    assert sum(len(p) for p in parts.values()) == 40


def test_prepare_decodes_once_resampled_mono(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    root = tmp_path / "music"
    root.mkdir()
    t = np.arange(44100) / 44100
    for i in range(12):  # tones well below the new Nyquist, different in each channel
        left, right = np.sin(2 * np.pi * (200 + 50 * i) * t), 0.5 * np.sin(2 * np.pi * 3000 * t)
        soundfile.write(root / f"t{i}.flac", np.stack([left, right], axis=1) * 0.3, 44100, subtype="PCM_24")
    folder = MusicFolder(root, 22050, "train").prepare()
    assert folder.tracks and all(t.frames == 22050 for t in folder.tracks)
    cached = np.load(folder.tracks[0].cache)
    audio, _ = soundfile.read(folder.tracks[0].source, dtype="float64")
    assert cached.ndim == 1 and cached.shape[0] == 22050
    # the cache holds the mono mix resampled to 22050 Hz (reference: scipy's polyphase resampler)
    import scipy.signal

    ref = scipy.signal.resample_poly(audio.mean(axis=1), 1, 2, window=("kaiser", 10.0))[1000:-1000]
    err = cached[1000:-1000] - ref
    assert 10 * np.log10(np.sum(ref**2) / np.sum(err**2)) > 60

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data, "read_audio", refuse)
    again = MusicFolder(root, 22050, "train").prepare()  # epochs and runs never re-decode
    assert [t.cache for t in again.tracks] == [t.cache for t in folder.tracks]


def test_excerpts_skip_silence_and_respect_length(tmp_path: Path) -> None:
    root = tmp_path / "music"
    root.mkdir()
    rate = 8000
    loud = np.zeros(rate * 4, np.float32)
    loud[rate * 3 :] = 0.3 * np.sin(np.arange(rate) * 0.1)  # only the last second is not silent
    for i in range(30):
        soundfile.write(root / f"t{i}.wav", loud, rate)
    folder = MusicFolder(root, rate, "train").prepare()
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = folder.excerpt(rng, rate // 2)
        assert x.shape == (rate // 2,) and np.sqrt(np.mean(x**2)) > data.SILENCE_RMS
    with pytest.raises(UserError):
        folder.excerpt(rng, rate * 10)


def test_missing_or_empty_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such folder"):
        MusicFolder(tmp_path / "nope", 22050, "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no audio files"):
        MusicFolder(tmp_path / "empty", 22050, "train")


def test_shards_are_disjoint(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "music", n=12)
    a = MusicFolder(root, 22050, "train").prepare().shard(0, 2)
    b = MusicFolder(root, 22050, "train").prepare().shard(1, 2)
    assert a.tracks and b.tracks and not {t.cache for t in a.tracks} & {t.cache for t in b.tracks}


def test_procedural_music_is_broadband_dynamic_and_seeded() -> None:
    rate = 22050
    x = procedural_music(np.random.default_rng(3), 5 * rate, rate)
    assert x.dtype == np.float32 and np.isfinite(x).all()
    assert np.array_equal(x, procedural_music(np.random.default_rng(3), 5 * rate, rate))
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    low, high = spectrum[freqs < 500].sum(), spectrum[(freqs > 2000) & (freqs < 10000)].sum()
    assert high / low > 1e-3  # energy above the eq task's shelves, not only low tones
    frames = x[: rate * 5 // 1024 * 1024].reshape(-1, 1024)
    levels = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    assert levels.max() - levels.min() > 6  # dynamic, not a flat noise


def test_eq_batch_is_pedalboard_high_shelf_of_the_dry() -> None:
    task = TASKS["eq"]
    rng = np.random.default_rng(0)
    batch = make_batch(task, DrySource(None, task.sample_rate), rng, 3)
    assert batch.dry.shape == batch.wet.shape == (3, 1, task.clip_samples) and batch.v.shape == (3, 3)
    for i in range(3):
        v = batch.v.astype(np.float64)
        f = 500 * 5 ** v[i, 0]  # exp map on [500, 2500]
        g = 40 * v[i, 1] - 20
        q = 2.9 * v[i, 2] + 0.1
        ref = pedalboard.HighShelfFilter(cutoff_frequency_hz=f, gain_db=g, q=q)(batch.dry[i], task.sample_rate)
        np.testing.assert_allclose(batch.wet[i], ref, atol=1e-5)


def test_fm_batch_is_eq_19_with_eq_20_mapping() -> None:
    task = TASKS["fm"]
    batch = make_batch(task, None, np.random.default_rng(0), 4)
    assert batch.dry is None and batch.wet.shape == (4, 1, task.clip_samples)
    t = np.arange(task.clip_samples) / 44100
    v = batch.v.astype(np.float64)
    for i in range(4):
        index = 4 * np.pi * 10 ** (0.75 * 99 * (v[i, 0] - 1) / 20)
        ratio = 9.5 * v[i, 1] + 0.5
        ref = np.sin(2 * np.pi * 110 * t + index * np.sin(2 * np.pi * ratio * 110 * t))
        np.testing.assert_allclose(batch.wet[i, 0], ref, atol=2e-5)
