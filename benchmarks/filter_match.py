"""How closely afxest's frequency-domain biquads match pedalboard's plugins on real music, and
how fast they are.

    python benchmarks/filter_match.py MUSIC_DIR [--tracks 8]

Match: SNR (dB) of the ddsp filter against pedalboard, on 5 s excerpts of real music, over a
grid of cutoffs, gains and q for each filter type, at 22050 Hz mono and 44100 Hz stereo. Speed:
forward + backward of a two-filter cascade on a batch of 16 x 5 s at 22050 Hz, as a ratio
against a floor measured in the same run (forward + backward of torch.stft on the same batch).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import numpy as np
import pedalboard
import scipy.signal
import torch

from afxest.audio import read_audio, resample, to_mono
from afxest.dsp.filters import apply_biquads, high_shelf_coefficients
from afxest.processors import entry

PLUGINS = {"low_shelf": pedalboard.LowShelfFilter, "high_shelf": pedalboard.HighShelfFilter, "peak": pedalboard.PeakFilter}


def excerpts(folder: Path, tracks: int, seconds: float = 5.0) -> list[tuple[np.ndarray, int]]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".ogg", ".flac", ".wav", ".mp3"})
    step = max(1, len(files) // tracks)
    out = []
    for path in files[::step][:tracks]:
        audio, sr = read_audio(path)
        start = audio.shape[1] // 3
        out.append((audio[:, start : start + int(seconds * sr)], sr))
    return out


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((est - ref).astype(np.float64) ** 2)))


def timed(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("music", type=Path)
    parser.add_argument("--tracks", type=int, default=8)
    args = parser.parse_args()
    clips = excerpts(args.music, args.tracks)
    print(f"{len(clips)} excerpts of 5 s from {args.music}")
    print("SNR in dB of afxest's ddsp biquad against pedalboard (ours) and of pedalboard against")
    print("the exact float64 recursion (scipy.signal.lfilter with our coefficients; ours vs it: min)")
    print(f"{'rate':>6} {'type':<11} {'cutoff':>7} {'n':>4} {'ours min':>8} {'median':>7} {'pb-exact min':>12} {'ours-exact min':>14}")
    for rate, mono in [(22050, True), (44100, False)]:
        prepared = []
        for audio, sr in clips:
            x = resample(audio, sr, rate)
            prepared.append(to_mono(x) if mono else x)
        for kind in PLUGINS:
            for f in [30, 100, 300, 1000, 3000, 10000]:
                ours_vs_pb, pb_vs_exact, ours_vs_exact = [], [], []
                for g, q in itertools.product([-12.0, -3.0, 6.0, 20.0], [0.1, 0.7, 3.0]):
                    settings = {"cutoff_frequency_hz": f, "gain_db": g, "q": q}
                    p = {k: torch.tensor([float(v)], dtype=torch.float64) for k, v in settings.items()}
                    b, a = (c[0].numpy() for c in entry(kind).coefficients(rate, **p))
                    for x in prepared:
                        theirs = PLUGINS[kind](**settings)(x, rate)
                        ours = entry(kind).function(torch.from_numpy(x)[None], rate, **p)[0].numpy()
                        exact = scipy.signal.lfilter(b, a, x.astype(np.float64), axis=-1)
                        ours_vs_pb.append(snr_db(theirs, ours))
                        pb_vs_exact.append(snr_db(exact, theirs))
                        ours_vs_exact.append(snr_db(exact, ours))
                print(
                    f"{rate:>6} {kind:<11} {f:>7} {len(ours_vs_pb):>4} {min(ours_vs_pb):>8.1f} "
                    f"{statistics.median(ours_vs_pb):>7.1f} {min(pb_vs_exact):>12.1f} {min(ours_vs_exact):>14.1f}"
                )

    torch.manual_seed(0)
    x = torch.randn(16, 1, 5 * 22050)
    window = torch.hann_window(4096)

    def floor() -> None:
        xs = x.clone().requires_grad_()
        torch.stft(xs[:, 0], 4096, 1024, window=window, return_complex=True).abs().sum().backward()

    def cascade() -> None:
        f = torch.full((16,), 1000.0, requires_grad=True)
        g = torch.full((16,), 6.0, requires_grad=True)
        q = torch.full((16,), 0.7, requires_grad=True)
        coefs = [high_shelf_coefficients(22050, cutoff_frequency_hz=f, gain_db=g, q=q),
                 high_shelf_coefficients(22050, cutoff_frequency_hz=f * 1.5, gain_db=-g, q=q)]
        apply_biquads(x, coefs, 22050).abs().sum().backward()

    t_floor, t_ours = timed(floor), timed(cascade)
    print(f"\nspeed, batch 16 x 5 s at 22050 Hz, forward + backward (threads: {torch.get_num_threads()}):")
    print(f"  floor (torch.stft n_fft 4096 hop 1024): {t_floor * 1e3:.1f} ms")
    print(f"  two-biquad cascade:                     {t_ours * 1e3:.1f} ms = {t_ours / t_floor:.2f} x floor")


if __name__ == "__main__":
    main()
