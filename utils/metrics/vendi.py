"""The Vendi score of cosine similarities, from the smaller of the two Gram matrices."""

import numpy as np

from ..numerics.blocks import DEFAULT_BLOCK_MIB, MIB, row_blocks
from ..numerics.compute import resolve_engine, to_torch
from ..numerics.rows import as_float32, unit_rows


def dual_gram(vectors, device="cpu", block_mib=DEFAULT_BLOCK_MIB, engine="numpy"):
    """U^T U, U the unit rows, in float64 (normalised in float64), as a (d, d) numpy array.

    Summed over row blocks; working memory of a block: its float64 unit rows and their
    squares (16 d bytes a row) beside the float32 rows.
    """
    n, d = vectors.shape
    blocks = list(row_blocks(n, 20 * d, block_mib * MIB))
    if engine == "numpy":
        gram = np.zeros((d, d), dtype=np.float64)
        for start, stop in blocks:
            block = unit_rows(vectors[start:stop], np.float64)
            gram += block.T @ block
        return gram
    import torch

    gram = torch.zeros((d, d), dtype=torch.float64, device=device)
    for start, stop in blocks:
        block = unit_rows(to_torch(vectors[start:stop], device), np.float64)
        gram += block.T @ block
    return gram.cpu().numpy()


def primal_gram(vectors):
    """U U^T in float64, (n, n): used only when n <= d, so never larger than the dual."""
    unit = unit_rows(vectors, np.float64)
    return unit @ unit.T


def entropy_from_eigenvalues(eigenvalues):
    """-sum_l lambda_l ln lambda_l over the eigenvalues > 0 (natural log, as vendi-score)."""
    positive = np.asarray(eigenvalues, dtype=np.float64)
    positive = positive[positive > 0]
    return float(-(positive * np.log(positive)).sum())


def vendi(vectors, device="cpu", block_mib=DEFAULT_BLOCK_MIB, engine=None):
    """Vendi score with the cosine-similarity kernel.

    Parameters
    ----------
    vectors : (n, d) float32.

    Returns
    -------
    float : exp(-sum_l lambda_l ln lambda_l), lambda the eigenvalues of K/n with
        K_ij = cos(x_i, x_j); through the (d, d) dual U^T U / n when d < n (same nonzero
        eigenvalues), float64. Ranges from 1 (all rows parallel) to min(n, d).
    """
    engine = resolve_engine(device, engine)
    vectors = as_float32(vectors)
    n, d = vectors.shape
    gram = dual_gram(vectors, device, block_mib, engine) if d < n else primal_gram(vectors)
    return float(np.exp(entropy_from_eigenvalues(np.linalg.eigvalsh(gram / n))))
