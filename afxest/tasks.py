"""Task definitions: one declarative description per estimation task.

A task says what produces the ground truth (``truth``: processors and the ranges their
parameters are drawn in, uniformly in normalised space), what the estimator outputs (``model``:
the differentiable processors it drives and their ranges), the sample rate, clip length, loss,
encoder; and, apart from that definition, the training defaults ``afxest train`` starts from
(:class:`TrainingDefaults`). Training, estimation, evaluation and the JSON output all read it;
every range is written here once.

* ``eq`` (DAFx 2025, Sec. 4): truth is one RBJ high shelf rendered by pedalboard; the model
  estimates two high shelves in cascade (several solutions exist).
* ``fm`` (DAFx 2025, Sec. 5): a two-operator FM synth with a 110 Hz carrier; the model
  estimates the modulation index (Eq. 20a) and the frequency ratio (Eq. 20b).
* ``master`` (ICASSP 2024; issue 5): a mastering chain, low shelf -> 3 peaks -> high shelf ->
  compressor -> make-up gain -> clipping, rendered by pedalboard; the model drives the same
  chain of afxest's differentiable processors (docs/master.md).
* ``mix`` (issue 24): a mixing chain, low shelf -> 2 peaks -> high shelf -> compressor -> delay
  -> reverb, rendered by pedalboard; the model drives the same chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from afxest.catalogue import (
    ATTACK, CLIP_THRESHOLD, CUTOFF, DAMPING, DELAY_SECONDS, DRY_LEVEL, FEEDBACK, FILTER_GAIN, FREQ_RATIO, GAIN,
    MIX, MOD_INDEX, PROCESSORS, Q, RATIO, RELEASE, ROOM_SIZE, THRESHOLD, WET_LEVEL,
)
from afxest.params import ParamRange
from afxest.presets import Preset, Processor


@dataclass(frozen=True)
class ProcessorSpace:
    """One processor of a task: the parameters it estimates (ranges) and those it fixes."""

    type: str
    ranges: tuple[ParamRange, ...]
    fixed: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        """Refuses (ValueError) parameters other than exactly the catalogue type's."""
        names = [r.name for r in self.ranges] + [k for k, _ in self.fixed]
        expected = [p.name for p in PROCESSORS[self.type].params]
        if sorted(names) != sorted(expected):
            raise ValueError(f"{self.type}: parameters {names} do not match {expected}")

    @property
    def dim(self) -> int:
        """The number of estimated parameters."""
        return len(self.ranges)

    def physical(self, v: Any) -> dict[str, Any]:
        """The physical values of every parameter from normalised ``v`` (..., dim)."""
        values = {r.name: r.to_physical(v[..., i]) for i, r in enumerate(self.ranges)}
        for name, value in self.fixed:
            values[name] = value
        return {p.name: values[p.name] for p in PROCESSORS[self.type].params}


