"""The processor registry: each catalogue type's differentiable function and pedalboard plugin,
and the effect chain built on them.

:mod:`afxest.catalogue` says what a preset type is (its parameters, its plugin's name); this
module says how afxest renders it. Every differentiable function has one signature:

* an effect: ``fn(x, sample_rate, **params) -> y``, x and y shaped (batch, channels, time),
  each parameter a (batch,) tensor in physical units, named as in the catalogue;
* a source: ``fn(frames, sample_rate, *, start=0, **params) -> (batch, 1, frames)`` float32,
  with the catalogue's parameters but ``duration_s`` (the renderer turns it into ``frames``).

A linear time-invariant effect also says what :func:`apply_chain` merges into one
frequency-domain pass: its biquad ``coefficients`` or its broadband ``amplitude``, each
``(sample_rate, **params)`` -> (b, a) shaped (batch, 3), or (batch,); :func:`power_response`
is a chain of them in the frequency domain.

The module loads neither torch nor pedalboard: :func:`plugin` imports pedalboard alone (so the
pedalboard engine starts without torch), :func:`registry` the dsp modules on first use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from afxest.catalogue import PROCESSORS, ProcessorType

if TYPE_CHECKING:
    from torch import Tensor

EffectFunction = Callable[..., "Tensor"]  # (x, sample_rate, **params) -> y like x
SourceFunction = Callable[..., "Tensor"]  # (frames, sample_rate, *, start=0, **params) -> (batch, 1, frames)
Effect = tuple[str, Mapping[str, "Tensor"]]  # (type, {parameter: (batch,) tensor}), as a chain lists it


@dataclass(frozen=True)
class Entry:
    """How afxest renders one catalogue type.

    ``function`` reproduces the type's pedalboard plugin (:func:`plugin`), sample for sample
    within the tolerances of tests/test_processors.py. ``coefficients`` (a biquad) or
    ``amplitude`` (a broadband gain) make the effect linear and time-invariant. ``straight_through``:
    the function training renders instead, with ``function``'s output and a usable gradient where
    it has none (the clipper)."""

    spec: ProcessorType
    function: EffectFunction | SourceFunction
    coefficients: Callable[..., tuple[Tensor, Tensor]] | None = None
    amplitude: Callable[..., Tensor] | None = None
    straight_through: EffectFunction | None = None

    @property
    def linear(self) -> bool:
        """Whether the effect is linear and time-invariant (merged with its neighbours by :func:`apply_chain`)."""
        return self.coefficients is not None or self.amplitude is not None


@cache
def registry() -> dict[str, Entry]:
    """Every catalogue type's :class:`Entry`, by type name (the dsp modules imported on first call)."""
    from afxest.dsp import amplitude, compressor, convolution, delay, filters, fm, reverb

    entries = (
        Entry(PROCESSORS["low_shelf"], filters.low_shelf, coefficients=filters.low_shelf_coefficients),
        Entry(PROCESSORS["high_shelf"], filters.high_shelf, coefficients=filters.high_shelf_coefficients),
        Entry(PROCESSORS["peak"], filters.peak, coefficients=filters.peak_coefficients),
        Entry(PROCESSORS["compressor"], compressor.compressor),
        Entry(PROCESSORS["gain"], amplitude.gain, amplitude=amplitude.gain_amplitude),
        Entry(PROCESSORS["limiter"], compressor.limiter),
        Entry(PROCESSORS["clipping"], amplitude.hard_clip, straight_through=amplitude.straight_through_clip),
        Entry(PROCESSORS["convolution"], convolution.convolution),
        # delay.straight_through_delay is not its straight-through variant: in a 300-step check
        # on the mix task its time gradient made the delay times worse (docs/effects.md)
        Entry(PROCESSORS["delay"], delay.delay),
        Entry(PROCESSORS["reverb"], reverb.reverb),
        Entry(PROCESSORS["fm"], fm.fm_synth),
    )
    return {e.spec.name: e for e in entries}


