"""Baseline diversity metrics beside NovelSum (issue 8), on the same embeddings.

Each metric is one pure function of float32 arrays (rows = samples) that returns a float; the
CSV column of ``novelsum.py --metrics`` has the metric's name (``knn_distance`` gives one column
``knn_distance_{k}`` per k of ``--neighbors``). Cosine quantities use the rows scaled to unit
length; "raw" means the vectors as loaded.

- ``distsum_l2``: mean Euclidean distance over all n x n ordered pairs of raw vectors, the
  diagonal (distance 0) included, as ``cos_distance`` is for cosine:
  (1/n^2) sum_i sum_j ||x_i - x_j||. Source: the "DistSum" family of the paper (Yang et al.
  2025, arXiv 2502.17184, Table 1), with the L2 distance.
- ``knn_distance``: for each k, the mean over samples of the mean cosine distance to its k
  nearest *other* samples: (1/n) sum_i (1/k) sum_{j in kNN(i), j != i} (1 - cos(x_i, x_j)).
  Only the sample's own row is left out; its exact duplicates are other samples, at distance
  1 - cos = 0 up to float32 rounding (distances are clamped at 0). Needs 1 <= k < n.
  Source: the kNN-distance measures of the paper's Table 1 (after Stasaski et al. 2020).
- ``vendi``: the Vendi score with the cosine-similarity kernel K_ij = cos(x_i, x_j):
  exp(-sum_l lambda_l ln lambda_l) over the eigenvalues lambda of K/n (those > 0). K/n has the
  nonzero eigenvalues of the d x d dual U^T U / n (U the unit rows), which is used when d < n;
  float64 throughout (rows normalised in float64). Source: Friedman and Dieng 2023, "The Vendi
  Score" (TMLR), and the ``vendi-score`` package's ``score_dual``, which it equals.
- ``facility_location`` (needs a reference): the mean over the reference rows, as loaded
  (duplicates included), of the largest cosine similarity to any sample of the dataset:
  (1/|R|) sum_{r in R} max_i cos(r, x_i). Source: the facility-location function of submodular
  data selection (Krause and Golovin 2014; as used in the paper's Table 1).
- ``radius``: the geometric mean over the d dimensions of the population standard deviation
  of the raw vectors: exp((1/d) sum_j ln std_j). A dimension with std 0 makes the product,
  hence the radius, exactly 0 (no dimension is skipped). Source: Lai et al. 2020, "Diversity,
  Density, and Homogeneity" (the paper's "Radius").
- ``cluster_inertia``: Faiss ``Kmeans(d, C, niter=20, seed=42)`` trained on the dataset's raw
  vectors; the mean squared L2 distance of each sample to its nearest centroid. Needs n >= C.
  Source: the k-means inertia of the paper's Table 1 (Du and Black 2019).
- ``partition_entropy`` (needs a reference): Faiss ``Kmeans(d, C, niter=20, seed=42)`` trained
  on the reference as loaded (no dedup); each sample assigned to its nearest centroid; the
  entropy of the cluster shares in bits, -sum_c p_c log2 p_c. Needs |R| >= C. Source: the
  reference project's ``entropy.py`` (the paper's "Partition Entropy"); reproduces its
  golden outputs to a relative 1e-9.

Engines: on the CPU, numpy (BLAS) and faiss; on a GPU (``device="cuda:N"``), torch on that
device for the pairwise metrics and the k-means (``engine="torch"`` runs the torch code on the
CPU too, which the tests use). The GPU k-means follows faiss's algorithm step by step (the same
subsample, initial centroids and empty-cluster splits from faiss's own random generators) but
sums in another order, so it may end in different centroids than faiss on the CPU when
assignments are near ties. ``radius`` is O(n d) and always runs in numpy.

Memory: every pairwise quantity is computed in row blocks (``utils.blocks.row_blocks``) whose
whole working memory stays within ``budget_mib``; no n x n matrix is built. Values are
float32, sums float64.
"""

import math
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .blocks import DEFAULT_BUDGET_MIB, MIB, row_blocks
from .errors import InputError
from .proximity import unit_rows

METRIC_NAMES = ("distsum_l2", "knn_distance", "vendi", "facility_location", "radius",
                "cluster_inertia", "partition_entropy")
