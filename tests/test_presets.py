"""afxest.presets: afxest-preset/1 validation, I/O, estimate candidates and the JSON Schema."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

import afxest.examples
from afxest.errors import UserError
from afxest.presets import (
    ESTIMATE_FORMAT,
    PRESET_FORMAT,
    Preset,
    Processor,
    dumps_preset,
    json_schema,
    load_preset,
    parse_preset,
    read_json,
)

EXAMPLES = Path(afxest.examples.__file__).parent
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "preset.schema.json"

VALID: dict[str, Any] = {
    "format": PRESET_FORMAT,
    "task": "master",
    "sample_rate": 22050,
    "effects": [
        {"type": "low_shelf", "cutoff_frequency_hz": 120.0, "gain_db": 3.0, "q": 0.7},
        {"type": "peak", "cutoff_frequency_hz": 400, "gain_db": -2.5, "q": 1.2},
        {"type": "high_shelf", "cutoff_frequency_hz": 6000.0, "gain_db": 4.0, "q": 0.7},
        {"type": "compressor", "threshold_db": -20.0, "ratio": 3.0, "attack_ms": 10.0, "release_ms": 120.0},
        {"type": "gain", "gain_db": 6.0},
        {"type": "clipping", "threshold_db": -1.0},
    ],
    "source": None,
}

FM: dict[str, Any] = {
    "format": PRESET_FORMAT,
    "task": "fm",
    "sample_rate": 44100,
    "effects": [],
    "source": {"type": "fm", "carrier_hz": 110.0, "amplitude": 1.0, "modulation_index": 3.2,
               "frequency_ratio": 2.0, "duration_s": 0.5},
}


def edited(base: dict[str, Any], edit) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    edit(doc)
    return doc


def set_param(i: int, name: str, value: Any):
    return lambda d: d["effects"][i].__setitem__(name, value)


def set_source(name: str, value: Any):
    return lambda d: d["source"].__setitem__(name, value)


# (id, base document, edit, fragments the one-line message must contain, in order)
INVALID = [
    ("format-wrong", VALID, lambda d: d.update(format="afxest-preset/2"), ["format must be", "afxest-preset/2"]),
    ("format-missing", VALID, lambda d: d.pop("format"), ["format must be", "None"]),
    ("unknown-key", VALID, lambda d: d.update(gain=1), ["unknown key 'gain'"]),
    ("task-not-string", VALID, lambda d: d.update(task=3), ["task must be a string"]),
    ("sample-rate-missing", VALID, lambda d: d.pop("sample_rate"), ["missing sample_rate"]),
    ("sample-rate-zero", VALID, lambda d: d.update(sample_rate=0), ["sample_rate must be a whole number of Hz from 1 to 1000000"]),
    ("sample-rate-fraction", VALID, lambda d: d.update(sample_rate=22050.5), ["sample_rate must be a whole number of Hz"]),
    ("sample-rate-string", VALID, lambda d: d.update(sample_rate="44100"), ["sample_rate must be a number"]),
    ("effects-not-list", VALID, lambda d: d.update(effects={"type": "gain"}), ["effects must be a list"]),
    ("effect-not-object", VALID, lambda d: d["effects"].__setitem__(2, 5), ["effects[2]", "must be a JSON object"]),
    ("unknown-type", VALID, lambda d: d["effects"][1].update(type="chorus"),
     ["effects[1]", "unknown type 'chorus'"]),
    ("type-missing", VALID, lambda d: d["effects"][4].pop("type"), ["effects[4]", "unknown type None"]),
    ("source-type-as-effect", VALID, lambda d: d["effects"].append(copy.deepcopy(FM["source"])),
     ["effects[6]", "unknown type 'fm'"]),
    ("missing-param", VALID, lambda d: d["effects"][2].pop("q"), ["effects[2] (high_shelf)", "missing parameter 'q'"]),
    ("extra-param", VALID, set_param(3, "knee_db", 6.0), ["effects[3] (compressor)", "unknown parameter 'knee_db'"]),
    ("string-param", VALID, set_param(1, "q", "1.2"), ["effects[1] (peak)", "q must be a number", '"1.2"']),
    ("null-param", VALID, set_param(4, "gain_db", None), ["effects[4] (gain)", "gain_db must be a number", "null"]),
    ("bool-param", VALID, set_param(5, "threshold_db", True), ["effects[5] (clipping)", "threshold_db must be a number"]),
    ("list-param", VALID, set_param(0, "gain_db", [3.0]), ["effects[0] (low_shelf)", "gain_db must be a number"]),
    ("nan-param", VALID, set_param(0, "gain_db", math.nan), ["effects[0] (low_shelf)", "gain_db must be finite"]),
    ("inf-param", VALID, set_param(3, "release_ms", math.inf), ["effects[3] (compressor)", "release_ms must be finite"]),
    ("cutoff-at-nyquist", VALID, set_param(2, "cutoff_frequency_hz", 11025.0),
     ["effects[2] (high_shelf)", "cutoff_frequency_hz", "Nyquist"]),
    ("cutoff-above-nyquist", VALID, set_param(1, "cutoff_frequency_hz", 15000),
     ["effects[1] (peak)", "cutoff_frequency_hz", "Nyquist"]),
    ("cutoff-below-2hz", VALID, set_param(0, "cutoff_frequency_hz", 1.0), ["effects[0] (low_shelf)", "cutoff_frequency_hz must be >= 2"]),
    ("q-zero", VALID, set_param(1, "q", 0.0), ["effects[1] (peak)", "q must be >= 0.01"]),
    ("q-negative", VALID, set_param(2, "q", -0.5), ["effects[2] (high_shelf)", "q must be >= 0.01"]),
    ("ratio-below-1", VALID, set_param(3, "ratio", 0.99), ["effects[3] (compressor)", "ratio must be >= 1"]),
    ("attack-negative", VALID, set_param(3, "attack_ms", -1.0), ["effects[3] (compressor)", "attack_ms must be >= 0"]),
    ("release-negative", VALID, set_param(3, "release_ms", -0.1), ["effects[3] (compressor)", "release_ms must be >= 0"]),
    ("gain-huge", VALID, set_param(4, "gain_db", 500.0), ["effects[4] (gain)", "gain_db must be <= 120"]),
    ("source-unknown-type", FM, lambda d: d["source"].update(type="gain"), ["source", "unknown type 'gain'"]),
    ("source-missing-param", FM, lambda d: d["source"].pop("duration_s"), ["source (fm)", "missing parameter 'duration_s'"]),
    ("source-carrier-nyquist", FM, set_source("carrier_hz", 22050.0), ["source (fm)", "carrier_hz", "Nyquist"]),
    ("source-negative-duration", FM, set_source("duration_s", -1.0), ["source (fm)", "duration_s must be > 0"]),
    ("source-zero-ratio", FM, set_source("frequency_ratio", 0), ["source (fm)", "frequency_ratio must be > 0"]),
    ("source-negative-amplitude", FM, set_source("amplitude", -1), ["source (fm)", "amplitude must be >= 0"]),
]


@pytest.mark.parametrize(("base", "edit", "fragments"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_preset_file_gives_one_line_naming_file_effect_and_parameter(
    tmp_path: Path, base: dict[str, Any], edit, fragments: list[str]
) -> None:
    path = tmp_path / "bad preset.json"
    path.write_text(json.dumps(edited(base, edit)))  # NaN/Infinity are written as JSON's extensions
    with pytest.raises(UserError) as info:
        load_preset(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    position = 0
    for fragment in fragments:
        found = message.find(fragment, position)
        assert found >= 0, f"{fragment!r} not in {message!r} (after position {position})"
        position = found + len(fragment)


@pytest.mark.parametrize(
    "text",
    ["[1, 2]", '"preset"', "null", "3"],
)
def test_non_object_documents_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(UserError, match="must be a JSON object"):
        load_preset(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "no such file"),
        ('{"format": "afxest-preset/1", "sample_rate": 4', "invalid JSON .* line 1 column"),
        ("", "invalid JSON"),
        (b"\xff\xfe\x00binary", "cannot read as UTF-8"),
    ],
    ids=["missing", "truncated", "empty", "binary"],
)
def test_read_json_failures_are_one_line(tmp_path: Path, content, match: str) -> None:
    path = tmp_path / "p.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=match) as info:
        read_json(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_huge_integer_parameter_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(
        '{"format": "afxest-preset/1", "sample_rate": 22050, '
        '"effects": [{"type": "gain", "gain_db": 1' + "0" * 400 + "}]}"
    )
    with pytest.raises(UserError, match=r"effects\[0\] \(gain\).*gain_db"):
        load_preset(path)


def test_overlong_number_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"format": "afxest-preset/1", "sample_rate": ' + "1" * 5000 + ', "effects": []}')
    with pytest.raises(UserError):
        load_preset(path)


def test_valid_preset_parses_to_floats_in_catalogue_order() -> None:
    doc = edited(VALID, lambda d: d["effects"][3].update(
        {"release_ms": 120.0, "attack_ms": 10.0, "ratio": 3.0, "threshold_db": -20.0}))
    preset = parse_preset(doc, "x")
    assert preset.sample_rate == 22050.0
    assert preset.task == "master"
    assert preset.source is None
    assert [e.type for e in preset.effects] == [e["type"] for e in VALID["effects"]]
    assert list(preset.effects[3].params) == ["threshold_db", "ratio", "attack_ms", "release_ms"]
    assert preset.effects[1].params == {"cutoff_frequency_hz": 400.0, "gain_db": -2.5, "q": 1.2}
    assert all(type(v) is float for e in preset.effects for v in e.params.values())
    assert preset.effects[0].spec.plugin == "LowShelfFilter"


def test_processors_are_the_source_then_the_effects() -> None:
    effects = parse_preset(VALID, "test")
    assert [p.type for p in effects.processors] == [e["type"] for e in VALID["effects"]]
    fm, gain = Processor("fm", {"modulation_index": 2.0}), Processor("gain", {"gain_db": 6.0})
    assert Preset(22050, effects=(gain,), source=fm).processors == (fm, gain)
    assert Preset(22050, source=fm).processors == (fm,)


def test_optional_keys() -> None:
    preset = parse_preset({"format": PRESET_FORMAT, "sample_rate": 8000, "effects": []}, "x")
    assert preset == Preset(sample_rate=8000.0)


@pytest.mark.parametrize("doc", [VALID, FM], ids=["master", "fm"])
def test_dumps_preset_round_trips(doc: dict[str, Any], tmp_path: Path) -> None:
    preset = parse_preset(doc, "x")
    text = dumps_preset(preset)
    assert text.endswith("}\n")
    assert json.loads(text)["format"] == PRESET_FORMAT
    assert parse_preset(json.loads(text), "y") == preset
    (tmp_path / "p.json").write_text(text)
    assert load_preset(tmp_path / "p.json") == preset
    assert dumps_preset(load_preset(tmp_path / "p.json")) == text
    # to_dict has exactly the contract's keys, effects as {"type", params...}
    d = preset.to_dict()
    assert list(d) == ["format", "task", "sample_rate", "effects", "source"]
    assert d["effects"] == [{k: float(v) if k != "type" else v for k, v in e.items()} for e in doc["effects"]]


def test_check_sample_rate_names_effect_and_parameter() -> None:
    preset = parse_preset(VALID, "x")
    preset.check_sample_rate(22050, "here")  # fine at its own rate
    with pytest.raises(UserError, match=r"^here: effects\[2\] \(high_shelf\): cutoff_frequency_hz .*Nyquist"):
        preset.check_sample_rate(8000, "here")
    fm = parse_preset(FM, "x")
    with pytest.raises(UserError, match=r"^there: source \(fm\): carrier_hz .*Nyquist"):
        fm.check_sample_rate(200, "there")


# --- estimate files --------------------------------------------------------------------------


def estimate_doc(gains: list[float]) -> dict[str, Any]:
    def preset(g: float) -> dict[str, Any]:
        return {"format": PRESET_FORMAT, "task": "eq", "sample_rate": 22050,
                "effects": [{"type": "gain", "gain_db": g}], "source": None}

    return {
        "format": ESTIMATE_FORMAT,
        "task": "eq",
        "model": {"name": "eq", "sha256": "0" * 64},
        "wet": "wet.wav",
        "dry": None,
        "sample_rate": 22050,
        "ranked_by": "log_prob",
        "entropy_bits_per_dim": 1.0,
        # deliberately not in rank order: selection is by "rank", not by position
        "candidates": [
            {"rank": len(gains) - i, "loss": None, "log_prob": -float(i), "preset": preset(g), "audio": None}
            for i, g in enumerate(reversed(gains))
        ],
        "summary": {},
    }


def test_estimate_candidate_selection(tmp_path: Path) -> None:
    path = tmp_path / "estimate.json"
    path.write_text(json.dumps(estimate_doc([1.0, -2.0, 3.5])))
    assert load_preset(path).effects[0].params["gain_db"] == 1.0  # default: rank 1
    for rank, gain in [(1, 1.0), (2, -2.0), (3, 3.5)]:
        assert load_preset(path, rank).effects[0].params["gain_db"] == gain
    with pytest.raises(UserError, match=r"no candidate of rank 4 \(1\.\.3\)"):
        load_preset(path, 4)


def test_estimate_candidate_errors(tmp_path: Path) -> None:
    path = tmp_path / "estimate.json"
    doc = estimate_doc([1.0, 2.0])
    doc["candidates"][0]["preset"]["effects"][0]["gain_db"] = "loud"  # the rank-2 candidate
    path.write_text(json.dumps(doc))
    assert load_preset(path, 1).effects[0].params["gain_db"] == 1.0
    with pytest.raises(UserError, match=r"candidates\[rank 2\]: effects\[0\] \(gain\): gain_db must be a number"):
        load_preset(path, 2)
    for candidates in ([], None, "x"):
        path.write_text(json.dumps({**doc, "candidates": candidates}))
        with pytest.raises(UserError, match="estimate has no candidates"):
            load_preset(path)


def test_candidate_on_a_plain_preset_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(VALID))
    assert load_preset(path, 1) == parse_preset(VALID, "x")
    with pytest.raises(UserError, match="--candidate applies to estimate files"):
        load_preset(path, 2)


def test_unhashable_rank_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "estimate.json"
    doc = estimate_doc([1.0])
    doc["candidates"][0]["rank"] = [1]
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError):
        load_preset(path)


# --- JSON Schema -----------------------------------------------------------------------------


def test_schema_file_matches_json_schema() -> None:
    """docs/preset.schema.json is generated from the catalogue; regenerate it when this fails:
    python -c "import json; from afxest.presets import json_schema; print(json.dumps(json_schema(), indent=2))" > docs/preset.schema.json
    """
    assert SCHEMA_FILE.read_text(encoding="utf-8") == json.dumps(json_schema(), indent=2) + "\n"


def schema_errors(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "$") -> list[str]:
    """A tiny validator for the JSON Schema keywords json_schema() uses (no dependency)."""
    errors: list[str] = []
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return schema_errors(instance, root["$defs"][name], root, where)
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{where}: not {schema['const']!r}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        checks = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "null": lambda v: v is None,
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        }
        if not any(checks[t](instance) for t in types):
            return [f"{where}: not of type {types}"]
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema and not instance >= schema["minimum"]:
            errors.append(f"{where}: below minimum")
        if "exclusiveMinimum" in schema and not instance > schema["exclusiveMinimum"]:
            errors.append(f"{where}: not above exclusiveMinimum")
        if "maximum" in schema and not instance <= schema["maximum"]:
            errors.append(f"{where}: above maximum")
        if "exclusiveMaximum" in schema and not instance < schema["exclusiveMaximum"]:
            errors.append(f"{where}: not below exclusiveMaximum")
        if not math.isfinite(instance):
            errors.append(f"{where}: not finite (JSON has no NaN or Infinity)")
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{where}: missing {key!r}")
        props = schema.get("properties", {})
        for key, value in instance.items():
            if key in props:
                errors += schema_errors(value, props[key], root, f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: extra key {key!r}")
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            errors += schema_errors(item, schema["items"], root, f"{where}[{i}]")
    if "oneOf" in schema:
        matches = sum(not schema_errors(instance, s, root, where) for s in schema["oneOf"])
        if matches != 1:
            errors.append(f"{where}: matches {matches} of oneOf")
    return errors


def test_schema_is_well_formed() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["format"] == {"const": PRESET_FORMAT}
    refs = [s["$ref"] for s in schema["properties"]["effects"]["items"]["oneOf"]]
    assert refs == [f"#/$defs/{n}" for n in ("low_shelf", "high_shelf", "peak", "compressor", "gain", "clipping", "limiter", "convolution", "delay", "reverb")]
    for name, spec in schema["$defs"].items():
        assert spec["properties"]["type"] == {"const": name}
        assert spec["required"][0] == "type"
        assert set(spec["required"]) == set(spec["properties"])
        assert spec["additionalProperties"] is False


@pytest.mark.parametrize("name", ["master.json", "fm.json"])
def test_bundled_examples_are_valid(name: str) -> None:
    doc = json.loads((EXAMPLES / name).read_text())
    assert schema_errors(doc, json_schema(), json_schema()) == []
    preset = load_preset(EXAMPLES / name)
    assert json.loads(dumps_preset(preset)) == json.loads((EXAMPLES / name).read_text(), parse_int=float)


@pytest.mark.parametrize("doc", [VALID, FM], ids=["master", "fm"])
def test_schema_accepts_valid_presets(doc: dict[str, Any]) -> None:
    assert schema_errors(doc, json_schema(), json_schema()) == []


SAMPLE_RATE_DEPENDENT = {"cutoff-at-nyquist", "cutoff-above-nyquist", "source-carrier-nyquist"}


@pytest.mark.parametrize(
    ("base", "edit"),
    [c[1:3] for c in INVALID if c[0] not in SAMPLE_RATE_DEPENDENT],
    ids=[c[0] for c in INVALID if c[0] not in SAMPLE_RATE_DEPENDENT],
)
def test_schema_rejects_what_the_parser_rejects(base: dict[str, Any], edit) -> None:
    # Nyquist bounds depend on the sample rate and are the parser's alone (json_schema's doc).
    doc = edited(base, edit)
    assert schema_errors(doc, json_schema(), json_schema()) != []


def test_parser_and_schema_agree_on_required_effects() -> None:
    doc = {"format": PRESET_FORMAT, "sample_rate": 44100, "source": FM["source"]}
    schema_ok = schema_errors(doc, json_schema(), json_schema()) == []
    try:
        parse_preset(doc, "x")
        parser_ok = True
    except UserError:
        parser_ok = False
    assert schema_ok == parser_ok
