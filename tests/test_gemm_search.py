"""The CPU's candidate search by matrix products (utils/density/gemm_search.py): its own m
smallest distances, blocks of any size, block pairs shared when the queries are the rows, and
the density it leads to bitwise that of the faiss search."""

import numpy as np
import pytest
from conftest import clustered_vectors
from test_density import near_duplicate_crowd

from utils.density import gemm_search, rerank_cpu
from utils.density.factor import DensityReference
from utils.density.flat_index import NumpyFlatIndex, flat_index
from utils.density.gemm_search import GemmSearch, block_rows, sq_norms32
from synthetic import with_duplicates


def float32_distances(queries, rows):
    """||q||^2 + ||r||^2 - 2 q.r in float64: what the search rounds to float32."""
    q64, r64 = queries.astype(np.float64), rows.astype(np.float64)
    return (q64 * q64).sum(1)[:, None] + (r64 * r64).sum(1)[None] - 2 * q64 @ r64.T


@pytest.fixture(params=["numba", "numpy"])
def selection(request, monkeypatch):
    """Each search with the numba heaps, then with numpy's partial selection (a small search),
    and the exact re-ranking likewise."""
    if request.param == "numba":
        monkeypatch.setattr(gemm_search, "SMALL_SEARCH_PAIRS", 0)
        monkeypatch.setattr(rerank_cpu, "SMALL_RERANK_ELEMENTS", 0)
    return request.param


@pytest.mark.parametrize("step_rows", [1, 7, 500])
def test_the_search_keeps_the_m_smallest_in_blocks_of_any_size(step_rows, selection):
    """Blocks of 1, 7 and all rows give the m nearest (as sets, up to float32 near-ties),
    nearest first, whatever the number of blocks, by either selection."""
    rows = clustered_vectors(500, 24, seed=1)
    queries = np.vstack([rows[:30] + 0.05, clustered_vectors(30, 24, seed=2)])
    search = GemmSearch(rows, block_bytes=4 * step_rows ** 2)
    assert search.step == step_rows
    distances, labels = search.search(queries, 12)
    assert distances.shape == labels.shape == (60, 12)
    assert np.all(np.diff(distances, axis=1) >= 0)
    exact = float32_distances(queries, rows)
    np.testing.assert_allclose(distances, np.sort(exact, axis=1)[:, :12], rtol=1e-4, atol=1e-3)
    nearest = np.argsort(exact, axis=1, kind="stable")[:, :12]
    assert np.mean([set(a) == set(b) for a, b in zip(labels, nearest)]) > 0.95


def test_block_rows_follow_the_budget():
    assert block_rows(4 * 7 ** 2) == 7
    assert block_rows(1) == 1  # at least one row
    assert block_rows(2 ** 40) == 2048  # capped: a block stays in cache


def test_norms_are_rounded_once_from_float64():
    rows = np.array([[1e4, 1.0, 1e-4]], dtype=np.float32)
    expected = np.float32(np.float64(1e4) ** 2 + 1.0 + np.float64(np.float32(1e-4)) ** 2)
    assert sq_norms32(rows)[0] == expected


@pytest.mark.parametrize("step_rows", [7, 64])
def test_queries_that_are_the_rows_share_block_pairs(step_rows, monkeypatch):
    """Runs of the rows, in order, are served from pairs computed once, and give the
    distances a plain search gives (the same float32 values, labels in the same order up to
    equal distances); a run of a few rows completes only its own blocks."""
    monkeypatch.setattr(gemm_search, "SMALL_SEARCH_PAIRS", 0)  # the shared pairs are numba's
    rows = clustered_vectors(300, 16, seed=3)
    shared = GemmSearch(rows, block_bytes=4 * step_rows ** 2)
    plain_d, plain_l = shared.search_plain(rows, 10)
    first_d, _first_l = shared.search(rows[:5], 10)
    done = shared._self[2]
    assert done[0].all() and not done[1:, 1:].any()  # only the pairs of block 0
    runs = [shared.search(rows[a:b], 10) for a, b in [(5, 100), (100, 237), (237, 300)]]
    got_d = np.vstack([first_d] + [d for d, _l in runs])
    got_l = np.vstack([shared.search(rows[:5], 10)[1]] + [lab for _d, lab in runs])
    np.testing.assert_allclose(got_d, plain_d, rtol=1e-5, atol=1e-4)
    assert np.mean([set(a) == set(b) for a, b in zip(got_l, plain_l)]) > 0.95
    assert shared._self[3].all() and shared._self[2][np.triu_indices(len(shared._self[3]))].all()


