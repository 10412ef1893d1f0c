"""Checks that need several ranks, run by ``tests/test_distributed.py`` under ``torchrun``.

Each rank computes with its block of the rows (``utils.density.sharded``, ``utils.selection.sharded``); rank 0 compares with the
single-process computation on the whole data and prints one JSON line ``{check: result}``.
Usage: ``torchrun --standalone --nproc_per_node N tests/rank_checks.py``.
"""

import functools
import importlib.util
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from utils.runtime.device import nvidia_driver_present

if not nvidia_driver_present():  # the Triton kernel runs in Triton's interpreter (conftest)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402

from utils.selection.greedy import greedy_selection
from utils.density.reference import pool_density
from utils.density.factor import DensityReference
from utils.density.sharded import ShardedDensityReference
from utils.io.vectors import load_vectors
from utils.numerics.rows import unit_rows
from utils.runtime.distributed import start_ranks, stop_ranks
from utils.selection.cpu import NumpyEngine
from utils.selection.selection_engine import first_pick
from utils.selection.gpu import TorchEngine
from utils.selection.sharded import ShardedEngine

# The CPU engine with each of its kernels (bitwise the same values; the default picks by size).
NUMBA_ENGINE = functools.partial(NumpyEngine, kernels="numba")
NUMPY_ENGINE = functools.partial(NumpyEngine, kernels="numpy")

GOLDEN = REPO.parent / "shared" / "golden"
if not GOLDEN.is_dir():
    GOLDEN = REPO / "tests" / "golden"


def block(ranks, array):
    start, stop = ranks.block(len(array))
    return array[start:stop]


def golden_selections(ranks, pool):
    """Every golden NovelSelect run through the API, each rank holding its block."""
    runs = json.loads((GOLDEN / "novelselect" / "expected.json").read_text())
    return [greedy_selection(block(ranks, pool), run["k"], run["neighbors"],
                             run["density_power"], run["distance_power"], run["seed"],
                             ranks=ranks).picks == run["indices"]
            for run in runs]


def every_prefix_resumes(ranks, pool, engine_class):
    """Golden run 0 resumed from each of its prefixes, on sharded engines of one kind."""
    run = json.loads((GOLDEN / "novelselect" / "expected.json").read_text())[0]
    rho = pool_density(block(ranks, pool), run["neighbors"], run["density_power"], ranks=ranks)
    unit = unit_rows(block(ranks, pool))
    start, _stop = ranks.block(len(pool))
    failed = []
    for t in range(1, run["k"] + 1):
        local = engine_class(unit, rho, run["k"], run["distance_power"],
                             *(["cpu"] if engine_class is TorchEngine else []))
        picks = ShardedEngine(ranks, local, start, len(pool)).run(run["indices"][:t])
        if picks != run["indices"]:
            failed.append(t)
    return failed


def triton_golden(ranks, pool):
    """The first picks of golden run 1 on sharded Triton engines (Triton's interpreter on the CPU), or None
    without Triton."""
    if importlib.util.find_spec("triton") is None:
        return None
    from utils.selection.gpu import TritonEngine

    run = json.loads((GOLDEN / "novelselect" / "expected.json").read_text())[1]
    rho = pool_density(block(ranks, pool), run["neighbors"], run["density_power"], ranks=ranks)
    start, _stop = ranks.block(len(pool))
    k = 12  # greedy picks are prefix-stable: the first 12 of the run (the interpreter is slow)
    local = TritonEngine(unit_rows(block(ranks, pool)), rho, k, run["distance_power"], "cpu")
    engine = ShardedEngine(ranks, local, start, len(pool))
    return engine.run(first_pick(len(pool), run["seed"])) == run["indices"][:k]


def uneven(ranks, n, k, quality=False, engine_class=NUMBA_ENGINE):
    """A tiny pool split unevenly (a rank with one candidate, one with none, one whose rows are
    all picked): the sharded picks and novelty equal one engine's, on each CPU kernel and the
    torch engine."""
    rng = np.random.default_rng(n * 100 + k)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    if n > 3:
        vectors[n - 1] = vectors[0]  # an exact duplicate across ranks: the lowest index wins
    scores = rng.uniform(0.5, 2.0, n) if quality else None
    unit = unit_rows(vectors)
    rho = rng.uniform(0.5, 2.0, n).astype(np.float32)
    first = first_pick(n, 3)
    seen_one, seen_all = [], []
    expected = NumpyEngine(unit, rho, k, 1.0).run(first, scores,
                                                  lambda i, v: seen_one.append(v))
    start, stop = ranks.block(n)
    local = engine_class(unit[start:stop], rho[start:stop], k, 1.0,
                         *(["cpu"] if engine_class is TorchEngine else []))
    engine = ShardedEngine(ranks, local, start, n)
    picks = engine.run(first, scores, lambda i, v: seen_all.append(v))
    return picks == expected and np.array_equal(seen_one, seen_all, equal_nan=True)


