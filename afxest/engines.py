"""Render a preset: the ``pedalboard`` engine (the real plugins) or ``ddsp`` (afxest's torch
processors). Both take and return float32 numpy audio shaped (channels, frames).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from afxest.choices import ENGINES
from afxest.errors import UserError
from afxest.presets import Preset


def default_engine(preset: Preset) -> str:
    """pedalboard when every effect has a pedalboard plugin, else ddsp."""
    return "pedalboard" if all(e.spec.plugin for e in preset.effects) else "ddsp"


def render(preset: Preset, dry: np.ndarray | None, sample_rate: int, engine: str) -> np.ndarray:
    """Apply ``preset`` to ``dry`` (or synthesise its source when dry is None) at ``sample_rate``.

    No normalisation anywhere: the output is exactly what the preset's processors produce.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}")
    if dry is None:
        if preset.source is None:
            raise ValueError("a preset without a source needs a dry signal")
        dry = synthesise(preset, sample_rate)
    if not preset.effects:
        return dry.astype(np.float32, copy=True)
    if engine == "pedalboard":
        return _render_pedalboard(preset, dry, sample_rate)
    return _render_ddsp(preset, dry, sample_rate)


def source_frames(preset: Preset, sample_rate: int) -> int:
    """The length of the preset's synthesised source at ``sample_rate``, in frames."""
    assert preset.source is not None
    return int(round(preset.source.params["duration_s"] * sample_rate))


def synthesise(preset: Preset, sample_rate: int, start: int = 0, frames: int | None = None) -> np.ndarray:
    """The preset's source as (1, frames) float32 audio (``frames`` from ``start``; default:
    the whole sound)."""
    src = preset.source
    assert src is not None
    frames = source_frames(preset, sample_rate) if frames is None else frames
    return synthesise_batch(src.type, src.params, frames, sample_rate, start)[0].numpy()


SYNTH_BLOCK = 8 * 8192  # frames per streamed block: a multiple of pedalboard's 8192 buffer


def render_source_blocks(preset: Preset, sample_rate: int, engine: str) -> Iterator[np.ndarray]:
    """The rendering of a preset with a source as (1, frames) float32 blocks, so that a long
    sound is never held whole: each block synthesised, then through one pedalboard chain that
    carries its state (the same samples as :func:`render`). The ddsp processors have no
    streaming state, so ddsp effects after a source are applied to the whole sound at once."""
    if preset.effects and engine == "ddsp":
        yield render(preset, None, sample_rate, engine)
        return
    chain = board(preset) if preset.effects else None
    frames = source_frames(preset, sample_rate)
    for start in range(0, frames, SYNTH_BLOCK):
        y = synthesise(preset, sample_rate, start, min(SYNTH_BLOCK, frames - start))
        yield y if chain is None else chain(y, float(sample_rate), reset=False)


def synthesise_batch(kind: str, params: dict, frames: int, sample_rate: int, start: int = 0):
    """Synthesise a batch (batch, 1, frames) float32 tensor from physical ``params`` (each a
    (batch,) tensor or a float shared by the batch), from sample ``start`` on."""
    import torch

    from afxest.dsp.fm import fm_synth

    if kind != "fm":
        raise ValueError(f"no synth for source type {kind!r}")
    device = next((v.device for v in params.values() if isinstance(v, torch.Tensor)), None)
    values = {k: torch.as_tensor(v, dtype=torch.float64, device=device) for k, v in params.items()}
    batch = max((v.numel() for v in values.values()), default=1)
    p = {k: v.expand(batch) if v.ndim == 0 else v for k, v in values.items()}
    return fm_synth(p["carrier_hz"], p["amplitude"], p["modulation_index"], p["frequency_ratio"], frames, sample_rate, start=start)


def board(preset: Preset):
    """The preset's effects as one ``pedalboard.Pedalboard`` of the real plugins."""
    import pedalboard

    return pedalboard.Pedalboard([getattr(pedalboard, e.spec.plugin)(**e.params) for e in preset.effects])


def _render_pedalboard(preset: Preset, dry: np.ndarray, sample_rate: int) -> np.ndarray:
    return board(preset)(np.ascontiguousarray(dry, dtype=np.float32), float(sample_rate))


DDSP_MAX_TAIL = 1 << 22  # samples: the longest biquad impulse response the ddsp engine renders


def check_ddsp(preset: Preset, sample_rate: int) -> None:
    """Refuse, before any work, a preset the ddsp engine cannot render at ``sample_rate``: it
    filters in the frequency domain with each biquad's whole impulse response, which a filter
    near its limits (a low cutoff at a high rate, a deep cut) makes minutes or hours long."""
    import torch

    from afxest.dsp.filters import BIQUAD_TYPES, biquad_coefficients, tail_length

    for i, e in enumerate(preset.effects):
        if e.type not in BIQUAD_TYPES:
            continue
        values = {k: torch.tensor([v], dtype=torch.float64) for k, v in e.params.items()}
        _, a = biquad_coefficients(e.type, values["cutoff_frequency_hz"], values["gain_db"], values["q"], sample_rate)
        try:
            tail = tail_length(a, sample_rate)
        except ValueError:
            tail = None
        if tail is None or tail > DDSP_MAX_TAIL:
            length = "never decays" if tail is None else f"lasts {tail / sample_rate:.0f} s"
            settings = ", ".join(f"{k} {v:g}" for k, v in e.params.items())
            raise UserError(
                f"effects[{i}] ({e.type}): with {settings}, its impulse response {length} at {sample_rate} Hz; "
                f"the ddsp engine renders at most {DDSP_MAX_TAIL / sample_rate:.0f} s (use --engine pedalboard)"
            )


def _render_ddsp(preset: Preset, dry: np.ndarray, sample_rate: int) -> np.ndarray:
    import torch

    from afxest.dsp.chain import apply_chain

    check_ddsp(preset, sample_rate)
    effects = [
        (e.type, {k: torch.tensor([v], dtype=torch.float64) for k, v in e.params.items()})
        for e in preset.effects
    ]
    with torch.inference_mode():
        y = apply_chain(torch.from_numpy(np.ascontiguousarray(dry, dtype=np.float32))[None], effects, sample_rate)
    return y[0].numpy().astype(np.float32, copy=False)