def test_a_run_of_other_size_is_searched_plainly(monkeypatch):
    monkeypatch.setattr(gemm_search, "SMALL_SEARCH_PAIRS", 0)
    rows = clustered_vectors(100, 8, seed=4)
    search = GemmSearch(rows, block_bytes=4 * 32 ** 2)
    search.search(rows[:40], 6)
    assert search._self[0] == 6
    distances, labels = search.search(rows[:40], 12)  # another m: a plain search
    np.testing.assert_array_equal(labels[:, 0], np.arange(40))  # each row nearest itself
    assert search._self[0] == 6 and distances.shape == (40, 12)


def test_the_search_method_follows_the_whole_job_not_one_chunk(monkeypatch):
    """Queries searched in chunks take the numba heaps when all of them together are many
    pairs, though each chunk alone is few; the densities are those of one whole search."""
    monkeypatch.setattr(gemm_search, "SMALL_SEARCH_PAIRS", 300 * 200)
    rows, queries = clustered_vectors(300, 16, seed=8), clustered_vectors(250, 16, seed=9)
    reference = DensityReference(rows, backend="numpy")
    assert reference.index().searcher.is_small(50)
    chunked = reference.mean_sq_distances(queries, [3, 7], chunk_rows=50)
    assert not reference.index().searcher.is_small(50)
    whole = DensityReference(rows, backend="numpy").mean_sq_distances(queries, [3, 7])
    for k in (3, 7):
        np.testing.assert_array_equal(chunked[k], whole[k])


@pytest.mark.parametrize("block_mib", [2 / 1024, 1])
def test_the_density_is_bitwise_that_of_the_faiss_search(block_mib, selection):
    """The search only proposes; the certified kNN makes the density exact, so the numpy
    search (in small blocks, the pool as its own reference, queries from elsewhere, exact
    duplicates) gives bitwise the mean squared distances of the faiss search."""
    pool = with_duplicates(clustered_vectors(900, 48, n_clusters=5, seed=5, spread=0.05) * 40,
                           {3: [400, 899], 10: [11]})
    outside = clustered_vectors(200, 48, n_clusters=5, seed=6, spread=0.05) * 40
    for queries in (pool, np.vstack([outside, pool[:50]])):
        by_numpy = DensityReference(pool, backend="numpy", block_mib=block_mib)
        by_faiss = DensityReference(pool, backend="faiss")
        assert isinstance(by_numpy.index(), NumpyFlatIndex)
        got = by_numpy.mean_sq_distances(queries, [1, 5, 10])
        expected = by_faiss.mean_sq_distances(queries, [1, 5, 10])
        for k in (1, 5, 10):
            np.testing.assert_array_equal(got[k], expected[k])


def test_the_density_is_exact_in_a_crowd_of_near_duplicates():
    """Where the float32 search ranks a crowd at random, the certified kNN over the numpy
    search still gives the exact k nearest (as tests/test_density.py checks for faiss)."""
    reference, queries = near_duplicate_crowd()
    got = DensityReference(reference, backend="numpy").mean_sq_distances(queries, [3, 10])
    differences = queries[:, None, :].astype(np.float64) - reference[None].astype(np.float64)
    nearest = np.sort((differences * differences).sum(-1), axis=1)
    for k in (3, 10):
        np.testing.assert_allclose(got[k], nearest[:, :k].mean(axis=1), rtol=1e-12)


def test_the_cpu_default_is_the_numpy_search_and_it_refuses_a_gpu():
    rows = clustered_vectors(50, 8, seed=7)
    assert isinstance(flat_index(rows), NumpyFlatIndex)
    with pytest.raises(ValueError, match="CPU only"):
        flat_index(rows, device="cuda:0", backend="numpy")


def test_a_small_search_starts_no_numba(tmp_path):
    """NovelSum of a small dataset runs its density search and re-ranking in numpy alone:
    the process never imports numba (about 0.8 s of start-up)."""
    import subprocess
    import sys

    from conftest import GOLDEN, REPO

    case = GOLDEN / "novelsum_default_grid"
    code = ("import sys; from utils.cli.novelsum import main; "
            f"main(['--multi_datasets_dir', r'{case / 'targets'}', '--dense_ref_dir', "
            f"r'{case / 'reference'}', '--output_csv', r'{tmp_path / 'out.csv'}', '--quiet', "
            "'--gpu_id', '-1'], standalone_mode=False); "
            "print('numba' in sys.modules, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False False"

