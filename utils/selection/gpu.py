"""The GPU engines: torch over row chunks, and the fused Triton kernel once it passed its
self-check on the device."""

import numpy as np

from ..errors import InputError
from ..numerics.blocks import MIB, row_blocks
from ..numerics.fixed_order import (
    fixed_order_bytes_per_row,
    fixed_order_dots,
    fixed_order_dots_many,
    halving_sums,
)
from .selection_engine import SelectionEngine, tie_floor
from .memory import TORCH_BLOCK_MIB
from .pair_values import pair_values, squared_norms

GPU_KERNEL_VARIABLE = "NOVELSELECT_GPU_KERNEL"  # "torch": skip the fused Triton kernel


# Working bytes per stored value of one row chunk of the torch insertion: the mask (1), the
# masked copy (4), its float64 products with the coefficients (8), the first halving of their
# sum (8) and the later, smaller ones (8 at most), the shifted copy (4).
INSERT_BYTES_PER_VALUE = 1 + 4 + 8 + 8 + 8 + 4


# Working bytes per value (candidate x given pick) of one row block of the torch rebuild, past
# the products of the dot (``fixed_order_bytes_per_row`` per value): the dots (4), the float64
# cosines and factor sums (8 + 8), the values (4); the sort and the float64 sums that follow
# need less.
REBUILD_BYTES_PER_VALUE = 4 + 8 + 8 + 4


# Working bytes per row of the distance step past the dot's products: the float64 cosine,
# factor sum and value before its rounding to float32.
VALUE_BYTES_PER_ROW = 8 + 8 + 8


# Messages of errors after which a GPU's CUDA context is unusable (the torch kernel would fail
# too), as torch and Triton's launcher word them.
DEVICE_FAULT_MARKERS = ("CUDA error", "Triton Error [CUDA]", "illegal memory access",
                        "illegal instruction", "misaligned address", "device-side assert",
                        "unspecified launch failure")


class DeviceError(InputError):
    """The GPU failed while a kernel ran. Its CUDA context cannot be used again in this process,
    so no other kernel is tried; the message says what the device reported."""


