"""The one cost model of NovelSelect and the density's exact kNN on H100s (sizing.py, gpu_scale.py).

Every figure is marked: DERIVED from the code (and CHECKED by ``sizing.py``, which counts the
bytes and ops of a step with a ``TorchDispatchMode``), MEASURED on a CPU of this workplace, or
ASSUMED (an H100 figure nobody here could measure; a run of ``benchmarks/gpu_scale.py`` on a GPU
checks them). GB = 10^9 B.

Selection, one pick on the largest rank (``ceil(n / G)`` rows of ``G`` ranks): the larger of its
HBM bytes at the achieved bandwidth and its ops at ``OP_S`` each, plus host round trips and, with
ranks, ``ShardedEngine``'s two small collectives (NCCL) and host ops (``sizing.py``'s docstring
walks through every term).

Exact kNN of ``q`` queries against ``r`` reference rows: ``2 q ceil(r / G) d`` float32 operations
per rank at ``KNN_FLOPS``, three host passes over the rank's block (checks, digests, upload), and
with ranks the messages of ``utils.density.sharded`` (over gloo, on the host): each query chunk of
``QUERY_CHUNK_ROWS`` is broadcast once by the ranks that hold its rows, so every rank receives
every query vector once, whatever ``G`` (4 d bytes a query); then each rank's k + 1 nearest of the
chunk (float64 distance and int64 row: 16 bytes each) are all-gathered, which does grow with
``G``; per chunk one broadcast per owner and two ``gather_arrays`` of two collectives each.
"""

import math

import common  # noqa: F401 (the repository on the import path, for utils)

from utils.density.factor import QUERY_CHUNK_ROWS
from utils.numerics.blocks import MIB, rows_per_block
from utils.numerics.fixed_order import fixed_order_bytes_per_row
from utils.selection.memory import TORCH_BLOCK_MIB, selection_memory_bytes

GPUS_PER_NODE = 8

# ASSUMED (H100 SXM 80GB; module docstring)
HBM_USABLE_BYTES = 81559 * MIB - 1024 * MIB  # nvidia-smi's total less 1 GiB of context and slack
PEAK_BANDWIDTH = 3.35e12  # HBM3, bytes/s
BANDWIDTH_FRACTION = 0.65  # achieved share: a device copy reached 90%, small kernels reach less
LAUNCH_S = 3e-6  # CUDA kernel launch, on top of torch's CPU dispatch
SYNC_S = 20e-6  # one blocking host <-> device copy
NCCL_NODE_S = 30e-6  # one small NCCL collective inside a node
NCCL_NET_S = 100e-6  # one small NCCL collective across nodes
KNN_FLOPS = 5e13  # float32 matrix products without TF32 (utils.numerics.compute.exact_torch)
GLOO_BYTES_S = 1e9  # bytes one rank receives per second in a gloo collective
GLOO_S = 2e-4  # one small gloo collective
HOST_BYTES_S = 5e9  # one host pass over an array (numpy checks, digests, normalising, upload)
TORCH_VALUE_BYTES = 40  # torch kernel's insertion per stored value: masks, copies, float64 sums
SELF_CHECK_S = 2.0  # the engine's set-up on a GPU: Triton's compile and self-check

# MEASURED on this workplace's CPUs (sizing.py measures them again and passes its own)
DISPATCH_S = 4e-6  # torch's CPU dispatch of one tiny elementwise op (3.2 to 4 us)
OP_S = DISPATCH_S + LAUNCH_S
TAIL_FRACTION = 0.5  # share of a candidate's stored values behind the new one (numba runs)
EXCHANGE = dict(collectives=2, other_ops=3)  # ShardedEngine's step, counted on 2 gloo ranks

