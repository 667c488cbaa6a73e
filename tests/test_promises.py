"""Promises of docs/estimate.md that no other test pins (issue 25), each checked through
``afxest estimate`` on tiny files against values written here: the documented numbers, or a
reference computed here independently of afxest's own code.

Every test was shown to fail with the behaviour broken (the issue's table, and the report of
the commit that added them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pedalboard
import pytest
import soundfile

from afxest import temper
from afxest.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

EQ_RATE = 22050  # docs/estimate.md, Inputs: the eq task's rate
FM_RATE = 44100
WINDOW = 5 * EQ_RATE  # "the wet is cut into windows of the task's clip length (eq: 5 s)"


def write(path: Path, audio: np.ndarray, rate: int) -> Path:
    soundfile.write(path, np.asarray(audio, np.float32), rate, subtype="FLOAT")
    return path


def estimate(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str]:
    """``afxest estimate`` in-process: (exit code, stderr); stdout is kept in ``estimate.out``."""
    capsys.readouterr()
    rc = main(["estimate", *[str(a) for a in argv], "--no-progress"])
    captured = capsys.readouterr()
    estimate.out = captured.out  # type: ignore[attr-defined]
    return rc, captured.err


def strict_json(path: Path) -> dict[str, Any]:
    """The document, refusing the NaN/Infinity tokens that strict JSON does not have."""

    def refuse(token: str) -> None:
        raise ValueError(f"{path}: non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def shelved_noise(seed: int, cutoff: float, gain_db: float, seconds: float = 5.0) -> np.ndarray:
    """White noise through one pedalboard high shelf (q 0.7): an eq task's wet, (frames,)."""
    x = (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * EQ_RATE))).astype(np.float32)
    return pedalboard.HighShelfFilter(cutoff_frequency_hz=cutoff, gain_db=gain_db, q=0.7)(x[None], EQ_RATE)[0]


def eq_normalised(preset: dict[str, Any]) -> np.ndarray:
    """An eq-model preset's normalised parameters by DAFx 2025 Eqs. 15a-c as docs/training.md
    states them (f 500-2500 Hz exponential, g +-10 dB, Q 0.1-3 affine), written out here."""
    z = []
    for e in preset["effects"]:
        z += [math.log(e["cutoff_frequency_hz"] / 500.0) / math.log(2500.0 / 500.0),
              (e["gain_db"] + 10.0) / 20.0, (e["q"] - 0.1) / 2.9]
    return np.array(z)


def total_gain(candidate: dict[str, Any]) -> float:
    """The two shelves' gains added: the candidate's high-frequency gain in dB."""
    return sum(e["gain_db"] for e in candidate["preset"]["effects"])


# --- the ranking table: blind, with a point estimator ------------------------------------------


def test_blind_point_estimator_keeps_the_medoid_of_the_windows_estimates(tmp_path: Path, capsys) -> None:
    """docs/estimate.md, Ranking, last row: an effect task without a dry file and a point
    estimator: ranked_by null, loss and log_prob null, and the medoid of the windows' estimates
    as the one candidate. Windows B, A, A', C (A' is A's shelf on other noise): the medoid is
    A's or A''s estimate, while the first window (B), the last (C) or a mean are not."""
    b, a, a2, c = (shelved_noise(4, 2000.0, -12.0), shelved_noise(3, 1000.0, 12.0),
                   shelved_noise(6, 1000.0, 12.0), shelved_noise(5, 600.0, 4.0))
    write(tmp_path / "long.wav", np.concatenate([b, a, a2, c]), EQ_RATE)
    alone = {}
    for name, x in (("B", b), ("A", a), ("A2", a2), ("C", c)):
        write(tmp_path / f"{name}.wav", x, EQ_RATE)
    out = tmp_path / "out"
    for name in ("long", "B", "A", "A2", "C"):
        rc, err = estimate(capsys, tmp_path / f"{name}.wav", "--model", "eq-deterministic", "-o", out, "--no-audio")
        assert rc == 0, err
        doc = strict_json(out / name / "estimate.json")
        assert doc["ranked_by"] is None and doc["analysis"]["estimator"] == "deterministic"
        assert len(doc["candidates"]) == 1, name  # one estimate, whatever --samples says
        (only,) = doc["candidates"]
        assert only["loss"] is None and only["log_prob"] is None and only["rank"] == 1
        alone[name] = eq_normalised(only["preset"])
    long = alone.pop("long")
    assert strict_json(out / "long" / "estimate.json")["analysis"]["windows_used"] == 4
    # the medoid, computed here: the window's estimate with the least summed distance to the
    # others', in normalised space; L1 and L2 agree on it, and it is A's or A''s
    names = ["B", "A", "A2", "C"]
    points = np.stack([alone[k] for k in names])
    medoids = {names[int(np.argmin(np.linalg.norm(points[:, None] - points[None], ord=o, axis=2).sum(axis=1)))]
               for o in (1, 2)}
    assert len(medoids) == 1 and medoids <= {"A", "A2"}, medoids
    (medoid,) = medoids
    mean = points.mean(axis=0)
    assert min(np.abs(mean - p).max() for p in points) > 0.01  # the mean is no window's estimate
    # the one candidate is that window's estimate (the encoder batches the four windows of the
    # long file together: float32 rounding apart, the same numbers)
    assert np.abs(long - alone[medoid]).max() < 1e-4, (long, alone)


