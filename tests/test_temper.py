"""The calibration of a posterior model (afxest.temper) and the intervals ``afxest estimate``
reports: against closed forms (a sigmoid-Gaussian's density and quantiles, a uniform law's
interval), ranks whose coverage is known by construction, and order statistics counted here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from afxest import fit_calibration, temper
from afxest.calibration import calibrate
from afxest.cli import main
from afxest.errors import UserError
from afxest.estimate import CREDIBLE, UNDETERMINED_ABOVE, interval_entry
from afxest.nn.estimator import Estimator, EstimatorConfig
from afxest.nn.heads import PosteriorHead
from afxest.store import LoadedModel, ModelFile, load_model_file
from afxest.tasks import TASKS
from checkpoints import one_step_checkpoint  # tests/checkpoints.py

FM_SR = 44100


def _fixed_head(d: int, mu: float, sigma: float, embed: int = 8) -> PosteriorHead:
    """A sigmoid-Gaussian head (no flows) that ignores its input: z = sigmoid(N(mu, sigma^2))."""
    head = PosteriorHead(embed, d, flows=0)
    with torch.no_grad():
        head.base.weight.zero_()
        head.base.bias[:d].fill_(mu)
        head.base.bias[d:].fill_(math.log(sigma))
    return head


def test_temperature_scales_the_base_std_in_draws_and_density() -> None:
    """T = 2 on sigma = 0.5: logit(z) is N(0.3, 1) (mean and std of 20 000 draws), and log_prob
    is the closed-form density of a sigmoid-transformed N(0.3, 1) at the drawn points."""
    head = _fixed_head(2, 0.3, 0.5)
    temper.apply(head, [2.0, 2.0])
    with torch.no_grad():
        s = head.sample(torch.zeros(1, 8, dtype=torch.float32), 20_000, generator=torch.Generator().manual_seed(0))
    z = s.z[0].double().numpy()
    x = np.log(z / (1 - z))
    np.testing.assert_allclose(x.mean(axis=0), 0.3, atol=0.03)
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=0.02)
    closed = (-0.5 * (x - 0.3) ** 2 - 0.5 * math.log(2 * math.pi) - np.log(z * (1 - z))).sum(axis=1)
    np.testing.assert_allclose(s.log_prob[0].double().numpy(), closed, rtol=1e-4, atol=1e-3)
    temper.apply(head, None)
    assert torch.equal(head.temperature, torch.ones(2))


def test_interval_levels_from_ranks_of_known_coverage() -> None:
    """Half the truths at the draws' median, half below all of them: the central 0 % interval
    already holds half (level 0 for 50 %), only the whole range holds 90 % (level 1)."""
    n, items = 100, 200
    draws = np.tile(np.linspace(0.01, 0.99, n), (items, 1))[:, :, None]  # (items, N, 1)
    truth = np.where(np.arange(items) % 2 == 0, 0.5, 0.0)[:, None]  # rank 50, or 0
    levels = temper.interval_levels(calibrate(draws, truth, ["p"]))
    assert levels == {"0.5": [0.0], "0.9": [1.0]}


def test_interval_levels_change_the_reported_coverage() -> None:
    """With the levels a model reports, calibrate's coverage is that of those intervals: ranks
    uniform on 0..100 put 81 % inside the central 80 % (|r - 50| <= 40)."""
    rng = np.random.default_rng(1)
    r = rng.integers(0, 101, size=5000)
    draws = np.tile(np.arange(100) + 0.5, (5000, 1))[:, :, None]
    truth = r[:, None].astype(np.float64)  # r draws below the truth
    c = calibrate(draws, truth, ["p"], interval_levels={0.5: np.array([0.5]), 0.9: np.array([0.8])})
    assert c.coverage[0.9][0] == pytest.approx(np.mean(np.abs(r - 50) <= 40))
    assert c.coverage[0.5][0] == pytest.approx(np.mean(np.abs(r - 50) <= 25))


def _over_confident_fm() -> LoadedModel:
    """An fm posterior whose head ignores the wet: z = sigmoid(N(0, 0.5^2)) per parameter."""
    task = TASKS["fm"]
    estimator = Estimator(task, EstimatorConfig(kind="posterior", flows=0)).eval()
    fixed = _fixed_head(task.model.dim, 0.0, 0.5, estimator.encoder.embed_dim)
    estimator.head.load_state_dict(fixed.state_dict())
    return LoadedModel("fixed", Path("fixed.pt"), "", task, estimator, "posterior", 0)


def test_fit_widens_an_over_confident_posterior_to_the_closed_form() -> None:
    """A head that ignores the wet, sigmoid(N(0, 0.5^2)), against fm truths uniform in [0, 1]:
    its central 90 % holds 90 % of them when sigma T = 2.944 / 1.645 (sigmoid(2.944) = 0.95),
    so T = 3.58 (measured on 1024 items: 90 % and 91 % coverage). A coverage measured on 512
    items has a standard error of 1.3 points, about 5 % of T here: the fit lands within 15 %
    of 3.58 on both parameters, and its recalibrated 90 % level lies near 0.9 (the tempered
    draws already cover)."""
    loaded = _over_confident_fm()
    found = fit_calibration.fit(loaded, None, n=512, draws=100)
    expected = 2.944 / 1.645 / 0.5
    np.testing.assert_allclose(found.temperature, expected, rtol=0.15)
    assert all(0.8 <= a <= 0.97 for a in found.level(0.9))
    assert found.fitted["items"] == 512 and found.fitted["seed"] == fit_calibration.FIT_SEED_OFFSET


def test_fit_widens_tails_that_miss_the_truth_and_recalibrates_the_levels(monkeypatch) -> None:
    """The head of the test above, with the tails rule asking that no validation truth fall
    outside all draws: the temperature rises past the coverage fit's (3.58) until the draws'
    extremes reach the truths' (the outermost of 128 uniform truths lies about 1/256 from an
    edge, logit 5.5; the largest of 100 draws is about 2.5 sigma T: T of 4.4 or more), so the
    tempered draws over-cover and the level reported as 90 % is recalibrated below 0.9 to keep
    the interval's coverage."""
    monkeypatch.setattr(fit_calibration, "OUTSIDE_BELOW", 0.0)
    loaded = _over_confident_fm()
    found = fit_calibration.fit(loaded, None, n=128, draws=100)
    assert min(found.temperature) > 4.2 and found.fitted["coverage_draws"]["outside"] == 0.0
    assert found.fitted["coverage_draws"]["coverage_90"] > 0.93 and max(found.level(0.9)) < 0.88


