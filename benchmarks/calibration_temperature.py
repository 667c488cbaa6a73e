"""The cheapest calibration lever of issue 22: a temperature on the flow's base distribution.

    python benchmarks/calibration_temperature.py --model master --data /work/music \\
        --fit-n 256 --test-n 512 [--grid 1 1.5 2 3 4 6] [--per-parameter] [--out temps.json]

A posterior model's base Gaussian N(mu(h), sigma(h)^2) gets its standard deviation scaled by T
(:attr:`afxest.nn.heads.PosteriorHead.temperature`; with ``--per-parameter`` one T per base
dimension), which widens (T > 1) or narrows the draws after the flows. Nothing is retrained and
no weight file changes; a calibration the model ships with (:mod:`afxest.temper`) is set aside:
T = 1 is the untempered model. ``afxest models --calibrate`` is the shipped form of this fit.

1. Fit, on the validation split (items drawn like ``afxest evaluate``'s, from the validation
   tracks): for each T of ``--grid`` the calibration of ``--draws`` draws per item
   (:mod:`afxest.calibration`; items of seed + 1, so a synth's differ from the test's); the chosen global T is the one whose mean 90 % coverage is
   nearest 90 %. With ``--per-parameter``, each base dimension's T (eq: both shelves' dimensions
   of a parameter by the coverage of the quantity they form) is then refined by a few multiplicative steps
   ``T_j *= z(0.95) / z((1 + c_j) / 2)`` (c_j its 90 % coverage, z the standard normal quantile:
   the widening a Gaussian error would need).
2. Test, on the test split (exactly ``afxest evaluate``'s items and seeds): T = 1 (today's
   model: the same draws and candidates as ``afxest evaluate --samples 10``), the global T and
   the per-parameter T: the calibration, and the best of 10 candidates' SI-SDR (pedalboard
   renders) with its paired difference against T = 1 (the same items and base noise).
3. For the last configuration also its intervals recalibrated (split-conformal, in the spirit of
   CANVI, Patel et al. 2024): per quantity and level, the smallest central level of the draws
   whose interval held that share of the validation truths; the test coverage at those levels.
   This changes which interval is reported, not the draws (nor the SI-SDR).
4. With ``--estimate-n K``: on the first K test items, the rank 1 of ``afxest estimate`` given
   the dry (its search at ``--effort``), SI-SDR against the wet, for T = 1 and the last
   configuration (``afxest evaluate --effort``'s row). Since the calibration shipped, a
   search's proposals are the untempered posterior's whatever the temperature (the measured
   -8 dB of tempered proposals is why), so both rows now draw the same proposals.

Prints markdown tables; ``--out`` writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from afxest import calibration as cal
from afxest.evaluate import CALIBRATION_STREAM, ITEM_STREAM, _render_all, draw_item
from afxest.losses import si_sdr
from afxest.store import load_model
from afxest.temper import apply, interval_levels

BEST_OF = 10
FIT_SEED_OFFSET = 1  # the validation items come from seed + 1 (a synth task has no split of drys)


@contextmanager
def tempered(head, temperature: np.ndarray):
    """The head at ``temperature`` (d,) (:func:`afxest.temper.apply`), back at 1 afterwards."""
    apply(head, temperature)
    try:
        yield head
    finally:
        apply(head, None)


def source_of(task, data: Path | None, split: str):
    """The dry source of a split (procedural music without ``data``; None for a synth)."""
    from afxest.data import DrySource, MusicFolder

    if task.has_source:
        return None
    if data is None:
        return DrySource(None, task.sample_rate)
    return DrySource(MusicFolder(data, task.sample_rate, split, min_seconds=task.clip_seconds).prepare(), task.sample_rate)


def sample(head, h: torch.Tensor, n: int, torch_seed: int) -> np.ndarray:
    """n draws (n, d) of the head for embedding h (1, C) from a torch seed, global state untouched."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        return head.sample(h, n).z[0].double().numpy()


def calibration_seed(seed: int, i: int) -> int:
    """The torch seed of item i's calibration draws in ``afxest evaluate`` (figures.draw)."""
    return int(np.random.default_rng([seed, CALIBRATION_STREAM, i]).integers(0, 2**62))


def calibrate_items(loaded, hs, truths, seeds, temperature, draws: int):
    """The calibration of the cached items (embeddings, truths) at ``temperature`` (d,)."""
    task, head = loaded.task, loaded.estimator.head
    z = np.empty((len(hs), draws, task.model.dim))
    with tempered(head, temperature):
        for i, (h, s) in enumerate(zip(hs, seeds)):
            z[i] = sample(head, h, draws, s)
    names, d, t, notes = cal.identifiable(task, z, np.stack(truths))
    return cal.calibrate(d, t, names, notes)


