"""``afxest evaluate``: the tables against independent computations from results.csv and audio."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from afxest.cli import main
from afxest.errors import UserError
from afxest.evaluate import BEST_OF, ITEM_STREAM, EvaluateOptions, Measurements, evaluate
from afxest.store import load_model
from checkpoints import one_step_checkpoint  # tests/checkpoints.py

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fm")
    loaded = load_model(str(one_step_checkpoint(root / "run", "fm")))
    result = evaluate(loaded, root / "eval", n=6, samples=10, seed=3, log=lambda _m: None, figures=False)
    return loaded, result, root / "eval"


@pytest.fixture(scope="module")
def eq_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eq")
    loaded = load_model(str(one_step_checkpoint(root / "run", "eq")))
    messages: list[str] = []
    result = evaluate(loaded, root / "eval", n=2, samples=3, seed=5, log=messages.append, figures=False)
    return loaded, result, root / "eval", messages


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _matrix(rows, kind: str, metric: str) -> np.ndarray:
    items = sorted({int(r["item"]) for r in rows})
    picked = [r for r in rows if r["kind"] == kind]
    n = max(int(r["candidate"]) for r in picked) + 1
    m = np.full((len(items), n), np.nan)
    for r in picked:
        m[int(r["item"]), int(r["candidate"])] = float(r[metric])
    return m


def test_best_of_n_matches_numpy_and_is_monotone(fm_run):
    _, result, folder = fm_run
    rows = _rows(folder)
    assert set(result.best_of) == set(BEST_OF)
    for metric in result.metrics:
        m = _matrix(rows, "model", metric)
        assert m.shape == (6, 10) and not np.isnan(m).any()
        lower = metric != "si_sdr"
        means = []
        for k in BEST_OF:
            best = m[:, :k].min(axis=1) if lower else m[:, :k].max(axis=1)
            assert result.best_of[k][metric] == pytest.approx((best.mean(), best.std()), rel=1e-12, abs=1e-12)
            means.append(result.best_of[k][metric][0])
        steps = np.diff(means)
        assert (steps <= 1e-12).all() if lower else (steps >= -1e-12).all()
        assert result.expectation[metric][0] == pytest.approx(m.mean(axis=1).mean(), rel=1e-12)
        u = _matrix(rows, "uniform", metric)
        best_u = u.min(axis=1) if lower else u.max(axis=1)
        assert result.uniform_best10[metric][0] == pytest.approx(best_u.mean(), rel=1e-12)
    # entropy: a posterior's bits/dim are finite and the same for every candidate of an item
    ent = _matrix(rows, "model", "entropy_bits")
    assert np.isfinite(ent).all() and (ent == ent[:, :1]).all()
    assert result.entropy[0] == pytest.approx(ent[:, 0].mean(), rel=1e-12)


def fm_tone(fm: dict[str, float], t: np.ndarray) -> np.ndarray:
    """DAFx 2025 Eq. 19 written out here: a sin(2 pi fc t + I sin(2 pi fc ratio t))."""
    return fm["amplitude"] * np.sin(2 * np.pi * fm["carrier_hz"] * t
                                    + fm["modulation_index"] * np.sin(2 * np.pi * fm["carrier_hz"] * fm["frequency_ratio"] * t))


def test_si_sdr_is_the_closed_form_of_the_rerendered_audio(fm_run):
    """Each candidate's SI-SDR: the closed form on its tone, synthesised by Eq. 19 written out
    here from its results.csv row, against the item's wet."""
    from afxest.data import make_batch

    loaded, _, folder = fm_run
    task = loaded.task
    rows = [r for r in _rows(folder) if r["kind"] == "model" and r["item"] == "2"][:3]
    batch = make_batch(task, None, np.random.default_rng([3, ITEM_STREAM, 2]), 1)
    s = batch.wet[0, 0].astype(np.float64)
    times = np.arange(task.clip_samples) / task.sample_rate
    for r in rows:
        z = np.array([float(r[name]) for name in task.model.names])
        e = fm_tone(task.model.preset(z, task.name, task.sample_rate).source.params, times)
        alpha = (e @ s) / (s @ s + 1e-8)
        t = alpha * s
        expected = 10 * np.log10((t @ t + 1e-8) / ((t - e) @ (t - e) + 1e-8))
        assert float(r["si_sdr"]) == pytest.approx(expected, abs=1e-3)


