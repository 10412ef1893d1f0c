"""The NovelSelect engine (docs/method.md section 5), with incremental novelty updates.

Every unpicked candidate u keeps the values x(u, s) = (1 - cos(u, s)) * (rho(u) + rho(s)) for
the picks s so far, sorted ascending, and their weighted sum A(u) = sum_r w_r x_(r) with
w_r = r^-alpha; its novelty is v(u) = A(u) / t. When a pick adds one value x that lands after m
stored values, only the values behind it move one rank down:

    A_new = A_old + w_{m+1} x - sum_{r>m} (w_r - w_{r+1}) x_(r)

so a step costs one distance vector and one pass over each candidate's tail, not a matrix
product and a sort. Values are stored in float32 (4 bytes each, pool x budget of them); sums
are float64, so the incremental A stays equal to a fresh sum far below the 1e-6 that matters.

Three kernels run the same update: a numba loop on the CPU (both cores, one candidate per
iteration); on a GPU, a Triton kernel that does the same per candidate (checked against the
torch kernel on the device before it is trusted), or else torch over row chunks.

Exact duplicates must tie exactly (docs/method.md section 6): a candidate's value must not
depend on where its row sits in memory, on how many rows there are, or on the engine. So the
dot product u . s is summed in one fixed order everywhere, a halving tree over the float32
products p_j = u_j s_j: with h the largest power of two below d, p_j += p_{j+h} for j < d - h,
then p_j += p_{j+h'} for j < h' = h/2, h/4, ..., 1, and p_0 is the dot (``halving_sums``). No
step is fused or reordered: numba runs without fastmath, torch runs it as elementwise
operations, each exactly rounded; on a GPU that is a dozen elementwise operations per row
chunk (log2 d), where a sequential order would need one per block of columns. The values
x(u, s) are then bitwise the same on the numba, torch and Triton engines (on a GPU too, by
construction; tests/test_gpu.py checks it there), and the lowest index wins among duplicates.
The insertion's tail sum is also fixed per row: in four partial sums from the tail's end in
numba (their order set by t and the insertion point, never by where the row sits in memory),
by halving over the ranks in torch, per block of ranks in Triton; the sums may differ between
engines in the last bits (the engines are compared to 1e-12), never between duplicates,
whatever the chunking.

An engine can also start from t given picks (a resumed or extended run, ``rebuild``): every
candidate's t values against them are computed in one batched pass over row blocks, with the
same fixed-order dot (so the values are bitwise those of the incremental path), sorted once per
row, and summed in float64 by halving over the ranks (``halving_row_sums``; the numba kernel
halves in the same order, so every engine rebuilds bitwise the same sums). A sum built by t
insertions carries the rounding of each insertion, which no single sum can reproduce, so the
rebuilt sums equal the incremental ones to a relative 1e-12 (``REBUILD_SUM_RTOL``; measured:
3e-15 after 300 picks, 2.5e-14 after 3,000; far below the 1e-6 of docs/method.md section 6),
not bit for bit (with alpha = 0 they are: float32 values summed in float64 are exact at these
sizes). The sorted values are bitwise equal, and duplicates still tie exactly.
"""

import abc
import contextlib
import functools
import os

import numpy as np

from .blocks import MIB, row_blocks
from .errors import InputError
from .proximity import rank_weights

