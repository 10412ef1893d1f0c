"""Rank weights, proximity-weighted means and the NovelSum grid (SPEC section 4).

For a target X of n vectors, row i of the cosine-distance matrix (self-distance included) is
sorted ascending and reduced to P_i(alpha) = sum_r r^-alpha d_(r) / sum_r r^-alpha. Because the
density factor is constant along a row, one sort per row serves the whole (k, beta, alpha) grid:
NovelSum(k, beta, alpha) = mean_i sigma_k(x_i)^beta * P_i(alpha).

The matrix is never built: rows are processed in blocks sized from a memory budget. Values are
float32; every sum is accumulated in float64 (SPEC section 6).
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .density import density_factor
from .device import exact_torch

DEFAULT_BLOCK_MIB = 256


def rank_weights(n, alpha):
    """w_r = r ** -alpha for r = 1..n, float64."""
    return np.power(np.arange(1, n + 1, dtype=np.float64), -float(alpha))


def normalised_weight_matrix(n, alphas):
    """Columns w(alpha) / sum w(alpha): a dot with a sorted row gives P_i(alpha). Shape (n, A)."""
    weights = np.stack([rank_weights(n, a) for a in alphas], axis=1)
    return weights / weights.sum(axis=0)


def unit_rows(vectors):
    """Rows scaled to unit L2 norm (float32); callers have refused zero rows."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / norms


def row_blocks(n_rows, bytes_per_row, budget_bytes):
    """Yield ``(start, stop)`` row ranges whose working memory stays within ``budget_bytes``.

    A block always has at least one row, so a single huge row still makes progress.
    """
    rows_per_block = max(1, int(budget_bytes // max(1, bytes_per_row)))
    for start in range(0, n_rows, rows_per_block):
        yield start, min(n_rows, start + rows_per_block)


def cosine_distance_block(unit_block, unit_all):
    """d(i, j) = 1 - cos(x_i, x_j) for the rows of a block against all rows (float32)."""
    return 1.0 - unit_block @ unit_all.T


# Working bytes per matrix element of a block: the float32 distances (sorted in place) and the
# float64 copy that the weighted sum reads.
_NUMPY_BYTES_PER_ELEMENT = 4 + 8


def _profile_block_numpy(unit_block, unit_all, weight_matrix):
    distances = cosine_distance_block(unit_block, unit_all)
    distance_sum = float(distances.sum(dtype=np.float64))
    distances.sort(axis=1)
    return distances.astype(np.float64) @ weight_matrix, distance_sum


def _proximity_profile_numpy(unit, weight_matrix, budget_bytes, progress, n_threads):
    n = len(unit)
    means = np.empty((n, weight_matrix.shape[1]), dtype=np.float64)
    total = 0.0
    blocks = list(row_blocks(n, n * _NUMPY_BYTES_PER_ELEMENT * n_threads, budget_bytes))
    # Sorting is single-threaded in numpy but releases the GIL: one thread per core, each on
    # its own slice of the block, keeps every core busy.
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for start, stop in (progress(blocks) if progress else blocks):
            slices = np.array_split(np.arange(start, stop), min(n_threads, stop - start))
            jobs = [pool.submit(_profile_block_numpy, unit[s[0]:s[-1] + 1], unit, weight_matrix)
                    for s in slices]
            for rows, job in zip(slices, jobs):
                means[rows[0]:rows[-1] + 1], part = job.result()
                total += part
    return means, total


def _proximity_profile_torch(unit, weight_matrix, budget_bytes, progress, device):
    torch = exact_torch()
    n = len(unit)
    unit_t = torch.from_numpy(unit).to(device)
    weights_t = torch.from_numpy(weight_matrix).to(device)
    means = np.empty((n, weight_matrix.shape[1]), dtype=np.float64)
    total = torch.zeros((), dtype=torch.float64, device=device)
    # distances (float32), their sorted copy and sort indices (int64), the float64 copy
    blocks = list(row_blocks(n, n * (4 + 4 + 8 + 8), budget_bytes))
    for start, stop in (progress(blocks) if progress else blocks):
        distances = 1.0 - unit_t[start:stop] @ unit_t.T
        total += distances.sum(dtype=torch.float64)
        sorted_rows = torch.sort(distances, dim=1).values
        means[start:stop] = (sorted_rows.double() @ weights_t).cpu().numpy()
    return means, float(total)


def proximity_profile(vectors, alphas, device="cpu", budget_mib=DEFAULT_BLOCK_MIB,
                      progress=None, n_threads=None):
    """P_i(alpha) for every row i and alpha, and the sum of all n*n cosine distances.

    Returns ``(means, distance_sum)`` with ``means`` of shape (n, len(alphas)), float64.
    One pass over row blocks: each block of distances is computed, sorted once and reduced
    for every alpha. ``progress`` wraps the list of blocks (for example tqdm).
    """
    unit = unit_rows(vectors)
    weight_matrix = normalised_weight_matrix(len(unit), alphas)
    budget_bytes = budget_mib * 2**20
    if device == "cpu":
        n_threads = n_threads or os.cpu_count() or 1
        return _proximity_profile_numpy(unit, weight_matrix, budget_bytes, progress, n_threads)
    return _proximity_profile_torch(unit, weight_matrix, budget_bytes, progress, device)


def format_number(value):
    """Shortest text of a grid value: ``0``, ``0.25``, ``1`` (SPEC section 4)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def column_name(k, beta, alpha):
    """CSV column of one grid point: ``neighbor_{k}_density_{beta}_distance_{alpha}``."""
    return f"neighbor_{k}_density_{format_number(beta)}_distance_{format_number(alpha)}"


def novelsum_grid(proximity_means, mean_sq_by_k, neighbors, density_powers, distance_powers):
    """NovelSum for every grid point, as ``{column name: value}`` in the reference's order.

    ``proximity_means``: (n, len(distance_powers)) from ``proximity_profile``;
    ``mean_sq_by_k``: k -> (n,) mean squared kNN distances, or None without a reference
    (then every density power must be 0, and sigma^0 = 1).
    """
    results = {}
    for beta in density_powers:
        for k in neighbors:
            if beta == 0:
                row_scale = np.ones(len(proximity_means))
            else:
                row_scale = density_factor(mean_sq_by_k[k], beta)
            for a, alpha in enumerate(distance_powers):
                results[column_name(k, beta, alpha)] = float(
                    np.mean(row_scale * proximity_means[:, a]))
    return results
