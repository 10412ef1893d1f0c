"""Benchmark: loading JSON embedding shards, each way timed as a whole process.

Writes ``--shards`` seeded shards of ``--rows`` x ``--dim`` float32 vectors as
``json.dumps(array.tolist())`` (the reference format) in a temporary folder, then runs, each in
its own Python process:

- baseline: ``json.load`` + ``numpy.asarray(..., dtype=float32)`` per shard, concatenated;
- before: the loader of commit BEFORE (pandas' C parser, serial), if git can show it;
- ours: ``utils.io.vectors.load_vectors`` (streaming orjson parser, shards in worker processes).

Prints seconds (process start to array loaded), speed-up over the baseline, the peak resident
set of the largest process (the parent or any worker), and MB/s of JSON text; checks that every
method gives the same array.

    python benchmarks/bench_json_loading.py                      # 4 x 10,000 x 1,024 (~806 MB)
    python benchmarks/bench_json_loading.py --shards 8 --rows 2000 --dim 4096
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BEFORE = "faa5f9b"  # the last commit with the serial loader (pandas fast path)
METHODS = ("baseline", "before", "ours")


def write_shards(folder, shards, rows, dim, seed):
    """Seeded shards ``0.json`` ... of standard-normal float32 vectors; returns their bytes."""
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(shards):
        vectors = rng.standard_normal((rows, dim), dtype=np.float32)
        text = json.dumps(vectors.tolist())
        (folder / f"{i}.json").write_text(text)
        total += len(text)
    return total


def peak_rss_mib():
    """Peak resident set of this process or any of its finished children, in MiB.

    This process's own peak is read from /proc (VmHWM): ``getrusage`` would report the peak of
    the process that spawned it, which Linux carries across exec.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status = Path("/proc/self/status")
    if status.exists():
        own = next(int(line.split()[1]) for line in status.read_text().splitlines()
                   if line.startswith("VmHWM:"))
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def load(method, folder):
    """The dataset of ``folder`` loaded by ``method``, as one float32 array."""
    files = sorted(folder.glob("*.json"), key=lambda p: int(p.stem))
    if method == "baseline":
        parts = []
        for path in files:
            with open(path) as handle:
                parts.append(np.asarray(json.load(handle), dtype=np.float32))
        return np.concatenate(parts)
    if method == "before":
        sys.path.insert(0, str(folder.parent / "before"))
        from utils.io.vectors import load_vectors
    else:
        sys.path.insert(0, str(REPO))
        from utils.io.vectors import load_vectors
    return load_vectors(folder).vectors


def run_one(method, folder):
    """Child process: load; print the clock when loaded, then a digest and the peak RSS (the
    digest reads the whole array, so the RSS counts it even where workers wrote it)."""
    vectors = load(method, folder)
    done = time.monotonic()
    import hashlib

    digest = hashlib.sha1(np.ascontiguousarray(vectors).data).hexdigest()  # reads every page
    print(json.dumps({"done": done, "rss": peak_rss_mib(), "shape": vectors.shape,
                      "digest": digest}))


def checkout_before(work):
    """The ``utils`` package as of commit BEFORE under ``work/before``, or None without git."""
    target = work / "before" / "utils"
    target.mkdir(parents=True)
    for name in ("__init__.py", "errors.py", "shards.py"):
        result = subprocess.run(["git", "show", f"{BEFORE}:utils/{name}"], cwd=REPO,
                                capture_output=True)
        if result.returncode:
            return None
        (target / name).write_bytes(result.stdout if name != "__init__.py" else b"")
    return target


def timed_process(method, folder):
    start = time.monotonic()
    result = subprocess.run([sys.executable, __file__, "--run", method, "--folder", str(folder)],
                            check=True, stdout=subprocess.PIPE, text=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["done"] - start, report


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        return run_one(args.run, args.folder)

    work = Path(tempfile.mkdtemp(prefix="bench_json_loading_"))
    try:
        folder = work / "shards"
        folder.mkdir()
        size = write_shards(folder, args.shards, args.rows, args.dim, args.seed)
        methods = [m for m in METHODS if m != "before" or checkout_before(work)]
        print(f"{args.shards} JSON shards of {args.rows:,} x {args.dim:,} float32 "
              f"({size / 1e6:,.0f} MB), {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f} (other work on the machine slows every method)")
        print(f"{'method':<10} {'seconds':>8} {'speed-up':>9} {'peak RSS (MiB)':>15} "
              f"{'MB/s':>7}")
        base_seconds, base_digest = None, None
        for method in methods:
            seconds, report = timed_process(method, folder)
            base_seconds = base_seconds or seconds
            base_digest = base_digest or report["digest"]
            if report["digest"] != base_digest:
                raise SystemExit(f"{method}: loaded a different array than the baseline")
            print(f"{method:<10} {seconds:>8.2f} {base_seconds / seconds:>8.2f}x "
                  f"{report['rss']:>15,.0f} {size / 1e6 / seconds:>7.0f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