VALUE_BYTES = 4  # float32 per stored value
GPU_KERNEL_VARIABLE = "NOVELSELECT_GPU_KERNEL"  # "torch": skip the fused Triton kernel
TORCH_BUDGET_MIB = 1024  # default working memory of one row chunk (torch) or rebuild block
# Working bytes per stored value of one row chunk of the torch insertion: the mask (1), the
# masked copy (4), its float64 products with the coefficients (8), the first halving of their
# sum (8) and the later, smaller ones (8 at most), the shifted copy (4).
INSERT_BYTES_PER_VALUE = 1 + 4 + 8 + 8 + 8 + 4
# Working bytes per value (candidate x given pick) of one row block of the torch rebuild, past
# the products of the dot (``fixed_order_bytes_per_row`` per value): the dots and the values
# (4 + 4); the sort and the float64 sums that follow need less (4 + 8 + 8 + 8 + 8).
REBUILD_BYTES_PER_VALUE = 4 + 4
# Working bytes per value of one row block of the numba rebuild: the float64 products of one
# row and their halving (each thread holds one row's at a time; the values are sorted in place).
NUMBA_REBUILD_BYTES_PER_VALUE = 8 + 8
REBUILD_SUM_RTOL = 1e-12  # rebuilt sums vs the incremental ones (module docstring)
# Messages of errors after which a GPU's CUDA context is unusable (the torch kernel would fail
# too), as torch and Triton's launcher word them.
DEVICE_FAULT_MARKERS = ("CUDA error", "Triton Error [CUDA]", "illegal memory access",
                        "illegal instruction", "misaligned address", "device-side assert",
                        "unspecified launch failure")


class DeviceError(InputError):
    """The GPU failed while a kernel ran. Its CUDA context cannot be used again in this process,
    so no other kernel is tried; the message says what the device reported."""


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


def check_memory(n, k, dim, device, budget_mib=TORCH_BUDGET_MIB, share=1):
    """Refuse, before any work, a selection that cannot fit in memory.

    On a GPU the torch engine also needs its per-chunk working memory, ``budget_mib``.
    ``share``: how many processes share the free memory alike (CPU ranks on one node).
    """
    need = selection_memory_bytes(n, k, dim)
    if device != "cpu":
        need += budget_mib * MIB
    free = available_memory_bytes(device) // max(1, share)
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


def check_resume_picks(picks, n, k, source):
    """Picks to start a selection from: a non-empty list of at most ``k`` distinct integers,
    each a row of a pool of ``n``. Returns them as a list of Python ints, in the given order."""
    if isinstance(picks, np.ndarray):
        picks = picks.tolist()
    if not isinstance(picks, (list, tuple)):
        raise InputError(f"{source}: expected a list of pool indices (integers), not "
                         f"{type(picks).__name__}")
    if not picks:
        raise InputError(f"{source}: the list of indices is empty; give at least one")
    for position, index in enumerate(picks):
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise InputError(f"{source}: expected a list of pool indices (integers); item "
                             f"{position} is {index!r}")
    picks = [int(index) for index in picks]
    if len(picks) > k:
        raise InputError(f"{source}: {len(picks)} indices, more than --k {k}")
    seen = {}
    for position, index in enumerate(picks):
        if not 0 <= index < n:
            raise InputError(f"{source}: index {index} (item {position}) is out of range for a "
                             f"pool of {n} samples")
        if index in seen:
            raise InputError(f"{source}: index {index} is given twice (items {seen[index]} "
                             f"and {position})")
        seen[index] = position
    return picks


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
    def add_pick_values(unit, rho, target, rho_pick, sorted_values, weighted_sums, values, t,
                        coefficients, weights, active):
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
            x = (np.float32(1.0) - products[0]) * (rho[u] + rho_pick)
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
    # against every given pick (``targets``, their unit vectors; ``rho_picks``, their factors), with the step kernel's fixed-order dot written out the same
    # way (bitwise the same values; a shared jitted helper, even inlined, made the step 2.4x
    # slower at 4,096 dimensions), sorted in place, then weighted and summed in float64 by
    # halving over the ranks, the order of ``halving_row_sums`` (module docstring).
    @numba.njit(parallel=True, cache=True)
    def rebuild_rows(unit, rho, targets, rho_picks, sorted_values, weighted_sums, weights, active,
                     start, stop):
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
                row[j] = (np.float32(1.0) - products[0]) * (rho[u] + rho_picks[j])
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


