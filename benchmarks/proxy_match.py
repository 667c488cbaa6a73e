"""How closely each compressor proxy of the master task matches pedalboard's Compressor, how
useful its gradients are, and how fast it runs forward + backward.

    python benchmarks/proxy_match.py [MUSIC_DIR] [--proxy PROXY.pt] [--items 32] [--repeats 3]

Items: 5 s excerpts at 22050 Hz from the test split of MUSIC_DIR (procedural music-like audio
when none is given), each through a random EQ of the master task (pedalboard), then compressed
by pedalboard with a random setting in the task's ranges (uniform in normalised space): the
compressor's input and output as in training (afxest.nn.proxy.make_proxy_batch).

Methods:
  dsp       afxest.dsp.compressor (JUCE's algorithm, exact gradients)
  neural    the TCN proxy (--proxy): its output and its gradients
  hybrid    the dsp output with the proxy's gradients (ICASSP 2024's hybrid proxy)
  (input)   the uncompressed input, for scale

Match: SNR in dB against pedalboard's output (median and 10th percentile over items), and the
log-mel distance (DAFx Eq. 16, the training loss) mean and 90th percentile.

Gradients: for each item a second setting p' is drawn; the loss is the log-mel distance
between the method's output at p' and pedalboard's at p. Reported: the cosine between the
method's gradient w.r.t. the normalised (threshold, ratio, attack, release) and dsp's exact
one (median over items), and how often each parameter's gradient has dsp's sign.

Speed: forward + backward (w.r.t. audio and parameters) on 16 x 5 s mono, in ms and as a ratio
against a floor measured in the same run, interleaved: one torch.stft (n_fft 4096, hop 1024)
of the same batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from afxest.data import DrySource, MusicFolder
from afxest.dsp.compressor import compressor
from afxest.losses import LogMelLoss
from afxest.nn.proxy import COMPRESSOR_PARAMS, compressor_function, load_proxy, make_proxy_batch
from afxest.tasks import TASKS
from afxest.train_proxy import snr_db

T = torch.Tensor


def gradient(method: Callable, x: T, params: list[T], ref: T, mel: LogMelLoss, to_norm) -> np.ndarray:
    """d log-mel(method(x, p), ref) / d normalised p, (4,)."""
    v = to_norm(params).detach().requires_grad_()
    physical = [r.to_physical(v[:, i]) for i, r in enumerate(RANGES)]
    mel(method(x, *physical), ref).sum().backward()
    return v.grad[0].double().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("music", nargs="?", type=Path, help="music folder (its test split); default: procedural")
    ap.add_argument("--proxy", type=Path, help="a proxy checkpoint from afxest train-proxy")
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    task = TASKS["master"]
    sr, frames = task.sample_rate, task.clip_samples
    if args.music is None:
        source, where = DrySource(None, sr), "procedural music-like audio"
    else:
        folder = MusicFolder(args.music, sr, "test", min_seconds=task.clip_seconds).prepare()
        if not folder.tracks:
            sys.exit(f"{args.music}: no test-split track of {task.clip_seconds:g} s")
        source, where = DrySource(folder, sr), f"the test split of {args.music} ({len(folder.tracks)} tracks)"
    methods: dict[str, Callable] = {"dsp": lambda x, *p: compressor(x, sr, **dict(zip(COMPRESSOR_PARAMS, p)))}
    if args.proxy is not None:
        proxy, state = load_proxy(args.proxy)
        methods["neural"] = compressor_function("neural", proxy, sr)
        methods["hybrid"] = compressor_function("hybrid", proxy, sr)
        print(f"proxy {args.proxy}: step {state['step']}, {proxy.config.to_dict()}, "
              f"receptive field {proxy.config.receptive_field} samples")
    print(f"{args.items} items of {task.clip_seconds:g} s at {sr} Hz from {where}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")

    mel = LogMelLoss(sr)
    rng = np.random.default_rng([args.seed, 7])
    batch = make_proxy_batch(task, source, rng, args.items, frames)

    def to_norm(p: list[T]) -> T:
        return torch.stack([r.to_normalised(v) for r, v in zip(RANGES, p)], dim=-1)

    snr: dict[str, list[float]] = {m: [] for m in [*methods, "(input)"]}
    lm: dict[str, list[float]] = {m: [] for m in snr}
    grads: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    for i in range(args.items):
        x, y = torch.from_numpy(batch.x[i : i + 1]), torch.from_numpy(batch.y[i : i + 1])
        p = [torch.tensor([batch.params[i, k]], dtype=torch.float32) for k in range(4)]
        for name, fn in [*methods.items(), ("(input)", None)]:
            with torch.no_grad():
                y_hat = x if fn is None else fn(x, *p)
            snr[name].append(snr_db(y_hat, y).item())
            lm[name].append(mel(y_hat, y).item())
        v2 = torch.from_numpy(rng.random((1, 4))).float()
        p2 = [r.to_physical(v2[:, k]) for k, r in enumerate(RANGES)]
        for name, fn in methods.items():
            grads[name].append(gradient(fn, x, p2, y, mel, to_norm))

    def db(value: float) -> str:  # SNR of an identical output is inf
        return f"{value:8.2f}" if value < 1e8 else f"{'inf':>8}"

    print("\nMatch against pedalboard.Compressor, over items")
    print(f"{'method':<9} {'SNR med':>8} {'SNR p10':>8} {'bit-exact':>9} {'logmel mean':>12} {'logmel p90':>11}")
    for name in snr:
        s, m = np.nan_to_num(np.array(snr[name]), posinf=1e9), np.array(lm[name])
        print(f"{name:<9} {db(np.median(s))} {db(np.percentile(s, 10))} {100 * np.mean(s >= 1e9):8.0f}% "
              f"{m.mean():12.3g} {np.percentile(m, 90):11.3g}")

    print("\nGradients w.r.t. the normalised parameters, against dsp's exact gradient")
    print(f"{'method':<9} {'cosine med':>10} " + " ".join(f"{'sign ' + n.split('_')[0]:>14}" for n in COMPRESSOR_PARAMS))
    exact = np.array(grads["dsp"])
    for name in methods:
        g = np.array(grads[name])
        cos = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(g, exact)
               if np.linalg.norm(a) > 0 and np.linalg.norm(b) > 0]
        signs = (np.sign(g) == np.sign(exact)).mean(axis=0)
        print(f"{name:<9} {np.median(cos) if cos else float('nan'):10.3f} " + " ".join(f"{100 * s:13.0f}%" for s in signs))

    print(f"\nSpeed: forward + backward, batch 16 x {task.clip_seconds:g} s mono at {sr} Hz, {args.repeats} interleaved rounds")
    xb = torch.from_numpy(make_proxy_batch(task, source, rng, 16, frames).x)
    pb = [torch.full((16,), float(batch.params[0, k])) for k in range(4)]

    def job(fn: Callable) -> Callable[[], None]:
        def go() -> None:
            x = xb.clone().requires_grad_()
            p = [v.clone().requires_grad_() for v in pb]
            fn(x, *p).square().mean().backward()
        return go

    jobs = {name: job(fn) for name, fn in methods.items()}
    jobs["floor: torch.stft"] = lambda: torch.stft(xb[:, 0], 4096, 1024, window=torch.hann_window(4096), return_complex=True)
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for fn in jobs.values():
        fn()  # warm-up (numba loops, allocator)
    for _ in range(args.repeats):
        for name, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - t0))
    floor = times["floor: torch.stft"]
    f_min, f_med = min(floor), statistics.median(floor)
    print(f"{'method':<18} {'min ms':>9} {'median ms':>10} {'x floor (min)':>14} {'x floor (median)':>17}")
    for name, t in times.items():
        print(f"{name:<18} {min(t):9.1f} {statistics.median(t):10.1f} {min(t) / f_min:14.2f} "
              f"{statistics.median(t) / f_med:17.2f}")


RANGES = next(p for p in TASKS["master"].truth.processors if p.type == "compressor").ranges

if __name__ == "__main__":
    main()
