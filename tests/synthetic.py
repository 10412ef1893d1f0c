"""Seeded synthetic embeddings for the tests, and for the benchmarks and device checks, which
import them from here (benchmarks/common.py).

Real embeddings of instruction data cluster by topic and hold exact duplicates (591 of 12,000
embedded ShareGPT conversations); both generators here make such data reproducibly.
"""

import numpy as np


def clustered_vectors(n, dim, n_clusters=8, seed=0, spread=0.3, chunk_rows=50_000):
    """``n`` float32 rows: ``n_clusters`` Gaussian cluster centres plus ``spread`` x noise.

    The noise is drawn in chunks of ``chunk_rows`` rows, which gives the same numbers as one
    draw, so that a 400,000 x 4,096 set needs no 13 GB float64 temporary.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    labels = rng.integers(0, n_clusters, size=n)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        out[start:stop] = centres[labels[start:stop]] + spread * rng.normal(
            size=(stop - start, dim))
    return out


def with_duplicates(vectors, copies):
    """A copy of ``vectors`` where, for each ``source: [targets]`` of ``copies``, every target
    row is overwritten with the source row (exact duplicates at chosen offsets)."""
    out = np.array(vectors, dtype=np.float32, copy=True)
    for source, targets in copies.items():
        out[list(targets)] = out[source]
    return out