class TorchEngine(SelectionEngine):
    """GPU engine (also runs on the CPU, for tests): the same update, vectorised over row chunks.

    For each chunk: a mask of stored values greater than the new one gives the insertion
    point and the tail sum; the tail moves one column right in one ``where``. Chunks are
    planned by ``utils.numerics.blocks`` from ``block_mib``, the whole working memory of one chunk.
    """

    def __init__(self, unit, density_factors, k, alpha, device, block_mib=TORCH_BLOCK_MIB):
        super().__init__(len(unit), k, alpha)
        from ..numerics.compute import exact_torch

        torch = self.torch = exact_torch()
        self.device = torch.device(device)
        self.unit = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32)).to(self.device)
        self.density_factors = torch.from_numpy(
            np.ascontiguousarray(density_factors, dtype=np.float32)).to(self.device)
        self.squared_norms = squared_norms(self.unit)
        self.weights_t = torch.from_numpy(self.weights).to(self.device)
        self.coefficients_t = torch.from_numpy(self.coefficients).to(self.device)
        self.sorted_values = torch.zeros((self.n, self.width), dtype=torch.float32,
                                         device=self.device)
        self.weighted_sums = torch.zeros(self.n, dtype=torch.float64, device=self.device)
        self.active = torch.ones(self.n, dtype=torch.int8, device=self.device)  # 0: picked
        self.block_bytes = block_mib * MIB

    def distance_chunks(self):
        """Row chunks ``(start, stop)`` of the distance step (``fixed_order_dots``)."""
        return list(row_blocks(self.n, fixed_order_bytes_per_row(self.unit.shape[1])
                               + VALUE_BYTES_PER_ROW, self.block_bytes))

    def insertion_chunks(self):
        """Row chunks of the insertion step at the current ``t`` stored values per row."""
        return list(row_blocks(self.n, INSERT_BYTES_PER_VALUE * max(self.t, 1),
                               self.block_bytes))

    def compute_array(self, array):
        return self.torch.as_tensor(np.asarray(array)).to(self.device)

    def on_device(self, values, dtype):
        """``values`` (numpy, torch or a number) as a tensor of ``dtype`` on this engine's
        device."""
        return self.torch.as_tensor(values, dtype=dtype).to(self.device)

    def take(self, target, pick_density_factor, taken=None):
        """Mark row ``taken`` (if any) as taken and return every candidate's value x(u, s)
        against the pick s with unit vector ``target`` and density factor
        ``pick_density_factor`` (docs/method.md section 5), computed in the fixed order that
        makes duplicates tie exactly (``pair_values``)."""
        if taken is not None:
            self.active[taken] = 0
        target = self.on_device(target, self.torch.float32)
        pick_squared_norm = squared_norms(target[None])[0]
        pick_density_factor = self.on_device(pick_density_factor, self.torch.float32).double()
        self.values = self.torch.empty(self.n, dtype=self.torch.float32, device=self.device)
        for start, stop in self.distance_chunks():
            self.values[start:stop] = pair_values(
                fixed_order_dots(self.unit[start:stop], target), self.squared_norms[start:stop],
                self.density_factors[start:stop], pick_squared_norm, pick_density_factor)
        return self.values

    def rebuild_bytes_per_row(self, t):
        return (fixed_order_bytes_per_row(self.unit.shape[1]) + REBUILD_BYTES_PER_VALUE) * t

    def _rebuild_vectors(self, targets, pick_density_factors, taken, blocks):
        torch, t = self.torch, len(targets)
        self.active[torch.as_tensor(taken, dtype=torch.int64, device=self.device)] = 0
        targets = self.on_device(targets, torch.float32)
        pick_density_factors = self.on_device(pick_density_factors, torch.float32)
        weights = self.weights_t[:t]
        pick_squared_norms = squared_norms(targets)
        pick_density_factors = pick_density_factors.double()
        for start, stop in blocks:
            values = torch.sort(pair_values(
                fixed_order_dots_many(self.unit[start:stop], targets),
                self.squared_norms[start:stop, None], self.density_factors[start:stop, None],
                pick_squared_norms, pick_density_factors), dim=1).values
            self.sorted_values[start:stop, :t] = values
            self.weighted_sums[start:stop] = halving_sums(values.double() * weights)

    def _insert_vector(self, target, pick_density_factor, taken):
        torch, t = self.torch, self.t
        values = self.take(target, pick_density_factor, taken)
        for start, stop in self.insertion_chunks():
            stored = self.sorted_values[start:stop, :t]
            x = values[start:stop]
            above = stored > x[:, None]
            tail = halving_sums(
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
        return self.density_factors[self.torch.as_tensor(rows, dtype=self.torch.int64)
                        .to(self.device)].cpu().numpy()

    def device_array(self, values):
        return self.torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device)

    def best_scored(self, quality=None, floor=None):
        """As ``NumpyEngine.best_scored``, on the device: only the pick, its novelty and score
        cross to the host, not the pool's sums (3 MB a step at 396,000 candidates)."""
        if self.n == 0 or not bool(self.active.any()):  # no rows, or all picked
            return -1, float("nan"), -np.inf, -np.inf
        novelty = self.weighted_sums / self.t
        score = novelty * quality if quality is not None else novelty
        score = self.torch.where(self.active.bool(), score, -float("inf"))
        largest = score.max()
        tied = score >= (tie_floor(largest) if floor is None else floor)
        pick = int(self.torch.argmax(tied.to(self.torch.uint8)))  # the first: the lowest index
        if not bool(tied[pick]):
            return -1, float("nan"), -np.inf, float(largest)
        return pick, float(novelty[pick]), float(score[pick]), float(largest)


class TritonEngine(TorchEngine):
    """GPU engine with the step fused into one Triton kernel (``utils/selection/triton_kernel.py``).

    It touches only each candidate's tail, where the torch engine rewrites whole rows. The
    values come from the torch engine's ``take``, so both engines insert bitwise equal values.
    """

    def __init__(self, unit, density_factors, k, alpha, device, block=None,
                 block_mib=TORCH_BLOCK_MIB):
        super().__init__(unit, density_factors, k, alpha, device, block_mib)
        from . import triton_kernel

        self._kernels = triton_kernel
        self.block = block or triton_kernel.BLOCK

    def _insert_vector(self, target, pick_density_factor, taken):
        self._kernels.launch(self.sorted_values, self.weighted_sums,
                             self.take(target, pick_density_factor, taken), self.active,
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
    density_factors = rng.uniform(0.5, 2.0, n).astype(np.float32)
    try:
        build_errors = kernel_build_errors()
    except ImportError as err:
        return first_line(err)
    try:
        fused = TritonEngine(unit, density_factors, k, 1.0, device, block=block)
        fused_picks = fused.run(0)
    except build_errors as err:
        if is_device_fault(err):
            raise DeviceError(f"{device}: the fused Triton kernel failed on the device "
                              f"({first_line(err)}); the GPU cannot be used in this process "
                              f"(set {GPU_KERNEL_VARIABLE}=torch to skip the kernel)") from err
        return first_line(err)
    plain = TorchEngine(unit, density_factors, k, 1.0, device)
    if fused_picks != plain.run(0):
        return "its picks differ from the torch kernel's"
    active = fused.active.bool()
    if not bool((fused.sorted_values[active] == plain.sorted_values[active]).all()):
        return "its sorted values differ from the torch kernel's"
    sums = fused.weighted_sums[active], plain.weighted_sums[active]
    if not bool(((sums[0] - sums[1]).abs() <= 1e-12 * sums[1].abs()).all()):
        return "its sums differ from the torch kernel's"
    return None
