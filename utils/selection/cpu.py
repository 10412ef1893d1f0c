"""The CPU engine: numba kernels for the incremental insertion and the rebuild."""

import functools

import numpy as np

from ..numerics.blocks import MIB
from .engine import SelectionEngine, tie_floor
from .memory import TORCH_BLOCK_MIB

# Working bytes per value of one row block of the numba rebuild: the float64 products of one
# row and their halving (each thread holds one row's at a time; the values are sorted in place).
NUMBA_REBUILD_BYTES_PER_VALUE = 8 + 8


@functools.cache  # one compiled dispatcher per process (loaded from numba's disk cache)
def _numba_kernel():
    import numba

    # One parallel loop does the whole step: the candidate's distance to the new pick, then the
    # insertion. Keeping BLAS out of the loop matters: OpenBLAS threads spinning between calls
    # and numba's OpenMP threads fight for the cores (8x slower on two cores).
    # No fastmath: reassociation would let the compiler choose the summation order per call
    # site and alignment, and duplicates could then differ in the last bits. The dot's order
    # is fixed by hand instead (module docstring); each of its loops still vectorises.
    # (One function, no jitted helper: numba caches it on disk only without closures.)
    @numba.njit(parallel=True, cache=True)
    def add_pick_values(unit, density_factors, target, pick_density_factor, sorted_values,
                        weighted_sums, values, t, coefficients, weights, active):
        dim = unit.shape[1]
        half = 1  # the largest power of two below dim (the dot's first halving)
        while half * 2 < dim:
            half *= 2
        for u in numba.prange(unit.shape[0]):
            if not active[u]:
                continue
            vector = unit[u]
            products = np.empty(half, dtype=np.float32)  # the dot's halving tree
            if dim == 1:
                products[0] = vector[0] * target[0]
            else:
                for j in range(half):
                    products[j] = vector[j] * target[j]
                for j in range(dim - half):
                    products[j] += vector[half + j] * target[half + j]
            width = half
            while width > 1:
                width //= 2
                for j in range(width):
                    products[j] += products[j + width]
            x = (np.float32(1.0) - products[0]) * (density_factors[u] + pick_density_factor)
            values[u] = x
            row = sorted_values[u]
            low, high = 0, t  # first stored value greater than x: the insertion point m
            while low < high:
                middle = (low + high) >> 1
                if row[middle] > x:
                    high = middle
                else:
                    low = middle + 1
            # One pass from the tail's end: read each value, add it to its sum, move it down.
            # Four partial sums, in an order fixed by t and the insertion point alone (never by
            # where the row sits), so the loop runs four values at a time without fastmath.
            tail0 = tail1 = tail2 = tail3 = 0.0
            j = t - 1
            while j - 3 >= low:
                value0, value1, value2, value3 = row[j], row[j - 1], row[j - 2], row[j - 3]
                tail0 += coefficients[j] * value0
                tail1 += coefficients[j - 1] * value1
                tail2 += coefficients[j - 2] * value2
                tail3 += coefficients[j - 3] * value3
                row[j + 1] = value0
                row[j] = value1
                row[j - 1] = value2
                row[j - 2] = value3
                j -= 4
            while j >= low:
                value0 = row[j]
                tail0 += coefficients[j] * value0
                row[j + 1] = value0
                j -= 1
            tail = (tail0 + tail1) + (tail2 + tail3)
            row[low] = x
            weighted_sums[u] += weights[low] * x - tail

    return add_pick_values


