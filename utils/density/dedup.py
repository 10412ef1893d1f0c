"""Distinct rows: exact duplicates found by a cheap key, then a full digest, in one process or
across ranks."""

import hashlib

import numpy as np

SAMPLE_COLUMNS = 32  # columns whose bytes make a row's first, cheap key


def sample_keys(vectors):
    """A cheap key per row: the bytes of up to 32 evenly spaced columns, -0.0 read as 0.0.

    Equal rows have equal keys; rows with equal keys are told apart by a full digest, which
    real data rarely needs, so a 400,000 x 4,096 set is not hashed in full (seconds saved).
    """
    columns = np.unique(np.linspace(0, vectors.shape[1] - 1,
                                    min(vectors.shape[1], SAMPLE_COLUMNS)).round().astype(int))
    sample = np.ascontiguousarray(vectors[:, columns], dtype=np.float32) + np.float32(0.0)
    return [row.tobytes() for row in sample]


def full_digest(row):
    """A 16-byte digest of a whole row's float32 bytes, -0.0 read as 0.0."""
    canonical = np.ascontiguousarray(row, dtype=np.float32) + np.float32(0.0)
    return hashlib.blake2b(canonical.tobytes(), digest_size=16).digest()


class RowLookup:
    """Which row of a set of distinct rows equals a given row, if any (exact, by value).

    ``table`` maps a sample key to the row's position, or, for the few keys that distinct rows
    share, to ``{full digest: position}``.
    """

    def __init__(self, table):
        self.table = table

    def find(self, row, key, rows):
        entry = self.table.get(key)
        if entry is None:
            return -1
        j = entry if isinstance(entry, int) else entry.get(full_digest(row), -1)
        # Checked on the values: a key or digest collision must not drop a true neighbour.
        return j if j >= 0 and np.array_equal(row, rows[j]) else -1


def unique_rows(vectors):
    """Keep the first occurrence of each exact row: ``(rows, RowLookup over them)``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    keys = sample_keys(vectors)
    groups = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    keep = []
    for members in groups.values():
        if len(members) == 1:
            keep.append(members[0])
            continue
        seen = set()  # rows sharing a key: kept once per distinct full digest
        for i in members:
            digest = full_digest(vectors[i])
            if digest not in seen:
                seen.add(digest)
                keep.append(i)
    keep.sort()  # first occurrences, in their original order
    rows = vectors if len(keep) == len(vectors) else vectors[keep]
    table = {}
    for position, i in enumerate(keep):
        entry = table.get(keys[i])
        if entry is None:
            table[keys[i]] = position
            continue
        if isinstance(entry, int):
            entry = table[keys[i]] = {full_digest(rows[entry]): entry}
        entry[full_digest(rows[position])] = position
    return rows, RowLookup(table)


def rows_in_reference(queries, reference_rows, lookup):
    """Index in the reference of each query row, or -1 where the query is not a reference row."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    return np.array([lookup.find(query, key, reference_rows)
                     for query, key in zip(queries, sample_keys(queries))], dtype=np.int64)


def distinct_rows(vectors):
    """``(rows, which)``: the distinct rows (first occurrences, in order) and, for each input
    row, its position among them. Computing on ``rows`` and expanding with ``which`` gives
    identical rows bitwise-identical results, whatever their position, so that ties between
    exact duplicates go to the lowest index (docs/method.md section 6)."""
    rows, lookup = unique_rows(vectors)
    return rows, rows_in_reference(vectors, rows, lookup)


class DistinctQueries:
    """The distinct rows among a set of queries, each searched once (duplicates share it).

    Queries that are rows of the reference are represented by that row (``members``, reference
    row numbers); the others by their first occurrence (``outsiders``). ``which[i]`` is query
    i's position in ``members`` followed by ``outsiders``.
    """

    def __init__(self, queries, reference_rows, lookup):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        self_rows = rows_in_reference(queries, reference_rows, lookup)
        self.reference_rows = reference_rows
        self.members, member_of = np.unique(self_rows[self_rows >= 0], return_inverse=True)
        outside = queries[self_rows < 0]
        self.outsiders, outsider_lookup = unique_rows(outside)
        self.which = np.empty(len(queries), dtype=np.int64)
        self.which[self_rows >= 0] = member_of
        self.which[self_rows < 0] = len(self.members) + rows_in_reference(
            outside, self.outsiders, outsider_lookup)

    def __len__(self):
        return len(self.members) + len(self.outsiders)

    def rows(self, start, stop):
        """Distinct rows ``start:stop`` and their row in the reference (-1 for outsiders)."""
        split = len(self.members)
        members = self.members[min(start, split):min(stop, split)]
        outsiders = self.outsiders[max(start, split) - split:max(stop, split) - split]
        rows = np.concatenate([self.reference_rows[members], outsiders])
        self_rows = np.concatenate([members, np.full(len(outsiders), -1, dtype=np.int64)])
        return rows, self_rows


def row_digests(vectors):
    """(n, 16) uint8: the digest of each row (``density.full_digest``)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    joined = b"".join(full_digest(row) for row in vectors)
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(vectors), 16)


def digest_keys(digests):
    """One sortable 16-byte value per row (numpy void), for ``np.unique`` and ``searchsorted``."""
    return np.ascontiguousarray(digests).view("V16").ravel()


class DistinctPlan:
    """The distinct queries of a sharded search, in one process's order (``DistinctQueries``):
    first the reference rows that are queries (by reference row), then the other distinct
    query rows by first occurrence. ``members`` are global reference rows, ``outsiders``
    global query rows; ``which[i]`` is global query i's position in the list."""

    def __init__(self, reference_keys, query_keys):
        distinct, first = np.unique(reference_keys, return_index=True)
        position = np.searchsorted(distinct, query_keys)
        found = position < len(distinct)
        found[found] = distinct[position[found]] == query_keys[found]
        self.self_rows = np.full(len(query_keys), -1, dtype=np.int64)
        self.self_rows[found] = first[position[found]]
        self.members, member_of = np.unique(self.self_rows[found], return_inverse=True)
        outside = np.flatnonzero(~found)
        _keys, first_outside, outside_of = np.unique(query_keys[outside], return_index=True,
                                                     return_inverse=True)
        order = np.argsort(first_outside, kind="stable")  # by first occurrence
        rank_of = np.empty(len(order), dtype=np.int64)
        rank_of[order] = np.arange(len(order))
        self.outsiders = outside[first_outside[order]]
        self.which = np.empty(len(query_keys), dtype=np.int64)
        self.which[found] = member_of
        self.which[outside] = len(self.members) + rank_of[outside_of]

    def __len__(self):
        return len(self.members) + len(self.outsiders)

    def entries(self, start, stop):
        """Distinct entries ``start:stop``: for each, whether it is a reference row and its
        global row (in the reference, or among the queries)."""
        positions = np.arange(start, stop)
        is_member = positions < len(self.members)
        rows = np.where(is_member, self.members[np.minimum(positions, len(self.members) - 1)]
                        if len(self.members) else 0,
                        self.outsiders[np.maximum(positions - len(self.members), 0)]
                        if len(self.outsiders) else 0)
        return is_member, rows
