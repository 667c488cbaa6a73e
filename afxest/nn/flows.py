r"""Conditional deep sigmoidal flows (DSF) and the output sigmoid bijection.

The posterior estimator of DAFx 2025 (Section 3.2, Eqs. 8-11) draws a diagonal Gaussian
sample :math:`z_0`, pushes it through :math:`T` flow layers and a final sigmoid onto
:math:`[0, 1]^d`. This module holds those bijections; :mod:`afxest.nn.heads` assembles them.

A deep sigmoidal flow layer (Huang et al., 2018, Section 3.1) maps every dimension with a
strictly increasing function of :math:`\mathbb{R}` onto :math:`\mathbb{R}`,

.. math:: y_i = \sigma^{-1}\Big(\sum_{j=1}^{K} w_{ij}\, \sigma(a_{ij} x_i + b_{ij})\Big),
    \qquad a_{ij} = \operatorname{softplus}(\tilde a_{ij}) > 0,
    \qquad w_{i\cdot} = \operatorname{softmax}(\tilde w_{i\cdot}),

whose pseudo-parameters :math:`(\tilde a_i, b_i, \tilde w_i)` come from a conditioner that
sees the encoder embedding :math:`h` and the dimensions before :math:`i` in an
autoregressive order (MADE masks, Germain et al., 2015). The Jacobian is therefore
triangular in that order and

.. math:: \log |\det J| = \sum_i \log \frac{\partial y_i}{\partial x_i}, \qquad
    \log \frac{\partial y_i}{\partial x_i}
    = \operatorname{LSE}_j\big(\log w_{ij} + \log a_{ij} + \log\sigma(u_{ij})
      + \log\sigma(-u_{ij})\big) - \log S_i - \log(1 - S_i),

with :math:`u_{ij} = a_{ij} x_i + b_{ij}`, :math:`S_i = \sum_j w_{ij}\sigma(u_{ij})`,
:math:`\log S_i = \operatorname{LSE}_j(\log w_{ij} + \log\sigma(u_{ij}))` and, because the
weights sum to one, :math:`\log(1 - S_i) = \operatorname{LSE}_j(\log w_{ij} +
\log\sigma(-u_{ij}))`. Everything is evaluated in log space, so values and gradients stay
finite where every sigmoid saturates (:math:`|u| \gg 1`); the price is an absolute rounding
error of about :math:`|u| \epsilon` in the log-derivative (terms of size :math:`|u|` cancel),
e.g. :math:`6 \cdot 10^{-3}` at :math:`|u| = 5 \cdot 10^4` in float32.

The inverse has no closed form; it is found per dimension, in autoregressive order, by
bisection on an exact bracket, accelerated by Newton steps (see :func:`dsf_inverse`), and
differentiated implicitly (see :meth:`ConditionalDSF.inverse`).

References:
    | Neural Autoregressive Flows (Huang, Krueger, Lacoste & Courville, 2018)
    | https://arxiv.org/abs/1804.00779

    | MADE: Masked Autoencoder for Distribution Estimation (Germain et al., 2015)
    | https://arxiv.org/abs/1502.03509

    | Audio processor parameters: estimating distributions instead of deterministic values
    | (Peladeau, Fourer & Peeters, DAFx 2025), Section 3.2
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AutoregressiveConditioner",
    "ConditionalDSF",
    "SigmoidBijection",
    "dsf",
    "dsf_inverse",
    "log_softplus",
]

#: Pre-activation :math:`\tilde a` with :math:`\operatorname{softplus}(\tilde a) = 1`.
_UNIT_SLOPE = math.log(math.expm1(1.0))


def log_softplus(x: Tensor) -> Tensor:
    r"""Computes :math:`\log(\operatorname{softplus}(x)) = \log\log(1 + e^x)` without underflow.

    Below :math:`x = -15` it uses :math:`\log\log(1 + t) = \log t - t/2 + 5t^2/24 + O(t^3)`
    with :math:`t = e^x`, exact to float64 rounding there, and stays finite (with finite
    gradients) for any finite :math:`x`.

    Example:
        >>> log_softplus(torch.tensor([-50.0, 0.0, 50.0]))
        tensor([-50.0000,  -0.3665,   3.9120])
    """
    small = x < -15.0
    exact = torch.log(F.softplus(x.clamp(min=-15.0)))
    tail = x.clamp(max=-15.0)
    t = torch.exp(tail)
    return torch.where(small, tail - 0.5 * t + (5 / 24) * t * t, exact)


def _log_sigmoid(x: Tensor) -> Tensor:
    """:math:`\\log\\sigma(x) = -\\operatorname{softplus}(-x)`, exact to rounding in float32/64.

    ``F.logsigmoid`` gives the same values, but its CPU kernel is multithreaded even on small
    tensors: with torch 2.13 on 2 busy cores it took 8 ms instead of 10 us for 512 elements,
    which the root finding of :func:`dsf_inverse` repeats many times. The threshold 40 keeps
    ``softplus`` exact: :math:`e^{-40}` is below half an ulp of 40.
    """
    return -F.softplus(-x, threshold=40.0)


def _terms(a_raw: Tensor, b: Tensor, w_raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Slopes, log-slopes, offsets and log-weights from the pseudo-parameters."""
    log_w = w_raw - torch.logsumexp(w_raw, dim=-1, keepdim=True)
    return F.softplus(a_raw), log_softplus(a_raw), b, log_w


