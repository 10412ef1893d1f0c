"""Run a script as if on a node with ``TEST_NODE_GPUS`` GPUs, for the tests of vLLM under
torchrun (tests/test_vllm_torchrun.py, with its stand-in vllm): torch's device count is what
CUDA would report, the GPUs in ``CUDA_VISIBLE_DEVICES`` or else all of them. Nothing else
touches CUDA on that path (vLLM owns the GPU)."""

import os
import runpy
import sys

from utils.runtime import device, distributed


def visible_gpu_count(fork_safe=False):
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return int(os.environ["TEST_NODE_GPUS"])
    return len([part for part in visible.split(",") if part.strip()])


device.cuda_device_count = distributed.cuda_device_count = visible_gpu_count
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
