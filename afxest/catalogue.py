"""The processors a preset can name: their types, parameters and valid physical ranges.

Effect types and parameter names are pedalboard's own, so an ``afxest-preset/1`` effect maps
1:1 onto a pedalboard plugin. This module is the single place these facts are written: preset
validation, the JSON Schema, both render engines and the tasks read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from afxest.params import Param

_DB_LIMIT = 120.0  # beyond +-120 dB a gain leaves float32's useful range
# JUCE (inside pedalboard) turns a level of -100 dB or below into a gain of exactly 0: Gain and
# Clipping then output silence, shelves silence and peaks NaN, while ddsp keeps 10^(dB/20).
# Levels must be above it, where the two engines agree.
_DB_FLOOR = -100.0

CUTOFF = Param(
    "cutoff_frequency_hz", "Hz", "corner (shelves) or centre (peak) frequency", short="f",
    minimum=2.0, below_nyquist=True,  # JUCE clamps lower cutoffs to 2 Hz, so we refuse them
)
FILTER_GAIN = Param(
    "gain_db", "dB", "gain of the shelf or peak; A = 10^(gain_db / 40)", short="g",
    minimum=_DB_FLOOR, maximum=_DB_LIMIT, minimum_inclusive=False,
)
# pedalboard takes q as a float32 (below 1.2e-38 it refuses it or outputs NaN), and the ddsp
# biquads' impulse responses, which they render whole, grow as 1/q and as q: beyond 0.01..100
# a filter is no longer an equaliser's band (a notch or a flat line) and ddsp cannot hold it.
Q = Param("q", "", "quality factor (RBJ cookbook Q form)", short="Q", minimum=0.01, maximum=100.0)
THRESHOLD = Param(
    "threshold_db", "dBFS", "compressor threshold; no gain change below it", short="thr",
    minimum=-200.0, maximum=_DB_LIMIT, minimum_inclusive=False,
)
RATIO = Param("ratio", ":1", "compression ratio above the threshold", short="ratio", minimum=1.0)
ATTACK = Param("attack_ms", "ms", "attack time of the peak ballistics filter", short="att", minimum=0.0)
RELEASE = Param("release_ms", "ms", "release time of the peak ballistics filter", short="rel", minimum=0.0)
GAIN = Param("gain_db", "dB", "broadband gain", short="g", minimum=_DB_FLOOR, maximum=_DB_LIMIT, minimum_inclusive=False)
CLIP_THRESHOLD = Param(
    "threshold_db", "dBFS", "hard clipping level, 10^(threshold_db / 20)", short="thr",
    minimum=_DB_FLOOR, maximum=_DB_LIMIT, minimum_inclusive=False,
)
# JUCE's limiter brings its threshold to 0 dBFS by a gain of 10^(-threshold_db / 20), which it
# floors to 0 at -100 dB: thresholds must stay below +100 dB, where the engines agree
LIMIT_THRESHOLD = Param(
    "threshold_db", "dBFS", "limiter threshold: peaks held there, then the threshold brought to 0 dBFS", short="thr",
    minimum=_DB_FLOOR, maximum=24.0, minimum_inclusive=False,
)
CARRIER = Param(
    "carrier_hz", "Hz", "carrier frequency f_c (DAFx Eq. 19)", short="f_c",
    minimum=0.0, minimum_inclusive=False, below_nyquist=True,
)
AMPLITUDE = Param("amplitude", "", "carrier amplitude I_c (DAFx Eq. 19)", short="amp", minimum=0.0, maximum=1e3)
MOD_INDEX = Param(
    "modulation_index", "rad", "modulation index I_m (DAFx Eq. 19)", short="I_m", minimum=0.0, maximum=1e4
)
FREQ_RATIO = Param(
    "frequency_ratio", "", "modulator to carrier frequency ratio f_m / f_c (DAFx Eq. 20b)", short="f_m/f_c",
    minimum=0.0, minimum_inclusive=False, maximum=1e3,
)
# pedalboard's Delay and Reverb take every parameter but the delay time in [0, 1]
DELAY_SECONDS = Param(
    "delay_seconds", "s", "echo delay, trunc(float32(delay_seconds) * sample_rate) samples", short="t",
    minimum=0.0, maximum=30.0, stepped=True,
)
FEEDBACK = Param("feedback", "", "gain of the echo fed back into the delay line", short="fb", minimum=0.0, maximum=1.0)
MIX = Param("mix", "", "gain of the echoes; the input's is 1 - mix", short="mix", minimum=0.0, maximum=1.0)
ROOM_SIZE = Param("room_size", "", "combs' feedback 0.7 + 0.28 room_size", short="room", minimum=0.0, maximum=1.0)
DAMPING = Param("damping", "", "combs' one-pole low-pass coefficient 0.4 damping", short="damp",
                minimum=0.0, maximum=1.0)
WET_LEVEL = Param("wet_level", "", "gain of the reverberation, times 3", short="wet", minimum=0.0, maximum=1.0)
DRY_LEVEL = Param("dry_level", "", "gain of the input, times 2", short="dry", minimum=0.0, maximum=1.0)
WIDTH = Param("width", "", "stereo width: each wet channel's own side (1 + width) / 2, the other's (1 - width) / 2",
              short="width", minimum=0.0, maximum=1.0)
# the ``convolution`` effect's impulse response is a list of numbers (ProcessorType.samples);
# its latency, the sample of the response that is time zero, is compensated by every renderer
LATENCY = Param("latency_samples", "samples", "the impulse response's sample that is time zero (compensated)",
                short="lat", minimum=0.0)
MAX_IMPULSE_RESPONSE = 1 << 18  # samples: at most 5.9 s at 44.1 kHz
DURATION = Param(
    "duration_s", "s", "length of the synthesised sound", short="dur",
    minimum=0.0, minimum_inclusive=False, maximum=3600.0, one_sample=True,
)


@dataclass(frozen=True)
class ProcessorType:
    """One preset ``type``: its parameters in JSON order, the pedalboard plugin it maps to, and
    its short name in tables and figures (``HS`` for high_shelf)."""

    name: str
    kind: Literal["effect", "source"]
    params: tuple[Param, ...]
    plugin: str | None
    description: str
    short: str
    samples: str | None = None  # the name of its one list-of-numbers parameter (``convolution``'s)
    # whether its plugin's output channels depend on each other (the reverb's stereo width); the
    # others treat each channel alone, so a chain of them renders bit for bit channel by channel
    mixes_channels: bool = False

    def param(self, name: str) -> Param:
        """The parameter ``name`` of this type; KeyError when it has none."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


