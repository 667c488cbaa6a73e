"""The audio term of the training objective: the fast LTI form against pedalboard renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from afxest.losses import LogMelLoss
from afxest.objective import LTILogMel, audio_objective, is_lti
from afxest.processors import power_response
from afxest.tasks import TASKS
from reference import reference_render

pytestmark = pytest.mark.usefixtures("one_thread")


def _preset(task, z: torch.Tensor) -> dict:
    return task.model.preset(z.double().numpy(), task.name, task.sample_rate).to_dict()


def test_only_chains_of_biquads_and_gains_are_lti() -> None:
    assert is_lti(TASKS["eq"])
    assert not is_lti(TASKS["master"])  # compressor, clipper
    assert not is_lti(TASKS["fm"])  # a source
    with pytest.raises(ValueError):
        LTILogMel(TASKS["master"])


def test_power_response_is_the_squared_magnitude_of_pedalboards_impulse_response() -> None:
    task = TASKS["eq"]
    z = torch.rand(3, task.model.dim, generator=torch.Generator().manual_seed(1))
    n_fft = 4096
    impulse = np.zeros((1, n_fft), np.float32)
    impulse[0, 0] = 1.0
    expected = np.stack([np.abs(np.fft.rfft(reference_render(_preset(task, zi), impulse, task.sample_rate)[0])) ** 2
                         for zi in z])
    ours = power_response(task.model.split(z.double()), task.sample_rate, n_fft).numpy()
    assert np.allclose(ours, expected, rtol=2e-3, atol=1e-6)


def test_power_response_at_frequencies_is_scipys_freqz_of_the_chains_biquads() -> None:
    """At given frequencies (the equaliser fit's log-spaced bands), a chain's |H|^2 equals the
    product of scipy's freqz of each biquad's coefficients, including a high-Q peak near DC."""
    from scipy import signal

    task = TASKS["master"]
    z = torch.rand(4, task.model.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    effects = [e for e in task.model.split(z) if e[0] in ("low_shelf", "peak", "high_shelf")]
    effects.append(("peak", {"cutoff_frequency_hz": torch.full((4,), 25.0, dtype=torch.float64),
                             "gain_db": torch.full((4,), 12.0, dtype=torch.float64), "q": torch.full((4,), 3.0, dtype=torch.float64)}))
    freqs = np.geomspace(10.0, 21000.0, 300)
    ours = power_response(effects, 44100, torch.from_numpy(freqs)).numpy()
    from afxest.processors import entry

    expected = np.ones((4, freqs.size))
    for kind, p in effects:
        b, a = (c.numpy() for c in entry(kind).coefficients(44100, **p))
        for k in range(4):
            expected[k] *= np.abs(signal.freqz(b[k], a[k], worN=freqs, fs=44100)[1]) ** 2
    np.testing.assert_allclose(ours, expected, rtol=1e-9)


def test_power_response_of_gains_is_their_squared_amplitude_and_refuses_a_compressor() -> None:
    """Two gains (-6 and +2.5 dB): |H|^2 = 10^(-3.5 / 10) at every bin and every frequency; a
    compressor is not linear and time-invariant."""
    gains = [("gain", {"gain_db": torch.tensor([-6.0, 0.0], dtype=torch.float64)}),
             ("gain", {"gain_db": torch.tensor([2.5, 1.0], dtype=torch.float64)})]
    expected = np.array([10 ** (-3.5 / 10), 10 ** (1.0 / 10)])[:, None]
    by_bins = power_response(gains, 22050, 16).numpy()
    at_hz = power_response(gains, 22050, torch.tensor([20.0, 1000.0, 11000.0])).numpy()
    assert by_bins.shape == (2, 9) and at_hz.shape == (2, 3)
    np.testing.assert_allclose(by_bins, np.broadcast_to(expected, (2, 9)), rtol=1e-12)
    np.testing.assert_allclose(at_hz, np.broadcast_to(expected, (2, 3)), rtol=1e-12)
    compressor = {k: torch.tensor([v]) for k, v in (("threshold_db", -20.0), ("ratio", 4.0), ("attack_ms", 5.0),
                                                      ("release_ms", 50.0))}
    with pytest.raises(ValueError, match="not linear"):
        power_response([*gains, ("compressor", compressor)], 22050, 16)


def test_fast_log_mel_of_an_lti_chain_matches_the_loss_of_pedalboards_render() -> None:
    """Mel(|STFT(x)|^2 |H|^2) against the log-mel of the chain rendered in the time domain (by
    pedalboard): the approximation error is a small fraction of the loss and of the Input
    baseline, on random parameters and on parameters near the truth."""
    task = TASKS["eq"]
    g = np.random.default_rng(2)
    t = np.arange(task.clip_samples) / task.sample_rate
    dry = np.stack([0.2 * g.standard_normal(t.size) * np.exp(-3 * (t % 0.5)) + 0.1 * np.sin(2 * np.pi * f * t)
                    for f in (110, 440, 1760, 3520)]).astype(np.float32)[:, None, :]
    z_true = torch.rand(4, task.model.dim, generator=torch.Generator().manual_seed(3))
    wet = np.stack([reference_render(_preset(task, z), d, task.sample_rate) for z, d in zip(z_true, dry)])
    near = (z_true + 0.05 * torch.randn(z_true.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    loss = LogMelLoss(task.sample_rate)
    fast = LTILogMel(task)
    baseline = loss(torch.from_numpy(dry), torch.from_numpy(wet))
    for z in (near, torch.rand(4, task.model.dim, generator=torch.Generator().manual_seed(5))):
        rendered = np.stack([reference_render(_preset(task, zi), d, task.sample_rate) for zi, d in zip(z, dry)])
        exact = loss(torch.from_numpy(rendered), torch.from_numpy(wet))
        ours = fast(z, torch.from_numpy(dry), torch.from_numpy(wet))
        assert torch.all((ours - exact).abs() <= 0.02 * exact + 0.002 * baseline), (ours, exact, baseline)


def test_fast_objective_gradient_points_like_the_exact_one() -> None:
    """The fast form's gradient with respect to z against the exact (time-domain) form's."""
    task = TASKS["eq"]
    g = torch.Generator().manual_seed(6)
    dry = 0.2 * torch.randn(2, 1, task.clip_samples, generator=g)
    z_true = torch.rand(2, task.model.dim, generator=g)
    wet = torch.from_numpy(np.stack([reference_render(_preset(task, z), d.numpy(), task.sample_rate)
                                     for z, d in zip(z_true, dry)]))
    grads = []
    for fast in (False, True):
        z = torch.rand(2, task.model.dim, generator=torch.Generator().manual_seed(7)).requires_grad_(True)
        audio_objective(task, "cpu", fast=fast)(z, dry, wet).sum().backward()
        grads.append(z.grad.flatten())
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cosine > 0.99
