"""Baseline selections (utils/selection/baselines.py) against direct loops on small data."""

import faiss
import numpy as np
import pytest

from utils.errors import InputError, options_named
from utils.numerics.rows import unit_rows
from utils.numerics.compute import bytes_per_pair, pair_blocks
from utils.pipelines.novelselect_outputs import output_stem
from utils.selection import baselines
from utils.selection.selection_engine import first_pick
from synthetic import clustered_vectors, with_duplicates

ENGINES = ["numpy", "torch"]  # "torch" runs the GPU code path on CPU tensors


@pytest.fixture(scope="module")
def pool():
    vectors = clustered_vectors(400, 16, n_clusters=8, seed=11, spread=0.5)
    return with_duplicates(vectors, {3: [40, 41], 100: [7]})


# Direct loops


def direct_kcenter(unit, k, first):
    unit = np.asarray(unit, dtype=np.float64)
    picks = [first]
    while len(picks) < k:
        distances = 1.0 - unit @ unit[picks].T  # every distance again, every step
        nearest = distances.min(axis=1)
        nearest[picks] = -np.inf
        picks.append(int(np.argmax(nearest)))
    return picks


def direct_kmeans(vectors, k, seed):
    km = faiss.Kmeans(vectors.shape[1], k, niter=20, seed=seed)
    km.train(vectors)
    x = vectors.astype(np.float64)
    picks = []
    for centroid in km.centroids.astype(np.float64):
        distances = ((x - centroid) ** 2).sum(axis=1)
        distances[picks] = np.inf
        picks.append(int(np.argmin(distances)))
    return picks


def direct_repr_filter(unit, k, max_similarity, quality, seed):
    n = len(unit)
    order = (np.random.RandomState(seed).permutation(n) if quality is None
             else sorted(range(n), key=lambda i: -quality[i]))
    kept = []
    for i in order:
        if all(float(unit[i] @ unit[j]) <= max_similarity for j in kept):
            kept.append(int(i))
            if len(kept) == k:
                return kept
    return None


# random


def test_random_selection():
    assert baselines.random_selection(50, 7, seed=3) == \
        np.random.RandomState(3).choice(50, 7, replace=False).tolist()
    assert sorted(baselines.random_selection(5, 5, seed=0)) == [0, 1, 2, 3, 4]


# K-Center-Greedy


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", [0, 42])
def test_kcenter_equals_direct_loop(pool, engine, seed):
    unit = unit_rows(pool)
    first = first_pick(len(unit), seed)
    got = baselines.kcenter_selection(unit, 60, first, engine=engine)
    assert got == direct_kcenter(unit, 60, first)
    assert got[0] == first and len(set(got)) == 60


@pytest.mark.parametrize("engine", ENGINES)
def test_kcenter_ties_go_to_the_lowest_index(engine):
    """From e1 (row 0), the axes e2, e3, e4 (rows 1-3) tie at distance 1 and go in index
    order, then e1's duplicate (row 4, distance 0); -e1 (row 5, distance 2) beats them all."""
    unit = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]],
                    dtype=np.float32)
    assert baselines.kcenter_selection(unit, 5, 0, engine=engine) == [0, 1, 2, 3, 4]
    with_opposite = np.vstack([unit, [[-1, 0, 0, 0]]]).astype(np.float32)
    assert baselines.kcenter_selection(with_opposite, 3, 0, engine=engine) == [0, 5, 1]


# k-means


@pytest.mark.parametrize("budget", [0.001, 256])
def test_kmeans_equals_direct_loop(pool, budget):
    got = baselines.kmeans_selection(pool, 25, seed=5, block_mib=budget)
    assert got == direct_kmeans(pool, 25, 5)
    assert len(set(got)) == 25


def test_kmeans_blocks_are_several(pool):
    assert len(pair_blocks(25, len(pool), 0.001, bytes_per_pair("numpy"))) > 1


@pytest.mark.slow
def test_kmeans_torch_engine_equals_numpy(pool):
    assert baselines.kmeans_selection(pool, 25, seed=5, engine="torch", block_mib=0.001) == \
        baselines.kmeans_selection(pool, 25, seed=5)


@pytest.mark.parametrize("engine", ENGINES)
def test_nearest_unpicked_ties_and_collisions(engine):
    """Row 0: columns 1 and 2 tie, 1 wins. Row 1: its best, 1, is taken, so 2 (tied with 3).
    Row 2: 0 was picked in an earlier block; its best remaining is 3."""
    scores = np.array([[5.0, 1.0, 1.0, 2.0],
                       [5.0, 0.5, 1.0, 1.0],
                       [0.0, 9.0, 9.0, 3.0]], dtype=np.float32)
    picks = [0]
    if engine == "torch":
        import torch

        scores = torch.from_numpy(scores)
    baselines.nearest_unpicked(scores, picks, engine)
    assert picks == [0, 1, 2, 3]