def entry(kind: str) -> Entry:
    """The :class:`Entry` of type ``kind``; ValueError for a type afxest cannot render."""
    found = registry().get(kind)
    if found is None:
        raise ValueError(f"no differentiable processor for type {kind!r}")
    return found


def plugin(kind: str, params: Mapping[str, Any], sample_rate: float | None = None) -> Any:
    """The pedalboard plugin of effect type ``kind`` (the catalogue's ``plugin``) set to ``params``.

    ``convolution``: pedalboard's ``Convolution`` of the impulse response h (at ``sample_rate``,
    the preset's, which it needs: a preset holding one renders at its own rate only,
    :meth:`afxest.presets.Preset.check_sample_rate`), which scales h to an L2 norm of
    1/8 (JUCE's ``Convolution::Normalise::yes``), followed by the ``Gain`` 20 log10(8 ||h||_2)
    that restores it: h convolved exactly, causal (its latency is the renderers',
    :class:`afxest.engines.Chain`)."""
    import pedalboard

    spec = PROCESSORS.get(kind)
    if spec is None or spec.plugin is None:
        raise ValueError(f"no pedalboard plugin for type {kind!r}")
    if spec.samples:
        import numpy as np

        if sample_rate is None:
            raise ValueError(f"a {kind} plugin needs its impulse response's sample rate")
        h = np.asarray(params[spec.samples], np.float32)
        norm = float(np.sqrt(np.sum(np.square(h, dtype=np.float64))))
        return pedalboard.Pedalboard([getattr(pedalboard, spec.plugin)(h, sample_rate=float(sample_rate)),
                                      pedalboard.Gain(20 * math.log10(8 * norm))])
    return getattr(pedalboard, spec.plugin)(**params)


def apply_chain(
    x: Tensor,
    effects: Sequence[Effect],
    sample_rate: float,
    clip_gradient: bool = False,
    replace: Mapping[str, EffectFunction] | None = None,
) -> Tensor:
    """Processes x by ``effects`` in order, each by its registry entry.

    Consecutive linear time-invariant effects (:attr:`Entry.linear`) are merged into one
    frequency-domain pass (their responses multiply, :func:`afxest.dsp.filters.apply_biquads`);
    the others run in order between them.

    Arguments:
        x: The audio, shaped (batch, channels, time).
        effects: The chain, (type, {parameter: (batch,) tensor}) pairs in physical units.
        sample_rate: The sample rate in Hz.
        clip_gradient: Whether each effect renders by its ``straight_through`` function where it
            has one (training: the clipper's output with a smooth clipper's gradient).
        replace: Functions, by type, that render that type instead of its entry for this call
            (a proxy of the compressor, :func:`afxest.engines.render_model`); never merged.

    Returns:
        The processed audio, shaped like x; ValueError for a source or a type with no entry.
    """
    from afxest.dsp.filters import apply_biquads

    replace = replace or {}
    biquads: list[tuple[Tensor, Tensor]] = []
    scale: Tensor | None = None

    def flush(x: Tensor) -> Tensor:
        nonlocal biquads, scale
        if biquads:
            x = apply_biquads(x, biquads, sample_rate, scale)
        elif scale is not None:
            x = x * scale[:, None, None]
        biquads, scale = [], None
        return x

    for kind, p in effects:
        e = entry(kind)
        if e.spec.kind != "effect":
            raise ValueError(f"{kind} is a source, not an effect")
        if kind in replace:
            x = replace[kind](flush(x), sample_rate, **p)
        elif e.coefficients is not None:
            biquads.append(e.coefficients(sample_rate, **p))
        elif e.amplitude is not None:
            amp = e.amplitude(sample_rate, **p)
            scale = amp if scale is None else scale * amp
        else:
            function = e.straight_through if clip_gradient and e.straight_through is not None else e.function
            x = function(flush(x), sample_rate, **p)
    return flush(x)


