"""The processor registry: every catalogue type has one entry, each effect's differentiable
function matches its pedalboard plugin, and the chain renders through the entries."""

from __future__ import annotations

import inspect
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from afxest.catalogue import EFFECT_TYPES, PROCESSORS, SOURCE_TYPES
from afxest.processors import apply_chain, entry, plugin, registry
from reference import PLUGINS, reference_render

SR = 22050

# test settings of every effect type, written here: a new type fails the tests until it has one
SETTINGS = {
    "low_shelf": {"cutoff_frequency_hz": 300.0, "gain_db": 6.0, "q": 0.7},
    "high_shelf": {"cutoff_frequency_hz": 3000.0, "gain_db": -9.0, "q": 1.2},
    "peak": {"cutoff_frequency_hz": 1200.0, "gain_db": 8.0, "q": 2.0},
    "compressor": {"threshold_db": -24.0, "ratio": 4.0, "attack_ms": 5.0, "release_ms": 80.0},
    "gain": {"gain_db": 4.5},
    "clipping": {"threshold_db": -8.0},
    "limiter": {"threshold_db": -9.0, "release_ms": 60.0},
    "delay": {"delay_seconds": 0.12, "feedback": 0.4, "mix": 0.3},
    "reverb": {"room_size": 0.7, "damping": 0.3, "wet_level": 0.3, "dry_level": 0.8, "width": 1.0},
    "convolution": {"latency_samples": 0.0, "impulse_response": (0.3, -0.2, 1.1, 0.05, -0.4, 0.0, 0.2)},
}
# the tolerances of the processors' own tests: biquads >= 50 dB SNR against pedalboard's float32
# recursions (test_filters.py), the compressor, gain, clipper, delay and reverb within 1e-6
# (test_compressor.py, test_amplitude.py, test_delay.py, test_reverb.py); the limiter (two
# compressors and a make-up gain of its threshold's, here +10.9 dB, in float32) >= 110 dB SNR
# (measured 117-139 dB in float64 on tones and noise); the convolution (pedalboard's float32 FFT
# convolution and afxest's against scipy's float64 direct form) >= 120 dB
MIN_SNR_DB = {"low_shelf": 50.0, "high_shelf": 50.0, "peak": 50.0, "limiter": 110.0, "convolution": 120.0}
MAX_ERROR = 1e-6


def music_like(channels: int = 2, seconds: float = 1.0) -> np.ndarray:
    """Decaying harmonic notes and noise, loud enough to cross the compressor's and clipper's thresholds."""
    t = np.arange(int(seconds * SR)) / SR
    notes = sum(np.sin(2 * np.pi * 110 * k * t) / k * np.exp(-4 * (t % 0.25)) for k in range(1, 9))
    noise = np.random.default_rng(0).standard_normal((channels, t.size)) * 0.02
    return (np.stack([np.roll(notes, 200 * c) for c in range(channels)]) * 0.4 + noise).astype(np.float32)


def tensors(settings: dict[str, float], dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([v], dtype=dtype) for k, v in settings.items()}


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference, estimate = reference.astype(np.float64), estimate.astype(np.float64)
    return 10 * math.log10(np.sum(reference**2) / max(np.sum((estimate - reference) ** 2), 1e-300))


def test_every_catalogue_type_has_one_entry_and_no_entry_is_an_orphan() -> None:
    assert set(registry()) == set(PROCESSORS)
    for name, e in registry().items():
        assert e.spec is PROCESSORS[name]
    assert set(SETTINGS) == set(EFFECT_TYPES)


