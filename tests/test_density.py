"""kNN and density factor (docs/method.md section 3), on cases small enough to check by hand."""

import numpy as np
import pytest
from conftest import clustered_vectors
from test_selection import duplicate_pool

from utils.density.dedup import DistinctQueries, rows_in_reference, unique_rows
from utils.density.exact_knn import drop_self
from utils.density.factor import DensityReference, density_factor, mean_sq_distance_by_k
from utils.density.flat_index import (
    MERGE_BYTES_PER_RESULT,
    PAIR_BYTES,
    TorchFlatIndex,
    flat_index,
    merge_topk,
)
from utils.errors import InputError
from synthetic import with_duplicates

TINY_BLOCK_MIB = 2 / 1024  # 2 KiB: many query and reference blocks on small sets


def recording(seen):
    """A progress wrapper that records the items it is given (the blocks of a computation)."""
    def wrap(items):
        seen.extend(items)
        return items
    return wrap

LINE = np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32)


def test_member_query_leaves_itself_out():
    reference = DensityReference(LINE)
    # row 1.0: neighbours 0.0 (d^2 = 1) and 3.0 (d^2 = 4) once itself is left out
    means = reference.mean_sq_distances(np.array([[1.0]], dtype=np.float32), [1, 2])
    assert means[1].tolist() == [1.0]
    assert means[2].tolist() == [2.5]


def test_outside_query_keeps_its_true_nearest_neighbour():
    reference = DensityReference(LINE)
    # 2.5 is not in the reference: nearest are 3.0 (0.25) then 1.0 (2.25); the published
    # script would have dropped 3.0
    means = reference.mean_sq_distances(np.array([[2.5]], dtype=np.float32), [1, 2])
    assert means[1].tolist() == [0.25]
    assert means[2].tolist() == [1.25]


def test_duplicates_in_reference_are_kept_once():
    reference = DensityReference(np.array([[0.0], [0.0], [2.0], [2.0], [5.0]],
                                          dtype=np.float32))
    assert len(reference) == 3
    means = reference.mean_sq_distances(np.array([[0.0]], dtype=np.float32), [2])
    assert means[2].tolist() == [(4.0 + 25.0) / 2]


def test_negative_zero_equals_zero_row():
    rows, lookup = unique_rows(np.array([[0.0, 1.0], [-0.0, 1.0]], dtype=np.float32))
    assert len(rows) == 1
    assert rows_in_reference(np.array([[-0.0, 1.0]], dtype=np.float32), rows, lookup)[0] == 0


def test_rows_alike_in_the_sampled_columns_are_told_apart():
    # 100 columns, of which 32 are sampled for the cheap key: rows that differ only in an
    # unsampled column share a key, and duplicates among them must still be found exactly
    base = np.ones((6, 100), dtype=np.float32)
    base[:, 1] = np.arange(6)  # column 1 is not among the sampled ones
    vectors = np.vstack([base, base[[4, 0]], base[:1] * -1.0])
    rows, lookup = unique_rows(vectors)
    np.testing.assert_array_equal(rows, np.vstack([base, base[:1] * -1.0]))
    queries = np.vstack([base[[5, 0]], base[:1] * 2.0, vectors[-1:]])
    assert rows_in_reference(queries, rows, lookup).tolist() == [5, 0, -1, 6]


def test_unique_rows_keeps_first_occurrences_in_order():
    rng = np.random.default_rng(7)
    distinct = rng.normal(size=(40, 8)).astype(np.float32)
    order = rng.integers(0, 40, 200)
    rows, lookup = unique_rows(distinct[order])
    first = sorted(np.unique(order, return_index=True)[1])
    np.testing.assert_array_equal(rows, distinct[order][first])
    found = rows_in_reference(distinct, rows, lookup)
    for i, j in enumerate(found):
        assert (j == -1) == (i not in order)
        if j >= 0:
            np.testing.assert_array_equal(rows[j], distinct[i])


def test_drop_self_by_identity_not_position():
    sq = np.array([[0.0, 0.0, 1.0], [0.0, 0.5, 2.0]])
    labels = np.array([[4, 2, 3], [7, 8, 9]])  # query 0 is row 2, tied with row 4 at distance 0
    kept = drop_self(sq, labels, np.array([2, -1]), 2)
    assert kept.tolist() == [[0.0, 1.0], [0.0, 0.5]]


def test_mean_by_k_uses_prefixes():
    means = mean_sq_distance_by_k(np.array([[1.0, 2.0, 6.0]], dtype=np.float32), [1, 3])
    assert means[1].tolist() == [1.0] and means[3].tolist() == [3.0]


