"""Training throughput per task and estimator: today's recipes against the one of 0.1.0, and
all against a floor, all measured in the same run.

    python benchmarks/train_speed.py --music DIR [--steps 5] [--tasks eq,fm,master]

A step is what ``afxest train`` does: draw a batch (dry music excerpts and pedalboard, or the
synth), encode, sample, the audio term of the objective (:mod:`afxest.objective`), backward,
AdamW. Three recipes, alternated step by step so that a busy machine slows them alike:

* ``0.1.0``: the training step as afxest 0.1.0 computed it: the exact audio term (time-domain
  render, then the loss), biquads filtered over the whole clip at once (one 116 640-point FFT
  per clip), torch's own rfft backward (a complex FFT), |X|^2 through torch's autograd, dense
  mel filterbank products, the revisited MR-STFT on its prime FFT sizes;
* ``now``: what ``afxest train`` runs: the fast audio term (``audio_objective(fast=True)``:
  |H|^2 on the loss's STFT for the eq task, fast FFT sizes for fm), overlap-add filtering in
  short blocks, the cheaper rfft backward, the one-product |X|^2 backward, sparse mel products
  (spectrogram rows times the transposed filterbank), and the next batch drawn on a worker
  thread while the step trains (:class:`afxest.runs.Prefetcher`; a step's time runs until
  both are done, so nothing it draws ahead overlaps another recipe's step);
* ``now`` draws the task's whole 5 s clip; ``2.5s`` (effect tasks) is ``now`` on 2.5 s
  training excerpts (``afxest train --excerpt-seconds 2.5``; validation keeps the 5 s clip),
  the default of eq and master in ``afxest train``: docs/training.md gives what it was
  measured to cost.

Two more rows for fm, whose bundled models no longer train through the audio loss: ``bins`` (the
``bins`` estimator, a categorical parameter loss: what trains ``fm-deterministic``) against the
0.1.0 deterministic audio-loss step, and ``likelihood`` (the posterior trained by
``--objective likelihood``: what trains ``fm``) against the 0.1.0 posterior audio-loss step,
both computed by :class:`afxest.train.Objective` as ``afxest train`` computes them.

Reported: ms per step (median), of which data (drawing ahead: the wait for it beyond the
training), samples per second, the speed-up of ``now``
and ``2.5s`` over ``0.1.0``, and each step as a ratio against a floor: forward + backward of one
torch.stft (n_fft 4096, hop 1024) over the same batch of audio.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

import afxest.dsp.filters as filters
import afxest.losses as losses
import afxest.spectral as spectral
from afxest.data import DrySource, MusicFolder, make_batch
from afxest.nn.estimator import Estimator, EstimatorConfig
from afxest.objective import audio_objective
from afxest.tasks import TASKS
from afxest.train import Objective, train_step
from afxest.runs import Prefetcher, enlarge_malloc_thresholds

RECIPES = ("0.1.0", "now", "2.5s")
# an objective without the audio loss, and the 0.1.0 audio-loss step of the same family it replaced
NO_AUDIO_KINDS = {"bins": ("bins", "deterministic"), "likelihood": ("posterior", "posterior")}
EXCERPT_SECONDS = 2.5


def _magnitude_0_1_0(spec: torch.Tensor) -> torch.Tensor:
    energy = torch.view_as_real(spec).square().sum(-1)
    positive = energy > 0
    safe = torch.where(positive, energy, torch.ones_like(energy))
    return torch.where(positive, safe.sqrt(), torch.zeros_like(energy))


@contextlib.contextmanager
def recipe(name: str) -> Iterator[None]:
    """Inside, the DSP helpers compute as ``name`` did (module attributes swapped back after)."""
    mel = spectral.MelSpectrogram
    saved = filters.BLOCK, spectral.rfft, spectral.energy, losses._magnitude, mel.from_spectrogram
    if name == "0.1.0":  # "2.5s" computes as "now"
        filters.BLOCK = 1 << 20
        spectral.rfft = lambda x, n=None: torch.fft.rfft(x, n=n, dim=-1)
        spectral.energy = lambda x: torch.view_as_real(x).square().sum(-1)
        losses._magnitude = _magnitude_0_1_0
        mel.from_spectrogram = lambda self, p: torch.matmul(self.mel_basis.to(p.dtype), p.transpose(1, 2))
    try:
        yield
    finally:
        filters.BLOCK, spectral.rfft, spectral.energy, losses._magnitude, mel.from_spectrogram = saved


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


class Stepper:
    """One training step of a task, estimator and recipe (its own model and optimiser)."""

    def __init__(self, task, kind: str, name: str, source: DrySource | None, steps: int) -> None:
        torch.manual_seed(0)
        self.task, self.kind, self.name, self.source = task, kind, name, source
        self.frames = int(EXCERPT_SECONDS * task.sample_rate) if name == "2.5s" else None
        self.audio = audio_objective(task, torch.device("cpu"), fast=name != "0.1.0")
        self.objective = None  # None: audio_step
        if kind in NO_AUDIO_KINDS:
            now_kind, before_kind = NO_AUDIO_KINDS[kind]
            if name != "0.1.0":
                self.objective = Objective(task, now_kind, task.training.beta, self.audio, likelihood=kind == "likelihood")
            self.kind = kind = now_kind if name != "0.1.0" else before_kind
        self.model = Estimator(task, EstimatorConfig(kind=kind))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=task.training.lr, weight_decay=task.training.weight_decay)
        self.batches = Prefetcher(self.draw, steps) if name != "0.1.0" else None

    def draw(self, step: int):
        return make_batch(self.task, self.source, np.random.default_rng([0, step]), self.task.training.batch_size, self.frames)

    def audio_step(self, batch) -> None:
        """The step of the audio-loss estimators (and param), as the recipe computes it."""
        task = self.task
        wet = torch.from_numpy(batch.wet)
        dry = None if batch.dry is None else torch.from_numpy(batch.dry)
        s = self.model.sample(wet, 1)
        if self.kind == "param":
            loss = ((s.z[:, 0] - task.truth_to_model(torch.from_numpy(batch.v))) ** 2).mean()
        else:
            loss = self.audio(s.z[:, 0], dry, wet)
            if self.kind == "posterior":
                loss = loss - task.training.beta * s.entropy
            loss = loss.mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def __call__(self, step: int) -> tuple[float, float]:
        task = self.task
        with recipe(self.name):
            t0 = time.perf_counter()
            batch = self.draw(step) if self.batches is None else self.batches.get(step)
            t1 = time.perf_counter()
            if self.objective is not None:  # afxest train's own step
                train_step(self.model, self.optimizer, self.objective, batch, torch.device("cpu"), task.training.lr)
            else:
                self.audio_step(batch)
            t2 = time.perf_counter()
            if self.batches is not None:
                self.batches.wait()
            t3 = time.perf_counter()
        return t3 - t0, (t1 - t0) + (t3 - t2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--music", type=Path, required=True, help="music folder (its train split is used)")
    parser.add_argument("--tasks", default="eq,fm,master")
    parser.add_argument("--estimators", default="posterior,deterministic,param,bins,likelihood",
                        help="bins and likelihood: steps without the audio loss, timed for synth tasks only")
    args = parser.parse_args()
    enlarge_malloc_thresholds()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} steps per recipe after one warm-up")
    print(f"{'task':<6} {'estimator':<13} {'recipe':<6} {'batch':>5} {'ms/step':>8} {'data ms':>8} "
          f"{'samples/s':>9} {'x floor':>8} {'speed-up':>8}")
    for name in args.tasks.split(","):
        task = TASKS[name]
        source = None
        if not task.has_source:
            folder = MusicFolder(args.music, task.sample_rate, "train", min_seconds=task.clip_seconds).prepare()
            source = DrySource(folder, task.sample_rate)
        floor = floor_ms(task.training.batch_size, task.clip_samples, args.steps)
        recipes = [r for r in RECIPES if r != "2.5s" or not task.has_source]  # a synth renders its clip
        for kind in args.estimators.split(","):
            if kind in NO_AUDIO_KINDS and not task.has_source:
                continue
            steppers = {r: Stepper(task, kind, r, source, args.steps + 1) for r in recipes}
            times: dict[str, list[tuple[float, float]]] = {r: [] for r in recipes}
            for i in range(args.steps + 1):
                for r in recipes:  # alternated: all see the same machine load
                    t = steppers[r](i)
                    if i:  # the first step warms up
                        times[r].append(t)
            for s in steppers.values():
                if s.batches is not None:
                    s.batches.close()
            ms = {r: 1e3 * float(np.median([t for t, _ in times[r]])) for r in recipes}
            for r in recipes:
                data_ms = 1e3 * float(np.median([d for _, d in times[r]]))
                speedup = f"{ms['0.1.0'] / ms[r]:>7.2f}x" if r != "0.1.0" else f"{'':>8}"
                print(f"{name:<6} {kind:<13} {r:<6} {task.training.batch_size:>5} {ms[r]:>8.1f} {data_ms:>8.1f} "
                      f"{task.training.batch_size / ms[r] * 1e3:>9.1f} {ms[r] / floor:>8.2f} {speedup}")
        print(f"{name:<6} floor: {floor:.1f} ms (stft fwd+bwd, batch {task.training.batch_size})")


if __name__ == "__main__":
    main()
