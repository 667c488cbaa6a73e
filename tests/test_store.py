"""The model store: names and paths, user and bundled folders, loading with checks, and
``afxest models``, on a tiny real checkpoint trained once for the module."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from afxest import store
from afxest.cli import main
from afxest.errors import UserError
from afxest.nn.estimator import Estimator, EstimatorConfig
from afxest.tasks import TASKS
from afxest.train import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    run = tmp_path_factory.mktemp("run") / "fm"
    train(
        TrainConfig(task="fm", out=str(run), max_steps=1, batch_size=2, val_items=2, val_every=1, checkpoint_every=1),
        log=lambda _m: None,
    )
    return run / "best.pt"


@pytest.fixture(autouse=True)
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty user data folder (XDG_DATA_HOME) and an empty bundled folder."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    monkeypatch.setattr(store, "bundled_models_dir", lambda: bundled)
    user = tmp_path / "xdg" / "afxest" / "models"
    return user, bundled


def install(source: Path, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.pt"
    target.write_bytes(source.read_bytes())
    return target


def test_user_models_folder_follows_platformdirs(folders: tuple[Path, Path]) -> None:
    assert store.user_models_dir() == folders[0]


def test_bundled_folder_is_the_installed_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real afxest.models
    import afxest.models

    assert store.bundled_models_dir() == Path(afxest.models.__file__).parent


def test_load_by_path_and_run_folder(checkpoint: Path) -> None:
    model = store.load_model(str(checkpoint))
    assert model.path == checkpoint and model.task is TASKS["fm"] and model.kind == "posterior"
    assert model.sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert model.step == 1 and "val_audio" in model.metrics
    assert not model.estimator.training  # eval mode
    # the weights are the checkpoint's: same outputs as an estimator built here from the file
    state = torch.load(checkpoint, weights_only=True)
    reference = Estimator(TASKS["fm"], EstimatorConfig(**state["estimator"]))
    reference.load_state_dict(state["model"])
    reference.eval()
    x = torch.randn(2, 1, TASKS["fm"].clip_samples)
    with torch.no_grad():
        assert torch.equal(model.estimator.encoder(x), reference.encoder(x))
    assert store.load_model(str(checkpoint.parent)).path == checkpoint  # a run folder: its best.pt


def test_names_resolve_in_user_then_bundled_folders(checkpoint: Path, folders: tuple[Path, Path]) -> None:
    user, bundled = folders
    install(checkpoint, bundled, "eq")
    shipped = install(checkpoint, bundled, "fm")
    mine = install(checkpoint, user, "fm")
    assert store.resolve_model("fm").path == mine  # a user model shadows a bundled one
    assert store.resolve_model("eq") == store.ModelFile("eq", bundled / "eq.pt", "bundled")
    assert [(m.name, m.origin) for m in store.available_models()] == [("fm", "user"), ("eq", "bundled")]
    assert store.load_model("fm").path == mine
    mine.unlink()  # without the user's model, the bundled one of that name is found again
    assert store.resolve_model("fm") == store.ModelFile("fm", shipped, "bundled")
    assert store.load_model("fm").path == shipped


def test_default_is_master_when_present_else_eq(checkpoint: Path, folders: tuple[Path, Path]) -> None:
    user, _ = folders
    assert store.default_model_name() == "eq"
    install(checkpoint, user, "master")
    assert store.default_model_name() == "master"
    assert store.resolve_model(None).name == "master"


def test_unknown_names_list_what_is_available(checkpoint: Path, folders: tuple[Path, Path]) -> None:
    with pytest.raises(UserError, match="no models are installed") as err:
        store.resolve_model("eq")
    assert "\n" not in str(err.value)
    install(checkpoint, folders[0], "mine")
    with pytest.raises(UserError, match=r"unknown model 'eq' \(available: mine"):
        store.resolve_model("eq")
    with pytest.raises(UserError, match="no such model file"):
        store.resolve_model("missing/best.pt")


def test_bad_files_are_refused_in_one_line(checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    cases = {}
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    cases["garbage.pt"] = "not an afxest checkpoint"
    torch.save({"format": "something-else"}, tmp_path / "other-format.pt")
    cases["other-format.pt"] = "not an afxest checkpoint"

    marker = tmp_path / "code-ran"

    class Evil:
        def __reduce__(self):  # creates `marker` if unpickled without weights_only
            return (Path.touch, (marker,))

    torch.save({"format": "afxest-checkpoint/1", "x": Evil()}, tmp_path / "code.pt")  # a real zip checkpoint
    cases["code.pt"] = "not an afxest checkpoint"
    changed = {**state, "task": {**state["task"], "sample_rate": 48000}}
    torch.save(changed, tmp_path / "changed-task.pt")
    cases["changed-task.pt"] = "incompatible model: it was trained for a different 'fm' task definition ('sample_rate'"
    unknown = {**state, "task": {**state["task"], "name": "reverb"}}
    torch.save(unknown, tmp_path / "unknown-task.pt")
    cases["unknown-task.pt"] = "task 'reverb' is unknown"
    wrong_head = {**state, "estimator": {**state["estimator"], "flows": 3}}
    torch.save(wrong_head, tmp_path / "wrong-weights.pt")
    cases["wrong-weights.pt"] = "incompatible model (its weights do not fit"
    no_weights = {k: v for k, v in state.items() if k != "model"}
    torch.save(no_weights, tmp_path / "no-weights.pt")
    cases["no-weights.pt"] = "incompatible model"
    for name, message in cases.items():
        with pytest.raises(UserError) as err:
            store.load_model(str(tmp_path / name))
        assert message in str(err.value) and "\n" not in str(err.value), name
    assert not marker.exists()  # loading never ran the pickled code


def test_training_hyperparameters_do_not_make_a_model_incompatible(checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "task": {**state["task"], "lr": 1.0, "batch_size": 3}}, tmp_path / "m.pt")
    assert store.load_model(str(tmp_path / "m.pt")).task is TASKS["fm"]


def test_models_command(checkpoint: Path, folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    user, bundled = folders
    assert main(["models"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no models installed" in captured.err
    install(checkpoint, user, "fm-small")
    (bundled / "broken.pt").write_bytes(b"junk")
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["user_dir"] == str(user) and listing["bundled_dir"] == str(bundled)
    rows = {r["name"]: r for r in listing["models"]}
    assert rows["fm-small"]["task"] == "fm" and rows["fm-small"]["estimator"] == "posterior"
    assert rows["fm-small"]["size_bytes"] == checkpoint.stat().st_size and rows["fm-small"]["step"] == 1
    assert set(rows["fm-small"]["metrics"]) >= {"val_audio", "val_entropy_bits"}
    assert rows["broken"]["origin"] == "bundled" and "not an afxest checkpoint" in rows["broken"]["error"]
    assert main(["models"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "fm-small" in captured.err and "unreadable" in captured.err


def test_models_install_keeps_the_model_and_drops_the_optimiser(
    checkpoint: Path, folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user, _ = folders
    assert main(["models", "--install", str(checkpoint), "--name", "mine"]) == 0
    installed = torch.load(user / "mine.pt", weights_only=True)
    original = torch.load(checkpoint, weights_only=True)
    assert "optimizer" in original and "optimizer" not in installed
    assert installed["task"] == original["task"] and installed["estimator"] == original["estimator"]
    for key, value in original["model"].items():
        assert torch.equal(installed["model"][key], value), key
    assert (user / "mine.pt").stat().st_size < checkpoint.stat().st_size
    assert store.load_model("mine").task is TASKS["fm"]
    assert [p.name for p in user.iterdir()] == ["mine.pt"]  # no temporary file left
    capsys.readouterr()
    # refusals: an existing name without --force, a bad name, a missing or foreign file, a lone option
    for args, message in [
        (["--install", str(checkpoint), "--name", "mine"], "already exists"),
        (["--install", str(checkpoint), "--name", "../x"], "a model name is"),
        (["--install", str(tmp_path / "none.pt"), "--name", "x"], "no such checkpoint"),
        (["--install", str(checkpoint)], "go together"),
    ]:
        assert main(["models", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["models", "--install", str(checkpoint), "--name", "mine", "--force"]) == 0


def test_models_install_refuses_checkpoints_this_afxest_cannot_run(
    checkpoint: Path, folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/estimate.md: ``--install`` checks that this afxest can run the checkpoint. A foreign
    file, a checkpoint of another task definition, of an unknown task, or whose weights do not
    fit its estimator: exit 2, one line saying why, and nothing installed (an existing model of
    that name kept as it was)."""
    user, _ = folders
    state = torch.load(checkpoint, weights_only=True)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    torch.save({"format": "something-else"}, tmp_path / "foreign.pt")
    torch.save({**state, "task": {**state["task"], "sample_rate": 48000}}, tmp_path / "changed-task.pt")
    torch.save({**state, "task": {**state["task"], "name": "reverb"}}, tmp_path / "unknown-task.pt")
    torch.save({**state, "estimator": {**state["estimator"], "flows": 3}}, tmp_path / "wrong-weights.pt")
    torch.save({k: v for k, v in state.items() if k != "model"}, tmp_path / "no-weights.pt")
    cases = {
        "garbage.pt": "not an afxest checkpoint",
        "foreign.pt": "not an afxest checkpoint",
        "changed-task.pt": "incompatible model: it was trained for a different 'fm' task definition ('sample_rate'",
        "unknown-task.pt": "task 'reverb' is unknown",
        "wrong-weights.pt": "incompatible model (its weights do not fit",
        "no-weights.pt": "incompatible model",
    }
    for name, message in cases.items():
        capsys.readouterr()
        assert main(["models", "--install", str(tmp_path / name), "--name", "new"]) == 2, name
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)
    assert not user.exists() or list(user.iterdir()) == []
    # the same refusal leaves an installed model of that name untouched, --force or not
    assert main(["models", "--install", str(checkpoint), "--name", "new"]) == 0
    before = (user / "new.pt").read_bytes()
    for name in cases:
        assert main(["models", "--install", str(tmp_path / name), "--name", "new", "--force"]) == 2, name
    assert (user / "new.pt").read_bytes() == before and [p.name for p in user.iterdir()] == ["new.pt"]