def exact_ties_resume(ranks):
    """Three-hot binary pools (exact ties between distinct vectors): every prefix resumed on
    sharded numba engines picks what one uninterrupted engine picks (SPEC section 6)."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_resume import three_hot_pool

    failed = []
    for seed in range(3):
        pool = three_hot_pool(seed)
        unit, factors, k = unit_rows(pool), np.ones(len(pool), dtype=np.float32), 20
        full = NUMPY_ENGINE(unit, factors, k, 1.0).run(seed)
        start, stop = ranks.block(len(pool))
        for t in range(1, k):
            local = NUMBA_ENGINE(unit[start:stop], factors[start:stop], k, 1.0)
            if ShardedEngine(ranks, local, start, len(pool)).run(full[:t]) != full:
                failed.append((seed, t))
    return failed


def exact_ties_oracle(ranks):
    """Binary pools (1 to 4 ones, every alpha of tests/exact_oracle.py): the sharded picks,
    and those resumed from a prefix, on each CPU kernel and the torch engine, break exact
    ties to the lowest index as exact arithmetic does (tests/test_exact_ties.py)."""
    sys.path.insert(0, str(REPO / "tests"))
    from exact_oracle import ALPHAS, binary_pool, tie_failures
    from test_exact_ties import ROUNDING, TIE_RTOL

    failed = []
    for engine_class in (NUMBA_ENGINE, NUMPY_ENGINE, TorchEngine):
        for hot in (1, 2, 3, 4):
            for alpha in ALPHAS:
                pool = binary_pool(1001, hot, n=60)
                unit, factors, k = unit_rows(pool), np.ones(len(pool), dtype=np.float32), 16
                start, stop = ranks.block(len(pool))

                def sharded():
                    local = engine_class(unit[start:stop], factors[start:stop], k, alpha,
                                         *(["cpu"] if engine_class is TorchEngine else []))
                    return ShardedEngine(ranks, local, start, len(pool))

                picks = sharded().run(first_pick(len(pool), 1))
                if tie_failures(pool, picks, alpha, TIE_RTOL, ROUNDING):
                    failed.append((hot, alpha))
                if sharded().run(picks[:7]) != picks:
                    failed.append((hot, alpha, "resumed"))
    return failed


def density_bitwise(ranks, reference, queries):
    """Sharded mean kNN distances equal one process's bit for bit (duplicates included)."""
    ks = [3, 10]
    whole = DensityReference(reference).mean_sq_distances(queries, ks)
    sharded = ShardedDensityReference(ranks, block(ranks, reference))
    parts = sharded.mean_sq_distances(block(ranks, queries), ks)
    same_set = ShardedDensityReference(ranks, block(ranks, queries))
    own = same_set.mean_sq_distances(same_set.local_rows, ks)
    whole_own = DensityReference(queries).mean_sq_distances(queries, ks)
    return all(np.array_equal(parts[k], whole[k]) and np.array_equal(own[k], whole_own[k])
               for k in ks)


def crowd_bitwise(ranks):
    """A crowd of near-duplicates, where the float32 search ranks at random: the torch search
    split over ranks still gives one process's (exact) mean distances bit for bit."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_density import near_duplicate_crowd

    reference, queries = near_duplicate_crowd()
    ks = [3, 10]
    whole = DensityReference(reference, backend="torch").mean_sq_distances(queries, ks)
    sharded = ShardedDensityReference(ranks, block(ranks, reference), backend="torch")
    parts = sharded.mean_sq_distances(block(ranks, queries), ks)
    return all(np.array_equal(parts[k], whole[k]) for k in ks)


def main():
    ranks, _device = start_ranks(-1)
    pool = load_vectors(GOLDEN / "novelselect" / "embeddings").vectors
    reference = load_vectors(GOLDEN / "novelsum_default_grid" / "reference").vectors.copy()
    queries = reference[::3].copy()
    reference[5] = reference[400]  # duplicates of the reference across ranks
    queries[7] = queries[150]
    results = {
        "golden_selections": golden_selections(ranks, pool),
        "prefix_failures_numba": every_prefix_resumes(ranks, pool, NUMBA_ENGINE),
        "prefix_failures_numpy": every_prefix_resumes(ranks, pool, NUMPY_ENGINE),
        "prefix_failures_torch": every_prefix_resumes(ranks, pool, TorchEngine),
        "uneven": [uneven(ranks, n, k, quality, engine_class)
                   for engine_class in (NUMBA_ENGINE, NUMPY_ENGINE, TorchEngine)
                   for n, k, quality in
                   [(2, 2, False), (4, 4, False), (4, 3, True), (7, 7, True), (9, 5, False)]],
        "density_bitwise": density_bitwise(ranks, reference, queries) and crowd_bitwise(ranks),
        "exact_ties_failures": exact_ties_resume(ranks),
        "exact_ties_oracle_failures": exact_ties_oracle(ranks),
        "triton_golden": triton_golden(ranks, pool),
    }
    stop_ranks(ranks)
    if ranks.is_main:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
