"""The dtype boundary and row normalisation: contiguous float32 rows, unit rows."""

import numpy as np


def as_float32(vectors):
    """A C-contiguous float32 view or copy of a 2-D array (the one dtype boundary)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {vectors.shape}")
    return vectors


def unit_rows(rows, dtype=np.float32):
    """Rows scaled to unit L2 norm, in ``dtype`` (float32 by default, or float64), as numpy
    arrays, or torch tensors when given tensors; callers have refused zero rows. The one row
    normaliser: the norm is sqrt(sum of squares) in ``dtype``."""
    if type(rows).__module__.startswith("torch"):
        rows = rows.double() if dtype == np.float64 else rows.float()
        return rows / ((rows * rows).sum(dim=1) ** 0.5)[:, None]
    rows = np.asarray(rows, dtype=dtype)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def centred(vectors):
    """Rows minus their mean (float64 mean, float32 result).

    L2 distances do not change, and the float32 expansion ||a||^2 + ||b||^2 - 2 a.b loses far
    less precision on centred rows.
    """
    return as_float32(vectors - vectors.mean(axis=0, dtype=np.float64))
