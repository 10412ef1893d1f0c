"""Exact k-nearest-neighbour search and the density factor (docs/method.md section 3).

sigma_k(x) = 1 / (mean of the k smallest squared L2 distances from x to the reference set R
+ 1e-9) ** beta, with R's exact duplicate rows kept once and x itself left out when x is a row
of R. The published script always dropped the first neighbour, which is wrong for a query from
elsewhere (docs/method.md section 7); here the left-out row is found by identity, not by position.

Search backends, all exhaustive (squared L2, as a faiss ``IndexFlatL2``): faiss on the CPU;
faiss-gpu when it is installed and a GPU is asked for; otherwise a blocked torch search on the
GPU. They compute ||q||^2 + ||r||^2 - 2 q.r with float32 matrix products, whose rounding
depends on the blocking, the threads, the device and, under torchrun, on how the reference is
split (measured: up to 3e-4 on a squared distance of clustered 256-dimensional vectors). So
the search only proposes candidates, twice as many as needed, and their distances are then
computed again exactly (``rerank_exact``: float64 differences summed in a fixed order); a
query whose candidates may miss a nearer row (its k-th exact distance not clearly below what
the search's rounding allows the rows it did not propose) is searched again with twice as
many (``nearest_certified``). A density factor then depends on the vectors alone, bitwise, on
every backend, thread count and number of ranks (docs/method.md sections 3, 6 and 9).

Exact duplicates get bitwise the same factor (docs/method.md section 6): each distinct query
row is searched once and its duplicates share the result.
"""

import hashlib
import math

import numpy as np

from .blocks import DEFAULT_BUDGET_MIB, MIB, row_blocks, rows_per_block
from .device import exact_torch
from .errors import InputError
from .progress import tracked

DENSITY_EPS = 1e-9
QUERY_CHUNK_ROWS = 8192  # distinct query rows per search call (progress is reported per chunk)


SAMPLE_COLUMNS = 32  # columns whose bytes make a row's first, cheap key


def sample_keys(vectors):
    """A cheap key per row: the bytes of up to 32 evenly spaced columns, -0.0 read as 0.0.

    Equal rows have equal keys; rows with equal keys are told apart by a full digest, which
    real data rarely needs, so a 400,000 x 4,096 set is not hashed in full (seconds saved).
    """
    columns = np.unique(np.linspace(0, vectors.shape[1] - 1,
                                    min(vectors.shape[1], SAMPLE_COLUMNS)).round().astype(int))
    sample = np.ascontiguousarray(vectors[:, columns], dtype=np.float32) + np.float32(0.0)
    return [row.tobytes() for row in sample]


def full_digest(row):
    """A 16-byte digest of a whole row's float32 bytes, -0.0 read as 0.0."""
    canonical = np.ascontiguousarray(row, dtype=np.float32) + np.float32(0.0)
    return hashlib.blake2b(canonical.tobytes(), digest_size=16).digest()


class RowLookup:
    """Which row of a set of distinct rows equals a given row, if any (exact, by value).

    ``table`` maps a sample key to the row's position, or, for the few keys that distinct rows
    share, to ``{full digest: position}``.
    """

    def __init__(self, table):
        self.table = table

    def find(self, row, key, rows):
        entry = self.table.get(key)
        if entry is None:
            return -1
        j = entry if isinstance(entry, int) else entry.get(full_digest(row), -1)
        # Checked on the values: a key or digest collision must not drop a true neighbour.
        return j if j >= 0 and np.array_equal(row, rows[j]) else -1