REFERENCE_METRICS = frozenset({"facility_location", "partition_entropy"})
CLUSTER_METRICS = frozenset({"cluster_inertia", "partition_entropy"})
DEFAULT_KS = (5, 10)
DEFAULT_N_CLUSTERS = 100
KMEANS_NITER = 20
KMEANS_SEED = 42
FAISS_MAX_POINTS_PER_CENTROID = 256  # faiss's default: larger training sets are subsampled
FAISS_SPLIT_SEED = 1234  # faiss's fixed seed for splitting empty clusters
FAISS_SPLIT_EPS = 1 / 1024  # faiss's perturbation of a split centroid

# Working bytes per (row, row) pair of a block: numpy keeps one float32 matrix and works in
# place; torch may also make a float64 copy for its float64 sum.
NUMPY_PAIR_BYTES = 4
TORCH_PAIR_BYTES = 4 + 8


# ---------------------------------------------------------------------------------------------
# Registry


def parse_metrics(text):
    """Metric names from ``--metrics``: ``"a,b"``, ``"a b"`` or ``"all"``, in METRIC_NAMES order.

    Returns a tuple of names without repeats; an empty text gives ``()``.
    """
    words = [w for w in str(text).replace(",", " ").split() if w]
    if "all" in words:
        return METRIC_NAMES
    unknown = [w for w in words if w not in METRIC_NAMES]
    if unknown:
        raise InputError(f"--metrics {unknown[0]}: unknown metric; choose from "
                         f"{', '.join(METRIC_NAMES)} or all")
    return tuple(name for name in METRIC_NAMES if name in words)


def metric_columns(names, ks=DEFAULT_KS):
    """CSV column names of the metrics ``names``, in order (``knn_distance_{k}`` per k)."""
    columns = []
    for name in names:
        columns.extend(f"knn_distance_{k}" for k in ks) if name == "knn_distance" \
            else columns.append(name)
    return columns


def needs_reference(names):
    """The metrics of ``names`` that need a reference set (``--dense_ref_dir``), in order."""
    return tuple(name for name in names if name in REFERENCE_METRICS)


def check_metric_inputs(names, n_samples, n_reference=None, ks=DEFAULT_KS,
                        n_clusters=DEFAULT_N_CLUSTERS):
    """Refuse, before any work, metrics that cannot be computed on these sizes.

    ``n_reference`` is the reference's row count, or None without ``--dense_ref_dir``.
    """
    missing = needs_reference(names)
    if missing and n_reference is None:
        raise InputError(f"--metrics {missing[0]} needs a reference set: give --dense_ref_dir "
                         f"or leave {missing[0]} out of --metrics")
    if "knn_distance" in names:
        for k in ks:
            if k < 1 or k >= n_samples:
                raise InputError(f"--neighbors {k}: knn_distance needs 1 <= k < the number of "
                                 f"samples of the dataset ({n_samples}); lower --neighbors")
    if n_clusters < 1 and CLUSTER_METRICS & set(names):
        raise InputError(f"--n_clusters {n_clusters}: must be at least 1")
    if "cluster_inertia" in names and n_samples < n_clusters:
        raise InputError(f"--n_clusters {n_clusters}: cluster_inertia needs at least as many "
                         f"samples as clusters, and the dataset has {n_samples}; lower "
                         f"--n_clusters")
    if "partition_entropy" in names and n_reference < n_clusters:
        raise InputError(f"--n_clusters {n_clusters}: partition_entropy needs at least as many "
                         f"reference rows as clusters, and --dense_ref_dir has {n_reference}; "
                         f"lower --n_clusters")


