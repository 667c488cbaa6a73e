"""The torch device of a command (``--device auto|cpu|cuda``), for training and inference alike."""

from __future__ import annotations

import os
from typing import Any

from afxest.choices import DEVICES
from afxest.errors import UserError


def resolve_device(name: str) -> Any:
    """The ``torch.device`` that ``--device name`` (a name of :data:`afxest.choices.DEVICES`)
    asks for: ``auto`` is CUDA when available, else the CPU; one-line UserErrors for an unknown
    name and for CUDA without a device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if name not in DEVICES:
        raise UserError(f"unknown device {name!r} ({', '.join(DEVICES[:-1])} or {DEVICES[-1]})")
    return torch.device(name)


def cpu_workers() -> int:
    """The threads a CPU stage may spread independent work over (candidates refined, plugin
    chains rendered): OMP_NUM_THREADS when set (a user's or a benchmark's limit on the cores
    this process takes), else every core it may run on."""
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if limit.strip().isdigit() and int(limit) > 0:
        return int(limit)
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, len(cores))