def _evaluate(
    x: Tensor, a: Tensor, log_a: Tensor, b: Tensor, log_w: Tensor
) -> tuple[Tensor, Tensor]:
    """The DSF output and log-derivative from prepared terms (see :func:`_terms`)."""
    u = a * x.unsqueeze(-1) + b
    log_pos, log_neg = _log_sigmoid(u), _log_sigmoid(-u)
    log_s = torch.logsumexp(log_w + log_pos, dim=-1)
    log_1ms = torch.logsumexp(log_w + log_neg, dim=-1)
    log_num = torch.logsumexp(log_w + log_a + log_pos + log_neg, dim=-1)
    return log_s - log_1ms, log_num - log_s - log_1ms


def dsf(x: Tensor, a_raw: Tensor, b: Tensor, w_raw: Tensor) -> tuple[Tensor, Tensor]:
    r"""Applies the elementwise deep sigmoidal transformation and its log-derivative.

    .. math:: y = \sigma^{-1}\Big(\sum_j w_j \sigma(a_j x + b_j)\Big)

    Arguments:
        x: The inputs, with shape :math:`(*)`.
        a_raw: Slope pre-activations :math:`\tilde a`, :math:`a = \operatorname{softplus}(\tilde
            a)`, with shape :math:`(*, K)`.
        b: Offsets, with shape :math:`(*, K)`.
        w_raw: Weight logits, :math:`w = \operatorname{softmax}(\tilde w)`, with shape
            :math:`(*, K)`.

    Returns:
        The outputs :math:`y` and :math:`\log \partial y / \partial x`, both with shape
        :math:`(*)`, computed in log space (see the module docstring).

    Example:
        >>> x = torch.tensor([-50.0, 0.0, 50.0])
        >>> k = torch.zeros(3, 8)
        >>> dsf(x, k + _UNIT_SLOPE, k, k)  # a = 1, b = 0: identity
        (tensor([-50.,   0.,  50.]), tensor([0., 0., 0.]))
    """
    return _evaluate(x, *_terms(a_raw, b, w_raw))


_SAME_SIZE_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _to_key(x: Tensor) -> Tensor:
    """Maps floats to integers with the same order (IEEE 754 sign-magnitude to two's
    complement); adjacent floats get adjacent integers, and -0.0 and 0.0 both get 0."""
    bits = x.view(_SAME_SIZE_INT[x.element_size()])
    return torch.where(bits >= 0, bits, torch.iinfo(bits.dtype).min - bits)


def _from_key(key: Tensor, dtype: torch.dtype) -> Tensor:
    """Inverts :func:`_to_key`."""
    bits = torch.where(key >= 0, key, torch.iinfo(key.dtype).min - key)
    return bits.view(dtype)


