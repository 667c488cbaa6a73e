"""Render a preset: the ``pedalboard`` engine (the real plugins) or ``ddsp`` (afxest's torch
processors). Both take and return float32 numpy audio shaped (channels, frames).
"""

from __future__ import annotations

import numpy as np

from afxest.presets import Preset

ENGINES = ("pedalboard", "ddsp")


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


def synthesise(preset: Preset, sample_rate: int) -> np.ndarray:
    """The preset's source as (1, frames) float32 audio."""
    src = preset.source
    assert src is not None
    frames = int(round(src.params["duration_s"] * sample_rate))
    return synthesise_batch(src.type, src.params, frames, sample_rate)[0].numpy()


def synthesise_batch(kind: str, params: dict, frames: int, sample_rate: int):
    """Synthesise a batch (batch, 1, frames) float32 tensor from physical ``params`` (each a
    (batch,) tensor or a float shared by the batch)."""
    import torch

    from afxest.dsp.fm import fm_synth

    if kind != "fm":
        raise ValueError(f"no synth for source type {kind!r}")
    device = next((v.device for v in params.values() if isinstance(v, torch.Tensor)), None)
    values = {k: torch.as_tensor(v, dtype=torch.float64, device=device) for k, v in params.items()}
    batch = max((v.numel() for v in values.values()), default=1)
    p = {k: v.expand(batch) if v.ndim == 0 else v for k, v in values.items()}
    return fm_synth(p["carrier_hz"], p["amplitude"], p["modulation_index"], p["frequency_ratio"], frames, sample_rate)


def _render_pedalboard(preset: Preset, dry: np.ndarray, sample_rate: int) -> np.ndarray:
    import pedalboard

    plugins = [getattr(pedalboard, e.spec.plugin)(**e.params) for e in preset.effects]
    board = pedalboard.Pedalboard(plugins)
    return board(np.ascontiguousarray(dry, dtype=np.float32), float(sample_rate))


def _render_ddsp(preset: Preset, dry: np.ndarray, sample_rate: int) -> np.ndarray:
    import torch

    from afxest.dsp.chain import apply_chain

    effects = [
        (e.type, {k: torch.tensor([v], dtype=torch.float64) for k, v in e.params.items()})
        for e in preset.effects
    ]
    with torch.inference_mode():
        y = apply_chain(torch.from_numpy(np.ascontiguousarray(dry, dtype=np.float32))[None], effects, sample_rate)
    return y[0].numpy().astype(np.float32, copy=False)
