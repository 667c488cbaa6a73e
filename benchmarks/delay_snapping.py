"""What snapping drawn delay times to the wet's cepstral echoes does (issue 24), on validation
items of a task with a delay: the median of 10 draws within 5 % of the true delay time, and the
coverage of the 90 % central interval of 256 draws, raw and snapped
(:func:`afxest.propose.snap_to_echoes`, intervals' draws within the peak's sample), by the true
delay's mix. The split the tolerance was chosen on; the test split's figure is
benchmarks/blind_delay.py's.

    python benchmarks/delay_snapping.py --model CHECKPOINT --data MUSIC [--n 128] [--tolerance 0.5 0.3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import afxest.propose as propose
from afxest.data import DrySource, MusicFolder
from afxest.store import load_model
from afxest.train import validation_batches

MIX_BINS = {"mix >= 0.2": (0.2, 1.0), "0.05 <= mix < 0.2": (0.05, 0.2), "mix < 0.05": (0.0, 0.05)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model name or checkpoint of a task with a delay")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--tolerance", type=float, nargs="+", default=[propose.ECHO_TOLERANCE])
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.model)
    task, model = loaded.task, loaded.estimator.eval()
    space, sr = task.model, task.sample_rate
    column = space.column("delay", "delay_seconds")
    times, mixes = space.ranges[column], space.ranges[space.column("delay", "mix")]
    folder = MusicFolder(args.data, sr, "val", min_seconds=task.clip_seconds).prepare()
    truth, mix, few, many, echoes = [], [], [], [], []
    with torch.no_grad():
        torch.manual_seed(0)
        for batch in validation_batches(task, DrySource(folder, sr), args.n, 8):
            for i in range(len(batch.wet)):
                x = batch.wet[i : i + 1]
                echoes.append(propose.echo_times(space, x[:, 0].astype(np.float64), sr))
                few.append(model.sample(torch.from_numpy(x), 10).z[0].double().numpy())
                many.append(model.sample(torch.from_numpy(x), 256).z[0].double().numpy())
                truth.append(float(times.to_physical(float(batch.v[i, column]))))
                mix.append(float(mixes.to_physical(float(batch.v[i, space.column("delay", "mix")]))))
    truth, mix = np.array(truth), np.array(mix)

    def report(label: str, snap) -> None:
        median = np.array([np.median(times.to_physical(snap(z, e, None)[:, column])) for z, e in zip(few, echoes)])
        close = np.abs(median / truth - 1) <= 0.05
        inside = []
        for k, (z, e) in enumerate(zip(many, echoes)):
            d = times.to_physical(snap(z, e, np.random.default_rng(k))[:, column])
            inside.append(np.quantile(d, 0.05) <= truth[k] <= np.quantile(d, 0.95))
        inside = np.array(inside)
        cells = []
        for name, (lo, hi) in MIX_BINS.items():
            m = (mix >= lo) & (mix < hi)
            cells.append(f"{name} ({m.sum()}): within 5 % {close[m].mean():.0%}, 90 % interval holds {inside[m].mean():.0%}")
        print(f"{label:>18}: " + "; ".join(cells))

    report("raw", lambda z, e, rng: z)
    for tolerance in args.tolerance:
        propose.ECHO_TOLERANCE = tolerance
        report(f"snapped within {tolerance:.0%}", lambda z, e, rng: propose.snap_to_echoes(space, z, e, sr, rng))


if __name__ == "__main__":
    main()
