"""Benchmark: novelselect.py against the reference loop, both as whole processes.

Pool n x 256 of clustered embeddings (JSON shards, as the reference reads them), defaults
neighbors 10, density power 0.5, distance power 1, seed 42. Prints wall times, the ratio, and
whether the picks agree.

    python benchmarks/bench_novelselect.py                       # k = 1000 and 2000
    python benchmarks/bench_novelselect.py --ks 1000 --skip-baseline-above 1000
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import clustered, timed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--ks", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--skip-baseline-above", type=int, default=10**9)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_novelselect_"))
    pool = clustered(args.pool, args.dim, 50, seed=0)
    (work / "emb").mkdir(), (work / "text").mkdir()
    for i, start in enumerate(range(0, args.pool, 2500)):
        (work / "emb" / f"{i}.json").write_text(json.dumps(pool[start:start + 2500].tolist()))
        (work / "text" / f"{i}.json").write_text(json.dumps(
            [f"sample {j}" for j in range(start, min(args.pool, start + 2500))]))

    print(f"{'pool':>6} {'k':>6} {'ours (s)':>9} {'baseline (s)':>13} {'ratio':>7} "
          f"{'same picks':>11}")
    for k in args.ks:
        ours = timed([sys.executable, "novelselect.py", "--text_dir", str(work / "text"),
                      "--figure_dir", str(work / "emb"), "--output_dir", str(work / "ours"),
                      "--k", str(k), "--gpu_id", "-1", "--quiet"])
        if k > args.skip_baseline_above:
            print(f"{args.pool:>6} {k:>6} {ours:>9.2f} {'skipped':>13}", flush=True)
            continue
        base_json = work / f"base_{k}.json"
        base = timed([sys.executable, "benchmarks/baselines.py", "novelselect",
                      str(work / "emb"), str(k), str(base_json)])
        ours_picks = json.loads(
            (work / "ours" / f"novelselect_{k}_dense_0.5_dist_1.0_indices.json").read_text())
        base_picks = json.loads(base_json.read_text())
        agree = sum(a == b for a, b in zip(ours_picks, base_picks))
        print(f"{args.pool:>6} {k:>6} {ours:>9.2f} {base:>13.1f} {base / ours:>6.1f}x "
              f"{agree:>5}/{k:<5}", flush=True)


if __name__ == "__main__":
    main()
