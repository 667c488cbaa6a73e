"""A real, tiny checkpoint for tests that need a model file: one training step of a task."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from afxest.train import TrainConfig, train


@functools.cache
def _trained_runs() -> Path:
    """The folder of this test session's one-step runs, untouched (removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="afxest-test-checkpoints-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def one_step_checkpoint(folder: Path, task: str, estimator: str = "posterior") -> Path:
    """Train ``estimator`` on ``task`` for one step (batch 2) into ``folder``; its last.pt.

    Trained once per test session for each (task, estimator) (an eq step costs about 3 s of
    CPU); later calls get a copy of that run folder, the seeded run a new one would write."""
    trained = _trained_runs() / f"{task}-{estimator}"
    if not trained.exists():
        train(
            TrainConfig(task=task, estimator=estimator, max_steps=1, batch_size=2, val_items=2, val_every=1,
                        checkpoint_every=1, out=str(trained), device="cpu"),
            log=lambda _m: None,
        )
    shutil.copytree(trained, folder, dirs_exist_ok=True)
    return Path(folder) / "last.pt"
