"""How often :func:`afxest.align.align` finds the wet's offset to the sample, on pairs as users
have them.

    python benchmarks/alignment_accuracy.py --data /work/music --split val --n 48 --rate 44100
        [--stereo] [--offset 64 --offset -777] [--model master]

Pair i is drawn as ``benchmarks/search_accuracy.py`` draws its pairs as users have them (a 5 s
excerpt of a track of the split at ``--rate``, ``--stereo`` or its mono mix, the wet rendered by
pedalboard through the task's chain with parameters uniform in [0, 1]^d), then moved by each
``--offset`` in turn (zeros first when late; its first samples dropped when early). The pair is
aligned as :func:`afxest.estimate.reference_of` aligns it (the mono mixes at the pair's rate).
Printed: each pair's offset error in samples (found minus true) and, per offset, how many pairs
are off by a sample or more; the errors are whole samples (the true offsets are too).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from afxest.align import align
from afxest.audio import to_mono
from afxest.data import MusicFolder
from afxest.engines import render
from afxest.store import load_model
from search_accuracy import PAIR_STREAM, users_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--stereo", action="store_true")
    parser.add_argument("--offset", type=int, action="append", help="samples late (negative: early); repeatable")
    parser.add_argument("--model", default="master", help="the model whose task's chain makes the wets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    offsets = args.offset or [64, -777]
    task = load_model(args.model, torch.device("cpu")).task
    files = MusicFolder(args.data, task.sample_rate, args.split).files
    off = dict.fromkeys(offsets, 0)
    for i in range(args.first, args.first + args.n):
        rng = np.random.default_rng([args.seed, PAIR_STREAM, i])
        dry, rate = users_pair(files, rng, args.rate, args.stereo)
        truth = render(task.truth.preset(rng.random(task.truth.dim), task.name, rate), dry, rate, "pedalboard")
        errors = []
        for d in offsets:
            wet = np.concatenate([np.zeros((truth.shape[0], d), np.float32), truth], 1) if d >= 0 else truth[:, -d:]
            error = align(to_mono(dry)[0], to_mono(wet)[0], rate).offset - d
            off[d] += error != 0
            errors.append(f"{d:+d}: {error:+d}")
        print(f"pair {i}: " + "  ".join(errors), flush=True)
    print(f"{task.name} {args.split} n={args.n} rate={args.rate} stereo={args.stereo}: pairs off by a sample or more, "
          + ", ".join(f"offset {d:+d}: {k} of {args.n}" for d, k in off.items()))


if __name__ == "__main__":
    main()
