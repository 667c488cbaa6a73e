"""Training an estimator: ``afxest train`` as a library function, in steps.

One step draws a batch of ground truth (dry music -> pedalboard effect, or the synth), encodes
the wet signal, samples parameters from the head and minimises (:class:`Objective`):

* ``posterior``: the audio loss of the rendered sample minus beta times the entropy estimate
  (DAFx 2025, Eqs. 7, 13); or, with ``--objective likelihood``, the negative log-density of
  the truth (neural posterior estimation: Papamakarios & Murray, NeurIPS 2016); or, with
  ``--objective hybrid``, the first plus :data:`HYBRID_WEIGHT` times the second;
* ``deterministic``: the audio loss of the rendered estimate (ICASSP 2024);
* ``param``: the mean squared error to the truth mapped into the model's space;
* ``bins``: the cross-entropy of the head's bins to that truth, blurred
  (:func:`afxest.nn.heads.bins_cross_entropy`).

A task with a compressor can train through a proxy of it (``--proxy``, ICASSP 2024): ``dsp``
(afxest's exact differentiable compressor), ``neural`` (a trained TCN proxy,
:mod:`afxest.nn.proxy`) or ``hybrid`` (the exact output, the proxy's gradients). Validation, and
so the choice of ``best.pt``, renders with the dsp processors, as inference does.

:func:`train` runs the steps in order: :func:`resolve` the options against the task's training
defaults, :func:`ranks_of` (device, data-parallel rank and world), :func:`run_length`, the run
folder (:class:`afxest.runs.RunFolder`), :func:`data_sources`, :func:`validation_batches`,
:func:`new_model` (then :func:`initialise_from` or :func:`resume`), and the loop of
:mod:`afxest.runs` over :meth:`EstimatorRun.step` (:func:`training_batch`, :func:`train_step`)
and :func:`validate`.

AdamW as in the papers. Every random draw of step s comes from a generator seeded by
(seed, rank, s), so a run resumed from ``last.pt`` continues exactly as it would have. ``--out``
holds ``last.pt`` (written atomically every ``checkpoint_every`` steps), ``best.pt`` (best
validation objective), ``metrics.jsonl`` and ``config.json``. Under torchrun the same code runs
data-parallel (DistributedDataParallel; gloo on CPU, NCCL on GPU), each rank reading its own
shard of the music and its own random draws, with ``--batch-size`` the global batch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from afxest import __version__
from afxest.audio import atomic_write_text
from afxest.choices import OBJECTIVES, PROXIES, SCHEDULES
from afxest.checkpoints import CHECKPOINT_FORMAT, file_sha256, load_checkpoint
from afxest.data import Batch, DrySource, make_batch
from afxest.device import resolve_device
from afxest.errors import TrainingDiverged, UserError
from afxest.losses import bits_per_dim
from afxest.nn.estimator import ESTIMATORS, Estimator, EstimatorConfig
from afxest.nn.heads import bins_cross_entropy
from afxest.nn.proxy import compressor_function, load_task_proxy
from afxest.objective import AudioObjective, audio_objective, task_loss
from afxest.runs import (
    PROCEDURAL, Best, Cadence, Prefetcher, RunFolder, RunOptions, check_same_run, music_folders, restore,
    run_loop, step_generator,
)
from afxest.tasks import Task, definition_difference, get_task

VALIDATION_SEED = 0  # seeds the validation items and samples: those a seed-0 run always drew
PARAMETER_LOSSES = ("param", "bins")  # the estimators trained on the truth, not through the audio
LIKELIHOOD_MARGIN = 1e-4  # --objective likelihood: the truth kept this far (normalised) from 0 and 1
LIKELIHOOD_CAP = 1e3  # and an item whose -ln p(t | y) exceeds this (nats) counts as this, without a gradient
# --objective hybrid: audio - beta H + w (-ln p(t | y)). Where the audio gives a parameter no
# gradient (a delay time: whole samples) the base Gaussian's sigma settles where
# w (1 - e^2 / sigma^2) = beta, sigma^2 = e^2 w / (w - beta): w must exceed beta (0.003 on mix)
# well, or the entropy widens such a posterior without end; 0.05 leaves it 6 % wide in variance
HYBRID_WEIGHT = 0.05
INIT_SIGMA = 0.02  # the base Gaussian's standard deviation (logit units) of a posterior centred on a point estimate
# what --resume must find unchanged (total_steps too under a schedule: its shape depends on the run's length)
RESUME_KEYS = ("seed", "batch_size", "lr", "weight_decay", "beta", "data", "val_items", "world_size", "schedule",
               "proxy", "proxy_sha256", "excerpt_seconds", "objective")
# what runs from before --schedule and --proxy stored instead of these keys
BEFORE_SCHEDULES = {"schedule": "constant", "proxy": "dsp", "proxy_sha256": None, "excerpt_seconds": None,
                    "objective": "audio"}


@dataclass(kw_only=True)
class TrainConfig(RunOptions):
    """Everything ``afxest train`` takes: the run's options (:class:`afxest.runs.RunOptions`) and
    the estimator's; None means the task's default."""

    task: str
    estimator: str = "posterior"
    flows: int = 1
    beta: float | None = None
    max_steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    val_items: int = 128
    val_every: int = 200
    init: str | None = None
    proxy: str = "dsp"
    proxy_model: str | None = None
    schedule: str = "constant"
    excerpt_seconds: float | None = None
    objective: str = "audio"


@dataclass
class TrainResult:
    """What a run ended with."""

    steps: int
    best_step: int | None
    best_objective: float | None
    last_metrics: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class Settings:
    """A :class:`TrainConfig`'s task and hyperparameters, the task's
    :class:`~afxest.tasks.TrainingDefaults` where an option is not given."""

    task: Task
    batch_size: int
    lr: float
    weight_decay: float
    beta: float
    excerpt_seconds: float | None  # None: the task's clip


def resolve(config: TrainConfig) -> Settings:
    """Checks the options (one-line UserErrors, in the order the command has always reported
    them) and fills in the task's training defaults."""
    task = get_task(config.task)
    if config.estimator not in ESTIMATORS:
        raise UserError(f"unknown estimator {config.estimator!r} ({', '.join(ESTIMATORS)})")
    if config.max_steps is not None and config.epochs is not None:
        raise UserError("give --max-steps or --epochs, not both")
    defaults = task.training
    settings = Settings(
        task=task,
        batch_size=config.batch_size or defaults.batch_size,
        lr=config.lr if config.lr is not None else defaults.lr,
        weight_decay=config.weight_decay if config.weight_decay is not None else defaults.weight_decay,
        beta=config.beta if config.beta is not None else defaults.beta,
        excerpt_seconds=_excerpt_seconds(config, task),
    )
    if config.flows < 1:
        raise UserError("--flows must be at least 1")
    if config.schedule not in SCHEDULES:
        raise UserError(f"unknown --schedule {config.schedule!r} ({', '.join(SCHEDULES)})")
    if config.objective not in OBJECTIVES:
        raise UserError(f"unknown --objective {config.objective!r} ({', '.join(OBJECTIVES)})")
    if config.objective != "audio" and config.estimator != "posterior":
        raise UserError(f"--objective {config.objective} is a posterior's; the {config.estimator} estimator has one loss")
    if config.objective == "likelihood" and config.proxy != "dsp":
        raise UserError(f"--proxy {config.proxy}: --objective likelihood trains on parameters, not through the compressor")
    if config.init is not None and config.resume:
        raise UserError("--init starts a new run from a checkpoint's weights; --resume continues one: give one")
    if config.init is not None and not Path(config.init).is_file():
        raise UserError(f"{config.init}: no such checkpoint")
    return settings


