"""``afxest estimate``: checked against references built here independently (pedalboard plugins
from the JSON values, the losses recomputed, numpy's quantiles, the posterior's log-density
from the checkpoint's weights), on tiny real checkpoints trained once per module.

Every test calls :func:`afxest.cli.main` in-process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pedalboard
import pytest
import soundfile
import torch

from afxest import losses
from afxest.audio import read_audio, read_mono, resample, to_mono
from afxest.choices import EFFORTS
from afxest.cli import main
from afxest.data import procedural_music
from afxest.tasks import TASKS
from afxest.train import TrainConfig, train
from reference import cookbook, reference_render  # tests/reference.py


def si_sdr_numpy(estimate: np.ndarray, reference: np.ndarray) -> float:
    """SI-SDR in dB (Le Roux et al. 2019) in float64 numpy, an independent reference."""
    s, e = reference.astype(np.float64), estimate.astype(np.float64)
    target = (e @ s) / (s @ s) * s
    return float(10 * np.log10((target @ target) / ((target - e) @ (target - e))))

SR = 22050
FM_SR = 44100

def write(path: Path, audio: np.ndarray, rate: int) -> Path:
    subtype = "PCM_24" if path.suffix == ".flac" else "FLOAT"
    soundfile.write(path, np.atleast_2d(audio).T, rate, subtype=subtype)
    return path


def music(seconds: float, rate: int = SR, seed: int = 0) -> np.ndarray:
    return procedural_music(np.random.default_rng(seed), int(round(seconds * rate)), rate)


def shelf(x: np.ndarray, rate: int = SR) -> np.ndarray:
    board = pedalboard.Pedalboard([pedalboard.HighShelfFilter(cutoff_frequency_hz=1500.0, gain_db=8.0, q=0.8)])
    return board(np.atleast_2d(x).astype(np.float32), float(rate))


def fm_tone(index: float, ratio: float, frames: int) -> np.ndarray:
    """DAFx Eq. 19 written out here: sin(2 pi 110 t + I sin(2 pi 110 ratio t))."""
    t = np.arange(frames) / FM_SR
    return np.sin(2 * np.pi * 110 * t + index * np.sin(2 * np.pi * 110 * ratio * t)).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Path]:
    """Tiny real checkpoints: one training step each."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, task, estimator in (("eq", "eq", "posterior"), ("fm", "fm", "posterior"), ("fm_det", "fm", "deterministic")):
        run = root / name
        train(
            TrainConfig(task=task, out=str(run), estimator=estimator, max_steps=1, batch_size=2, val_items=2,
                        val_every=1, checkpoint_every=1),
            log=lambda _m: None,
        )
        out[name] = run / "best.pt"
    return out


@pytest.fixture(autouse=True)
def _isolated_user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 5 s mono dry at the eq task's rate and its wet (one pedalboard high shelf)."""
    root = tmp_path_factory.mktemp("pair")
    x = music(5.0)
    return write(root / "song.wav", shelf(x), SR), write(root / "dry.wav", x, SR)


def run(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


def physical(doc: dict[str, Any], name: str) -> list[float]:
    """The physical values of ``<index>.<type>.<param>`` over the candidates, read from the presets."""
    index, kind, param = name.split(".")
    values = []
    for c in doc["candidates"]:
        preset = c["preset"]
        procs = ([preset["source"]] if preset["source"] else []) + preset["effects"]
        assert procs[int(index)]["type"] == kind
        values.append(procs[int(index)][param])
    return values


# ---------------------------------------------------------------------------------------------
# with a dry file


def test_top_candidate_rerenders_and_its_loss_is_the_reported_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], pair: tuple[Path, Path]
) -> None:
    wet, dry = pair
    # --refine 10: a short search (its steps are not this test's subject), with the default keep
    code, out, err = run(capsys, "estimate", wet, "--dry", dry, "--model", models["eq"], "-o", tmp_path, "--json", "--samples", 6,
                         "--refine", 10)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1  # stdout: one JSON document per input and nothing else
    doc = json.loads(lines[0])
    assert doc == json.loads((tmp_path / "song" / "estimate.json").read_text())
    assert doc["format"] == "afxest-estimate/1" and doc["task"] == "eq" and doc["ranked_by"] == "log_mel"
    assert doc["model"]["sha256"] == hashlib.sha256(models["eq"].read_bytes()).hexdigest()
    assert doc["sample_rate"] == SR and doc["wet"] == str(wet) and doc["dry"] == str(dry)
    assert doc["entropy_bits_per_dim"] <= 0  # a density on [0, 1]^d
    candidates = doc["candidates"]
    # the 6 draws and the search's candidates (a reference exists: the search is on)
    # the draws and at most `keep` search candidates (searches ending on one setting give one)
    assert 7 <= len(candidates) <= 6 + EFFORTS["default"].keep
    assert [c["rank"] for c in candidates] == list(range(1, len(candidates) + 1))
    assert 1 <= sum("refinement" in c for c in candidates) <= EFFORTS["default"].keep
    assert [c["loss"] for c in candidates] == sorted(c["loss"] for c in candidates)
    assert candidates[0]["audio"] == "candidate-1.wav" and all(c["audio"] is None for c in candidates[1:])
    assert sorted(p.name for p in (tmp_path / "song").iterdir()) == ["candidate-1.wav", "estimate.json"]
    assert "ranked by log_mel" in err  # the table went to stderr

    # the written audio is pedalboard on the dry, and nothing else
    dry_audio, _ = read_audio(dry)
    wet_audio, _ = read_audio(wet)
    written, rate = read_audio(tmp_path / "song" / "candidate-1.wav")
    assert rate == SR
    np.testing.assert_array_equal(written, reference_render(candidates[0]["preset"], dry_audio, SR))
    # ... and it is what was scored: every candidate's loss, recomputed independently
    # (and its match: SI-SDR and log-mel against the wet, the dry's own as the baseline)
    mel = losses.LogMelLoss(SR)
    y = torch.from_numpy(wet_audio)[None]
    for c in candidates:
        y_hat = torch.from_numpy(reference_render(c["preset"], dry_audio, SR))[None]
        assert mel(y_hat, y).item() == pytest.approx(c["loss"], rel=1e-5)
        assert c["log_mel"] == pytest.approx(c["loss"], rel=1e-12)
        # float32 against float64: compared as error-to-signal energy ratios, whose float32
        # rounding floor (about 1e-9: SI-SDR near 90 dB, which the search reaches here) is absolute
        expected = si_sdr_numpy(y_hat[0, 0].numpy(), wet_audio[0])
        assert 10 ** (-c["si_sdr"] / 10) == pytest.approx(10 ** (-expected / 10), rel=2e-3, abs=1e-9)
    x = torch.from_numpy(dry_audio)[None]
    assert doc["baseline"]["log_mel"] == pytest.approx(mel(x, y).item(), rel=1e-5)
    assert doc["baseline"]["si_sdr"] == pytest.approx(si_sdr_numpy(dry_audio[0], wet_audio[0]), abs=1e-3)
    assert "the dry itself (baseline)" in err and "SI-SDR" in err

    # `afxest render DRY ESTIMATE` renders rank 1: the same file
    code, _, err = run(capsys, "render", dry, tmp_path / "song" / "estimate.json", "-o", tmp_path / "r.wav")
    assert code == 0, err
    np.testing.assert_array_equal(read_audio(tmp_path / "r.wav")[0], written)

    # the summary: numpy's statistics over the candidates' physical values
    assert set(doc["summary"]) == set(TASKS["eq"].model.names)
    for name, stats in doc["summary"].items():
        v = np.array(physical(doc, name))
        q05, q50, q95 = np.quantile(v, [0.05, 0.5, 0.95])
        assert stats == {"mean": v.mean(), "std": v.std(), "q05": q05, "q50": q50, "q95": q95}


