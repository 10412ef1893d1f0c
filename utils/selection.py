"""The NovelSelect engine (SPEC section 5), with incremental novelty updates.

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
"""

import contextlib
import functools
import os

import numpy as np

from .errors import InputError
from .proximity import rank_weights

VALUE_BYTES = 4  # float32 per stored value
GPU_KERNEL_VARIABLE = "NOVELSELECT_GPU_KERNEL"  # "torch": skip the fused Triton kernel
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

    def device_array(self, values):
        """``values`` as float64 where this engine keeps its sums (quality scores)."""
        return np.asarray(values, dtype=np.float64)

    def best(self, t, quality=None):
        """After t + 1 picks: the unpicked candidate with the largest novelty (times quality),
        the lowest index on ties, and its novelty."""
        novelty = self.weighted_sums / (t + 1)
        score = novelty * quality if quality is not None else novelty.copy()
        score[~self.active] = -np.inf
        pick = int(np.argmax(score))
        return pick, float(novelty[pick])


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
        self.active = torch.ones(n, dtype=torch.int8, device=self.device)  # 0: picked
        self.chunk_bytes = chunk_mib * 2**20

    def take(self, pick):
        """Mark ``pick`` as taken and return every candidate's value x(u, pick) (SPEC 5)."""
        self.active[pick] = 0
        self.values = (1.0 - self.unit @ self.unit[pick]) * (self.rho + self.rho[pick])
        return self.values

    def add_pick(self, pick, t):
        torch = self.torch
        values = self.take(pick)
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

    def device_array(self, values):
        return self.torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device)

    def best(self, t, quality=None):
        """As ``NumpyEngine.best``, on the device: only the pick and its novelty cross to the
        host, not the pool's sums (3 MB a step at 396,000 candidates)."""
        novelty = self.weighted_sums / (t + 1)
        score = novelty * quality if quality is not None else novelty
        score = self.torch.where(self.active.bool(), score, -float("inf"))
        pick = int(self.torch.argmax(score))  # the first of equal maxima: the lowest index
        return pick, float(novelty[pick])


class TritonEngine(TorchEngine):
    """GPU engine with the step fused into one Triton kernel (``utils/triton_selection.py``).

    It touches only each candidate's tail, where the torch engine rewrites whole rows.
    """

    def __init__(self, unit, rho, k, alpha, device, block=None):
        super().__init__(unit, rho, k, alpha, device)
        from . import triton_selection

        self._kernels = triton_selection
        self.block = block or triton_selection.BLOCK

    def add_pick(self, pick, t):
        self._kernels.launch(self.sorted_values, self.weighted_sums, self.take(pick),
                             self.active, self.coefficients, self.weights, t, self.block)


def triton_self_check(device, n=1536, dim=16, k=1200):
    """Run the Triton and torch engines side by side on a small random pool on ``device``.

    1,200 picks make the late tails span several 512-value blocks, as they do at scale; the
    check takes well under a second on a GPU.

    Returns None when they agree (same picks, same sorted values, sums to 1e-12), else why
    not: a compiler, driver or kernel fault then costs a notice and the slower kernel, never
    a wrong selection.
    """
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    rho = rng.uniform(0.5, 2.0, n).astype(np.float32)
    try:
        fused = TritonEngine(unit, rho, k, 1.0, device)
        plain = TorchEngine(unit, rho, k, 1.0, device)
        picks = [select(unit, rho, k, 1.0, 0, engine=engine) for engine in (fused, plain)]
    except Exception as err:  # any failure to compile or launch means: do not use it
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if picks[0] != picks[1]:
        return "its picks differ from the torch kernel's"
    active = fused.active.bool()
    if not bool((fused.sorted_values[active] == plain.sorted_values[active]).all()):
        return "its sorted values differ from the torch kernel's"
    sums = fused.weighted_sums[active], plain.weighted_sums[active]
    if not bool(((sums[0] - sums[1]).abs() <= 1e-12 * sums[1].abs()).all()):
        return "its sums differ from the torch kernel's"
    return None


def make_engine(unit, rho, k, alpha, device, notify=None):
    """The engine for ``device``: numba on the CPU; on a GPU the Triton kernel when Triton is
    installed and passes its self-check there, else the torch kernel (``notify`` hears why)."""
    if device == "cpu":
        return NumpyEngine(unit, rho, k, alpha)
    import importlib.util

    if os.environ.get(GPU_KERNEL_VARIABLE) == "torch":
        problem = f"{GPU_KERNEL_VARIABLE}=torch"
    elif importlib.util.find_spec("triton") is None:
        problem = "Triton is not installed"
    else:
        problem = triton_self_check(device)
    if problem is None:
        return TritonEngine(unit, rho, k, alpha, device)
    if notify is not None:
        notify(f"the fused Triton kernel is not used ({problem}); using the slower torch kernel")
    return TorchEngine(unit, rho, k, alpha, device)


def select(unit, rho, k, alpha, first, quality=None, engine=None, device="cpu", on_pick=None):
    """Greedy NovelSelect: ``k`` global indices in pick order, starting from ``first``.

    ``unit``: (n, d) float32 unit rows; ``rho``: (n,) float32 density factors sigma^beta;
    ``quality``: optional (n,) non-negative scores multiplied into the novelty.
    Ties go to the lowest index. ``on_pick(index, novelty)`` is called after each pick.
    """
    engine = engine or make_engine(unit, rho, k, alpha, device)
    quality = engine.device_array(quality) if quality is not None else None
    picks = [first]
    if on_pick:
        on_pick(first, float("nan"))
    for t in range(k - 1):
        engine.add_pick(picks[-1], t)  # marks the pick as taken, so it is never chosen again
        pick, novelty = engine.best(t, quality)
        picks.append(pick)
        if on_pick:
            on_pick(pick, novelty)
    return picks