def test_interval_entry_is_the_central_interval_in_physical_units() -> None:
    """Draws spread evenly over [0, 1] (1001 points): the 90 % interval is the 51st and 951st
    order statistics (0.05 and 0.95), mapped by each range's own formula (exponential: lo
    (hi/lo)^v); width 0.9 > 0.5, undetermined. Draws within [0.4, 0.6]: determined."""
    task = TASKS["fm"]
    wide = np.tile(np.linspace(0.0, 1.0, 1001)[:, None], (1, task.model.dim))
    entry = interval_entry(task, wide)
    assert entry["credible"] == CREDIBLE == 0.9 and entry["draws"] == 1001 and entry["calibrated"] is False
    for name, r in zip(task.model.names, task.model.ranges):
        ordered = np.sort(wide[:, 0])
        lo_v, hi_v = ordered[50], ordered[950]
        physical = (lambda v: r.lo * (r.hi / r.lo) ** v) if r.mapping == "exp" else (lambda v: r.lo + (r.hi - r.lo) * v)
        got = entry["parameters"][name]
        assert got["low"] == pytest.approx(physical(lo_v)) and got["high"] == pytest.approx(physical(hi_v))
        assert got["width"] == pytest.approx(0.9) and got["undetermined"] and got["unit"] == r.param.unit
    assert entry["undetermined"] == task.model.names and entry["undetermined_above"] == UNDETERMINED_ABOVE
    narrow = 0.4 + 0.2 * wide
    assert interval_entry(task, narrow)["undetermined"] == []