def test_seed_makes_estimates_reproducible(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], pair: tuple[Path, Path]
) -> None:
    wet, dry = pair
    docs = []
    for k, seed in enumerate((3, 3, 4)):
        code, out, err = run(capsys, "estimate", wet, "--dry", dry, "--model", models["eq"], "-o", tmp_path,
                             "--json", "--no-audio", "--seed", seed, "--samples", 4, "--force", "--effort", "fast",
                             "--refine", 10)  # the search is seeded too: a short one shows it
        assert code == 0, err
        docs.append(json.loads(out))
    assert docs[0] == docs[1]
    assert docs[0]["candidates"] != docs[2]["candidates"]
    assert all(c["audio"] is None for c in docs[0]["candidates"])
    assert not (tmp_path / "song" / "candidate-1.wav").exists()


def test_search_adds_refined_candidates_and_refine_0_turns_it_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], pair: tuple[Path, Path]
) -> None:
    """--refine 0: the draws alone (today's estimate); --refine N: the same draws plus the
    search's candidates, refined for at most N Adam steps (and the Levenberg-Marquardt trials
    after them), scored like the draws."""
    wet, dry = pair
    base = ["estimate", wet, "--dry", dry, "--model", models["eq"], "--json", "--samples", 4, "--no-audio"]
    code, out, err = run(capsys, *base, "-o", tmp_path, "--refine", 0)
    assert code == 0, err
    plain = json.loads(out)
    assert len(plain["candidates"]) == 4 and not any("refinement" in c for c in plain["candidates"])
    assert plain["analysis"]["search"] is None and plain["analysis"]["refine_steps"] == 0
    (tmp_path / "r").mkdir()
    code, out, err = run(capsys, *base, "-o", tmp_path / "r", "--refine", 8)
    assert code == 0, err
    refined = json.loads(out)
    records = [c for c in refined["candidates"] if "refinement" in c]
    assert 1 <= len(records) <= EFFORTS["default"].keep
    for c in records:
        r = c["refinement"]
        assert r["steps"] <= 8 + EFFORTS["default"].dry_trials and r["loss_after"] == c["loss"] and r["proposal"] in ("posterior", "analysis")
    drawn = [c for c in refined["candidates"] if "refinement" not in c]
    assert [c["preset"] for c in drawn] == [c["preset"] for c in plain["candidates"]]
    assert refined["candidates"][0]["loss"] <= plain["candidates"][0]["loss"]
    assert refined["analysis"]["search"]["step_cap"] == 8
    assert min(c["loss"] for c in records) < plain["candidates"][0]["loss"]  # it actually improves


def test_ddsp_engine_scores_with_the_differentiable_processors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], pair: tuple[Path, Path]
) -> None:
    """The written audio is the top preset's biquads as scipy's float64 recursion of the RBJ
    cookbook (tests/reference.py), and its loss is close to pedalboard's rendering's."""
    import scipy.signal

    wet, dry = pair
    code, out, err = run(capsys, "estimate", wet, "--dry", dry, "--model", models["eq"], "-o", tmp_path, "--json",
                         "--samples", 3, "--engine", "ddsp", "--refine", 10)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["analysis"]["engine"] == "ddsp"
    dry_audio, _ = read_audio(dry)
    top = doc["candidates"][0]
    expected = dry_audio.astype(np.float64)
    for effect in top["preset"]["effects"]:
        b, a = cookbook(effect["type"], effect["cutoff_frequency_hz"], effect["gain_db"], effect["q"], SR)
        expected = scipy.signal.lfilter(b, a, expected, axis=-1)
    np.testing.assert_allclose(read_audio(tmp_path / "song" / "candidate-1.wav")[0], expected, rtol=0, atol=1e-6)
    # ddsp matches pedalboard closely, so the loss is close to pedalboard's
    y_hat = torch.from_numpy(reference_render(top["preset"], dry_audio, SR))[None]
    loss = losses.LogMelLoss(SR)(y_hat, torch.from_numpy(read_audio(wet)[0])[None]).item()
    assert top["loss"] == pytest.approx(loss, rel=1e-3, abs=1e-4)