def test_results_depend_only_on_the_seed(fm_run, tmp_path):
    loaded, _, folder = fm_run
    torch.manual_seed(12345)  # global state must not matter
    np.random.seed(6789)
    options = EvaluateOptions(n=6, samples=10, seed=3, log=lambda _m: None, figures=False)  # the options as one object
    evaluate(loaded, tmp_path / "again", options)
    assert (tmp_path / "again" / "results.csv").read_text() == (folder / "results.csv").read_text()
    evaluate(loaded, tmp_path / "other", n=2, samples=10, seed=4, log=lambda _m: None, figures=False)
    assert (tmp_path / "other" / "results.csv").read_text() != (folder / "results.csv").read_text()


def _report_table(folder: Path, heading: str) -> dict[str, dict[str, str]]:
    """The markdown table under ``## heading`` of report.md: row label -> column title -> cell."""
    section = (folder / "report.md").read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    titles = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(titles[1:], cells[1:]))
    return rows


def test_report_puts_the_papers_numbers_in_their_cells(fm_run):
    """DAFx 2025 Table 3 (fm), transcribed from the paper here, each number in its row and
    column; "-" where the paper gives none; our rows are the evaluation's own means."""
    _, result, folder = fm_run
    table = _report_table(folder, "Expectation (Table 1/3, Eq. 18)")
    columns = ["Entropy (bits/dim)", "SOT", "Mel", "MR-STFT", "SI-SDR"]
    assert table["Deter. (paper)"] == dict(zip(columns, ["-", "0.39", "0.063", "-", "32.52"]))
    assert table["Infer. T=1 (paper)"] == dict(zip(columns, ["-2.43", "2.12", "0.386", "-", "15.2"]))
    assert table["Rand. (paper)"] == dict(zip(columns, ["-", "51.6", "4.686", "-", "2.13"]))
    mean, std = result.expectation["si_sdr"]
    assert table["Infer. (ours)"]["SI-SDR"] == f"{mean:.3f} ± {std:.3f}"
    best = _report_table(folder, "Best of N (Table 2)")
    mean, std = result.best_of[10]["sot"]
    assert best["Best of 10"]["SOT"] == f"{mean:.3f} ± {std:.3f}" and best["Best of 10"]["SI-SDR (paper)"] == "-"


def test_eq_input_baseline_is_dry_against_wet(eq_run):
    from afxest.data import DrySource, make_batch
    from afxest.losses import LogMelLoss

    loaded, result, folder, messages = eq_run
    task = loaded.task
    assert any("procedural" in m for m in messages)  # announced
    mel = LogMelLoss(task.sample_rate)
    values = []
    for i in range(2):
        batch = make_batch(task, DrySource(None, task.sample_rate), np.random.default_rng([5, ITEM_STREAM, i]), 1)
        with torch.no_grad():
            values.append(float(mel(torch.from_numpy(batch.dry), torch.from_numpy(batch.wet))[0]))
    assert result.input_baseline["mel"][0] == pytest.approx(np.mean(values), rel=1e-5)
    rows = _rows(folder)
    assert _matrix(rows, "model", "mel").shape == (2, 3)
    assert set(result.best_of) == {1, 2, 3}
    # DAFx 2025 Tables 1-2 (eq), transcribed from the paper here, in their cells
    table = _report_table(folder, "Expectation (Table 1/3, Eq. 18)")
    assert table["Input (paper)"]["Mel"] == "2.154" and table["Deter. (paper)"]["SI-SDR"] == "14.8"
    best = _report_table(folder, "Best of N (Table 2)")
    assert [best[f"Best of {k}"]["SI-SDR (paper)"] for k in (1, 2, 3)] == ["13.5", "15.3", "16.2"]
    assert best["Uniform, best of 10"]["SI-SDR (paper)"] == "11.8"


@pytest.mark.parametrize("keywords, message", [
    ({"n": 0}, "--n must be at least 1"),
    ({"samples": 0}, "--samples must be at least 1"),
    ({"refine": -1}, "--refine must be at least 0"),
    ({"effort": "slow"}, "unknown effort 'slow'"),
])
def test_bad_options_are_refused_before_anything_is_read_or_written(eq_run, tmp_path, keywords, message):
    loaded = eq_run[0]  # an effect task: its procedural source would be announced once set up
    messages: list[str] = []
    with pytest.raises(UserError, match=message):
        evaluate(loaded, tmp_path / "eval", log=messages.append, **keywords)
    assert not (tmp_path / "eval").exists() and messages == []