# DEITA's representation filter


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("budget", [0.002, 256])
@pytest.mark.parametrize("with_scores", [False, True])
def test_repr_filter_equals_direct_loop(pool, engine, budget, with_scores):
    unit = unit_rows(pool)
    quality = (np.random.RandomState(1).randint(0, 5, len(unit)).astype(float)
               if with_scores else None)
    got = baselines.repr_filter_selection(unit, 30, 0.8, quality=quality, seed=7,
                                          block_mib=budget, engine=engine)
    assert got == direct_repr_filter(unit, 30, 0.8, quality, 7)


def test_repr_filter_blocks_are_several(pool):
    assert baselines.filter_block_size(30, pool.shape[1], 0.002) < len(pool)


def test_repr_filter_quality_order_is_stable():
    """Equal scores are visited in index order; a duplicate of a kept row is never kept."""
    unit = np.eye(4, dtype=np.float32)[[0, 1, 1, 2, 3]]
    quality = [1.0, 2.0, 2.0, 2.0, 0.5]
    assert baselines.repr_filter_selection(unit, 4, 0.9, quality=quality) == [1, 3, 0, 4]


def test_repr_filter_runs_out():
    unit = unit_rows(clustered_vectors(200, 8, n_clusters=2, seed=2, spread=0.05))
    with pytest.raises(InputError) as error:
        baselines.repr_filter_selection(unit, 50, 0.9, seed=1)
    order = np.random.RandomState(1).permutation(200)  # the direct loop, to the end
    kept = []
    for i in order:
        if all(float(unit[i] @ unit[j]) <= 0.9 for j in kept):
            kept.append(i)
    assert 0 < len(kept) < 50
    assert str(error.value) == (
        f"--max_similarity 0.9: the representation filter kept only {len(kept)} of the 200 "
        f"pool samples, fewer than --k 50; raise --max_similarity or lower --k")


def test_repr_filter_bad_scores():
    unit = np.eye(3, dtype=np.float32)
    with pytest.raises(InputError, match=r"^--quality_scores: 2 scores for a pool of 3 samples$"):
        baselines.repr_filter_selection(unit, 2, quality=[1.0, 2.0])


@pytest.mark.parametrize("call", [
    lambda: baselines.random_selection(3, 4),
    lambda: baselines.kcenter_selection(np.eye(3, dtype=np.float32), 4, 0),
    lambda: baselines.kmeans_selection(np.eye(3, dtype=np.float32), 4),
    lambda: baselines.repr_filter_selection(np.eye(3, dtype=np.float32), 0),
])
def test_pick_count_errors(call):
    with pytest.raises(InputError, match=r"^k=-?\d+: must be between 1 and the pool size \(3\)$"):
        call()
    with options_named({"k": "--k"}), pytest.raises(
            InputError, match=r"^--k -?\d+: must be between 1 and the pool size \(3\)$"):
        call()


def test_method_registry():
    assert baselines.METHOD_NAMES[0] == "novelselect"
    assert output_stem("kcenter", 80, 0.5, 1.0) == "kcenter_80"
    assert output_stem("novelselect", 80, 0.5, 1) == "novelselect_80_dense_0.5_dist_1.0"
    assert baselines.USES_QUALITY_SCORES == {"novelselect", "repr_filter"}
    assert baselines.USES_DENSITY_REFERENCE == {"novelselect"}


@pytest.mark.parametrize("method", ["kcenter", "kmeans"])
@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.slow
def test_exact_duplicates_tie_to_the_lowest_index(method, engine):
    """Twins at several offsets, in pools of many widths (BLAS rounds a row's product by
    where it sits): whenever a duplicate pair is picked, its lower index comes first."""
    if engine == "torch":
        pytest.importorskip("torch")
    pairs = [(3, 150), (3, 201), (40, 77), (9, 120), (11, 190)]
    rng = np.random.default_rng(1)
    for dim in range(37, 87, 2):
        vectors = rng.standard_normal((203, dim)).astype(np.float32)
        for source, twin in pairs:
            vectors[twin] = vectors[source]
        if method == "kcenter":
            picks = baselines.kcenter_selection(unit_rows(vectors), 120, 0, engine=engine)
        else:
            picks = baselines.kmeans_selection(vectors, 120, 42, engine=engine)
        for source, twin in pairs:
            if twin in picks:
                assert source in picks and picks.index(source) < picks.index(twin), (dim, twin)
