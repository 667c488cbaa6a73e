"""Packaging: every afxest package is listed in pyproject.toml (an unlisted one would be missing
from the wheel), and bundled data files are declared."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "afxest").rglob("__init__.py")
    } | {"afxest.models"}
    assert on_disk == listed
    assert config["package-dir"]["afxest.models"] == "models"


def test_bundled_examples_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["afxest.examples"]
    for path in (ROOT / "afxest" / "examples").iterdir():
        if path.suffix != ".py" and path.name != "__pycache__":
            assert any(path.match(p) for p in patterns), path.name


def test_bundled_models_and_cards_are_shipped() -> None:
    """Every model in models/ is package data (so it loads by name after a non-editable
    install) and has a model card in docs/models/."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["afxest.models"]
    models = sorted((ROOT / "models").glob("*.pt"))
    assert models, "no bundled model"
    for path in models:
        assert any(path.match(p) for p in patterns), path.name
        assert (ROOT / "docs" / "models" / f"{path.stem}.md").is_file(), path.stem
