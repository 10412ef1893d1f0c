"""The exact re-ranking on the CPU: a numba kernel, bitwise the torch ``exact_sq_distances``.

For each query and each of its candidate rows, the squared distance is the float64
differences, their squares and a halving tree over the dimensions (with h the largest power
of two below d: s_j += s_{j+h} for j < d - h, then s_j += s_{j+h'} for j < h' = h/2, ..., 1),
the order of ``numerics.fixed_order.halving_sums``. Every operation is a single IEEE
operation and numba runs without fastmath (nothing reordered or fused), so each value is
bitwise the one torch computes on the CPU or a GPU (tests/test_density.py checks it). The
``n_keep`` nearest are kept by (distance, row), as ``exact_knn.nearest_by_distance_then_row``
orders them. Working memory: one row of d float64 per thread, besides the output.
"""

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..numerics.blocks import row_blocks
from ..numerics.fixed_order import halving_sums
from ..runtime.device import cpu_threads

# Below this many (query, candidate, dimension) elements a re-ranking left to choose its
# kernels ("auto") runs in numpy (``rerank_exact_numpy``, the same bits): it then starts no
# numba (about 0.8 s). A search that runs numba kernels itself asks for numba's (about 20
# times numpy's speed), whatever the size (``FlatIndex.rerank_kernels``).
SMALL_RERANK_ELEMENTS = 10**8
RERANK_KERNELS = ("auto", "numba", "numpy")
# the gathered rows (float32), their float64 differences, and the first halving's copy
RERANK_NUMPY_BYTES_PER_ELEMENT = 4 + 8 + 8
RERANK_BLOCK_BYTES = 64 * 2**20


@functools.cache  # numba and the kernel load on the first numba re-ranking
def _rerank_kernel():
    from .rerank_kernels import rerank_rows

    return rerank_rows


def rerank_exact_cpu(queries, rows, labels, n_keep, block_bytes=RERANK_BLOCK_BYTES,
                     kernels="auto"):
    """The ``n_keep`` nearest of each query's candidate rows by exact squared distance, on the
    CPU: ``(distances, labels)``, (n, n_keep) float64 and int64, nearest first, equal
    distances in the order of their row numbers (``exact_knn.rerank_exact``'s contract).

    ``queries`` (n, d) and ``rows`` (r, d) float32; ``labels`` (n, m) candidate rows, m at
    least ``n_keep``, each a row of ``rows``. ``kernels``: "numba", "numpy" (within
    ``block_bytes``), or "auto": numpy below ``SMALL_RERANK_ELEMENTS``, numba above.
    """
    if kernels not in RERANK_KERNELS:
        raise ValueError(f"kernels must be one of {', '.join(RERANK_KERNELS)}, not {kernels!r}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if labels.shape[1] < n_keep:
        raise ValueError(f"{labels.shape[1]} candidates per query, fewer than the "
                         f"{n_keep} to keep")
    if len(labels) and (labels.min(initial=0) < 0 or labels.max(initial=0) >= len(rows)):
        raise ValueError(f"candidate rows must lie in 0..{len(rows) - 1}")
    if kernels == "numpy" or (kernels == "auto"
                              and labels.size * rows.shape[1] < SMALL_RERANK_ELEMENTS):
        return rerank_exact_numpy(queries, rows, labels, n_keep, block_bytes)
    out_d = np.empty((len(queries), n_keep), dtype=np.float64)
    out_l = np.empty((len(queries), n_keep), dtype=np.int64)
    if len(queries) and n_keep:
        _rerank_kernel()(queries, rows, labels, out_d, out_l)
    return out_d, out_l


def rerank_exact_numpy(queries, rows, labels, n_keep, block_bytes):
    """``rerank_exact_cpu`` in numpy, bitwise: the float64 differences, squares and halving
    tree as elementwise operations (``halving_sums``), in blocks of queries within
    ``block_bytes`` (one block per thread at once, ``cpu_threads``: numpy releases the GIL);
    the ``n_keep`` nearest by (distance, row)."""
    n, m = labels.shape
    out_d = np.empty((n, n_keep), dtype=np.float64)
    out_l = np.empty((n, n_keep), dtype=np.int64)
    per_query = m * rows.shape[1] * RERANK_NUMPY_BYTES_PER_ELEMENT

    def rerank_block(block):
        start, stop = block
        block_l = labels[start:stop]
        differences = (queries[start:stop, None, :].astype(np.float64)
                       - rows[block_l].astype(np.float64))
        distances = halving_sums(np.multiply(differences, differences, out=differences))
        order = np.lexsort((block_l, distances), axis=-1)[:, :n_keep]
        out_d[start:stop] = np.take_along_axis(distances, order, axis=1)
        out_l[start:stop] = np.take_along_axis(block_l, order, axis=1)

    n_threads = cpu_threads()
    blocks = list(row_blocks(n, per_query, block_bytes // n_threads))
    with ThreadPoolExecutor(max_workers=n_threads) as threads:
        list(threads.map(rerank_block, blocks))
    return out_d, out_l
