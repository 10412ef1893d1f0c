#!/usr/bin/env bash
# The GPU check in one command, one table at the end: first `python -m pytest -m gpu -ra` (the
# tests marked gpu; with CUDA a skipped one fails the check), then the scale run
# (benchmarks/gpu_scale.py: 396,000 x 4,096, timed) in the budget's time left.
#   bash benchmarks/gpu_check.sh                  # a machine with a GPU, no network: under 8 minutes
#   bash benchmarks/gpu_check.sh --budget_s 600   # 2+ GPUs: room for the torchrun row (e)
#   bash benchmarks/gpu_check.sh --smoke          # the scale run at tiny sizes on the CPU (the gpu
#                                                 # tests skip there, saying no CUDA device)
# Options go to benchmarks/gpu_check.py (--help lists them). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