def compute_metrics(names, vectors, reference=None, ks=DEFAULT_KS, n_clusters=DEFAULT_N_CLUSTERS,
                    device="cpu", budget_mib=DEFAULT_BUDGET_MIB, engine=None, cache=None):
    """Every metric of ``names`` on one dataset: an OrderedDict column -> float.

    ``vectors`` (n, d) and ``reference`` (m, d) or None; the columns are
    ``metric_columns(names, ks)``. Sizes are checked first (``check_metric_inputs``).
    ``cache``: a dict kept across datasets measured against the same reference, so that the
    reference's unit rows and k-means centroids are made once, not per dataset.
    """
    vectors = as_float32(vectors)
    reference = None if reference is None else as_float32(reference)
    check_metric_inputs(names, len(vectors), None if reference is None else len(reference), ks,
                        n_clusters)
    if reference is not None and needs_reference(names) and \
            reference.shape[1] != vectors.shape[1]:
        raise InputError(f"vectors have {vectors.shape[1]} dimensions but the reference "
                         f"(--dense_ref_dir) has {reference.shape[1]}")
    cache = {} if cache is None else cache
    options = {"device": device, "budget_mib": budget_mib, "engine": engine}
    results = OrderedDict()
    for name in names:
        if name == "knn_distance":
            for k, value in knn_distance(vectors, ks, **options).items():
                results[f"knn_distance_{k}"] = value
        elif name == "distsum_l2":
            results[name] = distsum_l2(vectors, **options)
        elif name == "vendi":
            results[name] = vendi(vectors, **options)
        elif name == "facility_location":
            if "reference_unit" not in cache:
                cache["reference_unit"] = reference_unit_rows(reference)
            results[name] = facility_location(vectors, reference, **options,
                                              ref_unit=cache["reference_unit"])
        elif name == "radius":
            results[name] = radius(vectors, budget_mib=budget_mib)
        elif name == "cluster_inertia":
            results[name] = cluster_inertia(vectors, n_clusters, **options)
        elif name == "partition_entropy":
            key = ("centroids", n_clusters)
            if key not in cache:
                cache[key] = kmeans_centroids(reference, n_clusters, device=device,
                                              budget_mib=budget_mib, engine=engine)
            results[name] = partition_entropy(vectors, reference, n_clusters, **options,
                                              centroids=cache[key])
    return results


# ---------------------------------------------------------------------------------------------
# Shared steps


def as_float32(vectors):
    """A C-contiguous float32 view or copy of a 2-D array (the one dtype boundary)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {vectors.shape}")
    return vectors


def resolve_engine(device, engine=None):
    """``"numpy"`` on the CPU and ``"torch"`` on a GPU unless ``engine`` says otherwise."""
    if engine is None:
        return "numpy" if device == "cpu" else "torch"
    if engine not in ("numpy", "torch"):
        raise ValueError(f"unknown engine {engine!r}")
    if engine == "numpy" and device != "cpu":
        raise ValueError(f"the numpy engine runs on the CPU only, not on {device}")
    return engine


def unit_vectors(vectors):
    """Rows scaled to unit L2 norm (float32); zero rows were refused by the loader."""
    return unit_rows(as_float32(vectors))


def centred(vectors):
    """Rows minus their mean (float64 mean, float32 result).

    L2 distances do not change, and the float32 expansion ||a||^2 + ||b||^2 - 2 a.b loses far
    less precision on centred rows.
    """
    return as_float32(vectors - vectors.mean(axis=0, dtype=np.float64))


def to_torch(array, device):
    """A numpy array as a torch tensor on ``device`` (float32 matrix products exact: no TF32)."""
    from .device import exact_torch

    torch = exact_torch()
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def pair_blocks(n_rows, n_columns, budget_mib, pair_bytes, row_bytes=0):
    """Row blocks of a (n_rows x n_columns) pairwise quantity within ``budget_mib``."""
    return list(row_blocks(n_rows, n_columns * pair_bytes + row_bytes, budget_mib * MIB))


def pair_budget(engine):
    return NUMPY_PAIR_BYTES if engine == "numpy" else TORCH_PAIR_BYTES


# ---------------------------------------------------------------------------------------------
# distsum_l2


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


def threaded(function, start, stop, n_threads=None):
    """``function(a, b)`` on ``n_threads`` slices of rows ``start:stop`` at once; the results
    in slice order. numpy's BLAS and ufuncs release the GIL, so the slices share the cores
    (as in ``utils.proximity``), and their working memory adds up to the block's."""
    n_threads = min(n_threads or os.cpu_count() or 1, stop - start)
    if n_threads <= 1:
        return [function(start, stop)]
    bounds = np.linspace(start, stop, n_threads + 1).astype(int)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        jobs = [pool.submit(function, a, b) for a, b in zip(bounds, bounds[1:])]
        return [job.result() for job in jobs]