@dataclass(frozen=True)
class Space:
    """A sequence of processors (a source, then effects) and its normalised vector layout."""

    processors: tuple[ProcessorSpace, ...]

    @property
    def dim(self) -> int:
        """The length d of the normalised vector."""
        return sum(p.dim for p in self.processors)

    @property
    def names(self) -> list[str]:
        """``<index>.<type>.<parameter>`` for each normalised dimension.

        Example:
            >>> TASKS["fm"].model.names
            ['0.fm.modulation_index', '0.fm.frequency_ratio']
        """
        return [f"{i}.{p.type}.{r.name}" for i, p in enumerate(self.processors) for r in p.ranges]

    @property
    def ranges(self) -> list[ParamRange]:
        """The range of each normalised dimension, in order."""
        return [r for p in self.processors for r in p.ranges]

    def position(self, kind: str) -> int | None:
        """The index of the chain's one processor of type ``kind``; None when it has none, or
        several (then no one of them is *the* one, as the compressor a proxy stands for).

        Example:
            >>> TASKS["master"].model.position("compressor"), TASKS["eq"].model.position("compressor")
            (5, None)
        """
        found = [i for i, p in enumerate(self.processors) if p.type == kind]
        return found[0] if len(found) == 1 else None

    def column(self, kind: str, parameter: str) -> int | None:
        """The index in the normalised vector of ``parameter`` of the chain's one processor of
        type ``kind`` (:meth:`position`); None when there is no one such processor.

        Example:
            >>> TASKS["master"].model.column("compressor", "ratio")
            16
        """
        at = self.position(kind)
        if at is None:
            return None
        names = [r.name for r in self.processors[at].ranges]
        return sum(p.dim for p in self.processors[:at]) + names.index(parameter)

    def split(self, v: Any) -> list[tuple[str, dict[str, Any]]]:
        """The (type, physical parameters) of each processor from normalised ``v`` (..., dim)."""
        out, start = [], 0
        for p in self.processors:
            out.append((p.type, p.physical(v[..., start : start + p.dim])))
            start += p.dim
        return out

    def preset(self, v: Any, task: str, sample_rate: float) -> Preset:
        """The ``afxest-preset/1`` of one normalised vector ``v`` (dim,)."""
        effects, source = [], None
        for kind, params in self.split(v):
            proc = Processor(kind, {k: float(x) for k, x in params.items()})
            if PROCESSORS[kind].kind == "source":
                source = proc
            else:
                effects.append(proc)
        return Preset(sample_rate=sample_rate, effects=tuple(effects), source=source, task=task)


STORED_TRAINING_KEYS = ("lr", "batch_size", "weight_decay", "beta")  # beside the definition in checkpoints


