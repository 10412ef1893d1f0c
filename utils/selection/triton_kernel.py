"""The fused Triton insertion kernel: one program per candidate row block."""

import contextlib

import torch
import triton
import triton.language as tl

BLOCK = 512  # tail values one program reads and moves at a time


NUM_WARPS = 4


@triton.jit(do_not_specialize=["t"])
def insert_values(sorted_values, row_stride, weighted_sums, values, active, coefficients,
                  weights, t, BLOCK: tl.constexpr):
    u = tl.program_id(0)
    if tl.load(active + u) != 0:
        x = tl.load(values + u)
        row = sorted_values + u.to(tl.int64) * row_stride  # 396k x 10k values pass 2^31
        # insertion point: the first of the t stored values that is greater than x
        low = t * 0
        high = t
        while low < high:
            middle = (low + high) // 2
            go_left = tl.load(row + middle) > x
            high = tl.where(go_left, middle, high)
            low = tl.where(go_left, low, middle + 1)
        tail = tl.zeros([BLOCK], dtype=tl.float64)
        end = t
        while end > low:
            offsets = end - BLOCK + tl.arange(0, BLOCK)
            in_tail = offsets >= low
            stored = tl.load(row + offsets, mask=in_tail, other=0.0)
            tail += stored.to(tl.float64) * tl.load(coefficients + offsets, mask=in_tail,
                                                     other=0.0)
            # Each value moves to the place another thread reads: all reads of this block
            # finish before any write (blocks go from the tail's end, so a write never lands
            # on a value that is still to be read).
            tl.debug_barrier()
            tl.store(row + offsets + 1, stored, mask=in_tail)
            end -= BLOCK
        tl.store(row + low, x)
        total = tl.load(weighted_sums + u) + tl.load(weights + low) * x.to(tl.float64)
        tl.store(weighted_sums + u, total - tl.sum(tail, axis=0))


def launch(sorted_values, weighted_sums, values, active, coefficients, weights, t, block=BLOCK):
    """One step: insert ``values[u]`` into every active candidate u's sorted row."""
    # Triton launches on the current CUDA device, not on the tensors' one: with --gpu_id 1 the
    # kernel must be sent to GPU 1 explicitly.
    on_device = (torch.cuda.device(sorted_values.device) if sorted_values.is_cuda
                 else contextlib.nullcontext())
    with on_device:
        insert_values[(len(values),)](sorted_values, sorted_values.stride(0), weighted_sums,
                                      values, active, coefficients, weights, t, BLOCK=block,
                                      num_warps=NUM_WARPS)