def distsum_l2(vectors, device="cpu", budget_mib=DEFAULT_BUDGET_MIB, engine=None):
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
    blocks = pair_blocks(n, n, budget_mib, pair_budget(engine))
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


# ---------------------------------------------------------------------------------------------
# knn_distance


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
    from .density import drop_self

    similarities, labels = index.search(np.ascontiguousarray(block), k + 1)
    return drop_self(similarities, labels, np.arange(start, start + len(block)), k)


def mean_knn_distance_sums(similarities, ks):
    """For each k: the sum over rows of the mean of the first k distances max(0, 1 - sim)."""
    distances = np.maximum(1.0 - np.asarray(similarities, dtype=np.float64), 0.0)
    prefix = np.cumsum(distances, axis=1)
    return {k: float(prefix[:, k - 1].sum() / k) for k in ks}


def knn_distance(vectors, ks=DEFAULT_KS, device="cpu", budget_mib=DEFAULT_BUDGET_MIB,
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
    unit = unit_vectors(vectors)
    if engine == "torch":
        unit = to_torch(unit, device)
    else:
        import faiss

        index = faiss.IndexFlatIP(unit.shape[1])  # faiss uses every core itself
        index.add(unit)
    totals = dict.fromkeys(ks, 0.0)
    for start, stop in pair_blocks(n, n, budget_mib, pair_budget(engine)):
        if engine == "torch":
            similarities = nearest_similarities_torch(unit[start:stop], unit, start,
                                                      k_max).cpu().numpy()
        else:
            similarities = nearest_similarities_faiss(index, unit[start:stop], start, k_max)
        for k, value in mean_knn_distance_sums(similarities, ks).items():
            totals[k] += value
    return {k: totals[k] / n for k in ks}


# ---------------------------------------------------------------------------------------------
# vendi


def unit_rows_float64(rows):
    """Rows as float64, scaled to unit L2 norm in float64 (numpy or torch)."""
    rows = rows.astype(np.float64) if isinstance(rows, np.ndarray) else rows.double()
    norms = (rows * rows).sum(axis=1) ** 0.5
    return rows / norms[:, None]


def dual_gram(vectors, device="cpu", budget_mib=DEFAULT_BUDGET_MIB, engine="numpy"):
    """U^T U, U the unit rows, in float64 (normalised in float64), as a (d, d) numpy array.

    Summed over row blocks; working memory of a block: its float64 unit rows and their
    squares (16 d bytes a row) beside the float32 rows.
    """
    n, d = vectors.shape
    blocks = list(row_blocks(n, 20 * d, budget_mib * MIB))
    if engine == "numpy":
        gram = np.zeros((d, d), dtype=np.float64)
        for start, stop in blocks:
            block = unit_rows_float64(vectors[start:stop])
            gram += block.T @ block
        return gram
    import torch

    gram = torch.zeros((d, d), dtype=torch.float64, device=device)
    for start, stop in blocks:
        block = unit_rows_float64(to_torch(vectors[start:stop], device))
        gram += block.T @ block
    return gram.cpu().numpy()


def primal_gram(vectors):
    """U U^T in float64, (n, n): used only when n <= d, so never larger than the dual."""
    unit = unit_rows_float64(vectors)
    return unit @ unit.T


def entropy_from_eigenvalues(eigenvalues):
    """-sum_l lambda_l ln lambda_l over the eigenvalues > 0 (natural log, as vendi-score)."""
    positive = np.asarray(eigenvalues, dtype=np.float64)
    positive = positive[positive > 0]
    return float(-(positive * np.log(positive)).sum())


def vendi(vectors, device="cpu", budget_mib=DEFAULT_BUDGET_MIB, engine=None):
    """Vendi score with the cosine-similarity kernel.

    Parameters
    ----------
    vectors : (n, d) float32.

    Returns
    -------
    float : exp(-sum_l lambda_l ln lambda_l), lambda the eigenvalues of K/n with
        K_ij = cos(x_i, x_j); through the (d, d) dual U^T U / n when d < n (same nonzero
        eigenvalues), float64. Ranges from 1 (all rows parallel) to min(n, d).
    """
    engine = resolve_engine(device, engine)
    vectors = as_float32(vectors)
    n, d = vectors.shape
    gram = dual_gram(vectors, device, budget_mib, engine) if d < n else primal_gram(vectors)
    return float(np.exp(entropy_from_eigenvalues(np.linalg.eigvalsh(gram / n))))


# ---------------------------------------------------------------------------------------------
# facility_location


def reference_unit_rows(reference):
    """The reference rows scaled to unit length, for ``facility_location``; a zero row (which
    the density factor accepts) has no direction and is refused, naming it."""
    reference = as_float32(reference)
    zero = ~np.any(reference != 0, axis=1)
    if zero.any():
        raise InputError(f"--dense_ref_dir: reference row {int(np.argmax(zero))} is a zero "
                         f"vector, which has no direction: facility_location cannot use it")
    return unit_vectors(reference)


def facility_location(vectors, reference, device="cpu", budget_mib=DEFAULT_BUDGET_MIB,
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
        ``ref_unit``: ``reference_unit_rows(reference)``, when already made for another
        dataset.
    """
    engine = resolve_engine(device, engine)
    unit = unit_vectors(vectors)
    ref_unit = reference_unit_rows(reference) if ref_unit is None else ref_unit
    if ref_unit.shape[1] != unit.shape[1]:
        raise InputError(f"--dense_ref_dir: reference vectors have dimension "
                         f"{ref_unit.shape[1]}, the dataset {unit.shape[1]}")
    if engine == "torch":
        unit = to_torch(unit, device)
    total = 0.0
    for start, stop in pair_blocks(len(ref_unit), len(unit), budget_mib, pair_budget(engine)):
        if engine == "numpy":
            best = (ref_unit[start:stop] @ unit.T).max(axis=1)
        else:
            best = (to_torch(ref_unit[start:stop], device) @ unit.T).amax(dim=1).cpu().numpy()
        total += float(np.minimum(best, 1.0).sum(dtype=np.float64))  # float32 may pass 1
    return total / len(ref_unit)


# ---------------------------------------------------------------------------------------------
# radius


def column_std(vectors, budget_mib=DEFAULT_BUDGET_MIB):
    """Population standard deviation of each column, float64, two passes over row blocks.

    Working memory of a block: its float64 copy and the squared deviations (16 d bytes a row).
    """
    n, d = vectors.shape
    blocks = list(row_blocks(n, 16 * d, budget_mib * MIB))
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


def radius(vectors, budget_mib=DEFAULT_BUDGET_MIB):
    """Geometric mean over dimensions of the population std of the raw vectors.

    Parameters
    ----------
    vectors : (n, d) float32.

    Returns
    -------
    float : exp((1/d) sum_j ln std_j), std_j = sqrt((1/n) sum_i (x_ij - mean_j)^2); 0 when any
        dimension is constant (std_j = 0). O(n d); numpy on every device.
    """
    return geometric_mean(column_std(as_float32(vectors), budget_mib))


# ---------------------------------------------------------------------------------------------
# k-means (faiss on the CPU; the same algorithm in torch on a GPU)


def faiss_permutation(n, seed):
    """faiss's ``rand_perm(n, seed)``: the permutation its k-means draws with that seed."""
    import faiss

    perm = np.empty(n, dtype=np.int32)
    faiss.rand_perm(faiss.swig_ptr(perm), n, int(seed))
    return perm.astype(np.int64)


def kmeans_faiss(vectors, n_clusters, seed=KMEANS_SEED, niter=KMEANS_NITER):
    """Centroids (C, d) of faiss ``Kmeans(d, C, niter=niter, seed=seed)`` trained on ``vectors``."""
    import faiss

    # min_points_per_centroid only decides when faiss prints "please provide at least ...
    # training points" from C++ (stderr, past --quiet); the training itself is unchanged.
    kmeans = faiss.Kmeans(vectors.shape[1], n_clusters, niter=niter, seed=seed,
                          min_points_per_centroid=1)
    kmeans.train(vectors)
    return kmeans.centroids


def nearest_rows_torch(queries, rows, budget_mib=DEFAULT_BUDGET_MIB):
    """(squared L2 distance, index) of each query's nearest row, ties to the lowest index.

    ``queries`` (q, d) and ``rows`` (r, d) are torch tensors on one device; blocks of queries
    keep the (block x r) distance matrix (and torch's float64 headroom) within the budget.
    """
    import torch

    rows_sq = (rows * rows).sum(dim=1)
    best_d = torch.empty(len(queries), dtype=torch.float32, device=queries.device)
    best_i = torch.empty(len(queries), dtype=torch.int64, device=queries.device)
    for start, stop in pair_blocks(len(queries), len(rows), budget_mib, TORCH_PAIR_BYTES):
        block = queries[start:stop]
        scores = (block @ rows.T).mul_(-2.0).add_(rows_sq[None, :])
        values, labels = scores.min(dim=1)
        best_d[start:stop] = (values + (block * block).sum(dim=1)).clamp_(min=0.0)
        best_i[start:stop] = labels
    return best_d, best_i


def split_empty_clusters(centroids, counts, n_points):
    """faiss's ``split_clusters``: each empty cluster takes a copy of a large one, both nudged.

    ``centroids`` (C, d) float32 and ``counts`` (C,) float32 numpy arrays, changed in place;
    the cluster to split is drawn with faiss's ``RandomGenerator(1234)``, with probability
    (size - 1) / (n - C), and the pair is moved apart by a relative 1/1024.
    """
    import faiss

    k = len(counts)
    rng = faiss.RandomGenerator(FAISS_SPLIT_SEED)
    up = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1 + FAISS_SPLIT_EPS,
                  1 - FAISS_SPLIT_EPS).astype(np.float32)
    down = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1 - FAISS_SPLIT_EPS,
                    1 + FAISS_SPLIT_EPS).astype(np.float32)
    for ci in np.flatnonzero(counts == 0):
        cj = 0
        while True:
            p = np.float32((float(counts[cj]) - 1.0) / np.float32(n_points - k))
            if np.float32(rng.rand_float()) < p:
                break
            cj = (cj + 1) % k
        centroids[ci] = centroids[cj] * up
        centroids[cj] *= down
        counts[ci] = counts[cj] / 2
        counts[cj] -= counts[ci]


