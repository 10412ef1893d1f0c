"""Benchmark: novelsum.py against the reference algorithm, both as whole processes.

Target n x dim (rows drawn from the reference) against a clustered reference (20,000 x 256 by
default), default 18-point grid, JSON shards as the reference scripts read them (or .npy).
Prints a table of wall times and the ratio, and checks both give the same numbers.

    python benchmarks/bench_novelsum.py                  # sizes 2000 5000 10000, on the CPU
    python benchmarks/bench_novelsum.py --sizes 2000 --skip-baseline-above 5000
    # the paper's scale on a GPU (the reference algorithm would need a 400k-row faiss index
    # and hours on the CPU, so it is skipped):
    python benchmarks/bench_novelsum.py --sizes 10000 --reference-size 400000 --dim 4096 \\
        --format npy --gpu-id 0 --skip-baseline-above 0
"""

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import BENCH_SPREAD, cpu_description, timed, write_shards, write_vectors

from synthetic import clustered_vectors


def read_row(path):
    with open(path, newline="") as handle:
        row = next(csv.DictReader(handle))
    return [float(v) for k, v in row.items() if k != "Dataset Name"]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--reference-size", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--format", choices=["json", "npy"], default="json")
    parser.add_argument("--gpu-id", type=int, default=-1, help="for novelsum.py (-1: CPU)")
    parser.add_argument("--skip-baseline-above", type=int, default=10**9)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of ours, the median reported (the reference runs once)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_novelsum_"))
    reference = clustered_vectors(args.reference_size, args.dim, 50, seed=0,
                                  spread=BENCH_SPREAD)
    write_shards(work / "ref", reference, args.format, shard_rows=5000)
    rng = np.random.default_rng(1)
    device = "CPU" if args.gpu_id < 0 else f"GPU {args.gpu_id}"
    print(f"NovelSum, {args.dim} dimensions, {args.format} shards, ours on the {device}; "
          f"{cpu_description()}")
    print(f"{'target':>8} {'reference':>10} {'ours (s)':>9} {'baseline (s)':>13} {'ratio':>7}"
          f" {'max rel diff':>13}")
    for n in args.sizes:
        target = write_vectors(work / f"target_{n}",
                               reference[rng.choice(len(reference), n, replace=False)],
                               args.format)
        ours_csv, base_csv = work / f"ours_{n}.csv", work / f"base_{n}.csv"
        ours, _ = timed([sys.executable, "novelsum.py", "--single_dataset_path", str(target),
                         "--dense_ref_dir", str(work / "ref"), "--output_csv", str(ours_csv),
                         "--gpu_id", str(args.gpu_id), "--quiet"], repeats=args.repeats)
        if n > args.skip_baseline_above:
            print(f"{n:>8} {len(reference):>10} {ours:>9.2f} {'skipped':>13}", flush=True)
            continue
        base, _ = timed([sys.executable, "benchmarks/baselines.py", "novelsum", str(target),
                         str(work / "ref"), str(base_csv)])
        diff = max(abs(a / b - 1) for a, b in zip(read_row(ours_csv), read_row(base_csv)))
        print(f"{n:>8} {len(reference):>10} {ours:>9.2f} {base:>13.1f} {base / ours:>6.1f}x"
              f" {diff:>13.1e}", flush=True)


if __name__ == "__main__":
    main()
