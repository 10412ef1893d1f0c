"""The density factor of SPEC section 2 against a reference set, from the exact kNN."""

import numpy as np

from ..errors import InputError, setting
from ..numerics.blocks import DEFAULT_BLOCK_MIB, MIB
from ..runtime.progress import tracked
from .dedup import DistinctQueries, RowLookup, unique_rows
from .exact_knn import DEFAULT_SEARCH_ERROR, drop_self, max_sq_norm, nearest_certified
from .flat_index import flat_index

DENSITY_EPS = 1e-9


QUERY_CHUNK_ROWS = 8192  # distinct query rows per search call (progress is reported per chunk)


def mean_sq_distance_by_k(sq_distances, ks):
    """Mean of the first k (nearest) squared distances of each row, for each k in ``ks``."""
    prefix_sums = np.cumsum(sq_distances.astype(np.float64), axis=1)
    return {k: prefix_sums[:, k - 1] / k for k in ks}


def density_factor(mean_sq_distance, beta):
    """sigma_k ** beta = 1 / (mean squared kNN distance + 1e-9) ** beta (float64)."""
    return 1.0 / np.power(np.asarray(mean_sq_distance, dtype=np.float64) + DENSITY_EPS, beta)


def check_neighbor_counts(ks, distinct_rows, source):
    """Every k must satisfy 1 <= k < |R| (distinct rows), so a member keeps k others."""
    for k in ks:
        if k < 1 or k >= distinct_rows:
            raise InputError(f"{setting('neighbors', k)}: must be at least 1 and below the "
                             f"number of distinct rows of {source} ({distinct_rows})")


class DensityReference:
    """The reference set R of docs/method.md section 3, ready to give mean kNN distances of
    queries. ``block_mib``: working memory of one block of the torch search."""

    def __init__(self, vectors, device="cpu", backend=None, source="the reference set",
                 block_mib=DEFAULT_BLOCK_MIB, search_error=DEFAULT_SEARCH_ERROR):
        self.rows, self._lookup = unique_rows(vectors)
        self.search_error = search_error  # the search's error bound (``nearest_certified``)
        self.device = device
        self.backend = backend
        self.source = source
        self.block_mib = block_mib
        self._index = None  # built on the first search, then kept for every chunk and dataset
        self._max_sq_norm = None  # for the search's error bound, likewise

    def __len__(self):
        return len(self.rows)

    @property
    def width(self):
        return self.rows.shape[1]

    def check_neighbors(self, ks):
        check_neighbor_counts(ks, len(self.rows), self.source)

    def index(self):
        """The search index over the reference rows, built once."""
        if self._index is None:
            self._index = flat_index(self.rows, self.device, self.backend, self.block_mib)
        return self._index

    def mean_sq_distances(self, queries, ks, progress=None, chunk_rows=QUERY_CHUNK_ROWS,
                          outside=False):
        """For each k in ``ks``: the mean squared distance of each query to its k nearest rows.

        Each distinct query row is searched once, in chunks of ``chunk_rows`` distinct rows,
        so that duplicates get bitwise the same result and ``progress`` (for example tqdm,
        wrapping the list of chunks) can report on a long search. ``outside``: the queries
        come from elsewhere (a given set, docs/method.md section 10), so no neighbour is left
        out as the query itself, even where a query equals a reference row.
        """
        self.check_neighbors(ks)
        k_max = max(ks)
        distinct = DistinctQueries(queries, self.rows,
                                   RowLookup({}) if outside else self._lookup)
        kept = np.empty((len(distinct), k_max), dtype=np.float64)
        chunks = [(start, min(len(distinct), start + chunk_rows))
                  for start in range(0, len(distinct), chunk_rows)]
        self.index().expect_queries(len(distinct))
        for start, stop in tracked(chunks, progress):
            rows, self_rows = distinct.rows(start, stop)
            sq_distances, labels = self.nearest_exact(rows, k_max + 1)
            kept[start:stop] = drop_self(sq_distances, labels, self_rows, k_max)
        return mean_sq_distance_by_k(kept[distinct.which], ks)

    def nearest_exact(self, queries, n_results):
        """The ``n_results`` nearest reference rows of each query and their exact squared
        distances (float64), nearest first, ties to the lower row (``nearest_certified``)."""
        index = self.index()
        if self._max_sq_norm is None:
            self._max_sq_norm = max_sq_norm(self.rows)
        return nearest_certified(index.search, index.reference, queries, n_results,
                                 self.block_mib * MIB, index.device, self._max_sq_norm,
                                 self.search_error, index.rerank_kernels())
