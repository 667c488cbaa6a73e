"""``afxest render``: apply a preset to a dry file, or synthesise a preset's source, to a file."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from afxest.audio import (
    DecodedFile, ahead, check_output_path, check_output_size, placed, read_audio, resampled_frames, write_audio,
    write_audio_blocks,
)
from afxest.engines import check_ddsp, default_engine, render, render_source_blocks, rendered_blocks, source_frames
from afxest.errors import UserError
from afxest.presets import estimate_placement, load_preset, read_json


@dataclass(frozen=True)
class RenderReport:
    """What :func:`render_file` wrote."""

    out: Path
    engine: str
    channels: int
    sample_rate: int
    frames: int
    clipped_samples: int

    def summary(self) -> str:
        """The line ``afxest render`` prints: the file written, its channels, rate, length and engine."""
        return (
            f"wrote {self.out} ({self.channels} ch, {self.sample_rate} Hz, "
            f"{self.frames / self.sample_rate:.2f} s, {self.engine} engine)"
        )


def estimate_alignment(preset_path: Path, dry: Path, rate: int) -> tuple[int, int] | None:
    """(offset, frames) at ``rate`` that put a rendering of ``dry`` on the wet's timeline, when
    ``preset_path`` is an estimate document made from that very dry file (its ``dry`` names the
    same file) with an ``alignment`` (:func:`afxest.presets.estimate_placement`); else None: a
    preset applied to another dry file is rendered as it is."""
    document = read_json(preset_path)
    placement = estimate_placement(document)
    named = document.get("dry") if isinstance(document, dict) else None
    if placement is None or not isinstance(named, str) or not Path(named).exists():
        return None
    if not os.path.samefile(named, dry):
        return None
    offset, frames, at = placement
    return resampled_frames(offset, at, rate), resampled_frames(frames, at, rate)


def render_file(
    dry: Path | None,
    preset_path: Path,
    out: Path,
    engine: str | None = None,
    candidate: int = 1,
    bit_depth: str = "float",
    force: bool = False,
) -> RenderReport:
    """Renders a preset (or an estimate's candidate) to an audio file: ``afxest render``.

    Everything is checked before any work, and ``out`` is written atomically; an input is never
    overwritten.

    Arguments:
        dry: The dry file, the preset run at its sample rate and channel count; None: the
            preset's source synthesised at the preset's sample rate. When it is the very dry
            file an estimate document was made from, the rendering is put on the wet's timeline
            as the estimate aligned them (:func:`estimate_alignment`), as estimate's own
            ``candidate-K.wav``.
        preset_path: A preset, or an estimate document.
        out: The audio file written (``.wav`` or ``.flac``).
        engine: ``pedalboard`` or ``ddsp``; None: pedalboard when every effect has a plugin.
        candidate: The rank of the candidate rendered from an estimate document.
        bit_depth: ``float``, ``16`` or ``24`` (:func:`afxest.audio.write_audio`).
        force: Whether an existing ``out`` may be replaced.

    Returns:
        The :class:`RenderReport` of what was written.
    """
    inputs = [p for p in (dry, preset_path) if p is not None]
    check_output_path(out, inputs=inputs, force=force, suffixes={".wav", ".flac"})
    if bit_depth == "float" and out.suffix.lower() == ".flac":
        raise UserError(f"{out}: FLAC has no float format; use --bit-depth 16 or 24, or a .wav name")
    preset = load_preset(preset_path, candidate)
    if dry is None:
        if preset.source is None:
            raise UserError(f"{preset_path}: preset has no source, so it needs a dry file: afxest render DRY PRESET")
        audio, sample_rate = None, int(round(preset.sample_rate))
        channels, frames = 1, source_frames(preset, sample_rate)
    else:
        if preset.source is not None:
            raise UserError(f"{preset_path}: preset has a synth source; render it without a dry file")
        audio, sample_rate = read_audio(dry)
        channels, frames = audio.shape
        preset.check_sample_rate(sample_rate, f"{preset_path} at {dry}'s {sample_rate} Hz")
        placement = estimate_alignment(preset_path, dry, sample_rate)
        if placement is not None:
            frames = placement[1]
    check_output_size(out, frames, channels, bit_depth)
    engine = engine or default_engine(preset)
    if engine == "pedalboard" and not all(e.spec.plugin for e in preset.effects):
        raise UserError(f"{preset_path}: some effects have no pedalboard plugin; use --engine ddsp")
    if engine == "ddsp":
        try:
            check_ddsp(preset, sample_rate)
        except UserError as err:
            raise UserError(f"{preset_path}: {err}") from None
    if audio is None:  # a synth: streamed, never held whole
        report = write_audio_blocks(out, render_source_blocks(preset, sample_rate, engine), 1, sample_rate, bit_depth)
    elif engine == "pedalboard":  # streamed as an estimate writes its audio: the same file
        with contextlib.closing(ahead(rendered_blocks(preset, DecodedFile(audio, sample_rate), sample_rate, engine, 0))) as blocks:
            if placement is not None:
                blocks = placed(blocks, *placement, channels)
            report = write_audio_blocks(out, blocks, channels, sample_rate, bit_depth)
    else:
        y = render(preset, audio, sample_rate, engine)
        if placement is not None:
            y = np.concatenate(list(placed(iter([y]), *placement, channels)), axis=1)
        report = write_audio(out, y, sample_rate, bit_depth)
    return RenderReport(
        out=report.path,
        engine=engine,
        channels=channels,
        sample_rate=sample_rate,
        frames=frames,
        clipped_samples=report.clipped_samples,
    )
