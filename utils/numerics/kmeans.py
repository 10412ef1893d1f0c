"""k-means as faiss computes it (faiss on the CPU, the same steps in torch on a GPU), shared by
the cluster metrics and the kmeans baseline."""

import numpy as np

from ..errors import InputError
from .blocks import DEFAULT_BLOCK_MIB, MIB, row_blocks
from .compute import TORCH_PAIR_BYTES, pair_blocks, resolve_engine, to_torch
from .rows import as_float32

KMEANS_NITER = 20


KMEANS_SEED = 42


FAISS_MAX_POINTS_PER_CENTROID = 256  # faiss's default: larger training sets are subsampled


FAISS_SPLIT_SEED = 1234  # faiss's fixed seed for splitting empty clusters


FAISS_SPLIT_EPS = 1 / 1024  # faiss's perturbation of a split centroid


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


def nearest_rows_torch(queries, rows, block_mib=DEFAULT_BLOCK_MIB):
    """(squared L2 distance, index) of each query's nearest row, ties to the lowest index.

    ``queries`` (q, d) and ``rows`` (r, d) are torch tensors on one device; blocks of queries
    keep the (block x r) distance matrix (and torch's float64 headroom) within the budget.
    """
    import torch

    rows_sq = (rows * rows).sum(dim=1)
    best_d = torch.empty(len(queries), dtype=torch.float32, device=queries.device)
    best_i = torch.empty(len(queries), dtype=torch.int64, device=queries.device)
    for start, stop in pair_blocks(len(queries), len(rows), block_mib, TORCH_PAIR_BYTES):
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
                 block_mib=DEFAULT_BLOCK_MIB):
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
        _, labels = nearest_rows_torch(points, to_torch(centroids, device), block_mib)
        sums = torch.zeros((n_clusters, points.shape[1]), dtype=torch.float64, device=device)
        for a, b in row_blocks(n, 8 * points.shape[1], block_mib * MIB):
            sums.index_add_(0, labels[a:b], points[a:b].double())
        counts = torch.bincount(labels, minlength=n_clusters).cpu().numpy().astype(np.float32)
        sums = sums.cpu().numpy()
        centroids = np.zeros_like(centroids)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        split_empty_clusters(centroids, counts, n)
    return centroids


def kmeans_centroids(vectors, n_clusters, seed=KMEANS_SEED, niter=KMEANS_NITER, device="cpu",
                     block_mib=DEFAULT_BLOCK_MIB, engine=None):
    """Centroids of faiss ``Kmeans(d, C, niter, seed)``: faiss on the CPU, its torch twin else."""
    vectors = as_float32(vectors)
    if len(vectors) < n_clusters:
        raise InputError(f"--n_clusters {n_clusters}: k-means needs at least as many rows as "
                         f"clusters ({len(vectors)} given); lower --n_clusters")
    if resolve_engine(device, engine) == "numpy":
        return kmeans_faiss(vectors, n_clusters, seed, niter)
    return kmeans_torch(vectors, n_clusters, seed, niter, device, block_mib)


def nearest_centroids(vectors, centroids, device="cpu", block_mib=DEFAULT_BLOCK_MIB,
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
                                           block_mib)
    return distances.cpu().numpy(), labels.cpu().numpy()
