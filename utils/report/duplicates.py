"""Duplicate groups of a pool: identical rows, and near duplicates (cosine similarity at or above
a threshold, linked transitively), with the pick each group holds."""

from dataclasses import dataclass

import numpy as np

from ..density.dedup import distinct_rows
from ..errors import InputError
from ..numerics.rows import unit_rows

DEFAULT_SIMILARITY = 0.95
TILE_ROWS = 2048  # a 2048 x 2048 float32 tile of distances (16 MiB) stays in cache
MAX_PAIRS = 50_000_000  # similar pairs kept in memory (about 800 MB)
PREFILTER_AXES = 64  # leading principal axes whose distances rule pairs out
PREFILTER_MARGIN = 1e-3  # above float32 rounding of the leading distances (at most 4)
DENSE_TILE_PAIRS = 4096  # candidates in a tile above which its full products are computed
FULL_PRODUCT_MARGIN = 1e-4  # above float32 rounding of a unit rows' dot product


@dataclass
class DuplicateGroups:
    """Groups of two or more rows, largest first (ties: lowest first row), each sorted.

    ``exact``: rows with identical vectors; ``near``: connected components of the graph that
    links two rows whose cosine similarity is at least ``threshold`` (identical rows are linked
    too, so every exact group lies inside a near group)."""

    threshold: float
    exact: list
    near: list

    @staticmethod
    def summary(groups):
        """``(groups, rows in them, rows beyond one per group)``."""
        rows = sum(len(group) for group in groups)
        return len(groups), rows, rows - len(groups)


def check_similarity(threshold):
    """A cosine similarity threshold in (0, 1]."""
    if not 0 < threshold <= 1:
        raise InputError(f"--report_similarity {threshold}: give a cosine similarity above 0 "
                         f"and at most 1 (near duplicates: 0.95)")


def groups_from_labels(labels):
    """Rows sharing a label, for labels held by two or more rows; largest first."""
    order = np.argsort(labels, kind="stable")
    _values, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    groups = [order[s:s + c] for s, c in zip(starts, counts) if c > 1]
    return sorted(groups, key=lambda group: (-len(group), group[0]))


def leading_part(unit, axes):
    """The rows turned onto their leading principal axes, as two float32 operands whose
    product is minus half the squared distance over those axes: [p, -|p|^2/2, 1] and
    [p, 1, -|p|^2/2]. An orthogonal projection never lengthens a distance, so pairs farther
    apart there are farther apart in full."""
    part = (unit - unit.mean(axis=0, dtype=np.float64)) @ axes
    half_sq = -0.5 * np.einsum("ij,ij->i", part, part)[:, None]
    ones = np.ones_like(half_sq)
    return (np.ascontiguousarray(np.hstack([part, half_sq, ones]), dtype=np.float32),
            np.ascontiguousarray(np.hstack([part, ones, half_sq]), dtype=np.float32))


def tile_pairs(flat, width, start, other):
    """Global (i, j), i < j, of a tile's flat positions ``flat`` (row-major, ``width``
    columns)."""
    i, j = np.divmod(flat, width)
    i, j = i + start, j + other
    upper = j > i  # on a diagonal tile, each pair once and no row with itself
    return np.stack([i[upper], j[upper]], axis=1)


def checked_pairs(pairs, unit64, threshold):
    """The ``pairs`` whose unit rows' float64 dot product reaches ``threshold``."""
    dots = np.einsum("ij,ij->i", unit64[pairs[:, 0]], unit64[pairs[:, 1]])
    return pairs[dots >= threshold]


def tile_similar_pairs(operands, unit, unit64, threshold, start, other):
    """The pairs of one tile whose cosine similarity reaches ``threshold``: candidates from
    the leading axes; where a tile holds many, the tile's full float32 products narrow them
    before the float64 check."""
    left, right = operands
    stop, last = start + TILE_ROWS, other + TILE_ROWS
    limit = np.float32(-(2 - 2 * threshold + PREFILTER_MARGIN) / 2)
    leading = left[start:stop] @ right[other:last].T
    flat = np.flatnonzero(leading >= limit)  # one pass: most tiles hold few or none
    if len(flat) > DENSE_TILE_PAIRS:
        full = unit[start:stop] @ unit[other:last].T
        flat = flat[full.ravel()[flat] >= np.float32(threshold - FULL_PRODUCT_MARGIN)]
    return checked_pairs(tile_pairs(flat, leading.shape[1], start, other), unit64, threshold)


def similar_pairs(rows, threshold, axes=None):
    """(i, j) with i < j and cosine similarity of rows i and j >= ``threshold`` (float64):
    (m, 2) int64, tile by tile over the upper triangle.

    For unit rows cos >= t is ||u - v||^2 <= 2 - 2t, far below typical distances, so the
    rows' leading principal axes (``axes``, (d, m); computed when None) rule out nearly every
    pair at a fraction of the cost of the full products."""
    unit = unit_rows(rows)
    if axes is None:
        from .projection import unit_axes

        axes = unit_axes(rows, min(PREFILTER_AXES, rows.shape[1]))[1]
    operands, unit64 = leading_part(unit, axes), unit_rows(rows, np.float64)
    found, count = [], 0
    for start in range(0, len(unit), TILE_ROWS):
        for other in range(start, len(unit), TILE_ROWS):
            pairs = tile_similar_pairs(operands, unit, unit64, threshold, start, other)
            if len(pairs):
                found.append(pairs)
                count += len(pairs)
        if count > MAX_PAIRS:
            raise InputError(f"--report_similarity {threshold}: over {MAX_PAIRS:,} pairs of "
                             f"rows are that similar; raise the threshold")
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def component_labels(count, pairs):
    """A connected-component label per node of the graph with edges ``pairs``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
                       shape=(count, count))
    return connected_components(graph, directed=False)[1]


def duplicate_groups(vectors, threshold=DEFAULT_SIMILARITY, axes=None):
    """The exact and near duplicate groups of ``vectors`` (n, d); see ``DuplicateGroups``.

    Identical rows are found by value (``density.dedup``); similarities are computed once per
    distinct row, so a row and its copies always fall in one group. ``axes``: orthonormal
    columns (d, m) to rule pairs out with (any such set is exact; leading principal axes rule
    out most), computed when None."""
    check_similarity(threshold)
    rows, which = distinct_rows(vectors)
    near = component_labels(len(rows), similar_pairs(rows, threshold, axes))[which]
    return DuplicateGroups(threshold, groups_from_labels(which), groups_from_labels(near))


def group_of_rows(groups, n):
    """For each of ``n`` rows, the position of its group in ``groups``, or -1."""
    position = np.full(n, -1, dtype=np.int64)
    for g, group in enumerate(groups):
        position[group] = g
    return position
