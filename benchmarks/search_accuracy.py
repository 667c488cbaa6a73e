"""Accuracy and cost of ``afxest estimate`` with a reference, on items of a music split.

    python benchmarks/search_accuracy.py --model master --data /work/music --split val --n 8
        [--refine 0] [--effort default] [--samples 10] [--estimate-seed N] [--set NAME=VALUE ...]
        [--rate HZ] [--stereo] [--offset SAMPLES] [--length SECONDS]

Item i is drawn as ``afxest evaluate`` draws it (``default_rng([seed, 2_000_003, i])``: a dry
excerpt of the split, parameters uniform in [0, 1]^d, the wet rendered by pedalboard, or a
synth tone for ``fm``; a synth has no music to split, so its ``--split val`` tones come from a
stream of their own, ``default_rng([seed, 2_000_041, i])``, and only ``--split test`` gives
evaluate's tones), written as float WAV files at the task's rate, and estimated by
:meth:`afxest.estimate.Analyser.estimate` as ``afxest estimate WET --dry DRY`` does. Rank 1's
preset is rendered by pedalboard on the dry (or synthesised) and compared with the wet:
SI-SDR (dB) and log-mel distance (DAFx 2025 Eq. 16), with the dry's own as the Input
baseline. ``--set`` overrides a constant of :mod:`afxest.search` (``NAME``) or of another
module of afxest (``estimate.NAME``), or a field of the search efforts (``Effort.dry_trials``),
for tuning on the val split.
Printed: one line per item, then mean, median and the share of items at or above the target.

Pairs as users have them (effect tasks; any of the options below): item i is then drawn from
``default_rng([seed, 2_000_029, i])``: a ``--seconds`` (5 s) excerpt of a track of the split read from its
file at the file's own rate and channels (``--stereo``: only tracks whose channels differ,
kept in stereo; else their mono mix), resampled to ``--rate`` (256-tap windowed sinc; default:
the file's rate), the wet rendered by pedalboard at that rate in as many channels, then moved
``--offset`` samples late (zeros first; negative: its first samples dropped) and made
``--length`` seconds longer (zeros after; negative: its end cut). Rank 1 is rendered by
pedalboard on the dry at that rate and compared with the part of the wet made from the dry
(the true offset: an alignment error counts as an error), over all channels.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from afxest import search
from afxest.choices import EFFORTS
from afxest.data import DrySource, MusicFolder, make_batch
from afxest.engines import render
from afxest.estimate import Analyser, EstimateOptions
from afxest.audio import read_audio, resample, to_mono
from afxest.evaluate import ITEM_STREAM
from afxest.losses import LogMelLoss, si_sdr
from afxest.store import load_model


def corrected(document: dict) -> str:
    """Where rank 1 is corrected (afxest/correct.py): its equaliser's form and the SI-SDR (as the
    document measures it) of the best candidate without a correction; else nothing."""
    record = document["candidates"][0].get("correction")
    if record is None:
        return ""
    plain = next((c for c in document["candidates"] if "correction" not in c), None)
    form = "FIR" if record.get("fir") else "bands" if record["equaliser"] else "no equaliser"
    return f" + correction ({form}; best uncorrected: SI-SDR {plain['si_sdr']:.2f} dB)" if plain else f" + correction ({form})"


def estimate_seed(args: argparse.Namespace) -> int:
    """The seed of each estimate: ``--estimate-seed``, or the items' ``--seed``."""
    return args.seed if args.estimate_seed is None else args.estimate_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="master")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--first", type=int, default=0, help="index of the first item")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--estimate-seed", type=int, default=None,
                        help="the estimate's seed (its draws), the items kept (default: --seed)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--refine", type=int, default=None)
    parser.add_argument("--effort", default="default", choices=tuple(EFFORTS))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--rate", type=int, default=None, help="pairs at this rate (Hz)")
    parser.add_argument("--stereo", action="store_true", help="stereo pairs (tracks whose channels differ)")
    parser.add_argument("--offset", type=int, default=0, help="the wet this many samples late (negative: early)")
    parser.add_argument("--length", type=float, default=0.0, help="the wet this many seconds longer (negative: shorter)")
    parser.add_argument("--seconds", type=float, default=PAIR_SECONDS, help="the dry excerpt's length (pairs as users have them)")
    args = parser.parse_args()
    override_constants(args.set)
    if args.rate or args.stereo or args.offset or args.length or args.seconds != PAIR_SECONDS:
        return users_pairs(args)
    torch.set_num_threads(1)
    loaded = load_model(args.model, torch.device("cpu"))
    task = loaded.task
    analyser = Analyser(loaded)
    source = None
    if not task.has_source:
        folder = MusicFolder(args.data, task.sample_rate, args.split, min_seconds=task.clip_seconds).prepare()
        source = DrySource(folder, task.sample_rate)
    mel = LogMelLoss(task.sample_rate)
    options = EstimateOptions(samples=args.samples, refine=args.refine, effort=args.effort, seed=estimate_seed(args),
                              audio="none")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.first, args.first + args.n):
            stream = SYNTH_STREAMS[args.split] if task.has_source else ITEM_STREAM
            batch = make_batch(task, source, np.random.default_rng([args.seed, stream, i]), 1)
            wet_path, dry_path = Path(tmp) / f"wet{i}.wav", None
            sf.write(wet_path, batch.wet[0, 0], task.sample_rate, subtype="FLOAT")
            if batch.dry is not None:
                dry_path = Path(tmp) / f"dry{i}.wav"
                sf.write(dry_path, batch.dry[0, 0], task.sample_rate, subtype="FLOAT")
            t0 = time.perf_counter()
            document, presets, _, _ = analyser.estimate(wet_path, dry_path, options)
            seconds = time.perf_counter() - t0
            dry = None if batch.dry is None else batch.dry[0]
            y_hat = render(presets[0], dry, task.sample_rate, "pedalboard")[:, : task.clip_samples]
            wet = torch.from_numpy(batch.wet[0][None])
            est = torch.from_numpy(np.ascontiguousarray(y_hat[None]))
            row = [float(si_sdr(est, wet)), float(mel(est, wet))]
            if dry is not None:
                inp = torch.from_numpy(dry[None])
                row += [float(si_sdr(inp, wet)), float(mel(inp, wet))]
            else:
                row += [float("nan"), float("nan")]
            row.append(seconds)
            rows.append(row)
            origin = document["candidates"][0].get("refinement", {}).get("proposal", "posterior")
            origin += corrected(document)
            print(f"item {i}: SI-SDR {row[0]:7.2f} dB  log-mel {row[1]:.3g}  input {row[2]:6.2f} dB {row[3]:.3g}  "
                  f"{seconds:5.1f} s  steps {document['analysis']['refine_steps']}  from {origin}", flush=True)
    a = np.array(rows)
    print(f"{task.name} {args.split} n={len(a)} effort={args.effort} refine={args.refine} set={args.set}")
    print(f"  SI-SDR rank 1: mean {a[:, 0].mean():.2f} dB, median {np.median(a[:, 0]):.2f}, min {a[:, 0].min():.2f}")
    print(f"  log-mel rank 1: mean {a[:, 1].mean():.4g}; Input: SI-SDR {np.nanmean(a[:, 2]):.2f} dB, log-mel "
          f"{np.nanmean(a[:, 3]):.4g}; ratio of means {a[:, 1].mean() / np.nanmean(a[:, 3]):.3g}")
    print(f"  seconds per item (estimate only): mean {a[:, 4].mean():.2f}")


