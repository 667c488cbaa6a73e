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
    "fm-deterministic": ("fm", "bins"),  # the binned parameter loss scored highest (its card)
    "master": ("master", "posterior"),
    "master-deterministic": ("master", "deterministic"),
    "mix": ("mix", "posterior"),
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


def _analysed(path: Path) -> torch.Tensor:
    """A file as estimate ranks it: mono (the mid signal), 22050 Hz."""
    audio, rate = read_audio(path)
    return torch.from_numpy(resample(to_mono(audio), rate, 22050, "fast")[0].astype(np.float32))[None, None]


@pytest.mark.parametrize(
    "wet, model, factor",
    [
        # the README's main example: the default model is master; measured 0.0074 against 0.254
        ("master-wet.flac", None, 2),
        # the eq example: measured 0.0116 against 0.0279 (a quiet excerpt: small distances)
        ("eq-wet.flac", "eq", 2),
        # the mix example (delay and reverb, stereo: refined on both channels at once)
        ("mix-wet.flac", "mix", 2),
    ],
)
def test_readme_examples_top_candidate_rebuilds_the_wet_better_than_the_dry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None, wet: str, model: str | None, factor: float
) -> None:
    """The Quick start: the model's best candidate, rendered on the dry with pedalboard, is closer
    to the wet (log-mel, 22050 Hz mono, as ranked) than the dry itself, by ``factor``."""
    wet_path, dry = EXAMPLES / wet, EXAMPLES / "eq-dry.flac"
    args = ["estimate", str(wet_path), "--dry", str(dry), "-o", str(tmp_path), "--json", "--no-progress"]
    assert main([*args, *(["--model", model] if model else [])]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["name"] == (model or "master") and doc["ranked_by"] == "log_mel"
    losses = [c["loss"] for c in doc["candidates"]]
    assert losses == sorted(losses)
    dry_loss = float(LogMelLoss(22050)(_analysed(dry), _analysed(wet_path)))
    assert losses[0] < dry_loss / factor, (losses[0], dry_loss)
