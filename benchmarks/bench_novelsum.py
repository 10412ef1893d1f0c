"""Benchmark: novelsum.py against the reference algorithm, both as whole processes.

Target n x 256 (rows drawn from the reference) against a 20,000 x 256 clustered reference,
default 18-point grid, JSON shards as the reference scripts read them. Prints a table of wall
times and the ratio, and checks both give the same numbers (relative 1e-6).

    python benchmarks/bench_novelsum.py                  # sizes 2000 5000 10000
    python benchmarks/bench_novelsum.py --sizes 2000 --skip-baseline-above 5000
"""

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import clustered, timed


def read_row(path):
    with open(path, newline="") as handle:
        row = next(csv.DictReader(handle))
    return [float(v) for k, v in row.items() if k != "Dataset Name"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--reference-size", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--skip-baseline-above", type=int, default=10**9)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_novelsum_"))
    reference = clustered(args.reference_size, args.dim, 50, seed=0)
    (work / "ref").mkdir()
    for i, start in enumerate(range(0, len(reference), 5000)):
        (work / "ref" / f"{i}.json").write_text(json.dumps(reference[start:start + 5000].tolist()))
    rng = np.random.default_rng(1)

    print(f"{'target':>8} {'reference':>10} {'ours (s)':>9} {'baseline (s)':>13} {'ratio':>7}"
          f" {'max rel diff':>13}")
    for n in args.sizes:
        target = work / f"target_{n}.json"
        target.write_text(json.dumps(reference[rng.choice(len(reference), n, replace=False)]
                                     .tolist()))
        ours_csv, base_csv = work / f"ours_{n}.csv", work / f"base_{n}.csv"
        ours = timed([sys.executable, "novelsum.py", "--single_dataset_path", str(target),
                      "--dense_ref_dir", str(work / "ref"), "--output_csv", str(ours_csv),
                      "--gpu_id", "-1", "--quiet"])
        if n > args.skip_baseline_above:
            print(f"{n:>8} {len(reference):>10} {ours:>9.2f} {'skipped':>13} {'':>7} {'':>13}")
            continue
        base = timed([sys.executable, "benchmarks/baselines.py", "novelsum", str(target),
                      str(work / "ref"), str(base_csv)])
        diff = max(abs(a / b - 1) for a, b in zip(read_row(ours_csv), read_row(base_csv)))
        print(f"{n:>8} {len(reference):>10} {ours:>9.2f} {base:>13.1f} {base / ours:>6.1f}x"
              f" {diff:>13.1e}", flush=True)


if __name__ == "__main__":
    main()
