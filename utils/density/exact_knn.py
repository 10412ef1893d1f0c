"""The certified exact kNN: float32 candidates re-ranked exactly in float64, searched again
until no row left out can be nearer (docs/method.md section 3).

sigma_k(x) = 1 / (mean of the k smallest squared L2 distances from x to the reference set R
+ 1e-9) ** beta, with R's exact duplicate rows kept once and x itself left out when x is a row
of R. The published script always dropped the first neighbour, which is wrong for a query from
elsewhere (docs/method.md section 7); here the left-out row is found by identity, not by position.

Search backends, all exhaustive (squared L2, as a faiss ``IndexFlatL2``): blocked numpy matrix
products on the CPU (``gemm_search``, measured 3x faiss there); faiss-gpu when it is installed
and a GPU is asked for; otherwise a blocked torch search on the GPU (``flat_index``). They
compute ||q||^2 + ||r||^2 - 2 q.r with float32 matrix products, whose rounding
depends on the blocking, the threads, the device and, under torchrun, on how the reference is
split (measured: up to 3e-4 on a squared distance of clustered 256-dimensional vectors). So
the search only proposes candidates, twice as many as needed, and their distances are then
computed again exactly (``rerank_exact``: float64 differences summed in a fixed order, by a
numba kernel on the CPU and torch on a GPU, bitwise equal); a
query whose candidates may miss a nearer row (its k-th exact distance not clearly below what
the search's rounding allows the rows it did not propose) is searched again with twice as
many (``nearest_certified``). A density factor then depends on the vectors alone, bitwise, on
every backend, thread count and number of ranks (docs/method.md sections 3, 6 and 9).

Exact duplicates get bitwise the same factor (docs/method.md section 6): each distinct query
row is searched once and its duplicates share the result.
"""

import math

import numpy as np

from ..numerics.blocks import row_blocks
from ..numerics.compute import exact_torch


def drop_self(sq_distances, labels, self_rows, k):
    """Keep k neighbours per query: without the query's own row when it is among the results.

    ``sq_distances`` and ``labels`` hold k + 1 results per query, nearest first (or any other
    per-result value, such as similarities); ``self_rows`` gives each query's row in the
    reference or -1. Queries from elsewhere keep their first k.
    """
    is_self = labels == self_rows[:, None]
    keep = ~is_self
    keep[~is_self.any(axis=1), k:] = False
    return sq_distances[keep].reshape(len(sq_distances), k)


def candidate_count(n_results, n_rows):
    """How many neighbours to search for so that the exact ``n_results`` nearest are among
    them: twice as many (the search's rounding can only swap rows whose distances are within
    its error of each other), at most every row."""
    return min(2 * n_results, n_rows)


FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24
SEARCH_ERROR_SIGMAS = 4  # standard deviations of the random-walk model (``probable``)


def worst_case_gamma(dim):
    """gamma_n = n u / (1 - n u) for n = dim + 2 float32 operations: a dot product of ``dim``
    terms summed in any order (with or without fused multiply-adds) errs by at most
    gamma_dim * sum |q_i r_i|; the norms likewise, and the two additions of
    ||q||^2 + ||r||^2 - 2 q.r add one rounding each."""
    steps = (dim + 2) * FLOAT32_UNIT_ROUNDOFF
    return steps / (1.0 - steps)


def probable_gamma(dim):
    """Four standard deviations of a random-walk model of the rounding: sqrt(dim) u each."""
    return SEARCH_ERROR_SIGMAS * math.sqrt(dim) * FLOAT32_UNIT_ROUNDOFF


# How far a float32 search's squared distance may lie from the exact one, relative to
# (||q|| + ||r||)^2: "worst_case" holds whatever the BLAS does (docs/method.md section 3);
# "probable" is the random-walk model, smaller by sqrt(dim) / 4.
SEARCH_ERROR_GAMMAS = {"worst_case": worst_case_gamma, "probable": probable_gamma}
DEFAULT_SEARCH_ERROR = "worst_case"


