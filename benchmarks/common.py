"""What both benchmarks share: seeded clustered embeddings, shard writing, timing a process."""

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def clustered(n, dim, n_clusters, seed, chunk_rows=50000):
    """Seeded clustered embeddings: cluster centres plus Gaussian noise (float32).

    Drawn in row chunks (the same numbers as one draw) so that a 400,000 x 4,096 set does not
    need 40 GB of float64 temporaries.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    labels = rng.integers(0, n_clusters, n)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        out[start:stop] = centres[labels[start:stop]] + 0.4 * rng.normal(size=(stop - start, dim))
    return out


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


def timed(command, env=None):
    """Wall-clock seconds and stdout of a command run from the repository root."""
    start = time.perf_counter()
    result = subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env=None if env is None else {**os.environ, **env})
    return time.perf_counter() - start, result.stdout
