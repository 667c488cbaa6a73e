"""Promises of README.md that no other test pins (issue 25): the quick start's default output
folder, ``train --epochs N`` stopping a run, and the suite collecting under plain ``pytest``
as well as ``python -m pytest``. Expected values are the documented ones, written here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile
import torch

import afxest.examples
from afxest.cli import main
from reference import reference_render  # tests/reference.py

EXAMPLES = Path(afxest.examples.__file__).parent
REPO = Path(__file__).resolve().parents[1]


def test_quick_start_writes_into_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """README.md, Quick start: ``afxest estimate afxest/examples/master-wet.flac --dry
    afxest/examples/eq-dry.flac`` (no -o) writes ``master-wet/estimate.json`` and
    ``master-wet/candidate-1.wav`` in the current folder, with the ``master`` model (the
    default). ``--refine 0`` keeps it short; the output folder does not depend on it."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # no user model shadows the bundled ones
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    wet, dry = EXAMPLES / "master-wet.flac", EXAMPLES / "eq-dry.flac"
    capsys.readouterr()
    assert main(["estimate", str(wet), "--dry", str(dry), "--refine", "0", "--no-progress"]) == 0, capsys.readouterr().err
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == [
        "master-wet", "master-wet/candidate-1.wav", "master-wet/estimate.json"]
    doc = json.loads((work / "master-wet" / "estimate.json").read_text())
    assert doc["model"]["name"] == "master" and doc["task"] == "master"
    assert doc["wet"] == str(wet) and doc["dry"] == str(dry)
    assert doc["candidates"][0]["audio"] == "candidate-1.wav"
    # candidate-1.wav is rank 1's preset applied to the dry file at its own rate and channels
    x, rate = soundfile.read(dry, dtype="float32", always_2d=True)
    y, out_rate = soundfile.read(work / "master-wet" / "candidate-1.wav", dtype="float32", always_2d=True)
    assert out_rate == rate
    expected = reference_render(doc["candidates"][0]["preset"], x.T, rate)
    assert abs(y.T - expected).max() < 1e-5


# docs/training.md, Tasks: the fm task's items per epoch (DAFx 2025, Sec. 5.5)
FM_EPOCH_ITEMS = 100_000


@pytest.mark.parametrize("batch, epochs, steps", [(4, 0.00012, 3), (8, 0.00032, 4)])
def test_train_stops_after_the_epochs_asked(tmp_path: Path, capsys, one_thread: None, batch: int, epochs: float,
                                            steps: int) -> None:
    """README.md, Usage: ``afxest train ... --epochs N`` stops after N epochs of the task's
    items per epoch at the run's batch size: fm, 100 000 items, so 25 000 steps of 4 (0.00012
    epochs: 3 steps) or 12 500 of 8 (0.00032 epochs: 4 steps)."""
    assert epochs * FM_EPOCH_ITEMS / batch == pytest.approx(steps)
    out = tmp_path / "run"
    capsys.readouterr()
    rc = main(["train", "--task", "fm", "--out", str(out), "--epochs", str(epochs), "--batch-size", str(batch),
               "--val-items", "2", "--val-every", "1000", "--checkpoint-every", "1000", "--device", "cpu",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"done: {steps} steps;" in err
    assert torch.load(out / "last.pt", weights_only=True)["step"] == steps


def test_plain_pytest_collects_the_suite() -> None:
    """README.md runs the suite with ``python -m pytest`` (what CI runs, so that one is checked
    by the run itself); the ``pytest`` script must collect it too, though it does not put the
    current folder on sys.path (a ``from tests.reference import ...`` fails there)."""
    script = Path(sys.executable).parent / "pytest"
    assert script.exists(), f"pytest script not installed next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # -n 0: collected in this one process, not by pytest-xdist's workers (pyproject's -n auto)
    result = subprocess.run([str(script), "--collect-only", "-q", "-p", "no:cacheprovider", "-n", "0"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    last = result.stdout.strip().splitlines()[-1]
    assert " tests collected" in last and "error" not in last, result.stdout[-3000:]
