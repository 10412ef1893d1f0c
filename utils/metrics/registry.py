"""The ``--metrics`` registry: names, their columns, their input checks, one call for all."""

from collections import OrderedDict

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
    reference_unit_rows,
)
from .vendi import vendi

METRIC_NAMES = ("distsum_l2", "knn_distance", "vendi", "facility_location", "radius",
                "cluster_inertia", "partition_entropy")


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
    cache = {} if cache is None else cache
    options = {"device": device, "block_mib": block_mib, "engine": engine}
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
            results[name] = radius(vectors, block_mib=block_mib)
        elif name == "cluster_inertia":
            results[name] = cluster_inertia(vectors, n_clusters, **options)
        elif name == "partition_entropy":
            key = ("centroids", n_clusters)
            if key not in cache:
                cache[key] = kmeans_centroids(reference, n_clusters, device=device,
                                              block_mib=block_mib, engine=engine)
            results[name] = partition_entropy(vectors, reference, n_clusters, **options,
                                              centroids=cache[key])
    return results
