"""Blocked pairwise work on numpy or torch: the engine choice, exact torch, threads over slices."""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .blocks import MIB, row_blocks


# torch's TF32 flags as exact_torch first found them: the public API puts them back
# (utils.runtime.process_state), so that its caller finds them as it left them.
FOUND_TF32 = {}


def tf32_flags(torch):
    return {"matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32}


def set_tf32_flags(torch, flags):
    torch.backends.cuda.matmul.allow_tf32 = flags["matmul"]
    torch.backends.cudnn.allow_tf32 = flags["cudnn"]


def exact_torch():
    """Import torch with float32 matrix products in full precision (no TF32 shortcuts).

    TF32 keeps 10 mantissa bits; with it the GPU could not reproduce the CPU's numbers.
    """
    import torch

    if not FOUND_TF32:
        FOUND_TF32.update(tf32_flags(torch))
    set_tf32_flags(torch, {"matmul": False, "cudnn": False})
    return torch


# Working bytes per (row, row) pair of a block: numpy keeps one float32 matrix and works in
# place; torch may also make a float64 copy for its float64 sum.
NUMPY_PAIR_BYTES = 4


TORCH_PAIR_BYTES = 4 + 8


def resolve_engine(device, engine=None):
    """``"numpy"`` on the CPU and ``"torch"`` on a GPU unless ``engine`` says otherwise."""
    if engine is None:
        return "numpy" if device == "cpu" else "torch"
    if engine not in ("numpy", "torch"):
        raise ValueError(f"unknown engine {engine!r}")
    if engine == "numpy" and device != "cpu":
        raise ValueError(f"the numpy engine runs on the CPU only, not on {device}")
    return engine


def to_torch(array, device):
    """A numpy array as a torch tensor on ``device`` (float32 matrix products exact: no TF32)."""
    from .compute import exact_torch

    torch = exact_torch()
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def pair_blocks(n_rows, n_columns, block_mib, pair_bytes, row_bytes=0):
    """Row blocks of a (n_rows x n_columns) pairwise quantity within ``block_mib``."""
    return list(row_blocks(n_rows, n_columns * pair_bytes + row_bytes, block_mib * MIB))


def bytes_per_pair(engine):
    """Working bytes of one (row, column) pair of a blocked pairwise quantity on ``engine``."""
    return NUMPY_PAIR_BYTES if engine == "numpy" else TORCH_PAIR_BYTES


def threaded(function, start, stop, n_threads=None):
    """``function(a, b)`` on ``n_threads`` slices of rows ``start:stop`` at once; the results
    in slice order. numpy's BLAS and ufuncs release the GIL, so the slices share the cores
    (as in ``utils.metrics.proximity``), and their working memory adds up to the block's."""
    n_threads = min(n_threads or os.cpu_count() or 1, stop - start)
    if n_threads <= 1:
        return [function(start, stop)]
    bounds = np.linspace(start, stop, n_threads + 1).astype(int)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        jobs = [pool.submit(function, a, b) for a, b in zip(bounds, bounds[1:])]
        return [job.result() for job in jobs]
