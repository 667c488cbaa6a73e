"""afxest.echoes against closed forms: pedalboard's Delay (the reference of the echo) on noise and
on procedural music, alone and inside an equaliser / compressor / reverb chain; and the search's
``echo`` proposals of the mix task."""

from __future__ import annotations

import numpy as np
import pedalboard
import pytest
import torch

from afxest.data import procedural_music
from afxest.echoes import cepstral_peaks, measure_delay
from afxest.tasks import TASKS

SR = 22050

pytestmark = pytest.mark.usefixtures("one_thread")


def first_echo(seconds: float, sr: int = SR) -> int:
    """Where pedalboard puts the first echo (its own impulse response, not afxest's formula)."""
    impulse = np.zeros((1, 20000), np.float32)
    impulse[0, 0] = 1.0
    return int(np.flatnonzero(pedalboard.Delay(delay_seconds=seconds, feedback=0.0, mix=1.0)(impulse, sr)[0])[0])


def chain(seconds: float, feedback: float, mix: float, around: bool) -> pedalboard.Pedalboard:
    """A pedalboard Delay, alone or after an equaliser and a compressor and before a reverb."""
    line = pedalboard.Delay(delay_seconds=seconds, feedback=feedback, mix=mix)
    if not around:
        return pedalboard.Pedalboard([line])
    return pedalboard.Pedalboard([
        pedalboard.LowShelfFilter(cutoff_frequency_hz=120.0, gain_db=6.0, q=0.7),
        pedalboard.PeakFilter(cutoff_frequency_hz=2500.0, gain_db=-8.0, q=2.0),
        pedalboard.Compressor(threshold_db=-30.0, ratio=4.0, attack_ms=5.0, release_ms=100.0),
        line,
        pedalboard.Reverb(room_size=0.7, damping=0.3, wet_level=0.3, dry_level=0.8, width=1.0),
    ])


CASES = [(0.05, 0.0, 0.2), (0.1234, 0.5, 0.35), (0.37, 0.25, 0.5), (0.79, 0.6, 0.1)]


@pytest.mark.parametrize("source", ["noise", "music"])
@pytest.mark.parametrize("around", [False, True])
@pytest.mark.parametrize("seconds, feedback, mix", CASES)
def test_measured_delay_is_pedalboards(source: str, around: bool, seconds: float, feedback: float, mix: float) -> None:
    rng = np.random.default_rng(5)
    frames = 8 * SR
    dry = (0.1 * rng.standard_normal(frames)).astype(np.float32) if source == "noise" else procedural_music(rng, frames, SR)
    wet = chain(seconds, feedback, mix, around)(dry[None], float(SR))[0]
    echo = measure_delay([dry], [wet], SR, 0.05, 0.8)
    assert abs(echo.samples - first_echo(seconds)) <= 1
    assert first_echo(echo.seconds) == echo.samples  # the time proposed renders at the lag measured
    # the taps' heights: exact but for the noise of what the kept dry does not explain (weak
    # echoes of 0.8 s, and procedural music's repeating notes, measured up to 0.045 of mix)
    assert echo.mix == pytest.approx(mix, abs=0.05 if around or source == "music" else 0.01)
    assert echo.feedback == pytest.approx(feedback, abs=0.12)


def test_segments_are_pooled() -> None:
    """Two short excerpts measure the delay as one long one does (the search gives its windows)."""
    rng = np.random.default_rng(2)
    dry = (0.1 * rng.standard_normal(3 * SR)).astype(np.float32)
    wet = chain(0.3, 0.4, 0.3, False)(dry[None], float(SR))[0]
    half = len(dry) // 2
    echo = measure_delay([dry[:half], dry[half:]], [wet[:half], wet[half:]], SR, 0.05, 0.8)
    assert echo.samples == first_echo(0.3)
    assert echo.mix == pytest.approx(0.3, abs=0.03)


