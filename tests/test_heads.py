"""Estimator heads: the posterior's density, samples and entropy against independent
references (grid integration, histograms, Monte Carlo, 1-D quadrature, finite differences);
the binned head's read-out and loss against closed forms (a sampled Gaussian's centre, Gibbs'
inequality).
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

import afxest.nn.heads as heads
from afxest.nn.heads import (
    BINS,
    BinnedHead,
    DeterministicHead,
    Head,
    ParamHead,
    PosteriorHead,
    PosteriorSample,
    bins_cross_entropy,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def perturbed_head(d: int, flows: int, seed: int) -> tuple[PosteriorHead, torch.Tensor]:
    """A float64 head with flows far from the identity and one embedding h."""
    torch.manual_seed(seed)
    head = PosteriorHead(8, d, flows=flows, conditioner_hidden=16).double()
    with torch.no_grad():
        for p in head.flows.parameters():
            p.add_(0.5 * torch.randn_like(p))
        head.base.weight.mul_(0.5)
    return head, torch.randn(1, 8, dtype=F64)


class Grid:
    """log_prob on the midpoints of an n^d grid over (0, 1)^d (one embedding)."""

    def __init__(self, head: PosteriorHead, h: torch.Tensor, n: int) -> None:
        self.n, self.d = n, head.d
        axis = (torch.arange(n, dtype=F64) + 0.5) / n
        points = torch.stack(torch.meshgrid(*[axis] * self.d, indexing="ij"), dim=-1)
        with torch.no_grad():
            self.log_p = head.log_prob(points.reshape(1, -1, self.d), h)[0]
        self.p = self.log_p.exp()
        self.cell = n ** -float(self.d)

    def integral(self) -> float:
        return self.p.sum().item() * self.cell

    def entropy(self) -> float:
        terms = torch.where(self.p > 0, self.p * self.log_p, 0.0)
        return -terms.sum().item() * self.cell

    def bin_probabilities(self, bins: int) -> np.ndarray:
        sub = self.n // bins
        p = self.p.reshape([bins, sub] * self.d).numpy()
        return p.sum(axis=tuple(range(1, 2 * self.d, 2))) * self.cell


# T = 2; seeds picked for densities smooth enough for the grids (peaks ~13 and ~12) and,
# for d = 2, dependent coordinates (mutual information 0.22 nats on the grid)
CASES = {1: (1, 4000), 2: (26, 160)}  # d: (seed, grid points per axis)


@pytest.fixture(scope="module", params=[1, 2], ids=["d1", "d2"])
def case(request: pytest.FixtureRequest) -> tuple[PosteriorHead, torch.Tensor, Grid]:
    d = request.param
    seed, n = CASES[d]
    head, h = perturbed_head(d, flows=2, seed=seed)
    return head, h, Grid(head, h, n)


@pytest.fixture(scope="module")
def many(case: tuple[PosteriorHead, torch.Tensor, Grid]) -> PosteriorSample:
    head, h, _ = case
    with torch.no_grad():
        return head.sample(h, 200_000, generator=torch.Generator().manual_seed(1))


def test_doctests() -> None:
    result = doctest.testmod(heads, raise_on_error=False)
    assert result.failed == 0 and result.attempted > 0


def test_shapes_and_uniform_interface() -> None:
    h = torch.randn(3, 16)
    for head in (PosteriorHead(16, 4, flows=2), DeterministicHead(16, 4), ParamHead(16, 4), BinnedHead(16, 4)):
        assert isinstance(head, Head)
        out = head.sample(h, n=5)
        assert isinstance(out, PosteriorSample)
        assert out.z.shape == (3, 5, 4)
        assert ((out.z > 0) & (out.z < 1)).all()
    out = PosteriorHead(16, 4, flows=2).sample(h, n=5)
    assert out.log_prob is not None and out.log_prob.shape == (3, 5)
    assert out.entropy is not None and out.entropy.shape == (3,)
    det = DeterministicHead(16, 4)
    out = det.sample(h, n=5)
    assert out.log_prob is None and out.entropy is None
    assert (out.z == det.point(h).unsqueeze(1)).all()  # the same point n times
    assert (det(h, 2).z == out.z[:, :2]).all()
    assert ParamHead(16, 4).state_dict().keys() == det.state_dict().keys()
    assert sum(p.numel() for p in PosteriorHead(128, 6, flows=1).parameters()) == 19548


def test_sampling_is_reproducible_with_a_generator() -> None:
    head, h = perturbed_head(3, flows=1, seed=0)
    a = head.sample(h, 4, generator=torch.Generator().manual_seed(9))
    b = head.sample(h, 4, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.z, b.z) and torch.equal(a.log_prob, b.log_prob)


@pytest.mark.parametrize("flows", [0, 1, 2])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_log_prob_of_samples_matches_sample_log_prob(d: int, flows: int) -> None:
    head, _ = perturbed_head(d, flows, seed=d + 3 * flows)
    h = torch.randn(3, 8, dtype=F64)
    out = head.sample(h, 200, generator=torch.Generator().manual_seed(0))
    assert out.log_prob is not None
    # away from 0 and 1, where z itself carries the last bits of the sample
    inside = ((out.z > 1e-6) & (out.z < 1 - 1e-6)).all(dim=-1)
    assert inside.float().mean() > 0.9
    again = head.log_prob(out.z, h)
    torch.testing.assert_close(again[inside], out.log_prob[inside], rtol=1e-9, atol=1e-9)


def test_density_integrates_to_one(case: tuple[PosteriorHead, torch.Tensor, Grid]) -> None:
    _, _, grid = case
    assert grid.integral() == pytest.approx(1.0, abs=1e-3)


def test_density_matches_histogram_of_samples(
    case: tuple[PosteriorHead, torch.Tensor, Grid], many: PosteriorSample
) -> None:
    _, _, grid = case
    bins = 40 if grid.d == 1 else 16
    expected = grid.bin_probabilities(bins) * many.z.shape[1]
    edges = [np.linspace(0, 1, bins + 1)] * grid.d
    observed, _ = np.histogramdd(many.z[0].numpy(), bins=edges)
    used = expected > 20
    assert used.sum() >= (15 if grid.d == 1 else 60)  # a spread-out density
    assert expected[used].sum() / many.z.shape[1] > 0.99
    pearson = (observed[used] - expected[used]) / np.sqrt(expected[used])
    dof = used.sum() - 1
    assert (pearson**2).sum() < dof + 5 * math.sqrt(2 * dof)  # chi-square, ~5 sigma
    assert np.abs(pearson).max() < 5


def test_entropy_estimate_matches_grid_and_monte_carlo(
    case: tuple[PosteriorHead, torch.Tensor, Grid], many: PosteriorSample
) -> None:
    _, _, grid = case
    assert many.entropy is not None and many.log_prob is not None
    reference = grid.entropy()
    assert reference < -0.5  # a clearly non-uniform case
    estimate = many.entropy.item()  # closed-form Gaussian + mean log-determinant (Eq. 12)
    monte_carlo = -many.log_prob.mean().item()  # -E[log p]
    assert estimate == pytest.approx(reference, rel=0.02, abs=0.01)
    assert monte_carlo == pytest.approx(reference, rel=0.02, abs=0.01)
    assert estimate <= 0


def test_single_sample_entropy_is_unbiased() -> None:
    # the paper's n = 1 estimate: its mean over many draws equals the large-n estimate
    head, h = perturbed_head(3, flows=2, seed=5)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        large = head.sample(h, 50_000, generator=g).entropy
        singles = head.sample(h.expand(20_000, 8), 1, generator=g).entropy  # one per row
    assert large is not None and singles is not None
    spread = singles.std().item() / math.sqrt(len(singles))
    assert abs(singles.mean().item() - large.item()) < 5 * spread


@pytest.mark.parametrize("d", [1, 2, 6])
def test_entropy_is_never_positive_on_the_unit_cube(d: int) -> None:
    for seed in range(3):
        head, _ = perturbed_head(d, flows=2, seed=seed)
        h = 2 * torch.randn(4, 8, dtype=F64)
        with torch.no_grad():
            entropy = head.sample(h, 4000, generator=torch.Generator().manual_seed(0)).entropy
        assert entropy is not None and (entropy < 0).all()


def test_sigmoid_of_gaussian_entropy_matches_quadrature() -> None:
    # T = 0 with sigma = 1.75: the sigmoid of N(0, 1.75^2) is within 0.01 nats of uniform
    head = PosteriorHead(4, 1, flows=0).double()
    with torch.no_grad():
        head.base.weight.zero_()
        head.base.bias.copy_(torch.tensor([0.0, math.log(1.75)]))
    sigma = 1.75

    def integrand(x: float) -> float:  # N(x; 0, sigma) * log|d sigmoid / dx|
        density = math.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        return density * (special.log_expit(x) + special.log_expit(-x))

    flow_term, _ = integrate.quad(integrand, -40, 40, epsabs=1e-12)
    reference = 0.5 * math.log(2 * math.pi * math.e * sigma**2) + flow_term
    assert -0.011 < reference < -0.009
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        out = head.sample(torch.zeros(1, 4, dtype=F64), 200_000, generator=generator)
    assert out.entropy is not None
    assert out.entropy.item() == pytest.approx(reference, abs=2e-3)


def test_maximising_the_entropy_estimate_approaches_uniform() -> None:
    torch.manual_seed(0)
    head = PosteriorHead(4, 1, flows=1, conditioner_hidden=8)
    h = torch.randn(1, 4)
    opt = torch.optim.Adam(head.parameters(), lr=0.03)
    g = torch.Generator().manual_seed(0)
    start = None
    for _ in range(150):
        out = head.sample(h, 256, generator=g)
        assert out.entropy is not None
        start = out.entropy.item() if start is None else start
        opt.zero_grad()
        (-out.entropy.sum()).backward()
        opt.step()
    final = Grid(head.double(), h.double(), 4000).entropy()
    assert start is not None and start < -0.1
    assert -0.03 < final <= 0


def test_gradients_reach_every_parameter_and_the_embedding() -> None:
    torch.manual_seed(0)
    head = PosteriorHead(8, 3, flows=2, conditioner_hidden=16)
    h = torch.randn(2, 8, requires_grad=True)
    out = head.sample(h, 4)
    assert out.entropy is not None
    (out.z.square().sum() + out.entropy.sum()).backward()
    assert h.grad is not None and h.grad.isfinite().all() and (h.grad != 0).any()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.isfinite().all(), name
        assert (p.grad != 0).any(), name
    # the entropy term alone (Eq. 13's -beta H) reaches the flows through the log-determinant
    head.zero_grad()
    out = head.sample(h, 4)
    assert out.entropy is not None
    out.entropy.sum().backward()
    for flow in head.flows:
        assert flow.conditioner.out.weight.grad is not None
        assert (flow.conditioner.out.weight.grad != 0).any()


def test_log_prob_gradients_by_finite_differences() -> None:
    head, _ = perturbed_head(2, flows=2, seed=1)
    g = torch.Generator().manual_seed(4)
    h = torch.randn(2, 8, generator=g, dtype=F64, requires_grad=True)
    z = (0.2 + 0.6 * torch.rand(2, 2, 2, generator=g, dtype=F64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda z_, h_: head.log_prob(z_, h_), (z, h))


def test_log_prob_at_and_beyond_the_boundary() -> None:
    for dtype in (torch.float32, F64):
        torch.manual_seed(0)
        head = PosteriorHead(8, 2, flows=1).to(dtype)
        h = torch.randn(1, 8, dtype=dtype)
        z = torch.tensor([[[0.0, 0.5], [1.0, 1.0], [-0.1, 0.5], [0.5, 1.2]]], dtype=dtype)
        lp = head.log_prob(z, h)
        assert lp[0, :2].isfinite().all()  # clamped to [eps, 1 - eps]
        assert (lp[0, 2:] == -math.inf).all()  # outside the support


def test_float32_samples_saturate_safely() -> None:
    torch.manual_seed(0)
    head = PosteriorHead(8, 2, flows=1)
    with torch.no_grad():
        head.base.bias.copy_(torch.tensor([30.0, -30.0, 0.0, 0.0]))  # far outside
    h = torch.randn(3, 8, requires_grad=True)
    out = head.sample(h, 16)
    assert out.log_prob is not None and out.entropy is not None
    assert out.log_prob.isfinite().all() and out.entropy.isfinite().all()
    (out.z.sum() + out.entropy.sum() + out.log_prob.sum()).backward()
    assert h.grad is not None and h.grad.isfinite().all()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in head.parameters())


def sampled_gaussian_logits(centres: np.ndarray, sigma_bins: float) -> torch.Tensor:
    """Logits (1, d, BINS) of a Gaussian of ``sigma_bins`` bins around each centre (float64)."""
    grid = (np.arange(BINS) + 0.5) / BINS
    logits = -0.5 * ((grid[None] - centres[:, None]) * BINS / sigma_bins) ** 2
    return torch.from_numpy(logits)[None]


@pytest.mark.parametrize("sigma_bins", [0.7, 1.0])
def test_binned_point_finds_a_gaussian_centre_between_bins(sigma_bins: float) -> None:
    """The local soft-argmax reads the centre of a sampled Gaussian to 1 % of a bin wherever it
    lies between two bin centres (a sampled Gaussian's mean equals its centre up to
    exp(-2 pi^2 sigma^2), Poisson summation): at the width the training targets have (SIGMA = 1
    bin) and narrower, where the window (4 bins around the mode) cuts tails beyond 3.5 sigma."""
    rng = np.random.default_rng(0)
    t = np.concatenate([rng.uniform(0.05, 0.95, 50), [0.5, 0.5 + 0.5 / BINS, 0.25 + 0.37 / BINS]])
    head = BinnedHead(4, len(t)).double()
    z = head.point(sampled_gaussian_logits(t, sigma_bins))[0].numpy()
    np.testing.assert_allclose(z, t, atol=0.01 / BINS)


def test_binned_point_stays_in_range_at_the_edges() -> None:
    """At the range's ends the window is cut: the estimate stays in [0, 1], within one bin."""
    t = np.array([0.0, 0.2 / BINS, 1.0, 1 - 0.3 / BINS])
    z = BinnedHead(4, 4).double().point(sampled_gaussian_logits(t, 1.0))[0].numpy()
    assert ((z > 0) & (z < 1)).all()
    np.testing.assert_allclose(z, t, atol=1.0 / BINS)