def fixed_order_dots(rows, target):
    """``rows @ target`` (torch, float32) summed in the fixed order of the module docstring.

    Every operation is elementwise, hence exactly rounded, so a row's result depends on its
    values only: not on its position, the number of rows, or the device (CPU and GPU agree
    bitwise, and with the numba kernel). Working memory: ``fixed_order_bytes_per_row``.
    """
    return halving_sums(rows * target)


def fixed_order_dots_many(rows, targets):
    """``rows @ targets.T`` (torch, float32; (r, d) and (t, d) -> (r, t)), every entry summed
    as ``fixed_order_dots`` sums it, so bitwise equal to ``fixed_order_dots(rows, target)``
    for each target. Working memory: ``fixed_order_bytes_per_row(d)`` per entry."""
    return halving_sums(rows[:, None, :] * targets[None, :, :])


def halving_sums(tensor):
    """Sums over the last axis of a torch tensor in a fixed order: with h the largest power of
    two below the width, column c += column c + h for c < width - h; then column c += column
    c + h' for c < h' = h/2, h/4, ..., 1; column 0 is the sum.

    Elementwise operations only, so a row's sum depends on its values alone, not on the
    chunk it is in or the device (a matrix product or ``sum`` may split rows differently).
    """
    import torch

    width = tensor.shape[-1]
    if width <= 1:
        return (tensor[..., 0].clone() if width else
                torch.zeros(tensor.shape[:-1], dtype=tensor.dtype, device=tensor.device))
    half = 1 << ((width - 1).bit_length() - 1)  # the largest power of two below ``width``
    partial = tensor[..., :half].clone()
    partial[..., :width - half] += tensor[..., half:]
    while half > 1:
        half //= 2
        partial = partial[..., :half] + partial[..., half:2 * half]
    return partial[..., 0]


def halving_row_sums(matrix):
    """Row sums of a (rows, width) torch tensor in ``halving_sums``'s fixed order."""
    return halving_sums(matrix)


def fixed_order_bytes_per_row(dim):
    """Working bytes per row of ``fixed_order_dots``: the float32 products, their first
    halving's copy and the later, smaller halvings."""
    return 4 * dim + 4 * dim + 4 * 4


