"""The blind delay of a task whose chain has one (issue 24): from an ``afxest evaluate`` report's
results.csv, on how many items the median of the candidates' delay times lies within 5 % of the
truth, by the true delay's mix; and the best candidate's log-mel over the Input's.

    afxest evaluate --model MODEL --data MUSIC --n 32 --samples 10 --out REPORT
    python benchmarks/blind_delay.py REPORT [--task mix]

The candidates are evaluate's (the estimate's draws, delay times snapped to the wet's cepstral
echoes: :func:`afxest.propose.snap_to_echoes`); the Input baseline is evaluate's (the dry scored
as the estimate). The issue's target: within 5 % on at least 80 % of the items of mix >= 0.2,
and the best of 10 draws' log-mel at most 1/4 of the Input's.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from afxest.tasks import TASKS

WITHIN = 0.05
MIX_BINS = [(0.2, 0.51), (0.05, 0.2), (0.0, 0.05)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="an afxest evaluate output folder")
    parser.add_argument("--task", default="mix")
    args = parser.parse_args()
    space = TASKS[args.task].model
    time_name, mix_name = (space.names[space.column("delay", p)] for p in ("delay_seconds", "mix"))
    times, mixes = space.ranges[space.column("delay", "delay_seconds")], space.ranges[space.column("delay", "mix")]
    rows = list(csv.DictReader((args.report / "results.csv").open()))
    items = sorted({int(r["item"]) for r in rows})
    truth_time, truth_mix, median, best, inputs = [], [], [], [], []
    for i in items:
        mine = [r for r in rows if int(r["item"]) == i]
        truth = next(r for r in mine if r["kind"] == "truth")
        candidates = [r for r in mine if r["kind"] == "model"]
        truth_time.append(float(times.to_physical(float(truth[time_name]))))
        truth_mix.append(float(mixes.to_physical(float(truth[mix_name]))))
        median.append(float(np.median(times.to_physical(np.array([float(r[time_name]) for r in candidates])))))
        best.append(min(float(r["mel"]) for r in candidates))
        inputs.append(float(next(r for r in mine if r["kind"] == "input")["mel"]))
    truth_time, truth_mix, median = np.array(truth_time), np.array(truth_mix), np.array(median)
    close = np.abs(median / truth_time - 1) <= WITHIN
    print(f"{len(items)} items, {len(candidates)} candidates each (the last item's)")
    for lo, hi in MIX_BINS:
        inside = (truth_mix >= lo) & (truth_mix < hi)
        if inside.any():
            print(f"delay mix in [{lo}, {min(hi, 0.5)}]: median delay time within {WITHIN:.0%} of the truth on "
                  f"{close[inside].sum()} of {inside.sum()} items ({close[inside].mean():.0%})")
    ratio = np.array(best) / np.array(inputs)
    print(f"best candidate's log-mel over the Input's: ratio of means 1/{np.mean(inputs) / np.mean(best):.1f}, "
          f"per item median 1/{1 / np.median(ratio):.1f}, worst 1/{1 / ratio.max():.1f}; "
          f"at most 1/4 on {np.sum(ratio <= 0.25)} of {len(items)} items")


if __name__ == "__main__":
    main()
