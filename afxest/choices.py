"""The named choices of the library (engines, estimators, proxies, schedules, search efforts,
bit depths, devices, the audio an estimate writes), written once here, in a module that imports nothing: the modules that act on a
choice check against these names, and the command line builds its options from them without
importing numpy or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

ENGINES = ("pedalboard", "ddsp")  # afxest.engines: the real plugins, or afxest's torch processors
BIT_DEPTHS = ("float", "16", "24")  # afxest.audio.write_audio: 32-bit float WAV, or PCM
ESTIMATORS = ("posterior", "deterministic", "param", "bins")  # afxest.nn.estimator: DAFx 2025, ICASSP 2024, baselines
PROXIES = ("dsp", "neural", "hybrid")  # afxest.nn.proxy: the compressor in training
SCHEDULES = ("constant", "cosine")  # afxest train --schedule: the learning rate
OBJECTIVES = ("audio", "likelihood", "hybrid")  # afxest train --objective: a posterior's (DAFx 2025 Eq. 7, NPE, or both)
DEVICES = ("auto", "cpu", "cuda")  # afxest.device.resolve_device: auto is cuda when available
ESTIMATE_AUDIO = ("top", "all", "none")  # afxest.estimate.EstimateOptions.audio: whose audio is written
CALIBRATION_DRAWS = 100  # afxest evaluate --calibration-draws: posterior draws per item (afxest.calibration)


@dataclass(frozen=True)
class Effort:
    """How much work the search (:mod:`afxest.search`) does: ``--effort fast|default|best``."""

    name: str
    keep: int  # proposals refined (the best by the cheap score)
    max_steps: int  # step cap of each refinement of a synth (no dry)
    dry_steps: int  # with a dry: step cap of each Adam refinement of an effect chain ...
    dry_trials: int  # ... and the Levenberg-Marquardt trials after it (afxest.search.least_squares)
    design: int  # Sobol points for tasks of at most search.DESIGN_MAX_DIM parameters
    keep_design: int  # proposals refined in those tasks (their short clips are cheap to render)
    windows: int  # analysis windows refined on (of equal length, spread over the file)
    polish_steps: int  # synth tasks: step cap of the last refinement, on the waveform error alone


EFFORTS: dict[str, Effort] = {
    e.name: e
    for e in (
        Effort("fast", keep=1, max_steps=100, dry_steps=100, dry_trials=12,
               design=256, keep_design=4, windows=1, polish_steps=100),
        Effort("default", keep=2, max_steps=200, dry_steps=100, dry_trials=14,
               design=1024, keep_design=16, windows=2, polish_steps=300),
        Effort("best", keep=4, max_steps=1000, dry_steps=1000, dry_trials=12,
               design=4096, keep_design=64, windows=4, polish_steps=1000),
    )
}
