"""A neural proxy of pedalboard's ``Compressor``: a causal TCN conditioned by FiLM (ICASSP 2024).

The ICASSP 2024 paper trains its estimator through a *neural proxy* of the compressor: a
temporal convolutional network (TCN; Steinmetz & Reiss, "Efficient neural networks for
real-time modeling of analog dynamic range compression", 2021) whose layers are modulated by
the compressor's parameters with FiLM (Perez et al., AAAI 2018), trained beforehand to mimic
the real effect. Its "hybrid" use (after Steinmetz et al., "Style transfer of audio effects
with differentiable signal processing", 2022) keeps the real effect's output in the forward pass
and takes only the gradient from the proxy.

:class:`CompressorProxy`, per channel (unlinked, as pedalboard)::

    l[n]  = log10(|x[n]| + 1e-5)                   level (1 = 20 dB)
    h0    = W_in [l, l - threshold_db / 20]         threshold given explicitly
    h_k   = h_{k-1} + W_k PReLU(gamma_k(p) * CausalConv_k(h_{k-1}) + beta_k(p))
    g[n]  = exp(-softplus(W_out h_K [n]))           a gain in (0, 1]: a compressor only attenuates
    y[n]  = g[n] x[n]

with CausalConv_k of kernel K and dilation D^k (k = 0 .. blocks-1), so the receptive field is
1 + (K - 1) sum_k D^k samples, and (gamma_k, beta_k) = MLP(p) from the four parameters
normalised by the task's ranges (:class:`afxest.params.ParamRange`). Predicting a gain rather
than the waveform builds in what a compressor is (a time-varying gain) and makes "no
compression" (g = 1) easy to represent.

The proxy is trained by :func:`afxest.train_proxy.train_proxy` (``afxest train-proxy``) on
batches from :func:`make_proxy_batch`: music through the part of a task's chain before its
compressor (so its input is distributed as in training), against pedalboard's ``Compressor``;
see docs/master.md. This module holds the model, its use in training (:func:`compressor_function`),
its checkpoints and its training data, not the training loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from afxest.errors import UserError

PROXY_FORMAT = "afxest-proxy/1"
COMPRESSOR_PARAMS = ("threshold_db", "ratio", "attack_ms", "release_ms")
_LEVEL_FLOOR = 1e-5  # -100 dBFS: the level feature's floor (log of silence)

Compressor = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ProxyConfig:
    """The TCN's size. Defaults: kernel 13 and dilation growth 10 as the ICASSP 2024 proxy
    (its released configuration: 8 channels, causal); 4 blocks give a receptive field of
    13 333 samples (0.60 s at 22050 Hz, about 7.5 time constants of a 500 ms JUCE release).

    Attributes:
        channels: The channels of every block.
        kernel_size: The kernel K of the dilated convolutions.
        blocks: The number of blocks.
        dilation_growth: D: block k has dilation D^k.
        cond_hidden: The hidden width of the FiLM MLP.
    """

    channels: int = 8
    kernel_size: int = 13
    blocks: int = 4
    dilation_growth: int = 10
    cond_hidden: int = 32

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (as checkpoints store them)."""
        return asdict(self)

    @property
    def receptive_field(self) -> int:
        """The number of input samples that one output sample depends on (itself included)."""
        return 1 + (self.kernel_size - 1) * sum(self.dilation_growth**k for k in range(self.blocks))