def test_cepstrum_shows_an_echo_in_closed_form() -> None:
    """y = x + a x[n - D] (x zero after T - D samples, so the echo is whole): the cepstrum of y
    is that of x plus a / 2 at D and -a^2 / 4 at 2 D (ln(1 + a e^(-jwD)) expanded)."""
    rng = np.random.default_rng(0)
    n, d, a = 20000, 3000, 0.4
    x = np.zeros(n)
    x[: n - 3 * d] = rng.standard_normal(n - 3 * d)
    y = x.copy()
    y[d:] += a * x[:-d]
    lags_x, values_x = cepstral_peaks(torch.from_numpy(x), SR, 0.05, 0.8, 1)
    lags, values = cepstral_peaks(torch.from_numpy(y), SR, 0.05, 0.8, 1)
    assert int(lags[0]) == d
    at_x = torch.from_numpy(np.fft.irfft(np.log(np.abs(np.fft.rfft(x, 2 * n))), 2 * n)[[d, 2 * d, 3 * d]])
    # up to the floor under the log (-80 dB of the peak bin), which moves it by 2e-4
    np.testing.assert_allclose((values[0] - at_x).numpy(), [a / 2, -a**2 / 4, a**3 / 6], atol=1e-3)


def test_blind_cepstral_peak_is_pedalboards_delay_on_music() -> None:
    """The wet alone: a pedalboard Delay of mix 0.3 on procedural music, in a batch."""
    rng = np.random.default_rng(4)
    times = [0.06, 0.2, 0.55]
    wets = []
    for seconds in times:
        dry = procedural_music(rng, 4 * SR, SR)
        wets.append(chain(seconds, 0.3, 0.3, True)(dry[None], float(SR))[0])
    lags, _ = cepstral_peaks(torch.from_numpy(np.stack(wets)).double(), SR, 0.05, 0.8, 3)
    assert [int(x) for x in lags[:, 0]] == [first_echo(s) for s in times]


def test_search_proposals_set_the_measured_delay_of_the_mix_task() -> None:
    """The mix task's ``echo`` proposals: the analysis proposals with the delay measured on the
    windows, whatever the model proposed; their rendering by pedalboard nulls against a wet whose
    only difference from the candidates' chain is the delay."""
    from afxest.choices import EFFORTS
    from afxest.engines import render
    from afxest.estimate import search_proposals

    task = TASKS["mix"]
    rng = np.random.default_rng(9)
    truth = rng.random(task.model.dim)
    names = task.model.names
    columns = [names.index(f"5.delay.{n}") for n in ("delay_seconds", "feedback", "mix")]
    truth[columns] = [0.6, 0.5, 0.7]  # 0.26 s, feedback 0.3, mix 0.35
    dry = procedural_music(rng, 10 * SR, SR)[None]
    wet = render(task.model.preset(truth, "mix", SR), dry, SR, "pedalboard")
    z = np.repeat(truth[None], 3, axis=0)
    z[:, columns] = rng.random((3, 3))  # the model's delays are wrong
    spans = [(0, 5 * SR), (5 * SR, 10 * SR)]
    proposals = search_proposals(task, z, wet, dry, spans, EFFORTS["fast"], 0, SR)
    assert set(proposals) == {"posterior", "analysis", "echo"}
    echo = proposals["echo"]
    np.testing.assert_array_equal(np.delete(echo, columns, axis=1), np.delete(proposals["analysis"], columns, axis=1))
    physical = dict(task.model.split(echo[0]))["delay"]
    assert first_echo(physical["delay_seconds"]) == first_echo(dict(task.model.split(truth))["delay"]["delay_seconds"])
    assert physical["feedback"] == pytest.approx(0.3, abs=0.1) and physical["mix"] == pytest.approx(0.35, abs=0.03)
    # the truth's other settings with the measured delay: pedalboard's rendering nulls the wet
    rebuilt = truth.copy()
    rebuilt[columns] = echo[0, columns]
    wrong = truth.copy()
    wrong[columns] = z[0, columns]
    error = [np.sum((render(task.model.preset(v, "mix", SR), dry, SR, "pedalboard") - wet) ** 2) for v in (rebuilt, wrong)]
    assert error[0] < 1e-2 * error[1]


def test_no_echo_proposals_without_a_delay() -> None:
    from afxest.search import delay_proposals

    assert delay_proposals(TASKS["master"].model, np.zeros((2, TASKS["master"].model.dim)), [np.ones(10)], [np.ones(10)], SR) is None