def _key_midpoint(lo: Tensor, hi: Tensor) -> Tensor:
    """The float halfway between ``lo`` and ``hi`` in the order of representable floats."""
    klo, khi = _to_key(lo), _to_key(hi)

    def half(k: Tensor) -> Tensor:
        return torch.div(k, 2, rounding_mode="floor")

    mid = half(klo) + half(khi) + half((klo & 1) + (khi & 1))  # floor((klo + khi) / 2)
    return _from_key(mid, lo.dtype)


def _asinh_midpoint(lo: Tensor, hi: Tensor) -> Tensor:
    """The midpoint of ``[lo, hi]`` in :math:`\\operatorname{asinh}` (linear near 0,
    logarithmic far from it), or the arithmetic one where rounding leaves the bracket."""
    mid = torch.sinh(0.5 * torch.asinh(lo) + 0.5 * torch.asinh(hi))
    return torch.where((lo < mid) & (mid < hi), mid, 0.5 * lo + 0.5 * hi)


@torch.no_grad()
def dsf_inverse(
    y: Tensor, a_raw: Tensor, b: Tensor, w_raw: Tensor, newton_steps: int = 32
) -> Tensor:
    r"""Inverts :func:`dsf` elementwise by bisection with Newton acceleration (no gradient;
    see :meth:`ConditionalDSF.inverse` for the differentiable version).

    The root lies in the exact bracket :math:`[\min_j r_j, \max_j r_j]` with :math:`r_j =
    (y - b_j) / a_j`: at :math:`x \geq \max_j r_j` every sigmoid is at least
    :math:`\sigma(y)`, so the mixture is too, and symmetrically below. Every evaluation of
    the map shrinks the bracket to the side that holds the root.

    1. Up to ``newton_steps`` steps go to the Newton point when it lies strictly inside the
       bracket and is at most half the step before last, and otherwise bisect, halving the
       bracket in :math:`\operatorname{asinh}(x)` (linear near 0, logarithmic far from it, so
       a bracket :math:`10^{300}` wide costs about as many halvings as one :math:`10^3`
       wide). This is the safeguard of ``rtsafe`` (Press et al., Numerical Recipes, Section
       9.4); well-conditioned problems finish here in 5-20 steps.
    2. Elements still open are bisected in the order of representable floats (the integer
       view of the IEEE 754 bits), which narrows any finite bracket to two adjacent floats
       in at most 64 steps in float64 (32 in float32).

    So there are at most ``newton_steps`` + 66 evaluations (float64). An element is done
    when :math:`|\operatorname{dsf}(x) - y| \leq 4 \epsilon (1 + |y|)`, when its Newton step
    or its bracket is at most :math:`\epsilon (1 + |x|)`, resp. :math:`4 \epsilon (1 + |x|)`
    (:math:`\epsilon` the machine epsilon of the dtype), or when its bracket holds no float
    but its ends: the last bits, as far as the conditioning of the map allows. Where the
    map is nearly flat, :math:`x` is determined only to about :math:`\epsilon (1 + |y|) /
    (\partial y / \partial x)`; in float32 a map can even be constant to float32 resolution
    over a long stretch, all of which counts as a preimage (evaluate in float64 where that
    matters).

    Arguments:
        y: The outputs, with shape :math:`(*)`.
        a_raw: Slope pre-activations, with shape :math:`(*, K)`.
        b: Offsets, with shape :math:`(*, K)`.
        w_raw: Weight logits, with shape :math:`(*, K)`.
        newton_steps: The largest number of steps of stage 1.

    Returns:
        The inputs :math:`x` with :math:`\operatorname{dsf}(x) = y`, with shape :math:`(*)`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a_raw, b, w_raw = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
        >>> x = torch.linspace(-5, 5, 5, dtype=torch.float64)
        >>> y, _ = dsf(x, a_raw, b, w_raw)
        >>> bool(torch.allclose(dsf_inverse(y, a_raw, b, w_raw), x, rtol=0, atol=1e-12))
        True
    """
    # (broadcast_tensors, not broadcast_shapes: the latter imports sympy, 0.6 s, on first use)
    shape = torch.broadcast_tensors(y, a_raw[..., 0], b[..., 0], w_raw[..., 0])[0].shape

    def flat(t: Tensor) -> Tensor:
        return t.expand(*shape, t.shape[-1]).reshape(-1, t.shape[-1])

    a, log_a, b, log_w = _terms(flat(a_raw), flat(b), flat(w_raw))
    y = y.expand(shape).reshape(-1)
    eps, big = torch.finfo(y.dtype).eps, torch.finfo(y.dtype).max
    roots = ((y.unsqueeze(-1) - b) / a.clamp(min=torch.finfo(y.dtype).tiny)).clamp(-big, big)
    lo, hi = roots.amin(dim=-1), roots.amax(dim=-1)
    x = (log_w.exp() * roots).sum(dim=-1)  # a weighted mean of the roots: inside
    x = torch.where(x.isfinite(), x, _key_midpoint(lo, hi)).clamp(lo, hi)
    step_last, step_before = torch.full_like(y, math.inf), torch.full_like(y, math.inf)
    # Only the open elements are evaluated: a few slow ones do not slow the rest.
    open_ = torch.nonzero((lo != hi) & y.isfinite()).squeeze(-1)

    def shrink(i: Tensor) -> tuple[Tensor, Tensor]:
        """Evaluates at x[i], narrows the brackets; returns f = dsf(x) - y, log-slope."""
        value, log_slope = _evaluate(x[i], a[i], log_a[i], b[i], log_w[i])
        f = value - y[i]
        above = f >= 0
        lo[i] = torch.where(above, lo[i], x[i])
        hi[i] = torch.where(above, x[i], hi[i])
        return f, log_slope

    for _ in range(newton_steps):
        if open_.numel() == 0:
            break
        i = open_
        f, log_slope = shrink(i)
        xi, loi, hii = x[i], lo[i], hi[i]
        newton = xi - torch.where(f == 0, 0.0, f * torch.exp(-log_slope))
        step = (newton - xi).abs()
        tol = eps * (1 + xi.abs())
        converged = (step <= tol) | (hii - loi <= 4 * tol)  # to the last bits: take it
        solved = converged | (f.abs() <= 4 * eps * (1 + y[i].abs()))  # keep x
        use_newton = (newton > loi) & (newton < hii) & (2 * step <= step_before[i])
        x_next = torch.where(use_newton, newton, _asinh_midpoint(loi, hii))
        x_next = torch.where(converged, torch.minimum(torch.maximum(newton, loi), hii), x_next)
        x[i] = torch.where(solved & ~converged, xi, x_next)
        step_before[i] = step_last[i]
        step_last[i] = torch.where(use_newton, step, math.inf)
        open_ = i[~solved]

    if open_.numel() > 0:
        shrink(open_)
    for _ in range(8 * y.element_size() + 1):
        if open_.numel() == 0:
            break
        i = open_
        mid = _key_midpoint(lo[i], hi[i])
        adjacent = (mid == lo[i]) | (mid == hi[i])
        open_ = i[~adjacent]
        x[open_] = mid[~adjacent]
        shrink(open_)
    return x.reshape(shape)


