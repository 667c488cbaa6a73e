"""CPU seconds of the correction stage (afxest/correct.py) on the pairs of a foreign_chains.py run.

    python benchmarks/correction_cost.py OUT [--n 3]

OUT is a ``benchmarks/foreign_chains.py --out`` folder (its ``items`` and ``estimates``). For each
of the first ``--n`` pairs, rank 1's chain as the search left it (the effects before its
``correction.effects_from``, or all of them) is corrected against the wet on the whole clip, with
pedalboard renders and the log-mel loss (one torch thread), as ``afxest estimate`` does on its
scored windows; printed: the CPU seconds of ``correct()``, which steps it kept, and the CPU
seconds of ``python -c "import torch"`` on the same machine for scale.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from afxest import correct, losses
from afxest.engines import board
from afxest.presets import Preset, Processor


def cpu_seconds(command: list[str]) -> float:
    """The CPU seconds (user + system) of a child process."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for wet_path in sorted((args.out / "items").glob("*-wet.wav"))[: args.n]:
        wet, rate = sf.read(wet_path, dtype="float32", always_2d=True)
        wet = np.ascontiguousarray(wet.T)
        dry = np.ascontiguousarray(sf.read(str(wet_path).replace("-wet.wav", "-dry.wav"), dtype="float32", always_2d=True)[0].T)
        top = json.loads((args.out / "estimates" / wet_path.stem / "estimate.json").read_text())["candidates"][0]
        effects = top["preset"]["effects"]
        record = top.get("correction", {})
        chain = [{**e, **record.get("task_effects", {}).get(str(i), {})} for i, e in enumerate(effects)]
        chain = chain[: record.get("effects_from", len(chain))]
        target = losses.LogMelLoss(rate).against(torch.from_numpy(wet)[None])

        def render(fx):
            processors = tuple(Processor(e["type"], {k: tuple(v) if isinstance(v, list) else float(v)
                                                     for k, v in e.items() if k != "type"}) for e in fx)
            return [board(Preset(rate, processors))(dry, float(rate))]

        def loss(ys):
            with torch.inference_mode():
                return float(target(torch.from_numpy(np.ascontiguousarray(ys[0], dtype=np.float32))[None]))

        start = time.process_time()
        found = correct.correct(chain, render, [wet], loss, rate)
        seconds = time.process_time() - start
        print(f"{wet_path.stem}: {rate} Hz, {wet.shape[0]} channel(s), {wet.shape[1] / rate:.1f} s: correct() {seconds:.2f} s CPU; "
              f"dynamics {found.dynamics}, equaliser {found.equaliser} (FIR {getattr(found, 'fir', False)}), limiter {found.limiter}; "
              f"loss {found.loss_before:.4g} -> {found.loss_after:.4g}", flush=True)
    print(f"python -c 'import torch': {cpu_seconds([sys.executable, '-c', 'import torch']):.2f} s CPU")


if __name__ == "__main__":
    main()
