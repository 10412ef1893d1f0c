"""What both benchmarks share: seeded clustered embeddings and timing a whole process."""

import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def clustered(n, dim, n_clusters, seed):
    """Seeded clustered embeddings: cluster centres plus Gaussian noise (float32)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    return (centres[rng.integers(0, n_clusters, n)] + 0.4 * rng.normal(size=(n, dim))
            ).astype(np.float32)


def timed(command):
    """Wall-clock seconds of a command run from the repository root (stdout discarded)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start