def unique_rows(vectors):
    """Keep the first occurrence of each exact row: ``(rows, RowLookup over them)``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    keys = sample_keys(vectors)
    groups = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    keep = []
    for members in groups.values():
        if len(members) == 1:
            keep.append(members[0])
            continue
        seen = set()  # rows sharing a key: kept once per distinct full digest
        for i in members:
            digest = full_digest(vectors[i])
            if digest not in seen:
                seen.add(digest)
                keep.append(i)
    keep.sort()  # first occurrences, in their original order
    rows = vectors if len(keep) == len(vectors) else vectors[keep]
    table = {}
    for position, i in enumerate(keep):
        entry = table.get(keys[i])
        if entry is None:
            table[keys[i]] = position
            continue
        if isinstance(entry, int):
            entry = table[keys[i]] = {full_digest(rows[entry]): entry}
        entry[full_digest(rows[position])] = position
    return rows, RowLookup(table)


def rows_in_reference(queries, reference_rows, lookup):
    """Index in the reference of each query row, or -1 where the query is not a reference row."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    return np.array([lookup.find(query, key, reference_rows)
                     for query, key in zip(queries, sample_keys(queries))], dtype=np.int64)


def drop_self(sq_distances, labels, self_rows, k):
    """Keep k neighbours per query: without the query's own row when it is among the results.

    ``sq_distances`` and ``labels`` hold k + 1 results per query, nearest first (or any other
    per-result value, such as similarities); ``self_rows`` gives each query's row in the
    reference or -1. Queries from elsewhere keep their first k.
    """
    is_self = labels == self_rows[:, None]
    keep = ~is_self
    keep[~is_self.any(axis=1), k:] = False
    return sq_distances[keep].reshape(len(sq_distances), k)


def mean_sq_distance_by_k(sq_distances, ks):
    """Mean of the first k (nearest) squared distances of each row, for each k in ``ks``."""
    prefix_sums = np.cumsum(sq_distances.astype(np.float64), axis=1)
    return {k: prefix_sums[:, k - 1] / k for k in ks}


def density_factor(mean_sq_distance, beta):
    """sigma_k ** beta = 1 / (mean squared kNN distance + 1e-9) ** beta (float64)."""
    return 1.0 / np.power(np.asarray(mean_sq_distance, dtype=np.float64) + DENSITY_EPS, beta)


class FaissFlatIndex:
    """An exact faiss ``IndexFlatL2`` over the reference rows, on the CPU or (faiss-gpu) a GPU."""

    def __init__(self, reference, device="cpu"):
        import faiss

        from .device import cpu_threads

        faiss.omp_set_num_threads(cpu_threads())  # torchrun sets OMP_NUM_THREADS=1 per rank
        self.index = faiss.IndexFlatL2(reference.shape[1])
        self.device = device
        if device != "cpu":
            # The exact re-ranking of the candidates runs on the GPU too, on its own copy.
            self.reference = exact_torch().from_numpy(reference).to(device)
            self._gpu_resources = faiss.StandardGpuResources()  # must outlive the index
            self.index = faiss.index_cpu_to_gpu(self._gpu_resources, int(device.split(":")[1]),
                                                self.index)
        self.index.add(reference)

    def search(self, queries, n_results):
        return self.index.search(queries, n_results)


def merge_topk(best_d, best_i, block_d, block_i, n_results):
    """Merge two (distances, labels) candidate lists row by row into the n smallest (torch)."""
    import torch

    if best_d is None:
        return block_d, block_i
    all_d = torch.cat([best_d, block_d], dim=1)
    all_i = torch.cat([best_i, block_i], dim=1)
    top_d, where = torch.topk(all_d, n_results, dim=1, largest=False, sorted=True)
    return top_d, torch.gather(all_i, 1, where)


# Working bytes of the torch search: per (query, reference) pair of a block, the inner products
# and the distances (float32); per result of a query, the two candidate lists being merged, their
# concatenation and the merged list (float32 distances and int64 labels, about 4 copies).
PAIR_BYTES = 4 + 4
MERGE_BYTES_PER_RESULT = 4 * (4 + 8)