def override_constants(settings: list[str]) -> None:
    """``--set NAME=VALUE`` items: a constant of afxest.search (``NAME``) or of afxest.MODULE
    (``MODULE.NAME``) set to VALUE, of the constant's own type; ``Effort.FIELD``: that field of
    every search effort (afxest.choices.EFFORTS)."""
    from afxest.choices import EFFORTS

    for item in settings:
        name, value = item.split("=", 1)
        if name.startswith("Effort."):
            field = name.partition(".")[2]
            for key, effort in EFFORTS.items():
                EFFORTS[key] = dataclasses.replace(effort, **{field: type(getattr(effort, field))(value)})
            continue
        module = importlib.import_module(f"afxest.{name.rpartition('.')[0] or 'search'}")
        name = name.rpartition(".")[2]
        setattr(module, name, type(getattr(module, name))(value))


PAIR_STREAM = 2_000_029
# a synth's tones by split: test as evaluate draws them, the others apart from them (before
# session 15 every split drew evaluate's: "val" synth tones were test tones)
SYNTH_STREAMS = {"test": ITEM_STREAM, "val": 2_000_041, "train": 2_000_043}
PAIR_SECONDS = 5.0


def users_pair(files: list[Path], rng: np.random.Generator, rate: int | None, stereo: bool,
               seconds: float = PAIR_SECONDS) -> tuple[np.ndarray, int]:
    """A dry excerpt as a user has one (the module docstring): (C, frames), and its rate."""
    import soundfile

    while True:
        path = files[int(rng.integers(len(files)))]
        info = soundfile.info(str(path))
        frames = int(seconds * info.samplerate)
        if info.frames < frames or (stereo and info.channels < 2):
            continue
        start = int(rng.integers(0, info.frames - frames + 1))
        x, file_rate = soundfile.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
        x = np.ascontiguousarray(x.T[:2] if stereo else to_mono(x.T))
        rms = np.sqrt(np.mean(np.square(x, dtype=np.float64)))
        if rms < 10 ** (-40 / 20) or (stereo and np.sqrt(np.mean(np.square(x[0] - x[1], dtype=np.float64))) < 0.05 * rms):
            continue
        return x if rate is None or rate == file_rate else resample(x, file_rate, rate, "best"), rate or file_rate


