"""Sizing: NovelSelect's memory per rank and estimated time on H100s (the README's table).

The model itself (its figures and functions) is ``benchmarks/cost_model.py``, which
``benchmarks/gpu_scale.py`` uses too; this script measures what it can on the CPU, checks the
model's byte and op counts against counted ones, and prints the table.

For each pool (n x d), budget k and number of GPUs G (one rank per GPU under ``torchrun``, 8
per node; G = 1 is a plain run without it) the largest rank holds ``ceil(n / G)`` rows
(``utils.runtime.distributed.row_split``) and sets the pace.

Memory per rank (the engine's own accounting): ``utils.selection.memory.selection_memory_bytes`` for
the rank's rows (rows x (k - 1) float32 values, the unit vectors, the float64 sums) plus
``TORCH_BLOCK_MIB``, the GPU engine's working memory, as ``check_memory`` adds it on a GPU.
It fits when that is at most the usable HBM: 81,559 MiB (``nvidia-smi`` on an H100 80GB HBM3)
less 1 GiB ASSUMED for the CUDA context, NCCL and the caching allocator's slack. GB = 10^9 B.

Time per pick: one step of the greedy loop on the largest rank, Triton engine:

* HBM bytes per row of the rank's block, DERIVED from the code and CHECKED by counting:
  ``fixed_order_dots`` (the float32 products, then ``halving_sums``: a clone of the first
  half, the add of the rest, log2(d) - 1 halvings, each op reading its inputs and writing
  its output: 24 d bytes when d is a power of two, six passes over the unit vectors); the
  copy into ``dots`` and ``take``'s three elementwise ops (36 bytes); the Triton insertion
  (``triton_selection.insert_values``): the active flag, the new value, the sum read and
  written, the new value stored (25 bytes), one 32-byte sector per binary-search probe
  (ceil(log2(t + 1))), and 8 bytes (float32 read + write) per tail value, f x t of them
  with t values held; ``best_scored``'s divide, mask, where and argmax (43 bytes). The
  coefficients and weights the kernel reads (k float64, shared by all rows) stay in the
  50 MB L2 and are not counted. The bytes go at an achieved bandwidth ASSUMED to be
  ``--bandwidth-fraction`` of 3.35 TB/s (default 65%: 2.18 TB/s; a plain device-to-device
  copy reached about 3.0 TB/s, 90%, on this workplace's H100; the halving tree's later,
  small kernels and the Triton tail loop reach less).
* Launches: a step issues ``dot_ops_per_chunk`` ops per row chunk of the dot (chunks of
  ``TORCH_BLOCK_MIB``, ``TorchEngine.distance_chunks``), take's 4, best's 5 and one Triton
  launch. The device time of a step is the larger of its bytes' time and its ops x OP_S,
  OP_S = torch's CPU dispatch per op (MEASURED here) + 3 us of CUDA launch (ASSUMED).
* Host round trips, each ``SYNC_S`` = 20 us (ASSUMED: a blocking copy while the GPU idles),
  counted in the code: ``best_scored`` reads 4 scalars (argmax, active, novelty, score); with
  ranks, ``ShardedEngine`` adds 8: ``Ranks.gather_fixed`` (the best to the device, all of them
  back), the owner's vector and factor to the host (``host_rows``, ``host_factors``),
  ``Ranks.broadcast`` (to the device and back), and ``take``'s target and factor to the
  device again.
* With ranks, the step's messages: the collectives COUNTED on 2 CPU ranks (one all-gather of
  (score, novelty, index), one broadcast of the pick's d + 1 float32), over NCCL on GPUs at
  ``NCCL_NODE_S`` = 30 us each inside a node and ``NCCL_NET_S`` = 100 us across nodes
  (ASSUMED); and the exchange's other ops on the host, each at OP_S: those COUNTED at 2
  ranks (one receive buffer per rank, so G of them, and the stack), and the G copies out of
  NCCL's flat buffer that PyTorch's ``ProcessGroupNCCL::allgather`` makes into a list of
  outputs (read in its source; gloo makes none, so they are not counted here).

Total = the sum over the k - 1 steps (t = 0 .. k - 2 values held) of each step's time.
Not included: loading the shards, writing the outputs, and the density's exact kNN search
(``cost_model.knn_s``: 2 n^2 d / G float32 operations per rank at 50 TFLOP/s, ASSUMED, and with
ranks every query vector received once by each rank, as each chunk is broadcast once by its
owners, plus every rank's neighbours of it, over gloo: printed below the table).

MEASURED on this CPU before the table, and printed: (1) the bytes per row of the dot + take
and of best, and their ops and host reads, counted op by op with a ``TorchDispatchMode`` over
the CPU torch engine (each aten op's tensor inputs read, outputs written; views free), against
the formulas above; (2) the tail fraction f: the share of a candidate's stored values behind
the new one, over all candidates and sampled steps, from the numba engine on synthetic
clustered pools (``tests/synthetic.py``, 50 clusters; real embeddings may give another f);
(3) torch's CPU dispatch time per op; (4) one ``ShardedEngine`` step on 2 gloo ranks
(``torchrun``): its collectives and other torch ops, and its time against the local engine's
(the CPU's gloo, for scale; the GPU model uses the NCCL latencies above). Nothing here runs
on a GPU: the bandwidth, launch, round-trip and NCCL figures are assumptions, which a run of
``benchmarks/gpu_scale.py`` (step c3: ms per pick at 396,000 x 4,096) on an H100 checks.

    python benchmarks/sizing.py                         # measures (a minute or two), prints
    python benchmarks/sizing.py --bandwidth-fraction 0.9
"""

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cost_model as model
import numpy as np
from common import BENCH_SPREAD, REPO
from cost_model import (
    BEST_BYTES,
    BEST_HOST_READS,
    BEST_OPS,
    GPUS_PER_NODE,
    HBM_USABLE_BYTES,
    KNN_FLOPS,
    LAUNCH_S,
    TAKE_BYTES,
    TAKE_OPS,
    dot_bytes_per_row,
    dot_ops_per_chunk,
    memory_per_rank,
)

