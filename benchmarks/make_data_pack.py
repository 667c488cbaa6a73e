"""A compact pack of training music for a GPU machine lent for a few minutes (issue 10).

    python benchmarks/make_data_pack.py --music MUSIC --out PACK [--max-mib 44] [--rate 22050]

The device machine receives at most 64 MiB with the working tree and cannot reach the music, so
``afxest train --data PACK`` there reads this: chunks of 10 s, evenly spaced through every
track of the train and validation splits of ``MUSIC`` (never the test split), resampled to
``--rate``, mono, Ogg Vorbis (about 6 KiB per second), as many seconds per track as
``--max-mib`` allows. Each file is named so that :func:`afxest.data.split_of` puts it in the
split its track came from (a counter is appended to the name until the hash agrees), so a
validation track stays validation and nothing of the test split travels. Prints what it wrote.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from afxest.data import MusicFolder, split_of

CHUNK_SECONDS = 10.0
OGG_KIB_PER_SECOND = 6.5  # measured on this music at 22050 Hz mono (Vorbis, libsndfile's default quality)


def pack_name(split: str, track: int, chunk: int) -> str:
    """``<split>-<track>-<chunk>-<n>.ogg`` with the smallest n whose hash lands in ``split``."""
    n = 0
    while split_of(name := f"{split}-{track:04d}-{chunk:02d}-{n}.ogg") != split:
        n += 1
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--music", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-mib", type=float, default=44.0)
    ap.add_argument("--rate", type=int, default=22050)
    args = ap.parse_args()
    folders = {s: MusicFolder(args.music, args.rate, s, min_seconds=CHUNK_SECONDS).prepare() for s in ("train", "val")}
    tracks = [(s, t) for s, f in folders.items() for t in f.tracks]
    budget_s = args.max_mib * 1024 / OGG_KIB_PER_SECOND
    per_track = max(1, int(budget_s / len(tracks) // CHUNK_SECONDS))
    args.out.mkdir(parents=True, exist_ok=True)
    chunk = int(CHUNK_SECONDS * args.rate)
    written = {"train": 0.0, "val": 0.0}
    for i, (split, track) in enumerate(tracks):
        audio = np.load(track.cache, mmap_mode="r")
        count = min(per_track, track.frames // chunk)
        starts = np.linspace(0, track.frames - chunk, count).astype(int)
        for k, start in enumerate(starts):
            sf.write(args.out / pack_name(split, i, k), np.asarray(audio[start : start + chunk]), args.rate,
                     format="OGG", subtype="VORBIS")
            written[split] += CHUNK_SECONDS
    size = sum(p.stat().st_size for p in args.out.iterdir()) / 2**20
    print(f"{args.out}: {size:.1f} MiB; train {written['train'] / 3600:.2f} h from {len(folders['train'].tracks)} "
          f"tracks, val {written['val'] / 3600:.2f} h from {len(folders['val'].tracks)} tracks "
          f"({per_track} chunks of {CHUNK_SECONDS:g} s per track at most)")


if __name__ == "__main__":
    main()
