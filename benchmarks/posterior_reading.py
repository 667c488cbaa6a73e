"""What a posterior model reads from the wet alone, parameter by parameter: on fixed items of a
split (the training's validation items, :func:`afxest.train.validation_batches`), the median of
``--draws`` draws of the raw (untempered) posterior against the truth, as

* ``corr``: the correlation of the median with the true normalised value over the items;
* ``err``: the mean |median - truth| divided by a prior draw's mean error on the same items
  (E|U - v| = (v^2 + (1 - v)^2) / 2 for U uniform): 1 is chance; the constant guess z = 0.5
  scores about 0.75;
* ``bias``: the mean of median - truth (normalised units: a systematic misreading, e.g. of a
  stereo render's mono mix by a model trained on mono renders).

With ``--stereo`` each item's wet is rendered instead in stereo from the dry on both channels
(pedalboard renders a stereo file's chain so: the reverb's combs take L + R, each channel its
own) and the model reads its mono mix, as ``afxest estimate`` reads a stereo file. Several
``--model`` give one column each, on the same items and draws' seeds.

    python benchmarks/posterior_reading.py --model mix [--model CHECKPOINT] --data MUSIC \
        [--split val] [--n 256] [--draws 64] [--stereo]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from afxest.data import DrySource, MusicFolder
from afxest.engines import render
from afxest.store import load_model
from afxest.temper import apply
from afxest.train import validation_batches


def medians(estimator, wets: np.ndarray, draws: int) -> np.ndarray:
    """The median (items, d) of ``draws`` draws for each wet (items, T), seed 0."""
    torch.manual_seed(0)
    with torch.no_grad():
        return np.concatenate([
            estimator.sample(torch.from_numpy(wets[i : i + 16, None]), draws).z.median(dim=1).values.double().numpy()
            for i in range(0, len(wets), 16)
        ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="a posterior model's name or checkpoint (repeatable)")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--draws", type=int, default=64)
    parser.add_argument("--stereo", action="store_true", help="render each wet in stereo and read its mono mix")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = [load_model(spec) for spec in args.model]
    task = loaded[0].task
    if any(m.task.definition() != task.definition() for m in loaded):
        print("note: the models' task definitions differ (e.g. their encoders); items are the first's")
    folder = MusicFolder(args.data, task.sample_rate, args.split, min_seconds=task.clip_seconds).prepare()
    batches = validation_batches(task, DrySource(folder, task.sample_rate), args.n, 16)
    v = np.concatenate([b.v for b in batches]).astype(np.float64)
    if args.stereo:
        wets = np.stack([
            render(task.truth.preset(v[k], task.name, task.sample_rate), np.repeat(dry, 2, axis=0), task.sample_rate, "pedalboard").mean(axis=0)
            for k, dry in enumerate(d for b in batches for d in b.dry)
        ]).astype(np.float32)
    else:
        wets = np.concatenate([b.wet[:, 0] for b in batches])
    chance = ((v**2 + (1 - v) ** 2) / 2).mean(axis=0)
    found = []
    for m in loaded:
        estimator = m.estimator.eval()
        apply(estimator.head, None)
        found.append(medians(estimator, wets, args.draws))
    names = [f"{p.type}{k}.{r.name}" for k, p in enumerate(task.model.processors) for r in p.ranges]
    print(f"{task.name}: {args.n} {args.split} items, {'stereo (mono mix read)' if args.stereo else 'mono'}, "
          f"median of {args.draws} draws; corr / err (1 = chance) / bias")
    print(f"{'parameter':36}" + "".join(f"{Path(s).name[:26]:>28}" for s in args.model))
    for j, name in enumerate(names):
        cells = []
        for med in found:
            corr = np.corrcoef(med[:, j], v[:, j])[0, 1] if med[:, j].std() > 0 else float("nan")
            error = med[:, j] - v[:, j]
            cells.append(f"{corr:+.2f} / {np.abs(error).mean() / chance[j]:.3f} / {error.mean():+.3f}")
        print(f"{name:36}" + "".join(f"{c:>28}" for c in cells))


if __name__ == "__main__":
    main()
