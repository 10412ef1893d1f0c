"""Benchmark: how close a step of the CPU selection comes to the machine's memory bandwidth.

A step of the CPU engine (utils/selection/cpu_kernels.py) reads each active candidate's unit
vector (4 d bytes) and density factor (4), reads the tail of its sorted values behind the new
value twice (its sum, then its move) and writes it once (12 bytes a value), and reads and
writes its sum and value (20): bytes per pick = sum over candidates of 4 d + 12 tail + 24. The
tails are counted on every ``--sample``-th step. The bound is those bytes over the bandwidth of
a parallel copy (bytes read + written) of two arrays of the sorted values' size, the memory a
step walks (in cache when it fits), or of 1 GiB when that is faster (the lower bound); the table
gives our time per pick against it.

    python benchmarks/bench_bandwidth.py                         # 40,000 x 384, k = 1,000
    python benchmarks/bench_bandwidth.py --pool 5000 --dim 256 --k 1000
"""

import argparse
import time

import numba
import numpy as np
from common import BENCH_SPREAD, cpu_description

from utils.density.reference import pool_density
from utils.numerics.rows import unit_rows
from utils.selection.cpu import NumpyEngine
from utils.selection.selection_engine import first_pick
from synthetic import clustered_vectors


@numba.njit(parallel=True)
def parallel_copy(source, target):
    for i in numba.prange(source.shape[0]):
        target[i] = source[i]


def copy_bandwidth(n_bytes, repeats=20):
    """Bytes read + written per second by a parallel copy of ``n_bytes``, best of ``repeats``."""
    source = np.ones(n_bytes // 4, dtype=np.float32)
    target = np.empty_like(source)
    parallel_copy(source[:16], target[:16])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        parallel_copy(source, target)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


def step_bytes(engine, dim):
    """Bytes the step that just ran moved: tails from its stored values and new values."""
    t = engine.t  # values held after the step
    active = engine.active
    tails = (engine.sorted_values[active, :t] > engine.values[active, None]).sum(axis=1)
    return int(active.sum()) * (4 * dim + 24) + 12 * int(tails.sum())


def run(pool, k, sample):
    """Time every step of a selection of ``k`` (alpha 1, the pool's own density, k = 10,
    beta = 0.5); returns (seconds per pick, bytes per pick) over the sampled steps."""
    factors = pool_density(pool, 10, 0.5)
    engine = NumpyEngine(unit_rows(pool), factors, k, 1.0, kernels="numba")
    engine.add_pick(first_pick(len(pool), 42))
    seconds = moved = 0.0
    for step in range(2, k):
        pick, _novelty = engine.best()
        start = time.perf_counter()
        engine.add_pick(pick)
        elapsed = time.perf_counter() - start
        if step % sample == 0:
            seconds += elapsed
            moved += step_bytes(engine, pool.shape[1])
    steps = sum(1 for step in range(2, k) if step % sample == 0)
    return seconds / steps, moved / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=40000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=25, help="count tails every N-th step")
    args = parser.parse_args()

    pool = clustered_vectors(args.pool, args.dim, 50, seed=0, spread=BENCH_SPREAD)
    working_set = args.pool * (args.k - 1) * 4  # the sorted values
    bandwidth = copy_bandwidth(max(working_set, 64 * 2**20))
    dram = copy_bandwidth(2**30)
    seconds, moved = run(pool, args.k, args.sample)
    bound = moved / max(bandwidth, dram)
    print(f"NovelSelect step on the CPU; {cpu_description()}")
    print(f"copy bandwidth: {bandwidth / 1e9:.1f} GB/s over {working_set / 2**20:.0f} MiB "
          f"(the sorted values), {dram / 1e9:.1f} GB/s over 1 GiB")
    print(f"{'pool':>7} {'dim':>5} {'k':>6} {'ms/pick':>8} {'MB/pick':>8} {'bound ms':>9} "
          f"{'ours/bound':>11}")
    print(f"{args.pool:>7} {args.dim:>5} {args.k:>6} {seconds * 1e3:>8.2f} {moved / 1e6:>8.1f} "
          f"{bound * 1e3:>9.2f} {seconds / bound:>10.2f}x")


if __name__ == "__main__":
    main()
