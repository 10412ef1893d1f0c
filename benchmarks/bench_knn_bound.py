"""Benchmark: the certified kNN's two error bounds side by side (docs/method.md section 3).

A pool's own density (``DensityReference.mean_sq_distances``, neighbors 10, the CPU search) with
the search's error bounded by the worst case (gamma_{d+2}, holds whatever the BLAS does) and by
the random-walk model (four standard deviations), each on a fresh reference in the same run,
alternating, the median of ``--repeats``. Prints the candidates re-ranked, the queries searched
again, the seconds and the ratio of each to the random-walk model's, and checks that both give
the same mean distances.

    python benchmarks/bench_knn_bound.py                     # 40,000 x 384 and 40,000 x 3,000
    python benchmarks/bench_knn_bound.py --pool 10000 --dims 64
"""

import argparse
import time

import numpy as np
from common import BENCH_SPREAD, cpu_description
from synthetic import clustered_vectors

from utils.density.factor import DensityReference

MODELS = ("probable", "worst_case")


def density_run(pool, neighbors, model):
    """Seconds, candidates re-ranked, queries searched and the mean distances of one run."""
    reference = DensityReference(pool, search_error=model)
    index = reference.index()
    search, counts = index.search, {"candidates": 0, "queries": 0}

    def counted(queries, m):
        counts["candidates"] += len(queries) * min(m, len(pool))
        counts["queries"] += len(queries)
        return search(queries, m)

    index.search = counted
    start = time.perf_counter()
    means = reference.mean_sq_distances(pool, [neighbors])[neighbors]
    return time.perf_counter() - start, counts["candidates"], counts["queries"], means


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=40000)
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 3000])
    parser.add_argument("--neighbors", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"The certified kNN's error bound, a pool's own density, neighbors "
          f"{args.neighbors}; {cpu_description()}")
    print(f"{'pool':>7} {'dim':>5} {'bound':>11} {'re-ranked':>11} {'searched':>9} "
          f"{'seconds':>8} {'re-ranked x':>12} {'seconds x':>10}")
    # numba's search and re-ranking kernels load untimed: a pool above the small-search size
    density_run(clustered_vectors(16000, 8, 50, seed=1), args.neighbors, MODELS[0])
    for dim in args.dims:
        pool = clustered_vectors(args.pool, dim, 50, seed=0, spread=BENCH_SPREAD)
        runs = {model: [] for model in MODELS}
        for _ in range(args.repeats):
            for model in MODELS:
                runs[model].append(density_run(pool, args.neighbors, model))
        best = {model: sorted(runs[model], key=lambda run: run[0])[len(runs[model]) // 2]
                for model in MODELS}
        assert np.array_equal(best["probable"][3], best["worst_case"][3]), "bounds disagree"
        base = best["probable"]
        for model in MODELS:
            seconds, candidates, queries, _means = best[model]
            print(f"{args.pool:>7} {dim:>5} {model:>11} {candidates:>11,} {queries:>9,} "
                  f"{seconds:>8.2f} {candidates / base[1]:>12.2f} {seconds / base[0]:>10.2f}")


if __name__ == "__main__":
    main()
