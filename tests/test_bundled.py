"""The bundled models: each loads by name from the installed package with the task and estimator
its card describes, and the default model handles the README's example pair better than the dry
itself does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from afxest import store
from afxest.audio import read_audio, resample, to_mono
from afxest.cli import main
from afxest.losses import LogMelLoss

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "afxest" / "examples"
BUNDLED = {
    "eq": ("eq", "posterior"),
    "eq-deterministic": ("eq", "deterministic"),
    "fm": ("fm", "posterior"),
    "fm-deterministic": ("fm", "deterministic"),
}


@pytest.fixture(autouse=True)
def _no_user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # only bundled models are seen


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_model_loads_by_name_with_its_card(name: str) -> None:
    loaded = store.load_model(name)
    assert loaded.path.parent == store.bundled_models_dir() and loaded.path.name == f"{name}.pt"
    assert (loaded.task.name, loaded.kind) == BUNDLED[name]
    assert (ROOT / "docs" / "models" / f"{name}.md").is_file()
    state = torch.load(loaded.path, weights_only=True)
    assert "optimizer" not in state  # installed with afxest.store.install_model


def test_models_command_lists_the_bundled_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    for name, (task, kind) in BUNDLED.items():
        assert rows[name]["origin"] == "bundled" and (rows[name]["task"], rows[name]["estimator"]) == (task, kind)


def test_readme_example_top_candidate_rebuilds_the_wet_better_than_the_dry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    """The Quick start: the default model's best candidate, rendered on the dry, is closer to the
    wet (log-mel, 22050 Hz mono, as ranked) than the dry itself, by a factor of 2 (measured:
    0.0116 against 0.0279; the excerpt is quiet, so log-mel distances are small)."""
    wet, dry = EXAMPLES / "eq-wet.flac", EXAMPLES / "eq-dry.flac"
    assert main(["estimate", str(wet), "--dry", str(dry), "-o", str(tmp_path), "--json", "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["name"] == "eq" and doc["ranked_by"] == "log_mel"
    losses = [c["loss"] for c in doc["candidates"]]
    assert losses == sorted(losses)

    def analysed(path: Path) -> torch.Tensor:
        audio, rate = read_audio(path)
        return torch.from_numpy(resample(to_mono(audio), rate, 22050, "fast")[0].astype(np.float32))[None, None]

    dry_loss = float(LogMelLoss(22050)(analysed(dry), analysed(wet)))
    assert losses[0] < dry_loss / 2, (losses[0], dry_loss)
