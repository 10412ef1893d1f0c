"""The Python API: NovelSum and NovelSelect on arrays, and embedding a list of texts.

Plain functions for a notebook; the three scripts call the same functions. From the
repository root::

    import numpy as np
    from utils.api import embed_texts, novelselect, novelsum

    vectors = embed_texts(["first text", "second text", ...], "path/to/model")
    result = novelsum(vectors, reference=pool_vectors)        # the default 18-point grid
    result.values["neighbor_10_density_0.5_distance_1"]       # the dataset's NovelSum
    result.per_sample["neighbor_10_density_0.5_distance_1"]   # each sample's share
    picked = novelselect(pool_vectors, k=1000)
    picked.picks, picked.novelty                              # indices, novelty at each pick

Arrays are (samples x dimensions); anything numeric converts to float32. Bad input raises
``utils.errors.InputError`` with a one-line message. Every number is defined in
docs/method.md.
"""

from dataclasses import dataclass, field

import numpy as np

from .density.factor import DensityReference, density_factor
from .density.sharded import ShardedDensityReference
from .errors import InputError, option
from .io.vectors import check_vectors
from .metrics.proximity import ProximityProfile, density_grid, grid_number_text, per_sample_grid, proximity_profile
from .numerics.blocks import DEFAULT_BLOCK_MIB
from .numerics.rows import unit_rows
from .runtime.distributed import SINGLE, block_starts
from .selection.engine import first_pick
from .selection.engines import make_engine, select
from .selection.gpu import TorchEngine
from .selection.inputs import check_pick_count, check_quality_scores, check_resume_picks
from .selection.memory import check_memory
from .selection.sharded import ShardedEngine

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


@dataclass
class SelectionResult:
    """NovelSelect's picks, in pick order, and what each was worth when it was picked.

    ``novelty[t]``: the novelty v of pick t when it was picked (NaN for the first, random
    pick, and for the picks a resumed selection started from); ``density_factor``: sigma_k^beta
    of every pool sample; ``quality``: the scores given, or None.
    """

    picks: list
    novelty: np.ndarray
    density_factor: np.ndarray
    quality: np.ndarray = field(default=None)