def test_measure_scores_and_records_each_candidate():
    """One row kind of one item: every metric of each render against the wet, kept in the
    item's row of the kind's table, and one results.csv row per candidate (the L1 distance
    and the peak of the error as metrics, computed again in numpy)."""
    fns = {"l1": lambda y_hat, y: (y_hat - y).abs().mean(dim=(1, 2)),
           "peak": lambda y_hat, y: (y_hat - y).abs().amax(dim=(1, 2))}
    n, d, k = 2, 2, 3
    m = Measurements(fns, n, d, np.full(n, np.nan), None, np.empty((n, d)), np.empty((n, d)), {}, None)
    rng = np.random.default_rng(0)
    wet = rng.standard_normal((1, 64)).astype(np.float32)
    audio = rng.standard_normal((2, k, 1, 64)).astype(np.float32)
    z = rng.random((k, d))
    m.measure(0, "uniform", audio[0], wet, z)
    m.measure(1, "uniform", audio[1], wet, None, entropy=-1.5)
    error = np.abs(audio.astype(np.float64) - wet)
    expected = {"l1": error.mean(axis=(2, 3)), "peak": error.max(axis=(2, 3))}
    for metric in fns:
        np.testing.assert_allclose(m.scores["uniform"][metric], expected[metric], rtol=1e-5)
    assert [r[:3] for r in m.rows] == [[i, "uniform", j] for i in range(n) for j in range(k)]
    for r in m.rows:
        i, j = r[0], r[2]
        assert [float(r[3]), float(r[4])] == pytest.approx([expected["l1"][i, j], expected["peak"][i, j]], rel=1e-5)
        assert r[5] == ("nan" if i == 0 else "-1.5")
        assert r[6:] == ([repr(float(x)) for x in z[j]] if i == 0 else ["", ""])


def test_cli_refuses_an_existing_report_without_force(fm_run, capsys):
    loaded, _, folder = fm_run
    args = ["evaluate", "--model", str(loaded.path), "--n", "1", "--samples", "2", "--out", str(folder)]
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err


def test_deterministic_model_gives_one_candidate(tmp_path):
    loaded = load_model(str(one_step_checkpoint(tmp_path / "run", "fm", "deterministic")))
    result = evaluate(loaded, tmp_path / "eval", n=3, samples=10, seed=1, log=lambda _m: None, figures=False)
    assert result.samples == 1 and result.entropy is None and set(result.best_of) == {1}
    # each item's one candidate is the network's output on the item's tone, synthesised by
    # DAFx Eq. 19 written out here and measured by SI-SDR in numpy
    from afxest.data import make_batch

    task = loaded.task
    t = np.arange(task.clip_samples) / task.sample_rate
    expected = []
    for i in range(3):
        wet = make_batch(task, None, np.random.default_rng([1, ITEM_STREAM, i]), 1).wet
        with torch.no_grad():
            z = loaded.estimator.sample(torch.from_numpy(wet)).z[0, 0].double().numpy()
        e = fm_tone(task.model.preset(z, task.name, task.sample_rate).source.params, t)
        s = wet[0, 0].astype(np.float64)
        target = (e @ s) / (s @ s + 1e-8) * s
        expected.append(10 * np.log10((target @ target + 1e-8) / ((target - e) @ (target - e) + 1e-8)))
    assert result.expectation["si_sdr"][0] == pytest.approx(np.mean(expected), abs=1e-3)
    assert result.best_of[1]["si_sdr"][0] == pytest.approx(np.mean(expected), abs=1e-3)
    rows = _rows(tmp_path / "eval")
    assert _matrix(rows, "model", "sot").shape == (3, 1)
    assert "Deter. (ours)" in (tmp_path / "eval" / "report.md").read_text()


