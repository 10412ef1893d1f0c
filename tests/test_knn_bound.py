"""The certified kNN's error bound (docs/method.md section 3): the worst-case bound covers every
float32 search distance, and on adversarial near-ties (many rows at nearly one distance) the
certified neighbours miss none of float64 brute force's."""

import numpy as np
import pytest

from utils.density.exact_knn import search_error_bound
from utils.density.factor import DensityReference
from utils.density.flat_index import flat_index


def near_tie_shell(seed=0, dim=256, shell=400, far=300, queries=40, offset=10.0):
    """Queries near a centre of norm ``offset``, ``shell`` rows at nearly the same distance 1
    from it (their distances differ by about 1e-7, the float32 rounding of the rows) and
    ``far`` rows at distance about 3: the float32 search (error about 1e-4 here) ranks the
    shell at random."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=dim) * offset / np.sqrt(dim)

    def sphere(count, radius):
        directions = rng.normal(size=(count, dim))
        return centre + radius * directions / np.linalg.norm(directions, axis=1, keepdims=True)

    rows = np.concatenate([sphere(shell, 1.0), sphere(far, 3.0)])
    rows = rows[rng.permutation(len(rows))].astype(np.float32)
    return rows, sphere(queries, 1e-3).astype(np.float32)


def brute_force(rows, queries, k):
    """The k nearest rows of each query in float64, ties to the lower row, and the distances."""
    differences = queries[:, None, :].astype(np.float64) - rows[None].astype(np.float64)
    distances = (differences * differences).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(len(rows)), distances.shape), distances))
    labels = order[:, :k]
    return labels, np.take_along_axis(distances, labels, axis=1)


@pytest.mark.parametrize("backend", ["numpy", "faiss", "torch"])
@pytest.mark.parametrize("data", ["shell", "large norms"])
def test_the_worst_case_bound_covers_every_search_distance(backend, data):
    """|float32 search distance - exact distance| <= gamma_{d+2} (||q|| + ||r||)^2 for every
    (query, row) pair, whatever the search's BLAS, blocking or backend."""
    rows, queries = near_tie_shell(offset=10.0 if data == "shell" else 400.0)
    if backend == "torch":
        pytest.importorskip("torch")
    distances, labels = flat_index(rows, "cpu", backend).search(queries, len(rows))
    differences = queries[:, None, :].astype(np.float64) - rows[labels].astype(np.float64)
    exact = (differences * differences).sum(-1)
    query_norms = np.linalg.norm(queries.astype(np.float64), axis=1)[:, None]
    row_norms = np.linalg.norm(rows.astype(np.float64), axis=1)[labels]
    bound = search_error_bound(query_norms, row_norms, rows.shape[1], "worst_case")
    assert np.all(np.abs(distances.astype(np.float64) - exact) <= bound)


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_adversarial_near_ties_miss_no_neighbour(backend):
    """The certified nearest rows (the default, worst-case bound) are brute force's, every
    one: no query misses a neighbour (the numpy search alone ranks the shell at random)."""
    rows, queries = near_tie_shell()
    k = 11
    reference = DensityReference(rows, backend=backend)
    distances, labels = reference.nearest_exact(queries, k)
    expected_labels, expected_distances = brute_force(rows, queries, k)
    misses = sum(len(set(got) - set(want)) for got, want in zip(labels, expected_labels))
    assert misses == 0
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-12)
