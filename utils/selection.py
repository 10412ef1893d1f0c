"""The NovelSelect engine (SPEC section 5), with incremental novelty updates.

Every unpicked candidate u keeps the values x(u, s) = (1 - cos(u, s)) * (rho(u) + rho(s)) for
the picks s so far, sorted ascending, and their weighted sum A(u) = sum_r w_r x_(r) with
w_r = r^-alpha; its novelty is v(u) = A(u) / t. When a pick adds one value x that lands after m
stored values, only the values behind it move one rank down:

    A_new = A_old + w_{m+1} x - sum_{r>m} (w_r - w_{r+1}) x_(r)

so a step costs one distance vector and one pass over each candidate's tail, not a matrix
product and a sort. Values are stored in float32 (4 bytes each, pool x budget of them); sums
are float64, so the incremental A stays equal to a fresh sum far below the 1e-6 that matters.

Two kernels run the same update: a numba loop on the CPU (both cores, one candidate per
iteration) and torch over row chunks on a GPU.
"""

import contextlib
import functools
import os

import numpy as np

from .errors import InputError
from .proximity import rank_weights

VALUE_BYTES = 4  # float32 per stored value
TORCH_CHUNK_MIB = 1024  # working memory of one row chunk of the torch engine


def first_pick(n, seed):
    """The first pick: ``numpy.random.RandomState(seed).randint(0, n)``, as the reference."""
    return int(np.random.RandomState(seed).randint(0, n))


def tail_coefficients(weights):
    """c_r = w_r - w_{r+1}: how much each value behind an insertion loses by moving a rank."""
    return weights[:-1] - weights[1:]


def selection_memory_bytes(n, k, dim):
    """Bytes the selection holds: pool x (budget - 1) stored values, the unit vectors, sums."""
    return n * max(k - 1, 1) * VALUE_BYTES + n * dim * 4 + n * 8 * 3


def available_memory_bytes(device):
    """Memory free for the selection on ``device`` (GPU: free device memory; CPU: MemAvailable)."""
    if device != "cpu":
        import torch

        return torch.cuda.mem_get_info(torch.device(device))[0]
    with contextlib.suppress(OSError):  # no /proc (not Linux): ask sysconf instead
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_memory(n, k, dim, device):
    """Refuse, before any work, a selection that cannot fit in memory.

    On a GPU the torch engine also needs its per-chunk working memory.
    """
    need = selection_memory_bytes(n, k, dim)
    if device != "cpu":
        need += TORCH_CHUNK_MIB * 2**20
    free = available_memory_bytes(device)
    if need > free:
        raise InputError(f"--k {k} on a pool of {n}: the selection needs {need / 2**30:.1f} GiB "
                         f"({n} x {k - 1} values x {VALUE_BYTES} bytes, plus vectors) but "
                         f"{device} has {free / 2**30:.1f} GiB free; lower --k or use a "
                         f"machine with more memory")


