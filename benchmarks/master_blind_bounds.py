"""What bounds the blind master estimate: SI-SDR on the test items of ``afxest evaluate`` when
the truth is known except for one thing a blind estimator cannot see.

    python benchmarks/master_blind_bounds.py --music MUSIC [--n 64] [--model master-deterministic]

The items are those of ``afxest evaluate --model master --data MUSIC --n N`` (seed 0: the same
drys, truths and wets), every render is pedalboard's, every score SI-SDR against the wet (and
the log-mel loss of DAFx 2025, Eq. 16). Three measurements:

* **The dry's level.** Scaling the dry by g, the threshold by +20 log10 g and the make-up gain by
  -20 log10 g leaves the wet unchanged, so a blind estimator must guess the dry's level. Here the
  truth, except that threshold and make-up gain assume the dry at the split's median RMS level
  (shifted by the item's deviation from it, clamped to their ranges).
* **Which settings the model misses.** The model's estimate (``--model``, one draw), then the
  same with one group of its settings replaced by the truth (EQ gains, frequencies, Qs, the
  whole EQ, the compressor, make-up gain and clipping, all but the EQ).
* **The dry's spectrum.** The EQ bands fitted to the wet's long-term spectrum over a dry's
  (the fit ``afxest estimate`` runs when given the dry: :func:`afxest.search.fit_equaliser`,
  best of 8 starts by the fit's own error), every other setting the truth: once over the item's
  own dry (the fit's own limit) and once over the average long-term spectrum of the train
  split's excerpts, as a blind estimator that assumes an average dry would fit it; and, as a
  posterior that drew the dry's spectrum from the music's would, the best (by SI-SDR against the
  wet: the oracle of best-of-N) of fits over :data:`PLAUSIBLE_DRYS` train excerpts' spectra.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from afxest.data import DrySource, MusicFolder
from afxest.engines import render_candidates
from afxest.evaluate import draw_item, item_source
from afxest.losses import LogMelLoss, si_sdr
from afxest.processors import entry, power_response
from afxest.search import EQ_FIT_FFT, equaliser_fit_weight, fit_equaliser, long_term_ratio_db, long_term_spectrum_db
from afxest.store import load_model
from afxest.tasks import get_task

AVERAGE_EXCERPTS = 400  # train-split excerpts in the average long-term spectrum
FIT_STARTS = 8  # EQ fit starts: the neutral EQ and random ones
PLAUSIBLE_DRYS = 10  # train excerpts whose spectra stand for the dry's, per item


def scores(candidates: np.ndarray, wet: np.ndarray, mel: LogMelLoss) -> tuple[np.ndarray, np.ndarray]:
    """SI-SDR (dB) and log-mel of candidates (n, 1, T) against the wet (1, T): two (n,) arrays."""
    y_hat = torch.from_numpy(np.ascontiguousarray(candidates, np.float32))
    y = torch.from_numpy(np.ascontiguousarray(wet, np.float32))[None].expand_as(y_hat).contiguous()
    with torch.no_grad():
        return si_sdr(y_hat, y).double().numpy(), mel(y_hat, y).double().numpy()


def fitted_equaliser(task, truth: np.ndarray, ratio_db: np.ndarray, weight: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """The truth with its EQ bands replaced by the best of :data:`FIT_STARTS` fits to ratio_db
    (the neutral EQ and random ones; best by the fit's own error, which needs no truth)."""
    eq = [i for i, name in enumerate(task.model.names) if "shelf" in name or "peak" in name]
    starts = np.tile(truth, (FIT_STARTS, 1))
    starts[:, eq] = rng.random((FIT_STARTS, len(eq)))
    starts[0, [i for i in eq if task.model.names[i].endswith("gain_db")]] = 0.5  # 0 dB
    fits = fit_equaliser(task.model, starts, ratio_db, weight, task.sample_rate)
    return fits[int(np.argmin(fit_error(task, fits[:, : len(eq)], ratio_db, weight)))]


def fit_error(task, z_eq: np.ndarray, ratio_db: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """What :func:`afxest.search.fit_equaliser` minimises, per row of the EQ bands' settings
    z_eq (n, the bands' dimensions): the weighted mean square (dB^2) of 20 log10 |H| + c - ratio_db, c free."""
    zt, effects, start = torch.from_numpy(z_eq), [], 0
    for proc in task.model.processors:
        if entry(proc.type).coefficients is None:  # the bands are the leading biquads
            break
        effects.append((proc.type, proc.physical(zt[:, start:start + proc.dim])))
        start += proc.dim
    response = 10 * np.log10(power_response(effects, task.sample_rate, EQ_FIT_FFT).numpy() + 1e-24)
    w = weight / max(weight.sum(), 1.0)
    residual = ratio_db[None] - response
    level = (residual * w).sum(1, keepdims=True)
    return ((residual - level) ** 2 * w).sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music", type=Path, required=True)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--model", default="master-deterministic")
    args = parser.parse_args()
    task = get_task("master")
    names, ranges = task.model.names, task.model.ranges
    mel = LogMelLoss(task.sample_rate)
    source, _ = item_source(task, args.music, print)
    items = [draw_item(task, source, 0, i) for i in range(args.n)]
    estimator = load_model(args.model).estimator

    def where(test) -> list[int]:
        return [i for i, name in enumerate(names) if test(name)]

    eq_gains = where(lambda n: n.endswith("gain_db") and ("shelf" in n or "peak" in n))
    eq_all = where(lambda n: "shelf" in n or "peak" in n)
    groups = {
        "EQ gains": eq_gains,
        "EQ frequencies": where(lambda n: n.endswith("cutoff_frequency_hz")),
        "EQ Qs": where(lambda n: n.endswith(".q")),
        "EQ, all of it": eq_all,
        "compressor": where(lambda n: ".compressor." in n),
        "make-up gain, clipping": where(lambda n: n.startswith(("6.", "7."))),
        "all but the EQ": [i for i in range(len(names)) if i not in eq_all],
    }
    threshold, makeup = names.index("5.compressor.threshold_db"), names.index("6.gain.gain_db")

    levels = np.array([10 * np.log10(np.mean(item.dry.astype(np.float64) ** 2)) for item in items])
    median_level = float(np.median(levels))
    train = DrySource(MusicFolder(args.music, task.sample_rate, "train", min_seconds=task.clip_seconds).prepare(),
                      task.sample_rate)
    rng = np.random.default_rng(0)
    train_db = np.array([long_term_spectrum_db(train.excerpt(rng, task.clip_samples)) for _ in range(AVERAGE_EXCERPTS)])
    average_db = train_db.mean(axis=0)

    rows: dict[str, list[tuple[float, float]]] = {}

    def add(name: str, si: float, lm: float) -> None:
        rows.setdefault(name, []).append((si, lm))

    for item, level in zip(items, levels):
        truth = np.asarray(task.truth_to_model(item.batch.v[0]), np.float64)
        level_blind = truth.copy()
        for i, shift in ((threshold, level - median_level), (makeup, median_level - level)):
            r = ranges[i]
            level_blind[i] = r.to_normalised(float(np.clip(r.to_physical(truth[i]) - shift, r.lo, r.hi)))
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(item.torch_seed)
            estimate = estimator.sample(torch.from_numpy(item.batch.wet), 1).z[0, 0].double().numpy()
        candidates = [truth, level_blind, estimate]
        for idx in groups.values():
            mixed = estimate.copy()
            mixed[idx] = truth[idx]
            candidates.append(mixed)
        si, lm = scores(render_candidates(task, np.stack(candidates), item.dry, "pedalboard"), item.wet, mel)
        labels = ["truth", "truth, the dry's level unknown", f"{args.model}"] + [
            f"{args.model}, the true {g}" for g in groups]
        for label, a, b in zip(labels, si, lm):
            add(label, a, b)
        wet_db = long_term_spectrum_db(item.wet[0])
        own_ratio, own_weight = long_term_ratio_db(item.dry[0], item.wet[0])
        fits = [fitted_equaliser(task, truth, own_ratio, own_weight, rng),
                fitted_equaliser(task, truth, wet_db - average_db, equaliser_fit_weight(wet_db), rng)]
        si, lm = scores(render_candidates(task, np.stack(fits), item.dry, "pedalboard"), item.wet, mel)
        for label, a, b in zip(["truth, the EQ fitted over the item's own dry",
                                "truth, the EQ fitted over the average dry"], si, lm):
            add(label, a, b)
        plausible = train_db[rng.choice(len(train_db), PLAUSIBLE_DRYS, replace=False)]
        fits = [fitted_equaliser(task, truth, wet_db - dry_db, equaliser_fit_weight(wet_db), rng) for dry_db in plausible]
        si, lm = scores(render_candidates(task, np.stack(fits), item.dry, "pedalboard"), item.wet, mel)
        best = int(np.argmax(si))
        add(f"truth, the EQ fitted over {PLAUSIBLE_DRYS} train drys, best", si[best], lm[best])
        si, lm = scores(item.dry[None], item.wet, mel)
        add("Input (dry vs wet)", si[0], lm[0])

    print(f"{args.n} test items; dry level {median_level:.1f} dB RMS median, {levels.std():.1f} dB std")
    print(f"{'':<58} {'SI-SDR mean':>11} {'median':>7} {'log-mel':>8}")
    for label, values in rows.items():
        v = np.array(values)
        print(f"{label:<58} {v[:, 0].mean():>11.2f} {np.median(v[:, 0]):>7.2f} {v[:, 1].mean():>8.3f}")


if __name__ == "__main__":
    main()