class AutoregressiveConditioner(nn.Module):
    r"""A one-hidden-layer MADE that maps :math:`(x, h)` to per-dimension parameters.

    The output block of dimension :math:`i` depends on the context :math:`h` and on
    :math:`x_j` only for the dimensions :math:`j` before :math:`i` in ``order``. Hidden unit
    :math:`k` gets the degree :math:`m_k = k \bmod d`; it sees :math:`x_j` iff
    :math:`\mathrm{rank}(j) < m_k` and feeds dimension :math:`i` iff :math:`m_k \leq
    \mathrm{rank}(i)`, so the path :math:`x_j \to y_i` exists iff :math:`\mathrm{rank}(j) <
    \mathrm{rank}(i)`. Degree-0 units see the context only. The context enters every hidden
    unit, unmasked.

    .. math:: \text{out} = W_2 \operatorname{SiLU}(W_x^{M} x + W_h h + c_1) + c_2

    Arguments:
        features: The number of dimensions :math:`d` of :math:`x`.
        context: The size of the embedding :math:`h`.
        outputs: The number of outputs per dimension.
        hidden: The number of hidden units.
        order: The autoregressive order, a permutation of :math:`0, \dots, d - 1`
            (``None``: ascending).

    Example:
        >>> net = AutoregressiveConditioner(3, 16, outputs=24, order=[2, 1, 0])
        >>> net(torch.randn(5, 3), torch.randn(5, 16)).shape
        torch.Size([5, 3, 24])
    """

    def __init__(
        self,
        features: int,
        context: int,
        outputs: int,
        hidden: int = 64,
        order: list[int] | None = None,
    ) -> None:
        super().__init__()
        if features < 1 or context < 1 or outputs < 1 or hidden < 1:
            raise ValueError("features, context, outputs and hidden must be positive")
        order = list(range(features)) if order is None else [int(i) for i in order]
        if sorted(order) != list(range(features)):
            raise ValueError(f"order must be a permutation of 0..{features - 1}, got {order}")

        self.features, self.outputs, self.order = features, outputs, order
        rank = torch.empty(features, dtype=torch.long)
        rank[order] = torch.arange(features)
        degree = torch.arange(hidden) % features
        self.register_buffer("mask_in", (rank[None, :] < degree[:, None]).float(), False)
        mask_out = (degree[None, :] <= rank[:, None]).float()  # (features, hidden)
        self.register_buffer("mask_out", mask_out.repeat_interleave(outputs, dim=0), False)

        self.context_in = nn.Linear(context, hidden)
        # The first dimension in the order never sees x; with one dimension none does.
        self.x_in = nn.Linear(features, hidden, bias=False) if features > 1 else None
        self.out = nn.Linear(hidden, features * outputs)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        r"""
        Arguments:
            x: The inputs, with shape :math:`(*, d)`.
            h: The context, with a shape :math:`(*, C)` that broadcasts against :math:`x`'s
                batch shape (e.g. :math:`(B, 1, C)` for :math:`x` of shape :math:`(B, N, d)`).

        Returns:
            The parameters, with shape :math:`(*, d, \text{outputs})`.
        """
        pre = self.context_in(h)
        if self.x_in is not None:
            pre = pre + F.linear(x, self.x_in.weight * self.mask_in)
        out = F.linear(F.silu(pre), self.out.weight * self.mask_out, self.out.bias)
        return out.unflatten(-1, (self.features, self.outputs))


