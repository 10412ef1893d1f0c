"""Two map coordinates per row: PCA of the unit rows (deterministic), or UMAP when asked for and
umap-learn is installed."""

import importlib.util

import numpy as np

from ..errors import InputError
from ..numerics.rows import unit_rows

MAP_METHODS = ("pca", "umap")
UMAP_INSTALL = "pip install 'novelsum-toolkit[umap]' (or pip install umap-learn)"
BLOCK_ROWS = 16_384  # rows per float64 block of the covariance: 48 MiB at 384 dimensions


def check_map_method(method):
    """Refuse a method the installation cannot run, before any long work."""
    if method not in MAP_METHODS:
        raise InputError(f"--report_map {method}: choose one of {', '.join(MAP_METHODS)}")
    if method == "umap" and importlib.util.find_spec("umap") is None:
        raise InputError(f"--report_map umap needs umap-learn, which is not installed: "
                         f"{UMAP_INSTALL}")


def unit_mean(vectors):
    """The mean of the unit rows, summed in float64."""
    total = np.zeros(vectors.shape[1])
    for start in range(0, len(vectors), BLOCK_ROWS):
        total += unit_rows(vectors[start:start + BLOCK_ROWS], np.float64).sum(axis=0)
    return total / len(vectors)


def unit_covariance(vectors, mean):
    """The scatter matrix of the centred unit rows, (d, d) float64, accumulated in blocks."""
    scatter = np.zeros((vectors.shape[1], vectors.shape[1]))
    for start in range(0, len(vectors), BLOCK_ROWS):
        block = unit_rows(vectors[start:start + BLOCK_ROWS], np.float64) - mean
        scatter += block.T @ block
    return scatter


def principal_axes(scatter, count=2):
    """The ``count`` leading eigenvectors of ``scatter`` as columns, each signed so that its
    largest-magnitude entry is positive (a fixed sign: the same map on every run)."""
    _values, vectors = np.linalg.eigh(scatter)
    axes = vectors[:, ::-1][:, :count]
    signs = np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(axes.shape[1])])
    return axes * np.where(signs == 0, 1.0, signs)


def unit_axes(vectors, count):
    """``(mean, axes)``: the mean of the unit rows and their ``count`` leading principal axes
    (d, count), float64."""
    mean = unit_mean(vectors)
    return mean, principal_axes(unit_covariance(vectors, mean), count)


def pca_map(vectors, axes=None):
    """(n, 2) float64: the unit rows, centred, projected on their two principal axes (the
    cosine geometry that NovelSum measures). ``axes``: ``unit_axes`` already computed (its
    first two columns are used)."""
    mean, axes = axes or unit_axes(vectors, 2)
    axes = axes[:, :2]
    out = np.empty((len(vectors), 2))
    for start in range(0, len(vectors), BLOCK_ROWS):
        out[start:start + BLOCK_ROWS] = (
            unit_rows(vectors[start:start + BLOCK_ROWS], np.float64) - mean) @ axes
    return out


def umap_map(vectors, seed):
    """(n, 2) float64: UMAP with the cosine metric, seeded."""
    import umap

    return np.asarray(umap.UMAP(n_components=2, metric="cosine", random_state=seed)
                      .fit_transform(vectors), dtype=np.float64)


def map_coordinates(vectors, method="pca", seed=0, axes=None):
    """Two coordinates per row of ``vectors`` (n, d) by ``method`` (``MAP_METHODS``);
    ``axes``: see ``pca_map``."""
    check_map_method(method)
    if len(vectors) < 2 or method == "pca":
        return pca_map(vectors, axes)
    return umap_map(vectors, seed)
