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
from checkpoints import one_step_checkpoint

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
    else:
        reference = outs["pedalboard"]
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
