"""The ``afxest-preset/1`` format: parsing, validation, writing and its JSON Schema.

A preset is::

    {"format": "afxest-preset/1", "task": "eq", "sample_rate": 22050,
     "effects": [{"type": "high_shelf", "cutoff_frequency_hz": 1200.0, "gain_db": 4.5, "q": 0.9}],
     "source": null}

``effects`` are applied in order; ``source`` (a synth, or null) generates the signal instead of
a dry file. Types and parameter names come from :mod:`afxest.catalogue`. Every validation
error is one line naming the file, the effect index and the parameter.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afxest.catalogue import EFFECT_TYPES, MAX_IMPULSE_RESPONSE, PROCESSORS, SOURCE_TYPES, ProcessorType
from afxest.errors import UserError, brief, shortened

PRESET_FORMAT = "afxest-preset/1"
ESTIMATE_FORMAT = "afxest-estimate/1"


@dataclass(frozen=True)
class Processor:
    """One effect or source: its ``type`` and physical parameter values, in catalogue order
    (a type's list-of-numbers parameter, :attr:`ProcessorType.samples`, last, as a tuple)."""

    type: str
    params: dict[str, Any]

    @property
    def spec(self) -> ProcessorType:
        """The catalogue's entry of the type."""
        return PROCESSORS[self.type]

    def to_dict(self) -> dict[str, Any]:
        """The processor as its JSON object: ``type``, then the parameters."""
        return {"type": self.type, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}}


@dataclass(frozen=True)
class Preset:
    """A validated ``afxest-preset/1`` document."""

    sample_rate: float
    effects: tuple[Processor, ...] = ()
    source: Processor | None = None
    task: str | None = None

    @property
    def processors(self) -> tuple[Processor, ...]:
        """Every processor in signal order: the source (when there is one), then the effects, as
        a task's model lists them (``task.model.processors``)."""
        return ((self.source,) if self.source is not None else ()) + self.effects

    def to_dict(self) -> dict[str, Any]:
        """The preset as an ``afxest-preset/1`` JSON document (see :func:`dumps_preset`)."""
        return {
            "format": PRESET_FORMAT,
            "task": self.task,
            "sample_rate": self.sample_rate,
            "effects": [e.to_dict() for e in self.effects],
            "source": None if self.source is None else self.source.to_dict(),
        }

    def check_sample_rate(self, sample_rate: float, where: str) -> None:
        """Refuses parameters that are invalid at ``sample_rate`` (e.g. cutoff >= Nyquist), and a
        ``convolution`` at another rate than the preset's (its impulse response is in samples),
        with a one-line UserError prefixed by ``where``."""
        items = [(f"effects[{i}]", e) for i, e in enumerate(self.effects)]
        for label, e in items:
            if e.spec.samples and sample_rate != self.sample_rate:
                raise UserError(f"{where}: {label} ({e.type}): its {e.spec.samples} is at the preset's sample_rate "
                                f"({self.sample_rate:g} Hz); resample the audio to it")
        if self.source is not None:
            items.append(("source", self.source))
        for label, proc in items:
            for p in proc.spec.params:
                problem = p.problem(proc.params[p.name], sample_rate)
                if problem:
                    raise UserError(f"{where}: {label} ({proc.type}): {problem}")


def parse_preset(doc: Any, where: str) -> Preset:
    """Validates a decoded JSON document as ``afxest-preset/1`` and returns its :class:`Preset`;
    ``where`` prefixes the one-line UserErrors."""
    if not isinstance(doc, dict):
        raise UserError(f"{where}: a preset must be a JSON object")
    fmt = doc.get("format")
    if fmt != PRESET_FORMAT:
        raise UserError(f"{where}: format must be {PRESET_FORMAT!r}, got {brief(fmt)}")
    unknown = sorted(set(doc) - {"format", "task", "sample_rate", "effects", "source"})
    if unknown:
        raise UserError(f"{where}: unknown key {brief(unknown[0])}")
    task = doc.get("task")
    if task is not None and not isinstance(task, str):
        raise UserError(f"{where}: task must be a string or null")
    if "sample_rate" not in doc:
        raise UserError(f"{where}: missing sample_rate")
    sample_rate = _number(doc["sample_rate"], f"{where}: sample_rate")
    if sample_rate != int(sample_rate) or not 1 <= sample_rate <= 1_000_000:
        raise UserError(f"{where}: sample_rate must be a whole number of Hz from 1 to 1000000, got {sample_rate:g}")
    if "effects" not in doc:
        raise UserError(f"{where}: missing effects (use [] for none)")
    effects_doc = doc["effects"]
    if not isinstance(effects_doc, list):
        raise UserError(f"{where}: effects must be a list")
    effects = tuple(
        _parse_processor(e, f"{where}: effects[{i}]", EFFECT_TYPES, sample_rate)
        for i, e in enumerate(effects_doc)
    )
    source_doc = doc.get("source")
    source = None
    if source_doc is not None:
        source = _parse_processor(source_doc, f"{where}: source", SOURCE_TYPES, sample_rate)
    return Preset(sample_rate=sample_rate, effects=effects, source=source, task=task)