def test_binned_point_gradient_by_finite_differences() -> None:
    """The read-out is differentiable in the logits (the mode's window held fixed)."""
    torch.manual_seed(0)
    head = BinnedHead(4, 2).double()
    logits = sampled_gaussian_logits(np.array([0.3, 0.71]), 1.5) + 0.1 * torch.randn(1, 2, BINS, dtype=F64)
    assert torch.autograd.gradcheck(head.point, (logits.requires_grad_(),))


def test_bins_cross_entropy_is_least_at_the_blurred_truth() -> None:
    """Gibbs' inequality: the cross-entropy to the blurred truth q is at least q's entropy,
    with equality at logits = ln q (q computed here with scipy)."""
    t = np.array([[0.123, 0.9]])
    grid = (np.arange(BINS) + 0.5) / BINS
    q = special.softmax(-0.5 * ((grid[None] - t[0][:, None]) * BINS / heads.SIGMA) ** 2, axis=-1)
    entropy = -(q * np.log(np.maximum(q, 1e-300))).sum(-1).mean()
    target = torch.from_numpy(t)
    at_q = bins_cross_entropy(torch.from_numpy(np.log(np.maximum(q, 1e-300)))[None], target)
    assert at_q.item() == pytest.approx(entropy, rel=1e-9)
    torch.manual_seed(1)
    for logits in (torch.randn(1, 2, BINS, dtype=F64), sampled_gaussian_logits(t[0] + 2 / BINS, 1.0)):
        assert bins_cross_entropy(logits, target).item() > entropy + 0.1


def test_minimising_bins_cross_entropy_reads_back_the_truth() -> None:
    """Free logits trained by gradient descent on the loss decode to the truth (to 5 % of a bin)."""
    t = torch.tensor([[0.3333, 0.77777]], dtype=F64)
    head = BinnedHead(4, 2).double()
    logits = torch.zeros(1, 2, BINS, dtype=F64, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.5)
    for _ in range(300):
        optimizer.zero_grad()
        bins_cross_entropy(logits, t).sum().backward()
        optimizer.step()
    np.testing.assert_allclose(head.point(logits.detach())[0].numpy(), t[0].numpy(), atol=0.05 / BINS)
