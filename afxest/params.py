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
    rate in use. ``stepped``: the rendering is a step function of it (a whole number of
    samples), so its gradient is 0 and a finite difference measures a jump, not a slope (the
    search's Levenberg-Marquardt trials hold it: :func:`afxest.search.least_squares`).
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
    stepped: bool = False

    def problem(self, value: float, sample_rate: float | None = None) -> str | None:
        """Why ``value`` is not a valid physical value (at ``sample_rate``, where the bounds
        depend on it), or None when it is.

        Example:
            >>> Param("q", "", "quality factor", minimum=0.01).problem(0.0)
            'q must be >= 0.01, got 0'
        """
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
        """Refuses (ValueError) an empty range, an ``exp`` range reaching 0, and bounds that are
        not valid values of the parameter."""
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
        """The parameter's name."""
        return self.param.name

    def to_physical(self, v: Any) -> Any:
        """Maps normalised v in [0, 1] to the physical value (DAFx 2025, Eq. 15); v may be a float,
        a numpy array or a torch tensor.

        Example:
            >>> cutoff = ParamRange(Param("cutoff_frequency_hz", "Hz", "cutoff"), 500.0, 2500.0, "exp")
            >>> [round(cutoff.to_physical(v), 6) for v in (0.0, 0.5, 1.0)]  # 0.5: the geometric mean
            [500.0, 1118.033989, 2500.0]
        """
        if self.mapping == "exp":
            log_lo, log_hi = math.log(self.lo), math.log(self.hi)
            return _exp((log_hi - log_lo) * v + log_lo)
        return (self.hi - self.lo) * v + self.lo

    def to_normalised(self, p: Any) -> Any:
        """The inverse of :meth:`to_physical` (not clamped: values outside the range leave [0, 1])."""
        if self.mapping == "exp":
            log_lo, log_hi = math.log(self.lo), math.log(self.hi)
            return (_log(p) - log_lo) / (log_hi - log_lo)
        return (p - self.lo) / (self.hi - self.lo)


def _exp(x: Any) -> Any:
    """exp of a tensor (its own method), a float (math) or anything numpy takes."""
    return x.exp() if hasattr(x, "exp") else math.exp(x) if isinstance(x, (int, float)) else _np().exp(x)


def _log(x: Any) -> Any:
    """log of a tensor (its own method), a float (math) or anything numpy takes."""
    return x.log() if hasattr(x, "log") else math.log(x) if isinstance(x, (int, float)) else _np().log(x)


def _np() -> Any:
    import numpy

    return numpy
