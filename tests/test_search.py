"""afxest.search against independent references: the Sobol net property, closed-form optima,
and an equaliser fit checked with pedalboard's filter and scipy's freqz of the RBJ cookbook."""

from __future__ import annotations

import numpy as np
import pedalboard
import pytest
import scipy.signal
import torch

from afxest import search
from afxest.tasks import TASKS
from reference import cookbook  # tests/reference.py


def test_design_is_a_net_one_point_in_every_cell() -> None:
    """A scrambled Sobol sequence's first 2^m points in 2-D are a (0, m, 2)-net: each of the
    16 x 16 cells of the unit square holds exactly one of 256 points (uniform draws would not)."""
    z = search.design(2, 256, seed=3)
    assert z.shape == (256, 2) and z.min() >= 0 and z.max() < 1
    cells = np.floor(z * 16).astype(int)
    assert len({(a, b) for a, b in cells}) == 256
    assert not np.array_equal(z, search.design(2, 256, seed=4))  # the seed scrambles


def test_waveform_loss_is_the_error_in_db() -> None:
    y = torch.randn(2, 1, 1000, dtype=torch.float64)
    assert search.waveform_loss(0.9 * y, y).numpy() == pytest.approx([-20.0, -20.0], abs=1e-6)


def test_refine_reaches_a_closed_form_optimum_and_stops_when_converged() -> None:
    """One gain z on a signal, target 0.7 x signal: the loss's minimum is z = 0.7; the search
    stops by its tolerance well before the cap and returns its best iterate."""
    x = torch.randn(1, 1, 2000)
    y = 0.7 * x

    def render(z: torch.Tensor) -> torch.Tensor:
        return z[:, :1, None] * x

    out = search.refine(render, search.waveform_loss, np.array([[0.2]]), y, max_steps=5000)
    assert out.z[0, 0] == pytest.approx(0.7, abs=1e-3)
    assert out.steps[0] < 5000
    assert out.loss[0] == pytest.approx(float(search.waveform_loss(render(torch.tensor([[out.z[0, 0]]]).float()), y)), abs=0.5)
    start = search.refine(render, search.waveform_loss, np.array([[0.2]]), y, max_steps=0)
    assert start.z[0, 0] == pytest.approx(0.2) and start.steps[0] == 0


def test_each_candidate_follows_its_own_schedule_whatever_it_is_refined_with() -> None:
    """Two gains refined together end where each ends refined alone (closed-form optima 0.7 and
    0.25), the easy one stopping by its own convergence rule before the other: a candidate's
    path does not depend on its batch."""
    x = torch.randn(1, 1, 2000)
    y = torch.cat([0.7 * x, 0.25 * x])

    def render(z: torch.Tensor) -> torch.Tensor:
        return z[:, :1, None] * x

    both = search.refine(render, search.waveform_loss, np.array([[0.69], [0.9]]), y, max_steps=3000)
    alone = [search.refine(render, search.waveform_loss, np.array([[z0]]), y[i : i + 1], max_steps=3000)
             for i, z0 in enumerate((0.69, 0.9))]
    np.testing.assert_allclose(both.z[:, 0], [0.7, 0.25], atol=1e-3)
    np.testing.assert_allclose(both.z[:, 0], [a.z[0, 0] for a in alone], atol=1e-6)
    assert list(both.steps) == [a.steps[0] for a in alone] and both.steps[0] < both.steps[1] < 3000


def test_background_work_gives_its_value_and_raises_its_error_in_the_caller() -> None:
    """The search's proposals are made in a thread of their own: its value comes back to the
    caller, and so does its error (not a None that would pass for "no proposals")."""
    assert search.Background(lambda: [1, 2]).result() == [1, 2]

    def failing() -> None:
        raise ValueError("no spectrum")

    with pytest.raises(ValueError, match="no spectrum"):
        search.Background(failing).result()


