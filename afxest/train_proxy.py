"""Training the compressor proxy: ``afxest train-proxy`` as a library function, in steps.

The proxy (:class:`afxest.nn.proxy.CompressorProxy`, after ICASSP 2024) learns pedalboard's
``Compressor`` on music passed through the part of a task's chain before its compressor
(:func:`afxest.nn.proxy.make_proxy_batch`), so that its input is distributed as in training,
with compressor settings uniform in the task's normalised ranges. Loss: :func:`proxy_loss`;
AdamW without weight decay. The run folder, resuming and the loop are those of
:mod:`afxest.runs`, as for ``afxest train``; step s draws from a generator seeded by (seed, s).
See docs/master.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from afxest import __version__
from afxest.checkpoints import load_checkpoint
from afxest.data import DrySource
from afxest.device import resolve_device
from afxest.errors import TrainingDiverged, UserError
from afxest.losses import LogMelLoss
from afxest.nn.proxy import (
    PROXY_FORMAT, CompressorProxy, ProxyBatch, ProxyConfig, compressor_ranges, make_proxy_batch,
)
from afxest.runs import (
    PROCEDURAL, Best, Cadence, RunFolder, RunOptions, check_same_run, music_folders, restore, run_loop, step_generator,
)
from afxest.tasks import Task, get_task

# what --resume must find unchanged
RESUME_KEYS = ("task", "data", "batch_size", "segment_seconds", "lr", "channels", "kernel_size", "blocks",
               "dilation_growth", "seed", "val_items")


@dataclass(kw_only=True)
class ProxyTrainConfig(RunOptions):
    """Everything ``afxest train-proxy`` takes: the run's options (:class:`afxest.runs.RunOptions`)
    and the proxy's."""

    task: str = "master"
    max_steps: int = 2000
    batch_size: int = 16
    segment_seconds: float = 1.0
    lr: float = 1e-3
    channels: int = ProxyConfig.channels
    kernel_size: int = ProxyConfig.kernel_size
    blocks: int = ProxyConfig.blocks
    dilation_growth: int = ProxyConfig.dilation_growth
    val_items: int = 64
    val_every: int = 100

    def proxy_config(self) -> ProxyConfig:
        """The proxy's size these options ask for."""
        return ProxyConfig(self.channels, self.kernel_size, self.blocks, self.dilation_growth)


