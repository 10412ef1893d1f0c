"""The CPU engine's numba kernels: one greedy step's insertion, and the rebuild from given picks.

Imported only when a CPU engine is built (numba loads then, not at start-up). Every float
operation of a value x(u, s) is written out in the order of ``numerics.fixed_order`` (the dot
u . s by a halving tree over the float32 products), without fastmath, so values are bitwise
those of the torch and Triton engines (selection/selection_engine.py).

The step's cost is the tails: a new value lands after m of a candidate's t stored values and
the t - m behind it move one rank down (docs/method.md section 5). Each tail is walked twice,
forward and contiguous: once for its weighted sum, a halving tree over the tail's ranks (as
the dot's: with h the largest power of two below t - m, s_i += s_{i+h}, then halving), whose
order is set by t and m alone, never by where the row sits, so duplicates keep bitwise equal
sums; then moved by one ``memmove``. Both passes vectorise without fastmath (the summation
order is written out): about 0.5 ns a value on the Intel Xeon of docs/benchmarks.md, where the
former single backward pass in four partial sums took 2 ns, its indices too opaque to the
compiler to vectorise. Rows are handled in tasks of ``TASK_ROWS``, each with its scratch
allocated once.
"""

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..numerics.fixed_order_kernels import halve, halving_power

TASK_ROWS = 64  # candidates per parallel task


@intrinsic
def shift_right_by_one(typingctx, row, start, stop):
    """row[start + 1:stop + 1] = row[start:stop] (overlapping: an ``llvm.memmove``)."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        start_index, stop_index = args[1], args[2]
        source = builder.gep(array.data, [start_index])
        target = builder.gep(array.data, [builder.add(start_index, start_index.type(1))])
        cgutils.raw_memmove(builder, target, source, builder.sub(stop_index, start_index),
                            context.get_abi_sizeof(context.get_data_type(
                                signature.args[0].dtype)))
        return context.get_dummy_value()

    return types.void(row, start, stop), codegen


@numba.njit(cache=True, inline="always")
def fixed_order_dot(vector, target, products, half):
    """u . s in float32 by the halving tree of ``numerics.fixed_order`` (``products``: scratch
    of ``half`` = ``halving_power(d)`` entries)."""
    dim = vector.shape[0]
    if dim == 1:
        return vector[0] * target[0]
    vector_high, target_high = vector[half:], target[half:]
    for j in range(half):
        products[j] = vector[j] * target[j]
    for j in range(dim - half):
        products[j] += vector_high[j] * target_high[j]
    return halve(products, half)


@numba.njit(cache=True, inline="always")
def pair_value(dot, squared_norm, density_factor, pick_squared_norm, pick_density_factor):
    """x(u, s) from u . s, as ``selection.pair_values`` computes it (float64, rounded once)."""
    cosine = np.float64(dot) / np.sqrt(squared_norm * pick_squared_norm)
    return np.float32((1.0 - cosine) * (np.float64(density_factor)
                                        + np.float64(pick_density_factor)))


@numba.njit(cache=True, inline="always")
def tail_sum(tail, coefficients, sums):
    """sum_i coefficients[i] * tail[i] in float64 by a halving tree over the ranks i (the
    order of ``halving_sums``); ``sums``: scratch of at least len(tail) entries."""
    width = tail.shape[0]
    if width == 0:
        return 0.0
    if width == 1:
        return coefficients[0] * np.float64(tail[0])
    half = halving_power(width)
    tail_high, coefficients_high = tail[half:], coefficients[half:]
    for i in range(half):
        sums[i] = coefficients[i] * np.float64(tail[i])
    for i in range(width - half):
        sums[i] += coefficients_high[i] * np.float64(tail_high[i])
    return halve(sums, half)


@numba.njit(parallel=True, cache=True)
def add_pick_values(unit, squared_norms, density_factors, target, pick_squared_norm,
                    pick_density_factor, sorted_values, weighted_sums, values, t, coefficients,
                    weights, active):
    """One step: every active candidate's value against the pick (``target``, its unit vector;
    ``pick_density_factor``), inserted after the ``t`` it holds, and its weighted sum updated:
    A += w_{m+1} x - sum_{r>m} c_r x_(r) (selection/selection_engine.py). BLAS stays out of the loop:
    its threads spinning between calls would fight numba's for the cores."""
    n, dim = unit.shape
    half = halving_power(dim)
    for task in numba.prange((n + TASK_ROWS - 1) // TASK_ROWS):
        products = np.empty(half, dtype=np.float32)
        sums = np.empty(max(t, 1), dtype=np.float64)
        for u in range(task * TASK_ROWS, min(n, task * TASK_ROWS + TASK_ROWS)):
            if not active[u]:
                continue
            dot = fixed_order_dot(unit[u], target, products, half)
            x = pair_value(dot, squared_norms[u], density_factors[u], pick_squared_norm,
                           pick_density_factor)
            values[u] = x
            row = sorted_values[u]
            low, high = 0, t  # first stored value greater than x: the insertion point m
            while low < high:
                middle = (low + high) >> 1
                if row[middle] > x:
                    high = middle
                else:
                    low = middle + 1
            tail = tail_sum(row[low:t], coefficients[low:t], sums)
            shift_right_by_one(row, low, t)
            row[low] = x
            weighted_sums[u] += weights[low] * x - tail


@numba.njit(parallel=True, cache=True)
def rebuild_rows(unit, squared_norms, density_factors, targets, pick_squared_norms,
                 pick_density_factors, sorted_values, weighted_sums, weights, active, start,
                 stop):
    """Rows ``start:stop`` of the rebuild (SelectionEngine.rebuild): each active candidate's
    values against every given pick (``targets``, their unit vectors), by the step's
    fixed-order dot (bitwise the same values), sorted in place, then weighted and summed in
    float64 by halving over the ranks, the order of ``halving_sums``."""
    t = targets.shape[0]
    half = halving_power(unit.shape[1])
    for task in numba.prange((stop - start + TASK_ROWS - 1) // TASK_ROWS):
        products = np.empty(half, dtype=np.float32)
        sums = np.empty(max(t, 1), dtype=np.float64)
        first = start + task * TASK_ROWS
        for u in range(first, min(stop, first + TASK_ROWS)):
            if not active[u]:
                continue
            vector = unit[u]
            row = sorted_values[u]
            for j in range(t):
                dot = fixed_order_dot(vector, targets[j], products, half)
                row[j] = pair_value(dot, squared_norms[u], density_factors[u],
                                    pick_squared_norms[j], pick_density_factors[j])
            row[:t].sort()
            weighted_sums[u] = tail_sum(row[:t], weights[:t], sums)
