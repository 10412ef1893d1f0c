"""The value x(u, s) of a candidate against a pick (docs/method.md sections 5 and 6): one
formula for the numpy and torch engines; the numba kernels write the same operations per row.

x(u, s) = (1 - cos(u, s)) (rho(u) + rho(s)), with cos(u, s) = (u . s) / sqrt((u . u)(s . s)):
the three dots are float32 sums in the fixed order of ``numerics.fixed_order``, the rest is
float64, rounded once to float32. Dividing by the rows' own computed norms, rather than taking
u . s of rows scaled to unit length, makes cos(u, u) exactly 1 for every row (u . u is an
exactly representable float32 number q, q * q is exact in float64, its square root is q, and
q / q is 1): a pick's duplicates get the value 0 exactly, as in exact arithmetic. Scaling a
row to unit length in float32 rounds: with two ones, 1/sqrt(2) rounds to 0.70710677, whose
square rounds to 0.49999997, so u . u was 0.99999994 and a duplicate's value 1.2e-7, enough
to break an exact tie against a candidate without a duplicate among the picks. Where the dots
are exact multiples of one number (rows of small integers; binary rows with up to four ones
scaled to unit length, whose products all round alike), cos is the exact cosine correctly
rounded, so equal cosines give equal values (docs/method.md section 6).
"""

import numpy as np

from ..numerics.blocks import MIB, row_blocks
from ..numerics.fixed_order import fixed_order_bytes_per_row, fixed_order_dots


def as_float64(array):
    """A numpy array or torch tensor in float64."""
    return array.double() if hasattr(array, "double") else np.asarray(array, dtype=np.float64)


def _float32(array):
    return array.float() if hasattr(array, "float") else array.astype(np.float32)


def _sqrt(array):
    return array.sqrt() if hasattr(array, "sqrt") else np.sqrt(array)


def pair_values(dots, squared_norms, density_factors, pick_squared_norm, pick_density_factor):
    """x(u, s) for rows u against one pick s (or a (rows, picks) grid, by broadcasting), as
    float32 numpy arrays or torch tensors like ``dots``.

    ``dots``: u . s (float32); ``squared_norms``: u . u as float64 (exact); the pick's
    ``pick_squared_norm`` (float64) and ``pick_density_factor`` (float32, or float64 holding
    a float32 value); ``density_factors``: rho(u) (float32)."""
    cosines = as_float64(dots) / _sqrt(squared_norms * pick_squared_norm)
    return _float32((1.0 - cosines) * (as_float64(density_factors) + pick_density_factor))


NORM_BLOCK_BYTES = 64 * MIB  # working memory of one row block of ``squared_norms``


def squared_norms(rows):
    """u . u of each row (float32 numpy or torch rows), in the fixed order, as float64, in
    row blocks of at most ``NORM_BLOCK_BYTES`` of working memory."""
    blocks = row_blocks(len(rows), fixed_order_bytes_per_row(rows.shape[1]), NORM_BLOCK_BYTES)
    return concatenated([as_float64(fixed_order_dots(rows[start:stop], rows[start:stop]))
                         for start, stop in blocks], rows)


def concatenated(parts, like=None):
    """numpy arrays or torch tensors end to end (no parts: an empty float64 array, a tensor
    on ``like``'s device when ``like`` is one)."""
    if parts and hasattr(parts[0], "double") or not parts and hasattr(like, "double"):
        import torch

        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64,
                                                          device=like.device)
    return np.concatenate(parts) if parts else np.zeros(0)