class SelectionEngine(abc.ABC):
    """What every engine shares: it owns the budget ``k`` (picks to make) and ``alpha``, sizes
    its stored values for them, counts the values it holds (``t``) and runs the greedy loop,
    so the loop cannot ask it for more picks than it has room for.

    A subclass provides the abstract methods below and the attributes ``budget_bytes``,
    ``weighted_sums`` and ``active``.
    """

    def __init__(self, n, k, alpha):
        if k < 1:
            raise ValueError(f"an engine needs k >= 1 picks, not {k}")
        self.n, self.k, self.alpha = n, k, float(alpha)
        self.weights = rank_weights(k, alpha)
        self.coefficients = tail_coefficients(self.weights)
        self.width = max(k - 1, 1)  # stored values per candidate
        self.t = 0  # values each candidate holds: the picks added so far

    def _check_room(self):
        if self.t >= self.k - 1:
            raise ValueError(f"the engine was built for k={self.k} and already holds "
                             f"{self.t} values per candidate: no room for another pick")

    def add_pick(self, pick):
        """Insert every active candidate's value against ``pick`` and mark ``pick`` as taken."""
        self._check_room()
        self._insert(pick)
        self.t += 1

    def add_vector(self, target, rho_pick, taken=None):
        """Insert every active candidate's value against a pick given by its unit vector and
        density factor (a pick that another rank holds); ``taken``: the pick's row among this
        engine's candidates, marked as taken, or None when it is not one of them."""
        self._check_room()
        self._insert_vector(target, rho_pick, taken)
        self.t += 1

    def rebuild_blocks(self, t):
        """Row blocks ``(start, stop)`` of the rebuild against ``t`` given picks."""
        return list(row_blocks(self.n, self.rebuild_bytes_per_row(t), self.budget_bytes))

    def rebuild(self, picks):
        """Start from the given picks (distinct, 1 <= t <= k - 1 of them, in pick order): mark
        them as taken and give every other candidate its t values against them, sorted, and
        their weighted sum, in one batched pass over ``rebuild_blocks`` (module docstring).

        The sorted values are bitwise those that t ``add_pick`` calls leave; the sums agree to
        ``REBUILD_SUM_RTOL``. Returns the row blocks used.
        """
        if self.t:
            raise ValueError(f"the engine already holds {self.t} picks; build a new one")
        picks = check_resume_picks(picks, self.n, self.k, "the picks to start from")
        if len(picks) > self.k - 1:
            raise ValueError(f"the engine was built for k={self.k}: room for {self.k - 1} "
                             f"values per candidate, not {len(picks)}")
        blocks = self.rebuild_blocks(len(picks))
        self._rebuild(picks, blocks)
        self.t = len(picks)
        return blocks

    def rebuild_vectors(self, targets, rho_picks, taken):
        """``rebuild`` for picks given by their unit vectors ``targets`` (t, d) and density
        factors (t,), in pick order (picks that other ranks hold); ``taken``: the rows among
        this engine's candidates that are picks. Returns the row blocks used."""
        if self.t:
            raise ValueError(f"the engine already holds {self.t} picks; build a new one")
        t = len(targets)
        if not 1 <= t <= self.k - 1:
            raise ValueError(f"the engine was built for k={self.k}: room for {self.k - 1} "
                             f"values per candidate, not {t}")
        blocks = self.rebuild_blocks(t)
        self._rebuild_vectors(targets, rho_picks, taken, blocks)
        self.t = t
        return blocks

    def _insert(self, pick):
        """Insert every active candidate's value against ``pick`` after the ``t`` it holds."""
        self._insert_vector(self.unit[pick], self.rho[pick], pick)

    def _rebuild(self, picks, blocks):
        """Every candidate's values against ``picks``, sorted and summed, in ``blocks``."""
        self._rebuild_vectors(self.unit[picks], self.rho[picks], picks, blocks)

    def best(self, quality=None):
        """The unpicked candidate with the largest novelty (times quality), the lowest index on
        ties, and its novelty, after the ``t`` picks added so far."""
        pick, novelty, _score = self.best_scored(quality)
        return pick, novelty

    @abc.abstractmethod
    def _insert_vector(self, target, rho_pick, taken):
        """Insert every active candidate's value against the pick with unit vector ``target``
        and factor ``rho_pick`` after the ``t`` it holds; mark row ``taken`` (if any) taken."""

    @abc.abstractmethod
    def _rebuild_vectors(self, targets, rho_picks, taken, blocks):
        """Every candidate's values against the picks ``targets`` / ``rho_picks``, sorted and
        summed, in ``blocks``; rows ``taken`` are marked taken."""

    @abc.abstractmethod
    def rebuild_bytes_per_row(self, t):
        """Working bytes per row of the rebuild against ``t`` given picks."""

    @abc.abstractmethod
    def device_array(self, values):
        """``values`` as float64 where this engine keeps its sums (quality scores)."""

    @abc.abstractmethod
    def best_scored(self, quality=None):
        """``best``, with the winning score (novelty times quality): ``(pick, novelty,
        score)``; ``(-1, nan, -inf)`` when no candidate is left (a rank whose rows are all
        picked)."""

    def run(self, first, quality=None, on_pick=None):
        """The greedy loop, to ``k`` picks: ``first`` is the first pick (an index) or the picks
        to start from (a list of distinct indices, at most ``k``; with two or more their state
        is rebuilt in one pass, ``rebuild``). ``on_pick(index, novelty)`` hears of each pick,
        the given ones first, with novelty NaN (not computed for them)."""
        if self.t:
            raise ValueError(f"the engine already holds {self.t} picks; build a new one")
        single = isinstance(first, (int, np.integer)) and not isinstance(first, bool)
        picks = check_resume_picks([first] if single else first, self.n, self.k,
                                   "the picks to start from")
        quality = self.device_array(quality) if quality is not None else None
        if on_pick:
            for pick in picks:
                on_pick(pick, float("nan"))
        if len(picks) == 1 and self.k > 1:
            self.add_pick(picks[0])  # marks the pick as taken, so it is never chosen again
        elif len(picks) < self.k:
            self.rebuild(picks)
        while len(picks) < self.k:
            pick, novelty = self.best(quality)
            picks.append(pick)
            if on_pick:
                on_pick(pick, novelty)
            if len(picks) < self.k:
                self.add_pick(pick)
        return picks