def kmeans_torch(vectors, n_clusters, seed=KMEANS_SEED, niter=KMEANS_NITER, device="cpu",
                 budget_mib=DEFAULT_BUDGET_MIB):
    """faiss's k-means (``Clustering::train``) step by step in torch, centroids (C, d) numpy.

    Training set: a faiss ``rand_perm(n, seed)`` subsample of 256 C rows when n > 256 C.
    Start: the rows ``rand_perm(n', seed + 1)[:C]``. Each of ``niter`` iterations assigns every
    row to its nearest centroid, moves each centroid to the mean of its rows (float64 sums)
    and splits large clusters into empty ones as faiss does.
    """
    import torch

    n = len(vectors)
    if n > n_clusters * FAISS_MAX_POINTS_PER_CENTROID:
        keep = faiss_permutation(n, seed)[:n_clusters * FAISS_MAX_POINTS_PER_CENTROID]
        vectors = vectors[keep]
        n = len(vectors)
    if n == n_clusters:  # faiss's corner case: the rows are the centroids
        return np.array(vectors, dtype=np.float32)
    centroids = np.array(vectors[faiss_permutation(n, seed + 1)[:n_clusters]], dtype=np.float32)
    points = to_torch(vectors, device)
    for _ in range(niter):
        _, labels = nearest_rows_torch(points, to_torch(centroids, device), budget_mib)
        sums = torch.zeros((n_clusters, points.shape[1]), dtype=torch.float64, device=device)
        for a, b in row_blocks(n, 8 * points.shape[1], budget_mib * MIB):
            sums.index_add_(0, labels[a:b], points[a:b].double())
        counts = torch.bincount(labels, minlength=n_clusters).cpu().numpy().astype(np.float32)
        sums = sums.cpu().numpy()
        centroids = np.zeros_like(centroids)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        split_empty_clusters(centroids, counts, n)
    return centroids