class TorchFlatIndex:
    """Exact squared-L2 kNN in query x reference blocks, as faiss's flat index computes it.

    Blocks are planned by ``utils.blocks`` from ``budget_mib``, the whole working memory of one
    block: per (query, reference) pair the inner products and the distances made from them
    (float32, 4 + 4 bytes); per query row its vector and two candidate lists being merged. The
    reference is moved to the device once; a 400,000 x 4,096 set is 6.5 GB, too much to copy
    again for every block of queries.
    """

    def __init__(self, reference, device="cpu", budget_mib=DEFAULT_BUDGET_MIB):
        torch = exact_torch()
        self.device = device
        self.reference = torch.from_numpy(reference).to(device)
        self.reference_sq = (self.reference * self.reference).sum(dim=1)
        self.budget_bytes = budget_mib * MIB

    def reference_blocks(self, n_results):
        """Reference rows of one block: about a square block of pairs within the budget, and at
        least ``n_results`` rows, so the first block yields a full candidate list."""
        square = math.isqrt(rows_per_block(PAIR_BYTES, self.budget_bytes))
        step = min(len(self.reference), max(n_results, square, 1))
        return [(start, min(len(self.reference), start + step))
                for start in range(0, len(self.reference), step)]

    def query_blocks(self, n_queries, n_results):
        """Query rows of one block: as many as fit in the budget beside one reference block."""
        ref_rows = self.reference_blocks(n_results)[0][1]
        per_query = (PAIR_BYTES * ref_rows + 4 * self.reference.shape[1]
                     + MERGE_BYTES_PER_RESULT * n_results)
        return list(row_blocks(n_queries, per_query, self.budget_bytes))

    def search(self, queries, n_results):
        torch = exact_torch()
        out_d = np.empty((len(queries), n_results), dtype=np.float32)
        out_i = np.empty((len(queries), n_results), dtype=np.int64)
        ref_blocks = self.reference_blocks(n_results)
        for q0, q1 in self.query_blocks(len(queries), n_results):
            q = torch.from_numpy(queries[q0:q1]).to(self.device)
            q_sq = (q * q).sum(dim=1, keepdim=True)
            best_d = best_i = None
            for r0, r1 in ref_blocks:
                block = (q_sq + self.reference_sq[None, r0:r1]).sub_(
                    (q @ self.reference[r0:r1].T).mul_(2.0)).clamp_(min=0.0)
                take = min(n_results, block.shape[1])
                block_d, block_i = torch.topk(block, take, dim=1, largest=False, sorted=True)
                best_d, best_i = merge_topk(best_d, best_i, block_d, block_i + r0, n_results)
            out_d[q0:q1] = best_d.cpu().numpy()
            out_i[q0:q1] = best_i.cpu().numpy()
        return out_d, out_i


def faiss_gpu_available():
    """Whether the installed faiss was built with GPU support and sees a GPU."""
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def flat_index(reference, device="cpu", backend=None, budget_mib=DEFAULT_BUDGET_MIB):
    """An exact squared-L2 index over ``reference``, with ``search(queries, n_results)``.

    ``backend`` is ``"faiss"`` or ``"torch"``; by default faiss on the CPU and on a GPU when
    faiss-gpu is installed, torch on a GPU otherwise. ``budget_mib``: working memory of one
    block of the torch search (faiss plans its own).
    """
    reference = np.ascontiguousarray(reference, dtype=np.float32)
    if backend is None:
        backend = "faiss" if device == "cpu" or faiss_gpu_available() else "torch"
    if backend == "faiss":
        return FaissFlatIndex(reference, device)
    return TorchFlatIndex(reference, device, budget_mib)


