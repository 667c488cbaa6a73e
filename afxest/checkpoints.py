"""Checkpoint files: written by ``afxest train`` and ``afxest train-proxy``, read by them on
``--resume`` and by the model store (:mod:`afxest.store`). The file format, atomic saving,
loading with ``weights_only=True`` (no code in a checkpoint is ever run) and a file's SHA-256.
Training and inference both import this module; it imports neither.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from afxest.errors import UserError

CHECKPOINT_FORMAT = "afxest-checkpoint/1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Saves ``payload`` with ``torch.save``, atomically (:func:`afxest.audio.atomic_output`)."""
    import torch

    from afxest.audio import atomic_output

    with atomic_output(path) as fh:
        torch.save(payload, fh)


def load_checkpoint(
    path: Path, map_location: Any = "cpu", fmt: str = CHECKPOINT_FORMAT, kind: str = "checkpoint", hint: str = ""
) -> dict[str, Any]:
    """Loads a checkpoint of format ``fmt`` with ``weights_only=True``; one-line errors for bad
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


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, in hex (a model's identity in estimates; a run's ``--init`` and
    ``--proxy-model`` in its ``config.json``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