def kmeans_centroids(vectors, n_clusters, seed=KMEANS_SEED, niter=KMEANS_NITER, device="cpu",
                     budget_mib=DEFAULT_BUDGET_MIB, engine=None):
    """Centroids of faiss ``Kmeans(d, C, niter, seed)``: faiss on the CPU, its torch twin else."""
    vectors = as_float32(vectors)
    if len(vectors) < n_clusters:
        raise InputError(f"--n_clusters {n_clusters}: k-means needs at least as many rows as "
                         f"clusters ({len(vectors)} given); lower --n_clusters")
    if resolve_engine(device, engine) == "numpy":
        return kmeans_faiss(vectors, n_clusters, seed, niter)
    return kmeans_torch(vectors, n_clusters, seed, niter, device, budget_mib)


def nearest_centroids(vectors, centroids, device="cpu", budget_mib=DEFAULT_BUDGET_MIB,
                      engine=None):
    """(squared L2 distance, label) of each row's nearest centroid, as numpy (n,) arrays.

    numpy engine: a faiss ``IndexFlatL2`` over the centroids (as faiss's ``Kmeans.index``);
    torch engine: ``nearest_rows_torch``.
    """
    vectors = as_float32(vectors)
    if resolve_engine(device, engine) == "numpy":
        import faiss

        index = faiss.IndexFlatL2(centroids.shape[1])
        index.add(as_float32(centroids))
        distances, labels = index.search(vectors, 1)
        return distances[:, 0], labels[:, 0]
    distances, labels = nearest_rows_torch(to_torch(vectors, device), to_torch(centroids, device),
                                           budget_mib)
    return distances.cpu().numpy(), labels.cpu().numpy()


