"""The method split over ranks (``torchrun``): the density's kNN search and the NovelSelect
engine, each rank holding a contiguous block of rows (``utils.distributed``).

Both give what one process gives. The kNN search: the reference's exact duplicate rows are
removed across ranks, keeping each value's first row, as ``density.unique_rows`` keeps it; the
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

from .distributed import owner_of
from .blocks import MIB
from .density import (QUERY_CHUNK_ROWS, check_neighbor_counts, drop_self, flat_index,
                      full_digest, max_sq_norm, mean_sq_distance_by_k, nearest_certified)
from .progress import tracked
from .selection import SelectionEngine


def row_digests(vectors):
    """(n, 16) uint8: the digest of each row (``density.full_digest``)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    joined = b"".join(full_digest(row) for row in vectors)
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(vectors), 16)


def digest_keys(digests):
    """One sortable 16-byte value per row (numpy void), for ``np.unique`` and ``searchsorted``."""
    return np.ascontiguousarray(digests).view("V16").ravel()


def block_starts(ranks, rows):
    """Every rank's first global row, and the total, from each rank's row count ``rows``:
    (size + 1,) int64, rank r holding rows ``starts[r]:starts[r + 1]``."""
    counts = ranks.gather_arrays(np.asarray([rows], dtype=np.int64))
    return np.concatenate([[0], np.cumsum(counts)])


class DistinctPlan:
    """The distinct queries of a sharded search, in one process's order (``DistinctQueries``):
    first the reference rows that are queries (by reference row), then the other distinct
    query rows by first occurrence. ``members`` are global reference rows, ``outsiders``
    global query rows; ``which[i]`` is global query i's position in the list."""

    def __init__(self, reference_keys, query_keys):
        distinct, first = np.unique(reference_keys, return_index=True)
        position = np.searchsorted(distinct, query_keys)
        found = position < len(distinct)
        found[found] = distinct[position[found]] == query_keys[found]
        self.self_rows = np.where(found, first[np.minimum(position, len(distinct) - 1)], -1)
        self.members, member_of = np.unique(self.self_rows[found], return_inverse=True)
        outside = np.flatnonzero(~found)
        _keys, first_outside, outside_of = np.unique(query_keys[outside], return_index=True,
                                                     return_inverse=True)
        order = np.argsort(first_outside, kind="stable")  # by first occurrence
        rank_of = np.empty(len(order), dtype=np.int64)
        rank_of[order] = np.arange(len(order))
        self.outsiders = outside[first_outside[order]]
        self.which = np.empty(len(query_keys), dtype=np.int64)
        self.which[found] = member_of
        self.which[outside] = len(self.members) + rank_of[outside_of]

    def __len__(self):
        return len(self.members) + len(self.outsiders)

    def entries(self, start, stop):
        """Distinct entries ``start:stop``: for each, whether it is a reference row and its
        global row (in the reference, or among the queries)."""
        positions = np.arange(start, stop)
        is_member = positions < len(self.members)
        rows = np.where(is_member, self.members[np.minimum(positions, len(self.members) - 1)]
                        if len(self.members) else 0,
                        self.outsiders[np.maximum(positions - len(self.members), 0)]
                        if len(self.outsiders) else 0)
        return is_member, rows


class ShardedDensityReference:
    """The reference set R of docs/method.md section 3 split over the ranks: this rank holds
    global rows ``start:start + len(rows)`` of it. Built by every rank together (collective).

    ``mean_sq_distances(queries, ks)`` takes this rank's block of the queries (any contiguous
    split, in rank order) and returns, on every rank, the mean squared kNN distances of *every*
    query, as ``DensityReference.mean_sq_distances`` gives them in one process.
    """

    def __init__(self, ranks, rows, device="cpu", backend=None, source="the reference set",
                 budget_mib=256):
        self.ranks, self.device, self.backend = ranks, device, backend
        self.source, self.budget_mib = source, budget_mib
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

    def check_neighbors(self, ks, option="--neighbors"):
        check_neighbor_counts(ks, self.distinct_count, self.source, option)

    def index(self):
        if self._index is None and len(self.kept_rows):
            self._index = flat_index(self.kept_rows, self.device, self.backend, self.budget_mib)
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
                index.search, getattr(index, "reference", self.kept_rows), chunk, take,
                self.budget_mib * MIB, getattr(index, "device", "cpu"), self.max_sq_norm)
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

    def mean_sq_distances(self, queries, ks, progress=None, chunk_rows=QUERY_CHUNK_ROWS):
        self.check_neighbors(ks)
        k_max = max(ks)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        same = queries is self.local_rows or (queries.shape == self.local_rows.shape
                                              and np.shares_memory(queries, self.local_rows))
        query_starts = block_starts(self.ranks, len(queries))
        everywhere_same = bool(self.ranks.gather_arrays(np.asarray([same])).all())
        query_keys = self.keys if everywhere_same else digest_keys(
            self.ranks.gather_arrays(row_digests(queries)))
        plan = DistinctPlan(self.keys, query_keys)
        kept = np.empty((len(plan), k_max), dtype=np.float64)
        chunks = [(start, min(len(plan), start + chunk_rows))
                  for start in range(0, len(plan), chunk_rows)]
        for start, stop in tracked(chunks, progress):
            chunk, self_rows = self._chunk_rows(plan, start, stop, queries, query_starts)
            sq_distances, labels = self._search_merged(chunk, k_max + 1)
            kept[start:stop] = drop_self(sq_distances, labels, self_rows, k_max)
        return mean_sq_distance_by_k(kept[plan.which], ks)


class ShardedEngine(SelectionEngine):
    """NovelSelect over the ranks: ``local`` is an engine (numba, torch or Triton) over this
    rank's candidates, global rows ``start:start + local.n`` of a pool of ``n``. Picks and
    indices are global; ``run``, ``best`` and ``add_pick`` behave as one engine over the whole
    pool, and every rank gets the same picks."""

    def __init__(self, ranks, local, start, n):
        super().__init__(n, local.k, local.alpha)
        self.ranks, self.local, self.start = ranks, local, start
        bounds = block_starts(ranks, local.n)
        self.blocks = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        if self.blocks[ranks.rank][0] != start or bounds[-1] != n:
            raise ValueError(f"rank {ranks.rank}: rows {start}:{start + local.n} of {n} are not "
                             f"this rank's block {self.blocks[ranks.rank]} of {bounds[-1]}")
        self.budget_bytes = local.budget_bytes
        self.dim = int(local.unit.shape[1])
        # Each step's two messages travel where the engine computes: over NCCL between GPUs.
        self.comm_device = str(getattr(local, "device", "cpu"))

    @property
    def stop(self):
        return self.start + self.local.n

    def _owned(self, pick):
        return self.start <= pick < self.stop

    def _pick_vectors(self, picks):
        """Unit vectors and density factors of global ``picks``, in their order, each sent by
        the rank that holds it."""
        picks = np.asarray(picks, dtype=np.int64)
        mine = np.flatnonzero((picks >= self.start) & (picks < self.stop))
        local = picks[mine] - self.start
        vectors = np.asarray(self.local.host_rows(local), dtype=np.float32)
        factors = np.asarray(self.local.host_factors(local), dtype=np.float32)
        positions = self.ranks.gather_arrays(mine.astype(np.int64))
        targets = np.empty((len(picks), self.dim), dtype=np.float32)
        rho_picks = np.empty(len(picks), dtype=np.float32)
        targets[positions] = self.ranks.gather_arrays(vectors.reshape(len(mine), self.dim))
        rho_picks[positions] = self.ranks.gather_arrays(factors)
        return targets, rho_picks

    def _local_rows(self, picks):
        """This rank's rows (local numbers) among global ``picks``."""
        return [pick - self.start for pick in picks if self._owned(pick)]

    def _insert(self, pick):
        """The pick's owner sends its unit vector and density factor (one message of d + 1
        floats); every rank inserts it."""
        message = np.zeros(self.dim + 1, dtype=np.float32)
        if self._owned(pick):
            message[:-1] = self.local.host_rows([pick - self.start])[0]
            message[-1] = self.local.host_factors([pick - self.start])[0]
        message = self.ranks.broadcast(message, owner_of(pick, self.blocks), self.comm_device)
        self._insert_vector(message[:-1], message[-1], pick)

    def _insert_vector(self, target, rho_pick, taken):
        """Every rank inserts the pick given by its vector; ``taken`` is a global index."""
        rows = self._local_rows([] if taken is None else [taken])
        self.local.add_vector(target, rho_pick, rows[0] if rows else None)

    def rebuild_bytes_per_row(self, t):
        return self.local.rebuild_bytes_per_row(t)

    def rebuild_blocks(self, t):
        return self.local.rebuild_blocks(t)

    def _rebuild(self, picks, blocks):
        targets, rho_picks = self._pick_vectors(picks)
        self._rebuild_vectors(targets, rho_picks, picks, blocks)

    def _rebuild_vectors(self, targets, rho_picks, taken, blocks):
        """Every rank rebuilds against the given picks' vectors; ``taken``: global indices."""
        self.local.rebuild_vectors(targets, rho_picks, self._local_rows(taken))

    def device_array(self, values):
        """This rank's share of per-sample ``values`` (quality scores), on its device."""
        return self.local.device_array(np.asarray(values)[self.start:self.stop])

    def best_scored(self, quality=None):
        """Each rank's best, then the global best: the largest score, the lowest global index
        among equal scores (ranks hold increasing rows, and each gives its lowest index)."""
        local_pick, novelty, score = self.local.best_scored(quality)
        mine = np.asarray([score, novelty, self.start + local_pick if local_pick >= 0 else -1],
                          dtype=np.float64)
        candidates = self.ranks.gather_fixed(mine, self.comm_device)
        scores = candidates[:, 0]
        winner = int(np.flatnonzero(scores == scores.max())[0])
        score, novelty, pick = candidates[winner]
        return int(pick), float(novelty), float(score)

    def weighted_sums_host(self):
        """Every candidate's weighted sum, gathered from the ranks (for tests)."""
        return self.ranks.gather_arrays(np.asarray(self.local.weighted_sums_host()))