def knn_search(reference, queries, n_results, device="cpu", backend=None,
               budget_mib=DEFAULT_BUDGET_MIB):
    """Squared L2 distances and labels of the ``n_results`` nearest reference rows, nearest
    first."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    return flat_index(reference, device, backend, budget_mib).search(queries, n_results)


def distinct_rows(vectors):
    """``(rows, which)``: the distinct rows (first occurrences, in order) and, for each input
    row, its position among them. Computing on ``rows`` and expanding with ``which`` gives
    identical rows bitwise-identical results, whatever their position, so that ties between
    exact duplicates go to the lowest index (docs/method.md section 6)."""
    rows, lookup = unique_rows(vectors)
    return rows, rows_in_reference(vectors, rows, lookup)


class DistinctQueries:
    """The distinct rows among a set of queries, each searched once (duplicates share it).

    Queries that are rows of the reference are represented by that row (``members``, reference
    row numbers); the others by their first occurrence (``outsiders``). ``which[i]`` is query
    i's position in ``members`` followed by ``outsiders``.
    """

    def __init__(self, queries, reference_rows, lookup):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        self_rows = rows_in_reference(queries, reference_rows, lookup)
        self.reference_rows = reference_rows
        self.members, member_of = np.unique(self_rows[self_rows >= 0], return_inverse=True)
        outside = queries[self_rows < 0]
        self.outsiders, outsider_lookup = unique_rows(outside)
        self.which = np.empty(len(queries), dtype=np.int64)
        self.which[self_rows >= 0] = member_of
        self.which[self_rows < 0] = len(self.members) + rows_in_reference(
            outside, self.outsiders, outsider_lookup)

    def __len__(self):
        return len(self.members) + len(self.outsiders)

    def rows(self, start, stop):
        """Distinct rows ``start:stop`` and their row in the reference (-1 for outsiders)."""
        split = len(self.members)
        members = self.members[min(start, split):min(stop, split)]
        outsiders = self.outsiders[max(start, split) - split:max(stop, split) - split]
        rows = np.concatenate([self.reference_rows[members], outsiders])
        self_rows = np.concatenate([members, np.full(len(outsiders), -1, dtype=np.int64)])
        return rows, self_rows


def check_neighbor_counts(ks, distinct_rows, source, option="--neighbors"):
    """Every k must satisfy 1 <= k < |R| (distinct rows), so a member keeps k others."""
    for k in ks:
        if k < 1 or k >= distinct_rows:
            raise InputError(f"{option} {k}: must be at least 1 and below the number of "
                             f"distinct rows of {source} ({distinct_rows})")


RERANK_CPU_BLOCK_MIB = 16  # working memory of one block of the exact re-ranking on the CPU


def candidate_count(n_results, n_rows):
    """How many neighbours to search for so that the exact ``n_results`` nearest are among
    them: twice as many (the search's rounding can only swap rows whose distances are within
    its error of each other), at most every row."""
    return min(2 * n_results, n_rows)


SEARCH_ERROR_SIGMAS = 4  # how many standard deviations of the search's rounding are allowed


def search_error_bound(query_norms, row_norm_bound, dim):
    """How far a float32 search's squared distance may lie from the exact one, per query.

    The search computes ||q||^2 + ||r||^2 - 2 q.r; rounding a sum of ``dim`` products in
    float32 errs like a random walk, about sqrt(dim) * 2^-24 of the terms' size, and the terms
    are at most (||q|| + ||r||)^2, ||r|| <= ``row_norm_bound``. Four standard deviations of
    that (float64).
    """
    gamma = SEARCH_ERROR_SIGMAS * math.sqrt(dim) * 2.0 ** -24
    return gamma * (query_norms + row_norm_bound) ** 2


def max_sq_norm(rows, block_rows=8192):
    """The largest squared L2 norm among ``rows`` (float64, in blocks: no float64 copy of a
    400,000 x 4,096 set at once)."""
    largest = 0.0
    for start in range(0, len(rows), block_rows):
        block = np.asarray(rows[start:start + block_rows], dtype=np.float64)
        largest = max(largest, float(np.einsum("ij,ij->i", block, block).max(initial=0.0)))
    return largest


def nearest_certified(search, rows, queries, n_results, budget_bytes, device="cpu",
                      max_row_sq_norm=None):
    """The exact ``n_results`` nearest rows of each query: ``(distances, labels)``, float64
    exact squared distances (``rerank_exact``) and row numbers, nearest first, ties to the
    lower row.

    ``search(queries, m)`` is a float32 search over ``rows``. Its m candidates are re-ranked
    exactly; a query is settled when its ``n_results``-th exact distance D lies below the
    smallest distance any row it did not propose can have: the largest search distance among
    the candidates less ``search_error_bound``. Only rows with ||r|| <= ||q|| + sqrt(D) can be
    nearer than D (triangle inequality), so the bound uses min(max ||r||, ||q|| + sqrt(D)):
    one outlier of large norm cannot inflate it. Unsettled queries are searched again with
    twice as many candidates, up to every row, so that a crowd of near-duplicates cannot push
    a true neighbour out of the candidates. ``max_row_sq_norm``: ``max_sq_norm(rows)``.
    """
    n_rows = len(rows)
    if max_row_sq_norm is None:  # callers that search often pass it, computed once
        max_row_sq_norm = max_sq_norm(rows.cpu().numpy() if hasattr(rows, "cpu") else rows)
    out_d = np.empty((len(queries), n_results), dtype=np.float64)
    out_l = np.empty((len(queries), n_results), dtype=np.int64)
    todo = np.arange(len(queries))
    m = candidate_count(n_results, n_rows)
    while len(todo):
        unsettled = []
        # The search's results (m float32 distances and int64 labels per query) stay within
        # the budget however far m has grown.
        for start, stop in row_blocks(len(todo), m * (4 + 8), budget_bytes):
            which = todo[start:stop]
            q = np.ascontiguousarray(queries[which], dtype=np.float32)
            rough, labels = search(q, m)
            distances, nearest = rerank_exact(q, rows, labels, n_results, budget_bytes, device)
            if m >= n_rows:
                settled = np.ones(len(which), dtype=bool)
            else:
                q64 = q.astype(np.float64)
                query_norms = np.sqrt(np.einsum("ij,ij->i", q64, q64))
                row_norms = np.minimum(math.sqrt(max_row_sq_norm),
                                       query_norms + np.sqrt(distances[:, -1]))
                floor = rough.max(axis=1).astype(np.float64) - search_error_bound(
                    query_norms, row_norms, q.shape[1])
                settled = distances[:, -1] < floor
            out_d[which[settled]] = distances[settled]
            out_l[which[settled]] = nearest[settled]
            unsettled.append(which[~settled])
        todo = np.concatenate(unsettled)
        m = min(2 * m, n_rows)
    return out_d, out_l


def exact_sq_distances(queries, neighbours):
    """Squared L2 distance of each query to each of its neighbour rows, float64 (torch).

    ``queries`` (b, d) and ``neighbours`` (b, m, d), float32 tensors; returns (b, m). The
    differences, squares and their sum (a halving tree, ``selection.halving_sums``) are
    elementwise operations in a fixed order, each exactly rounded: a value depends on the two
    rows alone, not on the search's blocking, threads, device or split over ranks, as the
    BLAS form ||q||^2 + ||r||^2 - 2 q.r of a flat index does (its float32 cancellation moves a
    distance of clustered, unnormalised vectors by up to about 1e-4).
    """
    from .selection import halving_sums

    differences = queries[:, None, :].double() - neighbours.double()
    return halving_sums(differences * differences)


def nearest_by_distance_then_row(distances, labels, n_keep):
    """The ``n_keep`` smallest ``distances`` of each row (torch), equal ones in the order of
    their ``labels``: ``(distances, labels)``, nearest first."""
    import torch

    by_label = torch.sort(labels, dim=1, stable=True).indices
    ordered = torch.gather(distances, 1, by_label)
    by_distance = torch.sort(ordered, dim=1, stable=True).indices[:, :n_keep]
    return (torch.gather(ordered, 1, by_distance),
            torch.gather(torch.gather(labels, 1, by_label), 1, by_distance))


# Working bytes per (query, candidate) and dimension of the exact re-ranking: the gathered row
# (float32), its float64 copy, the difference, its square, and the first halving's copy.
RERANK_BYTES_PER_ELEMENT = 4 + 8 + 8 + 8 + 4


def rerank_exact(queries, rows, labels, n_keep, budget_bytes, device="cpu"):
    """The ``n_keep`` nearest of each query's candidate rows by exact distance.

    ``queries`` (n, d) float32; ``rows``: the searched rows (numpy or a torch tensor on
    ``device``); ``labels`` (n, m): candidate row numbers from a search, at least ``n_keep``.
    Returns ``(distances, labels)``, (n, n_keep) float64 and int64, nearest first, equal
    distances in the order of their row numbers. Blocks of queries and of candidates stay
    within ``budget_bytes``; the nearest so far are merged with each block of candidates, so
    a query with every row as a candidate needs no more memory than one with a few.
    """
    torch = exact_torch()
    rows_t = rows if isinstance(rows, torch.Tensor) else torch.from_numpy(
        np.ascontiguousarray(rows, dtype=np.float32))
    n, m = labels.shape
    dim = rows_t.shape[1]
    if device == "cpu":  # cache-sized blocks: 7x faster than 256 MiB ones here (measured)
        budget_bytes = min(budget_bytes, RERANK_CPU_BLOCK_MIB * MIB)
    per_element = dim * RERANK_BYTES_PER_ELEMENT
    columns = max(1, min(m, int(budget_bytes // per_element)))
    out_d = np.empty((n, n_keep), dtype=np.float64)
    out_l = np.empty((n, n_keep), dtype=np.int64)
    for start, stop in row_blocks(n, per_element * columns, budget_bytes):
        q = torch.from_numpy(np.ascontiguousarray(queries[start:stop])).to(device)
        label_t = torch.from_numpy(np.ascontiguousarray(labels[start:stop])).to(device)
        best_d = best_l = None
        for first in range(0, m, columns):
            block_l = label_t[:, first:first + columns]
            block_d = exact_sq_distances(q, rows_t[block_l.reshape(-1)].reshape(
                stop - start, block_l.shape[1], dim))
            if best_d is not None:
                block_d = torch.cat([best_d, block_d], dim=1)
                block_l = torch.cat([best_l, block_l], dim=1)
            best_d, best_l = nearest_by_distance_then_row(block_d, block_l,
                                                          min(n_keep, block_d.shape[1]))
        out_d[start:stop] = best_d.cpu().numpy()
        out_l[start:stop] = best_l.cpu().numpy()
    return out_d, out_l


class DensityReference:
    """The reference set R of docs/method.md section 3, ready to give mean kNN distances of
    queries. ``budget_mib``: working memory of one block of the torch search."""

    def __init__(self, vectors, device="cpu", backend=None, source="the reference set",
                 budget_mib=DEFAULT_BUDGET_MIB):
        self.rows, self._lookup = unique_rows(vectors)
        self.device = device
        self.backend = backend
        self.source = source
        self.budget_mib = budget_mib
        self._index = None  # built on the first search, then kept for every chunk and dataset
        self._max_sq_norm = None  # for the search's error bound, likewise

    def __len__(self):
        return len(self.rows)

    @property
    def width(self):
        return self.rows.shape[1]

    def check_neighbors(self, ks, option="--neighbors"):
        check_neighbor_counts(ks, len(self.rows), self.source, option)

    def index(self):
        """The search index over the reference rows, built once."""
        if self._index is None:
            self._index = flat_index(self.rows, self.device, self.backend, self.budget_mib)
        return self._index

    def mean_sq_distances(self, queries, ks, progress=None, chunk_rows=QUERY_CHUNK_ROWS):
        """For each k in ``ks``: the mean squared distance of each query to its k nearest rows.

        Each distinct query row is searched once, in chunks of ``chunk_rows`` distinct rows,
        so that duplicates get bitwise the same result and ``progress`` (for example tqdm,
        wrapping the list of chunks) can report on a long search.
        """
        self.check_neighbors(ks)
        k_max = max(ks)
        distinct = DistinctQueries(queries, self.rows, self._lookup)
        kept = np.empty((len(distinct), k_max), dtype=np.float64)
        chunks = [(start, min(len(distinct), start + chunk_rows))
                  for start in range(0, len(distinct), chunk_rows)]
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
        return nearest_certified(index.search, getattr(index, "reference", self.rows),
                                 queries, n_results, self.budget_mib * MIB,
                                 getattr(index, "device", "cpu"), self._max_sq_norm)
