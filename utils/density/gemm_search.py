"""The CPU's candidate search: blocked float32 matrix products (numpy's BLAS) and a numba
partial selection, with each block pair computed once when the queries are the rows.

A squared distance is ||q||^2 + ||r||^2 - 2 q.r in float32, the form and precision of faiss's
flat index, so the certified kNN's error bound (``exact_knn.search_error_bound``) covers it as
it covers faiss: the products are float32 sums of d terms; the norms are rounded once from
float64 (more exact than faiss's float32 sums). Each query keeps the m smallest of its own
distances exactly (a max-heap of m per query, any of equal distances at the m-th place), which
is all the certification asks of a search: a row it did not propose has a search distance no
smaller than the largest it proposed. A search of fewer than ``SMALL_SEARCH_PAIRS`` pairs (the
queries of all its calls, when told how many: ``expected_queries``) selects with numpy's
``argpartition`` instead, the same distances, and imports no numba.

Measured on the Intel Xeon (2 cores, AVX-512) of docs/benchmarks.md, 5,000 queries against
20,000 x 256 rows: faiss's flat search 1.7 s, this search 0.6 s; when the queries are the rows
(the pool's own density), the block pairs (I, J) and (J, I) share one product, half the work.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..runtime.device import cpu_threads

# Working bytes per (query, row) pair of a block: the float32 product. Blocks are also kept
# small enough (SEARCH_BLOCK_ROWS square) that a block's products stay in cache for the
# selection that reads them right after the product.
SEARCH_PAIR_BYTES = 4
SEARCH_BLOCK_ROWS = 2048
# Below this many (query, row) pairs a search selects with numpy (``search_small``): numba's
# one-time start in a process (about 0.8 s here, docs/benchmarks.md) costs more than its faster
# selection saves (about 4 ns a pair).
SMALL_SEARCH_PAIRS = 2 * 10**8


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
        self.block_bytes = block_bytes
        self.small_pairs = SMALL_SEARCH_PAIRS  # read when built: a test may lower it
        self.step = block_rows(block_bytes)
        self._self = None  # (m, heaps, pairs done, blocks complete) of the shared search
        self._next_run = 0  # where the last run of rows ended: the next one likely starts
        self.expected_queries = 0  # queries of the whole job, when the caller says (chunks)

    def is_small(self, n_queries):
        """Whether a call with ``n_queries`` takes the numpy path (``search_small``): the
        whole job's pairs are few, and no shared self-search has started."""
        job_queries = max(n_queries, self.expected_queries)
        return job_queries * len(self.rows) < self.small_pairs and self._self is None

    def search(self, queries, m):
        m = min(m, len(self.rows))
        if self.is_small(len(queries)):
            return self.search_small(queries, m)
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

    def search_small(self, queries, m):
        """Numpy alone: blocks of queries against all rows, the distances in the kernels' form
        (``gemm_kernels.sq_distance``) and a partial selection of each query's m smallest.
        One block per thread, each product on one BLAS thread: numpy's selection is
        single-threaded (it releases the GIL), and two such blocks side by side beat one
        product on two threads followed by a selection on one (0.7 s against 1.1 s here for
        5,000 queries against 20,000 x 256)."""
        from threadpoolctl import threadpool_limits

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        query_norms = sq_norms32(queries)
        threads = cpu_threads()
        # a block each thread: the product, the norms' sum and argpartition's indices
        step = max(1, min(-(-len(queries) // threads),
                          self.block_bytes // (16 * threads * len(self.rows))))
        distances = np.empty((len(queries), m), dtype=np.float32)
        labels = np.empty((len(queries), m), dtype=np.int64)

        def select(q0):
            block = queries[q0:q0 + step] @ self.rows.T
            block *= np.float32(2.0)
            np.subtract(query_norms[q0:q0 + step, None] + self.norms[None, :], block, out=block)
            nearest = np.argpartition(block, m - 1, axis=1)[:, :m] if m < len(self.rows) \
                else np.broadcast_to(np.arange(m), block.shape)
            labels[q0:q0 + len(block)] = nearest
            distances[q0:q0 + len(block)] = np.take_along_axis(block, nearest, axis=1)

        with threadpool_limits(limits=1, user_api="blas"), \
                ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(select, range(0, len(queries), step)))
        return sorted_heaps(distances, labels)

    def search_plain(self, queries, m):
        """Query and row blocks of at most ``step`` rows: one product of (query block x row
        block) float32 at a time, besides the queries' heaps."""
        from .gemm_kernels import keep_smallest_rows

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
        from .gemm_kernels import keep_smallest_columns, keep_smallest_rows

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