@dataclass(frozen=True)
class TrainingDefaults:
    """What ``afxest train`` uses where its options are not given (the papers' values, or
    measured ones). Not part of a task's definition: a trained model's outputs mean the same
    whatever they were (:func:`definition_difference` ignores them).

    ``epoch_items``: the training items of one epoch (``--epochs``; DAFx 2025, Secs. 4.6, 5.5).
    ``excerpt_seconds``: the training excerpts' length (``--excerpt-seconds``); None: the clip.
    """

    lr: float
    batch_size: int
    epoch_items: int
    weight_decay: float = 1e-3
    beta: float = 0.1  # the entropy weight of DAFx 2025, Eq. 7
    excerpt_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The values stored beside the definition in a checkpoint's ``task``
        (:data:`STORED_TRAINING_KEYS`; ``epoch_items`` is not: a run stores its
        ``steps_per_epoch``).

        Example:
            >>> TrainingDefaults(lr=1e-4, batch_size=8, epoch_items=100).to_dict()
            {'lr': 0.0001, 'batch_size': 8, 'weight_decay': 0.001, 'beta': 0.1}
        """
        return {key: getattr(self, key) for key in STORED_TRAINING_KEYS}


@dataclass(frozen=True)
class Task:
    """An estimation task: its definition (what produces the truth, what the model estimates,
    rate, clip length, loss, encoder) and, apart, its :class:`TrainingDefaults`."""

    name: str
    description: str
    sample_rate: int
    clip_seconds: float
    truth: Space
    model: Space
    loss: Literal["log_mel", "sot_mrstft"]
    encoder: Literal["convnext", "convnext_echo", "convnext_echo_reverb", "hann_dft_resmlp"]
    training: TrainingDefaults

    def __post_init__(self) -> None:
        """Refuses (ValueError) a range whose bounds are not valid values at the task's sample rate."""
        for space in (self.truth, self.model):
            for r in space.ranges:  # the bounds against the catalogue, Nyquist included
                for bound in (r.lo, r.hi):
                    problem = r.param.problem(bound, self.sample_rate)
                    if problem:
                        raise ValueError(f"{self.name}: range outside the valid values: {problem}")

    @property
    def has_source(self) -> bool:
        """Whether the truth is synthesised (a source type) rather than a dry signal processed."""
        return any(PROCESSORS[p.type].kind == "source" for p in self.truth.processors)

    @property
    def has_compressor(self) -> bool:
        """Whether the model chain has a compressor (:meth:`Space.position`): what a proxy
        replaces in training (``--proxy``) and renders through in ``afxest evaluate``."""
        return self.model.position("compressor") is not None

    @property
    def clip_samples(self) -> int:
        """The clip length in samples."""
        return int(round(self.clip_seconds * self.sample_rate))

    def truth_to_model(self, v: Any) -> Any:
        """The model-space target of the ``param`` estimator for normalised truth ``v`` (batch, d).

        Where truth and model share their processors (``fm``): ``v`` itself. Where the model
        has k copies of the truth's one processor (``eq``: two shelves for one), the canonical
        solution of DAFx 2025, Sec. 4.1: every copy takes the truth's parameters, with each gain
        divided by k, mapped into the model's ranges.
        """
        import torch

        truth, model = self.truth.processors, self.model.processors
        if truth == model:
            return v
        if len(truth) != 1 or any(p.type != truth[0].type for p in model):
            raise ValueError(f"{self.name}: no parameter-space target for this truth and model")
        k = len(model)
        physical = truth[0].physical(v)
        columns = []
        for proc in model:
            for r in proc.ranges:
                value = physical[r.name] / k if r.name == "gain_db" else physical[r.name]
                columns.append(r.to_normalised(value))
        return torch.stack(columns, dim=-1)

    def parameter_errors(self, z: Any, v: Any) -> dict[str, Any]:
        """|physical(z) - physical(v)| per model parameter (``Space.names`` -> (batch,)), for
        normalised estimates z and truths v (batch, d), where truth and model are the same
        processors (``fm``, ``master``); empty where they differ (``eq``: one shelf, two)."""
        if self.truth.processors != self.model.processors:
            return {}
        ranges = self.model.ranges
        return {
            name: (r.to_physical(z[..., i]) - r.to_physical(v[..., i])).abs()
            for i, (name, r) in enumerate(zip(self.model.names, ranges))
        }

    def definition(self) -> dict[str, Any]:
        """The definition as plain data: what a trained model's outputs mean (compared by
        :func:`definition_difference`)."""

        def space(s: Space) -> list[dict[str, Any]]:
            return [
                {
                    "type": p.type,
                    "ranges": {r.name: [r.lo, r.hi, r.mapping] for r in p.ranges},
                    "fixed": dict(p.fixed),
                }
                for p in s.processors
            ]

        return {
            "name": self.name,
            "sample_rate": self.sample_rate,
            "clip_seconds": self.clip_seconds,
            "truth": space(self.truth),
            "model": space(self.model),
            "loss": self.loss,
            "encoder": self.encoder,
        }

    def to_dict(self) -> dict[str, Any]:
        """The definition and the training defaults, as checkpoints (``task``) and a run's
        ``config.json`` (``task_definition``) have always stored them."""
        return {**self.definition(), **self.training.to_dict()}


def definition_difference(stored: dict[str, Any], task: Task, ignore: tuple[str, ...] = ()) -> str | None:
    """The first key (sorted) where a stored task dict (a checkpoint's ``task``: a definition
    and the training defaults of its time) differs from ``task``'s definition; None when they
    agree. Training defaults are not compared: they do not change what a model's outputs mean;
    nor are the keys in ``ignore``.
    """
    stored = {key: value for key, value in stored.items() if key not in STORED_TRAINING_KEYS}
    current = task.definition()
    for key in sorted((set(stored) | set(current)) - set(ignore)):
        if stored.get(key) != current.get(key):
            return key
    return None