@pytest.mark.parametrize("kind", [*EFFECT_TYPES, *SOURCE_TYPES])
def test_functions_take_the_one_signature_with_the_catalogue_names(kind: str) -> None:
    """Effects: (x, sample_rate, *, params); sources: (frames, sample_rate, *, params but the
    duration, start, ...); coefficients and amplitudes: (sample_rate, *, params)."""
    e = entry(kind)
    names = [p.name for p in e.spec.params] + ([e.spec.samples] if e.spec.samples else [])

    def keywords(fn) -> list[str]:
        params = inspect.signature(fn).parameters.values()
        return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]

    def positional(fn) -> list[str]:
        return [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]

    if e.spec.kind == "effect":
        for fn in (e.function, e.straight_through):
            if fn is not None:
                assert positional(fn) == ["x", "sample_rate"] and keywords(fn) == names
        for fn in (e.coefficients, e.amplitude):
            if fn is not None:
                assert positional(fn) == ["sample_rate"] and keywords(fn) == names
    else:
        assert positional(e.function) == ["frames", "sample_rate"]
        assert keywords(e.function) == [n for n in names if n != "duration_s"]


def assert_matches_plugin(kind: str, expected: np.ndarray, ours: np.ndarray) -> None:
    """``ours`` is pedalboard's ``expected`` within the processors' tolerances."""
    if kind in MIN_SNR_DB:
        assert snr_db(expected, ours) > MIN_SNR_DB[kind], kind
    else:
        assert np.abs(ours - expected).max() <= MAX_ERROR, (kind, np.abs(ours - expected).max())


@pytest.mark.parametrize("kind", EFFECT_TYPES)
def test_every_effect_function_matches_its_pedalboard_plugin(kind: str) -> None:
    x = music_like()
    expected = PLUGINS[kind](**SETTINGS[kind])(x, float(SR))
    e = entry(kind)
    ours = e.function(torch.from_numpy(x)[None], SR, **tensors(SETTINGS[kind], torch.float32))[0].numpy()
    assert_matches_plugin(kind, expected, ours)
    # the registry's plugin is the same plugin, set the same (the convolution's: pedalboard's
    # Convolution and a Gain that undoes its normalisation, against scipy)
    if kind == "convolution":
        assert_matches_plugin(kind, expected, plugin(kind, SETTINGS[kind], SR)(x, float(SR)))
    else:
        np.testing.assert_array_equal(plugin(kind, SETTINGS[kind])(x, float(SR)), expected)


@pytest.mark.parametrize("kind", EFFECT_TYPES)
def test_the_chain_renders_each_effect_as_its_plugin(kind: str) -> None:
    """apply_chain of one effect, and its straight-through rendering (``clip_gradient``),
    match the pedalboard plugin; a linear effect, merged through its coefficients or
    amplitude, also equals its own function (another path through the code) to 1e-7."""
    e = entry(kind)
    x = music_like()
    expected = PLUGINS[kind](**SETTINGS[kind])(x, float(SR))
    p = tensors(SETTINGS[kind])
    chain = apply_chain(torch.from_numpy(x)[None], [(kind, p)], SR)
    assert_matches_plugin(kind, expected, chain[0].numpy())
    assert_matches_plugin(kind, expected, apply_chain(torch.from_numpy(x)[None], [(kind, p)], SR, clip_gradient=True)[0].numpy())
    if e.coefficients is not None or e.amplitude is not None:
        torch.testing.assert_close(chain, e.function(torch.from_numpy(x)[None], SR, **p), rtol=0, atol=1e-7)


@pytest.mark.parametrize("kind", EFFECT_TYPES)
def test_a_plugin_mixes_channels_exactly_when_the_catalogue_says_so(kind: str) -> None:
    """pedalboard's plugin on a stereo signal against the plugin on each channel alone,
    streamed in blocks as the estimate's audio is: bit for bit the same unless the catalogue
    says it mixes the channels (then not at all the same: the flag is not merely cautious)."""
    x = music_like()

    def streamed(y: np.ndarray) -> np.ndarray:
        made = plugin(kind, SETTINGS[kind], SR)
        return np.concatenate([made(np.ascontiguousarray(y[:, i : i + 4096]), float(SR), reset=False)
                               for i in range(0, y.shape[1], 4096)], axis=1)

    together = streamed(x)
    apart = np.concatenate([streamed(x[c : c + 1]) for c in range(x.shape[0])])
    assert np.array_equal(together, apart) == (not PROCESSORS[kind].mixes_channels)


