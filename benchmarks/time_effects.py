"""How closely afxest's differentiable delay and reverb match pedalboard's Delay and Reverb, and
how fast they run forward and backward.

    python benchmarks/time_effects.py [MUSIC_FILE_OR_DIR] [--tracks 4] [--repeats 10]

Match: on 5 s stereo excerpts (procedural music-like audio when no path is given), their mono
mixes, and impulses, at 22050, 44100 and 48000 Hz, over a grid of settings across each
plugin's ranges: SNR in dB against pedalboard's output, afxest in float32 and in float64
(minimum and median over clips x settings), and the share of renderings equal bit for bit.

Speed: a batch of 16 x 5 s stereo at 22050 Hz, forward, and backward with respect to the audio
and every parameter, in ms and as a ratio against a floor measured in the same run,
interleaved: one forward torch.stft (n_fft 4096, hop 1024) of the same batch (its mono mix);
afxest's compressor on the same batch for comparison.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pedalboard
import torch
from compressor_match import N_FFT, HOP, excerpts, keep_freed_memory, procedural

from afxest.audio import resample
from afxest.dsp.compressor import compressor
from afxest.dsp.delay import delay
from afxest.dsp.reverb import reverb

RATES = (22050, 44100, 48000)
SR = 22050  # the clips' rate, and the speed test's
DELAY_GRID = {
    "names": ("delay_seconds", "feedback", "mix"),
    "values": list(itertools.product([0.01, 0.05, 0.3, 0.8], [0.0, 0.3, 0.6, 1.0], [0.2, 0.5, 1.0])),
}
REVERB_GRID = {
    "names": ("room_size", "damping", "wet_level", "dry_level", "width"),
    "values": [(r, d, w, 1 - w / 2, wd) for r, d, w, wd in itertools.product([0.0, 0.5, 0.9, 1.0], [0.0, 0.5, 1.0],
                                                                            [0.1, 0.5, 1.0], [0.0, 1.0])],
}
EFFECTS = {"delay": (delay, pedalboard.Delay, DELAY_GRID), "reverb": (reverb, pedalboard.Reverb, REVERB_GRID)}


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    """SNR of est against ref in dB, float64; inf where equal."""
    err = float(np.sum((est.astype(np.float64) - ref) ** 2))
    return float("inf") if err == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / err)


def signals(clips: list[np.ndarray], sr: int) -> dict[str, list[np.ndarray]]:
    """The clips at ``sr``, their mono mixes, and a stereo impulse pair as long as one clip."""
    at = [resample(c, SR, sr).astype(np.float32) if sr != SR else c for c in clips]
    impulse = np.zeros_like(at[0])
    impulse[0, 0], impulse[1, 331] = 1.0, 0.5
    return {"music": at, "mono": [c.mean(axis=0, keepdims=True) for c in at], "impulse": [impulse]}


def match(clips: list[np.ndarray]) -> None:
    print(f"{'effect':<7} {'rate':>6} {'input':<8} {'f32 SNR min':>11} {'f32 med':>8} {'bit-exact':>9} "
          f"{'f64 SNR min':>11} {'f64 med':>8}")
    for name, (ours, plugin, grid) in EFFECTS.items():
        p = torch.tensor(grid["values"], dtype=torch.float64)
        params = {k: p[:, i] for i, k in enumerate(grid["names"])}
        for sr in RATES:
            for kind, xs in signals(clips, sr).items():
                s32, s64, exact = [], [], []
                for x in xs:
                    ref = np.stack([plugin(**dict(zip(grid["names"], g)))(x, sr) for g in grid["values"]])
                    xb = torch.from_numpy(x)[None].expand(len(grid["values"]), -1, -1)
                    y32 = ours(xb, sr, **params).numpy()
                    y64 = ours(xb.double(), sr, **params).numpy()
                    s32 += [snr_db(r, y) for r, y in zip(ref, y32)]
                    s64 += [snr_db(r, y) for r, y in zip(ref, y64)]
                    exact += [bool(np.array_equal(r, y)) for r, y in zip(ref, y32)]
                print(f"{name:<7} {sr:>6} {kind:<8} {min(s32):>11.1f} {statistics.median(s32):>8.1f} "
                      f"{100 * np.mean(exact):>8.1f}% {min(s64):>11.1f} {statistics.median(s64):>8.1f}")


def speed(repeats: int) -> None:
    batch, n = 16, 5 * SR
    x0 = torch.from_numpy(np.stack(procedural(batch, 5.0))).contiguous()
    w = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    window = torch.hann_window(N_FFT)
    gen = torch.Generator().manual_seed(1)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(batch, generator=gen)

    # the ranges for the mix task
    settings = {
        "delay": {"delay_seconds": uniform(0.05, 0.8), "feedback": uniform(0.0, 0.6), "mix": uniform(0.0, 0.5)},
        "reverb": {"room_size": uniform(0, 1), "damping": uniform(0, 1), "wet_level": uniform(0, 0.5),
                   "dry_level": uniform(0.5, 1), "width": torch.ones(batch)},
        "compressor": {"threshold_db": uniform(-40, 0), "ratio": uniform(1, 10), "attack_ms": uniform(0.5, 50),
                       "release_ms": uniform(10, 500)},
    }
    functions = {"delay": delay, "reverb": reverb, "compressor": compressor}

    def run(name: str) -> Callable[[], tuple[float, float]]:
        def go() -> tuple[float, float]:
            x = x0.clone().requires_grad_()
            p = {k: v.clone().requires_grad_() for k, v in settings[name].items()}
            t0 = time.perf_counter()
            y = functions[name](x, SR, **p)
            t1 = time.perf_counter()
            (y * w).sum().backward()
            return t1 - t0, time.perf_counter() - t1
        return go

    def floor() -> tuple[float, float]:
        t0 = time.perf_counter()
        torch.stft(x0.mean(dim=1), N_FFT, HOP, window=window, return_complex=True)
        return time.perf_counter() - t0, 0.0

    jobs = {**{m: run(m) for m in functions}, "floor: torch.stft": floor}
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in jobs}
    for job in jobs.values():
        job()
    for _ in range(repeats):
        for m, job in jobs.items():
            times[m].append(job())
    f_med = statistics.median(t for t, _ in times["floor: torch.stft"])
    print(f"\nSpeed: batch {batch} x 5 s stereo at {SR} Hz, {repeats} repeats, {torch.get_num_threads()} threads; "
          f"floor {f_med * 1e3:.1f} ms (median)")
    print(f"{'method':<18} {'fwd ms':>8} {'bwd ms':>8} {'fwd x floor':>12} {'bwd x floor':>12} {'ms per clip':>12}")
    for m, ts in times.items():
        fwd, bwd = statistics.median(t for t, _ in ts), statistics.median(t for _, t in ts)
        print(f"{m:<18} {fwd * 1e3:>8.1f} {bwd * 1e3:>8.1f} {fwd / f_med:>12.1f} {bwd / f_med:>12.1f} "
              f"{(fwd + bwd) / batch * 1e3:>12.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("music", type=Path, nargs="?", help="a music file or folder (default: procedural audio)")
    parser.add_argument("--tracks", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-match", action="store_true", help="measure the speed only")
    args = parser.parse_args()
    malloc_note = "mallopt applied" if keep_freed_memory() else "mallopt not available"
    t0 = time.perf_counter()
    reverb(torch.zeros(1, 2, 64), SR, **{k: torch.zeros(1) for k in REVERB_GRID["names"]})
    delay(torch.zeros(1, 2, 64), SR, **{k: torch.full((1,), 0.001) for k in DELAY_GRID["names"]})
    first = time.perf_counter() - t0
    print(f"torch {torch.__version__}, pedalboard {pedalboard.__version__}, {malloc_note}; "
          f"first delay + reverb call (numba import + cached loops): {first * 1e3:.0f} ms")
    if not args.no_match:
        if args.music is None:
            clips, what = procedural(args.tracks, 5.0), "procedural clips"
        else:
            clips, what = excerpts(args.music, args.tracks, 5.0), f"excerpts from {args.music}"
        print(f"{len(clips)} stereo {what}; delay grid {len(DELAY_GRID['values'])} settings, "
              f"reverb grid {len(REVERB_GRID['values'])} settings\n")
        match(clips)
    speed(args.repeats)


if __name__ == "__main__":
    main()
