"""Pairs as users have them (issue 21): a wet late or early against its dry, of another length,
in stereo, at another rate, or made from another song. Checked against references built here:
known shifts, pedalboard plugins from the JSON values, scipy's biquad responses, the losses
recomputed on the overlap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pedalboard
import pytest
import soundfile
import torch
from scipy import signal

from afxest import losses
from afxest.align import MIN_COHERENCE, _loudest, align, coherence, minimum_phase
from afxest.audio import read_audio
from afxest.cli import main
from afxest.data import procedural_music
from reference import cookbook, reference_render  # tests/reference.py

RATE = 44100


def music(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    return procedural_music(np.random.default_rng(seed), int(round(seconds * rate)), rate)


def master(x: np.ndarray, rate: int = RATE) -> np.ndarray:
    """A mastering chain of the kind the master task draws: shelves, a peak, a compressor, gain."""
    board = pedalboard.Pedalboard([
        pedalboard.LowShelfFilter(cutoff_frequency_hz=120.0, gain_db=6.0, q=0.8),
        pedalboard.PeakFilter(cutoff_frequency_hz=900.0, gain_db=-5.0, q=1.5),
        pedalboard.HighShelfFilter(cutoff_frequency_hz=5000.0, gain_db=7.0, q=0.9),
        pedalboard.Compressor(threshold_db=-24.0, ratio=4.0, attack_ms=5.0, release_ms=120.0),
        pedalboard.Gain(gain_db=6.0),
    ])
    return board(np.atleast_2d(x).astype(np.float32), float(rate))


def late(y: np.ndarray, offset: int, extra: int = 0) -> np.ndarray:
    """y (C, T) ``offset`` samples late (zeros first; negative: its start cut), then ``extra``
    samples longer (zeros after; negative: its end cut)."""
    y = np.concatenate([np.zeros((y.shape[0], offset), np.float32), y], 1) if offset >= 0 else y[:, -offset:]
    return np.concatenate([y, np.zeros((y.shape[0], extra), np.float32)], 1) if extra >= 0 else y[:, :extra]


def write(path: Path, audio: np.ndarray, rate: int = RATE) -> Path:
    soundfile.write(path, np.atleast_2d(audio).T, rate, subtype="FLOAT")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("rate, offset", [(44100, 1), (44100, -777), (48000, 50_000), (48000, -50_000), (22050, 64)])
def test_align_finds_whole_sample_offsets_through_a_mastering_chain(rate: int, offset: int) -> None:
    x = music(8.0, rate)
    wet = late(master(x, rate), offset)[0]
    found = align(x, wet, rate)
    assert found.offset == offset and found.rate == rate
    assert found.match > 0.5 and found.coherence > 2 * MIN_COHERENCE


def test_a_pure_delay_matches_fully_and_unrelated_signals_do_not() -> None:
    x = music(6.0)
    found = align(x, late(x[None], 300)[0], RATE)
    assert found.match == pytest.approx(1.0, abs=1e-6) and found.coherence == pytest.approx(1.0, abs=1e-9)
    for other in (music(6.0, seed=5), 0.1 * np.random.default_rng(3).standard_normal(6 * RATE).astype(np.float32)):
        assert align(x, other, RATE).coherence < MIN_COHERENCE / 3


def test_a_long_reverberation_matches_and_short_unrelated_excerpts_do_not() -> None:
    """A wet through the longest reverb the mix task draws (room size 1, wet level 0.5) after a
    strong delay coheres with its dry at about 0.26 (the tail outlasts the frames) and matches;
    half-second excerpts of unrelated music that cohere at about 0.39 and 0.41 on their 9
    frames do not (4/9 = 0.44 is needed). The line of 0.3 before would have refused the first
    and let the others through."""
    x = music(5.0)
    board = pedalboard.Pedalboard([pedalboard.Delay(delay_seconds=0.3, feedback=0.5, mix=0.5),
                                   pedalboard.Reverb(room_size=1.0, damping=0.0, wet_level=0.5, dry_level=0.5)])
    found = align(x, board(x[None], float(RATE))[0], RATE)
    assert found.matches and found.offset == 0 and found.coherence < 0.3
    for seed in (7, 36):
        unrelated = align(music(0.5, seed=seed), music(0.5, seed=seed + 100), RATE)
        assert not unrelated.matches and unrelated.coherence > 0.3


def test_coherence_is_scipys_and_a_limited_mp3_still_matches() -> None:
    """The coherence's spectrum is scipy.signal.coherence's (Welch, Hann, half overlap); a wet
    through the mastering chain, a hard limit and pedalboard's MP3 encoder at its lowest quality
    still coheres with its dry far above the refusal line."""
    x = music(6.0)
    wet = master(x)[0]
    f, c = signal.coherence(x.astype(np.float64), wet.astype(np.float64), nperseg=4096, noverlap=2048,
                            window="hann", detrend=False)
    _, sxx = signal.welch(x.astype(np.float64), nperseg=4096, noverlap=2048, window="hann", detrend=False)
    _, syy = signal.welch(wet.astype(np.float64), nperseg=4096, noverlap=2048, window="hann", detrend=False)
    used = sxx > sxx.max() * 1e-6
    weight = np.sqrt(sxx * syy)[used]
    assert coherence(x, wet) == pytest.approx(float(np.sum(c[used] * weight) / np.sum(weight)), abs=2e-3)
    limited = pedalboard.Pedalboard([pedalboard.Gain(gain_db=12.0), pedalboard.Limiter(threshold_db=-1.0),
                                     pedalboard.MP3Compressor(vbr_quality=9.0)])(master(x), float(RATE))[0]
    found = align(x, limited, RATE)
    assert found.coherence > 2 * MIN_COHERENCE


def dark_clipped_pair(seed: int, rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    """A dark stereo dry (procedural music through a second-order 1.5 kHz low-pass: little above
    a few kHz) and its wet through a chain drawn from ``seed`` in the master task's ranges,
    ending in a clipper whose harmonics fill the band the dry leaves empty; their mono mixes."""
    rng = np.random.default_rng(seed)
    frames = 6 * rate
    stereo = np.stack([procedural_music(np.random.default_rng(100 + seed), frames, rate),
                       procedural_music(np.random.default_rng(200 + seed), frames, rate)])
    dry = signal.sosfilt(signal.butter(2, 1500.0, fs=rate, output="sos"), stereo).astype(np.float32)
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    board = pedalboard.Pedalboard([
        pedalboard.LowShelfFilter(cutoff_frequency_hz=u(30, 200), gain_db=u(-12, 12), q=u(0.5, 1.5)),
        pedalboard.PeakFilter(cutoff_frequency_hz=u(100, 1000), gain_db=u(-12, 12), q=u(0.3, 3)),
        pedalboard.PeakFilter(cutoff_frequency_hz=u(1000, 8000), gain_db=u(-12, 12), q=u(0.3, 3)),
        pedalboard.HighShelfFilter(cutoff_frequency_hz=u(2000, 10000), gain_db=u(-12, 12), q=u(0.5, 1.5)),
        pedalboard.Compressor(threshold_db=u(-40, 0), ratio=u(1, 10), attack_ms=u(0.5, 50), release_ms=u(10, 500)),
        pedalboard.Gain(gain_db=u(0, 12)),
        pedalboard.Clipping(threshold_db=u(-6, 0)),
    ])
    return dry.mean(axis=0), board(dry, float(rate)).mean(axis=0)


@pytest.mark.parametrize("seed", [13, 18, 38])
def test_align_reads_the_chains_phase_from_the_transfer_function_not_the_power_ratio(seed: int) -> None:
    """Pairs on which the chain's magnitude taken as the square root of the ratio of power
    spectra put the offset a sample off (the clipper's harmonics counted as gain where the dry is
    empty, so its minimum phase was wrong): from the cross-spectrum (H1) and coherence-weighted
    phase, the offset is exact."""
    dry, wet = dark_clipped_pair(seed)
    assert align(dry, late(wet[None], 64)[0], RATE).offset == 64


def test_minimum_phase_of_a_biquads_magnitude_is_its_response() -> None:
    """RBJ shelves and peaks are minimum phase: the phase rebuilt from the magnitude alone is
    scipy's frequency response of the same biquads."""
    n = 8192
    w = np.linspace(0, np.pi, n // 2 + 1)
    response = np.ones(n // 2 + 1, complex)
    for kind, f0, gain, q in (("low_shelf", 200.0, 6.0, 0.7), ("peak", 1500.0, -8.0, 2.0), ("high_shelf", 6000.0, 5.0, 0.8)):
        b, a = cookbook(kind, f0, gain, q, RATE)
        response *= signal.freqz(b, a, worN=w)[1]
    rebuilt = minimum_phase(np.log(np.abs(response)))
    np.testing.assert_allclose(rebuilt, response, atol=2e-3)


@pytest.fixture(scope="module")
def late_stereo_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """6 s of stereo at 44.1 kHz (channels that differ) and its master, 300 samples late and
    0.8 s longer."""
    root = tmp_path_factory.mktemp("late")
    dry = np.stack([music(6.0, seed=1), music(6.0, seed=2)])
    wet = late(master(dry), 300, int(0.8 * RATE))
    return write(root / "song.wav", wet), write(root / "song-dry.wav", dry), wet, dry


def test_a_late_longer_stereo_wet_is_aligned_scored_in_stereo_and_rendered_on_its_timeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], late_stereo_pair, one_thread: None
) -> None:
    wet_path, dry_path, wet, dry = late_stereo_pair
    out = tmp_path / "out"
    code, text, err = run(capsys, "estimate", wet_path, "--dry", dry_path, "--model", "eq", "--samples", 3,
                          "--refine", 0, "--audio-all", "-o", out, "--json")
    assert code == 0, err
    doc = json.loads(text)
    assert doc["sample_rate"] == RATE and doc["channels"] == {"analysed": "mono mix", "scored": "stereo"}
    alignment = doc["alignment"]
    assert alignment["offset_samples"] == 300 and alignment["offset_seconds"] == pytest.approx(300 / RATE)
    assert alignment["overlap"]["seconds"] == pytest.approx(6.0) and alignment["wet_frames"] == wet.shape[1]
    # each loss: the log-mel at 44.1 kHz of the stereo rendering against the wet made from the dry
    # (the 6 s overlap: one window), the mean over both channels
    target = torch.from_numpy(np.ascontiguousarray(wet[:, 300 : 300 + dry.shape[1]]))[None]
    for c in doc["candidates"]:
        rendered = reference_render(c["preset"], dry, RATE)
        assert c["loss"] == pytest.approx(losses.LogMelLoss(RATE)(torch.from_numpy(rendered)[None], target).item(),
                                          rel=1e-4)
        # the audio lines up with the wet (same length, 300 zeros first): a user can null-test it
        written, rate = read_audio(out / "song" / f"candidate-{c['rank']}.wav")
        assert rate == RATE
        np.testing.assert_array_equal(written, late(rendered, 300, wet.shape[1] - 300 - dry.shape[1]))
    # afxest render of the estimate on its own dry file gives the same file; on another, the preset as it is
    code, _, err = run(capsys, "render", dry_path, out / "song" / "estimate.json", "-o", tmp_path / "again.wav")
    assert code == 0, err
    np.testing.assert_array_equal(read_audio(tmp_path / "again.wav")[0], read_audio(out / "song" / "candidate-1.wav")[0])
    other = write(tmp_path / "other.wav", dry[:, : 3 * RATE])
    code, _, err = run(capsys, "render", other, out / "song" / "estimate.json", "-o", tmp_path / "other-out.wav")
    assert code == 0, err
    np.testing.assert_array_equal(read_audio(tmp_path / "other-out.wav")[0],
                                  reference_render(doc["candidates"][0]["preset"], dry[:, : 3 * RATE], RATE))