def test_search_in_threads_gives_the_answer_of_one_thread_and_raises_their_errors() -> None:
    """Candidates refined in two threads end as in one (each on its own schedule); an error in
    the second thread reaches the caller."""
    x = torch.randn(1, 1, 1000)
    y = 0.4 * x
    proposals = {"posterior": np.array([[0.9], [0.1], [0.6]])}
    effort = search.Effort("t", keep=3, max_steps=0, dry_steps=400, dry_trials=12, design=0, keep_design=3, windows=1, polish_steps=0)

    def found(workers: int, render=lambda z, _x: z[:, :1, None] * x) -> search.Searched:
        return search.search(proposals, lambda z: np.zeros(len(z)), render, search.waveform_loss, y, x, effort,
                             workers=workers)

    one, two = found(1), found(2)
    np.testing.assert_allclose(two.z, one.z, atol=1e-7)
    np.testing.assert_array_equal(two.steps, one.steps)
    np.testing.assert_allclose(one.z[:, 0], 0.4, atol=2e-3)

    def failing(z: torch.Tensor, _x) -> torch.Tensor:
        if z.detach()[0, 0] < 0.5:  # the second group's candidate (0.1)
            raise RuntimeError("broken renderer")
        return z[:, :1, None] * x

    with pytest.raises(RuntimeError, match="broken renderer"):
        found(3, failing)


def test_search_keeps_the_best_proposals_by_the_cheap_score() -> None:
    x = torch.randn(1, 1, 500)
    y = 0.3 * x
    proposals = {"posterior": np.array([[0.9], [0.35]]), "design": np.array([[0.1], [0.6]])}
    cheap = lambda z: np.abs(z[:, 0] - 0.3)  # noqa: E731
    effort = search.Effort("t", keep=2, max_steps=0, dry_steps=0, dry_trials=0, design=0, keep_design=2, windows=1, polish_steps=0)
    found = search.search(proposals, cheap, lambda z, _x: z[:, :1, None] * x, search.waveform_loss, y, None, effort)
    assert found.origin == ["posterior", "design"]
    np.testing.assert_allclose(found.z[:, 0], [0.35, 0.1])
    np.testing.assert_allclose(found.loss_before, [0.05, 0.2])
    assert found.proposals == {"posterior": 2, "design": 2}