def _excerpt_seconds(config: TrainConfig, task: Task) -> float | None:
    """``--excerpt-seconds``, else the task's default; None for the whole clip (also when the
    length given is the clip's, so that runs recorded before the default are resumed alike)."""
    if config.excerpt_seconds is None:
        return task.training.excerpt_seconds
    if task.has_source:
        raise UserError(f"--excerpt-seconds: the {task.name} task synthesises whole {task.clip_seconds:g} s sounds")
    if not 0.5 <= config.excerpt_seconds <= task.clip_seconds:
        raise UserError(f"--excerpt-seconds must be between 0.5 and the task's clip, {task.clip_seconds:g} s")
    return None if config.excerpt_seconds == task.clip_seconds else config.excerpt_seconds


def excerpt_frames(settings: Settings) -> int | None:
    """The training excerpts' length in samples (``--excerpt-seconds`` or the task's default);
    None: the task's clip. Validation always uses the task's clip."""
    if settings.excerpt_seconds is None:
        return None
    return int(round(settings.excerpt_seconds * settings.task.sample_rate))


def load_training_proxy(config: TrainConfig, task: Task, device: Any) -> tuple[Any, str | None]:
    """The compressor proxy ``config`` asks for (None for dsp) and its file's SHA-256; one-line
    UserErrors for inconsistent options, a task without a compressor and a proxy trained for
    other parameter ranges."""
    if config.proxy not in PROXIES:
        raise UserError(f"unknown proxy {config.proxy!r} ({', '.join(PROXIES)})")
    if config.proxy == "dsp":
        if config.proxy_model is not None:
            raise UserError("--proxy-model is for --proxy neural or hybrid; the dsp compressor needs none")
        return None, None
    if config.proxy_model is None:
        raise UserError(f"--proxy {config.proxy} needs --proxy-model (a checkpoint from afxest train-proxy)")
    if config.estimator in PARAMETER_LOSSES:
        raise UserError(f"--proxy {config.proxy}: the {config.estimator} estimator trains on parameters, not through the compressor")
    if not task.has_compressor:
        raise UserError(f"--proxy {config.proxy}: the {task.name} task has no compressor")
    proxy = load_task_proxy(config.proxy_model, task, map_location=device)
    return proxy.to(device), file_sha256(Path(config.proxy_model))


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run: ``rank`` of ``world`` data-parallel processes (torchrun's
    RANK and WORLD_SIZE; 0 of 1 without), its device and its share of the batch."""

    world: int
    rank: int
    device: Any  # torch.device
    local_batch: int

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files and messages (rank 0)."""
        return self.rank == 0