def search_error_bound(query_norms, row_norm_bound, dim, model=DEFAULT_SEARCH_ERROR):
    """How far a float32 search's squared distance may lie from the exact one, per query.

    The search computes ||q||^2 + ||r||^2 - 2 q.r; each term is at most (||q|| + ||r||)^2
    in size, ||r|| <= ``row_norm_bound``, so its error is at most gamma (||q|| + ||r||)^2,
    gamma from ``SEARCH_ERROR_GAMMAS[model]`` (float64; the bound's own rounding is far
    below its size)."""
    return SEARCH_ERROR_GAMMAS[model](dim) * (query_norms + row_norm_bound) ** 2


def max_sq_norm(rows, block_rows=8192):
    """The largest squared L2 norm among ``rows`` (float64, in blocks: no float64 copy of a
    400,000 x 4,096 set at once)."""
    largest = 0.0
    for start in range(0, len(rows), block_rows):
        block = np.asarray(rows[start:start + block_rows], dtype=np.float64)
        largest = max(largest, float(np.einsum("ij,ij->i", block, block).max(initial=0.0)))
    return largest


def nearest_certified(search, rows, queries, n_results, block_bytes, device="cpu",
                      max_row_sq_norm=None, error_model=DEFAULT_SEARCH_ERROR,
                      rerank_kernels="auto"):
    """The exact ``n_results`` nearest rows of each query: ``(distances, labels)``, float64
    exact squared distances (``rerank_exact``) and row numbers, nearest first, ties to the
    lower row.

    ``search(queries, m)`` is a float32 search over ``rows``. Its m candidates are re-ranked
    exactly; a query is settled when its ``n_results``-th exact distance D lies below the
    smallest distance any row it did not propose can have: the largest search distance among
    the candidates less ``search_error_bound``. Only rows with ||r|| <= ||q|| + sqrt(D) can be
    nearer than D (triangle inequality), so the bound uses min(max ||r||, ||q|| + sqrt(D)):
    one outlier of large norm cannot inflate it. Unsettled queries are searched again with
    twice as many candidates, up to every row, so that a crowd of near-duplicates cannot push
    a true neighbour out of the candidates. ``max_row_sq_norm``: ``max_sq_norm(rows)``;
    ``error_model``: a key of ``SEARCH_ERROR_GAMMAS``; ``rerank_kernels``: the CPU re-ranking's
    (``rerank_cpu.rerank_exact_cpu``).
    """
    n_rows = len(rows)
    if max_row_sq_norm is None:  # callers that search often pass it, computed once
        max_row_sq_norm = max_sq_norm(rows.cpu().numpy() if hasattr(rows, "cpu") else rows)
    out_d = np.empty((len(queries), n_results), dtype=np.float64)
    out_l = np.empty((len(queries), n_results), dtype=np.int64)
    todo = np.arange(len(queries))
    m = candidate_count(n_results, n_rows)
    while len(todo):
        unsettled = []
        # The search's results (m float32 distances and int64 labels per query) stay within
        # the budget however far m has grown.
        for start, stop in row_blocks(len(todo), m * (4 + 8), block_bytes):
            which = todo[start:stop]
            q = np.ascontiguousarray(queries[which], dtype=np.float32)
            rough, labels = search(q, m)
            distances, nearest = rerank_exact(q, rows, labels, n_results, block_bytes, device,
                                              rerank_kernels)
            if m >= n_rows:
                settled = np.ones(len(which), dtype=bool)
            else:
                q64 = q.astype(np.float64)
                query_norms = np.sqrt(np.einsum("ij,ij->i", q64, q64))
                row_norms = np.minimum(math.sqrt(max_row_sq_norm),
                                       query_norms + np.sqrt(distances[:, -1]))
                floor = rough.max(axis=1).astype(np.float64) - search_error_bound(
                    query_norms, row_norms, q.shape[1], error_model)
                settled = distances[:, -1] < floor
            out_d[which[settled]] = distances[settled]
            out_l[which[settled]] = nearest[settled]
            unsettled.append(which[~settled])
        todo = np.concatenate(unsettled)
        m = min(2 * m, n_rows)
    return out_d, out_l


