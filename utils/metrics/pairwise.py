"""Distance-based metrics: distsum_l2, knn_distance, facility_location and radius."""

import math

import numpy as np

from ..errors import InputError
from ..numerics.blocks import DEFAULT_BLOCK_MIB, MIB, row_blocks
from ..numerics.compute import (
    bytes_per_pair,
    pair_blocks,
    resolve_engine,
    threaded,
    to_torch,
)
from ..numerics.rows import as_float32, centred, unit_rows

DEFAULT_KS = (5, 10)


def l2_distance_sums_numpy(block, block_sq, tail, tail_sq):
    """Sums of ||a_i - x_j|| for a block's rows a_i against the rows x_j from the block's
    first row onwards (the block itself first): ``(within the block, after it)``, float64.

    ||a - x||^2 = ||a||^2 + ||x||^2 - 2 a.x in float32, clamped at 0, in place: one
    (block x tail) float32 matrix of working memory. Self-distances are set to exactly 0.
    """
    distances = block @ tail.T
    distances *= -2.0
    distances += block_sq[:, None]
    distances += tail_sq[None, :]
    np.maximum(distances, 0.0, out=distances)
    np.sqrt(distances, out=distances)
    local = np.arange(len(block))
    distances[local, local] = 0.0
    return (float(distances[:, :len(block)].sum(dtype=np.float64)),
            float(distances[:, len(block):].sum(dtype=np.float64)))


def l2_distance_sums_torch(block, block_sq, tail, tail_sq):
    """As ``l2_distance_sums_numpy``, on torch tensors."""
    import torch

    distances = (block @ tail.T).mul_(-2.0).add_(block_sq[:, None]).add_(tail_sq[None, :])
    distances.clamp_(min=0.0).sqrt_()
    local = torch.arange(len(block), device=block.device)
    distances[local, local] = 0.0
    return (float(distances[:, :len(block)].sum(dtype=torch.float64)),
            float(distances[:, len(block):].sum(dtype=torch.float64)))


def distsum_l2(vectors, device="cpu", block_mib=DEFAULT_BLOCK_MIB, engine=None):
    """Mean Euclidean distance over all n x n ordered pairs, diagonal included.

    Parameters
    ----------
    vectors : (n, d) float32 raw vectors.

    Returns
    -------
    float : (1/n^2) sum_i sum_j ||x_i - x_j||. By symmetry only the upper triangle is
        computed: a block of rows i against the rows j >= its first row, the pairs after the
        block counted twice (float32 distances of centred rows, float64 sums).
    """
    engine = resolve_engine(device, engine)
    rows = centred(vectors)
    rows_sq = np.einsum("ij,ij->i", rows, rows)
    n = len(rows)
    total = 0.0
    blocks = pair_blocks(n, n, block_mib, bytes_per_pair(engine))
    if engine == "torch":
        rows, rows_sq = to_torch(rows, device), to_torch(rows_sq, device)
        for start, stop in blocks:
            within, after = l2_distance_sums_torch(rows[start:stop], rows_sq[start:stop],
                                                   rows[start:], rows_sq[start:])
            total += within + 2.0 * after
        return total / (n * n)
    def sums(a, b):  # rows a:b against rows a: (a slice of a block, one per thread)
        return l2_distance_sums_numpy(rows[a:b], rows_sq[a:b], rows[a:], rows_sq[a:])

    for start, stop in blocks:
        for within, after in threaded(sums, start, stop):
            total += within + 2.0 * after
    return total / (n * n)


def nearest_similarities_torch(block, unit, start, k):
    """The k largest cosine similarities of each block row to the *other* rows, descending.

    The row's own column is excluded (set to -inf); duplicates elsewhere are kept. Working
    memory: one (block x n) matrix on the device.
    """
    import torch

    similarities = block @ unit.T
    local = torch.arange(len(block), device=block.device)
    similarities[local, start + local] = -math.inf
    return torch.topk(similarities, k, dim=1, largest=True, sorted=True).values


def nearest_similarities_faiss(index, block, start, k):
    """As ``nearest_similarities_torch``, from a faiss ``IndexFlatIP`` over all unit rows.

    faiss keeps a running top-(k+1) per query while it multiplies, instead of a (block x n)
    matrix partitioned afterwards (about twice as fast on the CPU). The query's own row is
    dropped where it is among the results (a duplicate may outrank it: then the last result
    goes instead), as the density search drops it.
    """
    from ..density.exact_knn import drop_self

    similarities, labels = index.search(np.ascontiguousarray(block), k + 1)
    return drop_self(similarities, labels, np.arange(start, start + len(block)), k)


def mean_knn_distance_sums(similarities, ks):
    """For each k: the sum over rows of the mean of the first k distances max(0, 1 - sim)."""
    distances = np.maximum(1.0 - np.asarray(similarities, dtype=np.float64), 0.0)
    prefix = np.cumsum(distances, axis=1)
    return {k: float(prefix[:, k - 1].sum() / k) for k in ks}


