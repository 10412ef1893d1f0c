"""The CPU engine: numba kernels (``cpu_kernels``) for the incremental insertion and the
rebuild, or their numpy twins (``numpy_kernels``, the same bits) for a small selection."""

import functools

import numpy as np

from ..numerics.blocks import MIB
from . import numpy_kernels
from .selection_engine import SelectionEngine, tie_floor
from .pair_values import squared_norms
from .memory import TORCH_BLOCK_MIB

# Working bytes per value of one row block of the numba rebuild: the float64 products of one
# row and their halving (each thread holds one row's at a time; the values are sorted in place).
NUMBA_REBUILD_BYTES_PER_VALUE = 8 + 8


# A selection whose numpy work (about n k (d + k) elements: each step's dots and tails) is
# below this runs the numpy kernels: it would finish before numba had loaded (about 0.8 s).
SMALL_SELECTION_WORK = 5 * 10**7


KERNELS = ("auto", "numba", "numpy")


def uses_numpy_kernels(kernels, n, k, dim):
    """Whether a selection of ``k`` picks from ``n`` rows of ``dim`` runs the numpy kernels:
    ``kernels`` "numpy", or "auto" and a small selection."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {', '.join(KERNELS)}, not {kernels!r}")
    return kernels == "numpy" or (kernels == "auto" and n * k * (dim + k) < SMALL_SELECTION_WORK)


@functools.cache  # numba and the kernels load on the first CPU engine, not at start-up
def _numba_kernel():
    from .cpu_kernels import add_pick_values

    return add_pick_values


@functools.cache
def _numba_rebuild_kernel():
    from .cpu_kernels import rebuild_rows

    return rebuild_rows


class NumpyEngine(SelectionEngine):
    """CPU engine: candidates' sorted values in a numpy array, updated by the numba kernels
    or their numpy twins (``kernels``: "auto" takes numpy for a small selection; ``small``).

    ``values`` holds each candidate's value against the latest pick (for inspection and tests).
    """

    def __init__(self, unit, density_factors, k, alpha, block_mib=TORCH_BLOCK_MIB,
                 kernels="auto"):
        super().__init__(len(unit), k, alpha)
        self.block_bytes = block_mib * MIB  # working memory of one rebuild block
        self.unit = np.ascontiguousarray(unit, dtype=np.float32)
        self.density_factors = np.ascontiguousarray(density_factors, dtype=np.float32)
        self.squared_norms = squared_norms(self.unit)
        self.sorted_values = np.empty((self.n, self.width), dtype=np.float32)
        self.weighted_sums = np.zeros(self.n, dtype=np.float64)
        self.values = np.zeros(self.n, dtype=np.float32)
        self.active = np.ones(self.n, dtype=np.bool_)
        self.small = uses_numpy_kernels(kernels, self.n, k, self.unit.shape[1])
        self.kernel = numpy_kernels.add_pick_values if self.small else _numba_kernel()

    def _insert_vector(self, target, pick_density_factor, taken):
        if taken is not None:
            self.active[taken] = False
        target = np.ascontiguousarray(target, dtype=np.float32)
        self.kernel(self.unit, self.squared_norms, self.density_factors, target,
                    float(squared_norms(target[None])[0]), np.float32(pick_density_factor),
                    self.sorted_values, self.weighted_sums, self.values, self.t,
                    self.coefficients, self.weights, self.active)

    def rebuild_bytes_per_row(self, t):
        if self.small:
            return numpy_kernels.rebuild_bytes_per_value(self.unit.shape[1]) * t
        return NUMBA_REBUILD_BYTES_PER_VALUE * t

    def _rebuild_vectors(self, targets, pick_density_factors, taken, blocks):
        kernel = numpy_kernels.rebuild_rows if self.small else _numba_rebuild_kernel()
        self.active[np.asarray(taken, dtype=np.int64)] = False
        targets = np.ascontiguousarray(targets, dtype=np.float32)
        pick_density_factors = np.ascontiguousarray(pick_density_factors, dtype=np.float32)
        pick_squared_norms = squared_norms(targets)
        for start, stop in blocks:  # Ctrl-C is heard between blocks
            kernel(self.unit, self.squared_norms, self.density_factors, targets,
                   pick_squared_norms, pick_density_factors, self.sorted_values,
                   self.weighted_sums, self.weights, self.active, start, stop)

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