GB = 1e9
CASES = [(1_000_000, 4096, 10_000), (5_000_000, 4096, 20_000)]  # (pool, dim, k)
GPU_COUNTS = [1, 8, 64]
COLLECTIVE_OPS = ("allgather_", "broadcast_", "allreduce_", "allgather_into_tensor_coalesced_",
                  "_allgather_base_", "reduce_scatter_")


# ---------------------------------------------------------------------------------------
# measurements on this CPU


def traffic_counter():
    """A ``TorchDispatchMode`` class recording, for every aten op that does work, its name and
    the bytes of the tensors it reads and writes: an op reads its tensor arguments and writes
    its outputs; an in-place op writes its first argument; ``copy_`` reads its source only,
    and nothing when source and destination are the same memory (ATen returns at once);
    views, ``empty`` and the like are free (but ``empty_like`` is recorded, with 0 bytes)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    def nbytes(value):
        return value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0

    def same_memory(a, b):
        return (a.data_ptr() == b.data_ptr() and a.shape == b.shape
                and a.stride() == b.stride() and a.dtype == b.dtype)

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []  # (name, read, written)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if func.is_view or name in ("empty", "lift_fresh", "detach"):
                return out
            inputs = [leaf for leaf in tree_leaves((args, kwargs or {}))
                      if isinstance(leaf, torch.Tensor)]
            if name == "empty_like":
                read = written = 0
            elif name == "copy_" and same_memory(args[0], args[1]):
                read = written = 0
            elif name == "copy_":
                read, written = nbytes(args[1]), nbytes(args[0])
            elif func._schema.is_mutable:
                read, written = sum(map(nbytes, inputs)), nbytes(args[0])
            else:
                read = sum(map(nbytes, inputs))
                written = sum(map(nbytes, tree_leaves(out)))
            self.ops.append((name, read, written))
            return out

    return Counter


def count_step_traffic(rows, dim, k=8):
    """Counted bytes per row of one step's dot + take and of its best pass, their ops and
    host reads, on the CPU torch engine (one chunk)."""
    from utils.numerics.rows import unit_rows
    from utils.selection.gpu import TorchEngine
    from synthetic import clustered_vectors

    unit = unit_rows(clustered_vectors(rows, dim, 8, seed=1, spread=BENCH_SPREAD))
    engine = TorchEngine(unit, np.ones(rows, dtype=np.float32), k, 1.0, "cpu")
    counter = traffic_counter()
    engine.add_pick(0)
    with counter() as best:
        pick, _novelty, _score, _largest = engine.best_scored()
    with counter() as take:
        engine.take(engine.unit[pick], engine.density_factors[pick], pick)
    reads = [op for op in best.ops if op[0] == "_local_scalar_dense"]
    work = [op for op in best.ops if op[0] != "_local_scalar_dense"]
    return dict(take=sum(r + w for _n, r, w in take.ops) / rows, take_ops=len(take.ops),
                best=sum(r + w for _n, r, w in work) / rows, best_ops=len(work),
                host_reads=len(reads))


def measure_tail_fraction(rows, dim, k, every):
    """Run the numba engine on a clustered pool and, after every ``every``-th insertion,
    count each active candidate's tail: its stored values greater than the value just
    inserted (those that moved one place). Returns sum(tail) / sum(t) over those steps."""
    from utils.density.reference import pool_density
    from utils.numerics.rows import unit_rows
    from utils.selection.cpu import NumpyEngine
    from synthetic import clustered_vectors

    vectors = clustered_vectors(rows, dim, 50, seed=0, spread=BENCH_SPREAD)
    engine = NumpyEngine(unit_rows(vectors), pool_density(vectors), k, 1.0, kernels="numba")
    engine.add_pick(0)
    tails = held = 0
    for step in range(1, k - 1):
        t = engine.t
        engine.add_pick(engine.best()[0])
        if step % every == 0:
            active = engine.active
            stored = engine.sorted_values[active, :t + 1]
            tails += int((stored > engine.values[active, None]).sum())
            held += int(active.sum()) * t
    return tails / held


def dispatch_s_per_op(repeats=20000):
    """Seconds torch spends per tiny elementwise op on this CPU (dispatch; no real work)."""
    import torch

    a, b = torch.zeros(4), torch.ones(4)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.add(a, b)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


EXCHANGE_FLAG = "--exchange-worker"


def exchange_worker(out_path, picks=40, rows=32, dim=4096):
    """Under torchrun: run a ``ShardedEngine`` whose ranks hold ``rows`` rows each (numba
    local engines: every torch op is the exchange's), count the ops of one step, and time
    its steps against the local engine's alone. Rank 0 writes the medians to ``out_path``."""
    from utils.runtime.distributed import start_ranks, stop_ranks
    from utils.selection.cpu import NumpyEngine
    from utils.selection.sharded import ShardedEngine

    ranks, _device = start_ranks(-1)
    rng = np.random.default_rng(ranks.rank)
    vectors = rng.normal(size=(rows, dim)).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    rho = np.ones(rows, dtype=np.float32)

    def median_step_s(engine):
        times = []
        engine.add_pick(0)
        for _ in range(picks - 2):
            start = time.perf_counter()
            engine.add_pick(engine.best()[0])
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def local_engine():
        return NumpyEngine(unit, rho, picks, 1.0, kernels="numba")

    local_s = median_step_s(local_engine())
    sharded = ShardedEngine(ranks, local_engine(), ranks.rank * rows, ranks.size * rows)
    sharded.add_pick(0)
    with traffic_counter()() as step:
        sharded.add_pick(sharded.best()[0])
    names = [name for name, _r, _w in step.ops]
    sharded = ShardedEngine(ranks, local_engine(), ranks.rank * rows, ranks.size * rows)
    step_s = median_step_s(sharded)
    if ranks.is_main:
        Path(out_path).write_text(json.dumps(dict(
            ops=names, collectives=sum(name in COLLECTIVE_OPS for name in names),
            other_ops=sum(name not in COLLECTIVE_OPS for name in names),
            step_s=step_s, local_s=local_s)))
    stop_ranks(ranks)


def measure_exchange(work):
    """``exchange_worker`` on 2 CPU ranks (torchrun); its JSON."""
    out = work / "exchange.json"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "2", str(Path(__file__).resolve()), EXCHANGE_FLAG,
                    str(out)], check=True, cwd=REPO, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------


