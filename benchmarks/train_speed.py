"""Training throughput for each task and estimator, against a floor measured in the same run.

    python benchmarks/train_speed.py [--steps 5] [--music DIR]

A step is what ``afxest train`` does: draw a batch (dry excerpts and pedalboard, or the synth),
encode, sample, render with the differentiable processors, loss, backward, AdamW. Reported:
ms per step, samples per second, and the step time as a ratio against a floor: forward +
backward of one torch.stft (n_fft 4096, hop 1024) over the same batch of audio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from afxest.data import DrySource, MusicFolder, make_batch
from afxest.nn.estimator import Estimator, EstimatorConfig
from afxest.tasks import TASKS
from afxest.train import enlarge_malloc_thresholds, render_model, task_loss


def floor_ms(batch: int, frames: int, repeats: int) -> float:
    x = torch.randn(batch, frames)
    window = torch.hann_window(4096)
    times = []
    for _ in range(repeats + 1):
        xs = x.clone().requires_grad_()
        t0 = time.perf_counter()
        torch.stft(xs, 4096, 1024, window=window, return_complex=True).abs().sum().backward()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times[1:]))


def step_ms(task_name: str, kind: str, source: DrySource | None, steps: int) -> tuple[float, float]:
    task = TASKS[task_name]
    torch.manual_seed(0)
    model = Estimator(task, EstimatorConfig(kind=kind))
    optimizer = torch.optim.AdamW(model.parameters(), lr=task.lr, weight_decay=task.weight_decay)
    loss_fn = task_loss(task, torch.device("cpu"))
    rng = np.random.default_rng(0)
    data_times, times = [], []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        batch = make_batch(task, source, rng, task.batch_size)
        t1 = time.perf_counter()
        wet = torch.from_numpy(batch.wet)
        dry = None if batch.dry is None else torch.from_numpy(batch.dry)
        s = model.sample(wet, 1)
        if kind == "param":
            loss = ((s.z[:, 0] - task.truth_to_model(torch.from_numpy(batch.v))) ** 2).mean()
        else:
            loss = loss_fn(render_model(task, s.z[:, 0], dry), wet)
            if kind == "posterior":
                loss = loss - task.beta * s.entropy
            loss = loss.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        if i:  # the first step warms up
            data_times.append(t1 - t0)
            times.append(t2 - t0)
    return 1e3 * float(np.median(times)), 1e3 * float(np.median(data_times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--music", type=Path, help="music folder (default: procedural audio)")
    args = parser.parse_args()
    enlarge_malloc_thresholds()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'task':<4} {'estimator':<13} {'batch':>5} {'ms/step':>8} {'data ms':>8} {'samples/s':>9} {'floor ms':>8} {'x floor':>8}")
    for name in ("eq", "fm"):
        task = TASKS[name]
        source = None
        if not task.has_source:
            folder = None
            if args.music:
                folder = MusicFolder(args.music, task.sample_rate, "train", min_seconds=task.clip_seconds).prepare()
            source = DrySource(folder, task.sample_rate)
        floor = floor_ms(task.batch_size, task.clip_samples, args.steps)
        for kind in ("posterior", "deterministic", "param"):
            ms, data_ms = step_ms(name, kind, source, args.steps)
            print(
                f"{name:<4} {kind:<13} {task.batch_size:>5} {ms:>8.1f} {data_ms:>8.1f} "
                f"{task.batch_size / ms * 1e3:>9.1f} {floor:>8.1f} {ms / floor:>8.2f}"
            )
    print("data: " + ("music from " + str(args.music) if args.music else "procedural audio (slower to make than music excerpts)"))


if __name__ == "__main__":
    main()