def test_long_stereo_file_is_analysed_in_windows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """23 s of stereo at 44.1 kHz: the network reads the mono mix in blocks, resampled per block,
    in windows of 5 s (the last one 8 s), a silent window skipped; the candidates are rendered
    and scored at the files' 44.1 kHz in stereo, on windows of the same length: the pooled loss is
    the mean over windows and channels of the loss at 44.1 kHz."""
    rate = 44100
    x = music(23.0, rate)
    x[10 * rate : 15 * rate] = 0.0  # window 3 (10-15 s) silent
    dry = np.stack([x, 0.5 * x])
    wet_path = write(tmp_path / "long.flac", shelf(dry, rate), rate)  # FLAC: another format
    dry_path = write(tmp_path / "long-dry.wav", dry, rate)
    # several blocks (pedalboard's buffer multiple), in reading and in rendering (afxest.engines
    # reads afxest.audio's)
    monkeypatch.setattr("afxest.audio.READ_BLOCK", 5 * 8192)
    monkeypatch.setattr("afxest.scoring.READ_BLOCK", 5 * 8192)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = run(capsys, "estimate", wet_path, "--dry", dry_path, "--model", models["eq"], "-o", out_dir,
                         "--json", "--samples", 5, "--refine", 0)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["analysis"]["windows"] == 4 and doc["analysis"]["windows_used"] == 3
    assert doc["analysis"]["seconds"] == pytest.approx(23.0)
    assert doc["sample_rate"] == rate and doc["channels"] == {"analysed": "mono mix", "scored": "stereo"}
    assert doc["alignment"]["offset_samples"] == 0

    wet_m = resample(to_mono(read_audio(wet_path)[0]), rate, SR, "fast")[0]
    np.testing.assert_array_equal(read_mono(wet_path, SR, "fast").samples, wet_m)
    # reference: the whole stereo files, rendered by pedalboard at their own rate
    wet_s = read_audio(wet_path)[0]
    clip = 5 * rate
    windows = [(0, clip), (clip, 2 * clip), (3 * clip, wet_s.shape[1])]  # (2 clip, 3 clip) is silent
    mel = losses.LogMelLoss(rate)
    for c in doc["candidates"]:
        assert c["preset"]["sample_rate"] == rate
        rendered = reference_render(c["preset"], dry, rate)
        per_window = [
            mel(torch.from_numpy(rendered[:, a:b])[None], torch.from_numpy(wet_s[:, a:b])[None]).item()
            for a, b in windows
        ]
        assert c["loss"] == pytest.approx(np.mean(per_window), rel=1e-5)
    # the audio: the preset on the dry file itself (44.1 kHz, stereo)
    written, written_rate = read_audio(out_dir / "long" / "candidate-1.wav")
    assert written_rate == rate and written.shape == dry.shape
    np.testing.assert_array_equal(written, reference_render(doc["candidates"][0]["preset"], dry, rate))


# ---------------------------------------------------------------------------------------------
# without a dry file


def test_effect_task_without_dry_ranks_by_log_density(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], pair: tuple[Path, Path]
) -> None:
    from afxest.nn.estimator import Estimator, EstimatorConfig

    wet, _ = pair
    code, out, err = run(capsys, "estimate", wet, "--model", models["eq"], "-o", tmp_path, "--json", "--samples", 5)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ranked_by"] == "log_prob" and doc["dry"] is None
    lp = [c["log_prob"] for c in doc["candidates"]]
    assert lp == sorted(lp, reverse=True)
    assert all(c["loss"] is None and c["audio"] is None for c in doc["candidates"])
    assert [p.name for p in (tmp_path / "song").iterdir()] == ["estimate.json"]  # no dry: nothing to render

    # reference: the checkpoint's weights, the encoder on the wet, the head's log_prob in float64
    state = torch.load(models["eq"], weights_only=True)
    task = TASKS["eq"]
    net = Estimator(task, EstimatorConfig(**state["estimator"]))
    net.load_state_dict(state["model"])
    net.eval()
    with torch.no_grad():
        h = net.encoder(torch.from_numpy(read_audio(wet)[0])[None]).double()
        ranges = task.model.ranges
        names = task.model.names
        z = torch.tensor(
            [[r.to_normalised(v) for r, v in zip(ranges, values)] for values in zip(*(physical(doc, n) for n in names))],
            dtype=torch.float64,
        )
        expected = net.head.double().log_prob(z[None], h)[0]
    np.testing.assert_allclose(lp, expected.numpy(), rtol=0, atol=1e-4)


