"""Run a script as on a machine with an NVIDIA driver, where starting CUDA before vLLM's engine
would break it (vLLM forks its workers on GPUs: "Cannot re-initialize CUDA in forked
subprocess"). Every torch call that starts CUDA, made by our package (``utils``), raises until
``vllm.LLM`` is being built; the device probe says a driver is there, so that the code asks
torch how many GPUs there are. For tests/test_vllm.py, with the real vLLM (its CPU build:
torch then counts no GPU)."""

import runpy
import sys

import torch

from utils.runtime import device

ENGINE = {"building": False}


def refuse_before_engine(name, call):
    def guarded(*args, **kwargs):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if not ENGINE["building"] and caller.split(".")[0] in ("utils", "novelsum_toolkit"):
            raise RuntimeError(f"CUDA started before vLLM's engine: {caller} called "
                               f"torch.{name}()")
        return call(*args, **kwargs)

    return guarded


def watch_engine_start():
    import vllm

    build = vllm.LLM.__init__

    def building(self, *args, **kwargs):
        ENGINE["building"] = True
        return build(self, *args, **kwargs)

    vllm.LLM.__init__ = building


if __name__ == "__main__":
    device.nvidia_driver_present = lambda: True
    for name in ("is_available", "init", "_lazy_init", "current_device", "set_device",
                 "get_device_properties", "mem_get_info"):
        setattr(torch.cuda, name, refuse_before_engine(f"cuda.{name}", getattr(torch.cuda, name)))
    if hasattr(torch._C, "_cuda_getDeviceCount"):
        torch._C._cuda_getDeviceCount = refuse_before_engine(
            "_C._cuda_getDeviceCount", torch._C._cuda_getDeviceCount)
    watch_engine_start()
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
