"""Calibration diagnostics (afxest.calibration) on posteriors known in closed form.

The reference is a conjugate Gaussian: theta ~ N(0, 1), x | theta ~ N(theta, s2), so the
exact posterior is N(x / (1 + s2), s2 / (1 + s2)). Drawing from it gives a calibrated sampler
by construction; scaling its standard deviation by c < 1 gives an over-confident one, c > 1 an
under-confident one. For a sampler of scale c, given the standardised truth Z ~ N(0, 1), each
of the N draws lies below the truth with probability Phi(Z / c), so the rank is
Binomial(N, Phi(Z / c)) and every diagnostic has an expectation computed here by quadrature
over Z (the trapezoidal rule, math.erf, math.lgamma): independent of the code under test.
The tolerances are 4 binomial standard errors of the item count.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import afxest.calibration as cal
from afxest.tasks import TASKS

ITEMS = 4000
DRAWS = 100
SCALES = (1.0, 0.5, 2.0)  # calibrated, over-confident (too narrow), under-confident (too wide)


def rank_pmf(scale: float, n: int = DRAWS) -> np.ndarray:
    """P(rank = r), r = 0..n, for a sampler whose std is ``scale`` times the posterior's:
    E_Z[Binomial(n, Phi(Z / scale)) = r], by the trapezoidal rule on 24 001 points of [-12, 12]."""
    z = np.linspace(-12.0, 12.0, 24_001)
    density = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    p = np.clip(0.5 * (1 + np.array([math.erf(x / scale / math.sqrt(2)) for x in z])), 1e-300, 1 - 1e-16)
    r = np.arange(n + 1)[:, None]
    log_comb = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in range(n + 1)])[:, None]
    binomial = np.exp(log_comb + r * np.log(p) + (n - r) * np.log1p(-p))  # (n + 1, points)
    return np.trapezoid(binomial * density, z, axis=1)


def expected_coverage(scale: float, level: float, n: int = DRAWS) -> float:
    """The expected share of truths with N(1 - level)/2 <= rank <= N(1 + level)/2."""
    r = np.arange(n + 1)
    inside = (r >= n * (1 - level) / 2 - 1e-9) & (r <= n * (1 + level) / 2 + 1e-9)
    return float(rank_pmf(scale, n)[inside].sum())


def tolerance(p: float, items: int = ITEMS) -> float:
    return 4 * math.sqrt(p * (1 - p) / items) + 1e-3


@pytest.fixture(scope="module")
def gaussian():
    """Truths from the prior and N draws from the exact posterior with its std scaled by each
    of SCALES (one column each): draws (items, N, 3), truths (items, 3)."""
    rng = np.random.default_rng(12)
    s2 = 0.3
    theta = rng.standard_normal(ITEMS)
    x = theta + math.sqrt(s2) * rng.standard_normal(ITEMS)
    mean, std = x / (1 + s2), math.sqrt(s2 / (1 + s2))
    draws = np.stack([mean[:, None] + c * std * rng.standard_normal((ITEMS, DRAWS)) for c in SCALES], axis=-1)
    truth = np.repeat(theta[:, None], len(SCALES), axis=1)
    return draws, truth


def test_doctests():
    assert doctest.testmod(cal, raise_on_error=False).failed == 0


def test_reference_closed_forms():
    # the quadrature reproduces what is known exactly: uniform ranks when calibrated, and for
    # N = 1 the draw lies below the truth half the time whatever the scale
    assert np.allclose(rank_pmf(1.0), 1 / (DRAWS + 1), atol=1e-7)
    assert np.allclose(rank_pmf(0.3, 1), [0.5, 0.5], atol=1e-7)


def test_nominal_coverage_counts_ranks():
    assert cal.nominal_coverage(100, 0.9) == pytest.approx(91 / 101)
    assert cal.nominal_coverage(100, 0.5) == pytest.approx(51 / 101)
    assert cal.nominal_coverage(9, 1.0) == 1.0
    assert cal.nominal_coverage(10, 0.0) == pytest.approx(1 / 11)  # only the median rank


def test_ranks_count_draws_below_and_split_ties():
    draws = np.array([[[0.1, 5.0], [0.2, 5.0], [0.3, 5.0], [0.4, 5.0]]])  # (1, 4, 2)
    assert cal.ranks(draws, np.array([[0.25, 9.0]])).tolist() == [[2, 4]]
    assert cal.ranks(draws, np.array([[0.0, 1.0]])).tolist() == [[0, 0]]
    # a truth equal to all 4 draws: its rank is uniform on 0..4
    tied = cal.ranks(np.full((5000, 4, 1), 0.5), np.full((5000, 1), 0.5), np.random.default_rng(1))[:, 0]
    assert np.allclose(np.bincount(tied, minlength=5) / 5000, 0.2, atol=0.03)
    with pytest.raises(ValueError):
        cal.ranks(draws, np.zeros((2, 2)))


@pytest.mark.parametrize("column, scale", list(enumerate(SCALES)))
@pytest.mark.parametrize("level", cal.LEVELS)
def test_coverage_matches_the_closed_form(gaussian, column, scale, level):
    draws, truth = gaussian
    found = cal.calibrate(draws, truth, ["a", "b", "c"]).coverage[level][column]
    expected = expected_coverage(scale, level)
    assert found == pytest.approx(expected, abs=tolerance(expected))


def test_coverage_direction(gaussian):
    draws, truth = gaussian
    result = cal.calibrate(draws, truth, ["calibrated", "narrow", "wide"])
    for level in cal.LEVELS:
        nominal = result.nominal[level]
        calibrated, narrow, wide = result.coverage[level]
        assert abs(calibrated - nominal) < tolerance(nominal)
        assert narrow < nominal - 0.1  # over-confident: the truth falls outside too often
        assert wide > nominal + 0.05  # under-confident: inside too often
    # the closed form: 90 % intervals of a sampler half as wide hold the truth 59 % of the time
    # (2 Phi(1.645 / 2) - 1 = 0.589 for N -> infinity; 0.58 for N = 100)
    assert result.coverage[0.9][1] == pytest.approx(expected_coverage(0.5, 0.9), abs=tolerance(0.6))
    assert 0.55 < expected_coverage(0.5, 0.9) < 0.62


def test_outside_all_draws(gaussian):
    draws, truth = gaussian
    result = cal.calibrate(draws, truth, ["a", "b", "c"])
    assert result.outside_nominal == pytest.approx(2 / 101)
    for column, scale in enumerate(SCALES):
        pmf = rank_pmf(scale)
        expected = pmf[0] + pmf[-1]
        assert result.outside[column] == pytest.approx(expected, abs=tolerance(expected))
    assert result.outside[1] > 0.1 > 0.03 > result.outside[0] > result.outside[2]


def test_rank_histogram_shapes(gaussian):
    draws, truth = gaussian
    result = cal.calibrate(draws, truth, ["a", "b", "c"], bins=20)
    hist = result.histogram
    assert hist.shape == (20, 3) and (hist.sum(axis=0) == ITEMS).all()
    expected, lower, upper = cal.histogram_band(ITEMS, DRAWS, 20, mass=0.9999)
    # bins of 5 or 6 ranks: 101 ranks in 20 bins
    assert expected.sum() == pytest.approx(ITEMS) and set(np.round(expected * 101 / ITEMS)) == {5, 6}
    assert ((hist[:, 0] >= lower) & (hist[:, 0] <= upper)).all()  # flat: inside the band
    # each bin against its closed form: U-shaped when too narrow, a hump when too wide
    which = (np.arange(DRAWS + 1) * 20) // (DRAWS + 1)
    for column, scale in enumerate(SCALES):
        probs = np.bincount(which, weights=rank_pmf(scale), minlength=20)
        assert np.allclose(hist[:, column] / ITEMS, probs, atol=4 * np.sqrt(probs * (1 - probs) / ITEMS) + 1e-3)
    narrow, wide = hist[:, 1], hist[:, 2]
    assert narrow[0] > 3 * narrow[10] and narrow[-1] > 3 * narrow[10]
    assert wide[10] > 3 * wide[0] and wide[10] > 3 * wide[-1]


def test_histogram_band_is_the_binomial_interval():
    # 100 items, one rank per bin of p = 1/2: Binomial(100, 0.5); its 99 % interval is [37, 63]
    expected, lower, upper = cal.histogram_band(100, 1, bins=2, mass=0.99)
    assert expected.tolist() == [50.0, 50.0]
    assert lower.tolist() == [37.0, 37.0] and upper.tolist() == [63.0, 63.0]


def test_expected_coverage_curve(gaussian):
    draws, truth = gaussian
    result = cal.calibrate(draws, truth, ["a", "b", "c"])
    assert result.curve.shape == (len(cal.CURVE_LEVELS), 3)
    assert result.curve[0].max() < 0.05 and np.allclose(result.curve[-1], 1.0)
    for i, level in enumerate(result.levels):
        for column, scale in enumerate(SCALES):
            expected = expected_coverage(scale, float(level))
            assert result.curve[i, column] == pytest.approx(expected, abs=tolerance(expected))
    inner = slice(2, -2)
    nominal = np.array([cal.nominal_coverage(DRAWS, a) for a in result.levels])
    assert (result.curve[inner, 1] < nominal[inner]).all()  # below the diagonal: over-confident
    assert (result.curve[inner, 2] > nominal[inner]).all()  # above: conservative


def test_identity_for_tasks_whose_truth_is_the_model():
    task = TASKS["fm"]
    z, v = np.random.default_rng(0).random((3, 5, 2)), np.random.default_rng(1).random((3, 2))
    names, draws, truths, notes = cal.identifiable(task, z, v)
    assert names == task.model.names and notes == ["", ""]
    assert np.array_equal(draws, z) and np.array_equal(truths, v)


def test_eq_identifiable_quantities():
    task = TASKS["eq"]
    # truth (normalised): cutoff exp on [500, 2500], gain affine on [-20, 20], q affine on [0.1, 3]
    v = np.array([[0.5, 0.75, 0.5]])  # 500 * 5 ** 0.5 = 1118 Hz, +10 dB, q 1.55
    # two draws: shelves 1000 Hz / +8 dB / q 1 and 2000 Hz / -2 dB / q 2; then both 1118 Hz / 5 dB / q 1.55
    f = lambda hz: math.log(hz / 500) / math.log(5)  # noqa: E731
    g = lambda db: (db + 10) / 20  # noqa: E731
    q = lambda x: (x - 0.1) / 2.9  # noqa: E731
    z = np.array([[[f(1000), g(8), q(1), f(2000), g(-2), q(2)],
                   [f(500 * 5**0.5), g(5), q(1.55), f(500 * 5**0.5), g(5), q(1.55)]]])
    names, draws, truths, notes = cal.identifiable(task, z, v)
    assert names == task.truth.names
    assert truths[0] == pytest.approx([500 * 5**0.5, 10.0, 1.55])
    # weights |8| and |-2|: 0.8, 0.2
    assert draws[0, 0] == pytest.approx([1000**0.8 * 2000**0.2, 6.0, 0.8 * 1 + 0.2 * 2])
    assert draws[0, 1] == pytest.approx(truths[0])  # the canonical solution gives the truth back
    assert "sum" in notes[1] and "geometric" in notes[0]


# ---------------------------------------------------------------------------------------------
# afxest evaluate: the calibration of a posterior model, recomputed from its own draws


@pytest.fixture(scope="module")
def fm_calibrated(tmp_path_factory):
    from checkpoints import one_step_checkpoint  # tests/checkpoints.py

    from afxest.evaluate import evaluate
    from afxest.store import load_model

    root = tmp_path_factory.mktemp("fm-calibration")
    loaded = load_model(str(one_step_checkpoint(root / "run", "fm")))
    result = evaluate(loaded, root / "eval", n=12, samples=3, seed=2, calibration_draws=20, log=lambda _m: None)
    return loaded, result, root / "eval"


def _calibration_csv(folder):
    import csv

    with open(folder / "calibration.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.usefixtures("one_thread")
def test_evaluate_ranks_are_the_truths_among_the_models_draws(fm_calibrated):
    from afxest.data import make_batch
    from afxest.evaluate import CALIBRATION_STREAM, ITEM_STREAM
    from afxest.figures import draw

    loaded, result, folder = fm_calibrated
    rows = _calibration_csv(folder)
    names = loaded.task.model.names
    assert len(rows) == 12 * len(names) and {r["draws"] for r in rows} == {"20"}
    for i in range(12):  # each item again, from its own seed, and the model's draws of the calibration stream
        v = make_batch(loaded.task, None, np.random.default_rng([2, ITEM_STREAM, i]), 1).v[0].astype(np.float64)
        wet = make_batch(loaded.task, None, np.random.default_rng([2, ITEM_STREAM, i]), 1).wet
        z, _ = draw(loaded.estimator, wet, 20, [2, CALIBRATION_STREAM, i])
        for j, name in enumerate(names):
            row = rows[i * len(names) + j]
            assert (int(row["item"]), row["quantity"]) == (i, name)
            assert float(row["truth"]) == pytest.approx(v[j])
            assert int(row["rank"]) == int((z[0, :, j] < v[j]).sum())
    # the summary is the share of those ranks in the interval
    r = np.array([int(row["rank"]) for row in rows]).reshape(12, len(names))
    for level in cal.LEVELS:
        inside = (r >= 20 * (1 - level) / 2) & (r <= 20 * (1 + level) / 2)
        assert np.allclose(result.calibration.coverage[level], inside.mean(axis=0))
    assert np.allclose(result.calibration.outside, ((r == 0) | (r == 20)).mean(axis=0))


@pytest.mark.usefixtures("one_thread")
def test_evaluate_reports_and_draws_the_calibration(fm_calibrated, tmp_path):
    from afxest.evaluate import evaluate

    loaded, result, folder = fm_calibrated
    report = (folder / "report.md").read_text()
    section = report.split("## Calibration\n", 1)[1]
    assert "| Calibrated posterior | 52 % | 90 % | 10 % |" in section  # 11/21, 19/21, 2/21 ranks of 20 draws
    for name in loaded.task.model.names:
        assert f"| {name} |" in section
    if result.calibration_figures:  # matplotlib installed
        for figure in result.calibration_figures:
            assert (folder / figure.file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({figure.file})" in section
    # the calibration draws have their own seeds: results.csv is the same without them
    again = evaluate(loaded, tmp_path / "none", n=12, samples=3, seed=2, calibration_draws=0, log=lambda _m: None,
                     figures=False)
    assert again.calibration is None and not (tmp_path / "none" / "calibration.csv").exists()
    assert "## Calibration" not in (tmp_path / "none" / "report.md").read_text()
    assert (tmp_path / "none" / "results.csv").read_text() == (folder / "results.csv").read_text()


def test_calibration_draws_option_is_checked():
    from afxest.errors import UserError
    from afxest.evaluate import EvaluateOptions

    with pytest.raises(UserError, match="calibration-draws"):
        EvaluateOptions(calibration_draws=1).check()
    EvaluateOptions(calibration_draws=0).check()


@pytest.mark.usefixtures("one_thread")
def test_evaluate_calibrates_eq_on_its_identifiable_quantities(tmp_path):
    from checkpoints import one_step_checkpoint  # tests/checkpoints.py

    from afxest.evaluate import evaluate
    from afxest.store import load_model

    loaded = load_model(str(one_step_checkpoint(tmp_path / "run", "eq")))
    result = evaluate(loaded, tmp_path / "eval", n=2, samples=2, seed=1, calibration_draws=8, log=lambda _m: None,
                      figures=False)
    c = result.calibration
    assert c.names == TASKS["eq"].truth.names and c.draws == 8 and c.ranks.shape == (2, 3)
    section = (tmp_path / "eval" / "report.md").read_text().split("## Calibration\n", 1)[1]
    assert "sum of the gains of the model's 2 high_shelf processors" in section
    rows = _calibration_csv(tmp_path / "eval")
    gains = [float(r["truth"]) for r in rows if r["quantity"] == "0.high_shelf.gain_db"]
    assert len(gains) == 2 and all(-20 <= g <= 20 for g in gains)  # physical dB of the one true shelf


@pytest.mark.usefixtures("one_thread")
def test_comparison_shows_each_posteriors_mean_calibration(fm_calibrated, tmp_path, capsys):
    from checkpoints import one_step_checkpoint  # tests/checkpoints.py

    from afxest.cli import main

    loaded, _, _ = fm_calibrated
    param = one_step_checkpoint(tmp_path / "param", "fm", "param")
    out = tmp_path / "cmp"
    assert main(["evaluate", "--model", str(loaded.path), "--also", str(param), "--n", "12", "--samples", "3",
                 "--seed", "2", "--calibration-draws", "20", "--out", str(out), "--no-figures"]) == 0
    assert "calibration: the truth against 20 posterior draws" in capsys.readouterr().err
    r = np.array([int(row["rank"]) for row in _calibration_csv(out)]).reshape(12, 2)
    c50 = ((r >= 5) & (r <= 15)).mean()
    c90 = ((r >= 1) & (r <= 19)).mean()
    outside = ((r == 0) | (r == 20)).mean()
    lines = [line for line in (out / "comparison.md").read_text().splitlines() if line.startswith("| `")]
    posterior = [c.strip() for c in lines[0].strip("|").split("|")]
    other = [c.strip() for c in lines[1].strip("|").split("|")]
    assert posterior[-2:] == [f"{100 * c50:.0f} % / {100 * c90:.0f} %", f"{100 * outside:.0f} %"]
    assert other[-2:] == ["-", "-"]  # a parameter model has no draws to calibrate
