#!/usr/bin/env bash
# The GPU paths checked on a GPU in one command, one table at the end (issue 7):
#   bash benchmarks/gpu_check.sh            # a machine with a GPU, no network: under 8 minutes
#   bash benchmarks/gpu_check.sh --budget_s 540   # 2+ GPUs: room for the torchrun row (e)
#   bash benchmarks/gpu_check.sh --smoke    # every step at tiny sizes on the CPU (e: 2 CPU ranks)
# Options go to benchmarks/gpu_check.py (--help lists them). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
