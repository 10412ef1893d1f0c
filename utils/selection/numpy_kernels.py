"""The CPU engine's kernels in numpy, for small selections: bitwise those of ``cpu_kernels``.

A small run then never starts numba (its import and first kernel load cost about 0.8 s,
more than a small selection's whole work). Each float operation is the numba kernel's, in the
same order, as whole-array operations: the dot by ``fixed_order_dots``,
the value, the insertion point, and each tail's float64 sum by halving over its ranks. Same
signatures as the numba kernels; ``active`` rows only. Working memory: a few float64 copies of
the active rows' stored values and float32 copies of their unit vectors (a few hundred MiB at
most below ``cpu.SMALL_SELECTION_WORK``); a rebuild, ``rebuild_bytes_per_value`` per value.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..numerics.fixed_order import (
    fixed_order_bytes_per_row,
    fixed_order_dots,
    fixed_order_dots_many,
    halving_sums,
)
from .pair_values import pair_values


def tail_sums(stored, insertion_points, coefficients):
    """sum_{r >= m} c_r x_(r) of each row for its insertion point m, in float64, each by
    halving over the tail's ranks (the numba kernel's ``tail_sum``).

    Every tail is padded with -0.0 to one power-of-two width: x + (-0.0) is x for every x, and
    the wider tree only adds padding until its halving reaches the tail's own width, so each
    row's sum is bitwise its own tree's."""
    count, t = stored.shape
    if not t:
        return np.zeros(count, dtype=np.float64)
    width = 1 << (t - 1).bit_length()  # the smallest power of two >= t
    products = np.full((count, t + width), -0.0)
    np.multiply(stored, coefficients[:t], out=products[:, :t])
    tails = sliding_window_view(products, width, axis=1)[np.arange(count), insertion_points]
    sums = halving_sums(tails)
    sums[insertion_points == t] = 0.0  # an empty tail sums to +0.0, as numba's
    return sums


def insert_after(stored, values, insertion_points):
    """Each row of ``stored`` (r, t) with its value inserted at its insertion point: (r, t + 1)."""
    count, t = stored.shape
    columns = np.arange(t + 1)
    before = np.empty((count, t + 1), dtype=stored.dtype)
    before[:, :t] = stored
    after = np.empty_like(before)
    after[:, 1:] = stored
    rows = np.where(columns < insertion_points[:, None], before, after)
    rows[np.arange(count), insertion_points] = values
    return rows


def add_pick_values(unit, squared_norms, density_factors, target, pick_squared_norm,
                    pick_density_factor, sorted_values, weighted_sums, values, t, coefficients,
                    weights, active):
    """One step (``cpu_kernels.add_pick_values``): each active candidate's value against the
    pick, inserted after the ``t`` it holds, and A += w_{m+1} x - sum_{r>m} c_r x_(r)."""
    rows = np.flatnonzero(active)
    if not len(rows):
        return
    x = pair_values(fixed_order_dots(unit[rows], target), squared_norms[rows],
                    density_factors[rows], pick_squared_norm, pick_density_factor)
    values[rows] = x
    stored = sorted_values[rows, :t]
    insertion_points = t - (stored > x[:, None]).sum(axis=1)  # the first value greater than x
    tails = tail_sums(stored, insertion_points, coefficients)
    sorted_values[rows, :t + 1] = insert_after(stored, x, insertion_points)
    weighted_sums[rows] += weights[insertion_points] * x.astype(np.float64) - tails


def rebuild_bytes_per_value(dim):
    """Working bytes of ``rebuild_rows`` per (row, pick): the fixed-order dot's products and
    halvings, the float64 cosine and factor sum, the float32 value and its weighted float64
    copy."""
    return fixed_order_bytes_per_row(dim) + 8 + 8 + 4 + 8


def rebuild_rows(unit, squared_norms, density_factors, targets, pick_squared_norms,
                 pick_density_factors, sorted_values, weighted_sums, weights, active, start,
                 stop):
    """Rows ``start:stop`` of the rebuild (``cpu_kernels.rebuild_rows``): each active
    candidate's values against every given pick, sorted, weighted and summed by halving.
    The sums are numba's bit for bit; the sorted values equal numba's, and are bitwise what
    the insertions leave (numba's sort may order +0.0 and -0.0 otherwise)."""
    rows = start + np.flatnonzero(active[start:stop])
    t = len(targets)
    if not len(rows):
        return
    x = pair_values(fixed_order_dots_many(unit[rows], targets), squared_norms[rows, None],
                    density_factors[rows, None], pick_squared_norms,
                    pick_density_factors.astype(np.float64))
    x.sort(axis=1, kind="stable")  # equal values (+0.0, -0.0) in pick order, as inserted
    sorted_values[rows, :t] = x
    weighted_sums[rows] = halving_sums(x.astype(np.float64) * weights[:t])