@functools.cache
def _numba_rebuild_kernel():
    import numba

    # Rows start..stop of the rebuild (SelectionEngine.rebuild): each active candidate's values
    # against every given pick (``targets``, their unit vectors; ``pick_density_factors``,
    # their density factors), with the step kernel's fixed-order dot written out the same way
    # (bitwise the same values; a shared jitted helper, even inlined, made the step 2.4x
    # slower at 4,096 dimensions), sorted in place, then weighted and summed in float64 by
    # halving over the ranks, the order of ``halving_row_sums`` (module docstring).
    @numba.njit(parallel=True, cache=True)
    def rebuild_rows(unit, density_factors, targets, pick_density_factors, sorted_values,
                     weighted_sums, weights, active, start, stop):
        t = targets.shape[0]
        dim = unit.shape[1]
        half = 1  # half the row's width padded to a power of two
        while half * 2 < t:
            half *= 2
        dot_half = 1  # the same for the dot's products (the step kernel's halving tree)
        while dot_half * 2 < dim:
            dot_half *= 2
        for u in numba.prange(start, stop):
            if not active[u]:
                continue
            vector = unit[u]
            row = sorted_values[u]
            products = np.empty(dot_half, dtype=np.float32)
            for j in range(t):
                target = targets[j]
                if dim == 1:
                    products[0] = vector[0] * target[0]
                else:
                    for i in range(dot_half):
                        products[i] = vector[i] * target[i]
                    for i in range(dim - dot_half):
                        products[i] += vector[dot_half + i] * target[dot_half + i]
                width = dot_half
                while width > 1:
                    width //= 2
                    for i in range(width):
                        products[i] += products[i + width]
                row[j] = ((np.float32(1.0) - products[0])
                          * (density_factors[u] + pick_density_factors[j]))
            row[:t].sort()
            if t == 1:
                weighted_sums[u] = np.float64(row[0]) * weights[0]
                continue
            sums = np.empty(half, dtype=np.float64)
            for r in range(half):
                sums[r] = np.float64(row[r]) * weights[r]
            for r in range(half, t):
                sums[r - half] += np.float64(row[r]) * weights[r]
            width = half
            while width > 1:
                width //= 2
                for r in range(width):
                    sums[r] = sums[r] + sums[r + width]
            weighted_sums[u] = sums[0]

    return rebuild_rows


class NumpyEngine(SelectionEngine):
    """CPU engine: candidates' sorted values in a numpy array, updated by a numba kernel.

    ``values`` holds each candidate's value against the latest pick (for inspection and tests).
    """

    def __init__(self, unit, density_factors, k, alpha, block_mib=TORCH_BLOCK_MIB):
        super().__init__(len(unit), k, alpha)
        self.block_bytes = block_mib * MIB  # working memory of one rebuild block
        self.unit = np.ascontiguousarray(unit, dtype=np.float32)
        self.density_factors = np.ascontiguousarray(density_factors, dtype=np.float32)
        self.sorted_values = np.empty((self.n, self.width), dtype=np.float32)
        self.weighted_sums = np.zeros(self.n, dtype=np.float64)
        self.values = np.zeros(self.n, dtype=np.float32)
        self.active = np.ones(self.n, dtype=np.bool_)
        self.kernel = _numba_kernel()

    def _insert_vector(self, target, pick_density_factor, taken):
        if taken is not None:
            self.active[taken] = False
        self.kernel(self.unit, self.density_factors,
                    np.ascontiguousarray(target, dtype=np.float32),
                    np.float32(pick_density_factor), self.sorted_values, self.weighted_sums,
                    self.values, self.t, self.coefficients, self.weights, self.active)

    def rebuild_bytes_per_row(self, t):
        return NUMBA_REBUILD_BYTES_PER_VALUE * t

    def _rebuild_vectors(self, targets, pick_density_factors, taken, blocks):
        kernel = _numba_rebuild_kernel()
        self.active[np.asarray(taken, dtype=np.int64)] = False
        targets = np.ascontiguousarray(targets, dtype=np.float32)
        pick_density_factors = np.ascontiguousarray(pick_density_factors, dtype=np.float32)
        for start, stop in blocks:  # Ctrl-C is heard between blocks
            kernel(self.unit, self.density_factors, targets, pick_density_factors,
                   self.sorted_values, self.weighted_sums, self.weights, self.active, start, stop)

    def weighted_sums_host(self):
        return self.weighted_sums

    def host_rows(self, rows):
        """Unit vectors of candidate ``rows``, as a numpy array (to send to other ranks)."""
        return self.unit[rows]

    def host_factors(self, rows):
        return self.density_factors[rows]

    def device_array(self, values):
        """``values`` as float64 where this engine keeps its sums (quality scores)."""
        return np.asarray(values, dtype=np.float64)

    def best_scored(self, quality=None, floor=None):
        if not self.active.any():
            return -1, float("nan"), -np.inf, -np.inf
        novelty = self.weighted_sums / self.t
        score = novelty * quality if quality is not None else novelty.copy()
        score[~self.active] = -np.inf
        largest = float(score.max())
        tied = score >= (tie_floor(largest) if floor is None else floor)
        pick = int(np.argmax(tied))  # the first True: the lowest index
        if not tied[pick]:
            return -1, float("nan"), -np.inf, largest
        return pick, float(novelty[pick]), float(score[pick]), largest
