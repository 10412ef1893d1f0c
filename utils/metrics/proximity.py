"""NovelSum's proximity-weighted means over a grid (SPEC sections 3 and 4).

For a target X of n vectors, row i of the cosine-distance matrix (self-distance included) is
sorted ascending and reduced to P_i(alpha) = sum_r r^-alpha d_(r) / sum_r r^-alpha. Because the
density factor is constant along a row, one sort per row serves the whole (k, beta, alpha) grid:
NovelSum(k, beta, alpha) = mean_i sigma_k(x_i)^beta * P_i(alpha).

The matrix is never built: rows are processed in blocks sized from a memory budget. Values are
float32; every sum is accumulated in float64 (docs/method.md section 6).
"""

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from ..density.factor import density_factor
from ..numerics.blocks import DEFAULT_BLOCK_MIB, MIB, row_blocks
from ..numerics.compute import exact_torch
from ..numerics.rows import unit_rows
from ..numerics.weights import normalised_weight_matrix
from ..runtime.device import cpu_threads
from ..runtime.progress import tracked


def cosine_distance_block(unit_block, unit_all, start=0):
    """d(i, j) = 1 - cos(x_i, x_j) for the rows of a block against all rows (float32).

    ``start`` is the global index of the block's first row: each row's distance to itself is
    set to exactly 0, which float32 rounding of 1 - cos(x, x) would leave at about 1e-7 (a
    one-sample dataset would otherwise score that noise).
    """
    distances = 1.0 - unit_block @ unit_all.T
    rows = np.arange(len(unit_block))
    distances[rows, start + rows] = 0.0
    return distances


# Working bytes per matrix element of a block. Default: the float32 distances (sorted in
# place) and the float64 copy that the weighted sum reads. With neighbour factors: also the
# sort order (int64), the neighbours' factors gathered in that order and their product
# (float64 each).
_NUMPY_BYTES_PER_ELEMENT = 4 + 8


_NUMPY_BYTES_PER_ELEMENT_NEIGHBOR = 4 + 8 + 8 + 8 + 8


class ProximityProfile(NamedTuple):
    """What one pass over a dataset's distance rows gives.

    ``means``: (n, columns) proximity-weighted means P_i; ``distance_sum``: the sum of all n*n
    cosine distances; ``nearest_index`` / ``nearest_distance``: each sample's most similar
    *other* sample (lowest index on ties; -1 and NaN for a one-sample dataset) and their
    cosine distance.
    """

    means: np.ndarray
    distance_sum: float
    nearest_index: np.ndarray
    nearest_distance: np.ndarray


def nearest_other(distances, start):
    """Index and distance of each row's nearest other sample (lowest index on ties)."""
    rows = np.arange(len(distances))
    own = distances[rows, start + rows].copy()
    distances[rows, start + rows] = np.inf
    nearest = np.argmin(distances, axis=1)
    nearest_distance = distances[rows, nearest].astype(np.float64)
    distances[rows, start + rows] = own
    if distances.shape[1] == 1:  # no other sample
        return np.full(len(rows), -1), np.full(len(rows), np.nan)
    return nearest, nearest_distance


def mark_self_first(distances, start):
    """Make each row's distance to itself sort before every other (``-inf``), so that
    dropping the first sorted column leaves the row's n - 1 distances to other samples."""
    rows = np.arange(len(distances))
    distances[rows, start + rows] = -np.inf


def _profile_block_numpy(unit_all, start, stop, weight_matrix, exclude_self=False,
                         neighbor_factors=None):
    distances = cosine_distance_block(unit_all[start:stop], unit_all, start)
    distance_sum = float(distances.sum(dtype=np.float64))
    nearest = nearest_other(distances, start)
    if exclude_self:
        mark_self_first(distances, start)
    skip = 1 if exclude_self else 0
    if neighbor_factors is None:
        distances.sort(axis=1)
        return distances[:, skip:].astype(np.float64) @ weight_matrix, distance_sum, nearest
    # Ranks by plain distance; a stable sort keeps equal distances in index order, so the
    # result does not depend on the sort's whims.
    order = np.argsort(distances, axis=1, kind="stable")[:, skip:]
    ranked = np.take_along_axis(distances, order, axis=1).astype(np.float64)
    return np.concatenate([(ranked * factors[order]) @ weight_matrix
                           for factors in neighbor_factors], axis=1), distance_sum, nearest