def exact_sq_distances(queries, neighbours):
    """Squared L2 distance of each query to each of its neighbour rows, float64 (torch).

    ``queries`` (b, d) and ``neighbours`` (b, m, d), float32 tensors; returns (b, m). The
    differences, squares and their sum (a halving tree, ``selection.halving_sums``) are
    elementwise operations in a fixed order, each exactly rounded: a value depends on the two
    rows alone, not on the search's blocking, threads, device or split over ranks, as the
    BLAS form ||q||^2 + ||r||^2 - 2 q.r of a flat index does (its float32 cancellation moves a
    distance of clustered, unnormalised vectors by up to about 1e-4).
    """
    from ..numerics.fixed_order import halving_sums

    differences = queries[:, None, :].double() - neighbours.double()
    return halving_sums(differences * differences)


def nearest_by_distance_then_row(distances, labels, n_keep):
    """The ``n_keep`` smallest ``distances`` of each row (torch), equal ones in the order of
    their ``labels``: ``(distances, labels)``, nearest first."""
    import torch

    by_label = torch.sort(labels, dim=1, stable=True).indices
    ordered = torch.gather(distances, 1, by_label)
    by_distance = torch.sort(ordered, dim=1, stable=True).indices[:, :n_keep]
    return (torch.gather(ordered, 1, by_distance),
            torch.gather(torch.gather(labels, 1, by_label), 1, by_distance))


# Working bytes per (query, candidate) and dimension of the exact re-ranking: the gathered row
# (float32), its float64 copy, the difference, its square, and the first halving's copy.
RERANK_BYTES_PER_ELEMENT = 4 + 8 + 8 + 8 + 4


def rerank_exact(queries, rows, labels, n_keep, block_bytes, device="cpu", kernels="auto"):
    """The ``n_keep`` nearest of each query's candidate rows by exact distance.

    ``queries`` (n, d) float32; ``rows``: the searched rows (numpy or a torch tensor on
    ``device``); ``labels`` (n, m): candidate row numbers from a search, at least ``n_keep``.
    Returns ``(distances, labels)``, (n, n_keep) float64 and int64, nearest first, equal
    distances in the order of their row numbers. On the CPU a numba kernel
    (``rerank_cpu.rerank_exact_cpu``: no torch import, a row of d float64 per thread), on a
    GPU torch (``rerank_exact_torch``, within ``block_bytes``); the values are bitwise equal.
    ``kernels``: the CPU's choice of numba or numpy (``rerank_exact_cpu``).
    """
    if device == "cpu":
        from .rerank_cpu import rerank_exact_cpu

        return rerank_exact_cpu(queries, np.asarray(rows), labels, n_keep, block_bytes,
                                kernels)
    return rerank_exact_torch(queries, rows, labels, n_keep, block_bytes, device)


def rerank_exact_torch(queries, rows, labels, n_keep, block_bytes, device="cpu"):
    """``rerank_exact`` in torch on ``device``: distances by ``exact_sq_distances``. Blocks of
    queries and of candidates stay within ``block_bytes``; the nearest so far are merged with
    each block of candidates, so a query with every row as a candidate needs no more memory
    than one with a few."""
    torch = exact_torch()
    rows_t = rows if isinstance(rows, torch.Tensor) else torch.from_numpy(
        np.ascontiguousarray(rows, dtype=np.float32))
    n, m = labels.shape
    dim = rows_t.shape[1]
    per_element = dim * RERANK_BYTES_PER_ELEMENT
    columns = max(1, min(m, int(block_bytes // per_element)))
    out_d = np.empty((n, n_keep), dtype=np.float64)
    out_l = np.empty((n, n_keep), dtype=np.int64)
    for start, stop in row_blocks(n, per_element * columns, block_bytes):
        q = torch.from_numpy(np.ascontiguousarray(queries[start:stop])).to(device)
        label_t = torch.from_numpy(np.ascontiguousarray(labels[start:stop])).to(device)
        best_d = best_l = None
        for first in range(0, m, columns):
            block_l = label_t[:, first:first + columns]
            block_d = exact_sq_distances(q, rows_t[block_l.reshape(-1)].reshape(
                stop - start, block_l.shape[1], dim))
            if best_d is not None:
                block_d = torch.cat([best_d, block_d], dim=1)
                block_l = torch.cat([best_l, block_l], dim=1)
            best_d, best_l = nearest_by_distance_then_row(block_d, block_l,
                                                          min(n_keep, block_d.shape[1]))
        out_d[start:stop] = best_d.cpu().numpy()
        out_l[start:stop] = best_l.cpu().numpy()
    return out_d, out_l