def test_synth_task_ranks_against_the_wet_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path]
) -> None:
    frames = int(0.3 * FM_SR)  # two 125 ms windows (the rest is unused)
    wet = write(tmp_path / "tone.wav", fm_tone(2.0, 3.0, frames), FM_SR)
    code, out, err = run(capsys, "estimate", wet, "--model", models["fm"], "-o", tmp_path, "--json", "--samples", 4, "--audio-all",
                         "--effort", "fast")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ranked_by"] == "sot_mrstft" and doc["analysis"]["windows"] == 2
    sot = losses.SpectralOTLoss(FM_SR, unit="bins")
    mrstft = losses.MRSTFTRevisitedLoss()
    y = torch.from_numpy(read_audio(wet)[0])
    clip = int(0.125 * FM_SR)
    for c in doc["candidates"]:
        assert c["preset"]["source"]["type"] == "fm" and c["preset"]["effects"] == []
        audio, rate = read_audio(tmp_path / "tone" / c["audio"])
        assert rate == FM_SR and audio.shape == (1, clip)
        # the written audio is the synth of the preset's values (Eq. 19 written out above)
        s = c["preset"]["source"]
        np.testing.assert_allclose(audio[0], fm_tone(s["modulation_index"], s["frequency_ratio"], clip), atol=2e-5)
        a = torch.from_numpy(audio)[None]
        per_window = [(sot(a, y[None, :, k * clip : (k + 1) * clip]) + mrstft(a, y[None, :, k * clip : (k + 1) * clip])).item()
                      for k in range(2)]
        assert c["loss"] == pytest.approx(np.mean(per_window), rel=1e-4)
    assert [c["loss"] for c in doc["candidates"]] == sorted(c["loss"] for c in doc["candidates"])


def test_point_estimator_gives_one_candidate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path]
) -> None:
    wet = write(tmp_path / "tone.wav", fm_tone(1.0, 2.0, int(0.125 * FM_SR)), FM_SR)
    code, out, err = run(capsys, "estimate", wet, "--model", models["fm_det"], "-o", tmp_path, "--json", "--refine", "0")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["candidates"]) == 1 and doc["candidates"][0]["log_prob"] is None
    assert doc["entropy_bits_per_dim"] is None and doc["analysis"]["estimator"] == "deterministic"
    # the summary of one candidate is that candidate's values, quantiles included
    source = doc["candidates"][0]["preset"]["source"]
    for name, stats in doc["summary"].items():
        value = source[name.split(".")[-1]]
        assert stats == {"mean": value, "std": 0.0, "q05": value, "q50": value, "q95": value}


# ---------------------------------------------------------------------------------------------
# batches and bad input


@pytest.mark.parametrize("where", [0, 1])
def test_batch_goes_on_after_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], where: int
) -> None:
    """A wet that is not audio, first (its pair decoded ahead, while the model loads:
    estimate.read_ahead) or in the middle of the batch: one line naming it, the others
    estimated."""
    dry_dir = tmp_path / "dry"
    dry_dir.mkdir()
    wets = []
    for k in range(2):
        x = music(1.0, seed=k)
        write(dry_dir / f"t{k}.wav", x, SR)
        wets.append(write(tmp_path / f"t{k}.wav", shelf(x), SR))
    write(dry_dir / "bad.wav", music(1.0, seed=5), SR)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = run(capsys, "estimate", *wets[:where], bad, *wets[where:], "--dry", dry_dir, "--model", models["eq"],
                         "-o", out_dir, "--json", "--samples", 2, "--refine", 0)
    assert code == 2
    docs = [json.loads(line) for line in out.splitlines()]
    assert [Path(d["wet"]).name for d in docs] == ["t0.wav", "t1.wav"]
    assert [Path(d["dry"]).name for d in docs] == ["t0.wav", "t1.wav"]  # matched by name in the folder
    errors = [line for line in err.splitlines() if line.startswith("afxest: error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "Traceback" not in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["t0", "t1"]


def _bad_cases(tmp: Path, models: dict[str, Path], pair: tuple[Path, Path]) -> dict[str, tuple[list[Any], str]]:
    wet, dry = pair
    x = music(5.0)
    nan = x.copy()
    nan[100] = np.nan
    other_song = write(tmp / "other-dry.wav", music(5.0, seed=7), SR)
    state = torch.load(models["eq"], weights_only=True)
    state["task"]["clip_seconds"] = 4.0
    torch.save(state, tmp / "other.pt")
    (tmp / "corrupt.pt").write_bytes(b"\x00garbage" * 100)
    (tmp / "empty.wav").write_bytes(b"")
    soundfile.write(tmp / "nothing.wav", np.zeros((0, 1), np.float32), SR)
    m = ["--model", models["eq"]]
    return {
        "missing wet": ([tmp / "nope.wav", *m], "no such file"),
        "unreadable wet": ([tmp / "empty.wav", *m], "not a readable audio file"),
        "no samples": ([tmp / "nothing.wav", *m], "contains no audio"),
        "NaN wet": ([write(tmp / "nan.wav", nan, SR), *m], "non-finite"),
        "silent wet": ([write(tmp / "silent.wav", np.zeros(SR), SR), *m], "silent"),
        "too short": ([write(tmp / "short.wav", x[:2000], SR), *m], "at least"),
        "dry of another song": ([wet, "--dry", other_song, *m], "does not match"),
        "silent dry": ([wet, "--dry", write(tmp / "silent-dry.wav", np.zeros(5 * SR), SR), *m], "is silent"),
        "corrupt model": ([wet, "--model", tmp / "corrupt.pt"], "not an afxest checkpoint"),
        "incompatible model": ([wet, "--model", tmp / "other.pt"], "incompatible model"),
        "unknown model": ([wet, "--model", "nosuchmodel"], "unknown model 'nosuchmodel'"),
        "out is a file": ([wet, *m, "-o", wet], "output must be a folder"),
        "dry count": ([wet, wet, "--dry", dry, "--dry", dry, "--dry", dry, *m], "3 dry files"),
        "audio flags": ([wet, *m, "--audio-all", "--no-audio"], "not both"),
        "refine without dry": ([wet, *m, "--refine", 2], "needs a dry file"),
        "same stem": ([wet, write(tmp / "song.flac", x, SR), *m], "share the name"),
        "bad samples": ([wet, *m, "--samples", 0], "samples"),
    }


CASES = [
    "missing wet", "unreadable wet", "no samples", "NaN wet", "silent wet", "too short", "dry of another song",
    "silent dry", "corrupt model", "incompatible model", "unknown model", "out is a file", "dry count",
    "audio flags", "refine without dry", "same stem", "bad samples",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], pair: tuple[Path, Path], case: str
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    args, message = _bad_cases(inputs, models, pair)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if "-o" not in args:
        args = [*args, "-o", out_dir]
    before = snapshot(tmp_path)
    code, out, err = run(capsys, "estimate", *args, "--samples" if "--samples" not in args else "--seed", 2)
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("afxest") and message in lines[0], err
    assert snapshot(tmp_path) == before


def test_existing_estimate_needs_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], pair: tuple[Path, Path]
) -> None:
    wet, dry = pair
    args = ["estimate", wet, "--dry", dry, "--model", models["eq"], "-o", tmp_path, "--samples", 2, "--refine", 0]
    assert run(capsys, *args)[0] == 0
    before = snapshot(tmp_path)
    code, _, err = run(capsys, *args)
    assert code == 2 and "already exists (use --force" in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before
    assert run(capsys, *args, "--force", "--seed", 9)[0] == 0
    assert json.loads((tmp_path / "song" / "estimate.json").read_text())["analysis"]["seed"] == 9


