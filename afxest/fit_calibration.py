"""Fitting a posterior model's calibration (:mod:`afxest.temper`) on its validation split:
``afxest models --calibrate``. The method is :mod:`afxest.temper`'s docstring; the items are
drawn as ``afxest evaluate`` draws its test items (:func:`afxest.evaluate.draw_item`), from the
validation split and another seed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from afxest import calibration as cal
from afxest.errors import UserError
from afxest.temper import ModelCalibration, apply, interval_levels

__all__ = ["FIT_SEED_OFFSET", "GRID", "fit"]

#: The validation items come from seed + 1 (a synth task has no split of its sources: its
#: validation items must differ from the test's by their seed).
FIT_SEED_OFFSET = 1
#: The global temperatures tried first.
GRID = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)
#: The per-parameter refinement steps.
STEPS = 6
#: The bounds of a fitted temperature.
T_MIN, T_MAX = 0.25, 50.0


@dataclass
class _Items:
    """Validation items cached for the fit: embeddings (1, C) each, truths (d,), draw seeds."""

    h: list
    truth: list
    seeds: list


def _validation_items(loaded, data: Path | None, n: int, seed: int) -> _Items:
    """n validation items drawn as ``afxest evaluate`` draws test items, from the validation
    split of ``data`` (procedural music without it; a synth needs none) and seed + 1."""
    import torch

    from afxest.data import DrySource, MusicFolder
    from afxest.evaluate import CALIBRATION_STREAM, draw_item

    task = loaded.task
    source = None
    if not task.has_source:
        if data is None:
            source = DrySource(None, task.sample_rate)
        else:
            folder = MusicFolder(Path(data), task.sample_rate, "val", min_seconds=task.clip_seconds).prepare()
            if not folder.tracks:
                raise UserError(f"{data}: no validation-split track is {task.clip_seconds:g} s long")
            source = DrySource(folder, task.sample_rate)
    items = _Items([], [], [])
    for i in range(n):
        item = draw_item(task, source, seed, i)
        with torch.no_grad():
            items.h.append(loaded.estimator.encoder(torch.from_numpy(item.batch.wet)))
        items.truth.append(item.batch.v[0].astype(np.float64))
        items.seeds.append(int(np.random.default_rng([seed, CALIBRATION_STREAM, i]).integers(0, 2**62)))
    return items


def _calibration_at(loaded, items: _Items, temperature: np.ndarray, draws: int) -> cal.Calibration:
    """The calibration of the cached items with the head at ``temperature`` (d,)."""
    import torch

    head = loaded.estimator.head
    apply(head, temperature)
    z = np.empty((len(items.h), draws, loaded.task.model.dim))
    for i, (h, s) in enumerate(zip(items.h, items.seeds)):
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            z[i] = head.sample(h, draws).z[0].double().numpy()
    names, d, t, notes = cal.identifiable(loaded.task, z, np.stack(items.truth))
    return cal.calibrate(d, t, names, notes)


def fit(loaded, data: Path | None, n: int = 256, draws: int = 100, seed: int = 0,
        log: Callable[[str], None] = lambda _m: None) -> ModelCalibration:
    """Fits a posterior model's calibration on ``n`` validation items (module docstring).

    Arguments:
        loaded: The loaded model (:class:`afxest.store.LoadedModel`), a posterior. Where its
            parameters are not what the wet determines (``eq``), the coverage of the quantity
            each one feeds (:func:`afxest.calibration.quantity_of`) steers its temperature.
        data: The music folder (its validation split), or None (procedural music; a synth needs none).
        n: The validation items.
        draws: The posterior draws per item.
        seed: The evaluation seed; the items are those of seed + :data:`FIT_SEED_OFFSET`.
        log: Called with a line per step.

    Returns:
        The calibration; the model's head is left at its fitted temperature.
    """
    task = loaded.task
    if loaded.kind != "posterior":
        raise UserError(f"{loaded.name}: only a posterior model can be calibrated (this one is {loaded.kind})")
    fit_seed = seed + FIT_SEED_OFFSET
    items = _validation_items(loaded, data, n, fit_seed)
    d = task.model.dim
    coverage = {}
    for t in GRID:
        coverage[t] = float(_calibration_at(loaded, items, np.full(d, t), draws).coverage[0.9].mean())
        log(f"validation, T = {t:g} for all: mean 90 % coverage {coverage[t]:.3f}")
    temperature = np.full(d, min(GRID, key=lambda t: abs(coverage[t] - 0.9)))
    normal = statistics.NormalDist()
    quantity = cal.quantity_of(task)  # the quantity whose coverage steers each parameter's T
    for step in range(STEPS):
        c = _calibration_at(loaded, items, temperature, draws)
        cover = np.clip(c.coverage[0.9], 0.05, 0.995)
        widen = normal.inv_cdf(0.95) / np.array([normal.inv_cdf((1 + x) / 2) for x in cover])
        temperature = temperature * widen[quantity]
        temperature = np.clip(temperature, T_MIN, T_MAX)
        log(f"validation, per-parameter step {step + 1}: 90 % coverage mean {c.coverage[0.9].mean():.3f}, "
            f"least {c.coverage[0.9].min():.3f}")
    final = _calibration_at(loaded, items, temperature, draws)
    levels = interval_levels(final)
    fitted = {"split": "val" if not task.has_source else f"synthesised, seed {fit_seed}",
              "data": "synth" if task.has_source else ("music" if data is not None else "procedural"),
              "items": n, "draws": draws, "seed": fit_seed,
              "coverage_draws": {k: float(v) for k, v in final.mean().items()}}
    return ModelCalibration([float(t) for t in temperature], levels, fitted)