def test_blind_medoid_counts_windows_that_agree(tmp_path: Path, capsys) -> None:
    """Windows B, A, A, C (A twice, the same samples): A's estimate has the least summed
    distance to the windows' estimates under any metric (triangle inequality)."""
    b, a, c = shelved_noise(4, 2000.0, -12.0), shelved_noise(3, 1000.0, 12.0), shelved_noise(5, 600.0, 4.0)
    write(tmp_path / "long.wav", np.concatenate([b, a, a, c]), EQ_RATE)
    write(tmp_path / "A.wav", a, EQ_RATE)
    out = tmp_path / "out"
    for name in ("long", "A"):
        rc, err = estimate(capsys, tmp_path / f"{name}.wav", "--model", "eq-deterministic", "-o", out, "--no-audio")
        assert rc == 0, err
    long, alone = (eq_normalised(strict_json(out / n / "estimate.json")["candidates"][0]["preset"]) for n in ("long", "A"))
    assert np.abs(long - alone).max() < 1e-4, (long, alone)


# --- Candidates and Pooling: several windows ----------------------------------------------------


def window_embeddings(model, wet: np.ndarray, windows: int):
    """The encoder's embedding of each 5 s window of ``wet``, (windows, C) float64."""
    import torch

    x = torch.from_numpy(np.stack([wet[i * WINDOW : (i + 1) * WINDOW] for i in range(windows)])[:, None])
    with torch.inference_mode():
        return model.estimator.encoder(x).double()


@pytest.mark.parametrize("pattern, draws_from_plus", [("+-+-", 4), ("++--", 3)])
def test_blind_draws_are_spread_over_windows_and_log_prob_is_their_mean(
    tmp_path: Path, capsys, pattern: str, draws_from_plus: int
) -> None:
    """docs/estimate.md, Candidates: of N draws and U usable windows, candidate i comes from
    window floor(i U / N). With U = 4 and N = 6 that is windows 0, 0, 1, 2, 2, 3: 4 draws from
    the windows of pattern "+-+-" that boost the highs by 15 dB, 3 from those of "++--" (one
    draw per window in turn would give 3 and 4; the loudest window alone 6 and 0). Pooling:
    each candidate's log_prob is the mean over the 4 windows of ln p(z | window), recomputed
    here from the model's per-window densities (untempered, as the candidates are drawn)."""
    import copy

    import torch

    from afxest.store import load_model

    plus, minus = shelved_noise(1, 1200.0, 15.0), shelved_noise(2, 1200.0, -15.0)
    wet = np.concatenate([plus if s == "+" else minus for s in pattern])
    write(tmp_path / "wet.wav", wet, EQ_RATE)
    rc, err = estimate(capsys, tmp_path / "wet.wav", "--model", "eq", "--samples", 6, "-o", tmp_path, "--no-audio")
    assert rc == 0, err
    doc = strict_json(tmp_path / "wet" / "estimate.json")
    assert doc["ranked_by"] == "log_prob" and doc["analysis"]["windows_used"] == 4 and len(doc["candidates"]) == 6
    gains = [total_gain(c) for c in doc["candidates"]]
    # a +15 dB window's draws boost by well over 12 dB; a -15 dB window's stay well below
    assert all(g > 17 or g < 8 for g in gains), gains
    assert sum(g > 12 for g in gains) == draws_from_plus, gains
    # pooling: the mean over windows of the per-window log-densities (float64, as documented)
    model = load_model("eq")
    head = copy.deepcopy(model.estimator.head).to(torch.float64).eval()
    temper.apply(head, None)  # the candidates' densities are the untempered posterior's (afxest.temper)
    h = window_embeddings(model, wet, 4)
    z = torch.from_numpy(np.stack([eq_normalised(c["preset"]) for c in doc["candidates"]]))
    with torch.inference_mode():
        per_window = head.log_prob(z.expand(4, *z.shape), h).numpy()  # (windows, candidates)
    expected = per_window.mean(axis=0)
    got = np.array([c["log_prob"] for c in doc["candidates"]])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # not the proposing window's own density, nor the sum: the windows disagree
    assert np.abs(per_window.max(axis=0) - expected).max() > 1.0
    assert got.tolist() == sorted(got.tolist(), reverse=True)  # best first