def test_force_removes_audio_of_ranks_the_new_estimate_does_not_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], pair: tuple[Path, Path]
) -> None:
    wet, dry = pair
    args = ["estimate", wet, "--dry", dry, "--model", models["eq"], "-o", tmp_path, "--samples", 3, "--refine", 0]
    assert run(capsys, *args, "--audio-all")[0] == 0
    folder = tmp_path / "song"
    assert sorted(p.name for p in folder.iterdir()) == [
        "candidate-1.wav", "candidate-2.wav", "candidate-3.wav", "estimate.json"]
    # without --force, the earlier run's audio counts as existing output
    code, _, err = run(capsys, *args)
    assert code == 2 and "already exists" in err
    assert run(capsys, *args, "--force")[0] == 0
    assert sorted(p.name for p in folder.iterdir()) == ["candidate-1.wav", "estimate.json"]
    document = json.loads((folder / "estimate.json").read_text())
    assert [c.get("audio") for c in document["candidates"]] == ["candidate-1.wav", None, None]


def test_different_rates_are_resampled_not_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path]
) -> None:
    """A wet at 48 kHz and its dry at 32 kHz: the candidates are measured at the dry's rate, where
    they are rendered (the wet resampled to it), and the audio is written at that rate."""
    x = music(1.0, 48000)
    wet = write(tmp_path / "w.wav", shelf(x, 48000), 48000)
    dry = write(tmp_path / "d.wav", resample(x[None], 48000, 32000)[0], 32000)
    code, out, err = run(capsys, "estimate", wet, "--dry", dry, "--model", models["eq"], "-o", tmp_path, "--json",
                         "--samples", 2, "--refine", 0)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["sample_rate"] == 32000 and doc["alignment"]["offset_samples"] == 0
    wet_at_dry_rate = torch.from_numpy(resample(read_audio(wet)[0], 48000, 32000))[None]
    for c in doc["candidates"]:
        rendered = torch.from_numpy(reference_render(c["preset"], read_audio(dry)[0], 32000))[None]
        assert c["loss"] == pytest.approx(losses.LogMelLoss(32000)(rendered, wet_at_dry_rate).item(), rel=1e-4)
    assert read_audio(tmp_path / "w" / "candidate-1.wav")[1] == 32000  # the dry's own rate


def test_an_internal_failure_in_one_file_exits_1_and_the_batch_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], pair: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import afxest.scoring

    wet, dry = pair
    other = write(tmp_path / "other.wav", read_audio(wet)[0], SR)
    original = afxest.scoring.Scorer.measure

    calls = []

    def failing(self, *args, **kwargs):  # the first file (song.wav) fails inside the library
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(afxest.scoring.Scorer, "measure", failing)
    code, out, err = run(capsys, "estimate", wet, other, "--dry", dry, "--model", models["eq"], "-o", tmp_path,
                         "--json", "--samples", 2, "--refine", 0)
    assert code == 1
    assert (f"afxest: internal error: {wet}: RuntimeError: boom (please report it; set AFXEST_DEBUG=1 for a traceback)"
            in err.splitlines())
    assert [Path(json.loads(line)["wet"]).name for line in out.splitlines()] == ["other.wav"]
    assert not (tmp_path / "song").exists() and (tmp_path / "other" / "estimate.json").exists()


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ({"audio": "best"}, "unknown audio choice 'best' (top, all, none)"),
        ({"engine": "vst"}, "unknown engine 'vst' (pedalboard, ddsp)"),
        ({"effort": "max"}, "unknown effort 'max' (fast, default, best)"),
    ],
)
def test_estimate_options_refuse_unknown_choices(choice: dict[str, str], message: str) -> None:
    from afxest.errors import UserError
    from afxest.estimate import EstimateOptions

    with pytest.raises(UserError) as info:
        EstimateOptions(**choice)
    assert str(info.value) == message