class NumpyEngine(SelectionEngine):
    """CPU engine: candidates' sorted values in a numpy array, updated by a numba kernel.

    ``values`` holds each candidate's value against the latest pick (for inspection and tests).
    """

    def __init__(self, unit, rho, k, alpha, budget_mib=TORCH_BUDGET_MIB):
        super().__init__(len(unit), k, alpha)
        self.budget_bytes = budget_mib * MIB  # working memory of one rebuild block
        self.unit = np.ascontiguousarray(unit, dtype=np.float32)
        self.rho = np.ascontiguousarray(rho, dtype=np.float32)
        self.sorted_values = np.empty((self.n, self.width), dtype=np.float32)
        self.weighted_sums = np.zeros(self.n, dtype=np.float64)
        self.values = np.zeros(self.n, dtype=np.float32)
        self.active = np.ones(self.n, dtype=np.bool_)
        self.kernel = _numba_kernel()

    def _insert_vector(self, target, rho_pick, taken):
        if taken is not None:
            self.active[taken] = False
        self.kernel(self.unit, self.rho, np.ascontiguousarray(target, dtype=np.float32),
                    np.float32(rho_pick), self.sorted_values, self.weighted_sums, self.values,
                    self.t, self.coefficients, self.weights, self.active)

    def rebuild_bytes_per_row(self, t):
        return NUMBA_REBUILD_BYTES_PER_VALUE * t

    def _rebuild_vectors(self, targets, rho_picks, taken, blocks):
        kernel = _numba_rebuild_kernel()
        self.active[np.asarray(taken, dtype=np.int64)] = False
        targets = np.ascontiguousarray(targets, dtype=np.float32)
        rho_picks = np.ascontiguousarray(rho_picks, dtype=np.float32)
        for start, stop in blocks:  # Ctrl-C is heard between blocks
            kernel(self.unit, self.rho, targets, rho_picks, self.sorted_values,
                   self.weighted_sums, self.weights, self.active, start, stop)

    def weighted_sums_host(self):
        return self.weighted_sums

    def host_rows(self, rows):
        """Unit vectors of candidate ``rows``, as a numpy array (to send to other ranks)."""
        return self.unit[rows]

    def host_factors(self, rows):
        return self.rho[rows]

    def device_array(self, values):
        """``values`` as float64 where this engine keeps its sums (quality scores)."""
        return np.asarray(values, dtype=np.float64)

    def best_scored(self, quality=None):
        if not self.active.any():
            return -1, float("nan"), -np.inf
        novelty = self.weighted_sums / self.t
        score = novelty * quality if quality is not None else novelty.copy()
        score[~self.active] = -np.inf
        pick = int(np.argmax(score))
        return pick, float(novelty[pick]), float(score[pick])


