"""The audio term of the training objective: the fast LTI form against pedalboard renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from afxest.losses import LogMelLoss
from afxest.objective import LTILogMel, audio_objective, is_lti, power_response
from afxest.tasks import TASKS
from tests.reference import reference_render

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
    ours = power_response(task, z.double(), n_fft).numpy()
    assert np.allclose(ours, expected, rtol=2e-3, atol=1e-6)


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