def test_console_script_imports_neither_nnaudio_nor_scipys_heavy_modules(
    tmp_path: Path, models: dict[str, Path], pair: tuple[Path, Path]
) -> None:
    """An estimate with a search imports no nnAudio, sympy or scipy.signal / optimize / stats /
    interpolate (scipy.signal alone 1.7 s on an idle core). numba, which the compiled loops
    need (the filters' recursion included), imports scipy's version and configuration."""
    import subprocess
    import sys

    wet, dry = pair
    code = (
        "import sys; from afxest.cli import main; "
        f"rc = main(['estimate', {str(wet)!r}, '--dry', {str(dry)!r}, '--model', {str(models['eq'])!r}, "
        f"'-o', {str(tmp_path)!r}, '--samples', '3', '--refine', '10', '--no-progress']); "  # a short search: the same imports
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('nnAudio', 'sympy') "
        "or m.startswith(('scipy.signal', 'scipy.optimize', 'scipy.stats', 'scipy.interpolate'))); "
        "print(rc, heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "0 []", result.stderr


def test_windows_cover_an_effect_file_and_whole_clips_of_a_synth() -> None:
    """Windows worked out by hand: an effect task's last window takes the remainder (a file
    shorter than a clip is one window); a synth task uses whole clips, the remainder unused."""
    from afxest.scoring import windows_of

    clip = 110250  # eq: 5 s at 22050 Hz
    assert windows_of(2 * clip + 7, TASKS["eq"]) == [(0, clip), (clip, 2 * clip + 7)]
    assert windows_of(clip - 1, TASKS["eq"]) == [(0, clip - 1)]
    tone = 5512  # fm: 0.125 s at 44100 Hz, rounded half to even
    assert windows_of(3 * tone - 1, TASKS["fm"]) == [(0, tone), (tone, 2 * tone)]


def test_quiet_windows_are_skipped_but_the_loudest_is_always_used() -> None:
    """Constant windows, whose RMS is their level: -60 dBFS is the threshold."""
    from afxest.scoring import usable_windows

    levels_db = [-20.0, -200.0, -70.0, -59.0]
    wet = np.concatenate([np.full(100, 10 ** (db / 20), np.float32) for db in levels_db])
    windows = [(100 * i, 100 * (i + 1)) for i in range(4)]
    assert usable_windows(wet, windows) == [0, 3]
    assert usable_windows(wet[100:300], [(0, 100), (100, 200)]) == [1]  # both quiet: the louder


def test_search_windows_are_spread_over_the_most_common_length() -> None:
    from afxest.scoring import search_windows

    windows = [(0, 10), (10, 20), (20, 30), (30, 40), (40, 55)]
    assert search_windows(windows, [0, 1, 2, 3, 4], 2) == [0, 2]  # length 10: [0, 1, 2, 3]
    assert search_windows(windows, [1, 3, 4], 9) == [1, 3]


def test_search_excerpts_start_a_preroll_before_each_window() -> None:
    from afxest.estimate import search_excerpts

    x = np.arange(1, 11, dtype=np.float32)[None]
    rows = search_excerpts(x, [(0, 3), (5, 8)], 2, 3, "cpu")
    assert rows.shape == (2, 1, 5)
    np.testing.assert_array_equal(rows[:, 0].numpy(), [[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]])
    # stereo: the channels in turn, one per window; at most `length` samples of each window
    stereo = np.stack([x[0], -x[0]])
    rows = search_excerpts(stereo, [(0, 3), (5, 8), (6, 9)], 1, 2, "cpu")
    np.testing.assert_array_equal(rows[:, 0].numpy(), [[0, 1, 2], [-5, -6, -7], [6, 7, 8]])


def test_a_stereo_pair_through_a_reverb_is_refined_on_both_channels_at_once() -> None:
    """The mix chain's reverb feeds each side's tank the channels' sum: its excerpts hold both
    channels (``joint``), and the differentiable chain on the dry's gives pedalboard's wet on
    each span; one channel alone (the excerpts of a chain that treats channels apart) does not."""
    import pedalboard

    from afxest.engines import render_model
    from afxest.estimate import mixes_channels, search_excerpts

    task = TASKS["mix"]
    rate = task.sample_rate
    assert mixes_channels(task) and not mixes_channels(TASKS["master"])
    rng = np.random.default_rng(4)
    dry = (0.1 * rng.standard_normal((2, rate))).astype(np.float32)
    dry[1] *= np.linspace(0.2, 1.0, rate, dtype=np.float32)  # channels that differ
    v = np.full(task.model.dim, 0.5)
    preset = task.model.preset(v, task.name, rate)
    reverb = next(e.params for e in preset.effects if e.type == "reverb")
    wet = pedalboard.Reverb(**reverb)(dry, rate)
    alone = dataclasses.replace(task, model=dataclasses.replace(task.model, processors=task.model.processors[-1:]))
    z = torch.from_numpy(v[-alone.model.dim :][None].repeat(2, 0))
    spans = [(0, rate // 2), (rate // 2, rate)]
    x = search_excerpts(dry, spans, 0, rate // 2, "cpu", joint=True)
    y = search_excerpts(wet, spans, 0, rate // 2, "cpu", joint=True)
    assert x.shape == (2, 2, rate // 2)
    np.testing.assert_allclose(render_model(alone, z, x, sample_rate=rate)[0].numpy(), y[0].numpy(), atol=1e-6)
    apart = search_excerpts(dry, spans, 0, rate // 2, "cpu")
    assert np.abs(render_model(alone, z, apart, sample_rate=rate)[0, 0].numpy() - y[0, 0].numpy()).max() > 1e-3


def test_candidates_rank_by_loss_then_log_density_non_finite_last() -> None:
    from afxest.estimate import Candidates, medoid

    z = np.zeros((4, 2))
    by_loss = Candidates(z, [None] * 4, np.array([9.0, 8.0, 7.0, 6.0]), {"loss": np.array([2.0, np.nan, 1.0, 1.0])})
    assert by_loss.order() == [2, 3, 0, 1]  # the loss wins over the density; ties as made
    by_density = Candidates(z, [None] * 4, np.array([-1.0, np.nan, 3.0, 3.0]))
    assert by_density.order() == [2, 3, 0, 1]
    assert Candidates(z, [None] * 4, None).order() == [0, 1, 2, 3]
    # summed L1 distances 11, 10 and 19 (the second point is nearest the others)
    assert medoid(np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])) == 1


def test_a_library_call_is_refused_what_the_command_line_refuses() -> None:
    """The request checks of the command line, with the dry file named for a library call."""
    from afxest.errors import UserError
    from afxest.estimate import check_request

    with pytest.raises(UserError, match=r"^d\.wav: the fm model estimates a synth, which needs no dry file"):
        check_request(TASKS["fm"], True, None, Path("d.wav"))
    with pytest.raises(UserError, match=r"^--refine needs a dry file for an effect task"):
        check_request(TASKS["eq"], False, 3)
    check_request(TASKS["eq"], False, 0)
    check_request(TASKS["fm"], False, 3)


def test_streamed_pedalboard_windows_are_slices_of_one_call() -> None:
    """The scored audio is exactly pedalboard on the whole dry, decaying tails included."""
    from afxest.scoring import pedalboard_windows, windows_of
    from afxest.presets import parse_preset

    x = music(11.5)
    x[int(6 * SR) :] = 0.0  # a filter tail decaying into denormals
    preset = {"format": "afxest-preset/1", "task": None, "sample_rate": SR, "source": None,
              "effects": [{"type": "high_shelf", "cutoff_frequency_hz": 900.0, "gain_db": 6.0, "q": 2.0},
                          {"type": "compressor", "threshold_db": -30.0, "ratio": 4.0, "attack_ms": 3.0, "release_ms": 80.0}]}
    other = {**preset, "effects": [{**preset["effects"][0], "gain_db": -4.0}, preset["effects"][1]]}
    windows = windows_of(x.shape[0], TASKS["eq"])
    assert windows == [(0, 5 * SR), (5 * SR, x.shape[0])]
    for threads in (1, 3):  # each chain in one thread at a time, whichever
        presets = [parse_preset(p, "t") for p in (preset, other, preset)]
        parts = list(pedalboard_windows(presets, x[None], windows, SR, threads))
        for part in parts:
            assert part.shape[:2] == (3, 1)
        for k, p in enumerate((preset, other, preset)):
            np.testing.assert_array_equal(np.concatenate([part[k, 0] for part in parts]), reference_render(p, x[None], SR)[0])


def test_long_files_are_ranked_on_spread_prerolled_windows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """More usable windows than SCORE_WINDOWS: candidates are scored on that many windows spread
    over the file, each rendered from a pre-roll; the loss equals the task loss of slices of
    pedalboard applied to the whole dry (reference_render) to float32 precision."""
    from afxest.scoring import scored_windows

    assert scored_windows(list(range(10)), 4) == [0, 3, 6, 9]
    assert scored_windows([2, 5], 4) == [2, 5] and scored_windows(list(range(5)), 1) == [2]
    monkeypatch.setattr("afxest.scoring.SCORE_WINDOWS", 2)
    monkeypatch.setattr("afxest.scoring.SCORE_PREROLL_SECONDS", 2.0)
    x = music(20.0)  # four 5 s windows, all usable
    dry = write(tmp_path / "d.wav", x, SR)
    wet = write(tmp_path / "w.wav", shelf(x, SR), SR)
    # a short search: its candidates are scored (and checked) like the draws
    code, out, err = run(capsys, "estimate", wet, "--dry", dry, "--model", models["eq"], "-o", tmp_path, "--json", "--samples", 3,
                         "--effort", "fast", "--refine", 10)
    assert code == 0, err
    doc = json.loads(out)
    assert any("refinement" in c for c in doc["candidates"])
    assert doc["analysis"]["windows_used"] == 4 and doc["analysis"]["windows_scored"] == 2
    loss = losses.LogMelLoss(SR)
    wet_x = torch.from_numpy(read_audio(wet)[0][0])
    clip = 5 * SR
    for c in doc["candidates"]:
        whole = torch.from_numpy(reference_render(c["preset"], x[None], SR)[0])
        per_window = [float(loss(whole[a:a + clip][None, None], wet_x[a:a + clip][None, None])) for a in (0, 3 * clip)]
        assert c["loss"] == pytest.approx(np.mean(per_window), rel=1e-4, abs=1e-7)


def test_threads_follow_the_file_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """One torch thread for short files, every core for files of a minute or more, and
    OMP_NUM_THREADS always wins."""
    from afxest.estimate import LONG_FILE_SECONDS, inference_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr("os.cpu_count", lambda: 3)
        inference_threads(LONG_FILE_SECONDS)
        assert torch.get_num_threads() == 3
        inference_threads(LONG_FILE_SECONDS - 1)
        assert torch.get_num_threads() == 1
        inference_threads(None)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        inference_threads(3600.0)
        inference_threads(1.0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# --plot


def test_plot_is_published_with_the_estimate_and_replaced_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], pair: tuple[Path, Path]
) -> None:
    """estimate.png belongs to the estimate's file set: written with it (eq: one panel, 5.5 x
    4.5 inches at 100 dpi), counted as existing output, and removed by --force without --plot."""
    import matplotlib.image

    wet, dry = pair
    args = ["estimate", wet, "--dry", dry, "--model", models["eq"], "-o", tmp_path, "--samples", 3, "--refine", 0]
    code, _, err = run(capsys, *args, "--plot")
    assert code == 0, err
    folder = tmp_path / "song"
    assert sorted(p.name for p in folder.iterdir()) == ["candidate-1.wav", "estimate.json", "estimate.png"]
    assert json.loads((folder / "estimate.json").read_text())["plot"] == "estimate.png"
    assert matplotlib.image.imread(folder / "estimate.png").shape[:2] == (450, 550)
    assert "estimate.png" in err
    code, _, err = run(capsys, *args)
    assert code == 2 and "already exists" in err
    assert run(capsys, *args, "--force")[0] == 0
    assert sorted(p.name for p in folder.iterdir()) == ["candidate-1.wav", "estimate.json"]
    assert json.loads((folder / "estimate.json").read_text())["plot"] is None


def test_plot_of_a_synth_draws_the_wet_read_from_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """fm --plot: the spectra drawn are those (a Hann-windowed rfft computed here) of the wet
    file's first clip and of rank 1's written audio."""
    from afxest import figures

    drawn = []
    original = figures.plot_estimate
    monkeypatch.setattr(figures, "plot_estimate", lambda *a, **k: drawn.append(original(*a, **k)))
    frames = int(0.3 * FM_SR)
    wet = write(tmp_path / "tone.wav", fm_tone(2.0, 3.0, frames), FM_SR)
    code, _, err = run(capsys, "estimate", wet, "--model", models["fm"], "-o", tmp_path, "--samples", 2,
                       "--refine", 0, "--plot")
    assert code == 0, err
    assert (tmp_path / "tone" / "estimate.png").read_bytes()[:4] == b"\x89PNG"
    clip = int(0.125 * FM_SR)
    window = np.hanning(clip)

    def spectrum(x: np.ndarray) -> np.ndarray:
        return 20 * np.log10(2 * np.abs(np.fft.rfft(x[:clip] * window)) / window.sum() + 1e-12)

    wet_line, rank1_line = drawn[0].axes[0].lines
    np.testing.assert_allclose(wet_line.get_ydata(), spectrum(read_audio(wet)[0][0]), atol=1e-3)
    np.testing.assert_allclose(rank1_line.get_ydata(), spectrum(read_audio(tmp_path / "tone" / "candidate-1.wav")[0][0]), atol=1e-3)
    assert wet_line.get_xdata()[1] == pytest.approx(FM_SR / clip)


def test_plot_without_matplotlib_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], pair: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    wet, dry = pair
    before = snapshot(tmp_path)
    code, out, err = run(capsys, "estimate", wet, "--dry", dry, "--model", models["eq"], "-o", tmp_path / "o", "--plot")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["afxest: error: --plot needs matplotlib, which is not installed (pip install 'afxest[plots]')"]
    assert snapshot(tmp_path) == before


def test_scoring_doctests() -> None:
    import doctest

    import afxest.scoring

    result = doctest.testmod(afxest.scoring, raise_on_error=False)
    assert result.failed == 0 and result.attempted > 0


def test_cpu_workers_follow_omp_num_threads_else_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from afxest.device import cpu_workers

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_workers() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpu_workers() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("chain", ["channels apart, with a latency", "a reverb"])
def test_a_candidates_audio_is_pedalboards_render_of_the_whole_dry_from_the_file_or_as_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chain: str
) -> None:
    """rank 1's audio of a stereo dry: one chain per channel in two threads where every plugin
    treats channels apart (bit for bit the render of the whole file), one chain otherwise; the
    dry read from its file or handed over as already read gives the same file."""
    from afxest.audio import Signal
    from afxest.estimate import render_to_file
    from afxest.presets import parse_preset

    rate = 44100
    x = np.stack([music(2.5, rate, seed=1), music(2.5, rate, seed=2)])  # longer than a READ_BLOCK
    effects = [{"type": "high_shelf", "cutoff_frequency_hz": 2000.0, "gain_db": 5.0, "q": 0.7},
               {"type": "compressor", "threshold_db": -26.0, "ratio": 3.0, "attack_ms": 2.0, "release_ms": 90.0}]
    if chain == "a reverb":
        effects.append({"type": "reverb", "room_size": 0.6, "damping": 0.4, "wet_level": 0.3, "dry_level": 0.8, "width": 1.0})
    else:
        effects.append({"type": "convolution", "latency_samples": 2.0, "impulse_response": [0.1, 0.5, 1.0, -0.3, 0.2]})
    document = {"format": "afxest-preset/1", "task": None, "sample_rate": rate, "source": None, "effects": effects}
    preset = parse_preset(document, "t")
    dry_path = write(tmp_path / "dry.wav", x, rate)
    expected = reference_render(document, x, rate)
    signal = Signal(dry_path, x, rate, rate, 2, x.shape[1])
    written = []
    for threads, dry in (("2", None), ("2", signal), ("1", signal)):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        out = tmp_path / f"out-{threads}-{dry is None}.wav"
        render_to_file(preset, dry_path, out, "pedalboard", TASKS["master"], dry=dry)
        written.append(soundfile.read(out, dtype="float32", always_2d=True)[0].T)
    # the reference's FIR is scipy's (tests/reference.py), pedalboard's differs by rounding
    np.testing.assert_allclose(written[0], expected, rtol=0, atol=1e-6 if chain != "a reverb" else 0)
    for other in written[1:]:  # the file or the samples, one thread or a chain per channel: the same bits
        np.testing.assert_array_equal(other, written[0])
    from afxest.engines import render  # afxest render's whole-file call: a chain per channel or one, the same bits

    whole = []
    for threads in ("2", "1"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        whole.append(render(preset, x, rate, "pedalboard"))
    np.testing.assert_array_equal(whole[0], whole[1])
    # (pedalboard's FFT convolution rounds differently in one call and in blocks)
    np.testing.assert_allclose(whole[0], written[0], rtol=0, atol=1e-6 if chain != "a reverb" else 0)
    # afxest render streams the same blocks: the same file as the estimate's audio, FIR included
    from afxest.render import render_file

    preset_path = tmp_path / "preset.json"
    preset_path.write_text(json.dumps(document))
    for threads in ("2", "1"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        out = render_file(dry_path, preset_path, tmp_path / f"rendered-{threads}.wav", force=True).out
        np.testing.assert_array_equal(soundfile.read(out, dtype="float32", always_2d=True)[0].T, written[0])