def test_density_factor_formula():
    assert density_factor([4.0], 0.5)[0] == pytest.approx(1 / np.sqrt(4.0 + 1e-9), rel=1e-15)
    assert density_factor([4.0], 0)[0] == 1.0


@pytest.mark.parametrize("k", [0, 4, 5])
def test_neighbors_must_be_below_distinct_reference_size(k):
    reference = DensityReference(np.vstack([LINE, LINE[:1]]), source="ref/")
    with pytest.raises(InputError, match=f"neighbors={k}: .* ref/ \\(4\\)"):
        reference.check_neighbors([k])


def test_torch_search_equals_faiss():
    pytest.importorskip("torch")
    reference = clustered_vectors(700, 24, seed=1)
    queries = np.vstack([reference[:50], clustered_vectors(30, 24, seed=2)])
    by_faiss = DensityReference(reference, backend="faiss").mean_sq_distances(queries, [1, 5, 10])
    by_torch = DensityReference(reference, backend="torch").mean_sq_distances(queries, [1, 5, 10])
    for k in [1, 5, 10]:
        np.testing.assert_allclose(by_torch[k], by_faiss[k], rtol=1e-5)
    _faiss_d, faiss_i = flat_index(reference, backend="faiss").search(queries, 11)
    _torch_d, torch_i = flat_index(reference, backend="torch").search(queries, 11)
    assert (torch_i == faiss_i).mean() > 0.99  # labels may swap only at near-ties


def test_torch_index_in_small_blocks_equals_faiss():
    pytest.importorskip("torch")
    reference = clustered_vectors(300, 16, seed=3)
    queries = clustered_vectors(40, 16, seed=4)
    index = TorchFlatIndex(reference, block_mib=TINY_BLOCK_MIB)
    # 2 KiB: square blocks of 16 x 16 pairs (8 bytes each), so 19 reference blocks; a query
    # row then costs 16 x 8 + its 64-byte vector + 11 x 48 bytes of candidates: 2 per block
    ref_blocks, query_blocks = index.reference_blocks(11), index.query_blocks(40, 11)
    assert len(ref_blocks) == 19 and ref_blocks[0] == (0, 16) and ref_blocks[-1] == (288, 300)
    assert len(query_blocks) == 20
    per_query = PAIR_BYTES * 16 + 4 * 16 + MERGE_BYTES_PER_RESULT * 11
    assert all((stop - start) * per_query <= 2048 for start, stop in query_blocks)
    torch_d, torch_i = index.search(queries, 11)
    faiss_d, faiss_i = flat_index(reference, backend="faiss").search(queries, 11)
    np.testing.assert_allclose(torch_d, faiss_d, rtol=1e-5, atol=1e-6)
    assert (torch_i == faiss_i).mean() > 0.99


def test_reference_blocks_hold_at_least_the_results_asked():
    pytest.importorskip("torch")
    index = TorchFlatIndex(clustered_vectors(100, 8, seed=3), block_mib=TINY_BLOCK_MIB)
    assert index.reference_blocks(40)[:2] == [(0, 40), (40, 80)]
    whole = TorchFlatIndex(clustered_vectors(100, 8, seed=3))
    assert whole.reference_blocks(5) == [(0, 100)] and len(whole.query_blocks(5000, 5)) == 1


def test_density_budget_reaches_the_torch_index():
    pytest.importorskip("torch")
    reference = clustered_vectors(200, 16, seed=8)
    blocked = DensityReference(reference, backend="torch", block_mib=TINY_BLOCK_MIB)
    assert len(blocked.index().reference_blocks(6)) > 1
    assert len(blocked.index().query_blocks(200, 6)) > 1
    by_faiss = DensityReference(reference).mean_sq_distances(reference, [5])[5]
    np.testing.assert_allclose(blocked.mean_sq_distances(reference, [5])[5], by_faiss,
                               rtol=1e-5)


def test_density_in_query_chunks_builds_one_index():
    reference = clustered_vectors(500, 16, seed=5)
    queries = np.vstack([reference[:30], clustered_vectors(30, 16, seed=6)])
    density = DensityReference(reference)
    whole = density.mean_sq_distances(queries, [3, 7])
    index = density.index()
    chunks = []
    chunked = density.mean_sq_distances(queries, [3, 7], recording(chunks), chunk_rows=7)
    assert chunks == [(start, min(60, start + 7)) for start in range(0, 60, 7)]  # 9 chunks
    assert density.index() is index
    for k in (3, 7):
        np.testing.assert_array_equal(chunked[k], whole[k])


