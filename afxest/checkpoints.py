"""Checkpoints and run folders, shared by ``afxest train``, ``afxest train-proxy`` and the model
store (which loads what they wrote): the file format, atomic saving, loading with
``weights_only=True`` (no code in a checkpoint is ever run), and the rules of a run folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from afxest.errors import UserError

CHECKPOINT_FORMAT = "afxest-checkpoint/1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save, atomically (:func:`afxest.audio.atomic_output`)."""
    import torch

    from afxest.audio import atomic_output

    with atomic_output(path) as fh:
        torch.save(payload, fh)


def load_checkpoint(
    path: Path, map_location: Any = "cpu", fmt: str = CHECKPOINT_FORMAT, kind: str = "checkpoint", hint: str = ""
) -> dict[str, Any]:
    """Load a checkpoint of format ``fmt`` with ``weights_only=True``; one-line errors for bad
    files, naming it a ``kind`` (``hint`` ends the wrong-format message)."""
    import torch

    if not Path(path).is_file():
        raise UserError(f"{path}: no such {kind}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise UserError(f"{path}: not an afxest {kind} ({err.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise UserError(f"{path}: not an afxest {kind} (format {fmt} expected{hint})")
    return payload


def check_run_folder(out: Path, resume: bool) -> tuple[Path, Path]:
    """Check a run folder for a new run or a resumed one; returns (last.pt, best.pt) paths.

    A new run needs a new or empty folder (one holding only config.json / metrics.jsonl is a
    run that never checkpointed and may start again); ``resume`` needs its last.pt."""
    from afxest.audio import check_out_dir

    last_path, best_path = out / "last.pt", out / "best.pt"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; --out needs a folder")
    check_out_dir(out)  # a missing folder is created, with its parents
    if resume:
        if not last_path.exists():
            raise UserError(f"{out}: nothing to resume (no last.pt)")
    elif last_path.exists() or (out.exists() and {p.name for p in out.iterdir()} - {"config.json", "metrics.jsonl"}):
        raise UserError(f"{out}: already holds a run; use --resume to continue it or another --out")
    return last_path, best_path


def step_of(line: str) -> float:
    """The step of a metrics.jsonl line; a torn last line (killed mid-write) counts as after all."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf
