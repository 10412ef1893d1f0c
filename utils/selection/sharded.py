"""The NovelSelect engine split over ranks: local best, global argmax, the owner sends the pick."""

import numpy as np

from ..runtime.distributed import block_starts, owner_of
from .selection_engine import SelectionEngine, tie_floor


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
        self.block_bytes = local.block_bytes
        self.dim = int(local.unit.shape[1])
        # Each step's two messages travel where the engine computes: over NCCL between GPUs.
        self.comm_device = str(getattr(local, "device", "cpu"))

    @property
    def stop(self):
        return self.start + self.local.n

    def _owned(self, pick):
        return self.start <= pick < self.stop

    def pick_vectors(self, picks):
        """Unit vectors and density factors of global ``picks``, in their order, each sent by
        the rank that holds it."""
        picks = np.asarray(picks, dtype=np.int64)
        mine = np.flatnonzero((picks >= self.start) & (picks < self.stop))
        local = picks[mine] - self.start
        vectors = np.asarray(self.local.host_rows(local), dtype=np.float32)
        factors = np.asarray(self.local.host_factors(local), dtype=np.float32)
        positions = self.ranks.gather_arrays(mine.astype(np.int64))
        targets = np.empty((len(picks), self.dim), dtype=np.float32)
        pick_density_factors = np.empty(len(picks), dtype=np.float32)
        targets[positions] = self.ranks.gather_arrays(vectors.reshape(len(mine), self.dim))
        pick_density_factors[positions] = self.ranks.gather_arrays(factors)
        return targets, pick_density_factors

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

    def _insert_vector(self, target, pick_density_factor, taken):
        """Every rank inserts the pick given by its vector; ``taken`` is a global index."""
        rows = self._local_rows([] if taken is None else [taken])
        self.local.add_vector(target, pick_density_factor, rows[0] if rows else None)

    def compute_array(self, array):
        return self.local.compute_array(array)

    def rebuild_bytes_per_row(self, t):
        return self.local.rebuild_bytes_per_row(t)

    def rebuild_blocks(self, t):
        return self.local.rebuild_blocks(t)

    def _rebuild(self, picks, blocks):
        targets, pick_density_factors = self.pick_vectors(picks)
        self._rebuild_vectors(targets, pick_density_factors, picks, blocks)

    def _rebuild_vectors(self, targets, pick_density_factors, taken, blocks):
        """Every rank rebuilds against the given picks' vectors; ``taken``: global indices."""
        self.local.rebuild_vectors(targets, pick_density_factors, self._local_rows(taken))

    def device_array(self, values):
        """This rank's share of per-sample ``values`` (quality scores), on its device."""
        return self.local.device_array(np.asarray(values)[self.start:self.stop])

    def best_scored(self, quality=None, floor=None):
        """The one process's pick: the lowest global index among the scores within
        ``TIE_RTOL`` of the largest. Each rank offers its largest score and its own tie winner;
        ranks hold increasing rows, so the first rank whose winner ties globally has the pick,
        unless a rank's winner misses the global floor while its largest score reaches it
        (then every rank looks again against the global floor: a second message, rarely)."""
        local_pick, novelty, score, largest = self.local.best_scored(quality)
        offers = self.ranks.gather_fixed(self._offer(largest, score, novelty, local_pick),
                                         self.comm_device)
        floor = tie_floor(offers[:, 0].max()) if floor is None else floor
        unsure = (offers[:, 1] < floor) & (offers[:, 0] >= floor)
        if unsure.any():
            local_pick, novelty, score, _largest = self.local.best_scored(quality, floor=floor)
            offers = self.ranks.gather_fixed(self._offer(largest, score, novelty, local_pick),
                                             self.comm_device)
        winner = int(np.flatnonzero(offers[:, 1] >= floor)[0])
        _largest, score, novelty, pick = offers[winner]
        return int(pick), float(novelty), float(score), float(offers[:, 0].max())

    def _offer(self, largest, score, novelty, local_pick):
        pick = self.start + local_pick if local_pick >= 0 else -1
        return np.asarray([largest, score, novelty, pick], dtype=np.float64)

    def weighted_sums_host(self):
        """Every candidate's weighted sum, gathered from the ranks (for tests)."""
        return self.ranks.gather_arrays(np.asarray(self.local.weighted_sums_host()))
