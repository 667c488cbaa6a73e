"""Helpers of the processors whose recursions run as compiled loops (numba) on the CPU: the
compressor, the delay and the reverb.

Each loop works on rows (rows, time), one row a channel of one item, and releases the GIL, so
:func:`run_rows` runs slices of rows in plain Python threads. numba itself is imported by each
module's kernels on first use, never here.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import torch

SAMPLES_PER_THREAD = 1 << 16


def cpu(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``t`` detached, contiguous, on the CPU (in ``dtype`` when given): what a loop reads."""
    return t.detach().to(device="cpu", dtype=dtype).contiguous()


def as_param(p: torch.Tensor | float, batch: int, like: torch.Tensor, name: str) -> torch.Tensor:
    """``p`` as a floating tensor shaped (batch,) on ``like``'s device (a float or a 0-d tensor
    repeated); ValueError, naming ``name``, for another shape."""
    if isinstance(p, torch.Tensor):
        t = p.to(device=like.device)
        if not t.is_floating_point():
            t = t.to(like.dtype)
    else:
        t = torch.tensor(float(p), dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(
            f"{name} must be a float or a tensor shaped ({batch},), got {tuple(t.shape)}"
        )
    return t


def run_rows(kernel: Callable[..., None], arrays: list[Any]) -> None:
    """Runs a row-independent kernel over slices of rows, one slice per torch CPU thread.

    Every array's first axis is the row. Threads are started per call (about 0.1 ms, against
    tens of ms of work): nothing survives a fork, and no second OpenMP runtime competes with
    torch's.
    """
    rows = arrays[0].shape[0]
    n = arrays[0].shape[-1]
    workers = min(torch.get_num_threads(), rows, -(-rows * n // SAMPLES_PER_THREAD))
    if workers <= 1:
        kernel(*arrays)
        return
    bounds = [rows * k // workers for k in range(workers + 1)]
    errors: list[BaseException] = []

    def work(lo: int, hi: int) -> None:
        try:
            kernel(*[a[lo:hi] for a in arrays])
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(lo, hi), daemon=True)
        for lo, hi in zip(bounds[1:-1], bounds[2:])
    ]
    for th in threads:
        th.start()
    work(bounds[0], bounds[1])
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
