"""What a selection needs in memory, checked before the work starts."""

import contextlib
import os

from ..errors import InputError, option, setting
from ..numerics.blocks import MIB
from .engine import VALUE_BYTES

TORCH_BLOCK_MIB = 1024  # default working memory of one row chunk (torch) or rebuild block


def selection_memory_bytes(n, k, dim):
    """Bytes the selection holds: pool x (budget - 1) stored values, the unit vectors, sums."""
    return n * max(k - 1, 1) * VALUE_BYTES + n * dim * 4 + n * 8 * 3


def available_memory_bytes(device):
    """Memory free for the selection on ``device`` (GPU: free device memory; CPU: MemAvailable)."""
    if device != "cpu":
        import torch

        return torch.cuda.mem_get_info(torch.device(device))[0]
    with contextlib.suppress(OSError):  # no /proc (not Linux): ask sysconf instead
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_memory(n, k, dim, device, block_mib=TORCH_BLOCK_MIB, share=1):
    """Refuse, before any work, a selection that cannot fit in memory.

    On a GPU the torch engine also needs its per-chunk working memory, ``block_mib``.
    ``share``: how many processes share the free memory alike (CPU ranks on one node).
    """
    need = selection_memory_bytes(n, k, dim)
    if device != "cpu":
        need += block_mib * MIB
    free = available_memory_bytes(device) // max(1, share)
    if need > free:
        raise InputError(f"{setting('k', k)} on a pool of {n}: the selection needs "
                         f"{need / 2**30:.1f} GiB ({n} x {k - 1} values x {VALUE_BYTES} bytes, "
                         f"plus vectors) but {device} has {free / 2**30:.1f} GiB free; lower "
                         f"{option('k')} or use a "
                         f"machine with more memory")