def knn_distance(vectors, ks=DEFAULT_KS, device="cpu", block_mib=DEFAULT_BLOCK_MIB,
                 engine=None):
    """Mean cosine distance to the k nearest other samples, for each k of ``ks``.

    Parameters
    ----------
    vectors : (n, d) float32.
    ks : iterable of int, each 1 <= k < n.

    Returns
    -------
    dict k -> float : (1/n) sum_i (1/k) sum_{j in kNN(i)} max(0, 1 - cos(x_i, x_j)), where
        kNN(i) are the k most similar rows other than row i itself (exact duplicates of x_i
        are other rows, at distance 0).
    """
    engine = resolve_engine(device, engine)
    ks = [int(k) for k in ks]
    n = len(vectors)
    for k in ks:
        if k < 1 or k >= n:
            raise InputError(f"--neighbors {k}: knn_distance needs 1 <= k < the number of "
                             f"samples of the dataset ({n}); lower --neighbors")
    k_max = max(ks)
    unit = unit_rows(vectors)
    if engine == "torch":
        unit = to_torch(unit, device)
    else:
        import faiss

        index = faiss.IndexFlatIP(unit.shape[1])  # faiss uses every core itself
        index.add(unit)
    totals = dict.fromkeys(ks, 0.0)
    for start, stop in pair_blocks(n, n, block_mib, bytes_per_pair(engine)):
        if engine == "torch":
            similarities = nearest_similarities_torch(unit[start:stop], unit, start,
                                                      k_max).cpu().numpy()
        else:
            similarities = nearest_similarities_faiss(index, unit[start:stop], start, k_max)
        for k, value in mean_knn_distance_sums(similarities, ks).items():
            totals[k] += value
    return {k: totals[k] / n for k in ks}


def reference_directions(reference):
    """The reference rows as directions (unit rows), for ``facility_location``; a zero row
    (which the density factor accepts) has no direction and is refused, naming it."""
    zero = ~np.any(np.asarray(reference) != 0, axis=1)
    if zero.any():
        raise InputError(f"--dense_ref_dir: reference row {int(np.argmax(zero))} is a zero "
                         f"vector, which has no direction: facility_location cannot use it")
    return unit_rows(reference)


def facility_location(vectors, reference, device="cpu", block_mib=DEFAULT_BLOCK_MIB,
                      engine=None, ref_unit=None):
    """Mean over reference rows of the largest cosine similarity to any sample.

    Parameters
    ----------
    vectors : (n, d) float32, the dataset.
    reference : (m, d) float32, the reference as loaded (duplicates count).

    Returns
    -------
    float : (1/m) sum_r min(1, max_i cos(r, x_i)), over (reference block x n) blocks of
        similarities (the clamp undoes float32 rounding of a duplicate's cosine, 1 + 1e-7).
        ``ref_unit``: ``reference_directions(reference)``, when already made for another
        dataset.
    """
    engine = resolve_engine(device, engine)
    unit = unit_rows(vectors)
    ref_unit = reference_directions(reference) if ref_unit is None else ref_unit
    if ref_unit.shape[1] != unit.shape[1]:
        raise InputError(f"--dense_ref_dir: reference vectors have dimension "
                         f"{ref_unit.shape[1]}, the dataset {unit.shape[1]}")
    if engine == "torch":
        unit = to_torch(unit, device)
    total = 0.0
    for start, stop in pair_blocks(len(ref_unit), len(unit), block_mib, bytes_per_pair(engine)):
        if engine == "numpy":
            best = (ref_unit[start:stop] @ unit.T).max(axis=1)
        else:
            best = (to_torch(ref_unit[start:stop], device) @ unit.T).amax(dim=1).cpu().numpy()
        total += float(np.minimum(best, 1.0).sum(dtype=np.float64))  # float32 may pass 1
    return total / len(ref_unit)


def column_std(vectors, block_mib=DEFAULT_BLOCK_MIB):
    """Population standard deviation of each column, float64, two passes over row blocks.

    Working memory of a block: its float64 copy and the squared deviations (16 d bytes a row).
    """
    n, d = vectors.shape
    blocks = list(row_blocks(n, 16 * d, block_mib * MIB))
    mean = np.zeros(d, dtype=np.float64)
    for start, stop in blocks:
        mean += vectors[start:stop].sum(axis=0, dtype=np.float64)
    mean /= n
    squares = np.zeros(d, dtype=np.float64)
    for start, stop in blocks:
        squares += np.square(vectors[start:stop].astype(np.float64) - mean).sum(axis=0)
    return np.sqrt(squares / n)


def geometric_mean(values):
    """exp(mean(ln v)); exactly 0 when any value is 0."""
    values = np.asarray(values, dtype=np.float64)
    if not values.all():
        return 0.0
    return float(np.exp(np.log(values).mean()))


def radius(vectors, block_mib=DEFAULT_BLOCK_MIB):
    """Geometric mean over dimensions of the population std of the raw vectors.

    Parameters
    ----------
    vectors : (n, d) float32.

    Returns
    -------
    float : exp((1/d) sum_j ln std_j), std_j = sqrt((1/n) sum_i (x_ij - mean_j)^2); 0 when any
        dimension is constant (std_j = 0). O(n d); numpy on every device.
    """
    return geometric_mean(column_std(as_float32(vectors), block_mib))