def test_straight_through_variants_keep_the_output_and_give_a_gradient() -> None:
    with_variant = [e for e in registry().values() if e.straight_through is not None]
    assert with_variant  # the clipper has one
    for e in with_variant:
        x = torch.from_numpy(music_like() * 4)[None].double().requires_grad_(True)
        p = tensors(SETTINGS[e.spec.name])
        y = e.straight_through(x, SR, **p)
        assert torch.equal(y, e.function(x, SR, **p))
        y.sum().backward()
        assert (x.grad != 0).all()  # the exact function's gradient is 0 where it clips


def test_a_chain_of_every_effect_matches_pedalboard() -> None:
    kinds = ["low_shelf", "peak", "gain", "convolution", "compressor", "high_shelf", "gain", "clipping", "limiter",
             "delay", "reverb"]
    assert set(kinds) == set(EFFECT_TYPES)
    x = music_like()
    preset = {"effects": [{"type": k, **SETTINGS[k]} for k in kinds]}
    expected = reference_render(preset, x, SR)
    ours = apply_chain(torch.from_numpy(x)[None], [(k, tensors(SETTINGS[k])) for k in kinds], SR)[0].numpy()
    assert snr_db(expected, ours) > 50


def test_replace_renders_a_type_by_another_function_for_one_call() -> None:
    calls = []

    def bypass(x: torch.Tensor, sample_rate: float, **params: torch.Tensor) -> torch.Tensor:
        calls.append((sample_rate, sorted(params)))
        return x

    x = torch.from_numpy(music_like())[None].double()
    chain = [(k, tensors(SETTINGS[k])) for k in ("peak", "compressor", "gain")]
    y = apply_chain(x, chain, SR, replace={"compressor": bypass})
    assert calls == [(SR, sorted(SETTINGS["compressor"]))]
    torch.testing.assert_close(y, apply_chain(x, [chain[0], chain[2]], SR), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(apply_chain(x, chain, SR), y)  # without it, the compressor runs


def test_sources_synthesise_their_closed_form() -> None:
    from afxest.engines import synthesise_batch

    settings = {"carrier_hz": 220.0, "amplitude": 0.8, "modulation_index": 3.0, "frequency_ratio": 1.5,
                "duration_s": 0.1}
    n, fs = 4410, 44100
    y = synthesise_batch("fm", settings, n, fs)
    t = np.arange(n) / fs
    expected = 0.8 * np.sin(2 * np.pi * 220 * t + 3.0 * np.sin(2 * np.pi * 330 * t))
    np.testing.assert_allclose(y[0, 0].numpy(), expected, atol=1e-6)


def test_unknown_types_and_sources_in_a_chain_are_refused() -> None:
    with pytest.raises(ValueError, match="chorus"):
        entry("chorus")
    with pytest.raises(ValueError, match="fm"):
        plugin("fm", {})
    with pytest.raises(ValueError, match="source"):
        apply_chain(torch.zeros(1, 1, 8), [("fm", {})], SR)


def test_the_pedalboard_engine_loads_without_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from afxest.engines import render\n"
        "from afxest.presets import Preset, Processor\n"
        "p = Preset(22050, (Processor('gain', {'gain_db': 6.0}),))\n"
        "render(p, np.ones((1, 8), np.float32), 22050, 'pedalboard')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_dsp_doctests() -> None:
    import doctest

    from afxest.dsp import amplitude, delay, filters, fm, reverb

    for module in (amplitude, delay, filters, fm, reverb):
        result = doctest.testmod(module, raise_on_error=False)
        assert result.failed == 0 and result.attempted > 0, module.__name__