def test_distinct_queries_are_searched_once():
    reference = np.arange(10, dtype=np.float32)[:, None]
    queries = np.array([[4.0], [2.5], [4.0], [9.0], [2.5], [-0.0], [0.0]], dtype=np.float32)
    rows, lookup = unique_rows(reference)
    distinct = DistinctQueries(queries, rows, lookup)
    assert len(distinct) == 4  # members 0, 4 and 9, and 2.5
    assert distinct.which.tolist() == [1, 3, 1, 2, 3, 0, 0]
    found, self_rows = distinct.rows(1, 4)
    assert found[:, 0].tolist() == [4.0, 9.0, 2.5] and self_rows.tolist() == [4, 9, -1]


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.slow
def test_duplicate_queries_get_bitwise_equal_density(tmp_path, backend):
    """A pool of 2,400 x 384 in three JSON shards with rows copied to odd offsets in other
    shards (tests/test_selection.py): each copy's mean kNN distance equals its source's, bit
    for bit, whether the pool is its own reference or the queries come from elsewhere."""
    vectors, groups = duplicate_pool(tmp_path)
    outside = with_duplicates(clustered_vectors(3000, 384, n_clusters=6, seed=12),
                              {5: [1001, 2051, 2999]})
    budget = 1 if backend == "torch" else None  # the torch search in several blocks
    for reference, queries, query_groups in [(vectors, vectors, groups),
                                             (outside, vectors, groups),
                                             (vectors, outside, [[5, 1001, 2051, 2999]])]:
        density = DensityReference(reference, backend=backend,
                                   **({"block_mib": budget} if budget else {}))
        if budget:
            assert len(density.index().query_blocks(len(queries), 11)) > 1
        means = density.mean_sq_distances(queries, [10], chunk_rows=1000)[10]
        for group in query_groups:
            assert len(set(means[group].tolist())) == 1, group


def test_merge_topk_across_blocks_equals_whole():
    torch = pytest.importorskip("torch")
    values = torch.tensor([[5.0, 1.0, 4.0, 2.0, 3.0, 0.5]])
    best_d = best_i = None
    for start in range(0, 6, 2):
        block = values[:, start:start + 2]
        d, i = torch.topk(block, 2, dim=1, largest=False)
        best_d, best_i = merge_topk(best_d, best_i, d, i + start, 3)
    assert best_d.tolist() == [[0.5, 1.0, 2.0]]
    assert best_i.tolist() == [[5, 1, 3]]


def near_duplicate_crowd(seed=0, d=64, crowd=500, others=700, queries=200):
    """A crowd of near-duplicates of one large-norm vector among other rows, and queries in
    the crowd: float32 search distances there are dominated by rounding (norms of about 400,
    spreads of 1e-4), so the search alone ranks the crowd at random."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=d).astype(np.float32) * 50
    reference = np.concatenate([base + rng.normal(size=(crowd, d)).astype(np.float32) * 1e-4,
                                rng.normal(size=(others, d)).astype(np.float32) * 50])
    reference = reference[rng.permutation(len(reference))].astype(np.float32)
    return reference, (base + rng.normal(size=(queries, d)).astype(np.float32) * 1e-4) \
        .astype(np.float32)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.slow
def test_the_density_is_exact_even_in_a_crowd_of_near_duplicates(backend):
    """The k nearest by exact distance, whatever the search's rounding: the mean squared
    distances equal a brute-force float64 computation (to float64 rounding), on both search
    backends, although the torch search's own ranking of the crowd is mostly wrong."""
    reference, queries = near_duplicate_crowd()
    ks = [3, 10]
    density = DensityReference(reference, backend=backend)
    got = density.mean_sq_distances(queries, ks)
    differences = queries[:, None, :].astype(np.float64) - reference[None].astype(np.float64)
    nearest = np.sort((differences * differences).sum(-1), axis=1)
    for k in ks:
        np.testing.assert_allclose(got[k], nearest[:, :k].mean(axis=1), rtol=1e-12)
    if backend == "torch":
        _d, labels = density.index().search(queries, 11)
        exact = np.argsort((differences * differences).sum(-1), axis=1, kind="stable")[:, :11]
        assert np.mean([set(a) == set(b) for a, b in zip(labels, exact)]) < 0.5


def test_one_outlier_of_large_norm_does_not_make_every_query_search_again():
    """The error bound only counts rows that could be nearer (triangle inequality): one row
    1000 times longer than the others leaves every query settled on the first search."""
    from utils.density.exact_knn import candidate_count

    rows = clustered_vectors(2000, 32, seed=9)
    rows[17] *= 1000
    searched = []
    reference = DensityReference(rows)
    search = reference.index().search
    reference.index().search = lambda q, m: searched.append(m) or search(q, m)
    reference.mean_sq_distances(rows[:300], [10])
    assert searched == [candidate_count(11, len(rows))]