def test_music_folder_uses_the_test_split(eq_run, tmp_path, monkeypatch):
    import soundfile as sf

    from afxest.data import procedural_music, split_of

    monkeypatch.setenv("AFXEST_CACHE_DIR", str(tmp_path / "cache"))
    loaded = eq_run[0]
    music = tmp_path / "music"
    music.mkdir()
    rng = np.random.default_rng(0)
    names = [f"track{k}.wav" for k in range(200)]
    test_name = next(n for n in names if split_of(n) == "test")
    other = next(n for n in names if split_of(n) == "train")
    sr = loaded.task.sample_rate
    sf.write(music / test_name, procedural_music(rng, 6 * sr, sr), sr)
    sf.write(music / other, np.zeros(6 * sr, np.float32), sr)  # silent: would be a poor input baseline
    # a validation file too: a folder without one lends a file to validation (issue 12), possibly the test one
    sf.write(music / next(n for n in names if split_of(n) == "val"), np.zeros(6 * sr, np.float32), sr)
    messages: list[str] = []
    result = evaluate(loaded, tmp_path / "eval", data=music, n=1, samples=2, seed=0, log=messages.append, figures=False)
    assert result.source == "music" and not any("procedural" in m for m in messages)
    assert np.isfinite(result.input_baseline["mel"][0])
    empty = tmp_path / "empty"
    empty.mkdir()
    sf.write(empty / other, np.zeros(6 * sr, np.float32), sr)
    with pytest.raises(UserError, match="no test-split track"):
        evaluate(loaded, tmp_path / "eval2", data=empty, n=1, samples=2, log=lambda _m: None)


def test_refine_improves_every_candidate_and_is_tabulated(tmp_path):
    """--refine: each candidate's refined log-mel (rendered by pedalboard) is no worse than its
    own before (the best iterate includes the start), better on average, and the refined table
    is the numpy summary of the "refined" rows."""
    loaded = load_model(str(one_step_checkpoint(tmp_path / "run", "eq")))
    result = evaluate(loaded, tmp_path / "eval", n=2, samples=3, seed=5, log=lambda _m: None, figures=False, refine=25)
    rows = _rows(tmp_path / "eval")
    before, after = _matrix(rows, "model", "mel"), _matrix(rows, "refined", "mel")
    assert after.shape == before.shape == (2, 3)
    assert (after <= before + 2e-3).all(), (before, after)  # ddsp vs pedalboard: tiny differences
    assert after.mean() < 0.8 * before.mean(), (before, after)
    sdr = _matrix(rows, "refined", "si_sdr")
    assert result.refined_expectation["si_sdr"][0] == pytest.approx(sdr.mean(axis=1).mean(), rel=1e-12)
    assert result.refined_best_of[3]["mel"][0] == pytest.approx(after.min(axis=1).mean(), rel=1e-12)
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "## After --refine 25" in text


def test_fm_parameter_error_in_physical_units_is_the_closed_form(fm_run):
    """Error table vs Eqs. 20a/20b applied by hand to the truth and candidate rows of results.csv;
    the spread is the std of each item's candidates."""
    _, result, folder = fm_run
    rows = _rows(folder)
    names = ["0.fm.modulation_index", "0.fm.frequency_ratio"]
    index = lambda v: 4 * np.pi * 10 ** (0.75 * 99 * (v - 1) / 20)  # noqa: E731 - Eq. 20a
    ratio = lambda v: 9.5 * v + 0.5  # noqa: E731 - Eq. 20b
    errors = {name: [] for name in names}
    spreads = {name: [] for name in names}
    for item in range(6):
        truth = next(r for r in rows if r["kind"] == "truth" and int(r["item"]) == item)
        cands = [r for r in rows if r["kind"] == "model" and int(r["item"]) == item]
        for name, f in zip(names, (index, ratio)):
            z = np.array([float(r[name]) for r in cands])
            errors[name].append(np.abs(f(z) - f(float(truth[name]))).mean())
            spreads[name].append(z.std())
    for name in names:
        assert result.param_error[name][0] == pytest.approx(np.mean(errors[name]), rel=1e-9)
        assert result.param_error[name][1] == pytest.approx(np.std(errors[name]), rel=1e-9)
        assert result.param_spread[name][0] == pytest.approx(np.mean(spreads[name]), rel=1e-9)
    assert "## Parameters" in (folder / "report.md").read_text()
    # marginal entropies: bits of a density on [0, 1], so at most 0 (+ estimator noise)
    assert set(result.param_entropy) == set(names)
    assert all(v[0] < 0.1 for v in result.param_entropy.values())
    assert "Marginal entropy (bits)" in (folder / "report.md").read_text()


