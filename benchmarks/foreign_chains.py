"""How far ``afxest estimate WET --dry DRY`` gets on mastering chains that pedalboard did not make.

    python benchmarks/foreign_chains.py --data /work/music --split test --n 16 --out /tmp/foreign
        [--seed 0] [--no-estimate] [-- EXTRA ESTIMATE OPTIONS]

Item i (its own generator ``default_rng([seed, STREAM, i])``): a 5 s excerpt of the split's
music at 22050 Hz mono (the master task's rate) and a chain of the master task's kind, its
settings drawn uniformly in the ``master`` task's normalised ranges (afxest/tasks.py) but
rendered by the implementation written here, independently of pedalboard and of afxest:

* EQ: a low shelf, three peaks and a high shelf from the RBJ Audio EQ Cookbook in float64
  second-order sections (``scipy.signal.sosfilt``), with the cookbook's *other* width
  conventions: the shelves by their slope S = q / 1.5 (S = 1: the steepest monotonic shelf;
  pedalboard reads q as a Q), the peaks by their bandwidth BW = 1 / q octaves (digital form,
  alpha = sin w0 sinh(ln 2 / 2 BW w0 / sin w0); pedalboard: alpha = sin w0 / (2 Q));
* compressor: feed-forward, RMS level detector (one-pole mean square, 5 ms), a soft knee of
  6 dB (quadratic), the gain reduction smoothed in dB by attack and release one-poles
  (Giannoulis, Massberg & Reiss, JAES 2012; pedalboard: peak detector, hard knee, smoothing of
  the level);
* make-up gain, then a tanh soft clipper c tanh(x / c) with c the clipping level (pedalboard:
  a hard clipper).

The dry and wet are written as float WAV files to ``OUT/items``; unless ``--no-estimate``, each
is estimated as a user would, in process: ``afxest estimate WET --dry DRY -o OUT/estimates
--no-audio`` (default settings), and rank 1's log-mel distance to the wet (DAFx 2025 Eq. 16,
from estimate.json: pedalboard's render of rank 1) is compared with the dry's own (the Input
baseline of the document). Printed: one line per item, then means and the ratio of means.
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

from afxest.data import MusicFolder
from afxest.tasks import TASKS

STREAM = 2_000_041  # seeds of the foreign-chain items
SECONDS = 5.0
KNEE_DB = 6.0
RMS_MS = 5.0


def rbj_sos(kind: str, f0: float, gain_db: float, width: float, rate: float) -> np.ndarray:
    """One RBJ cookbook biquad as a normalised second-order section (1, 6): ``width`` is the
    shelf slope S for shelves and the bandwidth in octaves for a peak."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / rate
    cos_w, sin_w = math.cos(w0), math.sin(w0)
    if kind == "peak":
        alpha = sin_w * math.sinh(math.log(2) / 2 * width * w0 / sin_w)
        b = [1 + alpha * a, -2 * cos_w, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cos_w, 1 - alpha / a]
    else:
        alpha = sin_w / 2 * math.sqrt((a + 1 / a) * (1 / width - 1) + 2)
        r = 2 * math.sqrt(a) * alpha
        if kind == "low_shelf":
            b = [a * ((a + 1) - (a - 1) * cos_w + r), 2 * a * ((a - 1) - (a + 1) * cos_w), a * ((a + 1) - (a - 1) * cos_w - r)]
            den = [(a + 1) + (a - 1) * cos_w + r, -2 * ((a - 1) + (a + 1) * cos_w), (a + 1) + (a - 1) * cos_w - r]
        else:
            b = [a * ((a + 1) + (a - 1) * cos_w + r), -2 * a * ((a - 1) + (a + 1) * cos_w), a * ((a + 1) + (a - 1) * cos_w - r)]
            den = [(a + 1) - (a - 1) * cos_w + r, 2 * ((a - 1) - (a + 1) * cos_w), (a + 1) - (a - 1) * cos_w - r]
    return np.array([b + den]) / den[0]


def one_pole(time_ms: float, rate: float) -> float:
    """The coefficient of a one-pole smoother with time constant ``time_ms``."""
    return math.exp(-1000.0 / (time_ms * rate))