def _parse_processor(doc: Any, where: str, allowed: tuple[str, ...], sample_rate: float) -> Processor:
    """One effect or source of a preset, checked against the ``allowed`` types and the catalogue
    at ``sample_rate``; ``where`` prefixes the errors."""
    if not isinstance(doc, dict):
        raise UserError(f"{where}: must be a JSON object")
    kind = doc.get("type")
    if kind not in allowed:
        raise UserError(f"{where}: unknown type {brief(kind)} (expected one of {', '.join(allowed)})")
    spec = PROCESSORS[kind]
    where = f"{where} ({kind})"
    names = [p.name for p in spec.params] + ([spec.samples] if spec.samples else [])
    extra = [k for k in doc if k != "type" and k not in names]
    if extra:
        raise UserError(f"{where}: unknown parameter {brief(extra[0])} (expected {', '.join(names)})")
    params: dict[str, float] = {}
    for p in spec.params:
        if p.name not in doc:
            raise UserError(f"{where}: missing parameter {p.name!r}")
        value = _number(doc[p.name], f"{where}: {p.name}")
        problem = p.problem(value, sample_rate)
        if problem:
            raise UserError(f"{where}: {problem}")
        params[p.name] = value
    if spec.samples:
        params[spec.samples] = _samples(doc, spec.samples, params, where)
    return Processor(kind, params)


def _samples(doc: dict[str, Any], name: str, params: dict[str, Any], where: str) -> tuple[float, ...]:
    """A ``convolution``'s impulse response ``doc[name]``: a list of 1 to
    :data:`afxest.catalogue.MAX_IMPULSE_RESPONSE` finite numbers, not all zero, whose
    ``latency_samples`` (in ``params``) is a whole number indexing it."""
    if name not in doc:
        raise UserError(f"{where}: missing parameter {name!r}")
    values = doc[name]
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_IMPULSE_RESPONSE:
        raise UserError(f"{where}: {name} must be a list of 1 to {MAX_IMPULSE_RESPONSE} numbers")
    samples = tuple(_number(v, f"{where}: {name}[{i}]") for i, v in enumerate(values))
    if not any(samples):
        raise UserError(f"{where}: {name} is all zeros")
    latency = params["latency_samples"]
    if latency != int(latency) or latency >= len(samples):
        raise UserError(f"{where}: latency_samples must be a whole number below the {len(samples)} samples "
                        f"of {name}, got {latency:g}")
    return samples


def _number(value: Any, where: str) -> float:
    """``value`` as a finite float; a UserError naming ``where`` for a bool, a non-number or an
    infinite value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where} must be a number, got {shortened(json.dumps(value))}")
    try:
        value = float(value)
    except OverflowError:
        raise UserError(f"{where} must be finite, got a number too large for a float") from None
    if not math.isfinite(value):
        raise UserError(f"{where} must be finite, got {value}")
    return value


def read_json(path: str | os.PathLike[str]) -> Any:
    """Reads a JSON file, turning every failure (a key named twice included) into a one-line UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read as UTF-8 text ({err.__class__.__name__})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except DuplicateKey as err:
        raise UserError(f"{path}: invalid JSON (the key {brief(err.key)} appears twice in one object)") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: invalid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except (ValueError, RecursionError) as err:  # over-long numbers, absurd nesting
        raise UserError(f"{path}: invalid JSON ({str(err).splitlines()[0] or err.__class__.__name__})") from None


