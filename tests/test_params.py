"""Parameter spaces: DAFx Eq. 15 and 20 mappings against their closed forms, round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from afxest.catalogue import CUTOFF, FILTER_GAIN, MOD_INDEX, Q, RATIO
from afxest.params import Param, ParamRange


def test_exponential_mapping_is_eq_15a() -> None:
    r = ParamRange(CUTOFF, 500.0, 2500.0, "exp")
    for v in [0.0, 0.25, 0.5, 1.0]:
        expected = math.exp((math.log(2500) - math.log(500)) * v + math.log(500))
        assert r.to_physical(v) == pytest.approx(expected, rel=1e-12)
    assert r.to_physical(0.5) == pytest.approx(math.sqrt(500 * 2500))


def test_affine_mapping_is_eq_15b() -> None:
    r = ParamRange(FILTER_GAIN, -20.0, 20.0, "affine")
    assert r.to_physical(0.0) == -20.0 and r.to_physical(1.0) == 20.0 and r.to_physical(0.75) == 10.0


def test_fm_index_mapping_is_eq_20a() -> None:
    """I_m = 4 pi 10^(0.75 * 99 (v - 1) / 20) is the exponential map on [4 pi 10^-3.7125, 4 pi]."""
    r = ParamRange(MOD_INDEX, 4 * math.pi * 10 ** (-0.75 * 99 / 20), 4 * math.pi, "exp")
    for v in np.linspace(0, 1, 11):
        assert r.to_physical(v) == pytest.approx(4 * math.pi * 10 ** (0.75 * 99 * (v - 1) / 20), rel=1e-12)


@pytest.mark.parametrize("mapping", ["exp", "affine"])
def test_round_trips_for_floats_numpy_and_torch(mapping: str) -> None:
    r = ParamRange(Q, 0.1, 3.0, mapping)
    v = np.linspace(0, 1, 101)
    np.testing.assert_allclose(r.to_normalised(r.to_physical(v)), v, atol=1e-12)
    vt = torch.linspace(0, 1, 101, dtype=torch.float64, requires_grad=True)
    back = r.to_normalised(r.to_physical(vt))
    torch.testing.assert_close(back, vt.detach())
    back.sum().backward()  # differentiable
    torch.testing.assert_close(vt.grad, torch.ones_like(vt))
    assert r.to_normalised(r.to_physical(0.3)) == pytest.approx(0.3)


def test_invalid_ranges_are_refused() -> None:
    with pytest.raises(ValueError):
        ParamRange(RATIO, 0.5, 10.0, "exp")  # ratio < 1 is not a valid value
    with pytest.raises(ValueError):
        ParamRange(FILTER_GAIN, -10.0, 10.0, "exp")  # log of a negative
    with pytest.raises(ValueError):
        ParamRange(Q, 3.0, 0.1, "affine")


def test_param_problems() -> None:
    assert CUTOFF.problem(1000.0, 22050) is None
    assert "Nyquist" in CUTOFF.problem(11025.0, 22050)
    assert "q must be >= 0.01" in Q.problem(0.0)
    assert "ratio must be >= 1" in RATIO.problem(0.99)
    assert "finite" in Param("x", "", "").problem(float("nan"))


def test_parameter_errors_in_physical_units() -> None:
    """fm: the ratio is affine (9.5 per unit, DAFx Eq. 20b) and the index exponential, so errors
    follow in closed form; eq's truth and model differ (one shelf, two): no per-parameter error."""
    import math

    import torch

    from afxest.tasks import TASKS

    task = TASKS["fm"]
    v = torch.tensor([[0.5, 0.2], [1.0, 0.9]], dtype=torch.float64)
    z = v + torch.tensor([[0.0, 0.1], [-0.25, -0.3]], dtype=torch.float64)
    errors = task.parameter_errors(z, v)
    assert list(errors) == ["0.fm.modulation_index", "0.fm.frequency_ratio"]
    assert torch.allclose(errors["0.fm.frequency_ratio"], torch.tensor([0.95, 2.85], dtype=torch.float64))
    top = 4 * math.pi  # index at v = 1; exponential map over 0.75 * 99 dB (Eq. 20a)
    index_at = lambda u: top * 10 ** (0.75 * 99 * (u - 1) / 20)  # noqa: E731
    assert math.isclose(errors["0.fm.modulation_index"][1].item(), top - index_at(0.75), rel_tol=1e-9)
    assert errors["0.fm.modulation_index"][0].item() == 0.0
    assert TASKS["eq"].parameter_errors(torch.rand(2, 6), torch.rand(2, 3)) == {}


def test_doctests() -> None:
    import doctest

    import afxest.params

    result = doctest.testmod(afxest.params, raise_on_error=False)
    assert result.failed == 0 and result.attempted > 0