def test_also_compares_models_on_the_same_items(fm_run, tmp_path, capsys):
    """--also: the other model is evaluated on the same items (same truth rows), its report in
    its own folder, and comparison.md's rows are the numpy means of each results.csv."""
    loaded, _, _ = fm_run
    param = one_step_checkpoint(tmp_path / "param", "fm", "param")
    out = tmp_path / "cmp"
    args = ["evaluate", "--model", str(loaded.path), "--also", str(param), "--n", "2", "--samples", "7",  # not in BEST_OF
            "--out", str(out), "--no-figures"]
    assert main(args) == 0
    sub = out / str(param).strip("/").replace("/", "-")
    main_rows, other_rows = _rows(out), _rows(sub)
    truth = lambda rows: [r for r in rows if r["kind"] == "truth"]  # noqa: E731
    assert truth(main_rows) == truth(other_rows)
    text = (out / "comparison.md").read_text()
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
             for line in text.splitlines() if line.startswith("| `")}
    for rows, name in ((main_rows, str(loaded.path)), (other_rows, str(param))):
        sdr = _matrix(rows, "model", "si_sdr")
        cells = lines[f"`{name}`"]
        assert float(cells[6].split(" ± ")[0]) == pytest.approx(sdr.mean(axis=1).mean(), abs=6e-4)  # SI-SDR
        assert float(cells[8].split(" ± ")[0]) == pytest.approx(sdr.max(axis=1).mean(), abs=6e-4)  # best of
    assert "## Parameters" in text and "0.fm.frequency_ratio" in text
    capsys.readouterr()
    # the same model twice, and a model of another task, are refused before anything is written
    assert main([*args[:5], "--also", str(param), "--out", str(tmp_path / "x")]) == 2
    assert "given twice" in capsys.readouterr().err
    eq = one_step_checkpoint(tmp_path / "eq", "eq", "deterministic")
    assert main([*args[:3], "--also", str(eq), "--out", str(tmp_path / "y")]) == 2
    assert "task 'eq'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_marginal_entropy_matches_closed_forms():
    """Uniform on [0, 1]: 0 bits; normal of std s (well inside [0, 1]): log2(s sqrt(2 pi e));
    uniform on [a, a + w]: log2(w); columns are independent."""
    from afxest.evaluate import marginal_entropy_bits

    rng = np.random.default_rng(0)
    n = 20000
    z = np.stack([rng.random(n), np.clip(rng.normal(0.5, 0.08, n), 0, 1), 0.2 + 0.25 * rng.random(n)], axis=1)
    h = marginal_entropy_bits(z)
    expected = [0.0, np.log2(0.08 * np.sqrt(2 * np.pi * np.e)), np.log2(0.25)]
    np.testing.assert_allclose(h, expected, atol=0.03)
    # with the default 1000 draws the estimate stays within 0.1 bit of the uniform's 0
    assert abs(marginal_entropy_bits(rng.random((1000, 1)))[0]) < 0.1


def test_default_estimate_row_is_the_searched_rank_1_and_beats_the_input(tmp_path):
    """--effort: each item's "default-estimate" row (rank 1 of afxest estimate with the dry,
    rendered by pedalboard) has a lower log-mel than the dry itself, and the table's row is the
    numpy mean of those rows."""
    loaded = load_model(str(one_step_checkpoint(tmp_path / "run", "eq")))
    result = evaluate(loaded, tmp_path / "eval", n=2, samples=2, seed=5, log=lambda _m: None, figures=False, effort="fast")
    rows = _rows(tmp_path / "eval")
    found, dry = _matrix(rows, "default-estimate", "mel"), _matrix(rows, "input", "mel")
    assert found.shape == dry.shape == (2, 1)
    assert (found < 0.5 * dry).all(), (found, dry)
    assert result.default_estimate["mel"][0] == pytest.approx(found.mean(), rel=1e-12)
    sdr = _matrix(rows, "default-estimate", "si_sdr")
    assert result.default_estimate["si_sdr"][0] == pytest.approx(sdr.mean(), rel=1e-12)
    assert "Default estimate, --effort fast (ours)" in (tmp_path / "eval" / "report.md").read_text()


def test_doctests() -> None:
    import doctest

    import afxest.evaluate

    result = doctest.testmod(afxest.evaluate, raise_on_error=False)
    assert result.failed == 0 and result.attempted > 0