def test_long_term_spectrum_is_welchs_estimate_and_the_fit_weight_its_top_60_db() -> None:
    """The long-term spectrum is scipy's Welch estimate (Hann frames of 4096, half overlap, no
    detrending) up to its constant scaling. White noise through an 8th-order Butterworth low-pass
    (2 kHz): the fit's weight keeps the bins where the filter's own response (scipy's sosfreqz)
    is within 55 dB of its peak, drops those more than 65 dB below, and drops DC."""
    rate, n = 22050, search.EQ_FIT_FFT
    sos = scipy.signal.butter(8, 2000, fs=rate, output="sos")
    x = scipy.signal.sosfilt(sos, np.random.default_rng(1).standard_normal(4 * rate))
    ours = search.long_term_spectrum_db(x)
    freqs, density = scipy.signal.welch(x, rate, window=np.hanning(n), nperseg=n, noverlap=n // 2, detrend=False)
    difference = (ours - 10 * np.log10(density))[1:-1]  # one-sided density doubles all but DC and Nyquist
    assert np.ptp(difference) < 1e-3  # dB (the 1e-20 floor shows in the stopband)
    weight = search.equaliser_fit_weight(ours)
    response_db = 20 * np.log10(np.abs(scipy.signal.sosfreqz(sos, worN=freqs, fs=rate)[1]) + 1e-300)
    assert weight[0] == 0.0
    assert np.all(weight[1:][response_db[1:] > -55.0] == 1.0)
    assert np.all(weight[response_db < -65.0] == 0.0) and np.any(response_db < -65.0)


def test_equaliser_fit_matches_the_long_term_ratio_of_a_pedalboard_shelf() -> None:
    """Noise through pedalboard's high shelf (1200 Hz, +8 dB, q 0.7): the eq task's two shelves
    fitted to the long-term spectral ratio have, by scipy's freqz, the shelf's response within
    0.5 dB below 8 kHz (up to the broadband level the fit leaves free)."""
    task = TASKS["eq"]
    rate = task.sample_rate
    dry = np.random.default_rng(0).standard_normal(3 * rate).astype(np.float32) * 0.1
    wet = pedalboard.HighShelfFilter(1200.0, 8.0, 0.7)(dry[None], rate)[0]
    ratio, weight = search.long_term_ratio_db(dry, wet)
    z0 = np.full((1, task.model.dim), 0.5)
    z = search.fit_equaliser(task.model, z0, ratio, weight, rate, steps=400)
    freqs = np.linspace(50, 8000, 200)
    target = 20 * np.log10(np.abs(scipy.signal.freqz(*cookbook("high_shelf", 1200.0, 8.0, 0.7, rate), worN=freqs, fs=rate)[1]))
    fitted = np.zeros_like(freqs)
    for kind, p in task.model.split(z[0]):
        b, a = cookbook(kind, p["cutoff_frequency_hz"], p["gain_db"], p["q"], rate)
        fitted += 20 * np.log10(np.abs(scipy.signal.freqz(b, a, worN=freqs, fs=rate)[1]))
    offset = np.mean(target - fitted)
    assert np.max(np.abs(fitted + offset - target)) < 0.5
    assert abs(offset) < 0.5  # the shelves carry the gain themselves


def test_synth_search_polishes_on_the_waveform_to_the_exact_ratio() -> None:
    """An FM tone of index 5.34 and ratio 4.015 (v = 0.9, 0.37), a start whose ratio is 0.004
    off (0.4 Hz of modulator: spectrally right, SI-SDR near 0 dB): the first stage's spectral
    loss barely moves it, the waveform polish brings the ratio ten times closer and the
    waveform match (SI-SDR, computed here in numpy) from about 0 dB to over 20 dB."""
    from afxest.losses import SpectralOTLoss
    from afxest.engines import render_model

    task = TASKS["fm"]
    truth = torch.tensor([[0.9, 0.37]], dtype=torch.float64)
    y = render_model(task, truth, None)
    start = np.array([[0.9, 0.37 - 0.004 / 9.5]])
    sot = SpectralOTLoss(task.sample_rate, unit="bins")
    effort = search.Effort("t", keep=1, max_steps=300, dry_steps=0, dry_trials=0, design=0, keep_design=1, windows=1, polish_steps=300)
    found = search.search({"posterior": start}, lambda z: np.zeros(len(z)), lambda z, _x: render_model(task, z, None),
                          sot, y, None, effort)
    ratio = task.model.ranges[1]
    assert abs(ratio.to_physical(found.z[0, 1]) - 4.015) < 1e-3 < abs(ratio.to_physical(start[0, 1]) - 4.015)

    def si_sdr_db(z: np.ndarray) -> float:
        s = y.double().numpy().ravel()
        e = render_model(task, torch.from_numpy(z), None).double().numpy().ravel()
        target = (e @ s) / (s @ s) * s
        return 10 * np.log10((target @ target) / ((target - e) @ (target - e)))

    assert si_sdr_db(start) < 5 and si_sdr_db(found.z) > 20
    assert found.loss_after[0] == pytest.approx(float(sot(render_model(task, torch.from_numpy(found.z), None), y)), abs=1e-3)


def test_least_squares_lands_on_an_fm_tone_a_hair_away_and_never_moves_a_lost_one() -> None:
    """Levenberg-Marquardt on a closed-form FM tone, y = sin(2 pi 110 t + I sin(2 pi 110 r t))
    (I = 12 z_0, r = 0.5 + 9.5 z_1; written here, not afxest's synth): from a start with the
    ratio 0.0004 off and the index 0.3 % off (about 20 dB), it reaches the tone's z to 1e-7 and
    an error below -100 dB; a start in another basin (the ratio 0.3 off) is never made worse."""
    rate, frames = 22050, 2756
    t = torch.arange(frames, dtype=torch.float64) / rate

    def tone(z):
        index, ratio = 12 * z[:, :1], 0.5 + 9.5 * z[:, 1:]
        return torch.sin(2 * np.pi * 110 * t + index * torch.sin(2 * np.pi * 110 * ratio * t))[:, None, :]

    truth = np.array([[0.61, 0.4383]])
    near = truth + np.array([[0.003 * 0.61, 0.0004 / 9.5]])
    lost = truth + np.array([[0.0, 0.3 / 9.5]])
    y = tone(torch.from_numpy(np.concatenate([truth, truth])))
    start = np.concatenate([near, lost])
    before = search.waveform_loss(tone(torch.from_numpy(start)), y).numpy()
    found = search.least_squares(tone, start, y, 30)
    np.testing.assert_allclose(found.z[0], truth[0], atol=1e-7)
    assert before[0] > -25 and found.loss[0] < -100
    assert found.loss[1] <= before[1] + 1e-9
    np.testing.assert_allclose(found.loss, search.waveform_loss(tone(torch.from_numpy(found.z)), y).numpy(), atol=1e-6)


def test_least_squares_with_a_dry_lands_on_pedalboards_master_chain_from_near_it() -> None:
    """Forward differences on the float32 rendering of the master task's chain (equalisers,
    compressor, gain, clipper) on a gated noise: from a start 0.02 off every parameter of the
    truth, Levenberg-Marquardt takes the waveform error against pedalboard's rendering of the
    truth (tests/reference.py's plugins) from above -30 dB to below -80 dB and every parameter
    to within 1e-3 of the truth."""
    import json

    from afxest.engines import render_model
    from afxest.presets import dumps_preset
    from reference import reference_render

    task = TASKS["master"]
    rate, d = task.sample_rate, task.model.dim
    rng = np.random.default_rng(3)
    t = np.arange(rate) / rate
    dry = (0.3 * rng.standard_normal(rate) * np.where(np.sin(2 * np.pi * 3 * t) > 0, 1.0, 0.2)).astype(np.float32)
    truth = rng.uniform(0.2, 0.8, d)
    preset = json.loads(dumps_preset(task.model.preset(truth, task.name, rate)))
    y = torch.from_numpy(reference_render(preset, dry[None], rate)[None].astype(np.float32))
    x = torch.from_numpy(dry[None, None])
    start = truth + 0.02 * rng.choice([-1.0, 1.0], d)

    def chain(z: torch.Tensor) -> torch.Tensor:
        return render_model(task, z.float(), x.repeat(len(z), 1, 1))

    before = float(search.waveform_loss(chain(torch.from_numpy(start[None])), y)[0])
    found = search.least_squares(chain, start[None], y, 12, step=1e-3, central=False)
    assert before > -30 and found.loss[0] < -80
    np.testing.assert_allclose(found.z[0], truth, atol=1e-3)


def test_least_squares_holds_a_stepped_parameter_and_fits_the_others() -> None:
    """An echo of a noise, y = g x[n] + m x[n - D] with D = floor(100 z_2) samples (a step
    function of z_2, as a delay time is) and g = z_0, m = z_1 (written here): from a start with
    the right D, a forward difference in z_2 crosses a step (z_2 = 0.3799 -> D 37 to 38), so
    the trials hold z_2 (``held``) and land g and m on the truth; z_2 is returned as it came.
    The Jacobian is not rendered for the held parameter: two copies a Jacobian."""
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal(2000))
    renderings = []

    def echo(z: torch.Tensor) -> torch.Tensor:
        renderings.append(len(z))
        rows = [z[i, 0] * x + z[i, 1] * torch.roll(x, int(np.floor(100 * float(z[i, 2])))) for i in range(len(z))]
        return torch.stack(rows)[:, None, :]

    truth = np.array([[0.4, 0.7, 0.3799]])
    y = echo(torch.from_numpy(truth))
    start = np.array([[0.9, 0.2, 0.3799]])
    renderings.clear()
    found = search.least_squares(echo, start, y, 10, step=1e-3, central=False, held=np.array([False, False, True]))
    np.testing.assert_allclose(found.z[0, :2], truth[0, :2], atol=1e-6)
    assert found.z[0, 2] == start[0, 2] and found.loss[0] < -100
    assert max(renderings) == 2  # the Jacobian's copies: the two free parameters


