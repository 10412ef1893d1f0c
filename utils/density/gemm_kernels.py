"""The numba kernels of the CPU's candidate search (``gemm_search``): each query's m smallest
float32 distances kept in a max-heap, from a block's matrix product. A module of its own, so that
numba is imported only by searches large enough to use it (``gemm_search.SMALL_SEARCH_PAIRS``).
"""

import numba
import numpy as np

SCAN = 128  # entries compared with a bound at once; columns per task of the symmetric pass


@numba.njit(cache=True, inline="always")
def sq_distance(row_norm, column_norm, product):
    """||r||^2 + ||c||^2 - 2 r.c in float32: faiss's form (module docstring)."""
    return (row_norm + column_norm) - np.float32(2.0) * product


@numba.njit(cache=True, inline="always")
def heap_offer(heap, labels, count, distance, label):
    """Offer one candidate to a query's max-heap of its ``len(heap)`` smallest distances
    (``count`` of them filled); returns the distance a candidate must now beat."""
    m = heap.shape[0]
    if count < m:  # filling: sift the new entry up
        position = count
        while position > 0:
            parent = (position - 1) >> 1
            if heap[parent] >= distance:
                break
            heap[position] = heap[parent]
            labels[position] = labels[parent]
            position = parent
    else:  # full: replace the largest, sift the new entry down
        position = 0
        while True:
            child = 2 * position + 1
            if child >= m:
                break
            if child + 1 < m and heap[child + 1] > heap[child]:
                child += 1
            if heap[child] <= distance:
                break
            heap[position] = heap[child]
            labels[position] = labels[child]
            position = child
    heap[position] = distance
    labels[position] = label
    return heap[0] if count + 1 >= m else np.float32(np.inf)


@numba.njit(cache=True)
def _threshold(heap_d, counts, query):
    return heap_d[query, 0] if counts[query] == heap_d.shape[1] else np.float32(np.inf)


@numba.njit(parallel=True, cache=True)
def keep_smallest_rows(products, row_norms, column_norms, row_start, column_start,
                       heap_d, heap_l, counts):
    """Offer each row's distances (a query, ``row_start + i``) to its heap, labelled by
    column (``column_start + j``), from the block's ``products`` and the squared norms of its
    rows and columns. A run of ``SCAN`` entries is first compared with the query's bound at
    once (vectorised); most runs have no entry below it."""
    n_columns = products.shape[1]
    for i in numba.prange(products.shape[0]):
        query = row_start + i
        heap, labels = heap_d[query], heap_l[query]
        bound = _threshold(heap_d, counts, query)
        row_norm = row_norms[i]
        for first in range(0, n_columns, SCAN):
            run = products[i, first:min(n_columns, first + SCAN)]
            norms = column_norms[first:first + run.shape[0]]
            below = False
            for j in range(run.shape[0]):
                below |= sq_distance(row_norm, norms[j], run[j]) < bound
            if not below:
                continue
            for j in range(run.shape[0]):
                distance = sq_distance(row_norm, norms[j], run[j])
                if distance < bound:
                    bound = heap_offer(heap, labels, counts[query], distance,
                                       column_start + first + j)
                    counts[query] = min(counts[query] + 1, heap.shape[0])


@numba.njit(parallel=True, cache=True)
def keep_smallest_columns(products, row_norms, column_norms, row_start, column_start,
                          heap_d, heap_l, counts):
    """``keep_smallest_rows`` with the columns as the queries (``column_start + j``) and the
    rows as their candidates: the pair (J, I) of a symmetric search, read from the block of
    (I, J) row by row (contiguous), in tasks of ``SCAN`` columns, each row's run compared
    with the columns' bounds at once. The distances are those ``keep_smallest_rows`` gives
    the same pairs (float addition commutes)."""
    n_rows, n_columns = products.shape
    for task in numba.prange((n_columns + SCAN - 1) // SCAN):
        first = task * SCAN
        last = min(n_columns, first + SCAN)
        norms = column_norms[first:last]
        bounds = np.empty(last - first, dtype=np.float32)
        for j in range(first, last):
            bounds[j - first] = _threshold(heap_d, counts, column_start + j)
        for i in range(n_rows):
            run = products[i, first:last]
            row_norm = row_norms[i]
            below = False
            for j in range(run.shape[0]):
                below |= sq_distance(row_norm, norms[j], run[j]) < bounds[j]
            if not below:
                continue
            for j in range(run.shape[0]):
                distance = sq_distance(row_norm, norms[j], run[j])
                if distance < bounds[j]:
                    query = column_start + first + j
                    bounds[j] = heap_offer(heap_d[query], heap_l[query], counts[query],
                                           distance, row_start + i)
                    counts[query] = min(counts[query] + 1, heap_d.shape[1])
