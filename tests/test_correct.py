"""The correction stage (afxest/correct.py): the graphic equaliser's fit against scipy's
cookbook filters, and an estimate of a wet that the task's chain cannot hold (a detailed
equaliser and a brickwall limiter) against pedalboard's rendering of the answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pedalboard
import pytest
import scipy.signal
import soundfile
import torch

from afxest import correct, losses
from afxest.cli import main
from afxest.data import procedural_music
from reference import cookbook, reference_render  # tests/reference.py

RATE = 22050


def test_the_graphic_equaliser_fits_a_curve_made_by_cookbook_peaks() -> None:
    """A ratio made by scipy's cookbook peaks at other frequencies and widths than the bands'
    is fitted within 0.3 dB RMS where the bands reach, by the fitted gains rendered by scipy."""
    freqs = np.geomspace(30.0, 9000.0, 200)
    target = np.zeros_like(freqs)
    for f0, g, q in ((90.0, 5.0, 1.2), (700.0, -4.0, 2.5), (2500.0, 3.0, 0.8), (6000.0, -6.0, 3.0)):
        b, a = cookbook("peak", f0, g, q, RATE)
        target += 20 * np.log10(np.abs(scipy.signal.freqz(b, a, worN=freqs, fs=RATE)[1]))
    gains, level = correct.fit_bands(freqs, target + 1.5, RATE)
    fitted = np.full_like(freqs, level)
    for c, g in zip(correct.band_centres(RATE), gains):
        b, a = cookbook("peak", c, g, correct.BAND_Q, RATE)
        fitted += 20 * np.log10(np.abs(scipy.signal.freqz(b, a, worN=freqs, fs=RATE)[1]))
    assert np.sqrt(np.mean((fitted - target - 1.5) ** 2)) < 0.3
    assert np.all(np.abs(gains) <= correct.BAND_LIMIT_DB)


def test_the_fir_equaliser_fits_a_known_linear_phase_filter_in_magnitude_and_phase() -> None:
    """A wet made from noise by a known linear-phase FIR (scipy's windowed frequency sampling, 511
    taps, +-10 dB with 1/6-octave detail; its latency compensated but for 40 samples, so that
    the phase is not zero) is fitted by the least-squares FIR: its response, the fit's centring
    taken out, is the known filter's within 0.2 dB and 0.02 rad wherever it is above -30 dB."""
    freqs = np.concatenate([[0.0], np.geomspace(50.0, 10000.0, 40), [RATE / 2]])
    gains = 10 ** (np.random.default_rng(4).uniform(-10, 10, freqs.size) / 20)
    known = scipy.signal.firwin2(511, freqs, gains, fs=RATE)
    x = np.random.default_rng(5).standard_normal((2, 8 * RATE))
    wet = scipy.signal.convolve(x, known[None])[:, 215 : 215 + x.shape[1]]
    taps = correct.fir_taps(RATE)
    fitted = correct.fit_fir([x[:, : 3 * RATE], x[:, 3 * RATE :]], [wet[:, : 3 * RATE], wet[:, 3 * RATE :]], taps)
    grid = np.linspace(0, RATE / 2, 2000, endpoint=False)
    h = scipy.signal.freqz(known, worN=grid, fs=RATE)[1] * np.exp(2j * np.pi * grid * 215 / RATE)
    g = scipy.signal.freqz(fitted, worN=grid, fs=RATE)[1] * np.exp(2j * np.pi * grid * ((taps - 1) // 2) / RATE)
    kept = np.abs(h) > 10 ** (-30 / 20)
    assert kept.mean() > 0.9
    assert np.abs(20 * np.log10(np.abs(g[kept]) / np.abs(h[kept]))).max() < 0.2
    assert np.abs(np.angle(g[kept] / h[kept])).max() < 0.02


@pytest.mark.parametrize("n", [4096, 4097])
def test_welch_segments_give_scipys_welch_and_csd_spectra_and_tukey_its_window(n: int) -> None:
    """The FIR fit's spectra, averaged over segments, are scipy.signal's csd and welch (Hann,
    half overlap, no detrending) up to their scaling: one constant, doubled off DC and Nyquist
    (their one-sided sums); its taper is scipy's Tukey window."""
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((2, 2, 50_000)).astype(np.float32)
    xs, ys = correct.welch_segments(x, n), correct.welch_segments(y, n)
    cross, auto = (np.conj(xs) * ys).mean(axis=1), np.square(np.abs(xs)).mean(axis=1)
    reference_cross = scipy.signal.csd(x, y, nperseg=n, window="hann", detrend=False)[1]
    reference_auto = scipy.signal.welch(x, nperseg=n, window="hann", detrend=False)[1]
    scale = np.full(n // 2 + 1, 2.0)
    scale[0] = 1.0
    if n % 2 == 0:
        scale[-1] = 1.0
    constant = reference_auto[0, 1] / (2 * auto[0, 1])
    np.testing.assert_allclose(reference_cross, constant * scale * cross, rtol=1e-6, atol=1e-9 * np.abs(reference_cross).max())
    np.testing.assert_allclose(reference_auto, constant * scale * auto, rtol=1e-6)
    for m in (5, 100, n - 1):
        np.testing.assert_allclose(correct.tukey(m, 0.5), scipy.signal.windows.tukey(m, 0.5), atol=1e-12)


def test_a_wet_at_a_ceiling_is_told_from_music() -> None:
    music = procedural_music(np.random.default_rng(0), 3 * RATE, RATE)[None]
    limited = pedalboard.Limiter(threshold_db=-8.0, release_ms=50.0)(music.astype(np.float32), RATE)
    assert not correct.at_ceiling(music) and correct.at_ceiling(limited)


def test_the_limiter_step_finds_a_limiter_that_made_the_wet() -> None:
    """A wet made from a rendering by pedalboard's limiter (driven, then a gain) is matched by
    the step's grid far better than by the rendering itself at its best level."""
    rendered = (0.3 * procedural_music(np.random.default_rng(2), 3 * RATE, RATE))[None].astype(np.float32)
    wet = 0.7 * pedalboard.Limiter(threshold_db=-9.0, release_ms=50.0)(rendered * 4.0, RATE)
    mel = losses.LogMelLoss(RATE)

    def loss(ys: list[np.ndarray]) -> float:
        return float(mel(torch.from_numpy(ys[0])[None], torch.from_numpy(wet)[None]))

    scale = float(np.vdot(rendered, wet) / np.vdot(rendered, rendered))
    before = loss([rendered * scale])
    drive, limit, out, after = correct.limiter_step([rendered], [wet], loss, before, RATE)
    assert limit["type"] == "limiter" and after < before / 10
    again = pedalboard.Limiter(threshold_db=limit["threshold_db"], release_ms=limit["release_ms"])(
        rendered * 10 ** (drive / 20), RATE) * 10 ** (out / 20)
    assert loss([again]) == pytest.approx(after, rel=1e-5)


def test_the_dynamics_step_refits_the_compressor_beyond_the_task_ranges(one_thread: None) -> None:
    """A wet made by pedalboard's compressor with time constants that no task range holds
    (attack 150 ms, release 2 s) from a chain whose compressor has a task's (20 ms, 200 ms): the
    compressor the step returns, rendered by pedalboard's own plugins with the step's level,
    gives the loss it reports, far below the chain's, with time constants near the wet's (the
    release beyond the master task's 500 ms); the level gives the wet's RMS; the correction keeps the chain's other effects."""
    dry = (0.5 * procedural_music(np.random.default_rng(4), 4 * RATE, RATE))[None].astype(np.float32)
    wet = pedalboard.Pedalboard([pedalboard.Compressor(threshold_db=-26.0, ratio=4.0, attack_ms=150.0, release_ms=2000.0),
                                 pedalboard.Gain(gain_db=5.0)])(dry, RATE)
    chain = [{"type": "low_shelf", "cutoff_frequency_hz": 200.0, "gain_db": 0.0, "q": 0.7},
             {"type": "compressor", "threshold_db": -20.0, "ratio": 2.0, "attack_ms": 20.0, "release_ms": 200.0},
             {"type": "gain", "gain_db": 3.0}]
    mel = losses.LogMelLoss(RATE).against(torch.from_numpy(wet)[None])

    def render(effects: list[dict[str, Any]]) -> list[np.ndarray]:
        return [reference_render({"effects": effects}, dry, RATE)]

    def loss(ys: list[np.ndarray]) -> float:
        return float(mel(torch.from_numpy(ys[0])[None]))

    before = loss(render(chain))
    index, compressor, level, after = correct.dynamics_step(chain, render, [wet], loss, before)
    assert index == 1 and compressor["type"] == "compressor"
    assert 1000 < compressor["release_ms"] < 4000 and 75 < compressor["attack_ms"] < 300  # the wet's 2 s and 150 ms
    assert after < before / 100
    again = render([chain[0], compressor, chain[2], {"type": "gain", "gain_db": level}])[0]
    assert loss([again]) == pytest.approx(after, rel=1e-5)
    assert 10 * np.log10(np.mean(again.astype(np.float64) ** 2) / np.mean(wet.astype(np.float64) ** 2)) == pytest.approx(0, abs=1e-3)
    found = correct.correct(chain, render, [wet], loss, RATE)
    assert found.dynamics and [e for i, e in enumerate(found.chain) if i != 1] == [chain[0], chain[2]]
    assert loss(render([*found.chain, *found.effects])) == pytest.approx(found.loss_after, rel=1e-5)


def test_a_correction_searched_on_some_excerpts_is_scored_on_all(one_thread: None) -> None:
    """``searched``: the dynamics step's Nelder-Mead renders only the excerpts it names; what it
    finds is kept by its loss on all of them, and the loss the correction reports is that of
    pedalboard's plugins rendering its chain on every excerpt (the wet made by a compressor of
    2 s release, as above, on two excerpts of different music)."""
    rng = np.random.default_rng(6)
    drys = [(0.5 * procedural_music(rng, 3 * RATE, RATE))[None].astype(np.float32) for _ in range(2)]
    made = [pedalboard.Compressor(threshold_db=-26.0, ratio=4.0, attack_ms=150.0, release_ms=2000.0),
            pedalboard.Gain(gain_db=5.0)]
    wets = [pedalboard.Pedalboard(made)(d, RATE) for d in drys]
    chain = [{"type": "compressor", "threshold_db": -20.0, "ratio": 2.0, "attack_ms": 20.0, "release_ms": 200.0}]
    mels = [losses.LogMelLoss(RATE).against(torch.from_numpy(w)[None]) for w in wets]
    asked: list[list[int]] = []

    def render(effects: list[dict[str, Any]], only: list[int] | None = None) -> list[np.ndarray]:
        ids = [0, 1] if only is None else list(only)
        asked.append(ids)
        return [reference_render({"effects": effects}, drys[i], RATE) for i in ids]

    def loss(ys: list[np.ndarray], only: list[int] | None = None) -> float:
        ids = [0, 1] if only is None else list(only)
        return float(np.mean([float(mels[i](torch.from_numpy(y)[None])) for i, y in zip(ids, ys)]))

    found = correct.correct(chain, render, wets, loss, RATE, equalisers=(), searched=[1])
    assert found.dynamics and 1000 < found.chain[0]["release_ms"] < 4000
    assert sum(ids == [1] for ids in asked) >= 20 and sum(ids == [0, 1] for ids in asked) <= 3
    assert loss(render([*found.chain, *found.effects])) == pytest.approx(found.loss_after, rel=1e-5)
    assert found.loss_after < found.loss_before / 20


def test_excerpts_rendered_on_from_the_kept_effects_are_the_whole_chain_in_pedalboard() -> None:
    """The correction's renderer (afxest.engines.ExcerptRenderer) on three excerpts of a stereo
    dry, each from a 0.5 s preroll: chains that start with the kept equaliser (its rendering
    made once, the compressor and what follows run on from it), one with a convolution (latency:
    rendered whole) and one that does not start with it, each the same bits as pedalboard's
    plugins rendering the whole chain on the dry from the preroll (tests/reference.py)."""
    from afxest.correct import kept_prefix
    from afxest.engines import ExcerptRenderer
    from afxest.presets import Processor

    rng = np.random.default_rng(5)
    dry = (0.4 * np.stack([procedural_music(rng, 6 * RATE, RATE) for _ in range(2)])).astype(np.float32)
    spans, preroll = [(0, RATE), (2 * RATE, 3 * RATE + 17), (5 * RATE, 6 * RATE)], RATE // 2
    eq = [{"type": "low_shelf", "cutoff_frequency_hz": 90.0, "gain_db": 4.0, "q": 0.7},
          {"type": "peak", "cutoff_frequency_hz": 2500.0, "gain_db": -6.0, "q": 2.0}]
    compressor = {"type": "compressor", "threshold_db": -24.0, "ratio": 4.0, "attack_ms": 3.0, "release_ms": 80.0}
    h = np.zeros(64)
    h[[0, 9, 40]] = 0.8, 0.3, -0.2
    chains = [
        [*eq, compressor, {"type": "gain", "gain_db": 2.0}, {"type": "clipping", "threshold_db": -3.0}],
        [*eq, {**compressor, "release_ms": 900.0}, {"type": "gain", "gain_db": 1.0}],
        [*eq, compressor, {"type": "convolution", "latency_samples": 20, "impulse_response": h.tolist()}],
        [eq[1], compressor],
        eq,
    ]
    assert kept_prefix(chains[0]) == 2

    def processors(chain: list[dict[str, Any]]) -> tuple[Processor, ...]:
        return tuple(Processor(e["type"], {k: tuple(v) if isinstance(v, list) else v for k, v in e.items() if k != "type"})
                     for e in chain)

    excerpts = ExcerptRenderer(dry, spans, preroll, RATE, kept=processors(eq))
    for chain in chains:
        rendered = excerpts(processors(chain))
        for (a, b), y in zip(spans, rendered):
            s = max(0, a - preroll)
            expected = reference_render({"effects": chain}, dry[:, s:], RATE)[:, a - s : b - s]
            tolerance = 1e-5 if any(e["type"] == "convolution" for e in chain) else 0.0  # float64 FIR reference
            np.testing.assert_allclose(y, expected, rtol=0, atol=tolerance)
    assert excerpts._kept_renderings is not None


def detailed_master(dry: np.ndarray, seed: int = 3) -> np.ndarray:
    """A master no task's chain holds: a minimum-phase FIR with a random curve of 1/6-octave
    detail (+-4 dB), then pedalboard's limiter."""
    rng = np.random.default_rng(seed)
    f = np.linspace(0.0, RATE / 2, 2049)
    octaves = np.log2(np.maximum(f, 30.0) / 30.0)
    knots = np.arange(0.0, octaves.max() + 0.2, 1 / 6)
    curve_db = np.interp(octaves, knots, rng.uniform(-4.0, 4.0, knots.size))
    fir = scipy.signal.minimum_phase(scipy.signal.firwin2(4095, f / (RATE / 2), 10 ** (curve_db / 10)), n_fft=1 << 15)
    eq = scipy.signal.lfilter(fir, [1.0], dry, axis=-1).astype(np.float32)
    return pedalboard.Limiter(threshold_db=-6.0, release_ms=100.0)(eq * 1.5, RATE)


def write(path: Path, audio: np.ndarray) -> Path:
    soundfile.write(path, audio.T, RATE, subtype="FLOAT")
    return path


def estimate(capsys: pytest.CaptureFixture[str], *args: Any) -> dict[str, Any]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_a_master_the_chain_cannot_hold_is_corrected_and_the_answer_renders_in_pedalboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    """The best candidate of the eq model (two shelves) on a detailed master: corrected by
    peaks or an FIR (and a limiter where one helps), which lower the loss tenfold or more; the
    corrected preset rendered by pedalboard (tests/reference.py, the FIR's latency compensated)
    gives the loss the document reports; ``--no-correction`` gives the chain alone."""
    dry = (0.4 * procedural_music(np.random.default_rng(1), 5 * RATE, RATE))[None].astype(np.float32)
    wet_path, dry_path = write(tmp_path / "wet.wav", detailed_master(dry)), write(tmp_path / "dry.wav", dry)
    common = ["estimate", wet_path, "--dry", dry_path, "--model", "eq", "--samples", 4, "--effort", "fast",
              "--no-audio", "--json"]
    doc = estimate(capsys, *common, "-o", tmp_path / "a")
    top = doc["candidates"][0]
    record = top["correction"]
    assert record["equaliser"] and not record["dynamics"] and "task_effects" not in record  # eq: no compressor
    effects = top["preset"]["effects"]
    assert [e["type"] for e in effects[: record["effects_from"]]] == ["high_shelf", "high_shelf"]
    added = [e["type"] for e in effects[record["effects_from"] :]]
    assert set(added) <= {"peak", "convolution", "gain", "limiter"}
    if record["fir"]:
        assert added.count("convolution") == 1 and "peak" not in added
    else:
        assert added.count("peak") == len(correct.band_centres(RATE)) and "convolution" not in added
    assert ("limiter" in added) == record["limiter"]
    assert top["loss"] < record["loss_before"] / 10
    wet = soundfile.read(wet_path, dtype="float32", always_2d=True)[0].T
    rendered = reference_render(top["preset"], dry, RATE)
    expected = losses.LogMelLoss(RATE)(torch.from_numpy(rendered)[None], torch.from_numpy(wet)[None]).item()
    assert top["loss"] == pytest.approx(expected, rel=1e-3)
    plain = estimate(capsys, *common, "--no-correction", "-o", tmp_path / "b")
    assert not any("correction" in c for c in plain["candidates"])
    assert plain["candidates"][0]["loss"] == pytest.approx(record["loss_before"])
