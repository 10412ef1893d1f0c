"""Fixed-order float sums and dot products: the same bits for the same values, whatever the
blocking, engine or device (docs/method.md section 6).

A dot product u . s is the float32 products p_j = u_j s_j summed by a halving tree: with h the
largest power of two below d, p_j += p_{j+h} for j < d - h, then p_j += p_{j+h'} for j < h' =
h/2, h/4, ..., 1, and p_0 is the dot (``halving_sums``). No step is fused or reordered (numba
without fastmath, torch as elementwise operations), so exact duplicates get bitwise the same
values on every engine and device (docs/method.md section 6).
"""

import numpy as np


def fixed_order_dots(rows, target):
    """``rows @ target`` (float32 torch tensors or numpy arrays) summed in the fixed order of
    the module docstring.

    Every operation is elementwise, hence exactly rounded, so a row's result depends on its
    values only: not on its position, the number of rows, or the device (CPU and GPU agree
    bitwise, and with the numba kernel). Working memory: ``fixed_order_bytes_per_row``.
    """
    return halving_sums(rows * target)


def fixed_order_dots_many(rows, targets):
    """``rows @ targets.T`` (float32, torch or numpy; (r, d) and (t, d) -> (r, t)), every
    entry summed as ``fixed_order_dots`` sums it, so bitwise equal to
    ``fixed_order_dots(rows, target)`` for each target. Working memory:
    ``fixed_order_bytes_per_row(d)`` per entry."""
    return halving_sums(rows[:, None, :] * targets[None, :, :])


def halving_sums(tensor):
    """Sums over the last axis of a torch tensor or numpy array in a fixed order: with h the
    largest power of two below the width, column c += column c + h for c < width - h; then
    column c += column c + h' for c < h' = h/2, h/4, ..., 1; column 0 is the sum.

    Elementwise operations only, so a row's sum depends on its values alone, not on the
    chunk it is in or the device (a matrix product or ``sum`` may split rows differently).
    """
    width = tensor.shape[-1]
    if width <= 1:
        if width:
            return _copy(tensor[..., 0])
        if not hasattr(tensor, "clone"):
            return np.zeros(tensor.shape[:-1], dtype=tensor.dtype)
        import torch

        return torch.zeros(tensor.shape[:-1], dtype=tensor.dtype, device=tensor.device)
    half = 1 << ((width - 1).bit_length() - 1)  # the largest power of two below ``width``
    partial = _copy(tensor[..., :half])
    partial[..., :width - half] += tensor[..., half:]
    while half > 1:
        half //= 2
        partial = partial[..., :half] + partial[..., half:2 * half]
    return partial[..., 0]


def _copy(tensor):
    """A copy of a torch tensor or numpy array."""
    return tensor.clone() if hasattr(tensor, "clone") else tensor.copy()


def fixed_order_bytes_per_row(dim):
    """Working bytes per row of ``fixed_order_dots``: the float32 products, their first
    halving's copy and the later, smaller halvings."""
    return 4 * dim + 4 * dim + 4 * 4
