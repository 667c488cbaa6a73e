"""How closely afxest's differentiable compressor, and torchcomp, match pedalboard.Compressor on
music, and how fast they run forward + backward.

    python benchmarks/compressor_match.py [MUSIC_FILE_OR_DIR] [--tracks 8] [--repeats 15]

Match: over a grid of threshold, ratio, attack and release, on 5 s stereo excerpts at 22050 Hz
(procedural music-like audio when no path is given): SNR in dB against pedalboard's output, and
the log-mel distance mean((ln(mel(y) + 1) - ln(mel(ref) + 1))^2), 128 Slaney mels of the power
spectrogram, n_fft 4096, hop 1024 (the papers' training loss).

Methods:
  afxest       afxest.dsp.compressor.compressor (JUCE's algorithm, numba loops)
  tc-core      torchcomp's recursion compressor_core used as JUCE's peak detector on |x|
               (coefficients 1 - c, attack/release arguments swapped), gain curve in torch:
               the closest torchcomp gets, and the same algorithm as JUCE
  tc-compexp   torchcomp's public compressor compexp_gain on the instantaneous peak |x|
               (smoothing in the gain domain), attack/release coefficients 1 - c as in JUCE
  (input)      the unprocessed input, for scale

Speed: forward + backward (w.r.t. audio and all four parameters) on a batch of 16 x 5 s mono at
22050 Hz, as milliseconds and as a ratio against a floor measured in the same run, interleaved:
one forward torch.stft (n_fft 4096, hop 1024) of the same batch.

torchcomp is optional (pip install torchcomp); without it its rows are skipped.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pedalboard
import torch

from afxest.audio import read_audio, resample

SR = 22050
N_FFT, HOP, N_MELS = 4096, 1024, 128
GRID = list(
    itertools.product(
        [-40.0, -30.0, -20.0, -10.0, 0.0],  # threshold_db
        [2.0, 4.0, 10.0],  # ratio
        [0.0, 0.5, 5.0, 50.0],  # attack_ms
        [10.0, 100.0, 500.0],  # release_ms
    )
)
T = torch.Tensor
Method = Callable[[T, T, T, T, T], T]  # (x, threshold_db, ratio, attack_ms, release_ms) -> y


# --- audio ---------------------------------------------------------------------------------


def excerpts(source: Path, tracks: int, seconds: float) -> list[np.ndarray]:
    exts = {".ogg", ".flac", ".wav", ".mp3"}
    if source.is_file():
        files = [source]
    else:
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in exts)
    if not files:
        sys.exit(f"no audio files under {source}")
    step = max(1, len(files) // tracks)
    out = []
    for path in files[::step][:tracks]:
        audio, sr = read_audio(path)
        audio = resample(audio, sr, SR) if sr != SR else audio
        if audio.shape[0] == 1:
            audio = np.concatenate([audio, audio])
        start = audio.shape[1] // 3
        clip = audio[:2, start : start + int(seconds * SR)]
        if clip.shape[1] == int(seconds * SR) and np.abs(clip).max() > 1e-4:
            out.append(np.ascontiguousarray(clip, dtype=np.float32))
    return out


def procedural(count: int, seconds: float) -> list[np.ndarray]:
    """Stereo music-like clips: harmonic notes with envelopes, noise bursts, varying loudness."""
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    clips = []
    for _ in range(count):
        out = np.zeros((2, n))
        start = 0.0
        while start < seconds:
            dur, f0 = rng.uniform(0.05, 0.5), 55.0 * 2 ** (rng.integers(0, 36) / 12)
            amp, pan = 10 ** (rng.uniform(-40, 0) / 20), rng.uniform(0.1, 0.9)
            m = (t >= start) & (t < start + dur)
            tt = t[m] - start
            rise, decay = rng.uniform(0.001, 0.02), rng.uniform(0.03, 0.4)
            env = (1 - np.exp(-tt / rise)) * np.exp(-tt / decay)
            note = sum(np.sin(2 * np.pi * k * f0 * tt + rng.uniform(0, 6.3)) / k for k in range(1, 8))
            out[0, m] += amp * (1 - pan) * env * note
            out[1, m] += amp * pan * env * note
            if rng.random() < 0.3:
                out[:, m] += amp * rng.standard_normal(m.sum()) * np.exp(-tt / 0.02)
            start += rng.uniform(0.03, 0.25)
        clips.append((0.9 * out / np.abs(out).max()).astype(np.float32))
    return clips


# --- metrics -------------------------------------------------------------------------------


def snr_db(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    """Per item SNR over (channels, time), float64; inf where equal."""
    ref, est = ref.double(), est.double()
    num = ref.square().sum(dim=(1, 2))
    den = (est - ref).square().sum(dim=(1, 2))
    return 10 * torch.log10(num / den)


class LogMel:
    """ln(mel + 1) of the power spectrogram: torch.stft + nnAudio's Slaney mel filterbank."""

    def __init__(self) -> None:
        from nnAudio.librosa_functions import get_mel

        self.fb = torch.from_numpy(get_mel(SR, N_FFT, N_MELS, fmin=0.0, fmax=SR / 2)).double()
        self.window = torch.hann_window(N_FFT, dtype=torch.float64)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        spec = torch.stft(x.reshape(b * c, n).double(), N_FFT, HOP, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)
        power = spec.real.square() + spec.imag.square()
        mel = torch.einsum("mf,rft->rmt", self.fb, power)
        return torch.log1p(mel).reshape(b, c, N_MELS, -1)