def test_interval_entry_reads_the_models_recalibrated_levels() -> None:
    """A calibration that reports the central 50 % as the 90 % interval of parameter 0 and
    the whole range for parameter 1: the order statistics 251st-751st and 1st-1001st."""
    task = TASKS["fm"]
    z = np.tile(np.linspace(0.0, 1.0, 1001)[:, None], (1, 2))
    calibration = temper.ModelCalibration([1.0, 1.0], {"0.5": [0.2, 0.5], "0.9": [0.5, 1.0]})
    entry = interval_entry(task, z, calibration)
    first, second = (entry["parameters"][n] for n in task.model.names)
    assert first["width"] == pytest.approx(0.5) and not first["undetermined"] and first["level"] == 0.5
    assert second["width"] == pytest.approx(1.0) and second["undetermined"]
    assert entry["calibrated"] is True


def test_eq_intervals_are_of_what_the_wet_determines() -> None:
    """eq (two shelves for one): 1001 draws whose first shelf's gain runs over its range (-10..10
    dB) and the second's stays at +5 dB: the summed gain's 90 % interval is the 51st and 951st
    order statistics of -5..15 dB (closed form), 18 dB wide, 0.45 of the truth's 40 dB range
    (determined; 0.9 of one shelf's 20 dB); both shelves at the same cutoff and Q give those,
    whatever their weights (Q over 0.54 of its range: undetermined); the quantities carry
    their notes and nothing is keyed per shelf."""
    task = TASKS["eq"]
    u = np.linspace(0.0, 1.0, 1001)
    q_norm = 0.2 + 0.6 * u[::-1]
    z = np.stack([np.full_like(u, 0.5), u, q_norm, np.full_like(u, 0.5), np.full_like(u, 0.75), q_norm], axis=-1)
    entry = interval_entry(task, z)
    assert "parameters" not in entry and list(entry["quantities"]) == task.truth.names
    gain = entry["quantities"]["0.high_shelf.gain_db"]
    assert gain["low"] == pytest.approx(20 * u[50] - 5) and gain["high"] == pytest.approx(20 * u[950] - 5)
    assert gain["width"] == pytest.approx(18 / 40) and not gain["undetermined"] and "sum" in gain["note"]
    cutoff = entry["quantities"]["0.high_shelf.cutoff_frequency_hz"]
    assert cutoff["low"] == pytest.approx(math.sqrt(500 * 2500)) == pytest.approx(cutoff["high"])
    q = entry["quantities"]["0.high_shelf.q"]
    assert q["low"] == pytest.approx(0.1 + 2.9 * (0.2 + 0.6 * u[50])) and q["high"] == pytest.approx(0.1 + 2.9 * (0.2 + 0.6 * u[950]))
    assert q["width"] == pytest.approx(0.54) and entry["undetermined"] == ["0.high_shelf.q"]


# --- stored in the checkpoint, applied by the store and by estimate --------------------------------