class CompressorProxy(nn.Module):
    """Causal TCN with FiLM conditioning that maps (x, compressor parameters) to y; see the
    module docstring.

    Arguments:
        config: The TCN's size.
        ranges: The task's (lo, hi, mapping) of each of ``COMPRESSOR_PARAMS``, by name (see
            :func:`compressor_ranges`); they normalise the parameters.
    """

    def __init__(self, config: ProxyConfig, ranges: dict[str, tuple[float, float, str]]) -> None:
        from afxest.catalogue import PROCESSORS
        from afxest.params import ParamRange

        super().__init__()
        if sorted(ranges) != sorted(COMPRESSOR_PARAMS):
            raise ValueError(f"proxy ranges must name {COMPRESSOR_PARAMS}, got {sorted(ranges)}")
        spec = PROCESSORS["compressor"]
        self.config = config
        self.ranges = {name: tuple(ranges[name]) for name in COMPRESSOR_PARAMS}
        self._maps = [ParamRange(spec.param(n), float(lo), float(hi), m) for n, (lo, hi, m) in self.ranges.items()]
        c, k = config.channels, config.kernel_size
        self.dilations = [config.dilation_growth**i for i in range(config.blocks)]
        self.input = nn.Conv1d(2, c, 1)
        self.convs = nn.ModuleList(nn.Conv1d(c, c, k, dilation=d) for d in self.dilations)
        self.acts = nn.ModuleList(nn.PReLU(c) for _ in self.dilations)
        self.mixes = nn.ModuleList(nn.Conv1d(c, c, 1) for _ in self.dilations)
        self.output = nn.Conv1d(c, 1, 1)
        self.film = nn.Sequential(
            nn.Linear(len(COMPRESSOR_PARAMS), config.cond_hidden),
            nn.SiLU(),
            nn.Linear(config.cond_hidden, 2 * c * config.blocks),
        )
        nn.init.zeros_(self.film[-1].weight)  # start as gamma = 1, beta = 0 (plain TCN)
        nn.init.zeros_(self.film[-1].bias)
        nn.init.normal_(self.output.weight, std=1e-2)
        nn.init.constant_(self.output.bias, -1.0)

    def normalise(self, threshold_db: Tensor, ratio: Tensor, attack_ms: Tensor, release_ms: Tensor) -> Tensor:
        """The parameters mapped to [0, 1] by the task's ranges (DAFx 2025, Eq. 15), (batch, 4)."""
        values = (threshold_db, ratio, attack_ms, release_ms)
        return torch.stack([m.to_normalised(v) for m, v in zip(self._maps, values)], dim=-1)

    def gain(self, x: Tensor, threshold_db: Tensor, p: Tensor) -> Tensor:
        """The gain g (rows, 1, time) for mono rows x (rows, 1, time), thresholds (rows,) and
        normalised parameters p (rows, 4)."""
        level = torch.log10(x.abs() + _LEVEL_FLOOR)
        h = self.input(torch.cat([level, level - (threshold_db / 20)[:, None, None]], dim=1))
        film = self.film(p).view(p.shape[0], len(self.dilations), 2, -1)
        k = self.config.kernel_size
        for i, d in enumerate(self.dilations):
            u = self.convs[i](nn.functional.pad(h, ((k - 1) * d, 0)))  # causal: left padding only
            u = (1 + film[:, i, 0, :, None]) * u + film[:, i, 1, :, None]
            h = h + self.mixes[i](self.acts[i](u))
        return torch.exp(-nn.functional.softplus(self.output(h)))

    def forward(
        self, x: Tensor, threshold_db: Tensor, ratio: Tensor, attack_ms: Tensor, release_ms: Tensor
    ) -> Tensor:
        """Compresses x (batch, channels, time) with parameters (batch,) in physical units; y is
        shaped like x. Each channel is processed on its own, as pedalboard's Compressor does."""
        batch, channels, n = x.shape
        params = [torch.as_tensor(v, dtype=x.dtype, device=x.device).expand(batch)
                  for v in (threshold_db, ratio, attack_ms, release_ms)]
        p = self.normalise(*params).to(x.dtype)
        rows = x.reshape(batch * channels, 1, n)
        g = self.gain(rows, params[0].repeat_interleave(channels), p.repeat_interleave(channels, dim=0))
        return (g * rows).reshape(batch, channels, n)


class _StraightThrough(torch.autograd.Function):
    """Forward: ``exact`` (bit for bit); backward: the incoming gradient goes to ``surrogate``."""

    @staticmethod
    def forward(ctx: Any, exact: Tensor, surrogate: Tensor) -> Tensor:  # type: ignore[override]
        return exact.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        return None, grad


def straight_through(exact: Tensor, surrogate: Tensor) -> Tensor:
    """The values of ``exact`` with the gradients of ``surrogate`` (the "hybrid" proxy)."""
    return _StraightThrough.apply(exact, surrogate)


def compressor_function(kind: str, proxy: CompressorProxy | None, sample_rate: float) -> Compressor | None:
    """The compressor used in training for a proxy ``kind`` (:data:`afxest.choices.PROXIES`): None for ``dsp``
    (afxest's exact differentiable compressor), the proxy itself for ``neural``, and for
    ``hybrid`` the exact compressor's output with the proxy's gradients."""
    if kind == "dsp":
        return None
    if proxy is None:
        raise ValueError(f"the {kind} compressor needs a proxy model")
    if kind == "neural":
        return proxy
    if kind != "hybrid":
        raise ValueError(f"unknown proxy {kind!r}")
    from afxest.dsp.compressor import compressor

    def hybrid(x: Tensor, threshold_db: Tensor, ratio: Tensor, attack_ms: Tensor, release_ms: Tensor) -> Tensor:
        with torch.no_grad():
            exact = compressor(x.detach(), sample_rate, threshold_db=threshold_db.detach(), ratio=ratio.detach(),
                               attack_ms=attack_ms.detach(), release_ms=release_ms.detach())
        return straight_through(exact, proxy(x, threshold_db, ratio, attack_ms, release_ms))

    return hybrid


