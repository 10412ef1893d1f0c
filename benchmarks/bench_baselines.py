"""Time the baseline metrics (utils/metrics/) and selections (utils/selection/baselines.py).

Each metric and each selection method runs once on seeded clustered embeddings; the table gives
its wall-clock seconds and the process's peak resident memory after it (ru_maxrss, which only
grows: a row's figure is the peak of everything up to it).

    python benchmarks/bench_baselines.py                   # 100,000 x 256, k = 1,000
    python benchmarks/bench_baselines.py --n 20000 --k 200 --device cuda:0
"""

import argparse
import resource
import time

from common import BENCH_SPREAD

from utils.metrics.registry import METRIC_NAMES, compute_metrics
from utils.numerics.rows import unit_rows
from utils.selection import baselines
from utils.selection.selection_engine import first_pick
from synthetic import clustered_vectors


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(name, call, rows):
    start = time.perf_counter()
    call()
    rows.append((name, time.perf_counter() - start, peak_rss_mib()))
    print(f"{name:<28} {rows[-1][1]:>9.2f} {rows[-1][2]:>13.0f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="pool and dataset rows")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=1_000, help="picks of each selection")
    parser.add_argument("--n_clusters", type=int, default=100, help="clusters of the metrics")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    parser.add_argument("--block_mib", type=float, default=256)
    args = parser.parse_args()

    vectors = clustered_vectors(args.n, args.dim, n_clusters=64, seed=0, spread=BENCH_SPREAD)
    unit = unit_rows(vectors)
    options = {"device": args.device, "block_mib": args.block_mib}
    print(f"{args.n} x {args.dim}, k = {args.k}, {args.n_clusters} clusters, {args.device}; "
          f"reference = the dataset itself")
    print(f"{'step':<28} {'seconds':>9} {'peak RSS MiB':>13}")
    rows = []
    for name in METRIC_NAMES:
        timed(f"metric {name}", lambda name=name: compute_metrics(
            (name,), vectors, vectors, n_clusters=args.n_clusters, **options), rows)
    timed("select random", lambda: baselines.random_selection(args.n, args.k, 42), rows)
    timed("select kcenter", lambda: baselines.kcenter_selection(
        unit, args.k, first_pick(args.n, 42), device=args.device), rows)
    timed("select kmeans", lambda: baselines.kmeans_selection(vectors, args.k, 42, **options),
          rows)
    timed("select repr_filter", lambda: baselines.repr_filter_selection(
        unit, args.k, baselines.DEFAULT_MAX_SIMILARITY, seed=42, **options), rows)
    print(f"{'metrics all (sum)':<28} {sum(r[1] for r in rows[:len(METRIC_NAMES)]):>9.2f}")


if __name__ == "__main__":
    main()