class DuplicateKey(ValueError):
    """A JSON object names the same key twice (JSON parsers disagree on which one wins)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The JSON object of ``pairs``; :class:`DuplicateKey` for a key named twice (an ``object_pairs_hook``)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def load_preset(path: str | os.PathLike[str], candidate: int = 1) -> Preset:
    """Loads a preset file, or candidate ``candidate`` (1-based rank) of an estimate file."""
    doc = read_json(path)
    if isinstance(doc, dict) and doc.get("format") == ESTIMATE_FORMAT:
        candidates = doc.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            raise UserError(f"{path}: estimate has no candidates")
        ranked = {
            c["rank"]: c
            for c in candidates
            if isinstance(c, dict) and type(c.get("rank")) is int  # not bool, not a list
        }
        if candidate not in ranked:
            raise UserError(f"{path}: no candidate of rank {candidate} (1..{len(candidates)})")
        return parse_preset(ranked[candidate].get("preset"), f"{path}: candidates[rank {candidate}]")
    if candidate != 1:
        raise UserError(f"{path}: --candidate applies to estimate files, this is a preset")
    return parse_preset(doc, str(path))


def estimate_placement(document: Any) -> tuple[int, int, int] | None:
    """(offset, frames, rate) that put a rendering of an estimate's dry onto its wet's timeline
    (:func:`afxest.audio.placed`: ``offset`` samples late, ``frames`` long, both at ``rate``),
    from an ``afxest-estimate/1`` document's ``alignment``; None for any other document."""
    if not isinstance(document, dict) or document.get("format") != ESTIMATE_FORMAT:
        return None
    alignment = document.get("alignment")
    if not isinstance(alignment, dict):
        return None
    try:
        values = tuple(int(alignment[key]) for key in ("offset_samples", "wet_frames", "sample_rate"))
    except (KeyError, TypeError, ValueError):
        return None
    return values if values[1] >= 0 and values[2] > 0 else None  # type: ignore[return-value]


def dumps_preset(preset: Preset) -> str:
    """The preset as pretty-printed JSON text (with a trailing newline)."""
    return json.dumps(preset.to_dict(), indent=2) + "\n"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``afxest-preset/1``, generated from the catalogue.

    Nyquist bounds depend on the sample rate and are checked by :func:`parse_preset` only.
    """

    def processor_schema(spec: ProcessorType) -> dict[str, Any]:
        props: dict[str, Any] = {"type": {"const": spec.name}}
        for p in spec.params:
            s: dict[str, Any] = {"type": "number", "description": f"{p.description} [{p.unit}]".replace(" []", "")}
            if p.minimum is not None:
                s["minimum" if p.minimum_inclusive else "exclusiveMinimum"] = p.minimum
            if p.maximum is not None:
                s["maximum" if p.maximum_inclusive else "exclusiveMaximum"] = p.maximum
            if p.below_nyquist:
                s["description"] += "; must be below sample_rate / 2"
            if p.one_sample:
                s["description"] += "; at least one sample (1 / sample_rate)"
            props[p.name] = s
        if spec.samples:
            props[spec.samples] = {"type": "array", "items": {"type": "number"}, "minItems": 1,
                                   "maxItems": MAX_IMPULSE_RESPONSE,
                                   "description": "the impulse response, at the preset's sample_rate"}
        return {
            "type": "object",
            "description": spec.description + (f" (pedalboard.{spec.plugin})" if spec.plugin else ""),
            "properties": props,
            "required": ["type", *(p.name for p in spec.params), *([spec.samples] if spec.samples else [])],
            "additionalProperties": False,
        }

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "afxest-preset/1",
        "title": "afxest preset",
        "type": "object",
        "properties": {
            "format": {"const": PRESET_FORMAT},
            "task": {"type": ["string", "null"], "description": "task that produced the preset"},
            "sample_rate": {"type": "integer", "minimum": 1, "maximum": 1000000,
                            "description": "sample rate the preset was made at [Hz]"},
            "effects": {
                "type": "array",
                "description": "effects applied in order",
                "items": {"oneOf": [{"$ref": f"#/$defs/{n}"} for n in EFFECT_TYPES]},
            },
            "source": {
                "description": "synth that generates the signal, or null to process a dry file",
                "oneOf": [{"type": "null"}, *({"$ref": f"#/$defs/{n}"} for n in SOURCE_TYPES)],
            },
        },
        "required": ["format", "sample_rate", "effects"],
        "additionalProperties": False,
        "$defs": {n: processor_schema(PROCESSORS[n]) for n in (*EFFECT_TYPES, *SOURCE_TYPES)},
    }