def rms_soft_knee_compressor(x: np.ndarray, threshold_db: float, ratio: float, attack_ms: float, release_ms: float,
                             rate: float) -> np.ndarray:
    """Feed-forward compressor: RMS level in dB, a quadratic soft knee of KNEE_DB, the gain
    reduction smoothed by attack / release one-poles in dB (Giannoulis et al. 2012, Eqs. 4, 17)."""
    c = one_pole(RMS_MS, rate)
    power = scipy.signal.lfilter([1 - c], [1, -c], x * x)
    level = 10 * np.log10(power + 1e-12)
    over = level - threshold_db
    slope = 1 / ratio - 1
    target = np.where(2 * over < -KNEE_DB, 0.0,
                      np.where(2 * np.abs(over) <= KNEE_DB, slope * (over + KNEE_DB / 2) ** 2 / (2 * KNEE_DB), slope * over))
    c_att, c_rel = one_pole(attack_ms, rate), one_pole(release_ms, rate)
    gain = np.empty_like(target)
    g = 0.0
    for n, t in enumerate(target.tolist()):
        k = c_att if t < g else c_rel  # more reduction: attack
        g = k * g + (1 - k) * t
        gain[n] = g
    return x * 10 ** (gain / 20)


def foreign_chain(x: np.ndarray, preset, rate: float) -> np.ndarray:
    """The master task's chain (its processors in order) rendered by this module's
    implementation; ``preset`` gives the settings in physical units. (T,) float64."""
    y = np.asarray(x, np.float64)
    for e in preset.effects:
        p = e.params
        if e.type in ("low_shelf", "high_shelf"):
            y = scipy.signal.sosfilt(rbj_sos(e.type, p["cutoff_frequency_hz"], p["gain_db"], p["q"] / 1.5, rate), y)
        elif e.type == "peak":
            y = scipy.signal.sosfilt(rbj_sos("peak", p["cutoff_frequency_hz"], p["gain_db"], 1 / p["q"], rate), y)
        elif e.type == "compressor":
            y = rms_soft_knee_compressor(y, p["threshold_db"], p["ratio"], p["attack_ms"], p["release_ms"], rate)
        elif e.type == "gain":
            y = y * 10 ** (p["gain_db"] / 20)
        elif e.type == "clipping":
            c = 10 ** (p["threshold_db"] / 20)
            y = c * np.tanh(y / c)
        else:
            raise ValueError(f"no foreign implementation of {e.type}")
    return y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-estimate", action="store_true")
    parser.add_argument("extra", nargs="*", help="further options of afxest estimate (after --)")
    args = parser.parse_args()
    task = TASKS["master"]
    rate = task.sample_rate
    folder = MusicFolder(args.data, rate, args.split, min_seconds=SECONDS).prepare()
    items = args.out / "items"
    items.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(args.n):
        rng = np.random.default_rng([args.seed, STREAM, i])
        dry = folder.excerpt(rng, int(SECONDS * rate)).astype(np.float64)
        preset = task.model.preset(rng.uniform(size=task.model.dim), task.name, rate)
        wet = foreign_chain(dry, preset, rate)
        wet_path, dry_path = items / f"item{i:03d}-wet.wav", items / f"item{i:03d}-dry.wav"
        sf.write(wet_path, wet.astype(np.float32), rate, subtype="FLOAT")
        sf.write(dry_path, dry.astype(np.float32), rate, subtype="FLOAT")
        (items / f"item{i:03d}-truth.json").write_text(json.dumps(preset.to_dict(), indent=2) + "\n")
        pairs.append((wet_path, dry_path))
    print(f"wrote {len(pairs)} items to {items}", flush=True)
    if args.no_estimate:
        return
    from afxest.cli import main as afxest

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
    print(f"master, foreign chains, {args.split} n={len(a)} seed={args.seed} options={args.extra}")
    print(f"  log-mel rank 1: mean {a[:, 0].mean():.4g}, median {np.median(a[:, 0]):.4g}; Input: mean {a[:, 1].mean():.4g}; "
          f"ratio of means {a[:, 0].mean() / a[:, 1].mean():.3g}; per-item ratio median {np.median(ratios):.3g}, "
          f"max {ratios.max():.3g}, items at or below 1/20: {int((ratios <= 0.05).sum())}/{len(a)}")
    print(f"  SI-SDR rank 1: mean {a[:, 2].mean():.2f} dB, median {np.median(a[:, 2]):.2f}; Input {a[:, 3].mean():.2f} dB")


if __name__ == "__main__":
    main()
