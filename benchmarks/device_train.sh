#!/usr/bin/env bash
# One prepared run on a lent GPU machine (issue 10): check the CUDA paths, then train for a
# fixed wall-clock budget from the carried data pack, and bring the run folder back.
#
# Here, once per machine:
#   .venv/bin/python benchmarks/make_data_pack.py --music MUSIC --out .devicepack/music
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .devicepack/whl pedalboard==0.9.26 soundfile==0.14.0 platformdirs cffi pycparser
# (.devicepack/ is git-ignored; about 44 MiB.) Then, with the device tool:
#   run(command="bash benchmarks/device_train.sh master posterior 420 --max-steps 100000 --init models/master.pt --lr 3e-4",
#       carry=[".devicepack"], timeout_s=600)
# and resume the returned run here with `afxest train ... --out RUN --resume` (a checkpoint
# trained on CUDA loads on the CPU). The machine has torch, numba, typer, rich and numpy; the
# wheels bring pedalboard, soundfile and platformdirs. $OUT/run holds last.pt, best.pt,
# metrics.jsonl and config.json; $OUT/check.log and $OUT/train.log the output.
set -uo pipefail
task=${1:?task}; estimator=${2:?estimator}; seconds=${3:?seconds of training}; shift 3
out=${OUT:?this runs on the device machine, where OUT is set}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devicepack/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 AFXEST_CACHE_DIR=/tmp/afxest-cache
{
  nvidia-smi -L
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  python3 -m pytest -q -p no:cacheprovider tests/test_compressor.py tests/test_objective.py tests/test_encoders.py -k "cuda or objective or encoder"
  python3 -m afxest estimate afxest/examples/master-wet.flac --dry afxest/examples/eq-dry.flac --device cuda \
      -o "$out/estimate" --force --no-progress
} 2>&1 | tee "$out/check.log"
timeout --signal=TERM "$seconds" python3 -m afxest train --task "$task" --estimator "$estimator" --device cuda \
    --data .devicepack/music --out "$out/run" --checkpoint-every 50 --val-every 250 --no-progress "$@" 2>&1 | tee "$out/train.log"
ls -la "$out/run"
