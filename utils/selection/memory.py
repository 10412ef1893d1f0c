"""What a selection needs in memory, checked before the work starts."""

import contextlib
import os

from ..errors import InputError, option, setting
from ..numerics.blocks import MIB
from .selection_engine import VALUE_BYTES

TORCH_BLOCK_MIB = 1024  # default working memory of one row chunk (torch) or rebuild block


def selection_memory_bytes(n, k, dim):
    """Bytes the selection holds: pool x (k - 1) stored values, the unit vectors, sums and
    squared norms."""
    return n * max(k - 1, 1) * VALUE_BYTES + n * dim * 4 + n * 8 * 4


def density_memory_bytes(reference_rows, dim):
    """Bytes the density stage adds for its reference rows: the distinct rows' copy, the
    search's own copy (faiss's index, or torch's on a GPU), and a 16-byte key per row."""
    return reference_rows * (2 * dim * 4 + 16)


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


def check_memory(n, k, dim, device, block_mib=TORCH_BLOCK_MIB, share=1, reference_rows=0,
                 given_rows=0):
    """Refuse, before any work, a selection that cannot fit in memory: its density stage (over
    ``reference_rows`` rows; 0 when no density factor is computed), then the selection itself,
    whose candidates also hold their values against ``given_rows`` rows of a given set.

    On a GPU the torch kernels also need their per-chunk working memory, ``block_mib``.
    ``share``: how many processes share the free memory alike (CPU ranks on one node).
    """
    working = block_mib * MIB if device != "cpu" else 0
    free = available_memory_bytes(device) // max(1, share)
    need = density_memory_bytes(reference_rows + given_rows, dim) + working
    if reference_rows and need > free:
        raise InputError(f"the density stage over {reference_rows:,} reference rows needs "
                         f"{need / 2**30:.1f} GiB (two copies of the rows for the exact kNN) "
                         f"but {device} has {free / 2**30:.1f} GiB free; use a smaller "
                         f"reference set or a machine with more memory")
    fixed = selection_memory_bytes(n, 1, dim) - n * VALUE_BYTES + given_memory_bytes(
        given_rows, dim) + working
    need = fixed + n * max(given_rows + k - 1, 1) * VALUE_BYTES
    if need <= free:
        return
    if not given_rows:
        raise InputError(f"{setting('k', k)} on a pool of {n}: the selection needs "
                         f"{need / 2**30:.1f} GiB ({n} x {k - 1} values x {VALUE_BYTES} bytes, "
                         f"plus vectors) but {device} has {free / 2**30:.1f} GiB free; lower "
                         f"{option('k')} or use a machine with more memory")
    room = max(0, free - fixed) // (n * VALUE_BYTES) + 1  # |G| + k that would fit
    raise InputError(f"{setting('k', k)} with {given_rows:,} given rows ({option('given')}) on "
                     f"a pool of {n}: the selection needs {need / 2**30:.1f} GiB ({n} x "
                     f"{given_rows + k - 1} values x {VALUE_BYTES} bytes, plus vectors) but "
                     f"{device} has {free / 2**30:.1f} GiB free; {what_fits(room, k, given_rows)}")


def what_fits(room, k, given_rows):
    """The largest pick count, or given set, that ``room`` values per candidate allow."""
    larger_k = f"at most {option('k')} {room - given_rows} with this given set"
    fewer_given = f"at most {room - k:,} given rows with this {option('k')}"
    if room > given_rows and room > k:
        return f"{larger_k}, or {fewer_given}"
    if room > k:
        return fewer_given
    if room > given_rows:
        return larger_k
    return "use a machine with more memory"


def given_memory_bytes(given_rows, dim):
    """The given set's rows as loaded and as unit rows (float32 each)."""
    return given_rows * dim * 4 * 2