def _shelf(gain: float) -> ProcessorSpace:
    """An eq-task high shelf with its gain in [-gain, gain] dB (DAFx 2025, Eqs. 15a-c)."""
    return ProcessorSpace(
        "high_shelf",
        (
            ParamRange(CUTOFF, 500.0, 2500.0, "exp"),  # DAFx 2025, Eq. 15a
            ParamRange(FILTER_GAIN, -gain, gain, "affine"),  # Eq. 15b
            ParamRange(Q, 0.1, 3.0, "affine"),  # Eq. 15c
        ),
    )


FM_SECONDS = 0.125  # DAFx 2025, Sec. 5.2

_FM = ProcessorSpace(
    "fm",
    (
        # Eq. 20a: I_m = 4 pi 10^(0.75 * 99 (v1 - 1) / 20), the exponential map on this range
        ParamRange(MOD_INDEX, 4 * math.pi * 10 ** (-0.75 * 99 / 20), 4 * math.pi, "exp"),
        ParamRange(FREQ_RATIO, 0.5, 10.0, "affine"),  # Eq. 20b: f_m / f_c = 9.5 v2 + 0.5
    ),
    fixed=(("carrier_hz", 110.0), ("amplitude", 1.0), ("duration_s", FM_SECONDS)),
)

def _band(kind: str, lo_hz: float, hi_hz: float, q_lo: float, q_hi: float) -> ProcessorSpace:
    """A master-task EQ band: cutoff exponential in [lo_hz, hi_hz], gain +-12 dB, q affine."""
    return ProcessorSpace(
        kind,
        (
            ParamRange(CUTOFF, lo_hz, hi_hz, "exp"),
            ParamRange(FILTER_GAIN, -12.0, 12.0, "affine"),
            ParamRange(Q, q_lo, q_hi, "affine"),
        ),
    )


_COMPRESSOR = ProcessorSpace(
    "compressor",
    (
        ParamRange(THRESHOLD, -40.0, 0.0, "affine"),
        ParamRange(RATIO, 1.0, 10.0, "exp"),
        ParamRange(ATTACK, 0.5, 50.0, "exp"),
        ParamRange(RELEASE, 10.0, 500.0, "exp"),
    ),
)

# Issue 5 (after ICASSP 2024's mastering chain): exponential maps for Hz, ms and ratio
_MASTER = Space(
    (
        _band("low_shelf", 30.0, 200.0, 0.5, 1.5),
        _band("peak", 100.0, 1000.0, 0.3, 3.0),
        _band("peak", 500.0, 4000.0, 0.3, 3.0),
        _band("peak", 2000.0, 10000.0, 0.3, 3.0),
        _band("high_shelf", 2000.0, 10000.0, 0.5, 1.5),
        _COMPRESSOR,
        ProcessorSpace("gain", (ParamRange(GAIN, 0.0, 12.0, "affine"),)),  # make-up gain
        ProcessorSpace("clipping", (ParamRange(CLIP_THRESHOLD, -12.0, 0.0, "affine"),)),
    )
)

# Issue 24: the master task's EQ bands and compressor, then a delay and a reverb; frequencies and
# times exponential (log-uniform), the rest affine; the reverb's width fixed at 1
_MIX = Space(
    (
        _band("low_shelf", 30.0, 200.0, 0.5, 1.5),
        _band("peak", 100.0, 1000.0, 0.3, 3.0),
        _band("peak", 1000.0, 8000.0, 0.3, 3.0),
        _band("high_shelf", 2000.0, 10000.0, 0.5, 1.5),
        _COMPRESSOR,
        ProcessorSpace(
            "delay",
            (
                ParamRange(DELAY_SECONDS, 0.05, 0.8, "exp"),
                ParamRange(FEEDBACK, 0.0, 0.6, "affine"),
                ParamRange(MIX, 0.0, 0.5, "affine"),
            ),
        ),
        ProcessorSpace(
            "reverb",
            (
                ParamRange(ROOM_SIZE, 0.0, 1.0, "affine"),
                ParamRange(DAMPING, 0.0, 1.0, "affine"),
                ParamRange(WET_LEVEL, 0.0, 0.5, "affine"),
                ParamRange(DRY_LEVEL, 0.5, 1.0, "affine"),
            ),
            fixed=(("width", 1.0),),
        ),
    )
)

