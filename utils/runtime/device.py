"""Resolve ``--gpu_id`` to a device once, at the edge; CPU threads per process.

Convention (as faiss's ``ngpu``): ``None`` means "GPU 0 if there is one, else the CPU";
``-1`` means the CPU; ``N >= 0`` asks for GPU N and falls back to the CPU with a notice."""

import glob
import importlib.util
import os

CPU = "cpu"


def nvidia_driver_present():
    """Whether this machine exposes an NVIDIA GPU, checked without importing torch.

    Importing torch costs about a second; on a laptop with no NVIDIA device nodes we know the
    answer without it.
    """
    return bool(glob.glob("/dev/nvidia[0-9]*")) or bool(glob.glob("/proc/driver/nvidia/gpus/*"))


def cuda_device_count(fork_safe=False):
    """Number of CUDA devices torch can use (0 without torch, a CUDA build or a driver).

    ``fork_safe`` (vLLM's path): counted through NVML alone, as ``torch.cuda.device_count``
    does first, so that CUDA does not start and vLLM can still fork its workers afterwards
    (``torch.cuda.is_available`` would start it and forbid that; vLLM issues 8893 and 12754).
    Otherwise CUDA is also asked whether it works (a driver too old for torch's CUDA: none).
    """
    if not nvidia_driver_present() or importlib.util.find_spec("torch") is None:
        return 0
    import torch

    count = torch.cuda.device_count()
    if fork_safe or not count:
        return count
    return count if torch.cuda.is_available() else 0


def resolve_device(gpu_id, notify=None, fork_safe=False):
    """Return ``"cpu"`` or ``"cuda:N"`` for ``gpu_id``; ``notify(str)`` hears of any fallback.
    ``fork_safe``: CUDA must not start (``cuda_device_count``)."""
    if gpu_id is not None and gpu_id < 0:
        return CPU
    count = cuda_device_count(fork_safe)
    if gpu_id is None:
        return "cuda:0" if count else CPU
    if gpu_id < count:
        return f"cuda:{gpu_id}"
    if notify is not None:
        reason = "no CUDA device is available" if count == 0 else f"only {count} CUDA device(s)"
        notify(f"GPU {gpu_id} requested but {reason}; running on the CPU")
    return CPU


def peak_memory_note(device):
    """``"; peak GPU memory X GiB"`` for a GPU run (torch's allocator), ``""`` on the CPU."""
    if device == CPU:
        return ""
    import torch

    return f"; peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"


def pin_visible_gpu(gpu_id, environ=None):
    """Make GPU ``gpu_id`` the only device this process will see, and return its new number.

    vLLM runs on the first visible device, and CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when
    it starts: this must run before anything touches CUDA (``resolve_device`` does). An
    existing ``CUDA_VISIBLE_DEVICES`` list is honoured (``gpu_id`` counts within it). A GPU
    that is not in that list is left for ``resolve_device`` to report.
    """
    environ = os.environ if environ is None else environ
    if gpu_id is None or gpu_id < 0:
        return gpu_id
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    ids = [part.strip() for part in visible.split(",") if part.strip()] if visible else None
    if ids is not None and gpu_id >= len(ids):
        return gpu_id
    environ["CUDA_VISIBLE_DEVICES"] = ids[gpu_id] if ids is not None else str(gpu_id)
    return 0


def cpu_threads():
    """CPU threads this process should use: the CPUs it may run on, shared out among the
    processes ``torchrun`` started on this node (``LOCAL_WORLD_SIZE``)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