# --- the search's --effort levels ---------------------------------------------------------------


def fm_tone(path: Path, index: float = 2.0, ratio: float = 3.0) -> Path:
    """A 125 ms two-operator FM tone, y = sin(2 pi 110 t + I sin(2 pi ratio 110 t)) (docs/training.md)."""
    t = np.arange(int(0.125 * FM_RATE)) / FM_RATE
    return write(path, 0.5 * np.sin(2 * np.pi * 110 * t + index * np.sin(2 * np.pi * ratio * 110 * t)), FM_RATE)


# docs/estimate.md, Search: Sobol points of a task of at most 3 parameters, and the proposals kept
# for refinement (fm: 4 / 16 / 64)
FM_EFFORT = {"fast": (256, 4), "default": (1024, 16), "best": (4096, 64)}


@pytest.mark.parametrize("effort", ["fast", "default", "best"])
def test_effort_sets_the_fm_design_and_the_proposals_refined(tmp_path: Path, capsys, effort: str) -> None:
    """A synth (fm): --effort's Sobol design (256 / 1024 / 4096 points), the spectrum's
    proposals (the draws and 128 starts at the ratio read) and proposals kept (4 / 16 / 64);
    --refine 2 caps the steps so the test stays short."""
    design, kept = FM_EFFORT[effort]
    rc, err = estimate(capsys, fm_tone(tmp_path / "tone.wav"), "--model", "fm", "--effort", effort, "--refine", 2,
                       "--samples", 3, "-o", tmp_path, "--no-audio")
    assert rc == 0, err
    doc = strict_json(tmp_path / "tone" / "estimate.json")
    search = doc["analysis"]["search"]
    assert search["effort"] == effort
    assert search["proposals"] == {"posterior": 3, "design": design, "spectrum": 3 + 128}  # the draws and 128 starts
    assert search["step_cap"] == 2  # --refine N overrides the effort's cap
    refined = [c for c in doc["candidates"] if "refinement" in c]
    assert len(refined) == kept and len(doc["candidates"]) == 3 + kept
    assert {c["refinement"]["proposal"] for c in refined} <= {"posterior", "design", "spectrum"}


