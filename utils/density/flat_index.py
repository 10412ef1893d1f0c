"""Flat (brute-force) float32 indexes that propose nearest-neighbour candidates: numpy's
matrix products, faiss or torch.

Which one runs where (``flat_index``) was measured, not assumed: on the CPU the blocked
matrix products of ``gemm_search`` (numpy's BLAS, a numba partial selection) beat faiss's
flat search 3x (5,000 x 20,000 x 256: 0.6 s against 1.7 s on the Intel Xeon of
docs/benchmarks.md), and 5x when the queries are the rows, whose block pairs it computes once;
on a GPU faiss-gpu when it is installed, torch otherwise.
"""

import abc
import contextlib
import math

import numpy as np

from ..numerics.blocks import DEFAULT_BLOCK_MIB, MIB, row_blocks, rows_per_block
from ..numerics.compute import exact_torch


class FlatIndex(abc.ABC):
    """What the certified kNN asks of a search: ``search`` proposes candidates, and
    ``reference`` holds the rows on ``device`` (numpy on the CPU, a tensor on a GPU) that the
    exact re-ranking reads."""

    def __init__(self, reference, device):
        self.reference = reference
        self.device = device

    @abc.abstractmethod
    def search(self, queries, n_results):
        """(squared L2 distances, labels) of the ``n_results`` nearest rows, nearest first."""

    def expect_queries(self, count):
        """Hear that about ``count`` queries will be searched, in several calls (a search may
        choose its method by the whole job, not by one call's share)."""

    def rerank_kernels(self):
        """The CPU re-ranking's kernels after this search (``rerank_cpu.rerank_exact_cpu``):
        chosen by the re-ranking's size, unless the search runs numba itself."""
        return "auto"


class NumpyFlatIndex(FlatIndex):
    """The CPU's search: float32 matrix products in blocks within ``block_mib`` and a partial
    selection (``gemm_search.GemmSearch``), the form faiss computes, hence the same error
    bound for the certified kNN."""

    def __init__(self, reference, block_mib=DEFAULT_BLOCK_MIB):
        from .gemm_search import GemmSearch

        super().__init__(reference, "cpu")
        self.searcher = GemmSearch(reference, block_mib * MIB)

    def search(self, queries, n_results):
        return self.searcher.search(queries, n_results)

    def expect_queries(self, count):
        self.searcher.expected_queries = count

    def rerank_kernels(self):
        """numba's when the search runs its numba kernels (numba's start is paid then)."""
        return "auto" if self.searcher.is_small(0) else "numba"


class FaissFlatIndex(FlatIndex):
    """An exact faiss ``IndexFlatL2`` over the reference rows, on the CPU or (faiss-gpu) a GPU."""

    def __init__(self, reference, device="cpu"):
        import faiss

        from ..runtime.device import cpu_threads

        super().__init__(reference, device)
        self.threads = cpu_threads()  # torchrun sets OMP_NUM_THREADS=1 per rank
        self.index = faiss.IndexFlatL2(reference.shape[1])
        if device != "cpu":
            # The exact re-ranking of the candidates runs on the GPU too, on its own copy.
            self.reference = exact_torch().from_numpy(reference).to(device)
            self._gpu_resources = faiss.StandardGpuResources()  # must outlive the index
            self.index = faiss.index_cpu_to_gpu(self._gpu_resources, int(device.split(":")[1]),
                                                self.index)
        with faiss_threads(self.threads):
            self.index.add(reference)

    def search(self, queries, n_results):
        with faiss_threads(self.threads):
            return self.index.search(queries, n_results)