PROCESSORS: dict[str, ProcessorType] = {
    t.name: t
    for t in (
        ProcessorType("low_shelf", "effect", (CUTOFF, FILTER_GAIN, Q), "LowShelfFilter",
                      "RBJ cookbook low shelf biquad", "LS"),
        ProcessorType("high_shelf", "effect", (CUTOFF, FILTER_GAIN, Q), "HighShelfFilter",
                      "RBJ cookbook high shelf biquad", "HS"),
        ProcessorType("peak", "effect", (CUTOFF, FILTER_GAIN, Q), "PeakFilter",
                      "RBJ cookbook peaking biquad", "PK"),
        ProcessorType("compressor", "effect", (THRESHOLD, RATIO, ATTACK, RELEASE), "Compressor",
                      "JUCE compressor: peak ballistics detector, hard knee, no make-up gain", "comp"),
        ProcessorType("gain", "effect", (GAIN,), "Gain", "broadband gain", "gain"),
        ProcessorType("clipping", "effect", (CLIP_THRESHOLD,), "Clipping",
                      "hard clipper at 10^(threshold_db / 20)", "clip"),
        ProcessorType("limiter", "effect", (LIMIT_THRESHOLD, RELEASE), "Limiter",
                      "JUCE limiter: two compressors (the second 1000:1 at the threshold), make-up gain to 0 dBFS, "
                      "hard clip at 0 dBFS", "lim"),
        ProcessorType("convolution", "effect", (LATENCY,), "Convolution",
                      "FIR filter: the impulse response convolved exactly (pedalboard normalises it to an L2 norm "
                      "of 1/8, afxest's plugin restores it by a Gain), the first latency_samples of the output "
                      "dropped", "conv", samples="impulse_response"),
        ProcessorType("delay", "effect", (DELAY_SECONDS, FEEDBACK, MIX), "Delay",
                      "feedback delay line (JUCE DelayLine, no interpolation) mixed with the input", "dly"),
        ProcessorType("reverb", "effect", (ROOM_SIZE, DAMPING, WET_LEVEL, DRY_LEVEL, WIDTH), "Reverb",
                      "Freeverb (JUCE Reverb): 8 damped combs and 4 all-passes per channel, freeze mode off", "rev",
                      mixes_channels=True),
        ProcessorType("fm", "source", (CARRIER, AMPLITUDE, MOD_INDEX, FREQ_RATIO, DURATION), None,
                      "two-operator FM synth, y = I_c sin(2 pi f_c t + I_m sin(2 pi f_m t))", "fm"),
    )
}

EFFECT_TYPES = tuple(n for n, t in PROCESSORS.items() if t.kind == "effect")
SOURCE_TYPES = tuple(n for n, t in PROCESSORS.items() if t.kind == "source")

# units as labels print them after a parameter's short name, in narrow table columns: dBFS as
# dB, and none for a ratio or the modulation index
LABEL_UNITS = {"dBFS": "dB", ":1": "", "rad": ""}


def mixes_channels(types: Iterable[str]) -> bool:
    """Whether a processor of these types mixes a stereo input's channels
    (:attr:`ProcessorType.mixes_channels`), so that a chain of them is not the same chain on each
    channel alone."""
    return any(PROCESSORS[t].mixes_channels for t in types)


def parameter_label(kind: str, index: int | None, name: str, sep: str = " ", unit: bool = True) -> str:
    """The label of a parameter in tables and figures: the processor's short name and index,
    ``sep``, the parameter's short name and, with ``unit``, its unit (:data:`LABEL_UNITS`).

    Arguments:
        kind: The processor's type.
        index: The processor's place in its chain, from 0 (as a preset's source then effects,
            and :attr:`afxest.tasks.Space.names`, count them); None for several processors of
            the type together (``eq``'s summed shelf gain).
        name: The parameter's name.
        sep: What separates the processor from the parameter (a table header: a newline).
        unit: Whether the unit follows (physical values; not normalised ones).

    Example:
        >>> parameter_label("high_shelf", 0, "cutoff_frequency_hz"), parameter_label("compressor", 5, "ratio")
        ('HS0 f Hz', 'comp5 ratio')
        >>> parameter_label("compressor", 5, "threshold_db", unit=False), parameter_label("high_shelf", None, "gain_db")
        ('comp5 thr', 'HS g dB')
    """
    processor = PROCESSORS[kind]
    param = processor.param(name)
    shown = LABEL_UNITS.get(param.unit, param.unit) if unit else ""
    return f"{processor.short}{'' if index is None else index}{sep}{param.short}" + (f" {shown}" if shown else "")