def _proximity_profile_numpy(unit, weight_matrix, block_bytes, progress, n_threads,
                             exclude_self, neighbor_factors, rows):
    n, (first, last) = len(unit), rows
    columns = weight_matrix.shape[1] * (1 if neighbor_factors is None else len(neighbor_factors))
    means = np.empty((last - first, columns), dtype=np.float64)
    nearest_index = np.empty(last - first, dtype=np.int64)
    nearest_distance = np.empty(last - first, dtype=np.float64)
    total = 0.0
    per_element = (_NUMPY_BYTES_PER_ELEMENT if neighbor_factors is None
                   else _NUMPY_BYTES_PER_ELEMENT_NEIGHBOR)
    # The budget covers the whole block, all threads' slices together.
    blocks = [(first + a, first + b)
              for a, b in row_blocks(last - first, n * per_element, block_bytes)]
    # Sorting is single-threaded in numpy but releases the GIL: one thread per core, each on
    # its own slice of the block, keeps every core busy.
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for start, stop in tracked(blocks, progress):
            bounds = np.linspace(start, stop, min(n_threads, stop - start) + 1).astype(int)
            jobs = [pool.submit(_profile_block_numpy, unit, a, b, weight_matrix, exclude_self,
                                neighbor_factors) for a, b in zip(bounds, bounds[1:])]
            for a, b, job in zip(bounds - first, bounds[1:] - first, jobs):
                means[a:b], part, (nearest_index[a:b], nearest_distance[a:b]) = job.result()
                total += part
    return ProximityProfile(means, total, nearest_index, nearest_distance)


def _proximity_profile_torch(unit, weight_matrix, block_bytes, progress, device,
                             exclude_self=False, neighbor_factors=None, rows=None):
    torch = exact_torch()
    n = len(unit)
    first, last = rows or (0, n)
    unit_t = torch.from_numpy(unit).to(device)
    weights_t = torch.from_numpy(weight_matrix).to(device)
    factors_t = (None if neighbor_factors is None
                 else torch.from_numpy(np.ascontiguousarray(neighbor_factors)).to(device))
    columns = weight_matrix.shape[1] * (1 if neighbor_factors is None else len(neighbor_factors))
    means = np.empty((last - first, columns), dtype=np.float64)
    nearest_index, nearest_distance = np.full(last - first, -1), np.full(last - first, np.nan)
    total = torch.zeros((), dtype=torch.float64, device=device)
    skip = 1 if exclude_self else 0
    # distances (float32), their sorted copy and sort indices (int64), the float64 copy; with
    # neighbour factors also the gathered factors and their product (float64 each)
    per_element = 4 + 4 + 8 + 8 + (0 if neighbor_factors is None else 16)
    blocks = [(first + a, first + b)
              for a, b in row_blocks(last - first, n * per_element, block_bytes)]
    for start, stop in tracked(blocks, progress):
        out = slice(start - first, stop - first)  # rows of this block in the results
        distances = 1.0 - unit_t[start:stop] @ unit_t.T
        rows = torch.arange(stop - start, device=device)
        # the self-distance, exactly (see cosine_distance_block)
        distances[rows, start + rows] = 0.0
        total += distances.sum(dtype=torch.float64)
        if n > 1:
            distances[rows, start + rows] = float("inf")
            closest = distances.min(dim=1)  # the first of equal minima: the lowest index
            nearest_index[out] = closest.indices.cpu().numpy()
            nearest_distance[out] = closest.values.double().cpu().numpy()
            distances[rows, start + rows] = 0.0
        if exclude_self:
            distances[rows, start + rows] = -float("inf")  # sorts first, then dropped
        ranked, order = torch.sort(distances, dim=1, stable=True)
        ranked, order = ranked[:, skip:].double(), order[:, skip:]
        if factors_t is None:
            means[out] = (ranked @ weights_t).cpu().numpy()
        else:
            means[out] = torch.cat([(ranked * factors[order]) @ weights_t
                                           for factors in factors_t], dim=1).cpu().numpy()
    return ProximityProfile(means, float(total), nearest_index, nearest_distance)


