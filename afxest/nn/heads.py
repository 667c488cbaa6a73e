r"""Estimator heads: from an encoder embedding :math:`h` to normalised parameters
:math:`z \in [0, 1]^d`.

Four estimators share one encoder and differ in the head (and the loss):

* :class:`DeterministicHead`: :math:`z = \sigma(W h + c)`, trained with an audio loss
  (ICASSP 2024; the "Deter." baseline of DAFx 2025, Fig. 1).
* :class:`ParamHead`: the same network, trained with a loss on the parameters themselves.
* :class:`BinnedHead`: a categorical law over :math:`K` bins per parameter, trained by
  cross-entropy to the truth blurred by a Gaussian, read out as a point by a local
  soft-argmax (as CREPE reads pitch: Kim, Salamon, Li & Bello, ICASSP 2018).
* :class:`PosteriorHead`: the distribution :math:`p_\theta(z | y)` of DAFx 2025 (Section 3.2,
  Fig. 2): a diagonal Gaussian whose mean and log standard deviation are linear in
  :math:`h`, :math:`T` conditional deep sigmoidal flow layers, and a sigmoid onto
  :math:`(0, 1)^d`, trained with :math:`-\beta \mathbb{H} + \mathbb{E}[\ell]` (Eqs. 7, 13).

Every head's :meth:`sample` returns a :class:`PosteriorSample`, so training and estimation
code treats them alike; only the posterior fills in ``log_prob`` and ``entropy``.

References:
    | Audio processor parameters: estimating distributions instead of deterministic values
    | (Peladeau, Fourer & Peeters, DAFx 2025), Section 3

    | Neural Autoregressive Flows (Huang, Krueger, Lacoste & Courville, 2018)
    | https://arxiv.org/abs/1804.00779
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from afxest.nn.flows import ConditionalDSF, SigmoidBijection

__all__ = [
    "BinnedHead",
    "bins_cross_entropy",
    "DeterministicHead",
    "Head",
    "ParamHead",
    "PosteriorHead",
    "PosteriorSample",
]

_LOG_2PI = math.log(2 * math.pi)
BINS = 1024  # BinnedHead: 1 / 1024 of the range per bin (0.009 of the fm ratio's 0.5..10)
SIGMA = 1.0  # the blur of its training targets, in bins (CREPE: 25 cents on 20-cent bins)
WINDOW = 4  # the half-width of its soft-argmax, in bins


def bin_centres(device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""The centres :math:`c_k = (k + 1/2) / K` of :class:`BinnedHead`'s :data:`BINS` bins."""
    return (torch.arange(BINS, device=device, dtype=dtype) + 0.5) / BINS


@dataclass
class PosteriorSample:
    r"""Parameters drawn from a head, with their log-density and the entropy estimate.

    Attributes:
        z: The normalised parameters, with shape :math:`(B, N, d)`, in :math:`[0, 1]`.
        log_prob: :math:`\ln p_\theta(z | y)` in nats, with shape :math:`(B, N)`; ``None``
            for the deterministic heads.
        entropy: The estimate of :math:`\mathbb{H}_{p_\theta}[z | y]` in nats, with shape
            :math:`(B,)` (see :meth:`PosteriorHead.sample`); ``None`` for the deterministic
            heads. Divide by :math:`d \ln 2` for bits per dimension (Eq. 17); at most 0 on
            :math:`[0, 1]^d`, reached by the uniform law.
        logits: :class:`BinnedHead` only: the bins' logits, with shape :math:`(B, d, K)`
            (its training loss, :func:`bins_cross_entropy`, needs them); else ``None``.
    """

    z: Tensor
    log_prob: Tensor | None = None
    entropy: Tensor | None = None
    logits: Tensor | None = None


@runtime_checkable
class Head(Protocol):
    """What training and estimation code needs from a head."""

    d: int

    def sample(
        self, h: Tensor, n: int = 1, generator: torch.Generator | None = None
    ) -> PosteriorSample:
        """Draws ``n`` parameter vectors per embedding of ``h`` (see :meth:`PosteriorHead.sample`)."""
        ...


