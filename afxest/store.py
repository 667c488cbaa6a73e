"""The model store: find a trained estimator by name or path, load it, and list what is there.

``--model`` takes either

* a path to a checkpoint written by ``afxest train`` (``run/best.pt``), or a run folder (its
  ``best.pt``); anything ending in ``.pt`` or containing a path separator is a path; or
* a name: ``<name>.pt`` in the user model folder (``platformdirs.user_data_dir("afxest")/models``)
  or among the models bundled with the package (``afxest.models``, the top-level ``models/``
  folder of the source tree). A user model shadows a bundled one of the same name, so an
  updated model can be installed without reinstalling afxest.

Loading goes through :func:`afxest.checkpoints.load_checkpoint` (``weights_only=True``: no code in a
checkpoint is ever run), rebuilds the :class:`~afxest.nn.estimator.Estimator` from the task
name and estimator configuration stored in it, and refuses a checkpoint whose stored task
definition differs from the current one (other ranges, rate, clip length, loss or encoder would
make its outputs mean something else; :func:`afxest.tasks.definition_difference`). The training
defaults stored beside it (learning rate, batch size, weight decay, beta) are not compared: they
do not change what a trained model's outputs mean. A posterior checkpoint may hold its
calibration (key ``calibration``, :mod:`afxest.temper`, written by ``afxest models
--calibrate``): the loaded head then draws at its fitted temperatures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afxest.checkpoints import file_sha256
from afxest.errors import UserError

DEFAULT_MODELS = ("master", "eq")  # the first that exists is the default


@dataclass(frozen=True)
class ModelFile:
    """A model file the store knows of: its name, where it lives, and its origin."""

    name: str
    path: Path
    origin: str  # "user", "bundled" or "path"


@dataclass
class LoadedModel:
    """A loaded, ready-to-run estimator (in eval mode, on the requested device)."""

    name: str
    path: Path
    sha256: str
    task: Any  # afxest.tasks.Task
    estimator: Any  # afxest.nn.estimator.Estimator
    kind: str
    flows: int
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    calibration: Any = None  # :class:`afxest.temper.ModelCalibration`, or None (uncalibrated)


def user_models_dir() -> Path:
    """The user model folder, ``platformdirs.user_data_dir("afxest")/models`` (e.g.
    ``~/.local/share/afxest/models``)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("afxest")) / "models"


def bundled_models_dir() -> Path | None:
    """The folder of the installed ``afxest.models`` package, or None without one."""
    from importlib import resources

    try:
        folder = resources.files("afxest.models")
    except (ModuleNotFoundError, TypeError):
        return None
    path = Path(str(folder))
    return path if path.is_dir() else None


def available_models() -> list[ModelFile]:
    """Every named model: user models first, then bundled ones not shadowed by a user model."""
    found: dict[str, ModelFile] = {}
    for origin, folder in (("user", user_models_dir()), ("bundled", bundled_models_dir())):
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.pt")):
            if path.is_file() and path.stem not in found:
                found[path.stem] = ModelFile(path.stem, path, origin)
    return list(found.values())


def default_model_name() -> str:
    """The default model's name: ``master`` when such a model exists, else ``eq``."""
    names = {m.name for m in available_models()}
    for name in DEFAULT_MODELS:
        if name in names:
            return name
    return DEFAULT_MODELS[-1]


def _looks_like_path(spec: str) -> bool:
    """Whether ``--model spec`` is a path (it ends in ``.pt`` or holds a path separator), not a name."""
    return spec.endswith(".pt") or "/" in spec or os.sep in spec or (os.altsep or "/") in spec


def resolve_model(spec: str | None) -> ModelFile:
    """The model file that ``--model spec`` names (None: the default model)."""
    if spec is None:
        spec = default_model_name()
    if _looks_like_path(spec):
        path = Path(spec)
        if path.is_dir():
            if not (path / "best.pt").is_file():
                raise UserError(f"{path}: folder holds no best.pt (give a checkpoint file or a run folder)")
            path = path / "best.pt"
        if not path.is_file():
            raise UserError(f"{path}: no such model file")
        return ModelFile(str(spec), path, "path")
    for model in available_models():
        if model.name == spec:
            return model
    names = [m.name for m in available_models()]
    if names:
        raise UserError(f"unknown model {spec!r} (available: {', '.join(names)}; or give a checkpoint path)")
    raise UserError(
        f"unknown model {spec!r}: no models are installed (none bundled yet, none in {user_models_dir()}); "
        f"give a checkpoint path such as run/best.pt, or copy one to {user_models_dir()}/{spec}.pt"
    )


def load_model(spec: str | None, device: Any = "cpu") -> LoadedModel:
    """Resolves ``spec`` (:func:`resolve_model`) and loads it (:func:`load_model_file`): one-line
    UserErrors for unknown names and bad files."""
    model_file = resolve_model(spec)
    return load_model_file(model_file, device)