# DERIVED from utils/selection (per row of a rank's block; sizing.py's docstring)
SECTOR = 32  # bytes of one HBM access: a binary-search probe
TAKE_BYTES = (4 + 4) + (4 + 4) + (4 + 4) + (8 + 4)  # dots[...] =; 1 - dots; rho + p; product
BEST_BYTES = (8 + 8) + (1 + 1) + (9 + 8) + 8  # sums / t; active.bool(); where; argmax
INSERT_FIXED_BYTES = 1 + 4 + (8 + 8) + 4  # active, value, sum read + written, value stored
TAKE_OPS = 4  # mark the pick taken, 1 - dots, rho + rho_pick, the product
BEST_OPS = 5  # divide, bool, the -inf scalar, where, argmax
BEST_HOST_READS = 4  # int(argmax), bool(active[pick]), float(novelty), float(score)
EXCHANGE_HOST_COPIES = 8  # ShardedEngine's own host <-> device copies per step
RESULT_BYTES = 8 + 8  # one neighbour of the sharded kNN's merge: float64 distance, int64 row
KNN_GATHERS_PER_CHUNK = 2 * 2  # distances and rows, each a count all-reduce and an all-gather


def bandwidth(fraction=BANDWIDTH_FRACTION):
    return fraction * PEAK_BANDWIDTH