class DeterministicHead(nn.Module):
    r"""One point estimate per input, :math:`z = \sigma(W h + c)`.

    Arguments:
        embed_dim: The size of the embedding :math:`h`.
        d: The number of parameters.

    Example:
        >>> head = DeterministicHead(128, 6)
        >>> out = head.sample(torch.randn(4, 128))
        >>> out.z.shape, out.log_prob, out.entropy
        (torch.Size([4, 1, 6]), None, None)
    """

    def __init__(self, embed_dim: int, d: int) -> None:
        super().__init__()
        self.embed_dim, self.d = embed_dim, d
        self.linear = nn.Linear(embed_dim, d)

    def point(self, h: Tensor) -> Tensor:
        r"""Returns :math:`z`, with shape :math:`(B, d)`, for :math:`h` of shape
        :math:`(B, C)`."""
        return torch.sigmoid(self.linear(h))

    def sample(
        self, h: Tensor, n: int = 1, generator: torch.Generator | None = None
    ) -> PosteriorSample:
        r"""Returns the point estimate repeated :math:`n` times, :math:`z` of shape
        :math:`(B, n, d)` (a broadcast view), with no ``log_prob`` and no ``entropy``.
        ``generator`` is accepted, and unused, for symmetry with
        :meth:`PosteriorHead.sample`."""
        z = self.point(h).unsqueeze(-2)
        return PosteriorSample(z.expand(*z.shape[:-2], n, self.d))

    def forward(
        self, h: Tensor, n: int = 1, generator: torch.Generator | None = None
    ) -> PosteriorSample:
        """Same as :meth:`sample` (as for every head)."""
        return self.sample(h, n, generator)


class ParamHead(DeterministicHead):
    r"""The parameter-regression estimator's head: the same network as
    :class:`DeterministicHead`.

    The "param" estimator differs only in its loss, a distance between :math:`z` and the
    true normalised parameters, which the trainer computes. It is a subclass rather than an
    alias so that a model's head type (and with it the loss it was trained with) can be told
    apart in checkpoints and metadata; the state dicts are interchangeable.
    """


class BinnedHead(nn.Module):
    r"""A point estimate read from a categorical law over :math:`K` equal bins of
    :math:`[0, 1]` per parameter (CREPE's output layer, Kim et al., ICASSP 2018, Sec. 2.1).

    .. math:: \ell = W h + c \in \mathbb{R}^{d \times K}, \qquad
        \hat z_i = \frac{\sum_{|k - k_i^*| \le w} e^{\ell_{ik}} c_k}
                         {\sum_{|k - k_i^*| \le w} e^{\ell_{ik}}},

    :math:`c_k = (k + 1/2) / K` the bin centres, :math:`k_i^* = \arg\max_k \ell_{ik}` and
    :math:`w` = :data:`WINDOW` bins: the soft-argmax of the bins around the mode, which places
    the estimate between bin centres (a Gaussian-shaped law's mean to a small fraction of a
    bin). Trained by :func:`bins_cross_entropy` against the truth blurred by a Gaussian of
    :data:`SIGMA` bins, it learns where a regression's mean squared error stalls: on the fm
    task, from scratch at equal steps, the frequency ratio's median error is several times
    smaller (docs/models/fm-deterministic.md). Near 0 and 1 the window is cut by the range,
    which pulls the estimate inward by at most a bin.

    Arguments:
        embed_dim: The size of the embedding :math:`h`.
        d: The number of parameters.

    Example:
        >>> head = BinnedHead(64, 2)
        >>> out = head.sample(torch.randn(4, 64), n=3)
        >>> out.z.shape, out.logits.shape, out.log_prob
        (torch.Size([4, 3, 2]), torch.Size([4, 2, 1024]), None)
    """

    def __init__(self, embed_dim: int, d: int) -> None:
        super().__init__()
        self.embed_dim, self.d = embed_dim, d
        self.linear = nn.Linear(embed_dim, d * BINS)
        self.register_buffer("centres", bin_centres(), persistent=False)

    def logits(self, h: Tensor) -> Tensor:
        r"""The bins' logits :math:`\ell`, shaped :math:`(B, d, K)`, for :math:`h` of shape
        :math:`(B, C)`."""
        return self.linear(h).unflatten(-1, (self.d, BINS))

    def point(self, logits: Tensor) -> Tensor:
        r"""The local soft-argmax :math:`\hat z`, shaped :math:`(B, d)`, of logits shaped
        :math:`(B, d, K)` (the class docstring); differentiable in the logits."""
        offsets = torch.arange(-WINDOW, WINDOW + 1, device=logits.device)
        index = logits.argmax(dim=-1, keepdim=True) + offsets
        inside = (index >= 0) & (index < BINS)
        index = index.clamp(0, BINS - 1)
        local = logits.gather(-1, index).masked_fill(~inside, -math.inf)
        return (torch.softmax(local, dim=-1) * self.centres[index]).sum(dim=-1)

    def sample(
        self, h: Tensor, n: int = 1, generator: torch.Generator | None = None
    ) -> PosteriorSample:
        r"""The point estimate repeated :math:`n` times, :math:`z` of shape :math:`(B, n, d)`
        (a broadcast view), with the logits and no ``log_prob`` or ``entropy``: a point
        estimator, as :class:`ParamHead`. ``generator`` is unused."""
        logits = self.logits(h)
        z = self.point(logits).unsqueeze(-2)
        return PosteriorSample(z.expand(*z.shape[:-2], n, self.d), logits=logits)

    def forward(
        self, h: Tensor, n: int = 1, generator: torch.Generator | None = None
    ) -> PosteriorSample:
        """Same as :meth:`sample` (as for every head)."""
        return self.sample(h, n, generator)


