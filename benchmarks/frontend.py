"""Speed, size and agreement of MelSpectrogram's two backends (FFT vs nnAudio), and loss costs.

    python benchmarks/frontend.py [--repeats 5] [--device cpu|cuda|all]

For a batch of 16 x 5 s at 22050 Hz and the two settings the DAFx 2025 paper uses (the loss:
n_fft 4096, hop 1024, 128 mels, Sec. 4.5; the encoder input: n_fft 2048, hop 512 = 23 ms,
64 mels, Sec. 4.3), on CPU and on CUDA when available: time of the forward pass and of
forward + backward (gradient to the input through log(mel + 1)), best of ``--repeats``, the
nnAudio / torch ratio, each module's state_dict size, the largest difference between the two
outputs (relative to the spectrogram's peak), and whether the input gradient stays finite on a
silent batch. Then forward + backward of each loss on its task's batch (equaliser: 16 x 5 s
at 22050 Hz; FM: 128 x 125 ms at 44100 Hz). Also the floor for imports: ``import torch``
against ``import afxest.spectral`` (which must not pull in nnAudio or scipy) and
``import nnAudio.features``, each in a fresh interpreter. Results: docs/losses.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

from afxest.losses import LogMelLoss, mrstft_revisited, spectral_ot
from afxest.spectral import MelSpectrogram, log_mel

SR = 22050
BATCH = 16
SECONDS = 5.0
SETTINGS = {"loss (4096/1024/128)": (4096, 1024, 128), "encoder (2048/512/64)": (2048, 512, 64)}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def state_dict_mb(module: torch.nn.Module) -> float:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values()) / 1e6


def import_seconds(statement: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'not available'}")
    print(f"batch {BATCH} x {SECONDS:g} s at {SR} Hz, best of {args.repeats}\n")

    t_python = import_seconds("pass")
    t_torch = import_seconds("import torch")
    t_spectral = import_seconds(
        "import sys, afxest.spectral; assert not [m for m in sys.modules if m.split('.')[0] in ('nnAudio', 'scipy')]"
    )
    t_nnaudio = import_seconds("import torch, nnAudio.features")
    print("| import (fresh interpreter) | s | vs import torch |")
    print("|---|---|---|")
    for name, t in [("python -c pass", t_python), ("import torch", t_torch),
                    ("import afxest.spectral", t_spectral), ("import torch, nnAudio.features", t_nnaudio)]:
        print(f"| {name} | {t:.2f} | {t / t_torch:.2f}x |")
    print()

    g = torch.Generator().manual_seed(0)
    audio = 0.3 * torch.randn(BATCH, int(SR * SECONDS), generator=g)

    rows = []
    for device in devices:
        x = audio.to(device)
        for label, (n_fft, hop, n_mels) in SETTINGS.items():
            mels, build, finite, outputs = {}, {}, {}, {}
            for backend in ("torch", "nnaudio"):
                t0 = time.perf_counter()
                mels[backend] = MelSpectrogram(SR, n_fft, hop, n_mels, backend=backend).to(device)
                build[backend] = time.perf_counter() - t0
                silent = torch.zeros(2, int(SR * SECONDS), device=device, requires_grad=True)
                log_mel(silent, mels[backend]).sum().backward()
                finite[backend] = bool(torch.isfinite(silent.grad).all())
                with torch.no_grad():
                    outputs[backend] = mels[backend](x)

            def forward(mel):
                with torch.no_grad():
                    mel(x)

            def forward_backward(mel):
                xg = x.detach().requires_grad_()
                log_mel(xg, mel).mean().backward()

            # the two backends are timed in alternation, so that load from other processes on a
            # shared machine falls on both alike; best of the repeats
            times = {(b, k): [] for b in mels for k in ("fwd", "fwd_bwd")}
            for repeat in range(args.repeats + 1):
                for backend, mel in mels.items():
                    for kind, fn in (("fwd", forward), ("fwd_bwd", forward_backward)):
                        sync(device)
                        t0 = time.perf_counter()
                        fn(mel)
                        sync(device)
                        if repeat:  # the first round warms up
                            times[backend, kind].append(1000 * (time.perf_counter() - t0))
            result = {
                b: dict(build=build[b], fwd=min(times[b, "fwd"]), fwd_bwd=min(times[b, "fwd_bwd"]),
                        size=state_dict_mb(mels[b]), finite=finite[b])
                for b in mels
            }
            a, b = outputs["torch"], outputs["nnaudio"]
            rows.append((device, label, result, float((a - b).abs().max() / b.abs().max())))
            del mels, outputs

    print("| device | setting | backend | build s | forward ms | fwd+bwd ms | state_dict MB | finite grad on silence |")
    print("|---|---|---|---|---|---|---|---|")
    for device, label, result, _ in rows:
        for backend in ("torch", "nnaudio"):
            r = result[backend]
            print(f"| {device} | {label} | {backend} | {r['build']:.2f} | {r['fwd']:.1f} | {r['fwd_bwd']:.1f} "
                  f"| {r['size']:.1f} | {'yes' if r['finite'] else 'no (NaN)'} |")
    print()
    print("| device | setting | nnAudio / torch forward | nnAudio / torch fwd+bwd | max difference / peak |")
    print("|---|---|---|---|---|")
    for device, label, result, dev in rows:
        t, n = result["torch"], result["nnaudio"]
        print(f"| {device} | {label} | {n['fwd'] / t['fwd']:.1f}x | {n['fwd_bwd'] / t['fwd_bwd']:.1f}x | {dev:.1e} |")

    print()
    print("| device | loss | batch | fwd+bwd ms |")
    print("|---|---|---|---|")
    fm = torch.randn(128, 5512, generator=g)
    for device in devices:
        log_mel_loss = LogMelLoss(SR).to(device)
        cases = [
            ("log-mel (Eq. 16)", "16 x 5 s, 22050 Hz", audio, lambda a, b: log_mel_loss(a, b)),
            ("MR-STFT revisited", "16 x 5 s, 22050 Hz", audio, mrstft_revisited),
            ("SOT (4096/1024, 64 quantiles)", "128 x 125 ms, 44100 Hz", fm, lambda a, b: spectral_ot(a, b, 44100)),
        ]
        for name, batch, y, loss in cases:
            y = y.to(device)
            y_hat = (0.5 * y).roll(7, dims=-1)
            times = []
            for repeat in range(args.repeats + 1):
                sync(device)
                t0 = time.perf_counter()
                yg = y_hat.detach().requires_grad_()
                loss(yg, y).mean().backward()
                sync(device)
                if repeat:
                    times.append(1000 * (time.perf_counter() - t0))
            print(f"| {device} | {name} | {batch} | {min(times):.1f} |")


if __name__ == "__main__":
    main()
