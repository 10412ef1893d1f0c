"""Benchmark: NovelSelect in one process against ``torchrun`` with 1 and 2 CPU ranks.

A synthetic clustered pool (``clustered_vectors`` of tests/synthetic.py, n x dim, 50
clusters) is written as .npy embedding shards with JSON text shards of the same stems. For each ``--ks``
value, ``novelselect.py --gpu_id -1`` runs as a whole process three ways: plain ``python``, and
``torchrun --standalone --nproc_per_node N`` for each ``--ranks`` N (default 1 and 2); defaults
neighbors 10, density power 0.5, distance power 1, seed 42. Printed per run: the wall time of
the whole command (start-up, loading, density kNN, selection, writing), the selection stage
alone (density and picks, from rank 0's ``_run.json``), the CPU seconds of the whole process
tree (user + system, from ``os.wait4`` on the launched command: the agent and every rank it
reaped), the peak RSS of the largest rank, and whether the picks equal the plain run's (or
from which pick on they differ).

Peak RSS per rank. Each process runs the script through this file's ``--as-rank DIR`` mode,
which runs ``novelselect.py`` in the same process (``runpy``, as ``python novelselect.py``
would) and, when it ends, writes the process's ``VmHWM`` from ``/proc/self/status`` to
``DIR/rank{RANK}.json``. The plain run goes through the same wrapper (as rank 0), so every
launcher is measured alike. Why not the simpler ways: ``getrusage(RUSAGE_CHILDREN)`` (or
``/usr/bin/time -v``) on ``torchrun`` gives the largest process of the tree, which can be the
agent rather than a rank, and cannot say which; the ranks' own ``ru_maxrss`` survives ``exec``
and so can start at the launching agent's high-water mark (Linux carries the old address
space's peak across ``exec``); polling ``/proc/<pid>/status`` of torchrun's children races
their exit. ``VmHWM`` is the high-water mark of the process's own address space since its
``exec``, read by the process itself after its last allocation.

Timings on a shared machine are noisy: ``--repeat R`` (default 2) runs the commands of one k
in turn R times and prints each one's fastest run; the load average is printed before and
after. The peak RSS and the picks are those of the fastest run (repeats must agree on picks).

    python benchmarks/bench_ranks.py                            # 20,000 x 256, k = 500 1000
    python benchmarks/bench_ranks.py --pool 5000 --ks 200       # a quick look
"""

import argparse
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from common import BENCH_SPREAD, REPO, write_shards

PEAK_FLAG = "--as-rank"  # wrapper mode: run a script, then record this process's peak RSS
KIB = 1024
MIB = 2**20


def own_peak_rss_bytes():
    """This process's peak resident set since its ``exec``: ``VmHWM`` of /proc/self/status."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * KIB
    raise OSError("/proc/self/status has no VmHWM line (not Linux?)")


def run_as_rank(peak_dir, script, args):
    """Run ``script`` (relative to the repository) with ``args`` in this process, as ``python
    script args`` would, then write ``{"rank", "peak_rss_bytes"}`` to
    ``peak_dir/rank{RANK}.json`` (rank 0 without torchrun), whatever the script's exit."""
    sys.argv = [script, *args]
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [str(REPO), *(p for p in sys.path if p not in (here, str(REPO)))]
    try:
        runpy.run_path(str(REPO / script), run_name="__main__")
    finally:
        rank = int(os.environ.get("RANK", 0))
        Path(peak_dir, f"rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "peak_rss_bytes": own_peak_rss_bytes()}))


def write_pool(folder, n, dim, shard_rows):
    """Embedding shards ``emb/{i}.npy`` and text shards ``text/{i}.json`` (JSON lists of
    strings, the same stems and rows)."""
    from synthetic import clustered_vectors

    vectors = clustered_vectors(n, dim, 50, seed=0, spread=BENCH_SPREAD)
    write_shards(folder / "emb", vectors, "npy", shard_rows)
    (folder / "text").mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, n, shard_rows)):
        (folder / "text" / f"{i}.json").write_text(json.dumps(
            [f"sample {j}" for j in range(start, min(n, start + shard_rows))]))
    return folder / "text", folder / "emb"


def launcher(ranks):
    """The command that starts the wrapped script: plain python (``ranks`` None) or torchrun."""
    if ranks is None:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            str(ranks)]


