"""The halving tree of ``fixed_order.halving_sums`` for numba kernels that sum inside a loop
(the selection's step and rebuild, the exact re-ranking): one implementation of the order.

Imported only by those kernels' modules, so numba loads when a kernel is first used. A kernel
writes the tree's first step itself (its terms differ: float32 products, float64 squares or
weighted values): with h = ``halving_power(width)``, s_j = t_j + t_{j+h} for j < width - h and
s_j = t_j for the rest of j < h; ``halve`` then takes s_j += s_{j+h'} for h' = h/2, ..., 1.
"""

import numba


@numba.njit(cache=True, inline="always")
def halving_power(width):
    """The largest power of two below ``width`` (1 for widths 1 and 2)."""
    half = 1
    while half * 2 < width:
        half *= 2
    return half


@numba.njit(cache=True, inline="always")
def halve(sums, half):
    """The sum of ``sums[:half]`` by halving (``half`` a power of two), in place; sums[0]."""
    while half > 1:
        half //= 2
        for j in range(half):
            sums[j] += sums[j + half]
    return sums[0]
