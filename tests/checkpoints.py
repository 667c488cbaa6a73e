"""A real, tiny checkpoint for tests that need a model file: one training step of a task."""

from __future__ import annotations

from pathlib import Path

from afxest.train import TrainConfig, train


def one_step_checkpoint(folder: Path, task: str, estimator: str = "posterior") -> Path:
    """Train ``estimator`` on ``task`` for one step (batch 2) into ``folder``; its last.pt."""
    train(
        TrainConfig(task=task, estimator=estimator, max_steps=1, batch_size=2, val_items=2, val_every=1,
                    checkpoint_every=1, out=str(folder), device="cpu"),
        log=lambda _m: None,
    )
    return folder / "last.pt"