@pytest.mark.parametrize("index, ratio", [(6.0, 7.3), (9.77, 9.8), (2.0, 0.73), (4.0, 3.0)])
def test_the_modulator_ratio_is_read_from_an_fm_tones_spectrum(index: float, ratio: float) -> None:
    """A closed-form FM tone (0.125 s at 22050 Hz, carrier 110 Hz): the ratio read from its
    spectrum is the tone's to 0.002."""
    rate = 22050
    t = np.arange(2756) / rate
    tone = np.sin(2 * np.pi * 110 * t + index * np.sin(2 * np.pi * 110 * ratio * t))
    assert search.modulator_ratio(tone, rate, 110.0, 0.5, 10.0) == pytest.approx(ratio, abs=0.002)


def test_spectrum_proposals_set_the_measured_ratio_of_the_fm_task_only() -> None:
    task = TASKS["fm"]
    truth = np.array([[0.7, 0.62]])
    from afxest.engines import render_model

    tone = render_model(task, torch.from_numpy(truth), None)[0, 0].double().numpy()
    z = np.random.default_rng(0).random((5, 2))
    proposals = search.ratio_proposals(task.model, z, tone, task.sample_rate, 8, 0)
    assert proposals.shape == (13, 2)
    np.testing.assert_array_equal(proposals[:5, 0], z[:, 0])
    assert task.model.ranges[1].to_physical(proposals[:, 1]) == pytest.approx(task.model.ranges[1].to_physical(0.62), abs=0.002)
    assert search.ratio_proposals(TASKS["master"].model, np.zeros((1, TASKS["master"].model.dim)), tone, 22050, 8, 0) is None