def check_quality_scores(scores, n, source):
    """Quality scores: one finite, non-negative number per pool sample."""
    scores = np.asarray(scores)
    if scores.ndim != 1 or scores.dtype.kind not in "fiu":
        raise InputError(f"{source}: expected a flat list of numbers, one per sample")
    if len(scores) != n:
        raise InputError(f"{source}: {len(scores)} quality scores for a pool of {n} samples")
    bad = ~np.isfinite(scores) | (scores < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{source}: score {i} is {scores[i]}; scores must be finite and >= 0")
    if not scores.any():
        raise InputError(f"{source}: every quality score is 0, so every candidate would tie")
    return scores.astype(np.float64)


@functools.cache  # one compiled dispatcher per process (loaded from numba's disk cache)
def _numba_kernel():
    import numba

    # One parallel loop does the whole step: the candidate's distance to the new pick, then the
    # insertion. Keeping BLAS out of the loop matters: OpenBLAS threads spinning between calls
    # and numba's OpenMP threads fight for the cores (8x slower on two cores).
    @numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
    def add_pick_values(unit, rho, pick, sorted_values, weighted_sums, values, t, coefficients,
                        weights, active):
        target = unit[pick]
        rho_pick = rho[pick]
        for u in numba.prange(unit.shape[0]):
            if not active[u]:
                continue
            dot = np.float32(0.0)
            for j in range(unit.shape[1]):
                dot += unit[u, j] * target[j]
            x = (np.float32(1.0) - dot) * (rho[u] + rho_pick)
            values[u] = x
            row = sorted_values[u]
            low, high = 0, t  # first stored value greater than x: the insertion point m
            while low < high:
                middle = (low + high) >> 1
                if row[middle] > x:
                    high = middle
                else:
                    low = middle + 1
            tail = 0.0
            for j in range(t - 1, low - 1, -1):  # one pass: read each tail value, move it down
                value = row[j]
                tail += coefficients[j] * value
                row[j + 1] = value
            row[low] = x
            weighted_sums[u] += weights[low] * x - tail

    return add_pick_values


class NumpyEngine:
    """CPU engine: candidates' sorted values in a numpy array, updated by a numba kernel.

    ``values`` holds each candidate's value against the latest pick (for inspection and tests).
    """

    def __init__(self, unit, rho, k, alpha):
        self.unit = np.ascontiguousarray(unit, dtype=np.float32)
        self.rho = np.ascontiguousarray(rho, dtype=np.float32)
        self.weights = rank_weights(k, alpha)
        self.coefficients = tail_coefficients(self.weights)
        self.sorted_values = np.empty((len(unit), max(k - 1, 1)), dtype=np.float32)
        self.weighted_sums = np.zeros(len(unit), dtype=np.float64)
        self.values = np.zeros(len(unit), dtype=np.float32)
        self.active = np.ones(len(unit), dtype=np.bool_)
        self.kernel = _numba_kernel()

    def add_pick(self, pick, t):
        """Insert every candidate's value against ``pick`` (the t-th pick, 0-based)."""
        self.active[pick] = False
        self.kernel(self.unit, self.rho, pick, self.sorted_values, self.weighted_sums,
                    self.values, t, self.coefficients, self.weights, self.active)

    def weighted_sums_host(self):
        return self.weighted_sums


class TorchEngine:
    """GPU engine (also runs on the CPU, for tests): the same update, vectorised over row chunks.

    For each chunk: a mask of stored values greater than the new one gives the insertion
    point and the tail sum; the tail moves one column right in one ``where``.
    """

    def __init__(self, unit, rho, k, alpha, device, chunk_mib=TORCH_CHUNK_MIB):
        from .device import exact_torch

        torch = self.torch = exact_torch()
        self.device = torch.device(device)
        self.unit = torch.from_numpy(unit).to(self.device)
        self.rho = torch.from_numpy(rho).to(self.device)
        weights = rank_weights(k, alpha)
        self.weights = torch.from_numpy(weights).to(self.device)
        self.coefficients = torch.from_numpy(tail_coefficients(weights)).to(self.device)
        n = len(unit)
        self.sorted_values = torch.zeros((n, max(k - 1, 1)), dtype=torch.float32,
                                         device=self.device)
        self.weighted_sums = torch.zeros(n, dtype=torch.float64, device=self.device)
        self.chunk_bytes = chunk_mib * 2**20

    def add_pick(self, pick, t):
        torch = self.torch
        values = (1.0 - self.unit @ self.unit[pick]) * (self.rho + self.rho[pick])
        self.values = values
        n = len(values)
        # mask (1 byte), masked copy (4), its float64 cast (8), shifted copy (4) per value
        chunk = max(1, self.chunk_bytes // (17 * max(t, 1)))
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            stored = self.sorted_values[start:stop, :t]
            x = values[start:stop]
            above = stored > x[:, None]
            tail = torch.where(above, stored, 0.0).double() @ self.coefficients[:t]
            insert_at = t - above.sum(dim=1)
            self.sorted_values[start:stop, 1:t + 1] = torch.where(
                above, stored, self.sorted_values[start:stop, 1:t + 1])
            self.sorted_values[start:stop].scatter_(1, insert_at[:, None], x[:, None])
            self.weighted_sums[start:stop] += self.weights[insert_at] * x.double() - tail

    def weighted_sums_host(self):
        return self.weighted_sums.cpu().numpy()


def make_engine(unit, rho, k, alpha, device):
    """The engine for ``device``: numba on the CPU, torch on a GPU."""
    if device == "cpu":
        return NumpyEngine(unit, rho, k, alpha)
    return TorchEngine(unit, rho, k, alpha, device)


def select(unit, rho, k, alpha, first, quality=None, engine=None, device="cpu", on_pick=None):
    """Greedy NovelSelect: ``k`` global indices in pick order, starting from ``first``.

    ``unit``: (n, d) float32 unit rows; ``rho``: (n,) float32 density factors sigma^beta;
    ``quality``: optional (n,) non-negative scores multiplied into the novelty.
    Ties go to the lowest index. ``on_pick(index, novelty)`` is called after each pick.
    """
    engine = engine or make_engine(unit, rho, k, alpha, device)
    picked = np.zeros(len(unit), dtype=bool)
    picks = [first]
    picked[first] = True
    if on_pick:
        on_pick(first, float("nan"))
    for t in range(k - 1):
        engine.add_pick(picks[-1], t)
        novelty = engine.weighted_sums_host() / (t + 1)
        score = novelty * quality if quality is not None else novelty.copy()
        score[picked] = -np.inf
        pick = int(np.argmax(score))
        picks.append(pick)
        picked[pick] = True
        if on_pick:
            on_pick(pick, float(novelty[pick]))
    return picks
