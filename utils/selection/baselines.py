"""The baseline selectors: random, k-center, k-means and DEITA's representation filter.

- ``random``: ``numpy.random.RandomState(seed).choice(n, k, replace=False)``.
- ``kcenter``: K-Center-Greedy (Sener and Savarese 2018, "Active Learning for Convolutional
  Neural Networks: A Core-Set Approach"). The first pick is NovelSelect's
  (``engine.first_pick(n, seed)``); then, repeatedly, the unpicked sample whose cosine
  distance 1 - cos to its nearest pick is largest, ties to the lowest index. Each sample keeps
  its running minimum distance, so a pick costs one (n, d) matrix-vector product.
- ``kmeans``: faiss ``Kmeans(d, k, niter=20, seed=seed)`` on the pool (its torch twin on a
  GPU, ``utils.numerics.kmeans.kmeans_torch``); then, for each centroid in order, the nearest pool
  sample by L2 that is not yet picked (exhaustive search in blocks of centroids, ties to the
  lowest index).
- ``repr_filter``: DEITA's representation filter (Liu et al. 2024, "What Makes Good Data for
  Alignment?"): visit the samples in descending quality order (a stable sort, so equal scores
  keep index order) or, without scores, in ``RandomState(seed).permutation(n)`` order; keep a
  sample when its largest cosine similarity to the samples kept so far is at most
  ``max_similarity`` (DEITA's 0.9); stop at k. Candidates are compared with the kept set in
  blocks (one matrix product per block; the block's own survivors are then settled in visit
  order), which gives the same picks as one candidate at a time.

Inputs: ``unit`` are rows scaled to unit length (``utils.numerics.rows.unit_rows``), ``vectors``
raw rows, float32. None of these methods uses a density reference (``--dense_ref_dir``); only
``repr_filter`` uses quality scores (``--quality_scores``). Engines as in ``numerics.compute``:
numpy on the CPU, torch on ``device="cuda:N"`` (``engine="torch"`` runs the torch code on the
CPU, for the tests).
"""

import math

import numpy as np

from ..density.dedup import distinct_rows
from ..errors import InputError
from ..numerics.blocks import DEFAULT_BLOCK_MIB, MIB, rows_per_block
from ..numerics.compute import (
    TORCH_PAIR_BYTES,
    bytes_per_pair,
    pair_blocks,
    resolve_engine,
    to_torch,
)
from ..numerics.kmeans import KMEANS_NITER, kmeans_centroids
from ..numerics.rows import as_float32
from ..runtime.progress import tracked
from .inputs import check_pick_count

METHOD_NAMES = ("novelselect", "random", "kcenter", "kmeans", "repr_filter")


DEFAULT_MAX_SIMILARITY = 0.9  # DEITA's threshold


USES_DENSITY_REFERENCE = frozenset({"novelselect"})  # --dense_ref_dir


USES_QUALITY_SCORES = frozenset({"novelselect", "repr_filter"})  # --quality_scores


def random_selection(n, k, seed=42):
    """``numpy.random.RandomState(seed).choice(n, k, replace=False)`` as a list of ints."""
    check_pick_count(k, n)
    return [int(i) for i in np.random.RandomState(seed).choice(n, k, replace=False)]


def cosine_distances_to(unit, row):
    """1 - unit @ row: (n,) float32 numpy or torch, whichever ``unit`` is."""
    distances = unit @ row
    return 1.0 - distances


def kcenter_selection(unit, k, first, device="cpu", engine=None, progress=None, given=None):
    """K-Center-Greedy picks in order.

    Parameters
    ----------
    unit : (n, d) float32 unit rows.
    k : number of picks, 1 <= k <= n.
    first : the first pick (``utils.selection.selection_engine.first_pick(n, seed)``); None with
        ``given``.
    given : (m, d) float32 unit rows of a set already held (docs/method.md section 10): the
        first centres, so every pick is an argmax and none is drawn.

    Returns
    -------
    list of int : p_1 = first; p_{t+1} = argmax_u min_{s <= t} (1 - cos(u, p_s)) over unpicked
        u, ties to the lowest index. m(u) = min_s d(u, p_s) is kept and lowered by one
        distance vector per pick (O(n d)); picks hold m = -inf so they never win again.
    """
    engine = resolve_engine(device, engine)
    unit = as_float32(unit)
    n = len(unit)
    check_pick_count(k, n)
    if given is None and not 0 <= first < n:
        raise ValueError(f"first pick {first} outside a pool of {n}")
    minimum = np.minimum
    if engine == "torch":
        import torch

        minimum = torch.minimum
    # Distances are computed once per distinct row and copied to its duplicates: a matrix
    # product may round a row differently by where it sits, and exact duplicates must tie.
    rows, which = distinct_rows(unit)
    if engine == "torch":
        rows, which = to_torch(rows, device), to_torch(which, device)

    def distances_to(pick):
        return cosine_distances_to(rows, rows[int(which[pick])])[which]

    if given is None:
        min_distance, picks = distances_to(first), [int(first)]
        min_distance[first] = -math.inf
    else:
        min_distance = distance_to_given(
            rows, which, given, minimum,
            (lambda a: to_torch(a, device)) if engine == "torch" else (lambda a: a))
        picks = []
    for _ in tracked(range(len(picks), k), progress):
        pick = int(min_distance.argmax())  # numpy and torch both return the first maximum
        picks.append(pick)
        minimum(min_distance, distances_to(pick), out=min_distance)
        min_distance[pick] = -math.inf
    return picks