def load_model_file(model_file: ModelFile, device: Any = "cpu") -> LoadedModel:
    """Loads a checkpoint, checks it against the current task definition and builds its estimator."""
    from afxest.checkpoints import load_checkpoint

    path = model_file.path
    state = load_checkpoint(path, map_location="cpu")
    info = describe_checkpoint(state, path)
    estimator, config = build_estimator(state, info, path)
    calibration = read_calibration(state, info, config, path)
    if calibration is not None:
        from afxest.temper import apply

        apply(estimator.head, calibration.temperature)
    estimator.eval().to(device)
    return LoadedModel(
        name=model_file.name,
        path=path,
        sha256=file_sha256(path),
        task=info["task_obj"],
        estimator=estimator,
        kind=config.kind,
        flows=config.flows,
        step=info["step"],
        metrics=info["metrics"],
        calibration=calibration,
    )


def read_calibration(state: dict[str, Any], info: dict[str, Any], config, path: Path):
    """The checkpoint's calibration (:func:`afxest.temper.read`), None without one; UserError
    when a model that is not a posterior has one or it does not fit the model."""
    from afxest.calibration import quantity_ranges
    from afxest.temper import read

    if state.get("calibration") is not None and config.kind != "posterior":
        raise UserError(f"{path}: a {config.kind} model with a calibration (only posteriors have one)")
    task = info["task_obj"]
    return read(state, task.model.dim, len(quantity_ranges(task)), path)


def describe_checkpoint(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The task, estimator and metrics of a loaded checkpoint; UserError if incompatible."""
    from afxest.tasks import TASKS, definition_difference

    stored = state.get("task")
    est = state.get("estimator")
    if not isinstance(stored, dict) or not isinstance(est, dict) or "model" not in state:
        raise UserError(f"{path}: incompatible model (no task definition, estimator or weights in the checkpoint)")
    name = stored.get("name")
    if name not in TASKS:
        raise UserError(f"{path}: incompatible model (task {name!r} is unknown to this afxest: {', '.join(TASKS)})")
    task = TASKS[name]
    key = definition_difference(stored, task)
    if key is not None:
        raise UserError(
            f"{path}: incompatible model: it was trained for a different {name!r} task definition "
            f"({key!r} differs from this afxest's; retrain or use a matching afxest version)"
        )
    metrics = state.get("metrics") if isinstance(state.get("metrics"), dict) else {}
    step = state.get("step")
    return {
        "task_obj": task,
        "task": name,
        "estimator": est,
        "step": int(step) if isinstance(step, int) else None,
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
    }


def build_estimator(state: dict[str, Any], info: dict[str, Any], path: Path):
    """The checkpoint's estimator with its weights loaded, and its configuration; UserError if
    the weights do not fit the stored estimator configuration. ``info``: :func:`describe_checkpoint`."""
    from afxest.nn.estimator import Estimator, EstimatorConfig

    try:
        config = EstimatorConfig(**state["estimator"])
        estimator = Estimator(info["task_obj"], config)
        estimator.load_state_dict(state["model"])
    except Exception as err:  # noqa: BLE001 - any mismatch means the file is not for this version
        raise UserError(
            f"{path}: incompatible model (its weights do not fit this afxest's "
            f"{info['estimator'].get('kind')!s} estimator: {err.__class__.__name__})"
        ) from None
    return estimator, config


INSTALLED_KEYS = ("format", "afxest_version", "task", "estimator", "training", "model", "step", "best", "metrics",
                  "calibration")


def install_model(checkpoint: Path, name: str, folder: Path | None = None, force: bool = False) -> Path:
    """Copies a trained checkpoint into a model folder as ``<name>.pt`` so ``--model name`` finds it.

    The copy keeps what estimation and ``afxest models`` need (task definition, estimator,
    weights, training configuration, step, validation metrics and calibration) and drops the optimiser state
    (two thirds of a checkpoint's size). ``folder`` defaults to the user model folder; the
    bundled models in ``models/`` were installed with this function. Written atomically.
    """
    import torch

    from afxest.audio import atomic_output
    from afxest.checkpoints import load_checkpoint

    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise UserError(f"{name!r}: a model name is letters, digits, '-', '_' and '.' (not first)")
    state = load_checkpoint(Path(checkpoint))
    # refuses checkpoints this afxest cannot run: another task definition, or weights that do
    # not fit the stored estimator
    build_estimator(state, describe_checkpoint(state, Path(checkpoint)), Path(checkpoint))
    folder = user_models_dir() if folder is None else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{name}.pt"
    if dest.exists() and not force:
        raise UserError(f"{dest}: already exists (use --force to replace it)")
    if dest.exists() and os.path.samefile(dest, checkpoint):
        raise UserError(f"{dest}: is the checkpoint being installed")
    with atomic_output(dest) as fh:
        torch.save({k: state[k] for k in INSTALLED_KEYS if k in state}, fh)
    return dest


def list_models() -> list[dict[str, Any]]:
    """One row per available model, for ``afxest models``; unreadable files get an ``error``."""
    from afxest.checkpoints import load_checkpoint

    rows = []
    for model in available_models():
        row: dict[str, Any] = {
            "name": model.name,
            "origin": model.origin,
            "path": str(model.path),
            "size_bytes": model.path.stat().st_size,
        }
        try:
            state = load_checkpoint(model.path)
            info = describe_checkpoint(state, model.path)
        except UserError as err:
            row["error"] = str(err)
        else:
            est = info["estimator"]
            row.update(
                task=info["task"],
                estimator=est.get("kind"),
                flows=est.get("flows"),
                step=info["step"],
                metrics=info["metrics"],
                calibrated=state.get("calibration") is not None,
            )
        rows.append(row)
    return rows
