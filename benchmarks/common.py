"""What the benchmarks share: the repository and tests/synthetic.py on the import path, the
embeddings' spread, shard writing, timing a process, the machine's name for the tables."""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the benchmarks use utils/
# and the tests' seeded data (tests/synthetic.py: one generator for tests and benchmarks)
sys.path.append(str(REPO / "tests"))

BENCH_SPREAD = 0.4  # noise around the cluster centres of the benchmarks' embeddings


def write_vectors(path, vectors, fmt):
    """One embedding file: ``path`` with suffix ``.json`` (as the reference reads) or ``.npy``."""
    path = Path(path).with_suffix(f".{fmt}")
    if fmt == "npy":
        np.save(path, vectors)
    else:
        path.write_text(json.dumps(vectors.tolist()))
    return path


def write_shards(folder, vectors, fmt, shard_rows):
    """A shard folder ``0.<fmt>``, ``1.<fmt>``, ... of ``shard_rows`` rows each."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, len(vectors), shard_rows)):
        write_vectors(folder / str(i), vectors[start:start + shard_rows], fmt)
    return folder


def timed(command, env=None, repeats=1):
    """Wall-clock seconds (the median of ``repeats`` runs: a shared machine's load comes and
    goes) and the last stdout of a command run from the repository root."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.PIPE,
                                text=True, env=None if env is None else {**os.environ, **env})
        seconds.append(time.perf_counter() - start)
    return sorted(seconds)[len(seconds) // 2], result.stdout


def cpu_description():
    """The CPU as /proc/cpuinfo names it, with its family and model numbers (a virtual machine
    often hides the marketing name) and the cores this process may use, for table titles."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    flags = fields.get("flags", "").split()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')} "
            f"model {fields.get('model', '?')}), {cores} cores, {simd}")