def duration(seconds):
    """``"40 s"``, ``"13 min"`` or ``"2.5 h"``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def print_measurements(args):
    """Run the CPU measurements, print them, return (tail fraction, op seconds, exchange)."""
    print("Measured on this CPU (model checks):")
    counted = count_step_traffic(2048, 4096)
    print(f"  dot + take at d = 4,096, bytes per row: counted {counted['take']:,.0f}, formula "
          f"{dot_bytes_per_row(4096) + TAKE_BYTES:,}; ops {counted['take_ops']}, formula "
          f"{dot_ops_per_chunk(4096) + TAKE_OPS} (one chunk)")
    print(f"  best, bytes per row: counted {counted['best']:.0f}, formula {BEST_BYTES}; ops "
          f"{counted['best_ops']}, formula {BEST_OPS}; host reads {counted['host_reads']}, "
          f"formula {BEST_HOST_READS}")
    fractions = [measure_tail_fraction(rows, 256, args.tail_k, every=25)
                 for rows in args.tail_pools]
    print(f"  tail fraction f (numba engine, clustered pools of "
          f"{' and '.join(f'{rows:,}' for rows in args.tail_pools)} x 256, k = "
          f"{args.tail_k:,}): {' and '.join(f'{f:.3f}' for f in fractions)}")
    op_s = dispatch_s_per_op()
    print(f"  torch dispatch: {op_s * 1e6:.1f} us per op (+ {LAUNCH_S * 1e6:.0f} us CUDA launch "
          f"assumed)")
    exchange = measure_exchange(Path(tempfile.mkdtemp(prefix="sizing_")))
    print(f"  ShardedEngine step on 2 gloo ranks: ops {', '.join(exchange['ops'])} "
          f"({exchange['collectives']} collectives); "
          f"{exchange['step_s'] * 1e3:.2f} ms a step vs {exchange['local_s'] * 1e3:.2f} ms "
          f"for the local engine alone (medians, this CPU's gloo)")
    return fractions[-1], op_s + LAUNCH_S, exchange


def main():
    if len(sys.argv) == 3 and sys.argv[1] == EXCHANGE_FLAG:
        exchange_worker(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bandwidth-fraction", type=float, default=model.BANDWIDTH_FRACTION,
                        help="achieved share of the H100's 3.35 TB/s (assumed)")
    parser.add_argument("--tail-pools", type=int, nargs="+", default=[4000, 12000],
                        help="pool sizes of the numba runs that measure the tail fraction "
                             "(the last one's is used)")
    parser.add_argument("--tail-k", type=int, default=500)
    args = parser.parse_args()
    bandwidth = model.bandwidth(args.bandwidth_fraction)

    tail, op_s, exchange = print_measurements(args)
    print()
    print(f"NovelSelect on H100 80GB, Triton engine, one rank per GPU, {GPUS_PER_NODE} per "
          f"node: HBM at {bandwidth / 1e12:.2f} TB/s ({args.bandwidth_fraction:.0%} of 3.35, "
          f"assumed), tail fraction {tail:.2f} (measured), usable HBM "
          f"{HBM_USABLE_BYTES / GB:.1f} GB")
    print(f"{'pool':>6} {'dim':>5} {'k':>6} {'GPUs':>4} {'GB/rank':>7} {'fits':>4} "
          f"{'HBM ms':>7} {'host ms':>7} {'ms/pick':>7} {'est. total':>10}")
    for (n, dim, k), gpus in ((case, gpus) for case in CASES for gpus in GPU_COUNTS):
        memory = memory_per_rank(n, k, dim, gpus)
        fits = memory <= HBM_USABLE_BYTES
        device, host = model.selection_estimate(n, dim, k, gpus, tail, bandwidth, op_s,
                                                exchange)
        steps = k - 1
        print(f"{n / 1e6:>5g}M {dim:>5,} {k:>6,} {gpus:>4} {memory / GB:>7.1f} "
              f"{'yes' if fits else 'no':>4} {device / steps * 1e3:>7.2f} "
              f"{host / steps * 1e3:>7.2f} {(device + host) / steps * 1e3:>7.2f} "
              f"{duration(device + host) if fits else '-':>10}")
    knn = ", ".join(f"{n / 1e6:g}M on {gpus}: {duration(model.knn_s(n, n, dim, gpus))}"
                    for n, dim, _k in CASES for gpus in GPU_COUNTS)
    print(f"HBM ms: the kernels' bytes (or launches); host ms: round trips, collectives, "
          f"host ops; both per pick, averaged over the k - 1 steps. Not included: loading, "
          f"writing, and the density's exact kNN (cost_model.knn_s: "
          f"{KNN_FLOPS / 1e12:.0f} TFLOP/s, each rank receiving every query once and every "
          f"rank's neighbours over gloo at {model.GLOO_BYTES_S / 1e9:g} GB/s: {knn}).")


if __name__ == "__main__":
    main()
