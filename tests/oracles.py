"""Independent oracles the tests check our numbers against: the SPEC's formulas in plain
float64, written apart from the package's code."""

import numpy as np


def novelsum_float64(dataset, reference=None, k=10, beta=0.5, alpha=1.0):
    """SPEC 3-4 in plain float64: sigma_k against the reference with exact duplicates kept
    once and the sample itself left out; each row's cosine distances sorted, weighted by
    rank^-alpha; the mean of sigma^beta times the weighted mean (beta 0: no reference)."""
    dataset = np.asarray(dataset, dtype=np.float64)
    if beta != 0:
        reference = np.unique(np.asarray(reference, dtype=np.float64), axis=0)
    total = 0.0
    unit = dataset / np.linalg.norm(dataset, axis=1, keepdims=True)
    weights = np.arange(1, len(dataset) + 1, dtype=np.float64) ** -alpha
    for i, x in enumerate(dataset):
        sigma = 1.0
        if beta != 0:
            squared = ((reference - x) ** 2).sum(axis=1)
            itself = np.flatnonzero((reference == x).all(axis=1))
            squared = np.delete(squared, itself[:1])
            sigma = 1.0 / (np.sort(squared)[:k].mean() + 1e-9)
        distances = np.sort(1.0 - unit @ unit[i])
        total += sigma ** beta * (weights * distances).sum() / weights.sum()
    return total / len(dataset)
