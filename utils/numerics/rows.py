"""The dtype boundary and row normalisation: contiguous float32 rows, unit rows."""

import numpy as np


def as_float32(vectors):
    """A C-contiguous float32 view or copy of a 2-D array (the one dtype boundary)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {vectors.shape}")
    return vectors


def unit_rows(vectors, dtype=np.float32):
    """Rows scaled to unit L2 norm, in ``dtype`` (float32 by default); callers have refused
    zero rows."""
    vectors = np.asarray(vectors, dtype=dtype)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / norms


def unit_vectors(vectors):
    """Rows scaled to unit L2 norm (float32); zero rows were refused by the loader."""
    return unit_rows(as_float32(vectors))


def centred(vectors):
    """Rows minus their mean (float64 mean, float32 result).

    L2 distances do not change, and the float32 expansion ||a||^2 + ||b||^2 - 2 a.b loses far
    less precision on centred rows.
    """
    return as_float32(vectors - vectors.mean(axis=0, dtype=np.float64))


def unit_rows_float64(rows):
    """Rows as float64, scaled to unit L2 norm in float64 (numpy or torch)."""
    rows = rows.astype(np.float64) if isinstance(rows, np.ndarray) else rows.double()
    norms = (rows * rows).sum(axis=1) ** 0.5
    return rows / norms[:, None]
