"""Cluster metrics: k-means inertia and the partition entropy against a reference."""

import numpy as np

from ..errors import InputError
from ..numerics.blocks import DEFAULT_BLOCK_MIB
from ..numerics.kmeans import kmeans_centroids, nearest_centroids
from ..numerics.rows import as_float32

DEFAULT_N_CLUSTERS = 100


def more_distinct_rows_than(vectors, count):
    """Whether ``vectors`` holds more than ``count`` distinct rows; it stops reading as soon as
    it has seen that many, so data without duplicates costs ``count + 1`` rows."""
    seen = set()
    for row in vectors:
        seen.add(row.tobytes())
        if len(seen) > count:
            return True
    return False


def cluster_inertia(vectors, n_clusters=DEFAULT_N_CLUSTERS, device="cpu",
                    block_mib=DEFAULT_BLOCK_MIB, engine=None):
    """Mean squared L2 distance of each sample to its nearest k-means centroid.

    Parameters
    ----------
    vectors : (n, d) float32 raw vectors, n >= n_clusters.

    Returns
    -------
    float : (1/n) sum_i min_c ||x_i - mu_c||^2, mu the centroids of faiss
        ``Kmeans(d, C, niter=20, seed=42)`` trained on ``vectors``; NaN when ``vectors`` has
        at most C distinct rows: every row is then a centroid and the inertia 0, whatever
        the data (docs/cli.md, baseline metrics).
    """
    if not more_distinct_rows_than(vectors, n_clusters):
        return float("nan")
    centroids = kmeans_centroids(vectors, n_clusters, device=device, block_mib=block_mib,
                                 engine=engine)
    distances, _ = nearest_centroids(vectors, centroids, device, block_mib, engine)
    return float(distances.sum(dtype=np.float64) / len(distances))


def entropy_bits(labels, n_clusters):
    """-sum_c p_c log2 p_c of the shares p_c of each label among ``labels`` (empty c: 0)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_clusters)
    shares = counts[counts > 0] / len(labels)
    return float(-(shares * np.log2(shares)).sum()) + 0.0  # one cluster: 0.0, never -0.0


def partition_entropy(vectors, reference, n_clusters=DEFAULT_N_CLUSTERS, device="cpu",
                      block_mib=DEFAULT_BLOCK_MIB, engine=None, centroids=None):
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
                                     block_mib=block_mib, engine=engine)
    _, labels = nearest_centroids(vectors, centroids, device, block_mib, engine)
    return entropy_bits(labels, n_clusters)