def short_eq_pair(folder: Path) -> tuple[Path, Path]:
    """A 0.5 s dry (the shortest an effect task takes) and its wet through a +8 dB high shelf."""
    dry = (0.1 * np.random.default_rng(7).standard_normal(EQ_RATE // 2)).astype(np.float32)
    wet = pedalboard.HighShelfFilter(1200.0, 8.0, 0.7)(dry[None], EQ_RATE)[0]
    return write(folder / "wet.wav", wet, EQ_RATE), write(folder / "dry.wav", dry, EQ_RATE)


@pytest.mark.parametrize("effort, cap, trials", [("fast", 100, 12), ("default", 100, 14), ("best", 1000, 12)])
def test_effort_caps_the_refinement_steps(tmp_path: Path, capsys, monkeypatch, effort: str, cap: int,
                                          trials: int) -> None:
    """--effort without --refine: an effect task's search with a dry runs Adam with a step cap
    of 100 / 100 / 1000 (docs/estimate.md) in each of its threads (a call of 0 steps scores the
    Levenberg-Marquardt trials that follow, 12 / 14 / 12 at most), and the steps it reports are
    within the two. (Whether a refinement reaches its cap depends on the pair; `afxest.search.refine`'s
    own tests check that it stops there.)"""
    import afxest.search

    real, caps = afxest.search.refine, []

    def recording(render, loss_fn, z0, y, max_steps, *args, **kwargs):
        caps.append(max_steps)
        return real(render, loss_fn, z0, y, max_steps, *args, **kwargs)

    monkeypatch.setattr(afxest.search, "refine", recording)
    wet, dry = short_eq_pair(tmp_path)
    rc, err = estimate(capsys, wet, "--dry", dry, "--model", "eq", "--effort", effort, "--samples", 2,
                       "-o", tmp_path / "out", "--no-audio")
    assert rc == 0, err
    assert cap in caps and set(caps) <= {cap, 0}
    doc = strict_json(tmp_path / "out" / "wet" / "estimate.json")
    analysis = doc["analysis"]
    assert analysis["search"]["effort"] == effort and analysis["search"]["step_cap"] == cap
    steps = analysis["refine_steps"]
    assert 0 < steps <= cap + trials
    each = [c["refinement"]["steps"] for c in doc["candidates"] if "refinement" in c]
    assert max(each) == steps and min(each) > 0  # each candidate's own, the document's the most


# docs/estimate.md, Search: windows refined on, and proposals kept (master and eq: 1 / 2 / 4)
EQ_EFFORT = {"fast": (1, 1), "default": (2, 2), "best": (4, 4)}


@pytest.mark.parametrize("effort", ["fast", "default", "best"])
def test_effort_sets_the_windows_and_the_proposals_refined_of_an_effect_task(tmp_path: Path, capsys,
                                                                           effort: str) -> None:
    """An effect task (eq) with a dry file of 4 windows (20 s): --effort refines on 1 / 2 / 4
    windows and keeps 1 / 2 / 4 proposals; no Sobol design (6 parameters)."""
    windows, kept = EQ_EFFORT[effort]
    dry = (0.1 * np.random.default_rng(9).standard_normal(4 * WINDOW)).astype(np.float32)
    write(tmp_path / "dry.wav", dry, EQ_RATE)
    write(tmp_path / "wet.wav", pedalboard.HighShelfFilter(1200.0, 6.0, 0.7)(dry[None], EQ_RATE)[0], EQ_RATE)
    rc, err = estimate(capsys, tmp_path / "wet.wav", "--dry", tmp_path / "dry.wav", "--model", "eq", "--effort", effort,
                       "--refine", 1, "--samples", 2, "-o", tmp_path / "out", "--no-audio")
    assert rc == 0, err
    doc = strict_json(tmp_path / "out" / "wet" / "estimate.json")
    search = doc["analysis"]["search"]
    assert search["effort"] == effort and search["windows"] == windows
    assert "design" not in search["proposals"] and search["proposals"]["posterior"] == 2
    assert search["refined"] == kept
    assert 1 <= sum("refinement" in c for c in doc["candidates"]) <= kept  # searches ending alike give one


# --- non-finite numbers, and a ranking that means nothing ----------------------------------------


def test_non_finite_numbers_are_written_as_null(tmp_path: Path, capsys) -> None:
    """A finite float dry of amplitude 1e20: its power (1e40) overflows float32, in which the
    losses are computed (docs/estimate.md, Reproducibility), so every loss, SI-SDR and log-mel
    is non-finite. The document is strict JSON with null there; log_prob (from the ordinary
    wet) stays a number."""
    with np.errstate(over="ignore"):
        assert np.float32(1e20) * np.float32(1e20) == np.inf  # the premise, by IEEE float32 itself
    dry = (0.3 * np.random.default_rng(0).standard_normal(EQ_RATE)).astype(np.float32)
    wet = pedalboard.HighShelfFilter(1200.0, 8.0, 0.7)(dry[None], EQ_RATE)[0]
    write(tmp_path / "dry.wav", dry * np.float32(1e20), EQ_RATE)
    write(tmp_path / "wet.wav", wet, EQ_RATE)
    rc, err = estimate(capsys, tmp_path / "wet.wav", "--dry", tmp_path / "dry.wav", "--model", "eq", "--refine", 0,
                       "--samples", 3, "-o", tmp_path / "out", "--no-audio", "--json")
    assert rc == 0, err
    line = estimate.out  # --json: the same document on stdout
    doc = strict_json(tmp_path / "out" / "wet" / "estimate.json")
    assert json.loads(line, parse_constant=lambda t: pytest.fail(f"stdout has {t}")) == doc
    assert doc["baseline"] == {"loss": None, "si_sdr": None, "log_mel": None}
    for c in doc["candidates"]:
        assert (c["loss"], c["si_sdr"], c["log_mel"]) == (None, None, None), c
        assert isinstance(c["log_prob"], float) and math.isfinite(c["log_prob"])


def test_non_finite_estimates_are_not_written_as_nan(tmp_path: Path, capsys) -> None:
    """A wet whose power overflows float32 (amplitude 1e20, +400 dBFS) gave NaN presets once,
    written as NaN tokens: it is refused now (above +120 dBFS), one line, exit 2."""
    dry = (0.3 * np.random.default_rng(0).standard_normal(EQ_RATE)).astype(np.float32)
    write(tmp_path / "dry.wav", dry, EQ_RATE)
    write(tmp_path / "wet.wav", dry * np.float32(1e20), EQ_RATE)
    rc, err = estimate(capsys, tmp_path / "wet.wav", "--dry", tmp_path / "dry.wav", "--model", "eq", "--refine", 0,
                       "--samples", 2, "-o", tmp_path / "out", "--no-audio")
    assert rc == 2 and not (tmp_path / "out" / "wet").exists()
    assert len(err.strip().splitlines()) == 1 and "above +120 dBFS" in err, err


def test_warns_when_every_candidate_has_the_same_loss(tmp_path: Path, capsys) -> None:
    """docs/estimate.md, Errors: a warning says when a ranking by reconstruction means nothing,
    here because every candidate is at the same loss: a dry 80 dB below the wet renders
    near-silence whatever the shelves, so log-mel distances agree to 1e-6. The estimate is
    still written, exit 0."""
    dry = (0.3 * np.random.default_rng(0).standard_normal(EQ_RATE)).astype(np.float32)
    wet = pedalboard.HighShelfFilter(1200.0, 8.0, 0.7)(dry[None], EQ_RATE)[0]
    write(tmp_path / "dry.wav", dry * np.float32(1e-4), EQ_RATE)  # peaks near -78 dBFS: above the -90 dBFS of a silent file
    write(tmp_path / "wet.wav", wet, EQ_RATE)
    rc, err = estimate(capsys, tmp_path / "wet.wav", "--dry", tmp_path / "dry.wav", "--model", "eq", "--refine", 0,
                       "--samples", 4, "-o", tmp_path / "out", "--no-audio")
    assert rc == 0, err
    doc = strict_json(tmp_path / "out" / "wet" / "estimate.json")
    losses = [c["loss"] for c in doc["candidates"]]
    assert max(losses) - min(losses) <= 1e-6 * max(losses), losses
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {tmp_path / 'wet.wav'}: the ranking by log_mel means nothing: "
                        "every candidate has the same loss"], err
    assert "silent" not in err


def test_no_warning_when_candidates_differ(tmp_path: Path, capsys) -> None:
    """The same wet with its real dry: the candidates' losses differ, and no warning."""
    dry = (0.3 * np.random.default_rng(0).standard_normal(EQ_RATE)).astype(np.float32)
    write(tmp_path / "dry.wav", dry, EQ_RATE)
    write(tmp_path / "wet.wav", pedalboard.HighShelfFilter(1200.0, 8.0, 0.7)(dry[None], EQ_RATE)[0], EQ_RATE)
    rc, err = estimate(capsys, tmp_path / "wet.wav", "--dry", tmp_path / "dry.wav", "--model", "eq", "--refine", 0,
                       "--samples", 4, "-o", tmp_path / "out", "--no-audio")
    assert rc == 0, err
    assert not [line for line in err.splitlines() if line.startswith("warning:")], err
    assert "means nothing" not in err
    losses = [c["loss"] for c in strict_json(tmp_path / "out" / "wet" / "estimate.json")["candidates"]]
    assert max(losses) - min(losses) > 1e-3 * max(losses), losses
