"""Whole-process cost of ``afxest estimate``, against ``python -c "import torch"`` measured in the
same run.

    python benchmarks/estimate_speed.py [--model master] [--repeats 5] [--long-minutes 10]
                                        [--memory-minutes 60] [--foreign MUSIC]

Cases (procedural music, 44.1 kHz stereo files written to a temporary folder; each case a fresh
``python -m afxest estimate`` process, as a user runs it):

* ``short``: a 5 s clip with a dry file, default settings (the search of afxest/search.py;
  issue 11 target: at most 8x the floor);
* ``short --refine 0``: the same, the network's 10 draws ranked and nothing else;
* ``blind``: the 5 s wet alone (no search; target: at most 1.5x the floor);
* ``long``: a ``--long-minutes`` file with its dry file, the wet :data:`LONG_LATE` samples late,
  default settings (target: 10 minutes within 30 s on 2 cores);
* ``memory`` (only with ``--memory-minutes``): the peak resident memory of one estimate of a
  file that long (target: an hour within about 2 GB);
* ``foreign`` (only with ``--foreign MUSIC``): a ``--long-minutes`` pair as users have one, which
  the task's chain does not hold: a real stereo track of MUSIC's val split (44.1 kHz) through
  ``benchmarks/foreign_chains.py``'s ``match-limit`` family (a matching equaliser and a
  lookahead limiter), the wet :data:`LONG_LATE` samples late; the correction stage runs on it
  (the procedural ``long`` pair's chain holds it, so it never does).

Printed: median wall seconds over ``--repeats`` runs (one run for the long cases), the ratio
against the floor (the median wall time of ``python -c "import torch"``) and each process's
peak resident memory (its VmHWM, polled). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from afxest.data import procedural_music

RATE = 44100


def _high_water_mb(pid: int) -> float:
    """VmHWM of a live process (its peak resident memory since its exec), in MB; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one child process; raises if it fails.

    The peak is the child's VmHWM polled every 10 ms until it exits (ru_maxrss would also count
    the pages it shared with this process between fork and exec)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _high_water_mb(proc.pid))
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.read().strip()}")
    return wall, peak


LONG_LATE = 12_345  # the long case's wet: this many samples late (0.28 s), as issue 21 asks


def write_pair(folder: Path, name: str, seconds: float, seed: int, late: int = 0) -> tuple[Path, Path]:
    """A stereo dry file and a wet copy (a fixed high shelf; only cost matters, so files longer
    than a minute repeat their first minute), the wet ``late`` samples late and as much longer."""
    import pedalboard

    rng = np.random.default_rng(seed)
    frames = int(seconds * RATE)
    minute = procedural_music(rng, min(frames, 60 * RATE), RATE)
    left = np.tile(minute, -(-frames // len(minute)))[:frames]
    dry = np.stack([left, np.roll(left, 441)]).astype(np.float32)
    dry *= 0.3 / max(float(np.abs(dry).max()), 1e-9)
    board = pedalboard.Pedalboard([pedalboard.HighShelfFilter(1200.0, 6.0, 0.7)])
    wet = np.concatenate([np.zeros((2, late), np.float32), board(dry, RATE)], axis=1)
    paths = folder / f"{name}-dry.flac", folder / f"{name}.flac"
    sf.write(paths[0], dry.T, RATE, subtype="PCM_24")
    sf.write(paths[1], wet.T, RATE, subtype="PCM_24")
    return paths[1], paths[0]


def write_foreign_pair(folder: Path, data: Path, seconds: float, late: int) -> tuple[Path, Path]:
    """The ``foreign`` case's pair (module docstring): foreign_chains' item 0 of the val split."""
    from foreign_chains import make_item, stereo_tracks

    from afxest.data import MusicFolder

    files = stereo_tracks([p for p in MusicFolder(data, RATE, "val").files if sf.info(str(p)).duration >= seconds])
    if not files:
        raise SystemExit(f"{data}: no stereo val track of {seconds:g} s or more")
    dry, wet, _ = make_item(files, 0, "match-limit", RATE, True, seconds)
    wet = np.concatenate([np.zeros((wet.shape[0], late)), wet], axis=1)
    paths = folder / "foreign-dry.flac", folder / "foreign.flac"
    sf.write(paths[0], dry.T.astype(np.float32), RATE, subtype="PCM_24")
    sf.write(paths[1], wet.T.astype(np.float32), RATE, subtype="PCM_24")
    return paths[1], paths[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="master", help="model name or path (default: the bundled master)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--long-minutes", type=float, default=10.0, help="0: no long case")
    ap.add_argument("--memory-minutes", type=float, default=0.0)
    ap.add_argument("--foreign", type=Path, default=None, metavar="MUSIC",
                    help="also a --long-minutes real-music pair the chain does not hold (the val split of MUSIC)")
    args = ap.parse_args()

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        short = write_pair(folder, "short", 5.0, 1)
        long = write_pair(folder, "long", 60 * args.long_minutes, 2, LONG_LATE) if args.long_minutes > 0 else None
        hour = write_pair(folder, "memory", 60 * args.memory_minutes, 3) if args.memory_minutes else None
        foreign = (write_foreign_pair(folder, args.foreign, 60 * args.long_minutes, LONG_LATE)
                   if args.foreign is not None and args.long_minutes > 0 else None)

        def estimate(pair: tuple[Path, Path], out: str, *extra: str, with_dry: bool = True) -> list[str]:
            wet, dry = pair
            (folder / out).mkdir(exist_ok=True)
            reference = ["--dry", str(dry)] if with_dry else []
            return [py, "-m", "afxest", "estimate", str(wet), *reference, "--model", args.model, "--samples", "10",
                    "-o", str(folder / out), "--force", "--no-progress", "--device", "cpu", *extra]

        timed(estimate(short, "warm"))  # page cache and numba's on-disk cache warm for all cases
        floor = [timed([py, "-c", "import torch"]) for _ in range(args.repeats)]
        runs = [timed(estimate(short, "short")) for _ in range(args.repeats)]
        floor_s = float(np.median([w for w, _ in floor]))
        print(f"floor  python -c 'import torch': {floor_s:.2f} s (median of {args.repeats}), "
              f"{max(m for _, m in floor):.0f} MB")
        rows = [("short", "5 s, dry, default", float(np.median([w for w, _ in runs])), max(m for _, m in runs))]
        for name, what, argv in (
            ("short", "5 s, dry, --refine 0", estimate(short, "refine0", "--refine", "0")),
            ("blind", "5 s, no dry", estimate(short, "blind", with_dry=False)),
        ):
            runs = [timed(argv) for _ in range(args.repeats)]
            rows.append((name, what, float(np.median([w for w, _ in runs])), max(m for _, m in runs)))
        if long is not None:
            wall, mem = timed(estimate(long, "long"))
            rows.append(("long", f"{args.long_minutes:g} min, dry, wet late", wall, mem))
        if foreign is not None:
            wall, mem = timed(estimate(foreign, "foreign"))
            rows.append(("foreign", f"{args.long_minutes:g} min real, match-limit", wall, mem))
        if hour is not None:
            wall, mem = timed(estimate(hour, "memory"))
            rows.append(("memory", f"{args.memory_minutes:g} min, dry, default", wall, mem))
    print(f"{'case':8} {'input':28} {'wall s':>8} {'x floor':>8} {'peak MB':>8}")
    for name, what, wall, mem in rows:
        print(f"{name:8} {what:28} {wall:8.2f} {wall / floor_s:8.2f} {mem:8.0f}")


if __name__ == "__main__":
    main()