def ranks_of(config: TrainConfig, settings: Settings) -> Ranks:
    """This process's :class:`Ranks`; UserErrors for an unavailable device, a batch that does
    not split evenly across the ranks, and batch norm on fewer than 2 items per rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(config.device)
    batch_size = settings.batch_size
    if batch_size % world:
        raise UserError(f"--batch-size {batch_size} must be divisible by the {world} data-parallel ranks")
    local_batch = batch_size // world
    if local_batch < 2 and settings.task.encoder.startswith("convnext"):
        raise UserError(f"--batch-size {batch_size} gives {local_batch} item per rank; batch norm needs at least 2")
    return Ranks(world, rank, device, local_batch)


def run_length(config: TrainConfig, settings: Settings) -> tuple[int, int]:
    """The run's (total steps, steps per epoch): ``--max-steps``, or ``--epochs`` of the task's
    ``epoch_items`` at the run's batch size (rounded up)."""
    steps_per_epoch = max(1, settings.task.training.epoch_items // settings.batch_size)
    if config.max_steps is not None:
        total_steps = config.max_steps
    elif config.epochs is not None:
        total_steps = int(math.ceil(config.epochs * steps_per_epoch))
    else:
        raise UserError("give --max-steps N or --epochs N")
    if total_steps < 1:
        raise UserError("nothing to train: --max-steps and --epochs must give at least one step")
    return total_steps, steps_per_epoch


def learning_rate(base: float, schedule: str, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): ``constant``, or ``cosine``
    annealing from ``base`` to 0 over the run, base (1 + cos(pi step / total)) / 2
    (Loshchilov & Hutter, SGDR, 2017, without restarts).

    Example:
        >>> learning_rate(1e-3, "constant", 5, 10), learning_rate(1e-3, "cosine", 5, 10)
        (0.001, 0.0005)
    """
    if schedule == "constant":
        return base
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def resolved_config(
    config: TrainConfig, settings: Settings, ranks: Ranks, length: tuple[int, int], proxy_sha256: str | None
) -> dict[str, Any]:
    """The run's ``config.json`` and every checkpoint's ``training``: the options, the values
    they resolved to, the task definition and the SHA-256 of the files the run started from."""
    total_steps, steps_per_epoch = length
    return {
        **config.to_dict(),
        "batch_size": settings.batch_size,
        "lr": settings.lr,
        "weight_decay": settings.weight_decay,
        "beta": settings.beta,
        "excerpt_seconds": settings.excerpt_seconds,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "world_size": ranks.world,
        "task_definition": settings.task.to_dict(),
        "afxest_version": __version__,
        "init_sha256": None if config.init is None else file_sha256(Path(config.init)),
        "proxy_sha256": proxy_sha256,
    }


# ---------------------------------------------------------------------------------------------
# data


def data_sources(config: TrainConfig, task: Task, ranks: Ranks, say: Callable[[str], None]) -> tuple[DrySource | None, DrySource | None]:
    """The dry audio of training (this rank's shard) and of validation: the music in
    ``--data`` (its train and val splits), procedural audio without it, none for a synth."""
    if task.has_source:
        say(f"data: synthetic {task.name} sounds")
        return None, None
    if config.data is None:
        say(PROCEDURAL)
        return DrySource(None, task.sample_rate), DrySource(None, task.sample_rate)

    def empty(split: str, folder: Any) -> str:
        files = sum(folder.counts.values())
        if files < 2:
            return f"{config.data}: holds {files} audio file; training needs at least 2 (one to train on, one to validate)"
        return (f"{config.data}: no {split} track to use: of its {files} files, {folder.counts[split]} went to {split} "
                f"and {len(folder.files) - len(folder.tracks)} of those are unreadable or shorter than {task.clip_seconds:g} s")

    folders = music_folders(config.data, task.sample_rate, task.clip_seconds, empty)
    say(
        f"data: {config.data}: {len(folders['train'].tracks)} train tracks "
        f"({folders['train'].seconds / 3600:.2f} h), {len(folders['val'].tracks)} val tracks "
        f"({folders['val'].seconds / 3600:.2f} h), decoded at {task.sample_rate} Hz (cache: see docs/training.md)"
    )
    return DrySource(folders["train"].shard(ranks.rank, ranks.world), task.sample_rate), DrySource(folders["val"], task.sample_rate)


def validation_batches(task: Task, source: DrySource | None, items: int, size: int) -> list[Batch]:
    """The fixed validation set in batches of ``size``: item i is drawn from its own generator,
    seeded by (:data:`VALIDATION_SEED`, 1 000 003, i), so the set depends neither on the batch
    size, the number of ranks nor the training seed (runs with different seeds, e.g. a
    warm-started phase, are compared on the same items)."""
    drawn = [make_batch(task, source, np.random.default_rng([VALIDATION_SEED, 1_000_003, i]), 1) for i in range(items)]
    return [
        Batch(
            dry=None if drawn[0].dry is None else np.concatenate([b.dry for b in drawn[i : i + size]]),
            wet=np.concatenate([b.wet for b in drawn[i : i + size]]),
            v=np.concatenate([b.v for b in drawn[i : i + size]]),
        )
        for i in range(0, len(drawn), size)
    ]


def training_batch(
    task: Task, source: DrySource | None, seed: int, rank: int, step: int, size: int, frames: int | None = None
) -> Batch:
    """The batch of optimiser step ``step`` (0-based) on rank ``rank``: drawn from
    :func:`afxest.runs.step_generator` (seed, rank, step), which also seeds torch's generator
    for the step's posterior noise (not here: the step does, :meth:`EstimatorRun.step`, while
    this may run ahead on another thread); excerpts of ``frames`` samples (default: the task's clip)."""
    return make_batch(task, source, step_generator(seed, rank, step, seed_torch=False), size, frames)


def input_baseline(task: Task, batches: list[Batch], device: Any) -> dict[str, float]:
    """The Input baseline of an effect task: the task's loss between dry and wet, averaged over
    the validation items (``val_audio_input_baseline``); empty for a synth task."""
    if task.has_source:
        return {}
    loss_fn = task_loss(task, device)
    with torch.no_grad():
        values = [loss_fn(_tensor(b.dry, device), _tensor(b.wet, device)).sum().item() for b in batches]
    return {"val_audio_input_baseline": sum(values) / sum(len(b.v) for b in batches)}


def _tensor(a: np.ndarray | None, device: Any) -> Tensor | None:
    """``a`` as a tensor on ``device`` (None stays None: a synth task's dry)."""
    return None if a is None else torch.from_numpy(a).to(device)


# ---------------------------------------------------------------------------------------------
# model


def new_model(config: TrainConfig, task: Task, device: Any) -> Estimator:
    """A new estimator of the configured kind and flows, its weights drawn from ``config.seed``."""
    torch.manual_seed(config.seed)
    return Estimator(task, EstimatorConfig(kind=config.estimator, flows=config.flows)).to(device)


def initialise_from(model: Any, path: Path, task: Task, est_config: Any) -> str:
    """Copies a checkpoint's weights into a new ``model`` (``afxest train --init``): the encoder
    always, the head too when it is the same architecture (``param`` and ``deterministic``
    heads are the same network, ``posterior`` heads need the same flows). Returns what was
    copied. A warm start, e.g. the parameter-loss estimator as the starting point of an
    audio-loss one; the optimiser and step count start afresh.
    """
    state = load_checkpoint(path)
    # training defaults (lr, beta, ...) may differ: a warm start is a new run; so may the
    # encoder, where the new one only hears more (load_widened)
    difference = definition_difference(state["task"], task, ignore=("encoder",))
    if difference is not None:
        raise UserError(f"{path}: --init needs a checkpoint of the same task definition ({task.name}; {difference} differs)")
    weights = state["model"]
    encoder = {k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")}
    widened = load_widened(model.encoder, encoder, path)
    source = state["estimator"]
    same_head = {source["kind"], est_config.kind} <= {"param", "deterministic"} or source == est_config.to_dict()
    head = {k.removeprefix("head."): v for k, v in weights.items() if k.startswith("head.")}
    if same_head:
        model.head.load_state_dict(head)
        return f"encoder and head from {path} ({source['kind']}, step {state['step']}){widened}"
    if source["kind"] in ("param", "deterministic") and est_config.kind == "posterior":
        centre_posterior_on_point(model.head, head["linear.weight"], head["linear.bias"])
        return (f"encoder from {path} ({source['kind']}, step {state['step']}); posterior head centred on its "
                f"point estimate (Gaussian mean = its logits, sigma {INIT_SIGMA}, flows near the identity)")
    return f"encoder from {path} ({source['kind']}, step {state['step']}); new {est_config.kind} head"


def load_widened(encoder: Any, weights: dict[str, Tensor], path: Path) -> str:
    """Loads an encoder's ``weights`` into ``encoder``, which may hear more than the one they were
    trained in (a new input feature, e.g. ``convnext_echo`` -> ``convnext_echo_reverb``): a
    weight whose last axis is shorter than the encoder's (a linear layer's inputs) fills the
    leading columns and the new ones start at 0, and modules the weights lack keep their
    initial values, so the widened encoder starts out giving the same embedding. Returns what
    was widened ("" for nothing); UserError for any other mismatch."""
    own = encoder.state_dict()
    unknown = sorted(set(weights) - set(own))
    if unknown:
        raise UserError(f"{path}: its encoder has weights this task's does not ({unknown[0]}): --init needs the same encoder or one that hears more")
    widened = []
    for key, value in weights.items():
        target = own[key]
        if value.shape == target.shape:
            own[key] = value
        elif value.dim() == 2 and value.shape[0] == target.shape[0] and value.shape[1] < target.shape[1]:
            own[key] = torch.cat([value, value.new_zeros(value.shape[0], target.shape[1] - value.shape[1])], dim=1)
            widened.append(key)
        else:
            raise UserError(f"{path}: its encoder's {key} is {tuple(value.shape)}, this task's {tuple(target.shape)}")
    encoder.load_state_dict(own)
    new = sorted({key.split(".")[0] for key in set(own) - set(weights)})
    return f"; widened {', '.join(widened)} (new inputs start at 0; new: {', '.join(new)})" if widened else ""


def centre_posterior_on_point(head: Any, weight: Tensor, bias: Tensor, sigma: float = INIT_SIGMA) -> None:
    """Starts a posterior head (DAFx 2025, Sec. 3.2) as a narrow law around a point estimator's
    z = sigmoid(W h + c): the base Gaussian's mean is W h + c (the logits), its log standard
    deviation the constant ln ``sigma``. The flow layers start near the identity
    (:class:`afxest.nn.flows.ConditionalDSF`), so samples are sigmoid(W h + c + sigma eps),
    bent slightly, and training the flow starts from what the point estimator knows instead
    of from a random law."""
    d = head.d
    with torch.no_grad():
        head.base.weight[:d].copy_(weight)
        head.base.bias[:d].copy_(bias)
        head.base.weight[d:].zero_()
        head.base.bias[d:].fill_(math.log(sigma))


def resume(folder: RunFolder, model: Estimator, optimizer: Any, task: Task, resolved: dict[str, Any], device: Any) -> tuple[int, Best]:
    """Continues the run in ``folder`` (``--resume``): loads its ``last.pt`` into ``model`` and
    ``optimizer``; returns its step and best validation objective. UserErrors for another task
    definition or estimator, and for a setting that would not continue the same run
    (:data:`RESUME_KEYS`)."""
    state = load_checkpoint(folder.last, map_location=device)
    if state["task"] != task.to_dict() or state["estimator"] != model.config.to_dict():
        raise UserError(f"{folder.last}: was trained with another task definition or estimator; --resume needs the same")
    keys = [*RESUME_KEYS, *(["total_steps"] if resolved["schedule"] != "constant" else [])]
    check_same_run(folder.last, {**BEFORE_SCHEDULES, **state["training"]}, resolved, keys)
    return restore(state, model, optimizer, "objective")


def data_parallel(model: Estimator, ranks: Ranks) -> tuple[Any, Any]:
    """The model and what runs it: the model itself on one process; across ranks, a
    DistributedDataParallel wrapper, on CUDA with batch statistics over the global batch
    (SyncBatchNorm, CUDA only in torch)."""
    if ranks.world == 1:
        return model, model
    from torch.nn.parallel import DistributedDataParallel

    if ranks.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    return model, DistributedDataParallel(model, device_ids=device_ids)


def join_process_group(ranks: Ranks) -> Ranks:
    """Starts the data-parallel process group (NCCL on this rank's GPU, gloo on CPUs); nothing
    on one process. Returns the ranks with their device."""
    if ranks.world == 1:
        return ranks
    import torch.distributed as dist

    device = ranks.device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return replace(ranks, device=device)


# ---------------------------------------------------------------------------------------------
# objective, step and validation


@dataclass
class Objective:
    """The training objective of a batch (DAFx 2025, Eq. 7 and the papers' baselines).

    With z sampled once per item from the estimator for the wet y, and x the dry:

    * ``posterior``: L = mean_i [audio(z_i, x_i, y_i) - beta H_i], H_i the entropy estimate
      of Eqs. 12-14 (nats); with ``likelihood``, L = -mean_i ln p(t_i | y_i) (nats), t_i the
      truth in the model's space (neural posterior estimation); with ``hybrid`` w > 0, the
      first plus w times the second;
    * ``deterministic``: L = mean_i audio(z_i, x_i, y_i) (ICASSP 2024);
    * ``param``: L = mean_i ||z_i - t_i||^2 / d, t_i the truth in the model's space
      (:meth:`afxest.tasks.Task.truth_to_model`);
    * ``bins``: L = mean_i CE(bins_i, t_i) (:func:`afxest.nn.heads.bins_cross_entropy`).

    Arguments:
        task: The task.
        kind: The estimator (``posterior``, ``deterministic``, ``param`` or ``bins``).
        beta: The entropy weight (posterior).
        audio: The audio term (z, dry, wet, compressor=None) -> (batch,):
            :func:`afxest.objective.audio_objective`, exact or its fast training form.
        compressor: A proxy for the dsp compressor in the audio term, or None.
        likelihood: A posterior trained by the likelihood of the truth (``--objective``).
        hybrid: The weight w of the likelihood beside the audio objective (``--objective
            hybrid``: :data:`HYBRID_WEIGHT`); 0: none.
    """

    task: Task
    kind: str
    beta: float
    audio: AudioObjective
    compressor: Any = None
    likelihood: bool = False
    hybrid: float = 0.0

    def __call__(self, model: Any, batch: Batch, device: Any, with_audio: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """The objective of a batch, with one parameter draw per item.

        Arguments:
            model: What runs the estimator (it, or its data-parallel wrapper): wet -> sample.
            batch: The batch (wet, dry for effect tasks, normalised truth v).
            device: Where the batch goes.
            with_audio: Validation: the audio term of the param estimator too, and each
                parameter's absolute error in its own unit (``error.<name>``).

        Returns:
            The objective (a scalar) and its per-item terms, (batch,): ``param_mse``,
            ``cross_entropy``, ``nll``, ``audio`` and ``entropy_bits`` (bits per dimension, Eq. 17) where they apply.
        """
        wet, dry = _tensor(batch.wet, device), _tensor(batch.dry, device)
        if self.likelihood:
            return self._likelihood(model, batch, wet, dry, device, with_audio)
        s = model(wet, 1)
        z = s.z[:, 0]
        terms: dict[str, Tensor] = {}
        if self.kind in PARAMETER_LOSSES:
            target = self.task.truth_to_model(torch.from_numpy(batch.v).to(device))
            terms["param_mse"] = loss = ((z - target) ** 2).mean(dim=-1)
        if self.kind == "bins":
            terms["cross_entropy"] = loss = bins_cross_entropy(s.logits, target)
        if self.kind not in PARAMETER_LOSSES or with_audio:
            terms["audio"] = self.audio(z, dry, wet, compressor=self.compressor)
        if with_audio:  # validation: each parameter's error in its own unit (learning curves)
            for name, error in self.task.parameter_errors(z, torch.from_numpy(batch.v).to(device)).items():
                terms[f"error.{name}"] = error
        if self.kind == "deterministic":
            loss = terms["audio"]
        elif self.kind == "posterior":
            loss = terms["audio"] - self.beta * s.entropy
            terms["entropy_bits"] = bits_per_dim(-s.entropy, self.task.model.dim)  # Eq. 17
            if self.hybrid:
                terms.update(self._nll(model, batch, wet, device))
                loss = loss + self.hybrid * terms["nll"]
        return loss.mean(), terms

    def _nll(self, model: Any, batch: Batch, wet: Tensor, device: Any) -> dict[str, Tensor]:
        """-ln p(t | y) per item (``nll``), t kept :data:`LIKELIHOOD_MARGIN` from the ends of
        [0, 1], and ``unreachable``: 1 for an item the flow cannot reach in float32 (its inverse
        runs off to 1e16 and more: -ln p of 1e26 or more, measured on fm, where it made training
        diverge three times), which counts as :data:`LIKELIHOOD_CAP` without a gradient; the
        others are evaluated again with their gradients."""
        target = self.task.truth_to_model(torch.from_numpy(batch.v).to(device))
        target = target.clamp(LIKELIHOOD_MARGIN, 1 - LIKELIHOOD_MARGIN).to(wet.dtype).unsqueeze(1)
        with torch.no_grad():
            reachable = -model(wet, 1, at=target)[:, 0] < LIKELIHOOD_CAP
        nll = wet.new_full((wet.shape[0],), LIKELIHOOD_CAP)
        if bool(reachable.any()):
            nll = nll.masked_scatter(reachable, -model(wet[reachable], 1, at=target[reachable])[:, 0])
        return {"nll": nll, "unreachable": (~reachable).to(wet.dtype)}

    def _likelihood(self, model: Any, batch: Batch, wet: Tensor, dry: Tensor | None, device: Any,
                    with_audio: bool) -> tuple[Tensor, dict[str, Tensor]]:
        """``--objective likelihood``: the mean of :meth:`_nll`. Validation adds one draw's audio
        term, entropy (bits per dimension) and parameter errors, as the audio objective logs."""
        terms = self._nll(model, batch, wet, device)
        if with_audio:
            with torch.no_grad():
                s = model(wet, 1)
            terms["audio"] = self.audio(s.z[:, 0], dry, wet, compressor=self.compressor)
            terms["entropy_bits"] = bits_per_dim(-s.entropy, self.task.model.dim)
            for name, error in self.task.parameter_errors(s.z[:, 0], torch.from_numpy(batch.v).to(device)).items():
                terms[f"error.{name}"] = error
        return terms["nll"].mean(), terms


def train_step(model: Any, optimizer: Any, objective: Objective, batch: Batch, device: Any, lr: float) -> tuple[Tensor, dict[str, Tensor]]:
    """One AdamW step on the objective of a batch (DAFx 2025, Sec. 4.6: AdamW).

    Arguments:
        model: What runs the estimator (the model, or its data-parallel wrapper).
        optimizer: The AdamW optimiser of its weights; its rate is set to ``lr``.
        objective: The training objective.
        batch: The batch.
        device: Where the batch goes.
        lr: The step's learning rate (:func:`learning_rate`).

    Returns:
        The objective before the step (a scalar with its graph) and its per-item terms.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss, terms = objective(model, batch, device)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, terms


def validate(model: Estimator, objective: Objective, batches: list[Batch], device: Any, world: int = 1, forward: Any = None) -> dict[str, float]:
    """The validation figures of a model, in eval mode, without gradients.

    One posterior draw per item, from torch's generator seeded by VALIDATION_SEED + 7 (the
    training generator is left as it was), so every validation of a run draws alike.

    Arguments:
        model: The estimator (put in eval mode, then back in training mode).
        objective: The validation objective (exact audio term, dsp compressor).
        batches: The validation set (:func:`validation_batches`).
        device: Where the batches go.
        world: The data-parallel ranks to average over (each validates the same set).
        forward: What runs the model (its data-parallel wrapper); the model by default.

    Returns:
        ``val_objective`` and ``val_<term>`` for each term of :class:`Objective` (with
        ``with_audio``), means over the items.
    """
    forward = model if forward is None else forward
    model.eval()
    sums: dict[str, list[float]] = {}
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(VALIDATION_SEED + 7)
        for batch in batches:
            loss, terms = objective(forward, batch, device, with_audio=True)
            sums.setdefault("objective", []).append(loss.item() * len(batch.v))
            for k, v in terms.items():
                sums.setdefault(k, []).append(v.sum().item())
    model.train()
    n = sum(len(b.v) for b in batches)
    metrics = {f"val_{k}": sum(v) / n for k, v in sums.items()}
    if world > 1:
        import torch.distributed as dist

        t = torch.tensor([metrics[k] for k in sorted(metrics)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        metrics = {k: v / world for k, v in zip(sorted(metrics), t.tolist())}
    return metrics


@dataclass
class EstimatorRun:
    """An estimator's training run as :func:`afxest.runs.run_loop` drives it: its steps, its
    validation and its checkpoints."""

    config: TrainConfig
    settings: Settings
    ranks: Ranks
    total_steps: int
    model: Any  # the Estimator (SyncBatchNorm on CUDA ranks)
    forward: Any  # the model, or its data-parallel wrapper
    optimizer: Any
    training: Objective  # the fast audio term, through the proxy compressor if any
    validation: Objective  # the exact audio term, dsp compressor
    source: DrySource | None
    val_batches: list[Batch]
    resolved: dict[str, Any]
    first_batch: str | None = None  # SHA-256 of this rank's first batch (ranks must differ)
    batches: Prefetcher[Batch] = field(init=False)

    def __post_init__(self) -> None:
        frames = excerpt_frames(self.settings)
        self.batches = Prefetcher(
            lambda step: training_batch(self.settings.task, self.source, self.config.seed, self.ranks.rank, step,
                                        self.ranks.local_batch, frames),
            self.total_steps,
        )

    def step(self, step: int) -> tuple[float, dict[str, float]]:
        """Optimiser step ``step`` (0-based); TrainingDiverged if the loss is not finite."""
        step_generator(self.config.seed, self.ranks.rank, step)  # seeds torch: the posterior's noise
        batch = self.batches.get(step)
        if self.first_batch is None:
            self.first_batch = hashlib.sha256(batch.wet.tobytes()).hexdigest()
        lr = learning_rate(self.settings.lr, self.config.schedule, step, self.total_steps)
        loss, terms = train_step(self.forward, self.optimizer, self.training, batch, self.ranks.device, lr)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"training diverged at step {step + 1} (loss {value}); {self.config.out}/last.pt keeps the last "
                "checkpoint: start a new run from it (--init) with a lower --lr"
            )
        return value, {k: v.mean().item() for k, v in terms.items()}

    def validate(self) -> dict[str, float]:
        """The validation figures (:func:`validate`), averaged over the ranks."""
        return validate(self.model, self.validation, self.val_batches, self.ranks.device, self.ranks.world, self.forward)

    def payload(self, step: int, metrics: dict[str, float], best: Best) -> dict[str, Any]:
        """An ``afxest-checkpoint/1`` (docs/training.md)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "afxest_version": __version__,
            "task": self.settings.task.to_dict(),
            "estimator": self.model.config.to_dict(),
            "training": self.resolved,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": step,
            "best": best.stored("objective"),
            "metrics": metrics,
        }


# ---------------------------------------------------------------------------------------------
# the command


def train(
    config: TrainConfig, log: Callable[[str], None] = print, progress: bool = False,
    after_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Runs (or resumes) a training run as configured: the steps of the module docstring.

    Arguments:
        config: The options of ``afxest train``.
        log: Where messages go (rank 0's only).
        progress: Whether to show a progress bar (else a line every 10 % of the run).
        after_step: Called with each step once it is recorded and checkpointed
            (:func:`afxest.runs.run_loop`; tests kill a run there).

    Returns:
        The steps done, the best validation objective and its step, the last validation figures.
    """
    settings = resolve(config)
    task = settings.task
    proxy, proxy_sha256 = load_training_proxy(config, task, "cpu")
    ranks = ranks_of(config, settings)
    length = run_length(config, settings)
    folder = RunFolder(Path(config.out), config.resume, writer=ranks.is_main)  # on every rank, before any waits
    ranks = join_process_group(ranks)
    device = ranks.device
    folder.prepare()
    say = log if ranks.is_main else _silent
    train_source, val_source = data_sources(config, task, ranks, say)
    val_batches = validation_batches(task, val_source, config.val_items, ranks.local_batch)
    model = new_model(config, task, device)
    compressor = compressor_function(config.proxy, None if proxy is None else proxy.to(device), task.sample_rate)
    if proxy is not None:
        say(f"compressor in training: {config.proxy} proxy {config.proxy_model}; validation renders with dsp")
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    resolved = resolved_config(config, settings, ranks, length, proxy_sha256)
    start, best = 0, Best()
    if config.init is not None:
        say(f"initialised: {initialise_from(model, Path(config.init), task, model.config)}")
    if config.resume:
        start, best = resume(folder, model, optimizer, task, resolved, device)
        say(f"resuming {folder.out} from step {start}")
    model, forward = data_parallel(model, ranks)
    folder.write_config(resolved)
    baseline = input_baseline(task, val_batches, device)
    if baseline:
        say(f"input baseline (dry vs wet, {task.loss}): {baseline['val_audio_input_baseline']:.4f}")
    folder.cut_metrics(start)
    likelihood, hybrid = config.objective == "likelihood", HYBRID_WEIGHT if config.objective == "hybrid" else 0.0
    run = EstimatorRun(
        config, settings, ranks, length[0], model, forward, optimizer,
        training=Objective(task, config.estimator, settings.beta, audio_objective(task, device, fast=True), compressor,
                           likelihood=likelihood, hybrid=hybrid),
        validation=Objective(task, config.estimator, settings.beta, audio_objective(task, device),
                             likelihood=likelihood, hybrid=hybrid),
        source=train_source, val_batches=val_batches, resolved=resolved,
    )
    bar = _Progress(length[0], start, enabled=progress and ranks.is_main, log=say)
    try:
        step, last = run_loop(
            run, folder, Cadence(length[0], config.val_every, config.checkpoint_every), start, best,
            select="val_objective", constants=baseline, after_step=after_step,
            report=lambda s, loss, figures, _: bar.update(s, loss, figures.get("val_audio", figures.get("val_objective"))),
        )
    finally:
        run.batches.close()
        bar.close()
    if ranks.world > 1:
        _finish_data_parallel(folder.out, ranks.rank, model, run.first_batch)
    return TrainResult(step, best.step, None if math.isinf(best.value) else best.value, last)


def _silent(_message: str) -> None:
    pass


def _finish_data_parallel(out: Path, rank: int, model: Any, first_batch: str | None) -> None:
    """Every rank writes the SHA-256 of its final weights (data-parallel ranks must agree) and
    of its first training batch (they must differ: each rank draws its own data), then waits
    for the others and leaves the process group."""
    import torch.distributed as dist

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    summary = {"rank": rank, "weights_sha256": digest.hexdigest(), "first_batch_sha256": first_batch}
    atomic_write_text(out / f"rank-{rank}.json", json.dumps(summary) + "\n")
    dist.barrier()
    dist.destroy_process_group()


class _Progress:
    """A rich progress bar (loss, validation figure, ETA), or a log line every 10% without."""

    def __init__(self, total: int, start: int, enabled: bool, log: Callable[[str], None]) -> None:
        self.total, self.log, self.bar, self.task = total, log, None, None
        self.next_log = start
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  val {task.fields[val]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, loss="-", val="-")
            self.bar.start()

    def update(self, step: int, loss: float, val: float | None) -> None:
        """Shows step ``step``, its loss and the last validation figure (without a bar: a log
        line every 10 % of the run)."""
        val_text = "-" if val is None else f"{val:.4f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", val=val_text)
        elif step >= self.next_log or step == self.total:
            self.log(f"step {step}/{self.total}  loss {loss:.4f}  val {val_text}")
            self.next_log = step + max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