def proximity_profile(vectors, alphas, device="cpu", block_mib=DEFAULT_BLOCK_MIB,
                      progress=None, n_threads=None, exclude_self=False, neighbor_factors=None,
                      rows=None):
    """P_i(alpha) for every row i and alpha, the sum of all n*n cosine distances, and each
    sample's nearest other sample.

    Returns a ``ProximityProfile``; its ``means`` has shape (n, len(alphas)), float64.
    One pass over row blocks: each block of distances is computed, sorted once and reduced
    for every alpha. ``progress`` wraps the list of blocks (for example tqdm).

    The variants of docs/method.md section 8: ``exclude_self`` leaves each row's distance to
    itself out (its nearest other sample gets rank 1; needs n >= 2). ``neighbor_factors``, an
    (S, n) array, weights each distance d(i, j) by factors[s, j], the neighbour's factor, for
    each of S factor sets; ``means`` then has S * len(alphas) columns, set-major.

    ``rows``: ``(start, stop)`` to profile only those rows (against all rows), as one rank of
    several does; the results then hold ``stop - start`` rows and the distance sum is theirs.
    """
    rows = rows or (0, len(vectors))
    unit = unit_rows(vectors)
    weight_matrix = normalised_weight_matrix(len(unit) - (1 if exclude_self else 0), alphas)
    if neighbor_factors is not None:
        neighbor_factors = np.asarray(neighbor_factors, dtype=np.float64).reshape(-1, len(unit))
    block_bytes = block_mib * MIB
    if device == "cpu":
        n_threads = n_threads or cpu_threads()
        return _proximity_profile_numpy(unit, weight_matrix, block_bytes, progress, n_threads,
                                        exclude_self, neighbor_factors, rows)
    return _proximity_profile_torch(unit, weight_matrix, block_bytes, progress, device,
                                    exclude_self, neighbor_factors, rows)


def format_number(value):
    """Shortest text of a grid value: ``0``, ``0.25``, ``1`` (docs/method.md section 4)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def grid_number_text(value, from_command_line=False):
    """A power as the published script wrote it in a column name: its defaults in shortest
    form (``0``, ``0.25``), values from the command line as Python prints a float (``0.0``)."""
    return repr(float(value)) if from_command_line else format_number(value)


def column_name(k, beta, alpha, typed_powers=(False, False)):
    """CSV column of one grid point: ``neighbor_{k}_density_{beta}_distance_{alpha}``.

    ``typed_powers`` says whether the density and the distance powers came from the command line.
    """
    return (f"neighbor_{int(k)}_density_{grid_number_text(beta, typed_powers[0])}"
            f"_distance_{grid_number_text(alpha, typed_powers[1])}")


def column_setting(column):
    """The grid point of a CSV column as text: ``k=10, beta=0.5, alpha=1`` for
    ``neighbor_10_density_0.5_distance_1``."""
    return (column.replace("neighbor_", "k=").replace("_density_", ", beta=")
            .replace("_distance_", ", alpha="))


def density_grid(neighbors, density_powers):
    """The (beta, k) pairs of the grid in column order: beta outer, then k."""
    return [(beta, k) for beta in density_powers for k in neighbors]


def per_sample_grid(proximity_means, mean_sq_by_k, neighbors, density_powers, distance_powers,
                    typed_powers=(False, False), neighbor_density=False):
    """Each sample's novelty at every grid point, ``{column name: (n,) float64}`` in the
    reference's column order; the dataset's NovelSum is the mean of a column.

    ``proximity_means``: from ``proximity_profile``: (n, len(distance_powers)), or with
    ``neighbor_density`` one column per (beta, k) of ``density_grid`` and alpha, already
    weighted by the neighbours' factors (docs/method.md section 8);
    ``mean_sq_by_k``: k -> (n,) mean squared kNN distances, or None without a reference
    (then every density power must be 0, and sigma^0 = 1); ``typed_powers`` as in ``column_name``.
    """
    n_alphas = len(distance_powers)
    novelty = {}
    for s, (beta, k) in enumerate(density_grid(neighbors, density_powers)):
        for a, alpha in enumerate(distance_powers):
            if neighbor_density:
                values = proximity_means[:, s * n_alphas + a]
            else:
                factors = density_factor(mean_sq_by_k[k], beta) if beta else 1.0
                values = factors * proximity_means[:, a]
            novelty[column_name(k, beta, alpha, typed_powers)] = values
    return novelty