TASKS: dict[str, Task] = {
    "eq": Task(
        name="eq",
        description="one high shelf (pedalboard) estimated by two in cascade (DAFx 2025, Sec. 4)",
        sample_rate=22050,
        clip_seconds=5.0,
        truth=Space((_shelf(20.0),)),
        model=Space((_shelf(10.0), _shelf(10.0))),
        loss="log_mel",
        encoder="convnext",
        # lr, batch, epoch: DAFx 2025, Sec. 4.6. 2.5 s excerpts: measured on this project's
        # machine, 1.8x faster steps for 0.14 +- 0.14 dB of test SI-SDR (docs/training.md)
        training=TrainingDefaults(lr=5e-5, batch_size=16, epoch_items=40_000, excerpt_seconds=2.5),
    ),
    "fm": Task(
        name="fm",
        description="two-operator FM synth, 110 Hz carrier, 125 ms (DAFx 2025, Sec. 5)",
        sample_rate=44100,
        clip_seconds=FM_SECONDS,
        truth=Space((_FM,)),
        model=Space((_FM,)),
        loss="sot_mrstft",
        encoder="hann_dft_resmlp",  # DAFx 2025, Sec. 5.3, windowed, normalised, wider (nn/encoders.py)
        training=TrainingDefaults(lr=1e-4, batch_size=128, epoch_items=100_000),  # DAFx 2025, Sec. 5.5
    ),
    "master": Task(
        name="master",
        description="mastering chain: low shelf, 3 peaks, high shelf, compressor, gain, clipping (ICASSP 2024)",
        sample_rate=22050,
        clip_seconds=5.0,
        truth=_MASTER,
        model=_MASTER,  # the same chain, rendered by afxest's differentiable processors
        loss="log_mel",
        encoder="convnext",
        # batch 16: ICASSP 2024 (Adam, lr 1e-4) and DAFx 2025, Sec. 4.6 (AdamW, lr 5e-5). lr 5e-4:
        # measured on the eq task on this project's 2-core CPU, it learns several times faster
        # than 5e-5 in short runs (docs/master.md). 40 000 items per epoch: DAFx 2025, Sec. 4.6.
        # beta 0.003: with 21 parameters, DAFx's 0.1 (and 0.03, which suited eq's 6) kept the
        # posterior near uniform; 0.003 trained the bundled model (docs/models/master.md).
        # 2.5 s excerpts: 1.8x faster steps for +0.02 +- 0.10 dB of test SI-SDR (docs/training.md)
        training=TrainingDefaults(lr=5e-4, batch_size=16, epoch_items=40_000, beta=0.003, excerpt_seconds=2.5),
    ),
    "mix": Task(
        name="mix",
        description="mixing chain: low shelf, 2 peaks, high shelf, compressor, delay, reverb (issue 24)",
        sample_rate=22050,
        clip_seconds=5.0,
        truth=_MIX,
        model=_MIX,  # the same chain, rendered by afxest's differentiable processors
        loss="log_mel",
        # the log-mel frames cannot place an echo, nor tell the reverb's tail from the music's own
        # sustain: the wet's cepstrum at the delay's peaks and the reverb's lengths beside them
        encoder="convnext_echo_reverb",
        # the master task's values (23 parameters here, 21 there), not yet measured on this
        # task; whole clips: an excerpt would cut the echoes and tails of up to several seconds
        training=TrainingDefaults(lr=5e-4, batch_size=16, epoch_items=40_000, beta=0.003),
    ),
}


def get_task(name: str) -> Task:
    """The task ``name``; a one-line UserError listing the tasks for an unknown name."""
    from afxest.errors import UserError

    if name not in TASKS:
        raise UserError(f"unknown task {name!r} (available: {', '.join(TASKS)})")
    return TASKS[name]
