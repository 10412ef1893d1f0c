"""The ``--metrics`` registry: names, their columns, their input checks, one call for all.

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

Memory: every pairwise quantity is computed in row blocks (``numerics.blocks.row_blocks``) whose
whole working memory stays within ``block_mib``; no n x n matrix is built. Values are
float32, sums float64.
"""

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..numerics.blocks import DEFAULT_BLOCK_MIB
from ..numerics.kmeans import kmeans_centroids
from ..numerics.rows import as_float32
from .clusters import DEFAULT_N_CLUSTERS, cluster_inertia, partition_entropy
from .pairwise import (
    DEFAULT_KS,
    distsum_l2,
    facility_location,
    knn_distance,
    radius,
    reference_directions,
)
from .vendi import vendi


@dataclass(frozen=True)
class MetricInputs:
    """What a metric is computed from: one dataset, the reference (or None), the grid of
    ``--neighbors`` and ``--n_clusters``, the device options, and the cache kept across the
    datasets measured against one reference."""

    vectors: np.ndarray
    reference: np.ndarray
    ks: tuple
    n_clusters: int
    options: dict
    cache: dict


def _distsum_l2(inputs):
    return {"distsum_l2": distsum_l2(inputs.vectors, **inputs.options)}


def _knn_distance(inputs):
    return {f"knn_distance_{k}": value
            for k, value in knn_distance(inputs.vectors, inputs.ks, **inputs.options).items()}


def _vendi(inputs):
    return {"vendi": vendi(inputs.vectors, **inputs.options)}


def _facility_location(inputs):
    if "reference_unit" not in inputs.cache:
        inputs.cache["reference_unit"] = reference_directions(inputs.reference)
    return {"facility_location": facility_location(inputs.vectors, inputs.reference,
                                                   **inputs.options,
                                                   ref_unit=inputs.cache["reference_unit"])}


def _radius(inputs):
    return {"radius": radius(inputs.vectors, block_mib=inputs.options["block_mib"])}


def _cluster_inertia(inputs):
    return {"cluster_inertia": cluster_inertia(inputs.vectors, inputs.n_clusters,
                                               **inputs.options)}


def _partition_entropy(inputs):
    key = ("centroids", inputs.n_clusters)
    if key not in inputs.cache:
        inputs.cache[key] = kmeans_centroids(inputs.reference, inputs.n_clusters,
                                             **inputs.options)
    return {"partition_entropy": partition_entropy(inputs.vectors, inputs.reference,
                                                   inputs.n_clusters, **inputs.options,
                                                   centroids=inputs.cache[key])}


# name -> the function giving its columns, in the order of the CSV's columns
METRICS = {"distsum_l2": _distsum_l2, "knn_distance": _knn_distance, "vendi": _vendi,
           "facility_location": _facility_location, "radius": _radius,
           "cluster_inertia": _cluster_inertia, "partition_entropy": _partition_entropy}
METRIC_NAMES = tuple(METRICS)
REFERENCE_METRICS = frozenset({"facility_location", "partition_entropy"})
CLUSTER_METRICS = frozenset({"cluster_inertia", "partition_entropy"})



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


def fitting_cluster_count(names, n_clusters, dataset_sizes, n_reference=None):
    """The largest cluster count up to ``n_clusters`` that the cluster metrics of ``names``
    allow on every dataset (``dataset_sizes``) and the reference: what a default count is
    lowered to on small data. cluster_inertia keeps two samples per cluster on average (half
    the smallest dataset): with one per cluster every dataset's inertia would be 0."""
    limit = n_clusters
    if "cluster_inertia" in names:
        limit = min(limit, *(size // 2 for size in dataset_sizes))
    if "partition_entropy" in names and n_reference is not None:
        limit = min(limit, n_reference)
    return max(limit, 1)


def compute_metrics(names, vectors, reference=None, ks=DEFAULT_KS, n_clusters=DEFAULT_N_CLUSTERS,
                    device="cpu", block_mib=DEFAULT_BLOCK_MIB, engine=None, cache=None):
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
    inputs = MetricInputs(vectors, reference, tuple(ks), n_clusters,
                          {"device": device, "block_mib": block_mib, "engine": engine},
                          {} if cache is None else cache)
    results = OrderedDict()
    for name in names:
        results.update(METRICS[name](inputs))
    return results