class ConditionalDSF(nn.Module):
    r"""A conditional, autoregressive deep sigmoidal flow layer (Huang et al., 2018).

    Each dimension :math:`i` is mapped by :func:`dsf` with :math:`K` sigmoid units whose
    :math:`3K` pseudo-parameters an :class:`AutoregressiveConditioner` computes from the
    embedding :math:`h` and the dimensions before :math:`i`. Stack layers with alternating
    ``reverse`` so every dimension can depend on every other.

    At initialisation the layer is close to the identity: the conditioner's output biases
    give :math:`a = 1, b = 0, w = 1/K` (exactly the identity) and its output weights are
    scaled by 0.1, which keeps the :math:`K` units distinct (identical units would stay
    identical under gradient descent).

    Arguments:
        features: The number of dimensions :math:`d`.
        context: The size of the embedding :math:`h`.
        hidden: The number of sigmoid units :math:`K` (8 in DAFx 2025).
        conditioner_hidden: The hidden width of the conditioner.
        reverse: Whether the autoregressive order is :math:`d - 1, \dots, 0` instead of
            :math:`0, \dots, d - 1`.

    Example:
        >>> flow = ConditionalDSF(3, context=16)
        >>> x, h = torch.randn(5, 3), torch.randn(5, 16)
        >>> y, ladj = flow(x, h)
        >>> y.shape, ladj.shape
        (torch.Size([5, 3]), torch.Size([5]))
        >>> bool(torch.allclose(flow.inverse(y, h), x, atol=1e-5))
        True
    """

    def __init__(
        self,
        features: int,
        context: int,
        hidden: int = 8,
        conditioner_hidden: int = 64,
        reverse: bool = False,
    ) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be positive, got {hidden}")
        self.features, self.hidden = features, hidden
        order = list(range(features))[::-1] if reverse else list(range(features))
        self.conditioner = AutoregressiveConditioner(
            features, context, 3 * hidden, conditioner_hidden, order
        )
        with torch.no_grad():
            self.conditioner.out.weight.mul_(0.1)
            bias = self.conditioner.out.bias.view(features, 3, hidden)
            bias.zero_()
            bias[:, 0].fill_(_UNIT_SLOPE)

    @property
    def order(self) -> list[int]:
        """The autoregressive order: dimension ``order[k]`` depends on ``order[:k]``."""
        return self.conditioner.order

    def pseudo_parameters(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""Returns :math:`(\tilde a, b, \tilde w)`, each with shape :math:`(*, d, K)`."""
        a_raw, b, w_raw = self.conditioner(x, h).chunk(3, dim=-1)
        return a_raw, b, w_raw

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        r"""
        Arguments:
            x: The inputs, with shape :math:`(*, d)`.
            h: The embedding, with a shape :math:`(*, C)` that broadcasts against
                :math:`x`'s batch shape.

        Returns:
            The outputs :math:`y`, with shape :math:`(*, d)`, and :math:`\log |\det
            \partial y / \partial x|`, with shape :math:`(*)`.
        """
        y, ladj = dsf(x, *self.pseudo_parameters(x, h))
        return y, ladj.sum(dim=-1)

    def inverse(self, y: Tensor, h: Tensor, newton_steps: int = 32) -> Tensor:
        r"""Inverts the layer, one dimension at a time in autoregressive order.

        Dimension :math:`i` is solved by :func:`dsf_inverse` once the dimensions before it
        are known (:math:`d` conditioner passes in all). The result is differentiable with
        respect to :math:`y`, :math:`h` and the parameters by implicit differentiation: with
        :math:`r = \operatorname{dsf}(x^*; \theta(x_{<i}, h)) - y_i` at the root
        :math:`x^*`, the returned value is :math:`x^* - (r - \operatorname{sg}(r)) /
        \operatorname{sg}(\partial y_i / \partial x_i)`, equal to :math:`x^*` with gradient
        :math:`-\nabla r / (\partial y_i / \partial x_i)` (sg: stop-gradient).

        Arguments:
            y: The outputs, with shape :math:`(*, d)`.
            h: The embedding, broadcastable as in :meth:`forward`.
            newton_steps: Passed to :func:`dsf_inverse`.

        Returns:
            The inputs :math:`x`, with shape :math:`(*, d)`.
        """
        x = torch.zeros_like(y)
        tiny = torch.finfo(y.dtype).tiny
        columns = torch.arange(self.features, device=y.device)
        for i in self.order:
            a_raw, b, w_raw = (p[..., i, :] for p in self.pseudo_parameters(x, h))
            y_i = y[..., i]
            with torch.no_grad():
                x_i = dsf_inverse(y_i, a_raw, b, w_raw, newton_steps)
            if torch.is_grad_enabled():
                y_hat, ladj = dsf(x_i, a_raw, b, w_raw)
                r = y_hat - y_i
                x_i = x_i - (r - r.detach()) / ladj.detach().exp().clamp(min=tiny)
            x = torch.where(columns == i, x_i.unsqueeze(-1), x)
        return x


class SigmoidBijection(nn.Module):
    r"""The output sigmoid :math:`z = \sigma(x)` from :math:`\mathbb{R}^d` onto
    :math:`(0, 1)^d`, with :math:`\log |\det J| = \sum_i \log\sigma(x_i) + \log\sigma(-x_i)`.

    Example:
        >>> z, ladj = SigmoidBijection()(torch.tensor([[0.0, 100.0]]))
        >>> z, ladj
        (tensor([[0.5000, 1.0000]]), tensor([-101.3863]))
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns :math:`\\sigma(x)` and the log-determinant, summed over the last axis."""
        return torch.sigmoid(x), (_log_sigmoid(x) + _log_sigmoid(-x)).sum(dim=-1)

    def inverse(self, z: Tensor) -> Tensor:
        """Returns :math:`\\log z - \\log(1 - z)`; infinite at 0 and 1 (clamp first)."""
        return torch.log(z) - torch.log1p(-z)
