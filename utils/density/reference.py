"""The density reference as a run builds it (one process, or sharded over ranks), and the
pool's density factors."""

import numpy as np

from ..errors import InputError, setting
from ..io.vectors import as_vectors
from ..numerics.blocks import DEFAULT_BLOCK_MIB
from ..runtime.distributed import SINGLE, block_starts
from .factor import DensityReference, density_factor
from .sharded import ShardedDensityReference

FLOAT32_MAX = float(np.finfo(np.float32).max)


def build_density_reference(reference, device="cpu", block_mib=DEFAULT_BLOCK_MIB,
                            source="the reference set", ranks=SINGLE):
    """A ``DensityReference`` from reference vectors (or one already built, returned as is):
    build it once to measure several datasets against it. Under ``torchrun`` (``ranks``
    grouped) ``reference`` is this rank's block of the reference rows, and every rank builds
    the ``ShardedDensityReference`` together."""
    if reference is None or isinstance(reference, (DensityReference, ShardedDensityReference)):
        return reference
    if ranks.grouped:
        with ranks.phase():  # a rank may hold no rows: an empty block is fine there
            block = (np.ascontiguousarray(reference, dtype=np.float32) if not len(reference)
                     else as_vectors(reference, source, allow_zero=True))
        return ShardedDensityReference(ranks, block, device, source=source,
                                       block_mib=block_mib)
    return DensityReference(as_vectors(reference, source, allow_zero=True), device,
                            source=source, block_mib=block_mib)


def pool_density(vectors, neighbors=10, density_power=0.5, reference=None, device="cpu",
                 progress=None, source="the pool", block_mib=DEFAULT_BLOCK_MIB, ranks=SINGLE):
    """The density factor sigma_k^beta of every pool row (float32), the pool itself being the
    reference unless ``reference`` is given. With beta = 0 every factor is 1: nothing is searched,
    deduplicated or checked against ``neighbors``. Under ``torchrun`` ``vectors`` and
    ``reference`` are this rank's blocks, and the factors of this rank's rows are returned."""
    if density_power == 0:
        return np.ones(len(vectors), dtype=np.float32)
    index = build_density_reference(vectors if reference is None else reference, device,
                                    block_mib, source, ranks)
    index.check_neighbors([neighbors])
    mean_sq = index.mean_sq_distances(vectors, [neighbors], progress)[neighbors]
    if ranks.grouped:
        start = int(block_starts(ranks, len(vectors))[ranks.rank])
        mean_sq = mean_sq[start:start + len(vectors)]
    factors = density_factor(mean_sq, density_power)
    with ranks.phase():  # a rank whose factors overflow stops every rank
        check_float32_factors(factors, density_power)
    return factors.astype(np.float32)


def given_density(index, given, neighbors=10, density_power=0.5, progress=None, ranks=SINGLE):
    """The density factor of each row of a given set (float32, docs/method.md section 10)
    against the built reference ``index``: as queries from elsewhere, none of their
    neighbours is left out as the query itself. ``given`` is whole on every rank."""
    if density_power == 0:
        return np.ones(len(given), dtype=np.float32)
    index.check_neighbors([neighbors])
    start, stop = ranks.block(len(given))
    mean_sq = index.mean_sq_distances(given[start:stop], [neighbors], progress,
                                      outside=True)[neighbors]
    factors = density_factor(mean_sq, density_power)
    with ranks.phase():
        check_float32_factors(factors, density_power)
    return factors.astype(np.float32)


def check_float32_factors(factors, density_power):
    """The selection stores (1 - cos) (rho(u) + rho(s)) in float32, up to 4 times the largest
    factor: refuse factors that would overflow it rather than select on infinities."""
    largest = float(np.max(factors, initial=0.0))
    if not largest * 4 <= FLOAT32_MAX:  # a value is (1 - cos) (rho(u) + rho(s)), 1 - cos <= 2
        raise InputError(f"{setting('density_power', density_power)}: density factors reach "
                         f"{largest:.3g}, more than float32 holds (the nearest-neighbour "
                         f"distances are tiny for this power); use a smaller power, or vectors "
                         f"of a larger scale")