def users_pairs(args) -> None:
    """The benchmark on pairs as users have them (module docstring)."""
    from afxest.data import MusicFolder

    torch.set_num_threads(1)
    loaded = load_model(args.model, torch.device("cpu"))
    task = loaded.task
    analyser = Analyser(loaded)
    files = MusicFolder(args.data, task.sample_rate, args.split).files
    options = EstimateOptions(samples=args.samples, refine=args.refine, effort=args.effort, seed=estimate_seed(args),
                              audio="none")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.first, args.first + args.n):
            rng = np.random.default_rng([args.seed, PAIR_STREAM, i])
            dry, rate = users_pair(files, rng, args.rate, args.stereo, args.seconds)
            v = rng.random(task.truth.dim)
            truth = render(task.truth.preset(v, task.name, rate), dry, rate, "pedalboard")
            d, extra = args.offset, int(round(args.length * rate))
            wet = np.concatenate([np.zeros((dry.shape[0], d), np.float32), truth], 1) if d >= 0 else truth[:, -d:]
            wet = np.concatenate([wet, np.zeros((dry.shape[0], extra), np.float32)], 1) if extra >= 0 else wet[:, :extra]
            wet_path, dry_path = Path(tmp) / f"wet{i}.wav", Path(tmp) / f"dry{i}.wav"
            sf.write(wet_path, wet.T, rate, subtype="FLOAT")
            sf.write(dry_path, dry.T, rate, subtype="FLOAT")
            t0 = time.perf_counter()
            document, presets, _, _ = analyser.estimate(wet_path, dry_path, options)
            seconds = time.perf_counter() - t0
            # the wet made from the dry: truth[:, n] is wet[:, n + d] where both exist
            a, b = max(0, -d), min(truth.shape[1], wet.shape[1] - d)
            y_hat = render(presets[0], dry, rate, "pedalboard")[:, a:b]
            target, inp = wet[:, a + d : b + d], dry[:, a:b]
            pair = [torch.from_numpy(np.ascontiguousarray(x))[None] for x in (y_hat, target, inp)]
            row = [float(si_sdr(pair[0], pair[1])), float(si_sdr(pair[2], pair[1])), seconds]
            rows.append(row)
            al = document.get("alignment") or {"offset_samples": None, "match": float("nan")}  # afxest < issue 21: none
            scored = document.get("channels", {}).get("scored")
            origin = document["candidates"][0].get("refinement", {}).get("proposal", "posterior")
            print(f"item {i}: SI-SDR {row[0]:7.2f} dB  input {row[1]:6.2f} dB  {seconds:5.1f} s  offset found "
                  f"{al['offset_samples']} (match {al['match']:.2f})  {scored} at "
                  f"{document['sample_rate']} Hz  from {origin}", flush=True)
    a = np.array(rows)
    print(f"{task.name} {args.split} n={len(a)} rate={args.rate} stereo={args.stereo} offset={args.offset} "
          f"length={args.length} seconds={args.seconds} effort={args.effort} refine={args.refine} set={args.set}")
    print(f"  SI-SDR rank 1: mean {a[:, 0].mean():.2f} dB, median {np.median(a[:, 0]):.2f}, min {a[:, 0].min():.2f}; "
          f"Input {a[:, 1].mean():.2f} dB")
    print(f"  seconds per item (estimate only): mean {a[:, 2].mean():.2f}")


if __name__ == "__main__":
    main()
