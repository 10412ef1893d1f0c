"""Exact k-nearest-neighbour search and the density factor (SPEC section 3).

sigma_k(x) = 1 / (mean of the k smallest squared L2 distances from x to the reference set R
+ 1e-9) ** beta, with R's exact duplicate rows kept once and x itself left out when x is a row
of R. The published script always dropped the first neighbour, which is wrong for a query from
elsewhere (SPEC section 7); here the left-out row is found by identity, not by position.

Search backends, all exact (squared L2, as a faiss ``IndexFlatL2``): faiss on the CPU; faiss-gpu
when it is installed and a GPU is asked for; otherwise a blocked torch search on the GPU.
"""

import hashlib

import numpy as np

from .device import exact_torch
from .errors import InputError

DENSITY_EPS = 1e-9


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


def drop_self(sq_distances, labels, self_rows, k):
    """Keep k neighbours per query: without the query's own row when it is among the results.

    ``sq_distances`` and ``labels`` hold k + 1 results per query, nearest first; ``self_rows``
    gives each query's row in the reference or -1. Queries from elsewhere keep their first k.
    """
    is_self = labels == self_rows[:, None]
    keep = ~is_self
    keep[~is_self.any(axis=1), k:] = False
    return sq_distances[keep].reshape(len(sq_distances), k)


def mean_sq_distance_by_k(sq_distances, ks):
    """Mean of the first k (nearest) squared distances of each row, for each k in ``ks``."""
    prefix_sums = np.cumsum(sq_distances.astype(np.float64), axis=1)
    return {k: prefix_sums[:, k - 1] / k for k in ks}


def density_factor(mean_sq_distance, beta):
    """sigma_k ** beta = 1 / (mean squared kNN distance + 1e-9) ** beta (float64)."""
    return 1.0 / np.power(np.asarray(mean_sq_distance, dtype=np.float64) + DENSITY_EPS, beta)


class FaissFlatIndex:
    """An exact faiss ``IndexFlatL2`` over the reference rows, on the CPU or (faiss-gpu) a GPU."""

    def __init__(self, reference, device="cpu"):
        import faiss

        self.index = faiss.IndexFlatL2(reference.shape[1])
        if device != "cpu":
            self._gpu_resources = faiss.StandardGpuResources()  # must outlive the index
            self.index = faiss.index_cpu_to_gpu(self._gpu_resources, int(device.split(":")[1]),
                                                self.index)
        self.index.add(reference)

    def search(self, queries, n_results):
        return self.index.search(queries, n_results)


def merge_topk(best_d, best_i, block_d, block_i, n_results):
    """Merge two (distances, labels) candidate lists row by row into the n smallest (torch)."""
    import torch

    if best_d is None:
        return block_d, block_i
    all_d = torch.cat([best_d, block_d], dim=1)
    all_i = torch.cat([best_i, block_i], dim=1)
    top_d, where = torch.topk(all_d, n_results, dim=1, largest=False, sorted=True)
    return top_d, torch.gather(all_i, 1, where)


class TorchFlatIndex:
    """Exact squared-L2 kNN in query x reference blocks, as faiss's flat index computes it.

    The reference is moved to the device once; a 400,000 x 4,096 set is 6.5 GB, too much to
    copy again for every chunk of queries.
    """

    def __init__(self, reference, device="cpu", budget_bytes=1 << 30):
        torch = exact_torch()
        self.device = device
        self.reference = torch.from_numpy(reference).to(device)
        self.reference_sq = (self.reference * self.reference).sum(dim=1)
        self.ref_block = max(1, min(len(reference), budget_bytes // (4 * 4096)))
        self.query_block = max(1, budget_bytes // (4 * self.ref_block * 3))

    def search(self, queries, n_results):
        torch = exact_torch()
        n_ref = len(self.reference)
        ref_block = max(n_results, self.ref_block)  # the first block yields a full candidate list
        out_d = np.empty((len(queries), n_results), dtype=np.float32)
        out_i = np.empty((len(queries), n_results), dtype=np.int64)
        for q0 in range(0, len(queries), self.query_block):
            q = torch.from_numpy(queries[q0:q0 + self.query_block]).to(self.device)
            q_sq = (q * q).sum(dim=1, keepdim=True)
            best_d = best_i = None
            for r0 in range(0, n_ref, ref_block):
                r1 = r0 + ref_block
                block = (q_sq + self.reference_sq[None, r0:r1]
                         - 2.0 * (q @ self.reference[r0:r1].T)).clamp_(min=0.0)
                take = min(n_results, block.shape[1])
                block_d, block_i = torch.topk(block, take, dim=1, largest=False, sorted=True)
                best_d, best_i = merge_topk(best_d, best_i, block_d, block_i + r0, n_results)
            out_d[q0:q0 + len(q)] = best_d.cpu().numpy()
            out_i[q0:q0 + len(q)] = best_i.cpu().numpy()
        return out_d, out_i


def faiss_gpu_available():
    """Whether the installed faiss was built with GPU support and sees a GPU."""
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def flat_index(reference, device="cpu", backend=None):
    """An exact squared-L2 index over ``reference``, with ``search(queries, n_results)``.

    ``backend`` is ``"faiss"`` or ``"torch"``; by default faiss on the CPU and on a GPU when
    faiss-gpu is installed, torch on a GPU otherwise.
    """
    reference = np.ascontiguousarray(reference, dtype=np.float32)
    if backend is None:
        backend = "faiss" if device == "cpu" or faiss_gpu_available() else "torch"
    if backend == "faiss":
        return FaissFlatIndex(reference, device)
    return TorchFlatIndex(reference, device)


def knn_search(reference, queries, n_results, device="cpu", backend=None):
    """Squared L2 distances and labels of the ``n_results`` nearest reference rows, nearest first."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    return flat_index(reference, device, backend).search(queries, n_results)


class DensityReference:
    """The reference set R of SPEC section 3, ready to give mean kNN distances of queries."""

    def __init__(self, vectors, device="cpu", backend=None, source="the reference set"):
        self.rows, self._lookup = unique_rows(vectors)
        self.device = device
        self.backend = backend
        self.source = source
        self._index = None  # built on the first search, then kept for every chunk and dataset

    def __len__(self):
        return len(self.rows)

    def check_neighbors(self, ks, option="--neighbors"):
        """Every k must satisfy 1 <= k < |R| (distinct rows), so a member keeps k others."""
        for k in ks:
            if k < 1 or k >= len(self.rows):
                raise InputError(f"{option} {k}: must be at least 1 and below the number of "
                                 f"distinct rows of {self.source} ({len(self.rows)})")

    def index(self):
        """The search index over the reference rows, built once."""
        if self._index is None:
            self._index = flat_index(self.rows, self.device, self.backend)
        return self._index

    def mean_sq_distances(self, queries, ks, progress=None, chunk_rows=8192):
        """For each k in ``ks``: the mean squared distance of each query to its k nearest rows.

        Queries are searched in chunks of ``chunk_rows`` so that ``progress`` (for example
        tqdm, wrapping the list of chunk starts) can report on a long search.
        """
        self.check_neighbors(ks)
        k_max = max(ks)
        starts = list(range(0, len(queries), chunk_rows))
        kept = []
        for start in (progress(starts) if progress else starts):
            chunk = queries[start:start + chunk_rows]
            sq_distances, labels = self.index().search(
                np.ascontiguousarray(chunk, dtype=np.float32), k_max + 1)
            self_rows = rows_in_reference(chunk, self.rows, self._lookup)
            kept.append(drop_self(sq_distances, labels, self_rows, k_max))
        return mean_sq_distance_by_k(np.concatenate(kept), ks)
