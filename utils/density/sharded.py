"""The density reference split over ranks: each rank searches its block, the lists merge.

Both give what one process gives. The kNN search: the reference's exact duplicate rows are
removed across ranks, keeping each value's first row, as ``dedup.unique_rows`` keeps it; the
distinct queries are listed, ordered and searched in chunks exactly as ``DistinctQueries``
lists them in one process; each rank searches its own block of the reference for every chunk,
and the per-rank top-(k + 1) lists merge into the global one (the smallest distances, a
stable merge). The selection: each rank keeps only its candidates' stored values; a step is a
local best, one global argmax (ties to the lowest global index, the single-process rule), and
the pick's owner sending its unit vector and density factor to every rank.

Rows are identified across ranks by a 16-byte digest of their float32 bytes (-0.0 read as
0.0), the digest one process uses to tell apart rows whose cheap keys collide.
"""

import numpy as np

from ..numerics.blocks import MIB
from ..runtime.distributed import block_starts
from ..runtime.progress import tracked
from .dedup import DistinctPlan, digest_keys, row_digests
from .exact_knn import drop_self, max_sq_norm, nearest_certified
from .factor import QUERY_CHUNK_ROWS, check_neighbor_counts, mean_sq_distance_by_k
from .flat_index import flat_index


class ShardedDensityReference:
    """The reference set R of docs/method.md section 3 split over the ranks: this rank holds
    global rows ``start:start + len(rows)`` of it. Built by every rank together (collective).

    ``mean_sq_distances(queries, ks)`` takes this rank's block of the queries (any contiguous
    split, in rank order) and returns, on every rank, the mean squared kNN distances of *every*
    query, as ``DensityReference.mean_sq_distances`` gives them in one process (``outside``
    likewise).
    """

    def __init__(self, ranks, rows, device="cpu", backend=None, source="the reference set",
                 block_mib=256):
        self.ranks, self.device, self.backend = ranks, device, backend
        self.source, self.block_mib = source, block_mib
        self.local_rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.starts = block_starts(ranks, len(self.local_rows))
        self.start, self.total = int(self.starts[ranks.rank]), int(self.starts[-1])
        self.keys = digest_keys(ranks.gather_arrays(row_digests(self.local_rows)))
        _distinct, first = np.unique(self.keys, return_index=True)
        kept = np.zeros(self.total, dtype=bool)
        kept[first] = True  # each value's first row, as one process keeps it
        self.distinct_count = len(first)
        local_kept = np.flatnonzero(kept[self.start:self.start + len(self.local_rows)])
        self.kept_labels = self.start + local_kept  # global rows this rank searches
        self.kept_rows = self.local_rows[local_kept]
        self.max_sq_norm = max_sq_norm(self.kept_rows)  # for the search's error bound
        self._index = None

    def __len__(self):
        return self.distinct_count

    @property
    def width(self):
        return self.local_rows.shape[1]

    def check_neighbors(self, ks):
        check_neighbor_counts(ks, self.distinct_count, self.source)

    def index(self):
        if self._index is None and len(self.kept_rows):
            self._index = flat_index(self.kept_rows, self.device, self.backend, self.block_mib)
        return self._index

    def _chunk_rows(self, plan, start, stop, queries, query_starts):
        """The vectors of distinct entries ``start:stop``, each rank sending those it holds
        (one broadcast per rank that holds some: every rank receives the chunk once, whatever
        the number of ranks). ``query_starts``: every rank's first query row."""
        is_member, rows = plan.entries(start, stop)
        owners = np.where(is_member,
                          np.searchsorted(self.starts, rows, side="right") - 1,
                          np.searchsorted(query_starts, rows, side="right") - 1)
        chunk = np.empty((stop - start, self.width), dtype=np.float32)
        rank, query_start = self.ranks.rank, int(query_starts[self.ranks.rank])
        for owner in np.unique(owners):
            held = owners == owner
            if owner == rank:
                member, where = is_member[held], rows[held]
                part = np.empty((len(where), self.width), dtype=np.float32)
                part[member] = self.local_rows[where[member] - self.start]
                part[~member] = queries[where[~member] - query_start]
                chunk[held] = part
            chunk[held] = self.ranks.broadcast(chunk[held], int(owner))
        return chunk, np.where(is_member, rows, -1)

    def _search_merged(self, chunk, n_results):
        """The ``n_results`` nearest distinct reference rows of each chunk row, over all ranks,
        with exact distances: each rank's own nearest (``DensityReference.nearest_exact``'s
        search and exact re-ranking over its rows), merged by (distance, global row) as one
        process orders them."""
        local_d = np.full((len(chunk), n_results), np.inf, dtype=np.float64)
        local_i = np.full((len(chunk), n_results), -1, dtype=np.int64)
        index = self.index()
        if index is not None:
            take = min(n_results, len(self.kept_rows))
            distances, labels = nearest_certified(
                index.search, index.reference, chunk, take, self.block_mib * MIB, index.device,
                self.max_sq_norm, rerank_kernels=index.rerank_kernels())
            local_d[:, :take] = distances
            local_i[:, :take] = self.kept_labels[labels]
        size = self.ranks.size
        all_d = self.ranks.gather_arrays(local_d).reshape(size, len(chunk), n_results)
        all_i = self.ranks.gather_arrays(local_i).reshape(size, len(chunk), n_results)
        all_d = all_d.transpose(1, 0, 2).reshape(len(chunk), -1)
        all_i = all_i.transpose(1, 0, 2).reshape(len(chunk), -1)
        order = np.lexsort((all_i, all_d), axis=1)[:, :n_results]
        return (np.take_along_axis(all_d, order, axis=1),
                np.take_along_axis(all_i, order, axis=1))

    def mean_sq_distances(self, queries, ks, progress=None, chunk_rows=QUERY_CHUNK_ROWS,
                          outside=False):
        self.check_neighbors(ks)
        k_max = max(ks)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        same = queries is self.local_rows or (queries.shape == self.local_rows.shape
                                              and np.shares_memory(queries, self.local_rows))
        query_starts = block_starts(self.ranks, len(queries))
        everywhere_same = bool(self.ranks.gather_arrays(np.asarray([same])).all())
        query_keys = self.keys if everywhere_same and not outside else digest_keys(
            self.ranks.gather_arrays(row_digests(queries)))
        plan = DistinctPlan(self.keys[:0] if outside else self.keys, query_keys)
        kept = np.empty((len(plan), k_max), dtype=np.float64)
        chunks = [(start, min(len(plan), start + chunk_rows))
                  for start in range(0, len(plan), chunk_rows)]
        if self.index() is not None:
            self.index().expect_queries(len(plan))
        for start, stop in tracked(chunks, progress):
            chunk, self_rows = self._chunk_rows(plan, start, stop, queries, query_starts)
            sq_distances, labels = self._search_merged(chunk, k_max + 1)
            kept[start:stop] = drop_self(sq_distances, labels, self_rows, k_max)
        return mean_sq_distance_by_k(kept[plan.which], ks)