# ---------------------------------------------------------------------------------------------
# checkpoints


def compressor_ranges(task) -> dict[str, tuple[float, float, str]]:
    """The (lo, hi, mapping) of each compressor parameter in ``task``'s truth space (the proxy
    learns the truth's compressor, :func:`make_proxy_batch`)."""
    index = task.truth.position("compressor")
    if index is None or task.truth.processors[index].fixed:
        raise UserError(f"task {task.name!r} has no compressor with all four parameters to estimate")
    return {r.name: (r.lo, r.hi, r.mapping) for r in task.truth.processors[index].ranges}


def load_proxy(path: Path | str, map_location: Any = "cpu") -> tuple[CompressorProxy, dict[str, Any]]:
    """A trained proxy (weights loaded, in eval mode, frozen) and its checkpoint; one-line
    UserErrors for missing or foreign files."""
    from afxest.checkpoints import load_checkpoint

    path = Path(path)
    state = load_checkpoint(path, map_location, PROXY_FORMAT, "proxy checkpoint", "; train one with afxest train-proxy")
    try:
        proxy = CompressorProxy(ProxyConfig(**state["config"]), {k: tuple(v) for k, v in state["ranges"].items()})
        proxy.load_state_dict(state["model"])
    except Exception as err:  # noqa: BLE001 - mismatched shapes or keys: another version's file
        raise UserError(f"{path}: incompatible proxy checkpoint ({err.__class__.__name__})") from None
    proxy.eval()
    for weight in proxy.parameters():
        weight.requires_grad_(False)
    return proxy, state


def load_task_proxy(path: Path | str, task, map_location: Any = "cpu") -> CompressorProxy:
    """A trained proxy that fits ``task``: one-line UserErrors for a task without a compressor,
    a proxy trained for other parameter ranges or at another sample rate."""
    ranges = compressor_ranges(task)
    proxy, state = load_proxy(path, map_location=map_location)
    if proxy.ranges != {k: tuple(v) for k, v in ranges.items()}:
        raise UserError(f"{path}: the proxy was trained for other compressor ranges than the {task.name} task's")
    if state.get("sample_rate") != task.sample_rate:
        raise UserError(f"{path}: the proxy was trained at {state.get('sample_rate')} Hz, the task runs at {task.sample_rate} Hz")
    return proxy


# ---------------------------------------------------------------------------------------------
# training data


@dataclass
class ProxyBatch:
    """Compressor inputs x, pedalboard's outputs y (batch, 1, frames), physical parameters (batch, 4)."""

    x: np.ndarray
    y: np.ndarray
    params: np.ndarray


def make_proxy_batch(task, source, rng: np.random.Generator, size: int, frames: int) -> ProxyBatch:
    """Draws training items for the proxy: dry excerpts through the task's truth chain up to
    its compressor, then its compressor with parameters uniform in the task's normalised
    ranges, both by pedalboard.

    Arguments:
        task: A task with a compressor in its truth chain (ValueError otherwise).
        source: Where dry excerpts come from (:class:`afxest.data.DrySource`).
        rng: The generator of the excerpts and parameters.
        size: The items.
        frames: The samples per item.

    Returns:
        The compressor's inputs and pedalboard's outputs, with the parameters of each item.
    """
    from afxest.engines import render
    from afxest.presets import Preset, Processor

    index = task.truth.position("compressor")
    if index is None:
        raise ValueError(f"task {task.name!r} has no compressor")
    x = np.empty((size, 1, frames), np.float32)
    y = np.empty_like(x)
    params = np.empty((size, len(COMPRESSOR_PARAMS)), np.float64)
    for i in range(size):
        dry = source.excerpt(rng, frames)[None]
        parts = task.truth.split(rng.random(task.truth.dim))
        chain = [Processor(kind, {k: float(a) for k, a in p.items()}) for kind, p in parts]
        before, comp = Preset(task.sample_rate, tuple(chain[:index])), Preset(task.sample_rate, (chain[index],))
        x[i] = render(before, dry, task.sample_rate, "pedalboard")
        y[i] = render(comp, x[i], task.sample_rate, "pedalboard")
        params[i] = [comp.effects[0].params[name] for name in COMPRESSOR_PARAMS]
    return ProxyBatch(x, y, params)
