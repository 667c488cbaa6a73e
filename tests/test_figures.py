"""The figures of ``afxest evaluate`` (DAFx 2025, Figs. 4-8): each figure's data against an
independent computation, the PNG files and the report's links, and the missing-matplotlib path."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from afxest import figures as figs
from afxest.cli import main
from afxest.errors import UserError
from afxest.evaluate import evaluate
from afxest.store import load_model
from afxest.tasks import TASKS
from checkpoints import one_step_checkpoint  # tests/checkpoints.py
from reference import cookbook  # tests/reference.py

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = figs.FigureSettings(
    correlation_samples=6, histogram_samples=200, bins=10, grid=8, batch=64,
    index_points=4, ratio_points=3, entropy_samples=16, dpi=30,
)


@pytest.fixture(scope="module")
def fm_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fm-models")
    posterior = load_model(str(one_step_checkpoint(root / "post", "fm")))
    deterministic = load_model(str(one_step_checkpoint(root / "det", "fm", "deterministic")))
    return posterior, deterministic


def _fm_sound(v1: float, v2: float, frames: int, rate: int) -> np.ndarray:
    """DAFx Eq. 19 with Eqs. 20a-b, written out here: (frames,) float64."""
    index = 4 * math.pi * 10 ** (0.75 * 99 * (v1 - 1) / 20)
    ratio = 9.5 * v2 + 0.5
    t = np.arange(frames) / rate
    return np.sin(2 * math.pi * 110 * t + index * np.sin(2 * math.pi * 110 * ratio * t))


def _png_shape(path: Path) -> tuple[int, ...]:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path).shape


def _pixels(size: tuple[float, float], dpi: int) -> tuple[int, int]:
    return round(size[1] * dpi), round(size[0] * dpi)


def equaliser_reference_db(preset, freqs: np.ndarray) -> np.ndarray:
    """The summed magnitude response (dB) of a preset's shelves and peaks at ``freqs``: scipy's
    freqz of the RBJ cookbook coefficients (tests/reference.py)."""
    import scipy.signal

    total = np.zeros(len(freqs))
    for e in preset.effects:
        if e.type in ("low_shelf", "peak", "high_shelf"):
            b, a = cookbook(e.type, e.params["cutoff_frequency_hz"], e.params["gain_db"], e.params["q"], preset.sample_rate)
            total += 20 * np.log10(np.abs(scipy.signal.freqz(b, a, worN=freqs, fs=preset.sample_rate)[1]))
    return total


# --- figure data --------------------------------------------------------------------------------


def test_mean_correlation_is_the_mean_of_numpy_corrcoef():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.0, 0.0], [-0.8, 0.6, 0.0], [0.3, 0.2, 0.9]])
    z = rng.normal(size=(5, 20, 3)) @ mix.T + rng.normal(size=(5, 1, 3))
    expected = np.mean([np.corrcoef(item.T) for item in z], axis=0)
    assert figs.mean_correlation(z) == pytest.approx(expected, abs=1e-12)
    # an item where a parameter has no spread is left out of that parameter's row and column
    z[2, :, 1] = 0.5
    got = figs.mean_correlation(z)
    with np.errstate(invalid="ignore", divide="ignore"):  # corrcoef of item 2 has NaNs
        each = [np.corrcoef(item.T) for item in z]
    assert got[0, 1] == pytest.approx(np.mean([c[0, 1] for k, c in enumerate(each) if k != 2]), abs=1e-12)
    assert got[0, 2] == pytest.approx(np.mean([c[0, 2] for c in each]), abs=1e-12)
    z[:, :, 1] = 0.5
    assert np.isnan(figs.mean_correlation(z)[0, 1])


def test_entropy_bits_and_decile_band_closed_forms():
    log_prob = np.array([[1.0, 3.0], [-2.0, -4.0]])
    assert figs.entropy_bits(log_prob, 2) == pytest.approx([-2 / (2 * math.log(2)), 3 / (2 * math.log(2))])
    table = np.arange(20.0).reshape(2, 10)  # rows 0..9 and 10..19
    mean, q10, q90 = figs.decile_band(table)
    assert mean == pytest.approx([4.5, 14.5])
    assert q10 == pytest.approx([0.9, 10.9]) and q90 == pytest.approx([8.1, 18.1])  # linear interpolation


def test_labels_pairs_and_eq_truth_in_model_space():
    eq, fm = TASKS["eq"], TASKS["fm"]
    assert figs.labels(eq) == ["HS0 f", "HS0 g", "HS0 Q", "HS1 f", "HS1 g", "HS1 Q"]  # as Space.names: 0.high_shelf...
    assert figs.marginal_pairs(eq) == [(0, 3), (1, 4), (2, 5)]
    assert figs.labels(fm) == ["v1", "v2"] and figs.marginal_pairs(fm) == [(0, 1)]
    # eq's canonical solution: both shelves at the truth's cutoff and Q, each with half its gain;
    # the truth's gain range [-20, 20] dB halved is the model's [-10, 10] dB: the same v again
    v = np.array([0.3, 0.8, 0.1])
    z = figs.model_truth(eq, v)
    assert z == pytest.approx([0.3, 0.8, 0.1, 0.3, 0.8, 0.1], abs=1e-12)
    cutoff = 500 * (2500 / 500) ** 0.3
    gains = [eq.model.ranges[k].to_physical(z[k]) for k in (1, 4)]
    assert sum(gains) == pytest.approx(-20 + 40 * 0.8)
    assert eq.model.ranges[3].to_physical(z[3]) == pytest.approx(cutoff)
    assert figs.model_truth(fm, np.array([0.2, 0.7])) == pytest.approx([0.2, 0.7])


def test_applicable_figures():
    eq, fm = TASKS["eq"], TASKS["fm"]
    assert figs.applicable(eq, "posterior") == ["fig4", "fig5"]
    assert figs.applicable(eq, "deterministic") == []
    assert figs.applicable(fm, "posterior") == ["fig4", "fig5", "fig6", "fig7", "fig8"]
    assert figs.applicable(fm, "deterministic") == ["fig6", "fig7"]
    assert "Fig. 6" in figs.not_applicable_note(eq, "posterior") and figs.not_applicable_note(fm, "posterior") is None


def test_loss_map_matches_direct_evaluation_of_grid_points():
    from afxest.losses import spectral_ot

    task = TASKS["fm"]
    grid = 8
    c = figs.grid_centres(grid)
    assert c == pytest.approx(np.arange(grid) / grid + 1 / 16)
    truth = (c[6], c[2])  # on the grid: the loss there is 0
    wet = _fm_sound(*truth, task.clip_samples, task.sample_rate)
    m = figs.loss_map(task, wet[None], grid=grid, batch=5)  # batches that do not divide the grid
    assert m.shape == (grid, grid)
    target = torch.from_numpy(wet[None, None].astype(np.float32))
    for i, j in [(6, 2), (2, 6), (0, 0), (7, 7), (3, 5)]:
        y_hat = torch.from_numpy(_fm_sound(c[i], c[j], task.clip_samples, task.sample_rate)[None, None].astype(np.float32))
        expected = float(spectral_ot(y_hat, target, task.sample_rate, unit="bins")[0])
        assert m[i, j] == pytest.approx(expected, rel=1e-3, abs=1e-3)
    assert m[6, 2] == pytest.approx(0.0, abs=1e-3)
    assert m[2, 6] > 1.0 and m.argmin() == np.ravel_multi_index((6, 2), m.shape)


def test_correlation_samples_reuse_the_drawn_ones(fm_models):
    loaded = fm_models[0]
    wet = _fm_sound(0.7, 0.4, loaded.task.clip_samples, loaded.task.sample_rate)[None, None]
    drawn = np.random.default_rng(1).random((25, 2))
    assert np.array_equal(figs.correlation_samples(loaded.estimator, wet, drawn, 20, [0]), drawn[:20])
    few = drawn[:7]
    got = figs.correlation_samples(loaded.estimator, wet, few, 20, [0, 1])
    assert got.shape == (20, 2) and np.array_equal(got[:7], few)
    again = figs.correlation_samples(loaded.estimator, wet, few, 20, [0, 1])
    assert np.array_equal(got, again)  # the top-up depends on its seed only
    assert not np.array_equal(got, figs.correlation_samples(loaded.estimator, wet, few, 20, [0, 2]))


def test_entropy_curve_against_an_independent_estimate(fm_models):
    loaded = fm_models[0]
    task = loaded.task
    settings = figs.FigureSettings(index_points=4, ratio_points=3, entropy_samples=256, batch=5)
    curve = figs.entropy_curve(loaded.estimator, task, settings, seed=0)
    v1 = (np.arange(4) + 0.5) / 4
    assert curve.index == pytest.approx(4 * np.pi * 10 ** (0.75 * 99 * (v1 - 1) / 20), rel=1e-9)  # Eq. 20a
    assert curve.entropy.shape == (4, 3)
    mean, q10, q90 = figs.decile_band(curve.entropy)
    assert np.array_equal(curve.mean, mean) and np.array_equal(curve.q10, q10) and np.array_equal(curve.q90, q90)
    torch.manual_seed(7)
    for a, b in [(0, 0), (3, 2), (2, 1)]:
        wet = _fm_sound(curve.v1[a], curve.v2[b], task.clip_samples, task.sample_rate)[None, None]
        with torch.no_grad():
            s = loaded.estimator.sample(torch.from_numpy(wet.astype(np.float32)), 4096)
        bits = -s.log_prob[0].double().numpy() / (2 * math.log(2))
        tolerance = 5 * bits.std() / math.sqrt(256) + 1e-3
        assert curve.entropy[a, b] == pytest.approx(bits.mean(), abs=tolerance)


# --- evaluate with figures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def fm_figures(fm_models, tmp_path_factory):
    loaded, deterministic = fm_models
    out = tmp_path_factory.mktemp("fm-eval")
    messages: list[str] = []
    result = evaluate(loaded, out, n=3, samples=4, seed=2, log=messages.append, compare=deterministic,
                      figure_settings=SMALL)
    return result, out, messages


def test_fm_posterior_writes_every_figure_as_a_png_of_the_expected_size(fm_figures):
    result, out, _ = fm_figures
    assert [f.key for f in result.figures] == ["fig4", "fig5", "fig6", "fig7", "fig8"]
    sizes = {
        "fig4": figs.SIZES["fig4"], "fig5": figs.marginals_size(1), "fig6": figs.SIZES["fig6"],
        "fig7": figs.SIZES["fig7"], "fig8": figs.SIZES["fig8"],
    }
    report = (out / "report.md").read_text()
    for figure in result.figures:
        path = out / figure.file
        assert _png_shape(path)[:2] == _pixels(sizes[figure.key], SMALL.dpi)
        assert f"]({figure.file})" in report  # a relative image link
    assert "Deter. (" in result.figures[1].caption  # --compare marked on Fig. 5
    assert not list(out.glob(".afxest-*"))  # no temporary file left


def test_figures_leave_results_csv_unchanged(fm_figures, fm_models, tmp_path):
    _, out, _ = fm_figures
    result = evaluate(fm_models[0], tmp_path, n=3, samples=4, seed=2, log=lambda _m: None, figures=False)
    assert (tmp_path / "results.csv").read_text() == (out / "results.csv").read_text()
    assert result.figures == [] and not list(tmp_path.glob("*.png"))
    assert "not requested (--no-figures)" in (tmp_path / "report.md").read_text()


def test_existing_figures_are_refused_without_force(fm_figures, fm_models, tmp_path):
    _, out, _ = fm_figures
    (tmp_path / figs.FILES["fig7"]).write_bytes(b"old")
    with pytest.raises(UserError, match="fig7.*--force"):
        evaluate(fm_models[0], tmp_path, n=1, samples=2, log=lambda _m: None, figure_settings=SMALL)
    assert not (tmp_path / "report.md").exists()


def test_deterministic_fm_model_gets_the_loss_maps_only(fm_models, tmp_path):
    deterministic = fm_models[1]
    result = evaluate(deterministic, tmp_path, n=1, samples=2, log=lambda _m: None, figure_settings=SMALL)
    assert [f.key for f in result.figures] == ["fig6", "fig7"]
    width, height = figs.SIZES["fig6"]
    assert _png_shape(tmp_path / figs.FILES["fig6"])[:2] == _pixels((width / 2, height), SMALL.dpi)  # no histogram
    report = (tmp_path / "report.md").read_text()
    assert "Not written: Fig. 4, Fig. 5, Fig. 8" in report
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [figs.FILES["fig6"], figs.FILES["fig7"]]


@pytest.fixture(scope="module")
def eq_posterior(tmp_path_factory):
    return load_model(str(one_step_checkpoint(tmp_path_factory.mktemp("eq-model"), "eq")))


def test_compare_must_be_a_deterministic_model_of_the_same_task(fm_models, eq_posterior, tmp_path):
    posterior, _ = fm_models
    with pytest.raises(UserError, match="posterior model"):
        evaluate(posterior, tmp_path, n=1, samples=2, log=lambda _m: None, compare=posterior)
    with pytest.raises(UserError, match="'eq' model"):
        evaluate(posterior, tmp_path, n=1, samples=2, log=lambda _m: None, compare=eq_posterior)
    assert not (tmp_path / "report.md").exists()


def test_eq_posterior_writes_figs_4_and_5(eq_posterior, tmp_path):
    loaded = eq_posterior
    result = evaluate(loaded, tmp_path / "eval", n=2, samples=2, seed=1, log=lambda _m: None, figure_settings=SMALL)
    assert [f.key for f in result.figures] == ["fig4", "fig5"]
    assert _png_shape(tmp_path / "eval" / figs.FILES["fig5"])[:2] == _pixels(figs.marginals_size(3), SMALL.dpi)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "no deterministic estimate" in report and "Figs. 6-8 concern the fm task" in report



def test_evaluate_with_an_effort_draws_item_0s_default_estimate(eq_posterior, tmp_path, monkeypatch):
    """evaluate --effort with figures: item 0's default estimate drawn by plot_estimate (eq:
    one panel at 100 dpi), its rank-1 curve that of the rank-1 preset, linked in the report."""
    import dataclasses

    from afxest.choices import EFFORTS

    # the search's length is not this test's subject: a 10-step search
    monkeypatch.setitem(EFFORTS, "fast", dataclasses.replace(EFFORTS["fast"], max_steps=10))
    drawn = []
    original = figs.plot_estimate
    monkeypatch.setattr(figs, "plot_estimate", lambda *a, **k: drawn.append((original(*a, **k), a[2][0])))
    result = evaluate(eq_posterior, tmp_path / "eval", n=1, samples=2, seed=1, log=lambda _m: None,
                      figure_settings=SMALL, effort="fast")
    assert [f.key for f in result.figures] == ["fig4", "fig5", "estimate"]
    path = tmp_path / "eval" / figs.EVALUATE_ESTIMATE_PLOT
    assert _png_shape(path)[:2] == (450, 550)
    (fig, rank1), = drawn
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), equaliser_reference_db(rank1, np.asarray(line.get_xdata())), atol=1e-6)
    assert "test item 0" in fig._suptitle.get_text()
    assert f"![estimate]({figs.EVALUATE_ESTIMATE_PLOT})" in (tmp_path / "eval" / "report.md").read_text()

# --- without matplotlib --------------------------------------------------------------------------


def test_missing_matplotlib_skips_figures_with_one_message(fm_models, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    assert not figs.matplotlib_available()
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(fm_models[0].path), "--n", "1", "--samples", "2", "--out", str(out)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count(figs.MATPLOTLIB_MISSING) == 1
    assert "figures skipped: matplotlib is not installed (pip install 'afxest[plots]')" in err
    assert (out / "results.csv").is_file() and not list(out.glob("*.png"))
    assert "matplotlib is not installed" in (out / "report.md").read_text()
    # --no-figures: no message at all
    assert main([*args, "--force", "--no-figures"]) == 0
    assert "figures skipped" not in capsys.readouterr().err


def test_afxest_imports_and_helps_without_matplotlib():
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import afxest.figures, afxest.evaluate\n"
        "from afxest.cli import main\n"
        "sys.exit(main(['evaluate', '--help']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--no-figures" in done.stdout


# --- the figure of one estimate (`afxest estimate --plot`) ----------------------------------------


def _document(presets, name: str = "song.wav") -> dict:
    return {"wet": f"/some/where/{name}", "task": presets[0].task, "model": {"name": "master"},
            "baseline": {"si_sdr": 3.25},
            "candidates": [{"rank": k + 1, "si_sdr": 40.0 - k} for k in range(len(presets))]}


def test_estimate_plot_draws_rbj_responses_and_compressor_curves(tmp_path):
    """A master estimate: the equaliser panel's curves are the product of the five biquads'
    responses by scipy's freqz of RBJ coefficients computed here, the band spans all
    candidates, the compressor curves are JUCE's gain law applied to a steady level; the PNG
    decodes at 2 panels x 5.5 x 4.5 inches."""
    task = TASKS["master"]
    rate = task.sample_rate
    z = np.random.default_rng(5).uniform(size=(7, task.model.dim))
    presets = [task.model.preset(v, task.name, rate) for v in z]
    path = tmp_path / figs.ESTIMATE_PLOT
    fig = figs.plot_estimate(path, _document(presets), presets, dpi=40)
    assert _png_shape(path)[:2] == (round(4.5 * 40), round(11 * 40))
    eq_ax, comp_ax = fig.axes[:2]
    assert "song.wav" in fig._suptitle.get_text() and eq_ax.get_xlabel().startswith("frequency (Hz")

    lines = [line for line in eq_ax.lines]
    assert len(lines) == figs.PLOT_TOP
    freqs = lines[0].get_xdata()
    assert freqs[0] == pytest.approx(20.0) and freqs[-1] < rate / 2
    curves = np.array([equaliser_reference_db(p, freqs) for p in presets])
    for k in range(figs.PLOT_TOP):
        np.testing.assert_allclose(lines[k].get_ydata(), curves[k], atol=1e-6)
    assert lines[0].get_label() == "rank 1 (draw), SI-SDR 40.0 dB"
    (band,) = eq_ax.collections
    vertices = band.get_paths()[0].vertices
    assert vertices[:, 1].max() == pytest.approx(curves.max(), abs=1e-6)
    assert vertices[:, 1].min() == pytest.approx(curves.min(), abs=1e-6)

    identity, *comp = comp_ax.lines
    assert len(comp) == figs.PLOT_TOP
    for line, preset in zip(comp, presets):
        c = next(e.params for e in preset.effects if e.type == "compressor")
        level = np.asarray(line.get_xdata())
        envelope = 10 ** (level / 20)
        threshold = 10 ** (c["threshold_db"] / 20)
        gain = np.where(envelope < threshold, 1.0, (envelope / threshold) ** (1 / c["ratio"] - 1))
        np.testing.assert_allclose(line.get_ydata(), 20 * np.log10(envelope * gain), atol=1e-9)


def test_estimate_plot_draws_rank_1s_correction_alone(tmp_path):
    """A corrected rank 1 (its effects from ``correction.effects_from``): the equaliser panel
    also draws the correction's response alone, dashed: scipy's freqz of its peaks; rank 1's
    own curve is the whole chain's, correction included."""
    import dataclasses

    from afxest.presets import Processor

    task = TASKS["master"]
    base = task.model.preset(np.full(task.model.dim, 0.4), task.name, task.sample_rate)
    peaks = tuple(Processor("peak", {"cutoff_frequency_hz": f, "gain_db": g, "q": 4.0})
                  for f, g in ((150.0, 2.0), (1200.0, -3.0), (5000.0, 1.5)))
    corrected = dataclasses.replace(base, effects=base.effects + peaks)
    document = _document([corrected, base])
    document["candidates"][0]["correction"] = {"effects_from": len(base.effects)}
    fig = figs.plot_estimate(tmp_path / figs.ESTIMATE_PLOT, document, [corrected, base], dpi=30)
    eq_ax = fig.axes[0]
    (dashed,) = [line for line in eq_ax.lines if line.get_linestyle() == "--"]
    freqs = dashed.get_xdata()
    only = dataclasses.replace(base, effects=peaks)
    np.testing.assert_allclose(dashed.get_ydata(), equaliser_reference_db(only, freqs), atol=1e-6)
    np.testing.assert_allclose(eq_ax.lines[0].get_ydata(), equaliser_reference_db(corrected, freqs), atol=1e-6)