@pytest.fixture(scope="module")
def fm_model(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    return one_step_checkpoint(tmp_path_factory.mktemp("fm"), "fm")


def _calibrated(model: Path, folder: Path, t: float) -> Path:
    """A copy of ``model`` calibrated at temperature ``t`` on both parameters (levels: nominal)."""
    found = temper.ModelCalibration([t, t], {"0.5": [0.5, 0.5], "0.9": [0.9, 0.9]}, {"items": 0})
    return temper.write(model, found, folder / f"t{t:g}.pt")


def test_store_applies_and_checks_the_stored_calibration(fm_model: Path, tmp_path: Path) -> None:
    path = _calibrated(fm_model, tmp_path, 3.0)
    loaded = load_model_file(ModelFile("t3", path, "path"))
    assert torch.equal(loaded.estimator.head.temperature, torch.full((2,), 3.0))
    assert loaded.calibration.level(0.9).tolist() == [0.9, 0.9]
    plain = load_model_file(ModelFile("plain", fm_model, "path"))
    assert plain.calibration is None and torch.equal(plain.estimator.head.temperature, torch.ones(2))
    bad = temper.write(fm_model, temper.ModelCalibration([2.0], {"0.5": [0.5], "0.9": [0.9]}), tmp_path / "bad.pt")
    with pytest.raises(UserError, match="does not fit its 2 parameters"):
        load_model_file(ModelFile("bad", bad, "path"))


def _estimate(capsys, model: Path, wet: Path, out: Path, *extra) -> dict:
    capsys.readouterr()
    code = main([str(a) for a in ("estimate", wet, "--model", model, "-o", out, "--samples", 8, "--no-audio",
                                  "--json", "--no-progress", *extra)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import soundfile

    t = np.arange(int(0.3 * FM_SR)) / FM_SR
    x = np.sin(2 * np.pi * 110 * t + 2.0 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    path = tmp_path_factory.mktemp("tone") / "tone.wav"
    soundfile.write(path, x, FM_SR, subtype="FLOAT")
    return path


def _z(doc: dict, origin: str = "draw") -> np.ndarray:
    """The candidates' normalised parameters (from their physical values) of one origin."""
    task = TASKS["fm"]
    rows = [[r.to_normalised(c["preset"]["source"][r.name]) for r in task.model.ranges]
            for c in doc["candidates"] if ("refinement" in c) == (origin != "draw")]
    return np.array(rows)


def test_intervals_follow_the_temperature_and_the_candidates_do_not(fm_model: Path, tmp_path: Path, tone: Path,
                                                                      capsys) -> None:
    """Without a search (--refine 0): T = 0.001 collapses the intervals (none undetermined), T =
    50 saturates the sigmoid and every parameter's interval spans its range (all undetermined);
    the candidates and their log-densities are the uncalibrated model's, to the bit."""
    task = TASKS["fm"]
    plain = _estimate(capsys, fm_model, tone, tmp_path / "p", "--refine", 0)
    sharp = _estimate(capsys, _calibrated(fm_model, tmp_path, 0.001), tone, tmp_path / "a", "--refine", 0)
    assert [c["preset"] for c in sharp["candidates"]] == [c["preset"] for c in plain["candidates"]]
    assert [c["log_prob"] for c in sharp["candidates"]] == [c["log_prob"] for c in plain["candidates"]]
    assert _z(plain).std(axis=0).max() > 1e-3  # draws at T = 0.001 would not spread
    assert sharp["intervals"]["undetermined"] == [] and sharp["intervals"]["calibrated"] is True
    assert all(v["width"] < 1e-2 for v in sharp["intervals"]["parameters"].values())
    wide = _estimate(capsys, _calibrated(fm_model, tmp_path, 50.0), tone, tmp_path / "b", "--refine", 0)
    assert wide["intervals"]["undetermined"] == task.model.names
    for name, r in zip(task.model.names, task.model.ranges):
        got = wide["intervals"]["parameters"][name]
        assert got["low"] == pytest.approx(r.lo, rel=1e-3) and got["high"] == pytest.approx(r.hi, rel=1e-3)


def test_search_starts_from_the_untempered_draws(fm_model: Path, tmp_path: Path, tone: Path, capsys) -> None:
    """With a search (fm's own wet is its reference), a calibrated model's draws are the
    uncalibrated model's, to the bit; its intervals are still the calibrated posterior's."""
    plain = _estimate(capsys, fm_model, tone, tmp_path / "p", "--effort", "fast")
    sharp = _estimate(capsys, _calibrated(fm_model, tmp_path, 0.001), tone, tmp_path / "s", "--effort", "fast")
    assert plain["analysis"]["search"] is not None
    a, b = _z(plain), _z(sharp)
    assert len(a) == 8 and np.array_equal(np.sort(a, axis=0), np.sort(b, axis=0))
    assert a.std(axis=0).max() > 1e-3  # the tempered draws would not spread
    assert sharp["intervals"]["calibrated"] and all(v["width"] < 1e-2 for v in sharp["intervals"]["parameters"].values())
    assert plain["intervals"]["calibrated"] is False


def test_doctests() -> None:
    import doctest

    result = doctest.testmod(temper, raise_on_error=False)
    assert result.failed == 0 and result.attempted > 0


def test_evaluate_scores_untempered_candidates_and_calibrated_draws(fm_model: Path, tmp_path: Path) -> None:
    """evaluate on a model calibrated at T = 0.001: results.csv (the candidates) equals the
    uncalibrated model's to the bit, while the calibration's draws collapse: nearly every truth
    falls outside all of them; the model's own head is back at its temperature afterwards."""
    from afxest.evaluate import evaluate

    runs = {}
    for name, path in (("plain", fm_model), ("sharp", _calibrated(fm_model, tmp_path, 0.001))):
        loaded = load_model_file(ModelFile(name, path, "path"))
        result = evaluate(loaded, tmp_path / name, n=12, samples=3, calibration_draws=20, figures=False,
                          log=lambda _m: None)
        runs[name] = (result, (tmp_path / name / "results.csv").read_text())
        assert torch.equal(loaded.estimator.head.temperature, torch.full((2,), 0.001 if name == "sharp" else 1.0))
    assert runs["sharp"][1] == runs["plain"][1]
    assert runs["sharp"][0].calibration.outside.min() > 0.8 > runs["plain"][0].calibration.outside.max()


def test_calibrate_refuses_what_it_cannot_calibrate_and_writes_nothing(tmp_path: Path, capsys, one_thread) -> None:
    """A deterministic model: one line on stderr, exit 2, the checkpoint unchanged and no --out
    written."""
    import hashlib

    for task, estimator, why in (("fm", "deterministic", "only a posterior model can be calibrated"),):
        model = one_step_checkpoint(tmp_path / f"{task}-{estimator}", task, estimator)
        before = hashlib.sha256(model.read_bytes()).hexdigest()
        capsys.readouterr()
        code = main(["models", "--calibrate", str(model), "--fit-n", "16", "--out", str(tmp_path / "out.pt")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and why in err[0], err
        assert hashlib.sha256(model.read_bytes()).hexdigest() == before and not (tmp_path / "out.pt").exists()


def test_eq_is_calibrated_on_what_its_wet_determines(tmp_path: Path, capsys, one_thread) -> None:
    """``models --calibrate`` on an eq posterior (two shelves for one): one temperature per
    model parameter, the two shelves' copies of a quantity steered together (equal), interval
    levels for the 3 quantities; an estimate with it reports those quantities, calibrated, with
    their notes."""
    import soundfile

    model = one_step_checkpoint(tmp_path / "eq", "eq")
    out = tmp_path / "eq-calibrated.pt"
    assert main(["models", "--calibrate", str(model), "--fit-n", "16", "--draws", "20", "--out", str(out)]) == 0
    found = load_model_file(ModelFile("c", out, "path")).calibration
    t = np.array(found.temperature)
    assert t.shape == (6,) and np.array_equal(t[:3], t[3:]) and not np.all(t == 1.0)
    assert all(len(found.levels[k]) == 3 for k in ("0.5", "0.9"))
    rng = np.random.default_rng(0)
    wet = tmp_path / "noise.wav"
    soundfile.write(wet, (0.1 * rng.standard_normal(22050 * 5)).astype(np.float32), 22050, subtype="FLOAT")
    capsys.readouterr()
    code = main([str(a) for a in ("estimate", wet, "--model", out, "-o", tmp_path / "e", "--samples", 4,
                                  "--no-audio", "--refine", 0, "--no-progress")])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "e" / "noise" / "estimate.json").read_text())
    quantities = doc["intervals"]["quantities"]
    assert doc["intervals"]["calibrated"] and list(quantities) == TASKS["eq"].truth.names
    assert [q["level"] for q in quantities.values()] == found.levels["0.9"]
    assert all(q["note"] for q in quantities.values())
