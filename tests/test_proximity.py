"""Rank weights, proximity-weighted means and the NovelSum grid (docs/method.md section 4)."""

import numpy as np
import pytest
from conftest import clustered_vectors
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.metrics.proximity import (
    column_name,
    column_setting,
    format_number,
    per_sample_grid,
    proximity_profile,
)
from utils.numerics.blocks import row_blocks
from utils.numerics.weights import rank_weights


def direct_proximity_means(vectors, alpha):
    """Full matrix, one sort per row: the reference's algorithm, for comparison."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    distances = np.sort(1.0 - unit.astype(np.float64) @ unit.T.astype(np.float64), axis=1)
    weights = rank_weights(len(vectors), alpha)
    return distances @ weights / weights.sum()


def test_rank_weights():
    assert rank_weights(3, 1).tolist() == [1.0, 0.5, 1 / 3]
    assert rank_weights(3, 0).tolist() == [1.0, 1.0, 1.0]


def test_hand_checked_three_points():
    # unit vectors at 0, 90 and 180 degrees: distances 0, 1, 2
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    means, total = proximity_profile(vectors, [0, 1])[:2]
    # sorted rows: [0, 1, 2], [0, 1, 1], [0, 1, 2]
    assert total == pytest.approx(8.0, abs=1e-6)
    np.testing.assert_allclose(means[:, 0], [1.0, 2 / 3, 1.0], atol=1e-7)
    w = np.array([1, 1 / 2, 1 / 3]) / (1 + 1 / 2 + 1 / 3)
    np.testing.assert_allclose(means[:, 1], [w @ [0, 1, 2], w @ [0, 1, 1], w @ [0, 1, 2]],
                               atol=1e-7)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("budget_rows", [1, 7, 120])
def test_blocked_equals_whole(budget_rows, n_threads):
    """The budget is the whole block's working memory (12 bytes per distance), whatever the
    number of threads sharing the block: 7 rows' worth gives blocks of 7 rows."""
    vectors = clustered_vectors(120, 16, seed=3)
    block_mib = budget_rows * 120 * 12 / 2**20
    blocks = []

    def count_blocks(iterable):
        for block in iterable:
            blocks.append(block)
            yield block

    means = proximity_profile(vectors, [0, 1, 2], block_mib=block_mib, progress=count_blocks,
                                 n_threads=n_threads).means
    assert len(blocks) == -(-120 // budget_rows)
    assert max(stop - start for start, stop in blocks) == budget_rows
    for a, alpha in enumerate([0, 1, 2]):
        np.testing.assert_allclose(means[:, a], direct_proximity_means(vectors, alpha),
                                   rtol=1e-6, atol=1e-7)


def test_row_blocks_cover_all_rows_within_budget():
    blocks = list(row_blocks(10, bytes_per_row=100, block_bytes=350))
    assert blocks == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert list(row_blocks(2, bytes_per_row=10**9, block_bytes=1)) == [(0, 1), (1, 2)]


def test_torch_profile_equals_numpy():
    pytest.importorskip("torch")
    from utils.metrics.proximity import _proximity_profile_torch
    from utils.numerics.rows import unit_rows
    from utils.numerics.weights import normalised_weight_matrix

    vectors = clustered_vectors(150, 12, seed=4)
    means, total = proximity_profile(vectors, [0, 0.5, 2])[:2]
    unit = unit_rows(vectors)
    blocks = []
    means_t, total_t = _proximity_profile_torch(unit, normalised_weight_matrix(150, [0, 0.5, 2]),
                                                150 * 24 * 7, lambda b: blocks.extend(b) or b,
                                                "cpu")[:2]
    assert len(blocks) == -(-150 // 7)  # blocks of 7 rows at 24 bytes per distance
    # per row the two BLAS libraries differ by float32 rounding (~1e-7 absolute) ...
    np.testing.assert_allclose(means_t, means, rtol=1e-6, atol=5e-7)
    # ... and NovelSum, the mean over rows, agrees to the relative 1e-6 of docs/method.md section 6
    np.testing.assert_allclose(means_t.mean(axis=0), means.mean(axis=0), rtol=1e-6)
    assert total_t == pytest.approx(total, rel=1e-9)


def test_format_and_column_names():
    assert [format_number(v) for v in [0, 0.0, 0.25, 1.0, 2, 1e-3]] == ["0", "0", "0.25", "1",
                                                                         "2", "0.001"]
    assert column_name(10, 0.5, 1.0) == "neighbor_10_density_0.5_distance_1"
    assert column_setting("neighbor_10_density_0.5_distance_1") == "k=10, beta=0.5, alpha=1"
    assert column_setting("neighbor_7_density_0.75_distance_2.0") == "k=7, beta=0.75, alpha=2.0"


def test_grid_order_beta_outer_then_k_then_alpha():
    means = np.ones((4, 2))
    grid = per_sample_grid(means, {5: np.ones(4), 10: np.ones(4)}, [5, 10], [0, 0.5], [0, 1])
    assert list(grid)[:4] == ["neighbor_5_density_0_distance_0", "neighbor_5_density_0_distance_1",
                              "neighbor_10_density_0_distance_0",
                              "neighbor_10_density_0_distance_1"]
    assert list(grid)[4] == "neighbor_5_density_0.5_distance_0"


def novelsum_value(vectors, alpha, scale=None):
    means, total = proximity_profile(vectors, [alpha])[:2]
    row_scale = np.ones(len(vectors)) if scale is None else scale
    return float(np.mean(row_scale * means[:, 0])), total / len(vectors) ** 2


vector_sets = st.integers(min_value=0, max_value=2**31).map(
    lambda seed: clustered_vectors(40, 6, n_clusters=3, seed=seed))


@settings(max_examples=25, deadline=None)
@given(vector_sets, st.sampled_from([0, 1, 2]), st.randoms(use_true_random=False))
def test_order_of_rows_does_not_matter(vectors, alpha, rnd):
    order = list(range(len(vectors)))
    rnd.shuffle(order)
    assert novelsum_value(vectors[order], alpha)[0] == pytest.approx(
        novelsum_value(vectors, alpha)[0], rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(vector_sets)
def test_alpha_zero_without_density_is_mean_cosine_distance(vectors):
    value, mean_cos = novelsum_value(vectors, 0)
    assert value == pytest.approx(mean_cos, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(vector_sets)
def test_alpha_zero_unchanged_by_duplicating_every_sample(vectors):
    assert novelsum_value(np.vstack([vectors, vectors]), 0)[0] == pytest.approx(
        novelsum_value(vectors, 0)[0], rel=1e-6)


THREE_POINTS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)  # d: 0, 1, 2


@pytest.mark.parametrize("device_path", ["numpy", "torch"])
def test_variants_hand_checked(device_path):
    """docs/method.md section 8 on three points whose distances are 0, 1 and 2."""
    if device_path == "torch":
        pytest.importorskip("torch")
        from utils.metrics.proximity import _proximity_profile_torch
        from utils.numerics.rows import unit_rows
        from utils.numerics.weights import normalised_weight_matrix

        def profile(alphas, exclude_self=False, neighbor_factors=None):
            n_ranked = 3 - (1 if exclude_self else 0)
            factors = None if neighbor_factors is None else np.asarray(neighbor_factors, float)
            return _proximity_profile_torch(unit_rows(THREE_POINTS),
                                            normalised_weight_matrix(n_ranked, alphas), 2**20,
                                            None, "cpu", exclude_self, factors)[:2]
    else:
        def profile(alphas, exclude_self=False, neighbor_factors=None):
            return proximity_profile(THREE_POINTS, alphas, exclude_self=exclude_self,
                                     neighbor_factors=neighbor_factors)[:2]

    # self left out: rows [1, 2], [1, 1], [1, 2] with weights 1, 1/2
    means, total = profile([1], exclude_self=True)
    np.testing.assert_allclose(means[:, 0], [4 / 3, 1.0, 4 / 3], rtol=1e-7)
    assert total == pytest.approx(8.0, abs=1e-6)  # cos_distance keeps its definition
    # neighbour factors 1, 2, 3 by the neighbour's index, plain mean (alpha 0), self kept:
    # row 0 ranks j = 0, 1, 2; row 1 ranks j = 1, 0, 2 (a tie kept in index order); row 2
    # ranks j = 2, 1, 0
    means, _ = profile([0, 1], neighbor_factors=[[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(means[:, 0], [8 / 3, 4 / 3, 4 / 3], rtol=1e-7)
    plain, _ = profile([0, 1])
    np.testing.assert_allclose(means[:, 2:], plain, rtol=1e-7)  # factors of 1: the default
    # both variants: row 0 ranks j = 1, 2 with d = 1, 2 and factors 2, 3
    means, _ = profile([1], exclude_self=True, neighbor_factors=[[1.0, 2.0, 3.0]])
    assert means[0, 0] == pytest.approx((1 * 2 * 1 + 2 * 3 * 0.5) / 1.5, rel=1e-7)


@pytest.mark.parametrize("budget_rows", [1, 7, 60])
def test_variants_blocked_equal_direct(budget_rows):
    vectors = clustered_vectors(60, 12, seed=8)
    factors = np.random.default_rng(2).uniform(0.5, 2.0, size=(2, 60))
    unit = vectors.astype(np.float64) / np.linalg.norm(vectors, axis=1, keepdims=True)
    distances = 1.0 - unit @ unit.T
    np.fill_diagonal(distances, np.inf)  # the self, left out
    order = np.argsort(distances, axis=1, kind="stable")[:, :-1]
    ranked = np.take_along_axis(distances, order, axis=1)
    weights = rank_weights(59, 1.0)
    means = proximity_profile(vectors, [1.0], block_mib=budget_rows * 60 * 36 / 2**20,
                              exclude_self=True, neighbor_factors=factors).means
    for s in range(2):
        direct = (ranked * factors[s][order]) @ weights / weights.sum()
        np.testing.assert_allclose(means[:, s], direct, rtol=1e-5)


@pytest.mark.parametrize("path", ["numpy", "torch"])
def test_nearest_other_sample_with_duplicates_and_blocks(path):
    """Each sample's most similar other sample: a duplicate at distance 0 (the lowest index
    of equals), across row blocks, on both paths; a single sample has none."""
    vectors = clustered_vectors(40, 8, seed=9)
    vectors[31] = vectors[5]
    vectors[17] = vectors[5]
    unit = vectors.astype(np.float64) / np.linalg.norm(vectors, axis=1, keepdims=True)
    distances = 1.0 - unit @ unit.T
    np.fill_diagonal(distances, np.inf)
    if path == "torch":
        pytest.importorskip("torch")
        from utils.metrics.proximity import _proximity_profile_torch
        from utils.numerics.rows import unit_rows
        from utils.numerics.weights import normalised_weight_matrix

        profile = _proximity_profile_torch(unit_rows(vectors), normalised_weight_matrix(40, [1]),
                                           40 * 24 * 3, None, "cpu")
    else:
        profile = proximity_profile(vectors, [1], block_mib=40 * 12 * 3 / 2**20)
    assert profile.nearest_index[5] == 17 and profile.nearest_index[31] == 5
    assert profile.nearest_index[17] == 5
    assert profile.nearest_distance[17] == pytest.approx(0, abs=1e-6)
    others = [i for i in range(40) if i not in (5, 17, 31)]
    np.testing.assert_array_equal(profile.nearest_index[others], distances.argmin(axis=1)[others])
    np.testing.assert_allclose(profile.nearest_distance, distances.min(axis=1), atol=1e-6)
    single = proximity_profile(vectors[:1], [1])
    assert single.nearest_index.tolist() == [-1] and np.isnan(single.nearest_distance[0])