def proxy_loss(y_hat: Tensor, y: Tensor, mel_loss: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """The training loss per item: L1 relative to the target's mean magnitude + the log-mel loss
    (DAFx 2025, Eq. 16, the estimator's own training loss), (batch,)."""
    l1 = (y_hat - y).abs().mean(dim=(1, 2)) / (y.abs().mean(dim=(1, 2)) + 1e-8)
    return l1 + mel_loss(y_hat, y)


def snr_db(y_hat: Tensor, y: Tensor) -> Tensor:
    """The SNR 10 log10(||y||^2 / ||y - y_hat||^2) per item, (batch,); inf where they are equal.

    Example:
        >>> y = torch.ones(1, 1, 4)
        >>> snr_db(0.9 * y, y), snr_db(y, y)
        (tensor([20.0000], dtype=torch.float64), tensor([inf], dtype=torch.float64))
    """
    err = (y.double() - y_hat.double()).square().sum(dim=(1, 2))
    return 10 * torch.log10(y.double().square().sum(dim=(1, 2)) / err)


def resolve(config: ProxyTrainConfig) -> tuple[Task, dict[str, tuple[float, float, str]], int]:
    """The task, its compressor's ranges and the excerpt length in samples; one-line
    UserErrors for a task without a compressor or with a synth, and for sizes out of range."""
    task = get_task(config.task)
    ranges = compressor_ranges(task)
    if task.has_source:
        raise UserError(f"task {task.name!r} has a synth source: no dry audio to compress")
    for name in ("max_steps", "batch_size", "val_items", "val_every", "checkpoint_every", "channels", "blocks"):
        if getattr(config, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if config.kernel_size < 2 or config.dilation_growth < 1:
        raise UserError("--kernel-size must be at least 2 and --dilation-growth at least 1")
    if not config.lr > 0:
        raise UserError("--lr must be positive")
    frames = int(round(config.segment_seconds * task.sample_rate))
    if frames < 1024:
        raise UserError(f"--segment-seconds {config.segment_seconds:g} is too short (at least {1024 / task.sample_rate:.3f} s)")
    return task, ranges, frames


def data_sources(config: ProxyTrainConfig, task: Task, log: Callable[[str], None]) -> tuple[DrySource, DrySource]:
    """The dry audio of training and validation: the train and val splits of ``--data``
    (tracks of at least one excerpt), procedural audio without it."""
    if config.data is None:
        log(PROCEDURAL)
        source = DrySource(None, task.sample_rate)
        return source, source
    folders = music_folders(config.data, task.sample_rate, config.segment_seconds,
                            lambda split, _: f"{config.data}: no usable {split} tracks of at least {config.segment_seconds:g} s")
    log(f"data: {config.data}: {len(folders['train'].tracks)} train tracks, {len(folders['val'].tracks)} val tracks")
    return DrySource(folders["train"], task.sample_rate), DrySource(folders["val"], task.sample_rate)


def resume(folder: RunFolder, proxy: CompressorProxy, optimizer: Any, resolved: dict[str, Any], device: Any) -> tuple[int, Best]:
    """Continues the run in ``folder`` (``--resume``) from its ``last.pt``; returns its step and
    best validation loss. One-line UserErrors for an unreadable file or another kind of
    checkpoint (:func:`afxest.checkpoints.load_checkpoint`) and for a setting that would not
    continue the same run (:data:`RESUME_KEYS`)."""
    state = load_checkpoint(folder.last, device, PROXY_FORMAT, "proxy checkpoint")
    check_same_run(folder.last, state["training"], resolved, RESUME_KEYS)
    return restore(state, proxy, optimizer, "loss")


def proxy_tensors(batch: ProxyBatch, device: Any) -> tuple[Tensor, Tensor, list[Tensor]]:
    """A batch as tensors on ``device``: x, y (batch, 1, frames) and the four compressor
    parameters, each (batch,) in float32."""
    p = torch.from_numpy(batch.params).to(device=device, dtype=torch.float32)
    return torch.from_numpy(batch.x).to(device), torch.from_numpy(batch.y).to(device), list(p.unbind(dim=1))


def validate(proxy: CompressorProxy, batches: list[ProxyBatch], mel: LogMelLoss, device: Any, identity: bool = False) -> dict[str, float]:
    """The mean loss, median SNR (dB) and mean log-mel distance over the validation items, of
    the proxy or (``identity``) of the input taken as the output."""
    proxy.eval()
    loss, snr, log_mel = [], [], []
    with torch.no_grad():
        for batch in batches:
            x, y, p = proxy_tensors(batch, device)
            y_hat = x if identity else proxy(x, *p)
            loss.append(proxy_loss(y_hat, y, mel).item())
            snr.append(snr_db(y_hat, y).item())
            log_mel.append(mel(y_hat, y).item())
    proxy.train()
    return {"val_loss": float(np.mean(loss)), "val_snr_db": float(np.median(snr)), "val_log_mel": float(np.mean(log_mel))}


@dataclass
class ProxyRun:
    """A proxy's training run as :func:`afxest.runs.run_loop` drives it."""

    config: ProxyTrainConfig
    task: Task
    frames: int
    proxy: CompressorProxy
    optimizer: Any
    mel: LogMelLoss
    device: Any
    source: DrySource
    val_batches: list[ProxyBatch]
    resolved: dict[str, Any]

    def step(self, step: int) -> tuple[float, dict[str, float]]:
        """Optimiser step ``step`` (0-based); RuntimeError if the loss is not finite."""
        rng = step_generator(self.config.seed, step)
        batch = make_proxy_batch(self.task, self.source, rng, self.config.batch_size, self.frames)
        x, y, p = proxy_tensors(batch, self.device)
        loss = proxy_loss(self.proxy(x, *p), y, self.mel).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(
                f"proxy training diverged at step {step + 1} (loss {loss.item()}); {self.config.out}/last.pt keeps "
                "the last checkpoint"
            )
        return loss.item(), {}

    def validate(self) -> dict[str, float]:
        """The validation figures (:func:`validate`) of the proxy."""
        return validate(self.proxy, self.val_batches, self.mel, self.device)

    def payload(self, step: int, metrics: dict[str, float], best: Best) -> dict[str, Any]:
        """An ``afxest-proxy/1`` checkpoint (what :func:`afxest.nn.proxy.load_proxy` reads)."""
        return {
            "format": PROXY_FORMAT, "afxest_version": __version__, "config": self.proxy.config.to_dict(),
            "ranges": {k: list(v) for k, v in self.proxy.ranges.items()}, "sample_rate": self.task.sample_rate,
            "training": self.resolved, "model": self.proxy.state_dict(), "optimizer": self.optimizer.state_dict(),
            "step": step, "best": best.stored("loss"), "metrics": metrics,
        }


def train_proxy(
    config: ProxyTrainConfig, log: Callable[[str], None] = print, after_step: Callable[[int], None] | None = None
) -> dict[str, float]:
    """Trains (or resumes) a compressor proxy: ``last.pt``, ``best.pt`` (lowest validation
    loss), ``metrics.jsonl`` and ``config.json`` in ``config.out``, as ``afxest train`` writes
    them.

    Arguments:
        config: The options of ``afxest train-proxy``.
        log: Where messages go.
        after_step: Called with each step once it is recorded and checkpointed
            (:func:`afxest.runs.run_loop`).

    Returns:
        The last validation figures (``val_loss``, ``val_snr_db``, ``val_log_mel``).
    """
    task, ranges, frames = resolve(config)
    folder = RunFolder(Path(config.out), config.resume)
    device = resolve_device(config.device)
    train_source, val_source = data_sources(config, task, log)
    resolved = {**config.to_dict(), "frames": frames, "task_definition": task.to_dict(), "afxest_version": __version__}
    torch.manual_seed(config.seed)
    proxy = CompressorProxy(config.proxy_config(), ranges).to(device)
    optimizer = torch.optim.AdamW(proxy.parameters(), lr=config.lr, weight_decay=0.0)
    mel = LogMelLoss(task.sample_rate).to(device)
    start, best = 0, Best()
    if config.resume:
        start, best = resume(folder, proxy, optimizer, resolved, device)
        log(f"resuming {folder.out} from step {start}")
    folder.prepare()
    folder.write_config(resolved)
    val = [make_proxy_batch(task, val_source, np.random.default_rng([config.seed, 1_000_003, i]), 1, frames)
           for i in range(config.val_items)]
    folder.cut_metrics(start)
    identity = {f"{k}_identity": v for k, v in validate(proxy, val, mel, device, identity=True).items()}
    receptive = proxy.config.receptive_field
    log(f"validation, the input as output: loss {identity['val_loss_identity']:.4f}, median SNR "
        f"{identity['val_snr_db_identity']:.2f} dB, log-mel {identity['val_log_mel_identity']:.2e}; "
        f"receptive field {receptive} samples ({receptive / task.sample_rate:.2f} s)")
    run = ProxyRun(config, task, frames, proxy, optimizer, mel, device, train_source, val, resolved)

    def report(step: int, loss: float, last: dict[str, float], validated: bool) -> None:
        if validated:
            log(f"step {step}/{config.max_steps}  loss {loss:.4f}  val loss {last['val_loss']:.4f}  "
                f"median SNR {last['val_snr_db']:.2f} dB  log-mel {last['val_log_mel']:.2e}")

    proxy.train()
    _, last = run_loop(run, folder, Cadence(config.max_steps, config.val_every, config.checkpoint_every), start, best,
                       select="val_loss", constants=identity, report=report, after_step=after_step)
    return last
