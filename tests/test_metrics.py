"""Baseline diversity metrics (utils/metrics/) against direct definitions on small data, the
vendi-score package, and the partition-entropy golden case."""

import json
import math
from pathlib import Path

import faiss
import numpy as np
import pytest

from utils.errors import InputError
from utils.io.vectors import load_vectors
from utils.metrics.clusters import cluster_inertia, entropy_bits, partition_entropy
from utils.metrics.pairwise import distsum_l2, facility_location, knn_distance, radius
from utils.metrics.registry import (
    METRIC_NAMES,
    compute_metrics,
    fitting_cluster_count,
    metric_columns,
    needs_reference,
    parse_metrics,
)
from utils.metrics.vendi import vendi
from utils.numerics.blocks import MIB, row_blocks
from utils.numerics.compute import NUMPY_PAIR_BYTES, TORCH_PAIR_BYTES, pair_blocks
from utils.numerics.kmeans import kmeans_centroids, split_empty_clusters
from synthetic import clustered_vectors, with_duplicates

GOLDEN = Path(__file__).parent / "golden" / "partition_entropy"
ENGINES = ["numpy", "torch"]  # "torch" runs the GPU code path on CPU tensors
SMALL_BUDGETS = [0.002, 0.03]  # MiB: a few rows per block at n = 240


@pytest.fixture(scope="module")
def data():
    """240 x 12 clustered rows with exact duplicates, offset from the origin."""
    vectors = clustered_vectors(240, 12, n_clusters=6, seed=3, spread=0.4) + 2.0
    return with_duplicates(vectors, {0: [17, 230], 5: [6]})


@pytest.fixture(scope="module")
def reference():
    return clustered_vectors(90, 12, n_clusters=6, seed=4, spread=0.5) + 2.0


def unit64(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# Direct definitions: full matrices, float64.

def direct_distsum_l2(x):
    x = np.asarray(x, dtype=np.float64)
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)).mean()


def direct_knn_distance(x, k):
    u = unit64(x)
    distances = 1.0 - u @ u.T
    np.fill_diagonal(distances, np.inf)
    return np.maximum(np.sort(distances, axis=1)[:, :k], 0).mean()


def direct_vendi(x):
    u = unit64(x)
    eigenvalues = np.linalg.eigvalsh(u @ u.T / len(u))
    p = eigenvalues[eigenvalues > 0]
    return np.exp(-(p * np.log(p)).sum())


def direct_facility_location(x, ref):
    return (unit64(ref) @ unit64(x).T).max(axis=1).mean()


def direct_radius(x):
    return np.exp(np.log(np.asarray(x, dtype=np.float64).std(axis=0)).mean())


def direct_inertia(x, centroids):
    x = np.asarray(x, dtype=np.float64)
    return ((x[:, None, :] - centroids[None, :, :].astype(np.float64)) ** 2).sum(2).min(1).mean()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("budget", SMALL_BUDGETS + [256])