# --- methods -------------------------------------------------------------------------------


def juce_coefficient(ms: torch.Tensor) -> torch.Tensor:
    c = torch.exp(-2 * math.pi * 1000 / (SR * ms.clamp_min(1e-3).double()))
    return torch.where(ms < 1e-3, 0.0, c).to(ms.dtype)


def methods() -> dict[str, Method]:
    from afxest.dsp.compressor import compressor

    out: dict[str, Method] = {
        "afxest": lambda x, t, r, a, rl: compressor(x, SR, threshold_db=t, ratio=r, attack_ms=a, release_ms=rl)
    }
    try:
        import torchcomp
        from torchcomp.core import compressor_core
    except ImportError:
        print("torchcomp not installed: its rows are skipped (pip install torchcomp)")
        return out

    def rows(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return p[:, None].expand(x.shape[0], x.shape[1]).reshape(-1)

    def tc_core(x, thr, ratio, att, rel):
        b, c, n = x.shape
        level = x.abs().reshape(b * c, n)
        # torchcomp: y = (1 - k) y' + k u, with its `at` used where u < y' (a falling level),
        # which is JUCE's release: pass (1 - c_rel, 1 - c_att) as (at, rt).
        env = compressor_core(level, level.new_zeros(b * c), rows(1 - juce_coefficient(rel), x),
                              rows(1 - juce_coefficient(att), x)).reshape(b, c, n)
        threshold = torch.pow(10.0, thr * 0.05)[:, None, None]
        over = env >= threshold
        base = torch.where(over, env / threshold, torch.ones_like(env))
        return torch.pow(base, 1 / ratio[:, None, None] - 1) * x

    def tc_compexp(x, thr, ratio, att, rel):
        b, c, n = x.shape
        level = x.abs().reshape(b * c, n).clamp_min(1e-10)
        ratio = ratio.clamp_min(1 + 1e-6)  # compexp_gain asserts ratio > 1 and 0 < at, rt < 1
        at = (1 - juce_coefficient(att)).clamp(1e-7, 1 - 1e-6)
        rt = (1 - juce_coefficient(rel)).clamp(1e-7, 1 - 1e-6)
        g = torchcomp.compexp_gain(level, rows(thr, x), rows(ratio, x), -1000.0, 0.5,
                                   rows(at, x), rows(rt, x))
        return g.reshape(b, c, n) * x

    out["tc-core"] = tc_core
    out["tc-compexp"] = tc_compexp
    return out


# --- runs ----------------------------------------------------------------------------------


def match(
    clips: list[np.ndarray], fns: dict[str, Method], chunk: int = 36
) -> dict[str, dict[str, torch.Tensor]]:
    """SNR, log-mel distance and bit-exactness of every method, shaped (clips, settings)."""
    logmel = LogMel()
    grid = torch.tensor(GRID, dtype=torch.float32)
    names = [*fns, "(input)"]
    res = {m: {"snr": [], "mel": [], "exact": []} for m in names}
    for clip in clips:
        for lo in range(0, len(GRID), chunk):
            g = grid[lo : lo + chunk]
            ref = torch.from_numpy(np.stack([
                pedalboard.Compressor(threshold_db=t, ratio=r, attack_ms=a, release_ms=rl)(clip, SR)
                for t, r, a, rl in g.tolist()
            ]))
            x = torch.from_numpy(clip)[None].expand(len(g), -1, -1).contiguous()
            with torch.no_grad():
                outs = {m: fn(x, *g.T) for m, fn in fns.items()}
            outs["(input)"] = x
            ref_mel = logmel(ref)
            for m, y in outs.items():
                res[m]["snr"].append(snr_db(ref, y))
                res[m]["mel"].append((logmel(y) - ref_mel).square().mean(dim=(1, 2, 3)))
                res[m]["exact"].append((y == ref).flatten(1).all(1))
    shape = (len(clips), len(GRID))
    return {m: {k: torch.cat(v).reshape(shape) for k, v in d.items()} for m, d in res.items()}


def speed(fns: dict[str, Method], repeats: int) -> dict[str, list[float]]:
    batch, n = 16, 5 * SR
    gen = torch.Generator().manual_seed(0)
    x0 = torch.from_numpy(np.stack(procedural(batch, 5.0))[:, :1]).contiguous()
    w = torch.randn(x0.shape, generator=gen)
    window = torch.hann_window(N_FFT)
    params0 = [torch.full((batch,), v) for v in (-20.0, 4.0, 5.0, 100.0)]

    def run(fn: Method) -> Callable[[], None]:
        def go() -> None:
            x = x0.clone().requires_grad_()
            p = [q.clone().requires_grad_() for q in params0]
            (fn(x, *p) * w).sum().backward()
        return go

    jobs = {m: run(fn) for m, fn in fns.items()}
    jobs["floor: torch.stft"] = lambda: torch.stft(
        x0.reshape(batch, n), N_FFT, HOP, window=window, return_complex=True
    )
    times: dict[str, list[float]] = {m: [] for m in jobs}
    for job in jobs.values():
        job()
        job()
    for _ in range(repeats):
        for m, job in jobs.items():
            t0 = time.perf_counter()
            job()
            times[m].append(time.perf_counter() - t0)
    return times


def keep_freed_memory() -> bool:
    """glibc: keep freed memory instead of returning it to the OS after every large tensor
    (what afxest's training does; see DESIGN.md section 4). Returns whether it applied."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30)
        return bool(ok)
    except (OSError, AttributeError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "music", type=Path, nargs="?", help="a music file or folder (default: procedural audio)"
    )
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    malloc_note = "mallopt applied" if keep_freed_memory() else "mallopt not available"

    # One-off costs, before anything else has imported numba.
    from afxest.dsp.compressor import compressor

    t0 = time.perf_counter()
    compressor(torch.zeros(1, 1, 64), SR, threshold_db=-20.0, ratio=4.0, attack_ms=5.0, release_ms=100.0).sum()
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    fns = methods()
    t_tc_import = time.perf_counter() - t0
    t_tc_first = 0.0
    if "tc-core" in fns:
        t0 = time.perf_counter()
        z = torch.zeros(1, 1, 64)
        for m in ("tc-core", "tc-compexp"):
            p = [torch.tensor([v], requires_grad=True) for v in (-20.0, 4.0, 5.0, 100.0)]
            fns[m](z.requires_grad_(), *p).sum().backward()
        t_tc_first = time.perf_counter() - t0

    if args.music is None:
        clips, what = procedural(args.tracks, args.seconds), "procedural clips"
    else:
        clips, what = excerpts(args.music, args.tracks, args.seconds), f"excerpts from {args.music}"
    print(f"{len(clips)} stereo {what}, {args.seconds:g} s at {SR} Hz; {len(GRID)} settings "
          f"(threshold {sorted({g[0] for g in GRID})} dB, ratio {sorted({g[1] for g in GRID})}, "
          f"attack {sorted({g[2] for g in GRID})} ms, release {sorted({g[3] for g in GRID})} ms)")
    print(f"torch {torch.__version__}, pedalboard {pedalboard.__version__}, "
          f"{torch.get_num_threads()} threads, {malloc_note}")
    print(f"first afxest call in a process (numba import + cached loops): {t_ours * 1e3:.0f} ms")
    if "tc-core" in fns:
        print(f"torchcomp import: {t_tc_import * 1e3:.0f} ms, "
              f"its first calls (numba JIT): {t_tc_first * 1e3:.0f} ms")

    res = match(clips, fns)
    print("\nMatch against pedalboard.Compressor, over all clips x settings")
    print(f"{'method':<12} {'SNR med':>8} {'SNR min':>8} {'bit-exact':>9} "
          f"{'logmel mean':>12} {'logmel max':>11}")
    for m, d in res.items():
        snr, mel = d["snr"].flatten(), d["mel"].flatten()
        fin = snr[torch.isfinite(snr)]
        med = "inf" if snr.median().isinf() else f"{snr.median():.1f}"
        low = "inf" if not len(fin) else f"{snr.min():.1f}"
        exact = d["exact"].float().mean() * 100
        print(f"{m:<12} {med:>8} {low:>8} {exact:>8.1f}% {mel.mean():>12.3g} {mel.max():>11.3g}")

    print("\nBy attack time (SNR median / min dB, log-mel mean)")
    attacks = sorted({g[2] for g in GRID})
    print(f"{'method':<12} " + " ".join(f"{f'att {a:g} ms':>26}" for a in attacks))
    for m, d in res.items():
        cells = []
        for a in attacks:
            sel = torch.tensor([g[2] == a for g in GRID])
            s, ml = d["snr"][:, sel].flatten(), d["mel"][:, sel].flatten()
            cells.append(f"{s.median():>8.1f} /{s.min():>7.1f} /{ml.mean():>8.3g}")
        print(f"{m:<12} " + " ".join(f"{c:>26}" for c in cells))

    print("\nBy threshold (log-mel mean)")
    thrs = sorted({g[0] for g in GRID})
    print(f"{'method':<12} " + " ".join(f"{f'{t:g} dB':>10}" for t in thrs))
    for m, d in res.items():
        row = [d["mel"][:, torch.tensor([g[0] == t for g in GRID])].mean() for t in thrs]
        print(f"{m:<12} " + " ".join(f"{v:>10.3g}" for v in row))

    times = speed(fns, args.repeats)
    floor = times["floor: torch.stft"]
    f_min, f_med = min(floor), statistics.median(floor)
    print(f"\nSpeed: forward + backward, batch 16 x 5 s mono at {SR} Hz, "
          f"{args.repeats} interleaved rounds")
    print(f"{'method':<18} {'min ms':>8} {'median ms':>10} {'x floor (min)':>14} "
          f"{'x floor (median)':>17}")
    for m, t in times.items():
        print(f"{m:<18} {min(t) * 1e3:>8.1f} {statistics.median(t) * 1e3:>10.1f} "
              f"{min(t) / f_min:>14.2f} {statistics.median(t) / f_med:>17.2f}")


if __name__ == "__main__":
    main()
