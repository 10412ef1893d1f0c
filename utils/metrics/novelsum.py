"""NovelSum of one dataset over the grid (docs/method.md section 4): density factors times
proximity-weighted means, in one process or over ranks."""

from dataclasses import dataclass

import numpy as np

from ..density.factor import density_factor
from ..density.reference import build_density_reference
from ..density.sharded import ShardedDensityReference
from ..errors import InputError, option
from ..io.vectors import as_vectors
from ..numerics.blocks import DEFAULT_BLOCK_MIB
from ..runtime.distributed import SINGLE
from .proximity import (
    ProximityProfile,
    density_grid,
    grid_number_text,
    per_sample_grid,
    proximity_profile,
)

DEFAULT_NEIGHBORS = (5, 10)


DEFAULT_DENSITY_POWERS = (0.0, 0.25, 0.5)


DEFAULT_DISTANCE_POWERS = (0.0, 1.0, 2.0)


@dataclass
class NovelSumResult:
    """NovelSum of one dataset over a grid of (k, beta, alpha).

    ``values``: column name (``neighbor_{k}_density_{beta}_distance_{alpha}``) -> NovelSum;
    ``per_sample``: column name -> (n,) novelty of each sample, whose mean is the value;
    ``density_factors``: ``neighbor_{k}_density_{beta}`` -> (n,) sigma_k^beta, for beta != 0;
    ``cos_distance``: mean cosine distance over all n*n pairs;
    ``nearest_index`` / ``nearest_distance``: each sample's most similar other sample and
    their cosine distance (-1 and NaN for a one-sample dataset).
    """

    values: dict
    per_sample: dict
    density_factors: dict
    cos_distance: float
    nearest_index: np.ndarray
    nearest_distance: np.ndarray


def profile_over_ranks(ranks, vectors, distance_powers, device, block_mib, progress,
                        exclude_self, neighbor_factors):
    """``proximity_profile`` of every row, each rank computing its block of rows and every
    rank receiving all of them (float64 sums, added in rank order)."""
    start, stop = ranks.block(len(vectors))
    part = proximity_profile(vectors, distance_powers, device, block_mib, progress,
                             exclude_self=exclude_self, neighbor_factors=neighbor_factors,
                             rows=(start, stop))
    if not ranks.grouped:
        return part
    return ProximityProfile(ranks.gather_arrays(part.means),
                            ranks.sum_float64(part.distance_sum),
                            ranks.gather_arrays(np.asarray(part.nearest_index, dtype=np.int64)),
                            ranks.gather_arrays(part.nearest_distance.astype(np.float64)))


def checked_density_powers(density_powers, reference):
    """The density powers as a list: by default those of the grid with a reference and (0,)
    without one, where any other power is refused."""
    if density_powers is None:
        return list(DEFAULT_DENSITY_POWERS if reference is not None else (0.0,))
    if reference is None and any(beta != 0 for beta in density_powers):
        raise InputError(f"density powers other than 0 need a reference set "
                         f"({option('reference')})")
    return list(density_powers)


def mean_sq_distances_over_ranks(vectors, reference, neighbors, device, block_mib, progress,
                                 ranks):
    """k -> every row's mean squared distance to its k nearest reference rows; under
    ``torchrun`` each rank sends its block of rows and every rank gets every row's."""
    reference = build_density_reference(reference, device, block_mib, ranks=ranks)
    if vectors.shape[1] != reference.width:
        raise InputError(f"vectors have {vectors.shape[1]} dimensions but the reference "
                         f"{reference.source} has {reference.width}")
    if isinstance(reference, ShardedDensityReference):
        start, stop = ranks.block(len(vectors))
        return reference.mean_sq_distances(vectors[start:stop], neighbors, progress)
    return reference.mean_sq_distances(vectors, neighbors, progress)


def novelsum_grid(vectors, reference=None, neighbors=DEFAULT_NEIGHBORS, density_powers=None,
                  distance_powers=DEFAULT_DISTANCE_POWERS, *, device="cpu",
                  block_mib=DEFAULT_BLOCK_MIB, neighbor_density=False, exclude_self=False,
                  typed_powers=(False, False), density_progress=None, distance_progress=None,
                  ranks=SINGLE):
    """NovelSum of ``vectors`` (docs/method.md section 4) at every grid point.

    ``reference``: vectors (or a ``density_reference``) for the density factor; without one
    only density power 0 is defined, and ``density_powers`` defaults to (0,). ``typed_powers``:
    whether the powers came from a command line (column names, docs/method.md section 4).
    ``neighbor_density`` / ``exclude_self``: the variants of section 8. Returns a
    ``NovelSumResult``.

    Under ``torchrun`` (``ranks`` grouped) every rank passes the whole dataset and its block of
    the reference (or a ``density_reference`` built with ``ranks``); each rank profiles its
    block of rows, and every rank returns the whole result.
    """
    vectors = as_vectors(vectors)
    neighbors, distance_powers = list(neighbors), list(distance_powers)
    density_powers = checked_density_powers(density_powers, reference)
    n = len(vectors)
    if exclude_self and n < 2:
        raise InputError(f"one sample, so {option('exclude_self')} leaves no distance to "
                         f"average")
    mean_sq_by_k = None
    if any(beta != 0 for beta in density_powers):
        mean_sq_by_k = mean_sq_distances_over_ranks(vectors, reference, neighbors, device,
                                                    block_mib, density_progress, ranks)
    neighbor_factors = ([density_factor(mean_sq_by_k[k], beta) if beta else np.ones(n)
                         for beta, k in density_grid(neighbors, density_powers)]
                        if neighbor_density else None)
    profile = profile_over_ranks(ranks, vectors, distance_powers, device, block_mib,
                                 distance_progress, exclude_self, neighbor_factors)
    per_sample = per_sample_grid(profile.means, mean_sq_by_k, neighbors, density_powers,
                                 distance_powers, typed_powers, neighbor_density)
    factors = {f"neighbor_{k}_density_{grid_number_text(beta, typed_powers[0])}":
               density_factor(mean_sq_by_k[k], beta)
               for beta, k in density_grid(neighbors, density_powers) if beta != 0}
    return NovelSumResult({c: float(np.mean(v)) for c, v in per_sample.items()}, per_sample,
                          factors, profile.distance_sum / n ** 2, profile.nearest_index,
                          profile.nearest_distance)
