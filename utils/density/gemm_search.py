"""The CPU's candidate search: blocked float32 matrix products (numpy's BLAS) and a numba
partial selection, with each block pair computed once when the queries are the rows.

A squared distance is ||q||^2 + ||r||^2 - 2 q.r in float32, the form and precision of faiss's
flat index, so the certified kNN's error bound (``exact_knn.search_error_bound``) covers it as
it covers faiss: the products are float32 sums of d terms; the norms are rounded once from
float64 (more exact than faiss's float32 sums). Each query keeps the m smallest of its own
distances exactly (a max-heap of m per query, any of equal distances at the m-th place), which
is all the certification asks of a search: a row it did not propose has a search distance no
smaller than the largest it proposed.

Measured on the Intel Xeon (2 cores, AVX-512) of docs/benchmarks.md, 5,000 queries against
20,000 x 256 rows: faiss's flat search 1.7 s, this search 0.6 s; when the queries are the rows
(the pool's own density), the block pairs (I, J) and (J, I) share one product, half the work.
"""

import numba
import numpy as np

# Working bytes per (query, row) pair of a block: the float32 product. Blocks are also kept
# small enough (SEARCH_BLOCK_ROWS square) that a block's products stay in cache for the
# selection that reads them right after the product.
SEARCH_PAIR_BYTES = 4
SEARCH_BLOCK_ROWS = 2048
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


def sq_norms32(rows):
    """Squared L2 norms of float32 rows, summed in float64 and rounded once to float32."""
    rows64 = np.asarray(rows, dtype=np.float64)
    return np.einsum("ij,ij->i", rows64, rows64).astype(np.float32)


def block_rows(block_bytes):
    """Rows of a square block of the search within ``block_bytes`` (at most
    ``SEARCH_BLOCK_ROWS``, at least one)."""
    square = int((block_bytes / SEARCH_PAIR_BYTES) ** 0.5)
    return max(1, min(SEARCH_BLOCK_ROWS, square))


def sorted_heaps(heap_d, heap_l):
    """Each query's kept candidates, nearest first: ``(distances, labels)``."""
    order = np.argsort(heap_d, axis=1, kind="stable")
    return np.take_along_axis(heap_d, order, axis=1), np.take_along_axis(heap_l, order, axis=1)


def empty_heaps(n_queries, m):
    return (np.empty((n_queries, m), dtype=np.float32), np.empty((n_queries, m), dtype=np.int64),
            np.zeros(n_queries, dtype=np.int64))


class GemmSearch:
    """Exact float32 squared-L2 search over ``rows`` (n, d) by blocked matrix products.

    ``search(queries, m)``: the m smallest float32 distances of each query and their rows,
    nearest first. When the queries are a run of the rows themselves, as the pool's own
    density asks for them (``DistinctQueries`` lists the pool's rows in order), the block
    pairs are shared: the rows are cut in blocks of ``step``; a block is served once every
    pair (I, J) it is in has been computed, and the product of (I, J), I < J, feeds the heaps
    of I's rows and of J's rows at once. Each pair is computed at most once, and only for
    blocks asked for (a run of a few rows of a large set costs what a plain search costs).
    The heaps of every row (n x m float32 and int64: 12 m bytes a row, a small share of the
    rows' 4 d) are kept for the m of the first such run; other m are searched plainly.
    """

    def __init__(self, rows, block_bytes):
        self.rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.norms = sq_norms32(self.rows)
        self.step = block_rows(block_bytes)
        self._self = None  # (m, heaps, pairs done, blocks complete) of the shared search
        self._next_run = 0  # where the last run of rows ended: the next one likely starts

    def search(self, queries, m):
        m = min(m, len(self.rows))
        start = self.run_start(queries)
        if start is None or (self._self is not None and self._self[0] != m):
            return self.search_plain(queries, m)
        stop = start + len(queries)
        heap_d, heap_l = self.complete_blocks(start, stop, m)
        self._next_run = stop
        return sorted_heaps(heap_d[start:stop], heap_l[start:stop])

    def run_start(self, queries):
        """The row where ``queries`` start when they are a run of the rows, else None."""
        n = len(queries)
        for start in (self._next_run, 0):
            if n and start + n <= len(self.rows) and np.array_equal(
                    queries, self.rows[start:start + n]):
                return start
        return None

    def search_plain(self, queries, m):
        """Query and row blocks of at most ``step`` rows: one product of (query block x row
        block) float32 at a time, besides the queries' heaps."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        heap_d, heap_l, counts = empty_heaps(len(queries), m)
        query_norms = sq_norms32(queries)
        for q0 in range(0, len(queries), self.step):
            block = queries[q0:q0 + self.step]
            for r0 in range(0, len(self.rows), self.step):
                keep_smallest_rows(block @ self.rows[r0:r0 + self.step].T,
                                   query_norms[q0:q0 + self.step], self.norms[r0:r0 + self.step],
                                   q0, r0, heap_d, heap_l, counts)
        return sorted_heaps(heap_d, heap_l)

    def complete_blocks(self, start, stop, m):
        """Compute every pair not yet computed of the blocks holding rows ``start:stop``;
        returns the heaps of all rows (those of these blocks complete)."""
        n_blocks = -(-len(self.rows) // self.step)
        if self._self is None:
            self._self = (m, empty_heaps(len(self.rows), m),
                          np.zeros((n_blocks, n_blocks), dtype=bool), np.zeros(n_blocks, bool))
        _m, (heap_d, heap_l, counts), done, complete = self._self
        buffer = np.empty((self.step, self.step), dtype=np.float32)  # no fresh pages a block
        for block in range(start // self.step, -(-stop // self.step)):
            if complete[block]:
                continue
            for other in range(n_blocks):
                low, high = min(block, other), max(block, other)
                if done[low, high]:
                    continue
                i0, j0 = low * self.step, high * self.step
                row_block, column_block = (self.rows[i0:i0 + self.step],
                                           self.rows[j0:j0 + self.step])
                products = np.matmul(row_block, column_block.T, out=buffer[
                    :len(row_block), :len(column_block)])
                norms = self.norms[i0:i0 + self.step], self.norms[j0:j0 + self.step]
                keep_smallest_rows(products, *norms, i0, j0, heap_d, heap_l, counts)
                if low != high:  # the same distances serve the pair (J, I)
                    keep_smallest_columns(products, *norms, i0, j0, heap_d, heap_l, counts)
                done[low, high] = True
            complete[block] = True
        return heap_d, heap_l