def test_an_early_shorter_mono_wet_is_estimated_on_the_overlap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    """The wet starts 0.7 s into the dry (its start trimmed) and ends 0.5 s before it: the dry is
    rendered from its start (the processors' state as it was) and scored on the overlap."""
    dry = music(6.0)[None]
    shift = int(0.7 * RATE)
    wet = late(master(dry), -shift, -int(0.5 * RATE))
    wet_path, dry_path = write(tmp_path / "w.wav", wet), write(tmp_path / "d.wav", dry)
    code, text, err = run(capsys, "estimate", wet_path, "--dry", dry_path, "--model", "eq", "--samples", 2, "--refine", 0,
                          "--no-audio", "-o", tmp_path / "out", "--json")
    assert code == 0, err
    doc = json.loads(text)
    assert doc["alignment"]["offset_samples"] == -shift and doc["channels"]["scored"] == "mono"
    assert doc["alignment"]["overlap"]["dry_start_seconds"] == pytest.approx(0.7, abs=1 / RATE)
    assert doc["analysis"]["seconds"] == pytest.approx(wet.shape[1] / RATE, abs=1e-3)
    rendered = reference_render(doc["candidates"][0]["preset"], dry, RATE)[:, shift : shift + wet.shape[1]]
    expected = losses.LogMelLoss(RATE)(torch.from_numpy(rendered)[None], torch.from_numpy(wet)[None]).item()
    assert doc["candidates"][0]["loss"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("rate, offset", [(44100, 302), (48000, -12_345)])
def test_the_network_analyses_the_wets_overlap_at_the_tasks_rate(rate: int, offset: int) -> None:
    """What the network sees of a late (early), longer stereo wet: the wet's own samples on the
    overlap, mixed to mono and at 22050 Hz, against scipy's polyphase resampling of that stretch
    cut by hand, below 9 kHz (the resamplers' transition bands differ above; edges left out:
    there they see different context). The overlaps start on the 22050 Hz grid (an odd offset
    at 44.1 kHz starts half a sample away: the analysis takes the nearest)."""
    from afxest.estimate import Recording, read_inputs
    from afxest.tasks import get_task

    dry = np.stack([music(6.0, rate, seed=1), music(6.0, rate, seed=2)])
    wet = late(master(dry, rate), offset, int(0.3 * rate))
    task = get_task("master")
    inputs = read_inputs(Recording(Path("w.wav"), wet, rate), Recording(Path("d.wav"), dry, rate), task)
    stretch = wet[:, max(0, offset) : max(0, offset) + dry.shape[1] - max(0, -offset)].mean(axis=0)
    expected = signal.resample_poly(stretch.astype(np.float64), task.sample_rate, rate)
    analysed = inputs.wet_x
    assert abs(analysed.shape[0] - expected.shape[0]) <= 1
    n = min(analysed.shape[0], expected.shape[0])
    below = signal.butter(8, 9000, fs=task.sample_rate, output="sos")
    error = signal.sosfiltfilt(below, analysed[:n] - expected[:n])[2000 : n - 2000]
    assert 10 * np.log10(np.sum(expected[2000 : n - 2000] ** 2) / np.sum(error**2)) > 60


def shelf_pair(folder: Path) -> tuple[np.ndarray, Path, Path]:
    """A 5 s mono pair at 22050 Hz, the wet a high shelf of pedalboard's: the dry (1, T) and the two files."""
    dry = music(5.0, 22050)[None]
    shelf = pedalboard.Pedalboard([pedalboard.HighShelfFilter(cutoff_frequency_hz=1500.0, gain_db=8.0, q=0.8)])
    return dry, write(folder / "w.wav", shelf(dry, 22050.0), 22050), write(folder / "d.wav", dry, 22050)


def test_a_refinement_worse_than_its_start_is_not_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """A refinement that ends far from the wet (here: every refined setting pushed to the edge of
    its range) loses to its start by the real renderer, and the start is reported."""
    import afxest.search

    real = afxest.search.refine

    def astray(*args, **kwargs):
        out = real(*args, **kwargs)
        out.z[:] = 1.0
        return out

    monkeypatch.setattr(afxest.search, "refine", astray)
    dry, wet_path, dry_path = shelf_pair(tmp_path)
    code, text, err = run(capsys, "estimate", wet_path, "--dry", dry_path, "--model", "eq", "--samples", 2,
                          "--refine", 5, "--no-audio", "-o", tmp_path / "out", "--json")
    assert code == 0, err
    searched = [c for c in json.loads(text)["candidates"] if "refinement" in c]
    assert searched
    for c in searched:
        record = c["refinement"]
        assert record["applied"] is False and record["loss_refined"] > c["loss"]
        assert all(e["gain_db"] < 10.0 for e in c["preset"]["effects"])  # not the pushed settings
        rendered = reference_render(c["preset"], dry, 22050)
        expected = losses.LogMelLoss(22050)(torch.from_numpy(rendered)[None], torch.from_numpy(read_audio(wet_path)[0])[None])
        assert c["loss"] == pytest.approx(expected.item(), rel=1e-4)


def test_the_master_example_with_another_excerpts_dry_is_refused(tmp_path: Path, capsys) -> None:
    """The README's master example given the render example's dry (another excerpt, whose
    GCC-PHAT peak, 0.054, passed the old line of 0.05): one line on stderr, exit 2, nothing
    written."""
    from afxest.examples import __file__ as examples_init

    examples = Path(examples_init).parent
    code, out, err = run(capsys, "estimate", examples / "master-wet.flac", "--dry", examples / "dry.flac",
                         "-o", tmp_path / "out", "--no-progress")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "does not match" in lines[0] and "coherence" in lines[0], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_the_loudest_stretch_is_found_on_its_grid() -> None:
    """The excerpt the alignment correlates: the most energetic stretch on a grid of a sixth of
    its length, against every grid point's energy summed directly (lengths with and without a
    remainder past whole grid steps, a loud burst placed at random)."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        frames, length = int(rng.integers(50, 3000)), int(rng.integers(1, 600))
        x = (0.01 * rng.standard_normal(frames)).astype(np.float32)
        at = int(rng.integers(0, frames))
        x[at : at + int(rng.integers(1, 300))] *= 100
        hop = max(1, length // 6)
        starts = range(0, frames - length + 1, hop)
        expected = max(starts, key=lambda s: np.square(x[s : s + length], dtype=np.float64).sum()) if frames > length else 0
        assert _loudest(x, length) == expected
