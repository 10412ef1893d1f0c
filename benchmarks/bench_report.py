"""Benchmark: what --report adds to a novelselect run, and how large the page is.

Pools of synthetic embeddings (seeded: 50 clusters in a space whose variance falls off with
the axis as in real text embeddings: 88% of the unit rows' variance on their 64 leading axes,
87% for the example pool's all-MiniLM-L6-v2 vectors; 1% exact copies and 1% near copies) with synthetic texts of
40 to 120 words, .npy and JSON shards. Each pool is selected twice as whole processes, without and
with --report; the table gives the report's size, the time it adds to the whole run, and the
time of drawing it alone (in this process, from the plain run's picks: the same code the run's
--report calls).

    python benchmarks/bench_report.py                       # pools of 10,000 and 100,000
    python benchmarks/bench_report.py --pools 10000 --k 500
    python benchmarks/bench_report.py --pools 100000 --repeats 1
"""

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cpu_description, timed, write_shards
from synthetic import clustered_vectors, with_duplicates

from utils.density.reference import pool_density
from utils.report.selection import SelectionData, write_selection_report
from utils.report.settings import ReportSettings

WORDS = ("data model train sample answer question code write explain list story poem "
         "translate summary math proof function python table email plan recipe travel "
         "history science music health review compare improve describe").split()


def synthetic_pool(n, dim, seed=0):
    """Vectors with exact and near copies, and one text per row."""
    rng = np.random.default_rng(seed)
    scale = (1.0 + np.arange(dim)) ** -0.6  # a falling spectrum: 88% of it on 64 axes
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    vectors = ((clustered_vectors(n, dim, 50, seed=seed, spread=1.0) * scale) @ rotation)
    vectors = vectors.astype(np.float32)
    sources = rng.choice(n, size=n // 50, replace=False)
    vectors = with_duplicates(vectors, {int(s): [int(t)] for s, t in
                                        zip(sources[:n // 100], sources[n // 100:])})
    near = rng.choice(n, size=n // 100, replace=False)
    vectors[near] = vectors[(near + 1) % n] + 0.05 * rng.normal(size=(len(near), dim))
    texts = [f"sample {i}: " + " ".join(rng.choice(WORDS, size=rng.integers(40, 121)))
             for i in range(n)]
    return vectors, texts


def report_alone(vectors, texts, output_dir, k, path):
    """Seconds to draw the report of the run in ``output_dir`` (its density factors
    recomputed first, untimed)."""
    with open(output_dir / f"novelselect_{k}_dense_0.5_dist_1.0_picks.csv") as handle:
        rows = list(csv.DictReader(handle))
    data = SelectionData(vectors, texts, [int(row["index"]) for row in rows],
                         np.array([float(row["novelty"] or "nan") for row in rows]),
                         pool_density(vectors), None,
                         dict(neighbors=10, density_power=0.5, distance_power=1.0))
    start = time.perf_counter()
    write_selection_report(data, ReportSettings(path))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each, interleaved; the medians are reported")
    args = parser.parse_args()
    print(f"novelselect --k {args.k} with and without --report, {args.dim} dimensions, CPU; "
          f"{cpu_description()}")
    print(f"{'pool':>8} {'report MB':>10} {'report alone (s)':>17} {'run (s)':>8} "
          f"{'with report (s)':>16} {'ratio':>6}")
    for n in args.pools:
        work = Path(tempfile.mkdtemp(prefix="bench_report_"))
        vectors, texts = synthetic_pool(n, args.dim)
        shard_rows = 25_000
        write_shards(work / "emb", vectors, "npy", shard_rows)
        (work / "text").mkdir()
        for i, start in enumerate(range(0, n, shard_rows)):
            (work / "text" / f"{i}.json").write_text(json.dumps(texts[start:start + shard_rows]))
        command = [sys.executable, "novelselect.py", "--text_dir", str(work / "text"),
                   "--figure_dir", str(work / "emb"), "--k", str(args.k), "--quiet",
                   "--gpu_id", "-1", "--overwrite"]
        report = work / "report.html"
        plain, with_report = [], []
        for _ in range(args.repeats):  # interleaved: a shared machine's load drifts
            plain.append(timed(command + ["--output_dir", str(work / "plain")])[0])
            with_report.append(timed(command + ["--output_dir", str(work / "with"),
                                                "--report", str(report)])[0])
        plain, with_report = float(np.median(plain)), float(np.median(with_report))
        alone = report_alone(vectors, texts, work / "plain", args.k, work / "alone.html")
        print(f"{n:>8} {report.stat().st_size / 1e6:>10.1f} {alone:>17.1f} {plain:>8.1f} "
              f"{with_report:>16.1f} {with_report / plain:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
