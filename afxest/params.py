"""Parameter spaces: physical parameters, their valid ranges, and normalised <-> physical maps.

Two kinds of range live here, each written once:

* ``Param``: a physical parameter of an effect or synth (name, unit, valid range). Preset
  validation reads it.
* ``ParamRange``: the interval a task samples and estimates a ``Param`` in, with the mapping
  between a normalised value v in [0, 1] and the physical value (DAFx 2025, Eq. 15):

  - ``"exp"``:    p = exp((ln hi - ln lo) v + ln lo)      (Eq. 15a; frequencies, times, ratios)
  - ``"affine"``: p = (hi - lo) v + lo                     (Eqs. 15b-c; gains, q)

  The FM modulation index of Eq. 20a, I = 4 pi 10^(0.75 * 99 (v - 1) / 20), is the ``"exp"``
  map on [4 pi 10^(-74.25/20), 4 pi].

The maps work on floats, numpy arrays and torch tensors alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Mapping = Literal["exp", "affine"]


@dataclass(frozen=True)
class Param:
    """A physical parameter with its unit, valid range and short name.

    ``short`` labels it in tables and figures (``f`` for a cutoff frequency);
    ``minimum``/``maximum`` bound the valid values (``None``: unbounded); ``*_inclusive`` says
    whether the bound itself is valid. ``below_nyquist`` adds the bound value < sample_rate / 2,
    and ``one_sample`` (a duration) value >= 1 / sample_rate, both checked against the sample
    rate in use.
    """

    name: str
    unit: str
    description: str
    short: str = ""
    minimum: float | None = None
    maximum: float | None = None
    minimum_inclusive: bool = True
    maximum_inclusive: bool = True
    below_nyquist: bool = False
    one_sample: bool = False

    def problem(self, value: float, sample_rate: float | None = None) -> str | None:
        """Why ``value`` is not a valid physical value, or None when it is."""
        if not math.isfinite(value):
            return f"{self.name} must be finite, got {value}"
        lo, hi = self.minimum, self.maximum
        if lo is not None and (value < lo or (value == lo and not self.minimum_inclusive)):
            op = ">=" if self.minimum_inclusive else ">"
            return f"{self.name} must be {op} {lo:g} {self.unit}, got {value:g}".replace(" ,", ",")
        if hi is not None and (value > hi or (value == hi and not self.maximum_inclusive)):
            op = "<=" if self.maximum_inclusive else "<"
            return f"{self.name} must be {op} {hi:g} {self.unit}, got {value:g}".replace(" ,", ",")
        if self.below_nyquist and sample_rate is not None and value >= sample_rate / 2:
            return (
                f"{self.name} must be below the Nyquist frequency ({sample_rate / 2:g} Hz "
                f"at {sample_rate:g} Hz), got {value:g}"
            )
        if self.one_sample and sample_rate is not None and value * sample_rate < 1:
            return f"{self.name} must last at least one sample ({1 / sample_rate:g} s at {sample_rate:g} Hz), got {value:g}"
        return None


@dataclass(frozen=True)
class ParamRange:
    """The interval [lo, hi] a task samples and estimates ``param`` in, and its mapping."""

    param: Param
    lo: float
    hi: float
    mapping: Mapping

    def __post_init__(self) -> None:
        if not self.lo < self.hi:
            raise ValueError(f"{self.param.name}: empty range [{self.lo}, {self.hi}]")
        if self.mapping == "exp" and self.lo <= 0:
            raise ValueError(f"{self.param.name}: exponential mapping needs lo > 0")
        for bound in (self.lo, self.hi):
            problem = self.param.problem(bound)
            if problem:
                raise ValueError(f"range outside the valid values: {problem}")

    @property
    def name(self) -> str:
        return self.param.name

    def to_physical(self, v: Any) -> Any:
        """Map normalised v in [0, 1] to the physical value (DAFx Eq. 15)."""
        if self.mapping == "exp":
            log_lo, log_hi = math.log(self.lo), math.log(self.hi)
            return _exp((log_hi - log_lo) * v + log_lo)
        return (self.hi - self.lo) * v + self.lo

    def to_normalised(self, p: Any) -> Any:
        """Inverse of :meth:`to_physical` (not clamped: values outside the range leave [0, 1])."""
        if self.mapping == "exp":
            log_lo, log_hi = math.log(self.lo), math.log(self.hi)
            return (_log(p) - log_lo) / (log_hi - log_lo)
        return (p - self.lo) / (self.hi - self.lo)


def _exp(x: Any) -> Any:
    return x.exp() if hasattr(x, "exp") else math.exp(x) if isinstance(x, (int, float)) else _np().exp(x)


def _log(x: Any) -> Any:
    return x.log() if hasattr(x, "log") else math.log(x) if isinstance(x, (int, float)) else _np().log(x)


def _np() -> Any:
    import numpy

    return numpy
