"""Benchmark: novelselect.py against the reference loop, both as whole processes.

Pool n x dim of clustered embeddings (JSON shards, as the reference reads them, or .npy),
defaults neighbors 10, density power 0.5, distance power 1, seed 42. Prints wall times, the
ratio, whether the picks agree and, on a GPU, novelselect.py's peak GPU memory.

    python benchmarks/bench_novelselect.py                       # k = 1000 and 2000, CPU
    python benchmarks/bench_novelselect.py --ks 1000 --skip-baseline-above 1000
    # the paper's scale on a GPU (the reference loop takes about an hour there: skipped),
    # with the fused Triton kernel and again with the plain torch kernel
    python benchmarks/bench_novelselect.py --pool 396000 --dim 4096 --ks 10000 \\
        --format npy --gpu-id 0 --skip-baseline-above 0 --gpu-kernels triton torch
"""

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from common import BENCH_SPREAD, cpu_description, timed, write_shards

from utils.selection.cpu import uses_numpy_kernels
from utils.selection.gpu import GPU_KERNEL_VARIABLE
from synthetic import clustered_vectors


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--ks", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--format", choices=["json", "npy"], default="json")
    parser.add_argument("--gpu-id", type=int, default=-1, help="for novelselect.py (-1: CPU)")
    parser.add_argument("--skip-baseline-above", type=int, default=10**9)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of ours, the median reported (the reference runs once)")
    parser.add_argument("--gpu-kernels", nargs="+", choices=["triton", "torch"],
                        default=["triton"], help="on a GPU: which NovelSelect kernels to time")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_novelselect_"))
    pool = clustered_vectors(args.pool, args.dim, 50, seed=0, spread=BENCH_SPREAD)
    shard_rows = 2500 if args.format == "json" else 50000
    write_shards(work / "emb", pool, args.format, shard_rows)
    (work / "text").mkdir()
    for i, start in enumerate(range(0, args.pool, shard_rows)):
        (work / "text" / f"{i}.json").write_text(json.dumps(
            [f"sample {j}" for j in range(start, min(args.pool, start + shard_rows))]))

    device = "CPU" if args.gpu_id < 0 else f"GPU {args.gpu_id}"
    print(f"NovelSelect, {args.dim} dimensions, {args.format} shards, ours on the {device}; "
          f"{cpu_description()}")
    print(f"{'pool':>7} {'k':>6} {'kernel':>7} {'ours (s)':>9} {'baseline (s)':>13} "
          f"{'ratio':>7} {'same picks':>11} {'peak GPU GiB':>13}")
    kernels = args.gpu_kernels if args.gpu_id >= 0 else ["cpu"]
    for k, kernel in ((k, kernel) for k in args.ks for kernel in kernels):
        if kernel == "cpu":  # the CPU engine's own choice (utils/selection/cpu.py)
            kernel = "numpy" if uses_numpy_kernels("auto", args.pool, k, args.dim) else "numba"
        ours, stdout = timed([sys.executable, "novelselect.py", "--text_dir", str(work / "text"),
                              "--figure_dir", str(work / "emb"), "--output_dir",
                              str(work / "ours"), "--k", str(k), "--gpu_id", str(args.gpu_id),
                              "--quiet"], env={GPU_KERNEL_VARIABLE: kernel},
                             repeats=args.repeats)
        peak = re.search(r"peak GPU memory ([\d.]+) GiB", stdout)
        peak = peak.group(1) if peak else "-"
        if k > args.skip_baseline_above:
            print(f"{args.pool:>7} {k:>6} {kernel:>7} {ours:>9.2f} {'skipped':>13} {'':>7} "
                  f"{'':>11} {peak:>13}", flush=True)
            continue
        base_json = work / f"base_{k}.json"
        base, _ = timed([sys.executable, "benchmarks/baselines.py", "novelselect",
                         str(work / "emb"), str(k), str(base_json)])
        ours_picks = json.loads(
            (work / "ours" / f"novelselect_{k}_dense_0.5_dist_1.0_indices.json").read_text())
        base_picks = json.loads(base_json.read_text())
        agree = sum(a == b for a, b in zip(ours_picks, base_picks))
        print(f"{args.pool:>7} {k:>6} {kernel:>7} {ours:>9.2f} {base:>13.1f} "
              f"{base / ours:>6.1f}x {agree:>5}/{k:<5} {peak:>13}", flush=True)


if __name__ == "__main__":
    main()