def cluster_inertia(vectors, n_clusters=DEFAULT_N_CLUSTERS, device="cpu",
                    budget_mib=DEFAULT_BUDGET_MIB, engine=None):
    """Mean squared L2 distance of each sample to its nearest k-means centroid.

    Parameters
    ----------
    vectors : (n, d) float32 raw vectors, n >= n_clusters.

    Returns
    -------
    float : (1/n) sum_i min_c ||x_i - mu_c||^2, mu the centroids of faiss
        ``Kmeans(d, C, niter=20, seed=42)`` trained on ``vectors``.
    """
    centroids = kmeans_centroids(vectors, n_clusters, device=device, budget_mib=budget_mib,
                                 engine=engine)
    distances, _ = nearest_centroids(vectors, centroids, device, budget_mib, engine)
    return float(distances.sum(dtype=np.float64) / len(distances))


def entropy_bits(labels, n_clusters):
    """-sum_c p_c log2 p_c of the shares p_c of each label among ``labels`` (empty c: 0)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_clusters)
    shares = counts[counts > 0] / len(labels)
    return float(-(shares * np.log2(shares)).sum())


def partition_entropy(vectors, reference, n_clusters=DEFAULT_N_CLUSTERS, device="cpu",
                      budget_mib=DEFAULT_BUDGET_MIB, engine=None, centroids=None):
    """Entropy, in bits, of the dataset's shares of the reference's k-means clusters.

    Parameters
    ----------
    vectors : (n, d) float32, the dataset.
    reference : (m, d) float32, the reference as loaded (no dedup), m >= n_clusters.

    Returns
    -------
    float : -sum_c p_c log2 p_c, p_c the share of samples whose nearest centroid (L2) is c,
        the centroids those of faiss ``Kmeans(d, C, niter=20, seed=42)`` trained on
        ``reference``. Between 0 and log2 C. ``centroids``: those centroids, when already
        trained for another dataset.
    """
    if centroids is None:
        reference = as_float32(reference)
        if len(reference) < n_clusters:
            raise InputError(f"--n_clusters {n_clusters}: partition_entropy needs at least as "
                             f"many reference rows as clusters, and --dense_ref_dir has "
                             f"{len(reference)}; lower --n_clusters")
        centroids = kmeans_centroids(reference, n_clusters, device=device,
                                     budget_mib=budget_mib, engine=engine)
    _, labels = nearest_centroids(vectors, centroids, device, budget_mib, engine)
    return entropy_bits(labels, n_clusters)