def power_response(effects: Sequence[Effect], sample_rate: float, at: int | Tensor) -> Tensor:
    """The power response |H(e^{jw})|^2 of a chain of linear time-invariant effects
    (:attr:`Entry.linear`): the product, in chain order, of each biquad's |B/A|^2 (its
    registry ``coefficients``) and each broadband gain's ``amplitude`` squared.

    Arguments:
        effects: The chain, (type, {parameter: (batch,) tensor}) pairs in physical units.
        sample_rate: The sample rate in Hz.
        at: Where the response is computed: an FFT size n_fft (the n_fft // 2 + 1 bins of an
            rfft, :func:`afxest.dsp.filters.frequency_response`) or frequencies in Hz, (bins,).

    Returns:
        (batch, bins), in the parameters' precision (use float64: the training objective and
        the equaliser fit do); ValueError for an effect that is not linear and time-invariant.
    """
    import torch

    from afxest.dsp.filters import frequency_response

    bins = at // 2 + 1 if isinstance(at, int) else len(at)
    response: Tensor | None = None
    for kind, p in effects:
        e = entry(kind)
        if e.coefficients is not None:
            b, a = e.coefficients(sample_rate, **p)
            if isinstance(at, int):
                h = frequency_response(b, a, at)
                power = h.real.square() + h.imag.square()
            else:
                power = _biquad_power_at(b, a, at, sample_rate)
        elif e.amplitude is not None:
            power = e.amplitude(sample_rate, **p).square()[:, None]
        else:
            raise ValueError(f"{kind} is not linear and time-invariant")
        response = power if response is None else response * power
    if response is None:
        return torch.ones(1, bins, dtype=torch.float64)
    return response.expand(response.shape[0], bins)


def _biquad_power_at(b: Tensor, a: Tensor, frequencies: Tensor, sample_rate: float) -> Tensor:
    """|B(e^{jw}) / A(e^{jw})|^2 of biquads (b, a) (batch, 3) at ``frequencies`` (Hz, (bins,)),
    w = 2 pi f / sample_rate, in real arithmetic: for c = (c0, c1, c2) and phi = sin^2(w / 2),
    |C(e^{jw})|^2 = (c0 + c1 + c2)^2 - 4 (c0 c1 + 4 c0 c2 + c1 c2) phi + 16 c0 c2 phi^2
    (the form in phi keeps its precision where poles and zeros sit near z = 1: a high-Q peak
    near DC, whose terms in cos w would cancel). (batch, bins); fewer operations than the
    complex ratio (:func:`_biquad_at`), whose gradient the equaliser fit takes 200 times per
    estimate."""
    import torch

    phi = torch.sin(frequencies.to(b) * (torch.pi / sample_rate)).square()

    def squared(c: Tensor) -> Tensor:
        c0, c1, c2 = c[:, 0:1], c[:, 1:2], c[:, 2:3]
        return (c0 + c1 + c2).square() - 4 * (c0 * c1 + 4 * c0 * c2 + c1 * c2) * phi + 16 * (c0 * c2) * phi.square()

    return squared(b) / squared(a)


def _biquad_at(b: Tensor, a: Tensor, frequencies: Tensor, sample_rate: float) -> Tensor:
    """H = B(e^{jw}) / A(e^{jw}) of biquads (b, a) (batch, 3) at ``frequencies`` (Hz, (bins,)),
    w = 2 pi f / sample_rate: (batch, bins) complex."""
    import torch

    w = frequencies.to(b) * (2 * torch.pi / sample_rate)
    z1 = torch.polar(torch.ones_like(w), -w)  # e^{-jw}
    z2 = z1 * z1
    return (b[:, 0:1] + b[:, 1:2] * z1 + b[:, 2:3] * z2) / (a[:, 0:1] + a[:, 1:2] * z1 + a[:, 2:3] * z2)
