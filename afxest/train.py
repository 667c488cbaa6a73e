"""Training: ``afxest train`` as a library function.

One step draws a batch of ground truth (dry music -> pedalboard effect, or the synth), encodes
the wet signal, samples parameters from the head and:

* ``deterministic``: renders them with the differentiable processors -> audio loss;
* ``posterior``: the same, minus beta times the entropy estimate (DAFx 2025, Eqs. 7, 13);
* ``param``: mean squared error to the truth mapped into the model's space.

A task with a compressor can train through a proxy of it (``--proxy``, ICASSP 2024): ``dsp``
(afxest's exact differentiable compressor), ``neural`` (a trained TCN proxy,
:mod:`afxest.nn.proxy`) or ``hybrid`` (the exact output, the proxy's gradients). Validation, and
so the choice of ``best.pt``, renders with the dsp processors, as inference does.

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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from afxest import __version__
from afxest.audio import atomic_write_text
from afxest.choices import SCHEDULES
from afxest.checkpoints import CHECKPOINT_FORMAT, check_run_folder, load_checkpoint, save_checkpoint, step_of
from afxest.errors import UserError


@dataclass
class TrainConfig:
    """Everything ``afxest train`` takes; None means the task's default."""

    task: str
    out: str
    estimator: str = "posterior"
    flows: int = 1
    beta: float | None = None
    data: str | None = None
    max_steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    device: str = "auto"
    seed: int = 0
    val_items: int = 128
    val_every: int = 200
    checkpoint_every: int = 50
    resume: bool = False
    init: str | None = None
    proxy: str = "dsp"
    proxy_model: str | None = None
    schedule: str = "constant"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What a run ended with."""

    steps: int
    best_step: int | None
    best_objective: float | None
    last_metrics: dict[str, float] = field(default_factory=dict)


def enlarge_malloc_thresholds() -> None:
    """glibc mallopt(M_MMAP_THRESHOLD, M_TRIM_THRESHOLD = 1 GiB): large audio buffers are then
    reused instead of mapped and unmapped every step (measured: 191-211 ms/step instead of
    218-317 ms for the eq task on 2 cores). No effect elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)


def load_training_proxy(config: TrainConfig, task, device) -> tuple[Any, str | None]:
    """The compressor proxy ``config`` asks for (None for dsp) and its file's SHA-256; one-line
    UserErrors for inconsistent options, a task without a compressor and a proxy trained for
    other parameter ranges."""
    from afxest.nn.proxy import PROXIES, load_task_proxy
    from afxest.store import file_sha256

    if config.proxy not in PROXIES:
        raise UserError(f"unknown proxy {config.proxy!r} ({', '.join(PROXIES)})")
    if config.proxy == "dsp":
        if config.proxy_model is not None:
            raise UserError("--proxy-model is for --proxy neural or hybrid; the dsp compressor needs none")
        return None, None
    if config.proxy_model is None:
        raise UserError(f"--proxy {config.proxy} needs --proxy-model (a checkpoint from afxest train-proxy)")
    if config.estimator == "param":
        raise UserError(f"--proxy {config.proxy}: the param estimator trains on parameters, not through the compressor")
    if not any(p.type == "compressor" for p in task.model.processors):
        raise UserError(f"--proxy {config.proxy}: the {task.name} task has no compressor")
    proxy = load_task_proxy(config.proxy_model, task, map_location=device)
    return proxy.to(device), file_sha256(Path(config.proxy_model))


