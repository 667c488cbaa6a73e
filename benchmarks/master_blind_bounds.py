"""What bounds the blind master estimate: SI-SDR on the test items of ``afxest evaluate`` when
the truth is known except for one thing a blind estimator cannot see.

    python benchmarks/master_blind_bounds.py --music MUSIC [--n 64] [--model master-deterministic]

The items are those of ``afxest evaluate --model master --data MUSIC --n N`` (seed 0: the same
drys, truths and wets), every render is pedalboard's, every score SI-SDR against the wet (and
the log-mel loss of DAFx 2025, Eq. 16). Three measurements:

* **The dry's level.** Scaling the dry by g, the threshold by +20 log10 g and the make-up gain by
  -20 log10 g leaves the wet unchanged, so a blind estimator must guess the dry's level. Here the
  truth, except that threshold and make-up gain assume the dry at the median RMS level of the
  train split's excerpts (shifted by the item's deviation from it, clamped to their ranges).
* **Which settings the model misses.** The model's estimate (``--model``, its first draw, as
  evaluate's), then the same with one group of its settings replaced by the truth (EQ gains,
  frequencies, Qs, the whole EQ, the compressor, make-up gain and clipping, all but the EQ).
* **The dry's spectrum.** The EQ bands fitted to the wet's long-term spectrum over a dry's by the
  fit of the estimate's search (:func:`afxest.search.fit_equaliser`), from 8 starts of its own
  (the neutral EQ and random ones, the same for every fit of an item; the best by the fit's own
  error), every other setting the truth: over the item's own dry (the fit's own limit); over the
  train split's average (the mean of its excerpts' spectra in dB), as a blind estimator that
  assumes an average dry would fit it; and over :data:`PLAUSIBLE_DRYS` train excerpts' spectra,
  the best of those by SI-SDR against the wet (the oracle of best-of-N), as a posterior that drew
  the dry's spectrum from the music's would. Each fit weights the bins by its dry spectrum, as
  :func:`afxest.search.long_term_ratio_db` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from afxest.data import DrySource, MusicFolder
from afxest.engines import render_candidates
from afxest.evaluate import _score, draw_item, item_source
from afxest.losses import LogMelLoss, si_sdr
from afxest.search import (
    equaliser_bands,
    equaliser_fit_error,
    equaliser_fit_weight,
    fit_equaliser,
    long_term_spectrum_db,
)
from afxest.store import load_model
from afxest.tasks import get_task

TRAIN_EXCERPTS = 400  # train-split excerpts: the median level, the average and the plausible spectra
FIT_STARTS = 8  # EQ fit starts: the neutral EQ and random ones
PLAUSIBLE_DRYS = 10  # train excerpts whose spectra stand for the dry's, per item
ITEM_STREAM = 7  # each item's generator: default_rng([0, ITEM_STREAM, i])


def fitted_equalisers(task, truth: np.ndarray, starts: np.ndarray, wet_db: np.ndarray, dry_dbs: list[np.ndarray]) -> np.ndarray:
    """The truth with its EQ bands fitted to wet_db - dry_db, for each dry spectrum: the best of
    the starts (bands' settings, (K, bands' dimensions)) by the fit's own error. (len(dry_dbs), d)."""
    dim = starts.shape[1]
    out = np.tile(truth, (len(dry_dbs), 1))
    for j, dry_db in enumerate(dry_dbs):
        ratio, weight = wet_db - dry_db, equaliser_fit_weight(dry_db)
        z0 = np.tile(truth, (len(starts), 1))
        z0[:, :dim] = starts
        fits = fit_equaliser(task.model, z0, ratio, weight, task.sample_rate)
        error = equaliser_fit_error(task.model, torch.from_numpy(fits[:, :dim]), torch.from_numpy(ratio),
                                    torch.from_numpy(weight), task.sample_rate)
        out[j] = fits[int(torch.argmin(error))]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music", type=Path, required=True, help="the music folder (its test and train splits)")
    parser.add_argument("--n", type=int, default=64, help="test items (those of afxest evaluate, seed 0)")
    parser.add_argument("--model", default="master-deterministic", help="a master model, bundled or a file")
    args = parser.parse_args()
    task = get_task("master")
    loaded = load_model(args.model)
    if loaded.task.name != task.name:
        parser.error(f"{args.model} is a {loaded.task.name} model, not a master one")
    names, ranges = task.model.names, task.model.ranges
    fns = {"si_sdr": si_sdr, "mel": LogMelLoss(task.sample_rate)}
    source, _ = item_source(task, args.music, print)

    bands_dim = sum(proc.dim for proc, _ in equaliser_bands(task.model))
    eq = list(range(bands_dim))
    groups = {
        "EQ gains": [i for i in eq if names[i].endswith(".gain_db")],
        "EQ frequencies": [i for i in eq if names[i].endswith(".cutoff_frequency_hz")],
        "EQ Qs": [i for i in eq if names[i].endswith(".q")],
        "EQ, all of it": eq,
        "compressor": [i for i, n in enumerate(names) if ".compressor." in n],
        "make-up gain, clipping": [i for i, n in enumerate(names) if ".gain." in n or ".clipping." in n],
        "all but the EQ": list(range(bands_dim, len(names))),
    }
    threshold = next(i for i, n in enumerate(names) if n.endswith(".compressor.threshold_db"))
    makeup = next(i for i, n in enumerate(names) if ".gain." in n)

    train = DrySource(MusicFolder(args.music, task.sample_rate, "train", min_seconds=task.clip_seconds).prepare(),
                      task.sample_rate)
    rng = np.random.default_rng(0)
    excerpts = [train.excerpt(rng, task.clip_samples).astype(np.float64) for _ in range(TRAIN_EXCERPTS)]
    median_level = float(np.median([10 * np.log10(np.mean(x**2)) for x in excerpts]))
    train_db = np.array([long_term_spectrum_db(x) for x in excerpts])
    average_db = train_db.mean(axis=0)

    labels = (["truth", "truth, the dry's level unknown", args.model]
              + [f"{args.model}, with the true {g}" for g in groups]
              + ["truth, the EQ fitted over the item's own dry", "truth, the EQ fitted over the average dry",
                 f"truth, the EQ fitted over {PLAUSIBLE_DRYS} train drys, best", "Input (dry vs wet)"])
    rows: dict[str, list[tuple[float, float]]] = {label: [] for label in labels}
    for i in range(args.n):
        item = draw_item(task, source, 0, i)
        item_rng = np.random.default_rng([0, ITEM_STREAM, i])
        truth = np.asarray(task.truth_to_model(item.batch.v[0]), np.float64)
        shift = 10 * np.log10(np.mean(item.dry.astype(np.float64) ** 2)) - median_level
        level_blind = truth.copy()
        for index, change in ((threshold, -shift), (makeup, shift)):
            r = ranges[index]
            level_blind[index] = r.to_normalised(float(np.clip(r.to_physical(truth[index]) + change, r.lo, r.hi)))
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(item.torch_seed)
            estimate = loaded.estimator.sample(torch.from_numpy(item.batch.wet), 1).z[0, 0].double().numpy()
        candidates = [truth, level_blind, estimate]
        for index in groups.values():
            mixed = estimate.copy()
            mixed[index] = truth[index]
            candidates.append(mixed)

        starts = item_rng.random((FIT_STARTS, bands_dim))
        starts[0, groups["EQ gains"]] = 0.5  # 0 dB: the neutral EQ
        wet_db = long_term_spectrum_db(item.wet[0])
        plausible = list(train_db[item_rng.choice(TRAIN_EXCERPTS, PLAUSIBLE_DRYS, replace=False)])
        candidates.extend(fitted_equalisers(task, truth, starts, wet_db, [long_term_spectrum_db(item.dry[0]), average_db]))
        s = _score(fns, render_candidates(task, np.stack(candidates), item.dry, "pedalboard"), item.wet)
        drawn = _score(fns, render_candidates(task, fitted_equalisers(task, truth, starts, wet_db, plausible), item.dry,
                                              "pedalboard"), item.wet)
        best = int(np.argmax(drawn["si_sdr"]))
        dry = _score(fns, item.dry[None], item.wet)
        values = list(zip(s["si_sdr"], s["mel"])) + [(drawn["si_sdr"][best], drawn["mel"][best]),
                                                     (dry["si_sdr"][0], dry["mel"][0])]
        for label, value in zip(labels, values):
            rows[label].append(value)

    print(f"{args.n} test items; dry levels against the train split's median ({median_level:.1f} dB RMS)")
    print(f"{'':<62} {'SI-SDR mean':>11} {'median':>7} {'log-mel':>8}")
    for label, values in rows.items():
        v = np.array(values)
        print(f"{label:<62} {v[:, 0].mean():>11.2f} {np.median(v[:, 0]):>7.2f} {v[:, 1].mean():>8.3f}")


if __name__ == "__main__":
    main()