def as_vectors(vectors, what="vectors", allow_zero=False):
    """A checked float32 (n, d) array: finite, non-empty, no zero rows unless allowed."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or not array.size:
        raise InputError(f"{what}: expected a non-empty 2-D array (samples x dimensions), "
                         f"found shape {array.shape}")
    check_vectors(array, what, allow_zero=allow_zero)
    return array


def density_reference(reference, device="cpu", block_mib=DEFAULT_BLOCK_MIB,
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


def novelsum(vectors, reference=None, neighbors=DEFAULT_NEIGHBORS, density_powers=None,
             distance_powers=DEFAULT_DISTANCE_POWERS, *, device="cpu",
             block_mib=DEFAULT_BLOCK_MIB, neighbor_density=False, exclude_self=False,
             given=(False, False), density_progress=None, distance_progress=None,
             ranks=SINGLE):
    """NovelSum of ``vectors`` (docs/method.md section 4) at every grid point.

    ``reference``: vectors (or a ``density_reference``) for the density factor; without one
    only density power 0 is defined, and ``density_powers`` defaults to (0,). ``given``:
    whether the powers came from a command line (column names, docs/method.md section 4).
    ``neighbor_density`` / ``exclude_self``: the variants of section 8. Returns a
    ``NovelSumResult``.

    Under ``torchrun`` (``ranks`` grouped) every rank passes the whole dataset and its block of
    the reference (or a ``density_reference`` built with ``ranks``); each rank profiles its
    block of rows, and every rank returns the whole result.
    """
    vectors = as_vectors(vectors)
    neighbors, distance_powers = list(neighbors), list(distance_powers)
    if density_powers is None:
        density_powers = list(DEFAULT_DENSITY_POWERS if reference is not None else (0.0,))
    density_powers = list(density_powers)
    uses_density = any(beta != 0 for beta in density_powers)
    if uses_density and reference is None:
        raise InputError(f"density powers other than 0 need a reference set ({option('reference')})")
    n = len(vectors)
    if exclude_self and n < 2:
        raise InputError(f"one sample, so {option('exclude_self')} leaves no distance to average")
    mean_sq_by_k = None
    if uses_density:
        reference = density_reference(reference, device, block_mib, ranks=ranks)
        if vectors.shape[1] != reference.width:
            raise InputError(f"vectors have {vectors.shape[1]} dimensions but the reference "
                             f"{reference.source} has {reference.width}")
        if isinstance(reference, ShardedDensityReference):
            start, stop = ranks.block(n)  # each rank sends its block; all get every row's
            mean_sq_by_k = reference.mean_sq_distances(vectors[start:stop], neighbors,
                                                       density_progress)
        else:
            mean_sq_by_k = reference.mean_sq_distances(vectors, neighbors, density_progress)
    neighbor_factors = ([density_factor(mean_sq_by_k[k], beta) if beta else np.ones(n)
                         for beta, k in density_grid(neighbors, density_powers)]
                        if neighbor_density else None)
    profile = profile_over_ranks(ranks, vectors, distance_powers, device, block_mib,
                                 distance_progress, exclude_self, neighbor_factors)
    per_sample = per_sample_grid(profile.means, mean_sq_by_k, neighbors, density_powers,
                                 distance_powers, given, neighbor_density)
    factors = {f"neighbor_{k}_density_{grid_number_text(beta, given[0])}":
               density_factor(mean_sq_by_k[k], beta)
               for beta, k in density_grid(neighbors, density_powers) if beta != 0}
    return NovelSumResult({c: float(np.mean(v)) for c, v in per_sample.items()}, per_sample,
                          factors, profile.distance_sum / n ** 2, profile.nearest_index,
                          profile.nearest_distance)


def pool_density(vectors, neighbors=10, density_power=0.5, reference=None, device="cpu",
                 progress=None, source="the pool", block_mib=DEFAULT_BLOCK_MIB, ranks=SINGLE):
    """The density factor sigma_k^beta of every pool row (float32), the pool itself being the reference
    unless ``reference`` is given. With beta = 0 every factor is 1: nothing is searched,
    deduplicated or checked against ``neighbors``. Under ``torchrun`` ``vectors`` and
    ``reference`` are this rank's blocks, and the factors of this rank's rows are returned."""
    if density_power == 0:
        return np.ones(len(vectors), dtype=np.float32)
    index = density_reference(vectors if reference is None else reference, device, block_mib,
                              source, ranks)
    index.check_neighbors([neighbors])
    mean_sq = index.mean_sq_distances(vectors, [neighbors], progress)[neighbors]
    if ranks.grouped:
        start = int(block_starts(ranks, len(vectors))[ranks.rank])
        mean_sq = mean_sq[start:start + len(vectors)]
    return density_factor(mean_sq, density_power).astype(np.float32)


def check_rank_memory(ranks, n_local, n, k, dim, device):
    """``check_memory`` on every rank for its block, agreed: a rank short of memory stops all."""
    with ranks.phase():
        try:
            # CPU ranks on one node share its memory; each GPU rank has its own device.
            check_memory(n_local, k, dim, device, share=ranks.local_size if device == "cpu"
                         else 1)
        except InputError as err:
            if not ranks.grouped:
                raise
            raise InputError(f"rank {ranks.rank} ({device}, rows {n_local:,} of {n:,}): "
                             f"{err}") from None


def selection_engine(ranks, unit, density_factors, k, alpha, device, notify, start, n):
    """The engine for this rank's candidates: ``make_engine``'s, wrapped in a
    ``ShardedEngine`` under ``torchrun``. Every rank runs the same kernel: if the fused Triton
    kernel is not usable on one of them, all take the torch kernel."""
    engine = None
    with ranks.phase():  # a GPU fault in one rank's kernel check stops every rank
        engine = make_engine(unit, density_factors, k, alpha, device, notify)
    if not ranks.grouped:
        return engine
    kinds = ranks.gather_objects(type(engine).__name__)
    if len(set(kinds)) > 1:
        if notify is not None:
            notify(f"the ranks' kernels differ ({', '.join(sorted(set(kinds)))}); every rank "
                   f"uses the torch kernel")
        del engine  # its stored values go before the torch engine allocates its own
        if device != "cpu":
            import torch

            torch.cuda.empty_cache()
        engine = TorchEngine(unit, density_factors, k, alpha, device)
    return ShardedEngine(ranks, engine, start, n)


def novelselect(vectors, k, neighbors=10, density_power=0.5, distance_power=1.0, seed=42, *,
                reference=None, quality=None, device="cpu", notify=None, on_pick=None,
                density_progress=None, source=None, resume_from=None,
                resume_source="resume_from", ranks=SINGLE):
    """Greedy NovelSelect (docs/method.md section 5): ``k`` picks from the pool ``vectors``.

    ``quality``: optional (n,) scores >= 0 multiplied into the novelty; ``reference``: density
    on other vectors; ``on_pick(index, novelty)`` hears of each pick as it is made;
    ``notify(str)`` of a slower kernel chosen; ``source`` names the density's reference set
    in messages. ``resume_from``: a list of distinct pool indices (at most ``k``) to continue
    greedily from instead of the seed's first pick: an earlier run's picks, or any start set;
    the first t picks of a run give that run's picks. Their novelty is NaN in the result (not
    computed); ``resume_source`` names the list in messages. Returns a ``SelectionResult``.

    Under ``torchrun`` (``ranks`` grouped) ``vectors`` and ``reference`` are this rank's
    blocks of rows (``ranks.block``); ``quality`` and ``resume_from`` are whole. Each rank
    keeps only its candidates' state; every rank returns the same, whole result.
    """
    with ranks.phase():  # every check on every rank, agreed, before any long work
        vectors = (as_vectors(vectors, "the pool") if len(vectors) or not ranks.grouped
                   else np.ascontiguousarray(vectors, dtype=np.float32))
    starts = block_starts(ranks, len(vectors))
    start, n = int(starts[ranks.rank]), int(starts[-1])
    with ranks.phase():
        check_pick_count(k, n)
        if resume_from is not None:
            resume_from = check_resume_picks(resume_from, n, k, resume_source)
        if quality is not None:
            quality = check_quality_scores(quality, n, "quality scores")
        if reference is not None and not isinstance(reference, (DensityReference,
                                                                ShardedDensityReference)):
            reference = (np.ascontiguousarray(reference, dtype=np.float32)
                         if ranks.grouped and not len(reference)
                         else as_vectors(reference, "the reference", allow_zero=True))
            if reference.shape[1] != vectors.shape[1]:
                raise InputError(f"the reference has {reference.shape[1]} dimensions but the "
                                 f"pool has {vectors.shape[1]}")
    check_rank_memory(ranks, len(vectors), n, k, vectors.shape[1], device)
    density_factors = pool_density(vectors, neighbors, density_power, reference, device, density_progress,
                       source or ("the reference" if reference is not None else "the pool"),
                       ranks=ranks)
    unit = unit_rows(vectors)
    engine = selection_engine(ranks, unit, density_factors, k, distance_power, device, notify, start, n)
    novelty = []

    def record(index, value):
        novelty.append(value)
        if on_pick is not None:
            on_pick(index, value)

    first = first_pick(n, seed) if resume_from is None else resume_from
    if ranks.grouped:
        picks = engine.run(first, quality, on_pick=record)
        density_factors = ranks.gather_arrays(density_factors)
    else:
        picks = select(unit, density_factors, k, distance_power, first, quality, engine, on_pick=record)
    return SelectionResult(picks, np.asarray(novelty, dtype=np.float64), density_factors, quality)


def embed_texts(texts, model_path, device="cpu", backend="auto", max_length=256,
                batch_size=32):
    """Embed a list of texts (docs/method.md section 2): a (len(texts), d) float32 array.

    ``model_path``: a model folder or a Hugging Face model id in the local cache; ``backend``:
    ``auto``, ``sentence-transformers``, ``transformers`` or ``vllm``.
    """
    from .embedding.backends import choose_backend, make_backend, resolve_model_path

    texts = list(texts)
    if not all(isinstance(text, str) for text in texts):
        raise InputError("embed_texts takes a list of strings")
    folder = resolve_model_path(model_path)
    chosen = choose_backend(backend, folder, device)
    return make_backend(chosen, folder, device, max_length, batch_size).embed(texts)
