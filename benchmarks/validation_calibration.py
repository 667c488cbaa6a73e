"""Calibration and best of 10 of posterior models on *validation* items: the check of a
retraining lever (issue 22) without touching the test split.

    python benchmarks/validation_calibration.py --model models/eq.pt --model runs/x/last.pt \\
        --data /work/music --n 128 [--draws 100] [--seed 0] [--untempered]

Every model sees the same items: drawn as ``afxest models --calibrate`` draws them
(:mod:`afxest.fit_calibration`: the validation split of ``--data``, seed + 1), with the same base noise.
Per model: the calibration of the quantities the wet determines (:func:`afxest.calibration.identifiable`;
eq: the summed gain, the |gain|-weighted cutoff and Q) from ``--draws`` draws per item, and the
SI-SDR of 10 candidates rendered by pedalboard (the first: the expectation; the best of 10),
with the paired difference of the best of 10 against the first model. ``--untempered`` sets
aside a calibration the models ship with.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

from afxest import calibration as cal
from afxest.evaluate import CALIBRATION_STREAM, _render_all, draw_item
from afxest.losses import si_sdr
from afxest.store import load_model
from afxest.fit_calibration import FIT_SEED_OFFSET
from afxest.temper import apply

CANDIDATES = 10


def source_of(task, data: Path | None):
    """The validation split's drys (procedural music without ``data``; None for a synth)."""
    from afxest.data import DrySource, MusicFolder

    if task.has_source:
        return None
    if data is None:
        return DrySource(None, task.sample_rate)
    return DrySource(MusicFolder(data, task.sample_rate, "val", min_seconds=task.clip_seconds).prepare(), task.sample_rate)


def draws_of(head, h: torch.Tensor, n: int, seed: int) -> np.ndarray:
    """n draws (n, d) from a torch seed, the global random state untouched."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return head.sample(h, n).z[0].double().numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--untempered", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models = [load_model(m) for m in args.model]
    task = models[0].task
    if any(m.task.name != task.name or m.kind != "posterior" for m in models):
        print("every --model must be a posterior of the same task", file=sys.stderr)
        return 2
    for m in models:
        m.estimator.to("cpu").eval()
        if args.untempered:
            apply(m.estimator.head, None)
    source = source_of(task, args.data)
    seed = args.seed + FIT_SEED_OFFSET
    z = [np.empty((args.n, args.draws, task.model.dim)) for _ in models]
    first = [np.empty(args.n) for _ in models]
    best = [np.empty(args.n) for _ in models]
    truths = []
    for i in range(args.n):
        item = draw_item(task, source, seed, i)
        truths.append(item.batch.v[0].astype(np.float64))
        y = torch.from_numpy(np.ascontiguousarray(item.wet, dtype=np.float32))
        for k, m in enumerate(models):
            with torch.no_grad():
                h = m.estimator.encoder(torch.from_numpy(item.batch.wet))
            z[k][i] = draws_of(m.estimator.head, h, args.draws, int(np.random.default_rng([seed, CALIBRATION_STREAM, i]).integers(0, 2**62)))
            candidates = draws_of(m.estimator.head, h, CANDIDATES, item.torch_seed)
            rendered = torch.from_numpy(np.ascontiguousarray(_render_all(task, candidates, item.dry), dtype=np.float32))
            scores = si_sdr(rendered, y[None].expand_as(rendered).contiguous()).double().numpy()
            first[k][i], best[k][i] = scores[0], scores.max()
        if (i + 1) % max(1, args.n // 8) == 0:
            print(f"{i + 1}/{args.n} items", file=sys.stderr, flush=True)
    print(f"\n{task.name}: {args.n} validation items, {args.draws} draws each\n")
    print("| model | quantity | 50 % holds | 90 % holds | outside all draws |")
    print("|---|---|---:|---:|---:|")
    for name, zk in zip(args.model, z):
        names, d, t, _ = cal.identifiable(task, zk, np.stack(truths))
        c = cal.calibrate(d, t, names)
        for j, q in enumerate(names):
            print(f"| `{name}` | {q} | {100 * c.coverage[0.5][j]:.0f} % | {100 * c.coverage[0.9][j]:.0f} % | {100 * c.outside[j]:.1f} % |")
    print("\n| model | SI-SDR, first candidate (dB) | best of 10 (dB) | best of 10 vs the first model (paired ± s.e.) |")
    print("|---|---:|---:|---:|")
    for name, f, b in zip(args.model, first, best):
        diff = b - best[0]
        se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else 0.0
        print(f"| `{name}` | {f.mean():.2f} | {b.mean():.2f} | {diff.mean():+.2f} ± {se:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