@contextlib.contextmanager
def faiss_threads(n_threads):
    """faiss's OpenMP threads at ``n_threads`` in the block, as they were after it (the
    setting is process-wide)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n_threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def merge_topk(best_d, best_i, block_d, block_i, n_results):
    """Merge two (distances, labels) candidate lists row by row into the n smallest (torch)."""
    import torch

    if best_d is None:
        return block_d, block_i
    all_d = torch.cat([best_d, block_d], dim=1)
    all_i = torch.cat([best_i, block_i], dim=1)
    top_d, where = torch.topk(all_d, n_results, dim=1, largest=False, sorted=True)
    return top_d, torch.gather(all_i, 1, where)


# Working bytes of the torch search: per (query, reference) pair of a block, the inner products
# and the distances (float32); per result of a query, the two candidate lists being merged, their
# concatenation and the merged list (float32 distances and int64 labels, about 4 copies).
PAIR_BYTES = 4 + 4


MERGE_BYTES_PER_RESULT = 4 * (4 + 8)


class TorchFlatIndex(FlatIndex):
    """Exact squared-L2 kNN in query x reference blocks, as faiss's flat index computes it.

    Blocks are planned by ``utils.numerics.blocks`` from ``block_mib``, the whole working memory of one
    block: per (query, reference) pair the inner products and the distances made from them
    (float32, 4 + 4 bytes); per query row its vector and two candidate lists being merged. The
    reference is moved to the device once; a 400,000 x 4,096 set is 6.5 GB, too much to copy
    again for every block of queries.
    """

    def __init__(self, reference, device="cpu", block_mib=DEFAULT_BLOCK_MIB):
        torch = exact_torch()
        super().__init__(torch.from_numpy(reference).to(device), device)
        self.reference_sq = (self.reference * self.reference).sum(dim=1)
        self.block_bytes = block_mib * MIB

    def reference_blocks(self, n_results):
        """Reference rows of one block: about a square block of pairs within the budget, and at
        least ``n_results`` rows, so the first block yields a full candidate list."""
        square = math.isqrt(rows_per_block(PAIR_BYTES, self.block_bytes))
        step = min(len(self.reference), max(n_results, square, 1))
        return [(start, min(len(self.reference), start + step))
                for start in range(0, len(self.reference), step)]

    def query_blocks(self, n_queries, n_results):
        """Query rows of one block: as many as fit in the budget beside one reference block."""
        ref_rows = self.reference_blocks(n_results)[0][1]
        per_query = (PAIR_BYTES * ref_rows + 4 * self.reference.shape[1]
                     + MERGE_BYTES_PER_RESULT * n_results)
        return list(row_blocks(n_queries, per_query, self.block_bytes))

    def search(self, queries, n_results):
        torch = exact_torch()
        out_d = np.empty((len(queries), n_results), dtype=np.float32)
        out_i = np.empty((len(queries), n_results), dtype=np.int64)
        ref_blocks = self.reference_blocks(n_results)
        for q0, q1 in self.query_blocks(len(queries), n_results):
            q = torch.from_numpy(queries[q0:q1]).to(self.device)
            q_sq = (q * q).sum(dim=1, keepdim=True)
            best_d = best_i = None
            for r0, r1 in ref_blocks:
                block = (q_sq + self.reference_sq[None, r0:r1]).sub_(
                    (q @ self.reference[r0:r1].T).mul_(2.0)).clamp_(min=0.0)
                take = min(n_results, block.shape[1])
                block_d, block_i = torch.topk(block, take, dim=1, largest=False, sorted=True)
                best_d, best_i = merge_topk(best_d, best_i, block_d, block_i + r0, n_results)
            out_d[q0:q1] = best_d.cpu().numpy()
            out_i[q0:q1] = best_i.cpu().numpy()
        return out_d, out_i


def faiss_gpu_available():
    """Whether the installed faiss was built with GPU support and sees a GPU."""
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def flat_index(reference, device="cpu", backend=None, block_mib=DEFAULT_BLOCK_MIB):
    """An exact squared-L2 index over ``reference``, with ``search(queries, n_results)``.

    ``backend`` is ``"numpy"`` (the CPU only), ``"faiss"`` or ``"torch"``; by default the
    fastest measured (module docstring): numpy on the CPU, faiss on a GPU when faiss-gpu is
    installed, torch on a GPU otherwise. ``block_mib``: working memory of one block of the
    numpy and torch searches (faiss plans its own).
    """
    reference = np.ascontiguousarray(reference, dtype=np.float32)
    if backend is None:
        backend = "numpy" if device == "cpu" else "faiss" if faiss_gpu_available() else "torch"
    if backend == "numpy":
        if device != "cpu":
            raise ValueError(f"the numpy search runs on the CPU only, not on {device}")
        return NumpyFlatIndex(reference, block_mib)
    if backend == "faiss":
        return FaissFlatIndex(reference, device)
    return TorchFlatIndex(reference, device, block_mib)