def run_tree(command, log):
    """Run ``command`` from the repository root, output to ``log``; return its wall seconds
    and the CPU seconds (user + system) of it and every descendant it reaped (``os.wait4``)."""
    with open(log, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _pid, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}; see {log}")
    return wall, usage.ru_utime + usage.ru_stime


class Run(NamedTuple):
    wall_s: float
    cpu_s: float
    selection_s: float
    peak_rss_bytes: int  # of the largest rank
    picks: list


def run_novelselect(work, name, ranks, text_dir, emb_dir, k):
    """One run of novelselect.py (``ranks``: None for plain python, else torchrun's count)."""
    peak_dir, out_dir = work / f"{name}_peaks", work / name
    peak_dir.mkdir()
    command = [*launcher(ranks), str(Path(__file__).resolve()), PEAK_FLAG, str(peak_dir),
               "novelselect.py", "--text_dir", str(text_dir), "--figure_dir", str(emb_dir),
               "--output_dir", str(out_dir), "--k", str(k), "--gpu_id", "-1", "--quiet"]
    wall, cpu = run_tree(command, work / f"{name}.log")
    peaks = [json.loads(path.read_text())["peak_rss_bytes"] for path in peak_dir.iterdir()]
    if len(peaks) != (ranks or 1):
        raise RuntimeError(f"{name}: {len(peaks)} rank(s) reported a peak RSS, expected "
                           f"{ranks or 1}")
    stem = f"novelselect_{k}_dense_0.5_dist_1.0"
    record = json.loads((out_dir / f"{stem}_run.json").read_text())
    picks = json.loads((out_dir / f"{stem}_indices.json").read_text())
    return Run(wall, cpu, record["seconds"]["selection"], max(peaks), picks)


def fastest(runs):
    """The run with the least wall time among repeats (the others' picks must agree)."""
    if any(run.picks != runs[0].picks for run in runs):
        raise RuntimeError("repeats of one command gave different picks")
    return min(runs, key=lambda run: run.wall_s)


def same_picks(picks, reference):
    """``yes``, or from which pick on ``picks`` differ from ``reference``."""
    if picks == reference:
        return "yes"
    first = next(i for i, (a, b) in enumerate(zip(picks, reference)) if a != b)
    return f"no (from pick {first})"


def main():
    if len(sys.argv) > 3 and sys.argv[1] == PEAK_FLAG:
        run_as_rank(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--ks", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2],
                        help="torchrun --nproc_per_node values (the plain run always comes first)")
    parser.add_argument("--shard-rows", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each command, taken in turn; the fastest is printed")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_ranks_"))
    text_dir, emb_dir = write_pool(work, args.pool, args.dim, args.shard_rows)
    # Untimed: fills numba's disk cache and the page cache for the libraries.
    run_novelselect(work, "warmup", None, text_dir, emb_dir, 10)
    started = time.perf_counter()
    print(f"NovelSelect on the CPU ({os.cpu_count()} cores), pool {args.pool:,} x {args.dim}, "
          f".npy shards of {args.shard_rows:,} rows; load average {os.getloadavg()[0]:.1f}; "
          f"fastest of {args.repeat}")
    print(f"{'launcher':>10} {'ranks':>5} {'k':>6} {'seconds':>8} {'selection s':>11} "
          f"{'CPU s':>6} {'peak RSS MiB':>12} {'same picks':>18}")
    launchers = [None, *args.ranks]
    for k in args.ks:
        runs = {ranks: [] for ranks in launchers}
        for repeat in range(args.repeat):  # in turn, so that a busy spell hits all alike
            for ranks in launchers:
                name = f"k{k}_{'python' if ranks is None else f'torchrun{ranks}'}_{repeat}"
                runs[ranks].append(run_novelselect(work, name, ranks, text_dir, emb_dir, k))
        reference = fastest(runs[None]).picks
        for ranks in launchers:
            run = fastest(runs[ranks])
            print(f"{'python' if ranks is None else 'torchrun':>10} {ranks or 1:>5} {k:>6} "
                  f"{run.wall_s:>8.1f} {run.selection_s:>11.1f} {run.cpu_s:>6.1f} "
                  f"{run.peak_rss_bytes / MIB:>12.0f} {same_picks(run.picks, reference):>18}",
                  flush=True)
    print(f"{time.perf_counter() - started:.0f} s in all; load average "
          f"{os.getloadavg()[0]:.1f}; outputs in {work}")


if __name__ == "__main__":
    main()