def distance_to_given(rows, which, given, minimum, to_device):
    """Each row's cosine distance to its nearest row of ``given`` (unit rows), computed per
    distinct row (``rows``, expanded by ``which``) one given row at a time, as a pick is."""
    given = to_device(as_float32(given))
    nearest = cosine_distances_to(rows, given[0])
    for row in given[1:]:
        minimum(nearest, cosine_distances_to(rows, row), out=nearest)
    return nearest[which]


def centroid_scores_numpy(centroids, pool, pool_sq):
    """||x||^2 - 2 c.x for a block of centroids against all pool rows: (block, n) float32,
    the squared L2 distance less the constant ||c||^2 (so ranks, and ties, are those of L2)."""
    scores = centroids @ pool.T
    scores *= -2.0
    scores += pool_sq[None, :]
    return scores


def centroid_scores_torch(centroids, pool, pool_sq):
    """As ``centroid_scores_numpy``, on torch tensors."""
    return (centroids @ pool.T).mul_(-2.0).add_(pool_sq[None, :])


def nearest_unpicked(scores, picks, engine):
    """For each centroid row of ``scores`` in order: its lowest-scored column not yet picked.

    ``picks`` (list, extended in place) holds the picks so far. Columns picked before the
    block are masked at once and every row's minimum found in one pass; a row whose minimum
    was taken by an earlier row of the block is searched again with those columns masked.
    """
    inf = math.inf
    if picks:
        scores[:, picks if engine == "numpy" else to_torch(np.asarray(picks), scores.device)] = inf
    if engine == "numpy":
        best = np.argmin(scores, axis=1)
    else:
        best = scores.argmin(dim=1).cpu().numpy()
    taken = set(picks)
    in_block = []
    for row, choice in enumerate(best):
        choice = int(choice)
        if choice in taken:
            scores[row, in_block] = inf
            choice = int(scores[row].argmin())
        in_block.append(choice)
        taken.add(choice)
    picks.extend(in_block)


def kmeans_selection(vectors, k, seed=42, device="cpu", block_mib=DEFAULT_BLOCK_MIB,
                     engine=None, progress=None):
    """One pool sample per k-means centroid, in centroid order.

    Parameters
    ----------
    vectors : (n, d) float32 raw pool rows.
    k : number of picks and of clusters, 1 <= k <= n.

    Returns
    -------
    list of int : for c = 1..k, argmin over unpicked x of ||x - mu_c||^2 (ties to the lowest
        index), mu the centroids of faiss ``Kmeans(d, k, niter=20, seed=seed)`` on the pool.
        Centroids are searched in blocks of (block x n) scores within ``block_mib``.
    """
    engine = resolve_engine(device, engine)
    vectors = as_float32(vectors)
    n = len(vectors)
    check_pick_count(k, n)
    centroids = kmeans_centroids(vectors, k, seed=seed, niter=KMEANS_NITER, device=device,
                                 block_mib=block_mib, engine=engine)
    # Scores are computed per distinct row and copied to its duplicates, so that exact
    # duplicates tie exactly and the lowest index wins (see kcenter_selection).
    pool, which = distinct_rows(vectors)
    pool_sq = np.einsum("ij,ij->i", pool, pool)
    score = centroid_scores_numpy
    if engine == "torch":
        pool, pool_sq, centroids, which = (to_torch(a, device)
                                           for a in (pool, pool_sq, centroids, which))
        score = centroid_scores_torch
    # per pair: the distinct rows' scores and their copy expanded to every row
    pair_bytes = 2 * bytes_per_pair(engine)
    picks = []
    for start, stop in tracked(pair_blocks(k, n, block_mib, pair_bytes), progress):
        nearest_unpicked(score(centroids[start:stop], pool, pool_sq)[:, which], picks, engine)
    return picks