def fit(loaded, data, n: int, seed: int, grid, draws: int, per_parameter: bool, log):
    """Step 1 on the validation split: the global T and (optionally) the per-parameter T."""
    task, model = loaded.task, loaded.estimator
    source = source_of(task, data, "val")
    hs, truths, seeds = [], [], []
    seed = seed + FIT_SEED_OFFSET  # other items than the test's, also where no split differs (a synth)
    for i in range(n):
        item = draw_item(task, source, seed, i)
        with torch.no_grad():
            hs.append(model.encoder(torch.from_numpy(item.batch.wet)))
        truths.append(item.batch.v[0].astype(np.float64))
        seeds.append(calibration_seed(seed, i))
    d = task.model.dim
    rows = []
    for t in grid:
        c = calibrate_items(loaded, hs, truths, seeds, np.full(d, t), draws)
        rows.append((t, c.mean()))
        log(f"val T={t:g}: " + ", ".join(f"{k} {v:.3f}" for k, v in c.mean().items()))
    best = min(rows, key=lambda r: abs(r[1]["coverage_90"] - 0.9))[0]
    vector = np.full(d, best)
    if per_parameter:
        z90 = statistics.NormalDist().inv_cdf(0.95)
        which = quantity_of(task)
        for step in range(6):
            c = calibrate_items(loaded, hs, truths, seeds, vector, draws)
            cover = np.clip(c.coverage[0.9][which], 0.05, 0.995)
            vector = vector * z90 / np.array([statistics.NormalDist().inv_cdf((1 + x) / 2) for x in cover])
            vector = np.clip(vector, 0.25, 50.0)
            log(f"val per-parameter step {step}: mean 90 % coverage {c.coverage[0.9].mean():.3f}, "
                f"min {c.coverage[0.9].min():.3f}")
        c = calibrate_items(loaded, hs, truths, seeds, vector, draws)
        log(f"val per-parameter final: " + ", ".join(f"{k} {v:.3f}" for k, v in c.mean().items()))
    else:
        vector = None
    final = calibrate_items(loaded, hs, truths, seeds, np.full(d, best) if vector is None else vector, draws)
    return {"grid": [{"T": t, **m} for t, m in rows], "global": best,
            "per_parameter": None if vector is None else vector.tolist(),
            "levels": interval_levels(final)}


def quantity_of(task) -> np.ndarray:
    """The calibrated quantity (:func:`afxest.calibration.identifiable`) each model dimension
    feeds: itself, or (eq) the same parameter of the truth's one processor."""
    if task.truth.processors == task.model.processors:
        return np.arange(task.model.dim)
    return np.arange(task.model.dim) % task.truth.dim