@pytest.mark.parametrize("block_mib", [1, 16])
@pytest.mark.slow
def test_the_exact_reranking_in_blocks_of_candidates_equals_all_at_once(block_mib):
    """Blocks of queries and of candidate columns (a running nearest list) give what one
    block gives, however many candidates a query has; the CPU kernel gives the same."""
    pytest.importorskip("torch")
    from utils.density.exact_knn import rerank_exact, rerank_exact_torch

    rows = clustered_vectors(3000, 512, seed=4)
    queries = rows[:40] + 0.01
    labels = np.tile(np.arange(len(rows))[::-1], (len(queries), 1))  # every row, reversed
    whole_d, whole_l = rerank_exact_torch(queries, rows, labels, 11, 2**40)
    part_d, part_l = rerank_exact_torch(queries, rows, labels, 11, block_mib * 2**20)
    np.testing.assert_array_equal(part_d, whole_d)
    np.testing.assert_array_equal(part_l, whole_l)
    cpu_d, cpu_l = rerank_exact(queries, rows, labels, 11, block_mib * 2**20)
    np.testing.assert_array_equal(cpu_d, whole_d)
    np.testing.assert_array_equal(cpu_l, whole_l)
    differences = queries[:, None, :].astype(np.float64) - rows[None].astype(np.float64)
    exact = (differences * differences).sum(-1)
    np.testing.assert_array_equal(whole_l, np.argsort(exact, axis=1, kind="stable")[:, :11])


def awkward_rows(dim, seed=0):
    """Clustered, unnormalised rows of norm about 1,000 with exact duplicates, and queries
    among them: duplicates of rows, and rows moved by 1e-3 (cancellation in every difference)."""
    rng = np.random.default_rng(seed)
    rows = (clustered_vectors(400, dim, n_clusters=5, seed=seed, spread=0.01) * 300
            + 1000).astype(np.float32)
    rows = with_duplicates(rows, {3: [50, 51, 399], 7: [8]})
    queries = np.vstack([rows[[3, 50, 7, 8]],
                         rows[:60] + rng.normal(size=(60, dim)).astype(np.float32) * 1e-3])
    return rows, queries.astype(np.float32)


@pytest.mark.parametrize("dim", [1, 2, 3, 64, 257])
@pytest.mark.parametrize("kernel", ["numba", "numpy"])
def test_the_cpu_reranking_is_bitwise_the_torch_one(dim, kernel):
    """The numba and the numpy re-ranking (no torch on the CPU), each asked for by name, and
    the torch one that runs on a GPU give bitwise the same float64 distances and the same order (distance, then row), on
    rows with duplicates, large norms and odd widths; duplicates of a query's row tie
    exactly."""
    pytest.importorskip("torch")
    from utils.density.exact_knn import rerank_exact_torch
    from utils.density.rerank_cpu import rerank_exact_cpu

    rows, queries = awkward_rows(dim)
    rng = np.random.default_rng(dim)
    copies = [3, 50, 51, 399, 7, 8]  # every copy of the duplicated rows, first
    others = np.setdiff1d(np.arange(len(rows)), copies)
    labels = np.stack([np.concatenate([copies, rng.permutation(others)[:144]])
                       for _ in queries])
    cpu_d, cpu_l = rerank_exact_cpu(queries, rows, labels, 12, 2**16, kernels=kernel)
    torch_d, torch_l = rerank_exact_torch(queries, rows, labels, 12, 2**30)
    np.testing.assert_array_equal(cpu_d, torch_d)
    np.testing.assert_array_equal(cpu_l, torch_l)
    assert cpu_l[0, :4].tolist() == [3, 50, 51, 399] and cpu_d[0, 3] == 0.0
    differences = queries[:, None, :].astype(np.float64) - rows[labels].astype(np.float64)
    exact = (differences * differences).sum(-1)
    np.testing.assert_allclose(cpu_d, np.sort(exact, axis=1)[:, :12], rtol=1e-14, atol=0)


def test_the_reranking_takes_numba_exactly_when_the_search_runs_it():
    """The CPU re-ranking's kernels are chosen by the search (no guess from what the process
    has imported): numba's after a search large enough to run numba, else by size."""
    from utils.density.flat_index import NumpyFlatIndex

    index = NumpyFlatIndex(clustered_vectors(300, 8, seed=3))
    index.expect_queries(300)
    assert index.rerank_kernels() == "auto"
    index.expect_queries(10**7)  # 3e9 query-row pairs: the numba search
    assert index.rerank_kernels() == "numba"