def visit_order(n, quality=None, seed=42):
    """Descending quality, equal scores in index order; without scores a seeded permutation."""
    if quality is None:
        return np.random.RandomState(seed).permutation(n)
    quality = np.asarray(quality, dtype=np.float64)
    if quality.shape != (n,):
        raise InputError(f"--quality_scores: {quality.size} scores for a pool of {n} samples")
    if not np.isfinite(quality).all():
        raise InputError(f"--quality_scores: score {int(np.argmin(np.isfinite(quality)))} is "
                         f"not a finite number")
    return np.argsort(-quality, kind="stable")


def filter_block_size(k, dim, block_mib):
    """Candidates per block: their rows and similarities to up to k kept rows (float32, plus
    torch's headroom) in half the budget, their own similarity square in the other half."""
    half = int(block_mib * MIB // 2)
    per_row = (TORCH_PAIR_BYTES * k) + 4 * dim
    return max(1, min(rows_per_block(per_row, half), math.isqrt(max(1, half // 4))))


def settle_in_order(similarities, max_similarity, room):
    """Positions kept among candidates that all passed the earlier kept set, in visit order.

    ``similarities`` (s, s) holds their cosine similarities to each other; candidate j is kept
    when no candidate kept before it has similarity > ``max_similarity``; at most ``room``.
    """
    blocked = np.zeros(len(similarities), dtype=bool)
    kept = []
    for j in range(len(similarities)):
        if blocked[j]:
            continue
        kept.append(j)
        if len(kept) == room:
            break
        blocked |= similarities[j] > max_similarity
    return kept


def repr_filter_selection(unit, k, max_similarity=DEFAULT_MAX_SIMILARITY, quality=None, seed=42,
                          device="cpu", block_mib=DEFAULT_BLOCK_MIB, engine=None,
                          progress=None, given=None):
    """DEITA's representation filter: kept samples in the order they were kept.

    Parameters
    ----------
    unit : (n, d) float32 unit rows.
    k : number of picks, 1 <= k <= n.
    max_similarity : a sample is kept when max_{s kept} cos(u, s) <= max_similarity.
    quality : (n,) scores or None; visit order ``visit_order(n, quality, seed)``.
    given : (m, d) float32 unit rows of a set already held (docs/method.md section 10): kept
        before the first candidate is visited.

    Returns
    -------
    list of int : the first k samples kept. An InputError if the pool runs out before k.
    """
    engine = resolve_engine(device, engine)
    unit = as_float32(unit)
    n, dim = unit.shape
    check_pick_count(k, n)
    order = visit_order(n, quality, seed)
    prior = 0 if given is None else len(given)
    step = filter_block_size(prior + k, dim, block_mib)
    if engine == "torch":
        import torch

        kept_rows = torch.empty((prior + k, dim), dtype=torch.float32, device=device)
    else:
        kept_rows = np.empty((prior + k, dim), dtype=np.float32)
    if prior:
        kept_rows[:prior] = as_float32(given) if engine == "numpy" else to_torch(
            as_float32(given), device)
    picks = []
    blocks = [(start, min(n, start + step)) for start in range(0, n, step)]
    for start, stop in tracked(blocks, progress):
        candidates = order[start:stop]
        rows = unit[candidates] if engine == "numpy" else to_torch(unit[candidates], device)
        held = prior + len(picks)
        if held:
            similarities = rows @ kept_rows[:held].T
            best = similarities.max(axis=1) if engine == "numpy" else \
                similarities.amax(dim=1).cpu().numpy()
            passed = np.flatnonzero(best <= max_similarity)
            candidates = candidates[passed]
            rows = rows[passed] if engine == "numpy" else rows[to_torch(passed, device)]
        among = rows @ rows.T
        among = among if engine == "numpy" else among.cpu().numpy()
        kept = settle_in_order(among, max_similarity, k - len(picks))
        kept_rows[held:held + len(kept)] = rows[kept] if engine == "numpy" else \
            rows[to_torch(np.asarray(kept, dtype=np.int64), device)]
        picks.extend(int(i) for i in candidates[kept])
        if len(picks) == k:
            return picks
    raise InputError(f"--max_similarity {max_similarity}: the representation filter kept only "
                     f"{len(picks)} of the {n} pool samples, fewer than --k {k}; raise "
                     f"--max_similarity or lower --k")