def test_drawn_delay_times_snap_to_the_wets_echo() -> None:
    """Blind: draws of the mix task's delay time near the wet's echo (within the tolerance) take
    pedalboard's own sample of it, from the windows' mean cepstrum; a draw far from every echo,
    and every other parameter, keep what was drawn; intervals' draws stay within the sample."""
    from afxest.engines import render
    from afxest.propose import ECHO_TOLERANCE, echo_times, snap_to_echoes

    task = TASKS["mix"]
    space, column = task.model, task.model.column("delay", "delay_seconds")
    times = space.ranges[column]
    rng = np.random.default_rng(5)
    truth = rng.random(space.dim)
    truth[space.names.index("5.delay.mix")] = 0.6  # mix 0.3
    truth[column] = 0.55
    seconds = float(times.to_physical(0.55))
    dry = procedural_music(rng, 10 * SR, SR)[None]
    wet = render(space.preset(truth, "mix", SR), dry, SR, "pedalboard")[0]
    found = echo_times(space, np.stack([wet[: 5 * SR], wet[5 * SR :]]), SR)
    drawn = np.repeat(rng.random((1, space.dim)), 4, axis=0)
    near = [seconds * 0.8, seconds * 1.2, seconds * (1 - 0.9 * ECHO_TOLERANCE)]  # nearer the echo than its multiples
    far = 0.1  # seconds; between the peaks found (the echo, its double, one at 49 ms)
    assert np.all(np.abs(far / found - 1) > ECHO_TOLERANCE)
    drawn[:, column] = times.to_normalised(np.array(near + [far]))
    for rng_of_draws in (None, np.random.default_rng(0)):
        snapped = snap_to_echoes(space, drawn, found, SR, rng_of_draws)
        physical = times.to_physical(snapped[:, column])
        assert [first_echo(t) for t in physical[:3]] == [first_echo(seconds)] * 3
        assert snapped[3, column] == drawn[3, column]
        np.testing.assert_array_equal(np.delete(snapped, column, axis=1), np.delete(drawn, column, axis=1))


def test_nothing_snaps_without_a_delay() -> None:
    from afxest.propose import echo_times, snap_to_echoes

    space = TASKS["master"].model
    z = np.random.default_rng(0).random((3, space.dim))
    assert echo_times(space, np.ones((1, SR)), SR) is None
    np.testing.assert_array_equal(snap_to_echoes(space, z, None, SR), z)


def test_an_estimates_draws_take_the_echo_of_a_pedalboard_wet() -> None:
    """The blind estimate's proposer (an untrained mix posterior, whose delay times spread over
    the range): each drawn delay time is either pedalboard's echo (the sample the wet's windows
    show) or farther than the tolerance from every echo found, and some draws took the echo."""
    from afxest.engines import render
    from afxest.nn.estimator import Estimator, EstimatorConfig
    from afxest.propose import ECHO_TOLERANCE, Proposer
    from afxest.scoring import usable_windows, windows_of

    task = TASKS["mix"]
    space, column = task.model, task.model.column("delay", "delay_seconds")
    times = space.ranges[column]
    torch.manual_seed(0)
    proposer = Proposer(Estimator(task, EstimatorConfig(kind="posterior")).eval(), True, "cpu", task)
    rng = np.random.default_rng(8)
    truth = rng.random(space.dim)
    truth[[column, space.names.index("5.delay.mix")]] = [0.4, 0.7]  # 0.15 s, mix 0.35
    dry = procedural_music(rng, 12 * SR, SR)[None]
    wet = render(space.preset(truth, "mix", SR), dry, SR, "pedalboard")[0]
    windows = windows_of(wet.shape[0], task)
    draws = proposer.draw(wet, windows, usable_windows(wet, windows), 64, 0)
    echo = first_echo(float(times.to_physical(0.4)))
    assert first_echo(float(draws.echoes[0])) == echo
    drawn = times.to_physical(draws.z[:, column])
    on_an_echo = np.isclose(drawn[:, None], draws.echoes[None], rtol=1e-9, atol=0).any(axis=1)
    far = np.abs(drawn[:, None] / draws.echoes[None] - 1).min(axis=1) > ECHO_TOLERANCE
    assert np.all(on_an_echo | far)
    assert any(first_echo(t) == echo for t in drawn[on_an_echo])