def test_an_fir_correction_is_drawn_by_its_impulse_response(tmp_path):
    """A correction that is an FIR (``convolution``): the dashed curve is the impulse response's
    DTFT magnitude, sum_n h[n] e^{-j 2 pi f n / rate} written out, in dB."""
    import dataclasses

    from afxest.presets import Processor

    task = TASKS["master"]
    base = task.model.preset(np.full(task.model.dim, 0.4), task.name, task.sample_rate)
    h = np.random.default_rng(3).standard_normal(31) * np.hanning(31)
    fir = (Processor("convolution", {"latency_samples": 15.0, "impulse_response": tuple(h)}),)
    corrected = dataclasses.replace(base, effects=base.effects + fir)
    document = _document([corrected, base])
    document["candidates"][0]["correction"] = {"effects_from": len(base.effects)}
    fig = figs.plot_estimate(tmp_path / figs.ESTIMATE_PLOT, document, [corrected, base], dpi=30)
    (dashed,) = [line for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    f = dashed.get_xdata()
    dtft = np.exp(-2j * np.pi * np.outer(f, np.arange(31)) / task.sample_rate) @ h
    np.testing.assert_allclose(dashed.get_ydata(), 20 * np.log10(np.abs(dtft)), atol=1e-6)


def test_estimate_plot_of_a_synth_shows_the_spectra_of_wet_and_rank_1(tmp_path):
    """fm: a full-scale 110 Hz sine (and rank 1 at I = 0.0025, nearly one) peaks within a bin of
    110 Hz at 0 dB in both spectra, less the Hann window's scalloping loss (110 Hz is a quarter
    bin from the nearest of 8 Hz bins: 20 log10(sinc(1/4) / (1 - 1/16)) = -0.35 dB); one panel."""
    task = TASKS["fm"]
    preset = task.model.preset(np.array([0.0, 0.5]), task.name, task.sample_rate)
    frames = int(round(preset.source.params["duration_s"] * task.sample_rate))
    t = np.arange(frames) / task.sample_rate
    wet = np.sin(2 * np.pi * 110 * t)
    path = tmp_path / figs.ESTIMATE_PLOT
    fig = figs.plot_estimate(path, _document([preset], "tone.wav"), [preset], wet, dpi=30)
    assert _png_shape(path)[:2] == (round(4.5 * 30), round(5.5 * 30))
    wet_line, estimate_line = fig.axes[0].lines
    for line in (wet_line, estimate_line):
        f, db = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert f[np.argmax(db)] == pytest.approx(110, abs=1 / preset.source.params["duration_s"])
        assert db.max() == pytest.approx(20 * np.log10(np.sinc(0.25) / (1 - 1 / 16)), abs=0.02)


def test_estimate_plot_spreads_the_curves_of_the_posterior_draws(tmp_path):
    """With the draws (``spread``): the equaliser panel's band is, at each frequency, the 5th to
    95th percentile of the draws' responses (scipy's RBJ responses computed here) and the dashed
    line their median; the compressor panel's the same of the JUCE gain law."""
    task = TASKS["master"]
    rate = task.sample_rate
    rng = np.random.default_rng(7)
    presets = [task.model.preset(v, task.name, rate) for v in rng.uniform(size=(3, task.model.dim))]
    spread = [task.model.preset(v, task.name, rate) for v in rng.uniform(size=(40, task.model.dim))]
    fig = figs.plot_estimate(tmp_path / figs.ESTIMATE_PLOT, _document(presets), presets, dpi=30, spread=spread)
    eq_ax, comp_ax = fig.axes[:2]
    (band,) = eq_ax.collections
    *candidates, median = eq_ax.lines
    assert len(candidates) == 3 and "40 posterior draws" in band.get_label()
    freqs = np.asarray(median.get_xdata())
    curves = np.array([equaliser_reference_db(p, freqs) for p in spread])
    np.testing.assert_allclose(median.get_ydata(), np.median(curves, axis=0), atol=1e-6)
    vertices = band.get_paths()[0].vertices
    lower, upper = np.percentile(curves, 5, axis=0), np.percentile(curves, 95, axis=0)
    for f, y in vertices[:: max(1, len(vertices) // 50)]:
        k = int(np.argmin(np.abs(freqs - f)))
        assert min(abs(y - lower[k]), abs(y - upper[k])) < 1e-6
    (comp_band,) = comp_ax.collections
    identity, *_, comp_median = comp_ax.lines
    level = np.asarray(comp_median.get_xdata())
    outs = []
    for p in spread:
        c = next(e.params for e in p.effects if e.type == "compressor")
        envelope, threshold = 10 ** (level / 20), 10 ** (c["threshold_db"] / 20)
        gain = np.where(envelope < threshold, 1.0, (envelope / threshold) ** (1 / c["ratio"] - 1))
        outs.append(20 * np.log10(envelope * gain))
    np.testing.assert_allclose(comp_median.get_ydata(), np.median(outs, axis=0), atol=1e-9)


# --- the time-based effects' panels (issue 24) ----------------------------------------------------

JUCE_COMBS = (1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617)  # juce_Reverb.h, samples at 44.1 kHz


def _impulse(seconds: float, rate: int) -> np.ndarray:
    x = np.zeros((1, int(round(seconds * rate))), np.float32)
    x[0, 0] = 1.0
    return x


def _pedalboard_taps(params: dict, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The samples of pedalboard's Delay's impulse response above -60 dB: times (s), levels (dB)."""
    import pedalboard

    y = pedalboard.Delay(**params)(_impulse(8.0, rate), rate)[0].astype(np.float64)
    at = np.nonzero(np.abs(y) >= 10 ** (figs.DELAY_FLOOR_DB / 20))[0]
    return at / rate, 20 * np.log10(np.abs(y[at]))


@pytest.mark.parametrize("params, rate", [
    ({"delay_seconds": 0.123, "feedback": 0.5, "mix": 0.3}, 22050),
    ({"delay_seconds": 0.8, "feedback": 0.0, "mix": 0.5}, 44100),
    ({"delay_seconds": 0.0517, "feedback": 0.6, "mix": 1.0}, 48000),
])
def test_delay_taps_are_pedalboards_impulse_response(params, rate):
    """The taps drawn for a delay are where pedalboard's Delay answers an impulse, and how loud
    (to float32's precision), down to the floor; a mix of 1 has no direct sound."""
    from afxest.presets import Preset, Processor

    times, levels = figs.delay_taps(Preset(sample_rate=rate, effects=(Processor("delay", params),)))
    ref_times, ref_levels = _pedalboard_taps(params, rate)
    np.testing.assert_allclose(times, ref_times, atol=0.1 / rate)
    np.testing.assert_allclose(levels, ref_levels, atol=1e-4)


def test_energy_decay_and_decay_time_of_an_exponential_decay():
    """h[n] = r^n falling 60 dB in T seconds: the backward integral is the geometric series'
    closed form 10 log10(r^(2n) (1 - r^(2(L - n))) / (1 - r^2)), and its T60 is T."""
    rate, t60 = 8000, 0.7
    r = 10 ** (-3 / (t60 * rate))
    n = np.arange(int(2.5 * t60 * rate))
    edc = figs.energy_decay_db(r ** n)
    closed = 10 * np.log10(r ** (2 * n) * (1 - r ** (2 * (len(n) - n))) / (1 - r**2))
    np.testing.assert_allclose(edc, closed, atol=1e-6)
    assert figs.decay_time(edc, rate) == pytest.approx(t60, rel=1e-3)
    assert math.isnan(figs.decay_time(np.zeros(100), rate))  # never falls
    assert math.isnan(figs.decay_time(figs.energy_decay_db(np.zeros(100)), rate))  # silent


@pytest.mark.parametrize("room_size", [0.2, 0.5, 0.8])
def test_reverb_decay_time_lies_between_its_combs(room_size):
    """Freeverb with no damping: comb j of N_j samples recirculates with gain g = 0.7 + 0.28
    room_size, so it falls 60 dB in 3 N_j / (rate (-log10 g)) s; the sum's T60 lies between its
    shortest and longest comb's. The reverberation alone begins at the shortest comb (no dry)."""
    from afxest.presets import Preset, Processor

    rate = 44100
    params = {"room_size": room_size, "damping": 0.0, "wet_level": 0.33, "dry_level": 0.7, "width": 1.0}
    h = figs.reverb_impulse(Preset(sample_rate=rate, effects=(Processor("reverb", params),)))
    assert np.nonzero(h)[0][0] == min(JUCE_COMBS)
    g = 0.7 + 0.28 * room_size
    bounds = [3 * n / (rate * -math.log10(g)) for n in (min(JUCE_COMBS), max(JUCE_COMBS))]
    edc = figs.energy_decay_db(h)[: int(figs.REVERB_SECONDS * rate)]
    assert bounds[0] < figs.decay_time(edc, rate) < bounds[1]


def test_estimate_plot_of_a_mix_chain_draws_delay_taps_and_reverb_decays(tmp_path):
    """A mix estimate: four panels (equaliser, compressor, delay, reverb); the delay panel's
    candidates are pedalboard's impulse responses of their delays, its dots the draws' first
    echoes; the reverb panel's curves are the backward integrals of pedalboard's reverberation
    (dry level 0) of an impulse, computed here, labelled with a T60; its band spans the draws."""
    import pedalboard

    task = TASKS["mix"]
    rate = task.sample_rate
    rng = np.random.default_rng(11)
    presets = [task.model.preset(v, task.name, rate) for v in rng.uniform(size=(3, task.model.dim))]
    spread = [task.model.preset(v, task.name, rate) for v in rng.uniform(size=(20, task.model.dim))]
    path = tmp_path / figs.ESTIMATE_PLOT
    fig = figs.plot_estimate(path, _document(presets), presets, dpi=20, spread=spread)
    assert _png_shape(path)[:2] == (round(4.5 * 20), round(4 * 5.5 * 20))
    delay_ax, reverb_ax = fig.axes[2:4]
    for line, preset in zip(delay_ax.lines, presets):
        params = next(e.params for e in preset.effects if e.type == "delay")
        times, levels = _pedalboard_taps(params, rate)
        np.testing.assert_allclose(line.get_xdata(), times, atol=0.1 / rate)
        np.testing.assert_allclose(line.get_ydata(), levels, atol=1e-4)
    (dots,) = delay_ax.collections
    first = []
    for preset in spread:
        times, levels = _pedalboard_taps(next(e.params for e in preset.effects if e.type == "delay"), rate)
        first.append((times[times > 0][0], levels[times > 0][0]))
    np.testing.assert_allclose(dots.get_offsets(), first, atol=1e-4)

    *curves, median = reverb_ax.lines
    assert len(curves) == 3 and all("T60" in c.get_label() for c in curves)
    for line, preset in zip(curves, presets):
        params = {**next(e.params for e in preset.effects if e.type == "reverb"), "dry_level": 0.0}
        h = pedalboard.Reverb(**params)(_impulse(figs.REVERB_RENDER_SECONDS, rate), rate)[0].astype(np.float64)
        tail = 10 * np.log10(np.cumsum(h[::-1] ** 2)[::-1])
        at = np.round(np.asarray(line.get_xdata()) * rate).astype(int)
        np.testing.assert_allclose(line.get_ydata(), tail[at], atol=1e-6)
    (band,) = reverb_ax.collections
    assert "20 posterior draws" in band.get_label()