class TorchEngine(SelectionEngine):
    """GPU engine (also runs on the CPU, for tests): the same update, vectorised over row chunks.

    For each chunk: a mask of stored values greater than the new one gives the insertion
    point and the tail sum; the tail moves one column right in one ``where``. Chunks are
    planned by ``utils.blocks`` from ``budget_mib``, the whole working memory of one chunk.
    """

    def __init__(self, unit, rho, k, alpha, device, budget_mib=TORCH_BUDGET_MIB):
        super().__init__(len(unit), k, alpha)
        from .device import exact_torch

        torch = self.torch = exact_torch()
        self.device = torch.device(device)
        self.unit = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32)).to(self.device)
        self.rho = torch.from_numpy(np.ascontiguousarray(rho, dtype=np.float32)).to(self.device)
        self.weights_t = torch.from_numpy(self.weights).to(self.device)
        self.coefficients_t = torch.from_numpy(self.coefficients).to(self.device)
        self.sorted_values = torch.zeros((self.n, self.width), dtype=torch.float32,
                                         device=self.device)
        self.weighted_sums = torch.zeros(self.n, dtype=torch.float64, device=self.device)
        self.active = torch.ones(self.n, dtype=torch.int8, device=self.device)  # 0: picked
        self.budget_bytes = budget_mib * MIB

    def distance_chunks(self):
        """Row chunks ``(start, stop)`` of the distance step (``fixed_order_dots``)."""
        return list(row_blocks(self.n, fixed_order_bytes_per_row(self.unit.shape[1]),
                               self.budget_bytes))

    def insertion_chunks(self):
        """Row chunks of the insertion step at the current ``t`` stored values per row."""
        return list(row_blocks(self.n, INSERT_BYTES_PER_VALUE * max(self.t, 1),
                               self.budget_bytes))

    def on_device(self, values, dtype):
        """``values`` (numpy, torch or a number) as a tensor of ``dtype`` on this engine's device."""
        return self.torch.as_tensor(values, dtype=dtype).to(self.device)

    def take(self, target, rho_pick, taken=None):
        """Mark row ``taken`` (if any) as taken and return every candidate's value x(u, s)
        against the pick s with unit vector ``target`` and factor ``rho_pick`` (docs/method.md
        section 5), computed in the fixed order that makes duplicates tie exactly."""
        if taken is not None:
            self.active[taken] = 0
        target = self.on_device(target, self.torch.float32)
        rho_pick = self.on_device(rho_pick, self.torch.float32)
        dots = self.torch.empty(self.n, dtype=self.torch.float32, device=self.device)
        for start, stop in self.distance_chunks():
            dots[start:stop] = fixed_order_dots(self.unit[start:stop], target)
        self.values = (1.0 - dots) * (self.rho + rho_pick)
        return self.values

    def rebuild_bytes_per_row(self, t):
        return (fixed_order_bytes_per_row(self.unit.shape[1]) + REBUILD_BYTES_PER_VALUE) * t

    def _rebuild_vectors(self, targets, rho_picks, taken, blocks):
        torch, t = self.torch, len(targets)
        self.active[torch.as_tensor(taken, dtype=torch.int64, device=self.device)] = 0
        targets = self.on_device(targets, torch.float32)
        rho_picks = self.on_device(rho_picks, torch.float32)
        weights = self.weights_t[:t]
        for start, stop in blocks:
            dots = fixed_order_dots_many(self.unit[start:stop], targets)
            values = torch.sort((1.0 - dots) * (self.rho[start:stop, None] + rho_picks),
                                dim=1).values
            self.sorted_values[start:stop, :t] = values
            self.weighted_sums[start:stop] = halving_row_sums(values.double() * weights)

    def _insert_vector(self, target, rho_pick, taken):
        torch, t = self.torch, self.t
        values = self.take(target, rho_pick, taken)
        for start, stop in self.insertion_chunks():
            stored = self.sorted_values[start:stop, :t]
            x = values[start:stop]
            above = stored > x[:, None]
            tail = halving_row_sums(
                torch.where(above, stored, 0.0).double().mul_(self.coefficients_t[:t]))
            insert_at = t - above.sum(dim=1)
            self.sorted_values[start:stop, 1:t + 1] = torch.where(
                above, stored, self.sorted_values[start:stop, 1:t + 1])
            self.sorted_values[start:stop].scatter_(1, insert_at[:, None], x[:, None])
            self.weighted_sums[start:stop] += self.weights_t[insert_at] * x.double() - tail

    def weighted_sums_host(self):
        return self.weighted_sums.cpu().numpy()

    def host_rows(self, rows):
        """Unit vectors of candidate ``rows``, as a numpy array (to send to other ranks)."""
        return self.unit[self.torch.as_tensor(rows, dtype=self.torch.int64)
                         .to(self.device)].cpu().numpy()

    def host_factors(self, rows):
        return self.rho[self.torch.as_tensor(rows, dtype=self.torch.int64)
                        .to(self.device)].cpu().numpy()

    def device_array(self, values):
        return self.torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device)

    def best_scored(self, quality=None):
        """As ``NumpyEngine.best_scored``, on the device: only the pick, its novelty and score
        cross to the host, not the pool's sums (3 MB a step at 396,000 candidates)."""
        if self.n == 0:  # a rank with no rows (fewer rows than ranks)
            return -1, float("nan"), -np.inf
        novelty = self.weighted_sums / self.t
        score = novelty * quality if quality is not None else novelty
        score = self.torch.where(self.active.bool(), score, -float("inf"))
        pick = int(self.torch.argmax(score))  # the first of equal maxima: the lowest index
        if not bool(self.active[pick]):
            return -1, float("nan"), -np.inf
        return pick, float(novelty[pick]), float(score[pick])