def learning_rate(base: float, schedule: str, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): ``constant``, or ``cosine``
    annealing from ``base`` to 0 over the run, base (1 + cos(pi step / total)) / 2
    (Loshchilov & Hutter, SGDR, 2017, without restarts)."""
    if schedule == "constant":
        return base
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def initialise_from(model: Any, path: Path, task: Any, est_config: Any) -> str:
    """Copy a checkpoint's weights into a new ``model`` (``afxest train --init``): the encoder
    always, the head too when it is the same architecture (``param`` and ``deterministic``
    heads are the same network, ``posterior`` heads need the same flows). Returns what was
    copied. A warm start, e.g. the parameter-loss estimator as the starting point of an
    audio-loss one; the optimiser and step count start afresh.
    """
    from afxest.store import definition_difference

    state = load_checkpoint(path)
    difference = definition_difference(state["task"], task.to_dict())
    if difference is not None:  # training defaults (lr, beta, ...) may differ: a warm start is a new run
        raise UserError(f"{path}: --init needs a checkpoint of the same task definition ({task.name}; {difference} differs)")
    weights = state["model"]
    encoder = {k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")}
    model.encoder.load_state_dict(encoder)
    source = state["estimator"]
    same_head = {source["kind"], est_config.kind} <= {"param", "deterministic"} or source == est_config.to_dict()
    head = {k.removeprefix("head."): v for k, v in weights.items() if k.startswith("head.")}
    if same_head:
        model.head.load_state_dict(head)
        return f"encoder and head from {path} ({source['kind']}, step {state['step']})"
    if source["kind"] in ("param", "deterministic") and est_config.kind == "posterior":
        centre_posterior_on_point(model.head, head["linear.weight"], head["linear.bias"])
        return (f"encoder from {path} ({source['kind']}, step {state['step']}); posterior head centred on its "
                f"point estimate (Gaussian mean = its logits, sigma {INIT_SIGMA}, flows near the identity)")
    return f"encoder from {path} ({source['kind']}, step {state['step']}); new {est_config.kind} head"


INIT_SIGMA = 0.02  # the base Gaussian's standard deviation (logit units) of a posterior centred on a point estimate


def centre_posterior_on_point(head: Any, weight: Any, bias: Any, sigma: float = INIT_SIGMA) -> None:
    """Start a posterior head (DAFx 2025 Sec. 3.2) as a narrow law around a point estimator's
    z = sigmoid(W h + c): the base Gaussian's mean is W h + c (the logits), its log standard
    deviation the constant ln ``sigma``. The flow layers start near the identity
    (:class:`afxest.nn.flows.ConditionalDSF`), so samples are sigmoid(W h + c + sigma eps),
    bent slightly, and training the flow starts from what the point estimator knows instead
    of from a random law."""
    import torch

    d = head.d
    with torch.no_grad():
        head.base.weight[:d].copy_(weight)
        head.base.bias[:d].copy_(bias)
        head.base.weight[d:].zero_()
        head.base.bias[d:].fill_(math.log(sigma))


VALIDATION_SEED = 0  # seeds the validation items and samples: those a seed-0 run always drew


def _step_seed(seed: int, rank: int, step: int) -> list[int]:
    return [seed, rank, step]


def train(config: TrainConfig, log: Callable[[str], None] = print, progress: bool = False) -> TrainResult:
    """Run (or resume) a training run as configured; returns its final state."""
    import torch
    import torch.distributed as dist

    from afxest.data import Batch, DrySource, MusicFolder, make_batch
    from afxest.losses import bits_per_dim
    from afxest.objective import audio_objective, task_loss
    from afxest.nn.estimator import ESTIMATORS, Estimator, EstimatorConfig
    from afxest.store import file_sha256
    from afxest.tasks import get_task

    task = get_task(config.task)
    if config.estimator not in ESTIMATORS:
        raise UserError(f"unknown estimator {config.estimator!r} ({', '.join(ESTIMATORS)})")
    if config.max_steps is not None and config.epochs is not None:
        raise UserError("give --max-steps or --epochs, not both")
    batch_size = config.batch_size or task.batch_size
    lr = config.lr if config.lr is not None else task.lr
    weight_decay = config.weight_decay if config.weight_decay is not None else task.weight_decay
    beta = config.beta if config.beta is not None else task.beta
    if config.flows < 1:
        raise UserError("--flows must be at least 1")
    if config.schedule not in SCHEDULES:
        raise UserError(f"unknown --schedule {config.schedule!r} ({', '.join(SCHEDULES)})")
    if config.init is not None and config.resume:
        raise UserError("--init starts a new run from a checkpoint's weights; --resume continues one: give one")
    if config.init is not None and not Path(config.init).is_file():
        raise UserError(f"{config.init}: no such checkpoint")
    proxy, proxy_sha256 = load_training_proxy(config, task, "cpu")
    out = Path(config.out)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(config.device)
    if batch_size % world:
        raise UserError(f"--batch-size {batch_size} must be divisible by the {world} data-parallel ranks")
    local_batch = batch_size // world
    if local_batch < 2 and task.encoder == "convnext":
        raise UserError(f"--batch-size {batch_size} gives {local_batch} item per rank; batch norm needs at least 2")
    is_main = rank == 0
    say = log if is_main else (lambda _msg: None)

    steps_per_epoch = max(1, task.epoch_items // batch_size)
    if config.max_steps is not None:
        total_steps = config.max_steps
    elif config.epochs is not None:
        total_steps = int(math.ceil(config.epochs * steps_per_epoch))
    else:
        raise UserError("give --max-steps N or --epochs N")
    if total_steps < 1:
        raise UserError("nothing to train: --max-steps and --epochs must give at least one step")

    # --- output folder (checked on every rank before any rank waits for the others) --------
    last_path, best_path = check_run_folder(out, config.resume)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not config.resume:
            for stale in ("config.json", "metrics.jsonl"):
                (out / stale).unlink(missing_ok=True)

    # --- data ------------------------------------------------------------------------------
    if task.has_source:
        train_source = val_source = None
        say(f"data: synthetic {task.name} sounds")
    elif config.data is None:
        train_source = DrySource(None, task.sample_rate)
        val_source = DrySource(None, task.sample_rate)
        say("data: no --data given, so training on PROCEDURAL music-like audio (not real music)")
    else:
        folders = {}
        for split in ("train", "val"):
            folder = MusicFolder(Path(config.data), task.sample_rate, split, min_seconds=task.clip_seconds)
            folder.prepare()
            if not folder.tracks:
                files = sum(folder.counts.values())
                if files < 2:
                    raise UserError(f"{config.data}: holds {files} audio file; training needs at least 2 (one to train on, one to validate)")
                raise UserError(
                    f"{config.data}: no {split} track to use: of its {files} files, {folder.counts[split]} went to {split} "
                    f"and {len(folder.files) - len(folder.tracks)} of those are unreadable or shorter than {task.clip_seconds:g} s"
                )
            folders[split] = folder
        say(
            f"data: {config.data}: {len(folders['train'].tracks)} train tracks "
            f"({folders['train'].seconds / 3600:.2f} h), {len(folders['val'].tracks)} val tracks "
            f"({folders['val'].seconds / 3600:.2f} h), decoded at {task.sample_rate} Hz (cache: see docs/training.md)"
        )
        train_source = DrySource(folders["train"].shard(rank, world), task.sample_rate)
        val_source = DrySource(folders["val"], task.sample_rate)

    # fixed validation set: item i is drawn from its own generator, so the set does not depend
    # on the batch size, the number of ranks or the training seed (runs with different seeds,
    # e.g. a warm-started phase, are compared on the same items)
    items = [make_batch(task, val_source, np.random.default_rng([VALIDATION_SEED, 1_000_003, i]), 1)
             for i in range(config.val_items)]
    val_batches = [
        Batch(
            dry=None if items[0].dry is None else np.concatenate([b.dry for b in items[i : i + local_batch]]),
            wet=np.concatenate([b.wet for b in items[i : i + local_batch]]),
            v=np.concatenate([b.v for b in items[i : i + local_batch]]),
        )
        for i in range(0, len(items), local_batch)
    ]

    # --- model -----------------------------------------------------------------------------
    torch.manual_seed(config.seed)
    est_config = EstimatorConfig(kind=config.estimator, flows=config.flows)
    model = Estimator(task, est_config).to(device)
    from afxest.nn.proxy import compressor_function

    train_compressor = compressor_function(config.proxy, None if proxy is None else proxy.to(device), task.sample_rate)
    if proxy is not None:
        say(f"compressor in training: {config.proxy} proxy {config.proxy_model}; validation renders with dsp")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = task_loss(task, device)  # the Input baseline
    val_audio = audio_objective(task, device)  # validation: the exact audio term
    train_audio = audio_objective(task, device, fast=True)  # training steps: its fast form (objective.py)
    resolved = {
        **config.to_dict(),
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "beta": beta,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "world_size": world,
        "task_definition": task.to_dict(),
        "afxest_version": __version__,
        "init_sha256": None if config.init is None else file_sha256(Path(config.init)),
        "proxy_sha256": proxy_sha256,
    }
    start_step, best_step, best_objective = 0, None, math.inf
    if config.init is not None:
        say(f"initialised: {initialise_from(model, Path(config.init), task, est_config)}")
    if config.resume:
        state = load_checkpoint(last_path, map_location=device)
        if state["task"] != task.to_dict() or state["estimator"] != est_config.to_dict():
            raise UserError(f"{last_path}: was trained with another task definition or estimator; --resume needs the same")
        keys = ["seed", "batch_size", "lr", "weight_decay", "beta", "data", "val_items", "world_size", "schedule",
                "proxy", "proxy_sha256"]
        if config.schedule != "constant":  # the schedule's shape depends on the run's length
            keys.append("total_steps")
        # runs from before --schedule and --proxy
        stored = {"schedule": "constant", "proxy": "dsp", "proxy_sha256": None, **state["training"]}
        for key in keys:
            if stored.get(key) != resolved[key]:
                raise UserError(
                    f"{last_path}: --resume with a different {key} ({resolved[key]!r}, the run has "
                    f"{stored.get(key)!r}) would not continue the same run"
                )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step = int(state["step"])
        best_step, best_objective = state["best"]["step"], state["best"]["objective"]
        best_objective = math.inf if best_objective is None else best_objective
        say(f"resuming {out} from step {start_step}")
    trained = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":  # batch statistics over the global batch (CUDA only in torch)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    if is_main and not config.resume:
        atomic_write_text(out / "config.json", json.dumps(resolved, indent=2) + "\n")

    def to_device(a: np.ndarray | None):
        return None if a is None else torch.from_numpy(a).to(device)

    def objective(batch, with_audio: bool = False, compressor=None, audio=val_audio) -> tuple[Any, dict[str, Any]]:
        """The training objective of a batch and its terms (``with_audio``: the audio loss of
        the param estimator too, for comparison; ``compressor``: a proxy for the dsp one;
        ``audio``: the exact audio term, or training's fast form)."""
        wet, dry = to_device(batch.wet), to_device(batch.dry)
        s = trained(wet, 1)
        z = s.z[:, 0]
        terms: dict[str, Any] = {}
        if config.estimator == "param":
            target = task.truth_to_model(torch.from_numpy(batch.v).to(device))
            loss = ((z - target) ** 2).mean(dim=-1)
            terms["param_mse"] = loss
        if config.estimator != "param" or with_audio:
            terms["audio"] = audio(z, dry, wet, compressor=compressor)
        if with_audio:  # validation: each parameter's error in its own unit (learning curves)
            for name, error in task.parameter_errors(z, torch.from_numpy(batch.v).to(device)).items():
                terms[f"error.{name}"] = error
        if config.estimator == "deterministic":
            loss = terms["audio"]
        elif config.estimator == "posterior":
            loss = terms["audio"] - beta * s.entropy
            terms["entropy_bits"] = bits_per_dim(-s.entropy, task.model.dim)  # Eq. 17
        return loss.mean(), terms

    def validate() -> dict[str, float]:
        model.eval()
        sums: dict[str, list[float]] = {}
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(VALIDATION_SEED + 7)
            for batch in val_batches:
                loss, terms = objective(batch, with_audio=True)
                sums.setdefault("objective", []).append(loss.item() * len(batch.v))
                for k, v in terms.items():
                    sums.setdefault(k, []).append(v.sum().item())
        model.train()
        n = sum(len(b.v) for b in val_batches)
        metrics = {f"val_{k}": sum(v) / n for k, v in sums.items()}
        if world > 1:
            t = torch.tensor([metrics[k] for k in sorted(metrics)], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            metrics = {k: v / world for k, v in zip(sorted(metrics), t.tolist())}
        return metrics

    baseline: dict[str, float] = {}
    if not task.has_source:
        with torch.no_grad():
            values = [loss_fn(to_device(b.dry), to_device(b.wet)).sum().item() for b in val_batches]
        baseline["val_audio_input_baseline"] = sum(values) / config.val_items
        say(f"input baseline (dry vs wet, {task.loss}): {baseline['val_audio_input_baseline']:.4f}")

    metrics_file = out / "metrics.jsonl"
    if is_main and config.resume and metrics_file.exists():  # drop entries after the checkpoint
        kept = [line for line in metrics_file.read_text().splitlines() if step_of(line) <= start_step]
        atomic_write_text(metrics_file, "".join(line + "\n" for line in kept))

    def record(entry: dict[str, Any]) -> None:
        if is_main:
            with open(metrics_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")

    def checkpoint(step: int, metrics: dict[str, float], path: Path) -> None:
        if not is_main:
            return
        save_checkpoint(
            path,
            {
                "format": CHECKPOINT_FORMAT,
                "afxest_version": __version__,
                "task": task.to_dict(),
                "estimator": est_config.to_dict(),
                "training": resolved,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "best": {"step": best_step, "objective": None if math.isinf(best_objective) else best_objective},
                "metrics": metrics,
            },
        )

    # --- loop ------------------------------------------------------------------------------
    model.train()
    last_metrics: dict[str, float] = {}
    bar = _Progress(total_steps, start_step, enabled=progress and is_main, log=say)
    t_start = time.perf_counter()
    step = start_step
    first_batch: str | None = None  # fingerprint of this rank's first batch (ranks must differ)
    try:
        while step < total_steps:
            rng = np.random.default_rng(_step_seed(config.seed, rank, step))
            torch.manual_seed(int(rng.integers(2**62)))
            batch = make_batch(task, train_source, rng, local_batch)
            if first_batch is None:
                first_batch = hashlib.sha256(batch.wet.tobytes()).hexdigest()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(lr, config.schedule, step, total_steps)
            loss, terms = objective(batch, compressor=train_compressor, audio=train_audio)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            train_loss = loss.item()
            if not math.isfinite(train_loss):
                raise RuntimeError(f"training diverged at step {step} (loss {train_loss})")
            entry: dict[str, Any] = {"step": step, "loss": train_loss, "time_s": round(time.perf_counter() - t_start, 3)}
            for k, v in terms.items():
                entry[k] = v.mean().item()
            if step % config.val_every == 0 or step == total_steps:
                last_metrics = validate()
                entry.update(last_metrics, **baseline)
                if last_metrics["val_objective"] < best_objective:
                    best_objective, best_step = last_metrics["val_objective"], step
                    checkpoint(step, last_metrics, best_path)
            record(entry)
            if step % config.checkpoint_every == 0 or step == total_steps:
                checkpoint(step, last_metrics, last_path)
            bar.update(step, train_loss, last_metrics.get("val_audio", last_metrics.get("val_objective")))
    finally:
        bar.close()
    if world > 1:
        _write_rank_summary(out, rank, model, first_batch)
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(step, best_step, None if math.isinf(best_objective) else best_objective, last_metrics)


def _write_rank_summary(out: Path, rank: int, model, first_batch: str | None) -> None:
    """Every rank writes the SHA-256 of its final weights (data-parallel ranks must agree) and
    of its first training batch (they must differ: each rank draws its own data)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    summary = {"rank": rank, "weights_sha256": digest.hexdigest(), "first_batch_sha256": first_batch}
    atomic_write_text(out / f"rank-{rank}.json", json.dumps(summary) + "\n")


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
        val_text = "-" if val is None else f"{val:.4f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", val=val_text)
        elif step >= self.next_log or step == self.total:
            self.log(f"step {step}/{self.total}  loss {loss:.4f}  val {val_text}")
            self.next_log = step + max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
