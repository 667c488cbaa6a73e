"""Issue 12, "nothing half-done, nothing unbounded": each row of its table reproduced, and seeded
fuzzing of the preset parser and of the audio-header path. Every case runs the command line
in-process (:func:`afxest.cli.main`) and checks exit code, the one line on stderr, and the
files left behind against expectations computed here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pedalboard
import pytest
import soundfile

from afxest.cli import main
from afxest.data import folder_splits, split_of
from checkpoints import one_step_checkpoint  # tests/checkpoints.py
from reference import reference_render  # tests/reference.py

SR = 22050


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def noise(seconds: float, rate: int = SR, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def wav(path: Path, x: np.ndarray, rate: int = SR, subtype: str = "FLOAT") -> Path:
    soundfile.write(path, np.atleast_2d(x).T, rate, subtype=subtype)
    return path


def preset(effects: list[dict[str, Any]], source: dict[str, Any] | None = None, rate: int = SR) -> dict[str, Any]:
    return {"format": "afxest-preset/1", "task": None, "sample_rate": rate, "effects": effects, "source": source}


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def refused(capsys, tmp_path: Path, doc: Any, fragment: str, *extra: str, text: str | None = None) -> str:
    """Render ``doc`` on a short dry: exit 2, one line containing ``fragment``, nothing written."""
    dry = wav(tmp_path / "dry.wav", noise(0.2))
    path = tmp_path / "p.json"
    path.write_text(text if text is not None else json.dumps(doc))
    before = files(tmp_path)
    code, out, err = run(capsys, "render", dry, path, "-o", tmp_path / "out.wav", *extra)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], err
    assert files(tmp_path) == before
    return lines[0]


PEAK = {"type": "peak", "cutoff_frequency_hz": 1000.0, "gain_db": 6.0, "q": 0.7}


# --- rows 4-7: validation mirrors what the engines render ------------------------------------


@pytest.mark.parametrize("q", [1e-300, 5e-324, 1e-46, 1e-40, 1e39, 0.0099, 100.5])
def test_row4_7_q_the_engines_cannot_render_is_refused_naming_it(capsys, tmp_path: Path, q: float) -> None:
    for engine in ("pedalboard", "ddsp"):
        refused(capsys, tmp_path, preset([{**PEAK, "q": q}]), "effects[0] (peak): q must be", "--engine", engine)


@pytest.mark.parametrize("kind, name", [("peak", "gain_db"), ("low_shelf", "gain_db"), ("high_shelf", "gain_db"),
                                        ("gain", "gain_db"), ("clipping", "threshold_db")])
@pytest.mark.parametrize("level", [-120.0, -110.0, -100.0])
def test_row5_6_levels_at_or_below_juces_silence_floor_are_refused(capsys, tmp_path: Path, kind: str, name: str, level: float) -> None:
    effect = {**PEAK, "type": kind} if kind in ("peak", "low_shelf", "high_shelf") else {"type": kind}
    effect[name] = level
    line = refused(capsys, tmp_path, preset([effect]), f"{name} must be > -100 dB")
    assert line.endswith(f"got {level:g}")


@pytest.mark.parametrize("kind", ["peak", "low_shelf", "high_shelf", "gain", "clipping"])
def test_row6_just_above_the_floor_both_engines_render_and_agree(capsys, tmp_path: Path, kind: str) -> None:
    level = -99.5
    effect = {"type": kind, "gain_db": level} if kind == "gain" else {"type": kind, "threshold_db": level} \
        if kind == "clipping" else {**PEAK, "type": kind, "gain_db": level}
    dry = wav(tmp_path / "dry.wav", noise(0.5))
    (tmp_path / "p.json").write_text(json.dumps(preset([effect])))
    outs = {}
    for engine in ("pedalboard", "ddsp"):
        code, _, err = run(capsys, "render", dry, tmp_path / "p.json", "-o", tmp_path / f"{engine}.wav", "--engine", engine)
        assert code == 0, err
        outs[engine] = soundfile.read(tmp_path / f"{engine}.wav", dtype="float32")[0]
    x = noise(0.5).astype(np.float64)
    g = 10 ** (level / 20)
    if kind == "gain":  # closed form
        reference = x * g
    elif kind == "clipping":
        reference = np.clip(x, -g, g)
    else:  # the plugin, built here (tests/reference.py)
        reference = reference_render(preset([effect]), noise(0.5)[None], SR)[0]
    assert np.abs(outs["pedalboard"]).max() > 0  # not JUCE's silence
    for y in outs.values():
        assert np.isfinite(y).all()
        assert np.abs(y - reference).max() <= 1e-3 * np.abs(reference).max()


def test_row7_ddsp_refuses_an_impulse_response_it_cannot_hold_and_pedalboard_renders_it(capsys, tmp_path: Path) -> None:
    deep = {"type": "peak", "cutoff_frequency_hz": 2.0, "gain_db": -99.0, "q": 0.01}
    refused(capsys, tmp_path, preset([deep]), "effects[0] (peak): with cutoff_frequency_hz 2", "--engine", "ddsp")
    dry = wav(tmp_path / "dry.wav", noise(0.2))
    code, _, err = run(capsys, "render", dry, tmp_path / "p.json", "-o", tmp_path / "pb.wav", "--engine", "pedalboard")
    assert code == 0, err
    expected = pedalboard.PeakFilter(cutoff_frequency_hz=2.0, gain_db=-99.0, q=0.01)(noise(0.2)[None], float(SR))
    assert np.array_equal(soundfile.read(tmp_path / "pb.wav", dtype="float32", always_2d=True)[0].T, expected)


# --- rows 14, 15, 17: the preset parser ------------------------------------------------------


def test_row14_a_synth_shorter_than_one_sample_is_refused(capsys, tmp_path: Path) -> None:
    fm = {"type": "fm", "carrier_hz": 220.0, "amplitude": 0.5, "modulation_index": 1.0, "frequency_ratio": 2.0, "duration_s": 1e-30}
    path = tmp_path / "fm.json"
    path.write_text(json.dumps(preset([], fm)))
    code, _, err = run(capsys, "render", path, "-o", tmp_path / "fm.wav")
    assert code == 2 and "source (fm): duration_s must last at least one sample" in err, err
    assert files(tmp_path) == ["fm.json"]


def test_row15_a_huge_value_is_shortened_in_the_message(capsys, tmp_path: Path) -> None:
    line = refused(capsys, tmp_path, preset([{"type": "x" * 1_000_000}]), "unknown type 'xxxx")
    assert len(line) < 400 and "(1000002 characters)" in line


def test_row17_duplicate_keys_are_refused(capsys, tmp_path: Path) -> None:
    text = ('{"format": "afxest-preset/1", "task": null, "sample_rate": 22050, "effects": '
            '[{"type": "gain", "gain_db": 6.0}], "effects": [], "source": null}')
    refused(capsys, tmp_path, None, "the key 'effects' appears twice", text=text)


# --- rows 8, 10: bounded options ---------------------------------------------------------------


@pytest.mark.parametrize("option, value, fragment", [("--seed", 1180591620717411303424, "--seed"), ("--seed", -1, "--seed"),
                                                     ("--samples", 100000, "--samples")])
def test_row8_10_seed_and_samples_are_bounded(capsys, tmp_path: Path, option: str, value: int, fragment: str) -> None:
    wet = wav(tmp_path / "w.wav", noise(1.0))
    code, _, err = run(capsys, "estimate", wet, option, value, "-o", tmp_path / "out")
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert files(tmp_path) == ["w.wav"]


# --- rows 11, 12: bounds from the header before allocation -----------------------------------


def test_row11_a_truncated_wav_is_reported(capsys, tmp_path: Path) -> None:
    full = wav(tmp_path / "full.wav", noise(5.0), subtype="PCM_24")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: 44 + (len(data) - 44) // 2])
    (tmp_path / "p.json").write_text(json.dumps(preset([{"type": "gain", "gain_db": 1.0}])))
    code, _, err = run(capsys, "render", cut, tmp_path / "p.json", "-o", tmp_path / "o.wav")
    assert code == 2, err
    assert "is truncated: its header announces 5.000 s of audio, the file holds 2.500 s" in err
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("rate", [1, 8, 3999])
def test_row12_a_header_claiming_a_tiny_rate_is_refused_before_reading(capsys, tmp_path: Path, rate: int) -> None:
    path = wav(tmp_path / "slow.wav", noise(5.0), rate=SR, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[24:28] = rate.to_bytes(4, "little")  # fmt chunk: sample rate
    data[28:32] = (rate * 2).to_bytes(4, "little")  # byte rate
    path.write_bytes(bytes(data))
    (tmp_path / "p.json").write_text(json.dumps(preset([{"type": "gain", "gain_db": 1.0}])))
    for argv in (["estimate", path, "-o", tmp_path / "out"], ["render", path, tmp_path / "p.json", "-o", tmp_path / "o.wav"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and f"sample rate {rate} Hz is below the 4000 Hz" in err, err


# --- row 13: synths are streamed, and a WAV's size is bounded --------------------------------


def test_row13_a_synth_is_rendered_in_blocks_equal_to_the_closed_form(capsys, tmp_path: Path, monkeypatch) -> None:
    import afxest.engines

    monkeypatch.setattr(afxest.engines, "SYNTH_BLOCK", 8192)
    sizes: list[int] = []
    real = afxest.engines.synthesise
    monkeypatch.setattr(afxest.engines, "synthesise", lambda *a, **k: sizes.append(a[3]) or real(*a, **k))
    fm = {"type": "fm", "carrier_hz": 220.0, "amplitude": 0.5, "modulation_index": 2.0, "frequency_ratio": 1.5, "duration_s": 1.0}
    (tmp_path / "fm.json").write_text(json.dumps(preset([], fm, rate=44100)))
    code, _, err = run(capsys, "render", tmp_path / "fm.json", "-o", tmp_path / "fm.wav")
    assert code == 0, err
    assert max(sizes) == 8192 and sum(sizes) == 44100
    t = np.arange(44100) / 44100
    expected = 0.5 * np.sin(2 * np.pi * 220 * t + 2.0 * np.sin(2 * np.pi * 330 * t))
    y = soundfile.read(tmp_path / "fm.wav", dtype="float64")[0]
    assert np.abs(y - expected).max() < 1e-6


def test_row13_a_synth_beyond_what_a_wav_holds_is_refused_before_work(capsys, tmp_path: Path) -> None:
    fm = {"type": "fm", "carrier_hz": 220.0, "amplitude": 0.5, "modulation_index": 2.0, "frequency_ratio": 1.5, "duration_s": 3600.0}
    (tmp_path / "fm.json").write_text(json.dumps(preset([], fm, rate=1_000_000)))
    code, _, err = run(capsys, "render", tmp_path / "fm.json", "-o", tmp_path / "fm.wav")
    assert code == 2 and "a WAV file holds at most 4 GiB" in err, err
    assert files(tmp_path) == ["fm.json"]


# --- rows 1-3, 9, 16 and the output folder: estimate ------------------------------------------


@pytest.fixture(scope="module")
def eq_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return one_step_checkpoint(tmp_path_factory.mktemp("eq"), "eq")


def test_row3_an_interrupted_estimate_leaves_nothing_and_a_killed_one_is_swept(
    capsys, tmp_path: Path, monkeypatch, eq_model: Path
) -> None:
    import afxest.estimate

    dry = wav(tmp_path / "dry.wav", noise(5.0, seed=1))
    wet = wav(tmp_path / "song.wav", 0.5 * noise(5.0, seed=1))  # made from the dry
    out = tmp_path / "out"
    real, calls = afxest.estimate.render_to_file, []

    def render_then_signal(*args, **kwargs) -> None:
        real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:  # three candidates complete, then SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(afxest.estimate, "render_to_file", render_then_signal)
    code, _, err = run(capsys, "estimate", wet, "--dry", dry, "--model", eq_model, "--refine", 0, "--samples", 4, "--audio-all", "-o", out)
    assert code == 143 and err.strip().splitlines()[-1] == "afxest: interrupted (SIGTERM)", err
    assert files(out) == []  # no candidate-N.wav without its estimate.json, no temporary file

    # a run killed with SIGKILL cannot clean up: its staging folder stays, hidden, until the next run
    script = (
        "import os, signal, sys; from pathlib import Path; from afxest.audio import OutputSet\n"
        "s = OutputSet(Path(sys.argv[1]) / 'song'); s.path('candidate-1.wav').write_bytes(b'x' * 1000)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(out)], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    left = files(out)
    assert len(left) == 2 and left[0].startswith(".afxest-") and left[0].endswith(".part"), left
    monkeypatch.setattr(afxest.estimate, "render_to_file", real)
    code, _, err = run(capsys, "estimate", wet, "--dry", dry, "--model", eq_model, "--refine", 0, "--samples", 2, "--audio-all", "-o", out)
    assert code == 0, err  # not blocked by the leftovers, and without --force
    assert files(out) == ["song", "song/candidate-1.wav", "song/candidate-2.wav", "song/estimate.json"]


def test_row1_a_full_disk_during_estimate_exits_2_and_leaves_nothing(capsys, tmp_path: Path, monkeypatch, eq_model: Path) -> None:
    import errno

    import afxest.audio

    dry = wav(tmp_path / "dry.wav", noise(5.0, seed=1))
    wet = wav(tmp_path / "song.wav", 0.5 * noise(5.0, seed=1))  # made from the dry

    def full(raw, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(afxest.audio, "_write_bytes", full)
    code, _, err = run(capsys, "estimate", wet, "--dry", dry, "--model", eq_model, "--refine", 0, "--samples", 2, "-o", tmp_path / "out")
    assert code == 2, err
    assert err.strip().splitlines()[-1].endswith("candidate-1.wav: cannot write (No space left on device)"), err
    assert "Traceback" not in err and files(tmp_path / "out") == []


def test_row9_candidates_beyond_the_drys_nyquist_get_no_audio_and_the_estimate_is_written(
    capsys, tmp_path: Path, eq_model: Path
) -> None:
    from afxest.audio import resample

    low = noise(5.0, 4000, seed=1)
    dry = wav(tmp_path / "dry.wav", low, rate=4000)
    wet = wav(tmp_path / "song.wav", 0.5 * resample(low[None], 4000, SR)[0])  # made from the dry, at 22.05 kHz
    code, _, err = run(capsys, "estimate", wet, "--dry", dry, "--model", eq_model, "--refine", 0, "--samples", 40, "--audio-all",
                       "-o", tmp_path / "new" / "nested")  # a missing output folder is created
    assert code == 0, err
    document = json.loads((tmp_path / "new" / "nested" / "song" / "estimate.json").read_text())
    skipped = []
    for c in document["candidates"]:
        above = any(e["cutoff_frequency_hz"] >= 2000 for e in c["preset"]["effects"])
        assert (c["audio"] is None) == above
        assert (tmp_path / "new" / "nested" / "song" / f"candidate-{c['rank']}.wav").exists() == (not above)
        skipped += [c["rank"]] * above
    assert skipped, "the model's draws must include cutoffs above 2 kHz for this test"
    assert f"no audio for candidate{'s' * (len(skipped) > 1)} {', '.join(map(str, skipped))}" in err


def test_row16_a_ranking_that_means_nothing_says_why(capsys, tmp_path: Path, eq_model: Path) -> None:
    """The wet given as its own dry (a silent dry is refused: tests/test_estimate.py)."""
    wet = wav(tmp_path / "song.wav", noise(5.0))
    code, _, err = run(capsys, "estimate", wet, "--dry", wet, "--model", eq_model, "--refine", 0, "--samples", 3, "-o", tmp_path / "out")
    assert code == 0, err
    assert f"warning: {wet}: the ranking by log_mel means nothing: the wet file is also the dry file" in err


def test_train_out_is_created_with_its_parents(tmp_path: Path) -> None:
    from afxest.train import TrainConfig, train

    out = tmp_path / "runs" / "eq" / "first"
    train(TrainConfig(task="eq", max_steps=1, batch_size=2, val_items=2, val_every=1, out=str(out)), log=lambda _m: None)
    assert (out / "last.pt").exists()


# --- the data split of small folders --------------------------------------------------------


def test_a_small_folder_always_has_a_train_and_a_validation_track() -> None:
    for n in range(2, 12):
        for prefix in ("clip", "take", "song"):
            splits = folder_splits([f"{prefix}-{i}.wav" for i in range(n)])
            assert "val" in splits.values() and "train" in splits.values(), splits
    assert folder_splits(["only.wav"]) == {"only.wav": split_of("only.wav")}


def test_a_large_folder_keeps_its_hash_split() -> None:
    names = [f"album/track-{i:03d}.flac" for i in range(180)]
    assert folder_splits(names) == {n: split_of(n) for n in names}


def test_train_on_eight_five_second_clips_and_a_one_file_folder(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AFXEST_CACHE_DIR", str(tmp_path / "cache"))
    music = tmp_path / "music"
    music.mkdir()
    for i in range(8):
        wav(music / f"clip-{i}.wav", noise(5.0, 44100, seed=i), rate=44100)
    code, _, err = run(capsys, "train", "--task", "eq", "--data", music, "--max-steps", 1, "--batch-size", 2,
                       "--val-items", 2, "--out", tmp_path / "run", "--no-progress")
    assert code == 0, err
    val = sum(s == "val" for s in folder_splits([f"clip-{i}.wav" for i in range(8)]).values())
    assert val >= 1 and f", {val} val tracks" in err, err
    one = tmp_path / "one"
    one.mkdir()
    wav(one / "a.wav", noise(5.0))
    code, _, err = run(capsys, "train", "--task", "eq", "--data", one, "--max-steps", 1, "--out", tmp_path / "run1")
    assert code == 2 and "holds 1 audio file; training needs at least 2" in err, err


# --- fuzzing: the preset parser and the audio-header path -------------------------------------


def _mutate(rng: np.random.Generator, value: Any, depth: int = 0) -> Any:
    """A random edit of a decoded JSON value: a key dropped or added, a value replaced by a
    hostile one (extreme numbers, wrong types, long strings), or a part mutated recursively."""
    hostile = [None, True, "", "x" * 5000, [], {}, 0, -1, 1e-300, 5e-324, 1e308, -1e308, 1e39, 1e-40,
               -100.0, -99.9, 0.01, 100.0, 2.0, 11025.0, 2**63, float(rng.uniform(-1e4, 1e4))]
    if isinstance(value, dict) and value and depth < 4:
        key = list(value)[int(rng.integers(len(value)))]
        choice = rng.integers(4)
        out = dict(value)
        if choice == 0:
            del out[key]
        elif choice == 1:
            out[str(rng.choice(["extra", "type", "q", "effects"]))] = hostile[int(rng.integers(len(hostile)))]
        else:
            out[key] = _mutate(rng, value[key], depth + 1)
        return out
    if isinstance(value, list) and value and depth < 4:
        out = list(value)
        i = int(rng.integers(len(out)))
        out[i] = _mutate(rng, out[i], depth + 1)
        return out
    return hostile[int(rng.integers(len(hostile)))]


def _check_run(capsys, argv: list[Any], out: Path, folder: Path) -> int:
    before = files(folder)
    code, stdout, err = run(capsys, *argv)
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err and "afxest: internal error" not in err, err
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and len(err) < 1000, err
        assert files(folder) == before  # nothing written, no temporary file
    else:
        assert out.exists()
        out.unlink()
    return code


def test_fuzz_the_preset_parser(capsys, tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    dry = wav(tmp_path / "dry.wav", noise(0.05))
    base = preset([{**PEAK}, {"type": "low_shelf", "cutoff_frequency_hz": 100.0, "gain_db": 3.0, "q": 0.7},
                   {"type": "compressor", "threshold_db": -20.0, "ratio": 4.0, "attack_ms": 1.0, "release_ms": 50.0},
                   {"type": "gain", "gain_db": 2.0}, {"type": "clipping", "threshold_db": -1.0}])
    codes = []
    for case in range(300):
        doc = base
        for _ in range(int(rng.integers(1, 4))):
            doc = _mutate(rng, doc)
        text = json.dumps(doc)
        if case % 10 == 0:  # broken text: cut short, or a key given twice
            text = text[: int(rng.integers(len(text)))] if case % 20 == 0 else text.replace('"effects"', '"effects": [], "effects"', 1)
        (tmp_path / "p.json").write_text(text)
        engine = "ddsp" if case % 4 == 0 else "auto"
        codes.append(_check_run(capsys, ["render", dry, tmp_path / "p.json", "-o", tmp_path / "o.wav", "--engine", engine],
                                tmp_path / "o.wav", tmp_path))
    assert 0 in codes and 2 in codes  # the cases reach both the renderer and the refusals


def test_fuzz_the_audio_header_path(capsys, tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    (tmp_path / "p.json").write_text(json.dumps(preset([{"type": "gain", "gain_db": 1.0}])))
    sources = [wav(tmp_path / f"src-{s}.wav", noise(0.05), subtype=s) for s in ("PCM_16", "PCM_24", "FLOAT")]
    codes = []
    for case in range(300):
        data = bytearray(sources[case % 3].read_bytes())
        for _ in range(int(rng.integers(1, 4))):
            kind = rng.integers(3)
            if kind == 0:  # a random byte of the header
                data[int(rng.integers(min(64, len(data))))] = int(rng.integers(256))
            elif kind == 1:  # a header field set to an extreme 32-bit value
                at = int(rng.choice([4, 16, 22, 24, 28, 32, 34, 40]))
                data[at : at + 4] = int(rng.choice([0, 1, 8, 0x7FFFFFFF, 0xFFFFFFFF])).to_bytes(4, "little")[: max(0, len(data) - at)]
            else:  # cut short
                del data[int(rng.integers(8, len(data))) :]
        path = tmp_path / "in.wav"
        path.write_bytes(bytes(data))
        codes.append(_check_run(capsys, ["render", path, tmp_path / "p.json", "-o", tmp_path / "o.wav"], tmp_path / "o.wav", tmp_path))
    assert 0 in codes and 2 in codes