class TritonEngine(TorchEngine):
    """GPU engine with the step fused into one Triton kernel (``utils/triton_selection.py``).

    It touches only each candidate's tail, where the torch engine rewrites whole rows. The
    values come from the torch engine's ``take``, so both engines insert bitwise equal values.
    """

    def __init__(self, unit, rho, k, alpha, device, block=None, budget_mib=TORCH_BUDGET_MIB):
        super().__init__(unit, rho, k, alpha, device, budget_mib)
        from . import triton_selection

        self._kernels = triton_selection
        self.block = block or triton_selection.BLOCK

    def _insert_vector(self, target, rho_pick, taken):
        self._kernels.launch(self.sorted_values, self.weighted_sums,
                             self.take(target, rho_pick, taken), self.active,
                             self.coefficients_t, self.weights_t, self.t, self.block)


def first_line(err):
    """``Type: first line of the message``: an error in one line, for a notice."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def is_device_fault(err):
    """Whether ``err`` reports a fault of the GPU itself (a CUDA error, an illegal memory access,
    a device-side assert), after which its CUDA context is unusable and no fallback can run."""
    import torch

    device_errors = tuple(getattr(torch, name) for name in ("AcceleratorError", "OutOfMemoryError")
                          if hasattr(torch, name))
    return isinstance(err, device_errors) or any(marker in str(err)
                                                 for marker in DEVICE_FAULT_MARKERS)


def kernel_build_errors():
    """Exception types that mean "the fused kernel cannot be compiled or launched here":
    Triton's compiler and resource errors, and the RuntimeError its launcher raises without a
    usable driver. Which of them a given error is, ``is_device_fault`` tells apart."""
    import triton.compiler.errors as compile_errors
    import triton.runtime.errors as runtime_errors

    names = ("TritonError", "CompilationError", "OutOfResources", "PTXASError", "InterpreterError")
    found = {getattr(module, name) for module in (compile_errors, runtime_errors)
             for name in names if hasattr(module, name)}
    return (ImportError, RuntimeError, *found)


def triton_self_check(device, n=1536, dim=16, k=1200, block=None):
    """Run the Triton and torch engines side by side on a small random pool on ``device``.

    1,200 picks make the late tails span several 512-value blocks, as they do at scale; the
    check takes well under a second on a GPU.

    Returns None when they agree (same picks, same sorted values, sums to 1e-12), else why
    not: a kernel that does not compile or launch, or gives other results, costs a notice and
    the slower kernel, never a wrong selection. A fault of the device itself (a CUDA error)
    raises ``DeviceError``: the torch kernel could not run after it either.
    """
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    rho = rng.uniform(0.5, 2.0, n).astype(np.float32)
    try:
        build_errors = kernel_build_errors()
    except ImportError as err:
        return first_line(err)
    try:
        fused = TritonEngine(unit, rho, k, 1.0, device, block=block)
        fused_picks = fused.run(0)
    except build_errors as err:
        if is_device_fault(err):
            raise DeviceError(f"{device}: the fused Triton kernel failed on the device "
                              f"({first_line(err)}); the GPU cannot be used in this process "
                              f"(set {GPU_KERNEL_VARIABLE}=torch to skip the kernel)") from err
        return first_line(err)
    plain = TorchEngine(unit, rho, k, 1.0, device)
    if fused_picks != plain.run(0):
        return "its picks differ from the torch kernel's"
    active = fused.active.bool()
    if not bool((fused.sorted_values[active] == plain.sorted_values[active]).all()):
        return "its sorted values differ from the torch kernel's"
    sums = fused.weighted_sums[active], plain.weighted_sums[active]
    if not bool(((sums[0] - sums[1]).abs() <= 1e-12 * sums[1].abs()).all()):
        return "its sums differ from the torch kernel's"
    return None


def make_engine(unit, rho, k, alpha, device, notify=None, budget_mib=TORCH_BUDGET_MIB):
    """The engine for ``device``: numba on the CPU; on a GPU the Triton kernel when Triton is
    installed and passes its self-check there, else the torch kernel (``notify`` hears why).
    ``budget_mib``: working memory of one row chunk of the GPU engines, and of one row block
    of a rebuild (``SelectionEngine.rebuild``) on every engine."""
    if device == "cpu":
        return NumpyEngine(unit, rho, k, alpha, budget_mib)
    import importlib.util

    if os.environ.get(GPU_KERNEL_VARIABLE) == "torch":
        problem = f"{GPU_KERNEL_VARIABLE}=torch"
    elif importlib.util.find_spec("triton") is None:
        problem = "Triton is not installed"
    else:
        problem = triton_self_check(device)
    if problem is None:
        return TritonEngine(unit, rho, k, alpha, device, budget_mib=budget_mib)
    if notify is not None:
        notify(f"the fused Triton kernel is not used ({problem}); using the slower torch kernel")
    return TorchEngine(unit, rho, k, alpha, device, budget_mib)


def check_engine(engine, n, k, alpha):
    """Refuse an engine built for another pool size, budget or alpha than the selection asks."""
    built, asked = (engine.n, engine.k, engine.alpha), (n, k, float(alpha))
    if built != asked:
        raise ValueError("the engine was built for n={}, k={}, alpha={} but the selection asks "
                         "for n={}, k={}, alpha={}".format(*built, *asked))


def select(unit, rho, k, alpha, first, quality=None, engine=None, device="cpu", on_pick=None):
    """Greedy NovelSelect: ``k`` global indices in pick order, starting from ``first``: the
    first pick, or a list of distinct picks to continue from (``SelectionEngine.run``).

    ``unit``: (n, d) float32 unit rows; ``rho``: (n,) float32 density factors sigma^beta;
    ``quality``: optional (n,) non-negative scores multiplied into the novelty.
    Ties go to the lowest index. ``on_pick(index, novelty)`` is called after each pick.
    An ``engine`` given must have been built for the same rows, ``k`` and ``alpha``.
    """
    if engine is None:
        engine = make_engine(unit, rho, k, alpha, device)
    check_engine(engine, len(unit), k, alpha)
    return engine.run(first, quality, on_pick)