def rank_rows(n, gpus):
    """Rows of the largest rank's block (``utils.runtime.distributed.row_split``)."""
    return -(-n // gpus)


# ---------------------------------------------------------------------------------------
# selection


def halving_widths(dim):
    """Widths of ``halving_sums``'s steps: the first half h (the largest power of two below
    ``dim``), then h/2, h/4, ..., 1."""
    half = 1 << ((dim - 1).bit_length() - 1)
    widths = [half]
    while half > 1:
        half //= 2
        widths.append(half)
    return widths


def dot_bytes_per_row(dim):
    """HBM bytes per row of ``fixed_order_dots``: the products (read 4d, write 4d), the clone
    of the first half (4h + 4h), the add of the rest (read 2 x 4(d - h), write 4(d - h)),
    each later halving to h' (read 8h', write 4h')."""
    first, *later = halving_widths(dim)
    return 8 * dim + 8 * first + 12 * (dim - first) + sum(12 * width for width in later)


def dot_ops_per_chunk(dim):
    """Ops per row chunk of the dot: the product, the clone, the add and its copy onto itself
    (``a[..., :w] += b``: dispatched, ATen returns at once), each later halving, the copy
    into ``dots``."""
    return 4 + len(halving_widths(dim)) - 1 + 1


def distance_chunks(rows, dim):
    """Row chunks of one step's dot (``TorchEngine.distance_chunks``)."""
    return math.ceil(rows / rows_per_block(fixed_order_bytes_per_row(dim), TORCH_BLOCK_MIB * MIB))


def insert_bytes_per_row(t, tail_fraction, kernel="triton"):
    """HBM bytes per active row of the insertion with ``t`` values held: Triton moves the
    tail (8 bytes a value) after a binary search; the torch kernel touches every value."""
    if kernel == "torch":
        return INSERT_FIXED_BYTES + TORCH_VALUE_BYTES * t
    probes = math.ceil(math.log2(t + 1)) if t else 0
    return INSERT_FIXED_BYTES + SECTOR * probes + 8 * tail_fraction * t


def memory_per_rank(n, k, dim, gpus):
    """Bytes on a rank's GPU: the engine's stored state plus its working budget."""
    return selection_memory_bytes(rank_rows(n, gpus), k, dim) + TORCH_BLOCK_MIB * MIB


def device_step_s(rows, dim, t, tail_fraction=TAIL_FRACTION, bandwidth_bytes_s=None,
                  op_s=OP_S, kernel="triton"):
    """GPU seconds of one step on ``rows`` rows holding ``t`` values: its bytes at the
    bandwidth or its launches, whichever is longer."""
    per_row = (dot_bytes_per_row(dim) + TAKE_BYTES + BEST_BYTES
               + insert_bytes_per_row(t, tail_fraction, kernel))
    ops = distance_chunks(rows, dim) * dot_ops_per_chunk(dim) + TAKE_OPS + BEST_OPS + 1
    return max(rows * per_row / (bandwidth_bytes_s or bandwidth()), ops * op_s)


def host_step_s(gpus, op_s=OP_S, exchange=None):
    """Seconds of one step outside the kernels: host round trips, and with ranks the
    collectives and the exchange's host ops (``exchange``: counted at 2 ranks)."""
    seconds = BEST_HOST_READS * SYNC_S
    if gpus == 1:
        return seconds
    exchange = exchange or EXCHANGE
    latency = NCCL_NODE_S if gpus <= GPUS_PER_NODE else NCCL_NET_S
    # Counted at 2 ranks, with one receive buffer per rank; plus NCCL's G copies out.
    host_ops = exchange["other_ops"] - 2 + gpus + gpus
    return (seconds + EXCHANGE_HOST_COPIES * SYNC_S + exchange["collectives"] * latency
            + host_ops * op_s)


def selection_estimate(n, dim, k, gpus=1, tail_fraction=TAIL_FRACTION, bandwidth_bytes_s=None,
                       op_s=OP_S, exchange=None, kernel="triton"):
    """(device seconds, host seconds) of the k - 1 steps on the largest rank."""
    rows = rank_rows(n, gpus)
    device = sum(device_step_s(rows, dim, t, tail_fraction, bandwidth_bytes_s, op_s, kernel)
                 for t in range(k - 1))
    return device, (k - 1) * host_step_s(gpus, op_s, exchange)


def selection_s(n, dim, k, gpus=1, kernel="triton"):
    """Seconds of a whole selection at the default figures: the engine's set-up (normalise
    and upload the rank's rows, Triton's self-check), then the k - 1 steps."""
    rows = rank_rows(n, gpus)
    setup = 3 * rows * dim * 4 / HOST_BYTES_S + SELF_CHECK_S
    return setup + sum(selection_estimate(n, dim, k, gpus, kernel=kernel))


# ---------------------------------------------------------------------------------------
# the density's exact kNN


def knn_compute_s(n_queries, n_reference, dim, gpus=1):
    """One rank's share: the distance products, and three host passes over its block."""
    block = rank_rows(n_reference, gpus)
    return 2 * n_queries * block * dim / KNN_FLOPS + 3 * block * dim * 4 / HOST_BYTES_S


def knn_traffic_bytes(n_queries, dim, gpus, neighbors):
    """Bytes one rank receives: every query vector once (each chunk broadcast once by its
    owners), and every rank's ``neighbors + 1`` nearest of every query."""
    if gpus == 1:
        return 0
    return n_queries * dim * 4 + gpus * n_queries * (neighbors + 1) * RESULT_BYTES


def knn_messages(n_queries, gpus):
    """Collectives of the sharded search: per chunk one broadcast and the two gathers, plus a
    broadcast more for each chunk that straddles two owners (at most one per rank boundary)."""
    if gpus == 1:
        return 0
    return math.ceil(n_queries / QUERY_CHUNK_ROWS) * (1 + KNN_GATHERS_PER_CHUNK) + gpus - 1


def knn_s(n_queries, n_reference, dim, gpus=1, neighbors=10):
    """Seconds of the exact kNN on ``gpus`` ranks (module docstring)."""
    return (knn_compute_s(n_queries, n_reference, dim, gpus)
            + knn_traffic_bytes(n_queries, dim, gpus, neighbors) / GLOO_BYTES_S
            + knn_messages(n_queries, gpus) * GLOO_S)


# ---------------------------------------------------------------------------------------
# the scale run's other steps (gpu_scale.py)

PROCESS_S = 8.0  # one script process: Python, torch, the CUDA context, Triton's self-check
WRITE_BYTES_S = 2.0e9  # writing shards into the page cache
HASH_BYTES_S = 1.0e9  # one core's blake2b or sha256 over a rank's rows (digests, run record)


def generate_s(n, dim):
    """The synthetic pool drawn on the device (three passes) and copied to the host."""
    return 3 * n * dim * 4 / bandwidth(1.0) + n * dim * 4 / HOST_BYTES_S


def novelsum_s(size, n, dim, neighbors=10):
    """NovelSum of ``size`` rows against ``n``: their kNN, their pairwise distances."""
    return knn_s(size, n, dim, 1, neighbors) + 2 * size * size * dim / KNN_FLOPS + 1.0


def torchrun_s(n, dim, k, ranks, neighbors=10):
    """novelselect.py under torchrun: the pool written as shards, torchrun and its ranks
    started, each rank's block read and hashed, the sharded kNN, the sharded selection."""
    block_bytes = rank_rows(n, ranks) * dim * 4
    write = n * dim * 4 / WRITE_BYTES_S
    load = block_bytes * (1 / HOST_BYTES_S + 2 / HASH_BYTES_S)
    return (write + 2 * PROCESS_S + load + knn_s(n, n, dim, ranks, neighbors)
            + selection_s(n, dim, k, ranks))
