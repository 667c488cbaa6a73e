"""How far ``afxest estimate WET --dry DRY`` gets on mastering chains that pedalboard did not make.

    python benchmarks/foreign_chains.py --data /work/music --split test --n 12 --out /tmp/foreign
        [--family cookbook|match-limit|compander] [--rate HZ] [--stereo] [--seed 0] [--seconds 5]
        [--no-estimate] [--set NAME=VALUE ...] [-- EXTRA ESTIMATE OPTIONS]

Item i: a 5 s (`--seconds`) excerpt of a track of the split drawn from ``default_rng([seed, STREAM, i])`` as
``benchmarks/search_accuracy.py``'s pairs as users have them draw one (``users_pair``: read at
the file's rate and channels; ``--stereo``: tracks whose channels differ, kept in stereo, else
their mono mix), resampled to ``--rate`` (default: the master task's, 22050 Hz). Every family
gets the same excerpts; its settings come from ``default_rng([seed, STREAM, i, family])``.
The wet is rendered by a family written in ``benchmarks/foreign_families.py`` (numpy / scipy,
independently of pedalboard and of afxest):

* ``cookbook`` (the default, the first family): the master task's chain, its settings drawn
  uniformly in the master task's normalised ranges (afxest/tasks.py): RBJ cookbook biquads with
  the cookbook's other width conventions (shelves by slope S = q / 1.5, peaks by bandwidth
  1 / q octaves), a feed-forward RMS compressor (5 ms) with a 6 dB soft knee and its gain
  smoothed in dB (Giannoulis, Massberg & Reiss, JAES 2012), make-up gain, a tanh clipper;
  each channel on its own;
* ``match-limit``: a matching equaliser, as a reference-matching mastering tool makes one: the
  ratio of another track's long-term average spectrum (four 5 s excerpts of another track of
  the split, their mono mix) to the dry's, both smoothed to 1 / b octave (b uniform in [6,
  12]), clamped to +-12 dB, power-neutral on the dry; a linear-phase FIR of about 0.19 s
  (4095 taps at 22050 Hz, 8191 at 44.1 kHz; windowed frequency sampling), its latency
  compensated. Linear phase because mastering matching equalisers work in linear phase (no
  phase distortion of the master), which is also the harder case here: no minimum-phase
  biquad chain has its phase. Then a gain that puts the peak ``drive`` dB (uniform in [4, 10])
  over the ceiling, and a lookahead brickwall limiter (sample peak, channels linked): ceiling
  uniform in [-1, -0.3] dBFS, lookahead uniform in [1.5, 5] ms, release log-uniform in [20,
  300] ms;
* ``compander``: a low shelf (40-250 Hz, +-6 dB, slope S in [0.3, 1]), three peaks (80-8000
  Hz, +-8 dB, Q in [0.4, 3]) and a high shelf (2-8 kHz, +-6 dB, S in [0.3, 1]) made from
  RBJ's analog prototypes by the matched-z transform (frequencies log-uniform, the rest
  uniform); then a compander, channels linked, on an RMS level (5-30 ms) with gain smoothing
  (attack 1-20 ms, release 50-300 ms), whose static curve has four segments relative to the
  EQ'd excerpt's RMS level L: downward expansion 1:1.5 to 1:3 below L - [20, 30] dB (6 dB
  knee), 1:1, compression 1.5:1 to 4:1 above L - [2, 10] dB with a wide knee (10-20 dB), and
  5:1 to 20:1 above L + [0, 6] dB (4 dB knee); make-up gain: the curve's reduction at L plus
  [0, 3] dB.

The dry, the wet and the settings (``-truth.json``) are written to ``OUT/items``; unless
``--no-estimate``, each pair is estimated as a user would, in process: ``afxest estimate WET
--dry DRY -o OUT/estimates --no-audio`` (default settings), and rank 1's log-mel distance to
the wet (DAFx 2025 Eq. 16) and SI-SDR (from estimate.json: pedalboard's render of rank 1 on
the dry, at the pair's rate and channels) are compared with the dry's own (the document's
Input baseline). Printed: one line per item, then means, the ratio of means and the median of
the per-item ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf

import foreign_families as ff
from afxest.data import MusicFolder
from afxest.tasks import TASKS
from search_accuracy import PAIR_SECONDS, override_constants, users_pair

STREAM = 2_000_041  # seeds of the foreign-chain items
FAMILIES = ("cookbook", "match-limit", "compander")
REFERENCE_EXCERPTS = 4  # 5 s excerpts of the other track whose spectrum match-limit follows
MATCH_MAX_DB = 12.0


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A draw log-uniform in [lo, hi]."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def cookbook_item(dry: np.ndarray, rate: int, rng: np.random.Generator, reference) -> tuple[np.ndarray, dict]:
    """The cookbook family (module docstring): the wet and its settings."""
    task = TASKS["master"]
    preset = task.model.preset(rng.uniform(size=task.model.dim), task.name, rate)
    return ff.cookbook_chain(dry, preset, rate), preset.to_dict()


def match_limit_item(dry: np.ndarray, rate: int, rng: np.random.Generator, reference) -> tuple[np.ndarray, dict]:
    """The match-limit family (module docstring): the wet and its settings."""
    nfft = 2 ** round(math.log2(0.186 * rate))
    freqs, source = ff.ltas(dry, nfft, rate)
    path, excerpts = reference(rng)
    target = np.mean([ff.ltas(x, nfft, rate)[1] for x in excerpts], axis=0)
    s = {"reference_track": path.name, "smoothing_octaves": 1 / rng.uniform(6, 12), "max_db": MATCH_MAX_DB,
         "taps": nfft - 1, "drive_db": rng.uniform(4, 10), "ceiling_db": rng.uniform(-1, -0.3),
         "lookahead_ms": rng.uniform(1.5, 5), "release_ms": log_uniform(rng, 20, 300)}
    curve = ff.match_curve_db(source, target, freqs, s["smoothing_octaves"], MATCH_MAX_DB)
    y = ff.apply_fir(dry, ff.matching_fir(curve, freqs, s["taps"], rate))
    s["input_gain_db"] = s["ceiling_db"] + s["drive_db"] - 20 * math.log10(np.abs(y).max())
    s["curve_db_min_max"] = [float(curve.min()), float(curve.max())]
    y = y * 10 ** (s["input_gain_db"] / 20)
    return ff.brickwall_limiter(y, s["ceiling_db"], s["release_ms"], s["lookahead_ms"], rate), s


def compander_item(dry: np.ndarray, rate: int, rng: np.random.Generator, reference) -> tuple[np.ndarray, dict]:
    """The compander family (module docstring): the wet and its settings."""
    bands = [("low_shelf", log_uniform(rng, 40, 250), rng.uniform(-6, 6), rng.uniform(0.3, 1.0))]
    bands += [("peak", log_uniform(rng, 80, 8000), rng.uniform(-8, 8), rng.uniform(0.4, 3.0)) for _ in range(3)]
    bands += [("high_shelf", log_uniform(rng, 2000, 8000), rng.uniform(-6, 6), rng.uniform(0.3, 1.0))]
    y = np.asarray(dry, np.float64)
    for kind, f0, gain_db, width in bands:
        q = width if kind == "peak" else ff.shelf_q(gain_db, width)
        y = scipy.signal.sosfilt(ff.matched_z_sos(kind, f0, gain_db, q, rate), y)
    level = 10 * math.log10(np.mean(y * y))
    curve = ff.Curve(thresholds=(level - rng.uniform(20, 30), level - rng.uniform(2, 10), level + rng.uniform(0, 6)),
                     slopes=(rng.uniform(1.5, 3), 1.0, 1 / rng.uniform(1.5, 4), 1 / rng.uniform(5, 20)),
                     knees=(6.0, rng.uniform(10, 20), 4.0))
    s = {"bands": [{"type": k, "frequency_hz": f, "gain_db": g, ("q" if k == "peak" else "slope"): w}
                   for k, f, g, w in bands],
         "curve": {"thresholds_db": curve.thresholds, "slopes": curve.slopes, "knees_db": curve.knees},
         "rms_ms": rng.uniform(5, 30), "attack_ms": rng.uniform(1, 20), "release_ms": rng.uniform(50, 300),
         "makeup_db": level - float(curve(level)) + rng.uniform(0, 3)}
    y = ff.compander(y, curve, s["rms_ms"], s["attack_ms"], s["release_ms"], rate)
    return y * 10 ** (s["makeup_db"] / 20), s


ITEMS = {"cookbook": cookbook_item, "match-limit": match_limit_item, "compander": compander_item}


def stereo_tracks(files: list[Path]) -> list[Path]:
    """The tracks whose channels differ (``users_pair``'s stereo test on their first 30 s), so
    that a stereo excerpt of each exists."""
    kept = []
    for path in files:
        x, rate = sf.read(str(path), frames=int(30 * sf.info(str(path)).samplerate), dtype="float32", always_2d=True)
        if x.shape[1] >= 2 and np.sqrt(np.mean(np.square(x[:, 0] - x[:, 1]))) >= 0.05 * np.sqrt(np.mean(np.square(x))):
            kept.append(path)
    return kept


def make_item(files: list[Path], i: int, family: str, rate: int, stereo: bool, seconds: float,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Item ``i`` (module docstring): its dry and wet, (C, T) float64 at ``rate``, and its truth
    (the family, the dry's track, the settings), from the split's ``files``."""
    rng = np.random.default_rng([seed, STREAM, i])
    k = int(rng.integers(len(files)))
    dry = users_pair([files[k]], rng, rate, stereo, seconds)[0].astype(np.float64)
    others = files[:k] + files[k + 1 :]

    def reference(r: np.random.Generator) -> tuple[Path, list[np.ndarray]]:
        """Another track of the split and REFERENCE_EXCERPTS mono excerpts of it."""
        path = others[int(r.integers(len(others)))]
        return path, [users_pair([path], r, rate, False)[0][0] for _ in range(REFERENCE_EXCERPTS)]

    wet, settings = ITEMS[family](dry, rate, np.random.default_rng([seed, STREAM, i, FAMILIES.index(family)]), reference)
    return dry, wet, {"family": family, "dry_track": files[k].name, "settings": settings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--family", default="cookbook", choices=FAMILIES)
    parser.add_argument("--rate", type=int, default=TASKS["master"].sample_rate, help="pairs at this rate (Hz)")
    parser.add_argument("--stereo", action="store_true", help="stereo pairs (tracks whose channels differ)")
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=PAIR_SECONDS, help="the dry excerpt's length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-estimate", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a constant of afxest (as search_accuracy.py's --set: correct.SEARCH_EXCERPTS=12)")
    parser.add_argument("extra", nargs="*", help="further options of afxest estimate (after --)")
    args = parser.parse_args()
    rate = args.rate
    files = [p for p in MusicFolder(args.data, rate, args.split).files if sf.info(str(p)).duration >= args.seconds]
    files = stereo_tracks(files) if args.stereo else files
    items = args.out / "items"
    items.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(args.n):
        dry, wet, truth = make_item(files, i, args.family, rate, args.stereo, args.seconds, args.seed)
        stem = f"item{i:03d}"
        sf.write(items / f"{stem}-wet.wav", wet.T.astype(np.float32), rate, subtype="FLOAT")
        sf.write(items / f"{stem}-dry.wav", dry.T.astype(np.float32), rate, subtype="FLOAT")
        (items / f"{stem}-truth.json").write_text(json.dumps(truth, indent=2) + "\n")
        pairs.append((items / f"{stem}-wet.wav", items / f"{stem}-dry.wav"))
    print(f"wrote {len(pairs)} {args.family} items to {items}", flush=True)
    if args.no_estimate:
        return
    from afxest.cli import main as afxest

    override_constants(args.set)

    rows = []
    for wet_path, dry_path in pairs:
        code = afxest(["estimate", str(wet_path), "--dry", str(dry_path), "-o", str(args.out / "estimates"),
                       "--no-audio", "--no-progress", "--force", *args.extra])
        if code != 0:
            sys.exit(f"afxest estimate failed on {wet_path} (exit {code})")
        doc = json.loads((args.out / "estimates" / wet_path.stem / "estimate.json").read_text())
        top = doc["candidates"][0]
        rows.append([top["log_mel"], doc["baseline"]["log_mel"], top["si_sdr"], doc["baseline"]["si_sdr"]])
        origin = top.get("refinement", {}).get("proposal", "draw")
        print(f"{wet_path.stem}: log-mel rank 1 {rows[-1][0]:.4g}, Input {rows[-1][1]:.4g} (ratio {rows[-1][0] / rows[-1][1]:.3g}); "
              f"SI-SDR {rows[-1][2]:.2f} dB, Input {rows[-1][3]:.2f} dB; from {origin}", flush=True)
    a = np.array(rows)
    ratios = a[:, 0] / a[:, 1]
    print(f"master, foreign family {args.family}, {args.split} n={len(a)} rate={rate} stereo={args.stereo} "
          f"seed={args.seed} options={args.extra} set={args.set}")
    print(f"  log-mel rank 1: mean {a[:, 0].mean():.4g}, median {np.median(a[:, 0]):.4g}; Input: mean {a[:, 1].mean():.4g}; "
          f"ratio of means {a[:, 0].mean() / a[:, 1].mean():.3g} (1/{a[:, 1].mean() / a[:, 0].mean():.0f}); "
          f"per-item ratio median {np.median(ratios):.3g} (1/{1 / np.median(ratios):.0f}), max {ratios.max():.3g}, "
          f"items at or below 1/20: {int((ratios <= 0.05).sum())}/{len(a)}")
    print(f"  SI-SDR rank 1: mean {a[:, 2].mean():.2f} dB, median {np.median(a[:, 2]):.2f}; "
          f"Input: mean {a[:, 3].mean():.2f} dB, median {np.median(a[:, 3]):.2f}")


if __name__ == "__main__":
    main()
