"""The exact re-ranking's numba kernel (``rerank_cpu``): float64 squared distances summed by
the halving tree of ``numerics.fixed_order``, the nearest kept by (distance, row).

Imported only when a re-ranking takes numba (numba loads then, not at start-up). Every
operation is a single IEEE operation, without fastmath, so each distance is bitwise the one
torch computes (``exact_knn.exact_sq_distances``).
"""

import numba
import numpy as np

from ..numerics.fixed_order_kernels import halve, halving_power


@numba.njit(cache=True, inline="always")
def squared_distance(query, row, squares, half):
    """sum_j (q_j - r_j)^2 in float64 by the halving tree (``squares``: scratch of ``half``)."""
    dim = query.shape[0]
    if dim == 1:
        difference = np.float64(query[0]) - np.float64(row[0])
        return difference * difference
    query_high, row_high = query[half:], row[half:]
    for j in range(half):
        difference = np.float64(query[j]) - np.float64(row[j])
        squares[j] = difference * difference
    for j in range(dim - half):
        difference = np.float64(query_high[j]) - np.float64(row_high[j])
        squares[j] += difference * difference
    return halve(squares, half)


@numba.njit(cache=True, inline="always")
def keep_nearest(best_d, best_l, count, distance, label):
    """Insert (distance, label) into the sorted ``count`` nearest so far, keeping at most
    ``len(best_d)`` by (distance, row); returns the new count."""
    n_keep = best_d.shape[0]
    if count < n_keep:
        position = count
        count += 1
    elif distance < best_d[n_keep - 1] or (
            distance == best_d[n_keep - 1] and label < best_l[n_keep - 1]):
        position = n_keep - 1
    else:
        return count
    while position > 0 and (distance < best_d[position - 1] or (
            distance == best_d[position - 1] and label < best_l[position - 1])):
        best_d[position] = best_d[position - 1]
        best_l[position] = best_l[position - 1]
        position -= 1
    best_d[position] = distance
    best_l[position] = label
    return count


@numba.njit(parallel=True, cache=True)
def rerank_rows(queries, rows, labels, out_d, out_l):
    """For each query i: the ``out_d.shape[1]`` nearest of its candidate rows ``labels[i]`` by
    exact squared distance, into ``out_d[i]`` and ``out_l[i]``, nearest first."""
    n, m = labels.shape
    half = halving_power(queries.shape[1])
    for i in numba.prange(n):
        squares = np.empty(half, dtype=np.float64)
        count = 0
        for c in range(m):
            label = labels[i, c]
            count = keep_nearest(out_d[i], out_l[i], count,
                                 squared_distance(queries[i], rows[label], squares, half), label)