def bins_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    r""":class:`BinnedHead`'s training loss: per item, the cross-entropy of each parameter's
    bins to the truth blurred by a Gaussian of :data:`SIGMA` bins (CREPE's targets, Kim et al.,
    ICASSP 2018, Sec. 2.2, over a categorical rather than independent sigmoids),

    .. math:: L = -\frac{1}{d} \sum_i \sum_k q_{ik} \ln \operatorname{softmax}(\ell_i)_k,
        \qquad q_{ik} \propto \exp\left(-\frac{K^2 (c_k - t_i)^2}{2 \sigma^2}\right),

    in nats; logits shaped :math:`(B, d, K)`, targets :math:`t` :math:`(B, d)` in
    :math:`[0, 1]`; returns :math:`(B,)`."""
    distance = (bin_centres(logits.device, logits.dtype) - target.unsqueeze(-1).to(logits.dtype)) * (BINS / SIGMA)
    blurred = torch.softmax(-0.5 * distance.square(), dim=-1)
    return -(blurred * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean(dim=-1)


class PosteriorHead(nn.Module):
    r"""The posterior estimator of DAFx 2025: Gaussian, :math:`T` conditional DSF layers,
    sigmoid.

    .. math:: z_0 \sim \mathcal{N}(\mu(h), \operatorname{diag} \sigma(h)^2), \qquad
        z_t = f_t(z_{t-1}; h), \qquad z = \sigma(z_T),

    with :math:`(\mu, \ln\sigma) = W h + c` and :math:`f_t` a :class:`ConditionalDSF`
    (alternating autoregressive orders). :math:`T` counts the DSF layers only, as in the
    paper; the output sigmoid is part of the flow and of the log-determinant, so the
    entropy is that of :math:`z` on :math:`[0, 1]^d` (Section 3.3).

    Arguments:
        embed_dim: The size of the embedding :math:`h`.
        d: The number of parameters.
        flows: The number of DSF layers :math:`T` (1 or 2 in the paper; 0 is a
            sigmoid-transformed Gaussian).
        hidden: The number of sigmoid units per DSF layer (8 in the paper).
        conditioner_hidden: The hidden width of each layer's conditioner.

    Example:
        >>> head = PosteriorHead(128, 6, flows=1)
        >>> h = torch.randn(4, 128)
        >>> out = head.sample(h, n=10)
        >>> out.z.shape, out.log_prob.shape, out.entropy.shape
        (torch.Size([4, 10, 6]), torch.Size([4, 10]), torch.Size([4]))
        >>> head.log_prob(out.z, h).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        embed_dim: int,
        d: int,
        flows: int = 1,
        hidden: int = 8,
        *,
        conditioner_hidden: int = 64,
    ) -> None:
        super().__init__()
        if flows < 0:
            raise ValueError(f"flows must be >= 0, got {flows}")
        self.embed_dim, self.d = embed_dim, d
        self.base = nn.Linear(embed_dim, 2 * d)
        self.flows = nn.ModuleList(
            ConditionalDSF(d, embed_dim, hidden, conditioner_hidden, reverse=t % 2 == 1)
            for t in range(flows)
        )
        self.sigmoid = SigmoidBijection()
        # a temperature per base dimension (:mod:`afxest.temper`): the base std times T. Not
        # part of the weights (not in the state dict): 1 in training, set from a checkpoint's
        # calibration when a model is loaded
        self.register_buffer("temperature", torch.ones(d), persistent=False)

    def gaussian(self, h: Tensor) -> tuple[Tensor, Tensor]:
        r"""Returns the base distribution's mean :math:`\mu` and :math:`\ln\sigma + \ln T`
        (:attr:`temperature` T, 1 unless calibrated), each with shape :math:`(B, d)`."""
        mu, log_sigma = self.base(h).chunk(2, dim=-1)
        return mu, log_sigma + self.temperature.log()

    def transform(self, z0: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        r"""Pushes :math:`z_0` of shape :math:`(B, N, d)` through the flows and the sigmoid.

        Returns:
            :math:`z`, with shape :math:`(B, N, d)`, and :math:`\ln |\det J_{f}(z_0 | y)|`
            of the flows and the sigmoid together, with shape :math:`(B, N)`.
        """
        context = h.unsqueeze(-2)
        x, ladj = z0, z0.new_zeros(z0.shape[:-1])
        for flow in self.flows:
            x, step = flow(x, context)
            ladj = ladj + step
        z, step = self.sigmoid(x)
        return z, ladj + step

    def sample(
        self, h: Tensor, n: int = 1, generator: torch.Generator | None = None
    ) -> PosteriorSample:
        r"""Draws :math:`n` reparameterised samples per input, with their log-density and
        the paper's entropy estimate.

        Gradients flow from every output to :math:`h` and every parameter. The entropy is
        Eq. 12 with the Gaussian term in closed form (Eq. 14) and the flow term averaged
        over the :math:`n` samples (with :math:`n = 1`, the paper's single-sample estimate,
        Eq. 13):

        .. math:: \hat{\mathbb{H}} = \frac{d}{2}(1 + \ln 2\pi) + \sum_i \ln \sigma_i
            + \frac{1}{n} \sum_{k=1}^{n} \ln |\det J_f(z_0^{(k)} | y)|

        Arguments:
            h: The embedding, with shape :math:`(B, C)`.
            n: The number of samples per input.
            generator: The random generator for the Gaussian noise.

        Returns:
            :math:`z` with shape :math:`(B, n, d)`, ``log_prob`` with shape :math:`(B, n)`
            (Eq. 11) and ``entropy`` with shape :math:`(B,)`, in nats. In float32, a
            coordinate of :math:`z` can round to exactly 0 or 1 where the pre-sigmoid value
            exceeds about 16.6 in magnitude; ``log_prob`` is that of the unrounded sample.
        """
        mu, log_sigma = self.gaussian(h)
        shape = (*mu.shape[:-1], n, self.d)
        eps = torch.randn(shape, generator=generator, dtype=mu.dtype, device=mu.device)
        mu, log_sigma = mu.unsqueeze(-2), log_sigma.unsqueeze(-2)
        z, ladj = self.transform(mu + log_sigma.exp() * eps, h)
        log_base = -0.5 * (eps.square() + _LOG_2PI) - log_sigma  # (z0 - mu) / sigma = eps
        log_prob = log_base.sum(dim=-1) - ladj
        gaussian_entropy = 0.5 * self.d * (1 + _LOG_2PI) + log_sigma.squeeze(-2).sum(dim=-1)
        return PosteriorSample(z, log_prob, gaussian_entropy + ladj.mean(dim=-1))

    def forward(
        self, h: Tensor, n: int = 1, generator: torch.Generator | None = None
    ) -> PosteriorSample:
        """Same as :meth:`sample` (as for every head)."""
        return self.sample(h, n, generator)

    def log_prob(self, z: Tensor, h: Tensor) -> Tensor:
        r"""Evaluates :math:`\ln p_\theta(z | y)` (Eq. 11) for given parameters.

        :math:`z` is mapped back through the sigmoid (logit) and the flows (numerical
        inversion, :meth:`ConditionalDSF.inverse`), and the Gaussian log-density of
        :math:`z_0` is corrected by the log-determinant. The result is differentiable with
        respect to :math:`z`, :math:`h` and the parameters.

        Coordinates in :math:`[0, 1]` are clamped to :math:`[\epsilon, 1 - \epsilon]`
        (:math:`\epsilon` the machine epsilon of the dtype) so that the logit stays finite
        (:math:`\pm 15.9` in float32, :math:`\pm 36` in float64); points with a coordinate
        outside :math:`[0, 1]` get :math:`-\infty`, and so do points the flows cannot reach
        in floating point (the inverse overflows; possible only with degenerate flow
        parameters, where the density underflows anyway).

        Arguments:
            z: The parameters, with shape :math:`(B, N, d)`.
            h: The embedding, with shape :math:`(B, C)`.

        Returns:
            The log-density in nats, with shape :math:`(B, N)`.
        """
        eps = torch.finfo(z.dtype).eps
        x = self.sigmoid.inverse(z.clamp(eps, 1 - eps))
        context = h.unsqueeze(-2)
        for flow in reversed(self.flows):
            x = flow.inverse(x, context)
        mu, log_sigma = self.gaussian(h)
        mu, log_sigma = mu.unsqueeze(-2), log_sigma.unsqueeze(-2)
        _, ladj = self.transform(x, h)
        standard = (x - mu) * torch.exp(-log_sigma)
        log_base = (-0.5 * (standard.square() + _LOG_2PI) - log_sigma).sum(dim=-1)
        log_prob = log_base - ladj
        # NaN only where the inversion overflowed: the flows cannot reach z in floating
        # point (degenerate parameters), so the density there underflows to 0.
        zero = log_prob.isnan() | ((z < 0) | (z > 1)).any(dim=-1)
        return torch.where(zero, -math.inf, log_prob)