def test_distsum_l2(data, engine, budget):
    assert distsum_l2(data, block_mib=budget, engine=engine) == pytest.approx(
        direct_distsum_l2(data), rel=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("budget", SMALL_BUDGETS + [256])
def test_knn_distance(data, engine, budget):
    got = knn_distance(data, [1, 5, 10], block_mib=budget, engine=engine)
    assert list(got) == [1, 5, 10]
    for k, value in got.items():
        assert value == pytest.approx(direct_knn_distance(data, k), rel=1e-5, abs=1e-7)


def test_knn_distance_counts_duplicates_as_neighbours():
    """Row 0 and row 1 are duplicates: each is the other's nearest neighbour, at distance 0."""
    x = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    # rows 0, 1: nearest other at 0; row 2: at 1. Mean = 1/3.
    assert knn_distance(x, [1])[1] == pytest.approx(1 / 3, abs=1e-7)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("budget", [0.001, 256])
def test_vendi_dual_equals_direct_and_package(data, engine, budget):
    vendi_package = pytest.importorskip(
        "vendi_score.vendi", reason="vendi-score (pip install vendi-score) is the reference")
    got = vendi(data, block_mib=budget, engine=engine)
    assert got == pytest.approx(vendi_package.score_dual(data.astype(np.float64)), rel=1e-9)
    assert got == pytest.approx(direct_vendi(data), rel=1e-9)


def test_vendi_primal_when_dimension_exceeds_samples():
    vendi_package = pytest.importorskip(
        "vendi_score.vendi", reason="vendi-score (pip install vendi-score) is the reference")
    x = clustered_vectors(20, 64, n_clusters=3, seed=5)
    assert vendi(x) == pytest.approx(vendi_package.score_dual(x.astype(np.float64)),
                                             rel=1e-9)
    assert vendi(np.ones((5, 3), np.float32)) == pytest.approx(1.0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("budget", SMALL_BUDGETS + [256])
def test_facility_location(data, reference, engine, budget):
    got = facility_location(data, reference, block_mib=budget, engine=engine)
    assert got == pytest.approx(direct_facility_location(data, reference), rel=1e-6)


def test_facility_location_of_a_reference_inside_the_dataset_is_one(data):
    assert facility_location(data, data[:30]) == pytest.approx(1.0, abs=1e-7)
    assert facility_location(data, data[:30]) <= 1.0


@pytest.mark.parametrize("budget", [0.001, 256])
def test_radius(data, budget):
    assert radius(data, block_mib=budget) == pytest.approx(direct_radius(data),
                                                                    rel=1e-9)


def test_radius_is_zero_with_a_constant_dimension(data):
    constant = data.copy()
    constant[:, 3] = 7.0
    assert radius(constant) == 0.0


def test_blocked_runs_use_several_blocks(data):
    """The small budgets above really split the work (else blocked == whole proves nothing)."""
    n = len(data)
    for budget in SMALL_BUDGETS:
        for pair_bytes in (NUMPY_PAIR_BYTES, TORCH_PAIR_BYTES):
            assert len(pair_blocks(n, n, budget, pair_bytes)) > 1
    assert len(list(row_blocks(n, 20 * data.shape[1], 0.001 * MIB))) > 1
    assert len(list(row_blocks(n, 16 * data.shape[1], 0.001 * MIB))) > 1


@pytest.mark.parametrize("engine", ENGINES)
def test_cluster_inertia(data, engine):
    km = faiss.Kmeans(data.shape[1], 8, niter=20, seed=42)
    km.train(data)
    got = cluster_inertia(data, 8, engine=engine)
    assert got == pytest.approx(direct_inertia(data, km.centroids), rel=1e-5)


def test_kmeans_torch_follows_faiss(data):
    """The GPU k-means (here on CPU tensors) ends where faiss ends on well-separated data, with
    and without faiss's subsample (n > 256 C)."""
    for x, clusters in ((data, 6), (clustered_vectors(3000, 8, n_clusters=4, seed=9), 4)):
        faiss_centroids = kmeans_centroids(x, clusters)
        torch_centroids = kmeans_centroids(x, clusters, engine="torch")
        np.testing.assert_allclose(torch_centroids, faiss_centroids, atol=1e-4)


def test_split_empty_clusters_as_faiss():
    """An empty cluster takes a nudged copy of a cluster drawn with faiss's generator."""
    centroids = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    counts = np.array([5.0, 5.0, 0.0], dtype=np.float32)
    split_empty_clusters(centroids, counts, 10)
    donor = 0 if centroids[0, 0] != 1.0 else 1
    original = [[1.0, 2.0], [3.0, 4.0]][donor]
    eps = 1 / 1024
    np.testing.assert_allclose(centroids[2], [original[0] * (1 + eps), original[1] * (1 - eps)],
                               rtol=1e-6)
    np.testing.assert_allclose(centroids[donor], [original[0] * (1 - eps),
                                                  original[1] * (1 + eps)], rtol=1e-6)
    assert counts[2] == 2.5 and counts[donor] == 2.5


def golden_cases():
    return json.loads((GOLDEN / "expected.json").read_text())


@pytest.fixture(scope="module")
def golden_reference():
    return load_vectors(GOLDEN / "reference").vectors


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: f"{c['query']}-{c['n_clusters']}")
def test_partition_entropy_golden(golden_reference, case, engine):
    queries = load_vectors(GOLDEN / case["query"]).vectors
    got = partition_entropy(queries, golden_reference, case["n_clusters"], engine=engine)
    assert got == pytest.approx(case["entropy_bits"], rel=1e-9)


def test_entropy_bits():
    assert entropy_bits([0, 0, 1, 1], 4) == pytest.approx(1.0)
    assert entropy_bits([2, 2, 2], 4) == 0.0
    assert math.copysign(1.0, entropy_bits([2, 2, 2], 4)) == 1.0  # never -0.0
    assert entropy_bits([0, 1, 2, 3], 4) == pytest.approx(2.0)


# Registry and errors


@pytest.mark.parametrize("text, names", [
    ("vendi,radius", ("vendi", "radius")),
    ("radius vendi", ("vendi", "radius")),
    ("all", METRIC_NAMES),
    ("knn_distance, knn_distance", ("knn_distance",)),
    ("", ()),
])
def test_parse_metrics(text, names):
    assert parse_metrics(text) == names


def test_parse_metrics_unknown():
    with pytest.raises(InputError, match=r"^--metrics entropy: unknown metric; choose from "
                                         r"distsum_l2, knn_distance, .* or all$"):
        parse_metrics("vendi,entropy")


def test_metric_columns_and_reference_needs():
    assert metric_columns(METRIC_NAMES, [5, 10]) == [
        "distsum_l2", "knn_distance_5", "knn_distance_10", "vendi", "facility_location",
        "radius", "cluster_inertia", "partition_entropy"]
    assert needs_reference(METRIC_NAMES) == ("facility_location",
                                                             "partition_entropy")


def test_compute_metrics_all(data, reference):
    got = compute_metrics(METRIC_NAMES, data, reference, ks=(3, 7), n_clusters=5)
    assert list(got) == metric_columns(METRIC_NAMES, (3, 7))
    assert got["distsum_l2"] == pytest.approx(direct_distsum_l2(data), rel=1e-6)
    assert got["knn_distance_7"] == pytest.approx(direct_knn_distance(data, 7), rel=1e-5)
    assert got["facility_location"] == pytest.approx(direct_facility_location(data, reference),
                                                     rel=1e-6)
    assert 0 < got["partition_entropy"] <= np.log2(5) + 1e-12
    torch_run = compute_metrics(METRIC_NAMES, data, reference, ks=(3, 7),
                                        n_clusters=5, engine="torch")
    for column, value in got.items():
        assert torch_run[column] == pytest.approx(value, rel=1e-5), column


@pytest.mark.parametrize("names, kwargs, message", [
    (("vendi", "partition_entropy"), {}, "--metrics partition_entropy needs a reference set: "
     "give --dense_ref_dir or leave partition_entropy out of --metrics"),
    (("knn_distance",), {"ks": (5, 240)}, "--neighbors 240: knn_distance needs 1 <= k < the "
     "number of samples of the dataset (240); lower --neighbors"),
    (("cluster_inertia",), {"n_clusters": 241}, "--n_clusters 241: cluster_inertia needs at "
     "least as many samples as clusters, and the dataset has 240; lower --n_clusters"),
    (("partition_entropy",), {"n_clusters": 91, "reference": True}, "--n_clusters 91: "
     "partition_entropy needs at least as many reference rows as clusters, and "
     "--dense_ref_dir has 90; lower --n_clusters"),
])
def test_compute_metrics_errors(data, reference, names, kwargs, message):
    kwargs = dict(kwargs)
    ref = reference if kwargs.pop("reference", False) else None
    with pytest.raises(InputError) as error:
        compute_metrics(names, data, ref, **kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize("names, sizes, n_reference, expected", [
    (METRIC_NAMES, [80, 120], 500, 40),  # two samples per cluster in the smallest dataset
    (("partition_entropy",), [80], 60, 60),  # the reference bounds partition_entropy
    (("vendi",), [5], None, 100),  # no cluster metric: nothing to lower
    (METRIC_NAMES, [300, 400], 1000, 100),  # room for the default
])
def test_a_default_cluster_count_is_lowered_to_what_small_data_allows(names, sizes, n_reference,
                                                                      expected, data, reference):
    fitted = fitting_cluster_count(names, 100, sizes, n_reference)
    assert fitted == expected
    if names == METRIC_NAMES and sizes[0] == 80:  # and then every metric computes
        got = compute_metrics(names, data[:80], reference, n_clusters=fitted)
        assert all(np.isfinite(value) for value in got.values())