def test(loaded, data, n: int, seed: int, configs: dict[str, np.ndarray], draws: int, log, levels=None):
    """Step 2 on the test split: per configuration the calibration and the best of 10 SI-SDR."""
    task, model = loaded.task, loaded.estimator
    head = model.head
    source = source_of(task, data, "test")
    names = list(configs)
    z_cal = {k: np.empty((n, draws, task.model.dim)) for k in names}
    best = {k: np.empty(n) for k in names}
    truths = []
    start = time.perf_counter()
    for i in range(n):
        item = draw_item(task, source, seed, i)
        with torch.no_grad():
            h = model.encoder(torch.from_numpy(item.batch.wet))
        truths.append(item.batch.v[0].astype(np.float64))
        for k, temperature in configs.items():
            with tempered(head, temperature):
                z_cal[k][i] = sample(head, h, draws, calibration_seed(seed, i))
                z = sample(head, h, BEST_OF, item.torch_seed)
            rendered = _render_all(task, z, item.dry)
            y_hat = torch.from_numpy(np.ascontiguousarray(rendered, dtype=np.float32))
            y = torch.from_numpy(np.ascontiguousarray(item.wet, dtype=np.float32))[None].expand_as(y_hat).contiguous()
            best[k][i] = float(si_sdr(y_hat, y).max())
        if (i + 1) % max(1, n // 8) == 0:
            log(f"test {i + 1}/{n} items, {time.perf_counter() - start:.0f} s")
    out = {}
    for k in names:
        qnames, d, t, notes = cal.identifiable(task, z_cal[k], np.stack(truths))
        c = cal.calibrate(d, t, qnames, notes)
        diff = best[k] - best[names[0]]
        out[k] = {
            "temperature": configs[k].tolist(),
            **c.mean(),
            "coverage_50_per": dict(zip(qnames, c.coverage[0.5].tolist())),
            "coverage_90_per": dict(zip(qnames, c.coverage[0.9].tolist())),
            "outside_per": dict(zip(qnames, c.outside.tolist())),
            "in_band": int(sum(c.verdict(j) == "in band" for j in range(len(qnames)))),
            "quantities": len(qnames),
            "best10_si_sdr": [float(best[k].mean()), float(best[k].std())],
            "best10_vs_T1": [float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0],
        }
    if levels is not None:  # the last configuration, its intervals at the levels fitted on validation
        k = names[-1]
        qnames, d, t, notes = cal.identifiable(task, z_cal[k], np.stack(truths))
        c = cal.calibrate(d, t, qnames, notes)
        cover = {a: np.array([cal.central_coverage(c.ranks[:, j:j + 1], draws, levels[str(a)][j])[0]
                              for j in range(len(qnames))]) for a in cal.LEVELS}
        in_band = sum(all(lo <= cover[a][j] <= hi for a, (lo, hi) in cal.BANDS.items()) for j in range(len(qnames)))
        out[f"{k}, intervals recalibrated"] = {
            **out[k], "coverage_50": float(cover[0.5].mean()), "coverage_90": float(cover[0.9].mean()),
            "coverage_50_per": dict(zip(qnames, cover[0.5].tolist())),
            "coverage_90_per": dict(zip(qnames, cover[0.9].tolist())), "in_band": int(in_band),
            "levels": levels,
        }
    return out


def estimate_items(loaded, data, n: int, seed: int, configs: dict[str, np.ndarray], effort: str, log):
    """Step 4: the default estimate's rank 1 SI-SDR on the first n test items per configuration."""
    from afxest.estimate import Analyser
    from afxest.evaluate import default_estimate

    task, head = loaded.task, loaded.estimator.head
    analysers = {}
    for k, temperature in configs.items():  # the proposer copies the head when it is made: temper it first
        with tempered(head, temperature):
            analysers[k] = Analyser(loaded)
    source = source_of(task, data, "test")
    found = {k: np.empty(n) for k in configs}
    for i in range(n):
        item = draw_item(task, source, seed, i)
        for k in configs:
            rendered = default_estimate(analysers[k], item.wet, item.dry, BEST_OF, effort, seed)
            y_hat = torch.from_numpy(np.ascontiguousarray(rendered, dtype=np.float32))
            y = torch.from_numpy(np.ascontiguousarray(item.wet, dtype=np.float32))[None]
            found[k][i] = float(si_sdr(y_hat, y)[0])
        log(f"estimate {i + 1}/{n}: " + ", ".join(f"{v[i]:.2f}" for v in found.values()))
    first = found[list(configs)[0]]
    return {k: {"mean": float(v.mean()), "std": float(v.std()),
                "vs_T1": [float((v - first).mean()), float((v - first).std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0]}
            for k, v in found.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--fit-n", type=int, default=256)
    parser.add_argument("--test-n", type=int, default=512)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    parser.add_argument("--per-parameter", action="store_true")
    parser.add_argument("--test-grid", action="store_true", help="test every T of --grid, not only the fitted one")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--estimate-n", type=int, default=0, help="test items of the default estimate (0: none)")
    parser.add_argument("--effort", default="default")
    parser.add_argument("--fit-from", type=Path, help="take the fitted T from an earlier --out JSON (no fitting)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    loaded = load_model(args.model)
    loaded.estimator.to("cpu").eval()
    apply(loaded.estimator.head, None)  # T = 1 is the untempered model, whatever calibration it ships with
    d = loaded.task.model.dim
    if args.fit_from:
        fitted = json.loads(args.fit_from.read_text())["fit"]
    else:
        fitted = fit(loaded, args.data, args.fit_n, args.seed, args.grid, args.draws, args.per_parameter, log)
    configs = {"T = 1 (today)": np.ones(d)}
    for t in args.grid if args.test_grid else [fitted["global"]]:
        if t != 1:
            configs[f"T = {t:g}" + (" (global, fitted)" if t == fitted["global"] else "")] = np.full(d, t)
    if fitted["per_parameter"] is not None:
        configs["per-parameter T"] = np.array(fitted["per_parameter"])
    tested = test(loaded, args.data, args.test_n, args.seed, configs, args.draws, log, fitted["levels"])
    print(f"\n{loaded.name}: validation {args.fit_n} items, test {args.test_n} items, {args.draws} draws each\n")
    print("| | 50 % holds truth (mean) | 90 % (mean) | outside all draws (mean) | quantities in both bands "
          "| best of 10 SI-SDR dB | vs T = 1 (paired, ± s.e.) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k, r in tested.items():
        print(f"| {k} | {100 * r['coverage_50']:.0f} % | {100 * r['coverage_90']:.0f} % | {100 * r['outside']:.1f} % "
              f"| {r['in_band']}/{r['quantities']} | {r['best10_si_sdr'][0]:.2f} ± {r['best10_si_sdr'][1]:.2f} "
              f"| {r['best10_vs_T1'][0]:+.2f} ± {r['best10_vs_T1'][1]:.2f} |")
    if args.estimate_n:
        last = list(configs)[-1]
        estimated = estimate_items(loaded, args.data, args.estimate_n, args.seed, {k: configs[k] for k in (list(configs)[0], last)},
                                   args.effort, log)
        for k, r in estimated.items():
            tested[k]["default_estimate_si_sdr"] = r
        print(f"\ndefault estimate with the dry (--effort {args.effort}), rank 1 SI-SDR, first {args.estimate_n} test items:\n")
        for k, r in estimated.items():
            print(f"- {k}: {r['mean']:.2f} ± {r['std']:.2f} dB; vs T = 1 {r['vs_T1'][0]:+.2f} ± {r['vs_T1'][1]:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"model": loaded.name, "fit": fitted, "test": tested}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
