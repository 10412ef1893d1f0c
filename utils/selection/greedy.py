"""A whole NovelSelect run on arrays (docs/method.md section 5): checks, density factors, the
engine, the greedy picks; in one process or over ranks."""

from dataclasses import dataclass, field

import numpy as np

from ..density.factor import DensityReference
from ..density.reference import build_density_reference, given_density, pool_density
from ..density.sharded import ShardedDensityReference
from ..errors import InputError
from ..io.vectors import as_vectors
from ..numerics.rows import unit_rows
from ..runtime.distributed import SINGLE, block_starts
from .selection_engine import first_pick
from .engine_choice import make_engine, select
from .gpu import TorchEngine
from .inputs import check_pick_count, check_quality_scores, check_resume_picks
from .memory import check_memory
from .sharded import ShardedEngine


@dataclass
class SelectionResult:
    """NovelSelect's picks, in pick order, and what each was worth when it was picked.

    ``novelty[t]``: the novelty v of pick t when it was picked (NaN for the first, random
    pick; beside a given set every pick has one); ``density_factor``: sigma_k^beta of every
    pool sample; ``quality``: the scores given, or None.
    """

    picks: list
    novelty: np.ndarray
    density_factor: np.ndarray
    quality: np.ndarray = field(default=None)


def reference_row_count(reference):
    """Rows of a reference given as vectors, or 0 for a reference already built (its copies
    exist, and were checked when it was)."""
    built = isinstance(reference, (DensityReference, ShardedDensityReference))
    return 0 if built else len(reference)


def check_rank_memory(ranks, n_local, n, k, dim, device, reference_rows, given_rows=0):
    """``check_memory`` on every rank for its block, agreed: a rank short of memory stops all."""
    with ranks.phase():
        try:
            # CPU ranks on one node share its memory; each GPU rank has its own device.
            check_memory(n_local, k, dim, device, reference_rows=reference_rows,
                         share=ranks.local_size if device == "cpu" else 1,
                         given_rows=given_rows)
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


def checked_given(given, dim, source):
    """A given set's vectors (docs/method.md section 10) as float32 rows of the pool's width."""
    given = as_vectors(given, source)
    if given.shape[1] != dim:
        raise InputError(f"{source}: vectors have {given.shape[1]} dimensions but the pool "
                         f"has {dim}")
    return given


def checked_reference(reference, dim, ranks):
    """Reference vectors as float32 rows of the pool's width (a rank may hold none), or a
    reference already built, as it is."""
    if reference is None or isinstance(reference, (DensityReference, ShardedDensityReference)):
        return reference
    reference = (np.ascontiguousarray(reference, dtype=np.float32)
                 if ranks.grouped and not len(reference)
                 else as_vectors(reference, "the reference", allow_zero=True))
    if reference.shape[1] != dim:
        raise InputError(f"the reference has {reference.shape[1]} dimensions but the pool has "
                         f"{dim}")
    return reference


def start_picks(resume_from, given, n, seed):
    """What the greedy loop starts from: the picks resumed from, else none beside a given set
    (its first pick is an argmax too), else the seed's random first pick."""
    if resume_from is not None:
        return resume_from
    return [] if given is not None else first_pick(n, seed)


def density_of(vectors, given, neighbors, density_power, reference, device, progress, source,
               ranks):
    """The density factors of the pool's rows and of a given set's (None without one), both
    against one reference search: the pool's own, or ``reference``. ``progress``: the two
    searches' progress reports."""
    if given is None:
        return pool_density(vectors, neighbors, density_power, reference, device, progress[0],
                            source, ranks=ranks), None
    if density_power != 0:  # one search index for the pool and the set
        reference = build_density_reference(vectors if reference is None else reference,
                                            device, source=source, ranks=ranks)
    return (pool_density(vectors, neighbors, density_power, reference, device, progress[0],
                         source, ranks=ranks),
            given_density(reference, given, neighbors, density_power, progress[1], ranks))


def greedy_selection(vectors, k, neighbors=10, density_power=0.5, distance_power=1.0, seed=42,
                     *, reference=None, quality=None, device="cpu", notify=None, on_pick=None,
                     density_progress=None, source=None, resume_from=None,
                     resume_source="resume_from", given=None, given_source="the given set",
                     given_progress=None, ranks=SINGLE):
    """Greedy NovelSelect (docs/method.md section 5): ``k`` picks from the pool ``vectors``.

    ``quality``: optional (n,) scores >= 0 multiplied into the novelty; ``reference``: density
    on other vectors; ``on_pick(index, novelty)`` hears of each pick as it is made;
    ``notify(str)`` of a slower kernel chosen; ``source`` names the density's reference set
    in messages. ``resume_from``: a list of distinct pool indices (at most ``k``) to continue
    greedily from instead of the seed's first pick: an earlier run's picks, or any start set;
    the first t picks of a run give that run's picks, and their novelty in the result is the
    one each had when picked (NaN for the first); ``resume_source`` names the list in
    messages. ``given``: vectors of a set the user already has (docs/method.md section 10),
    whose rows count as picks made before the first: no pick is drawn at random, and ``k``
    counts the new picks; ``given_source`` names it in messages, ``given_progress`` reports
    its density search. Returns a ``SelectionResult``.

    Under ``torchrun`` (``ranks`` grouped) ``vectors`` and ``reference`` are this rank's
    blocks of rows (``ranks.block``); ``quality``, ``resume_from`` and ``given`` are whole.
    Each rank keeps only its candidates' state; every rank returns the same, whole result.
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
        reference = checked_reference(reference, vectors.shape[1], ranks)
        if given is not None:
            given = checked_given(given, vectors.shape[1], given_source)
    reference_rows = (0 if density_power == 0 else
                      len(vectors) if reference is None else reference_row_count(reference))
    given_rows = 0 if given is None else len(given)
    check_rank_memory(ranks, len(vectors), n, k, vectors.shape[1], device, reference_rows,
                      given_rows)
    density_factors, given_factors = density_of(
        vectors, given, neighbors, density_power, reference, device,
        (density_progress, given_progress),
        source or ("the reference" if reference is not None else "the pool"), ranks)
    unit = unit_rows(vectors)
    engine = selection_engine(ranks, unit, density_factors, k + given_rows, distance_power,
                              device, notify, start, n)
    if given is not None:
        given = (unit_rows(given), given_factors)
    novelty = []

    def record(index, value):
        novelty.append(value)
        if on_pick is not None:
            on_pick(index, value)

    first = start_picks(resume_from, given, n, seed)
    if ranks.grouped:
        picks = engine.run(first, quality, on_pick=record, given=given)
        density_factors = ranks.gather_arrays(density_factors)
    else:
        picks = select(unit, density_factors, k, distance_power, first, quality, engine,
                       on_pick=record, given=given)
    return SelectionResult(picks, np.asarray(novelty, dtype=np.float64), density_factors,
                           quality)
