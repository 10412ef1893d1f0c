"""The GPU scale run: the paper's pool size through density, both kernels and torchrun, timed.

    python benchmarks/gpu_scale.py                 # a machine with a GPU: at most --budget_s
    python benchmarks/gpu_scale.py --smoke         # every step at tiny sizes on the CPU

``bash benchmarks/gpu_check.sh`` runs it after the GPU tests (``pytest -m gpu``), which check
the GPU paths' correctness on the golden cases; this script measures them at scale. Needs
torch and Triton (comes with torch's CUDA builds), never faiss or vLLM: without faiss-gpu the
density's kNN is the library's exact torch search. Steps, in the order they run:

- c0  a synthetic clustered pool, the paper's size (396,000 x 4,096 float32, 6.5 GB): the
      recipe of ``tests/synthetic.py``'s ``clustered_vectors`` drawn by torch on the device.
- d   NovelSum (``utils.api.novelsum``, the default 18-point grid) of 10,000 pool rows against
      the whole pool as reference.
- c1  the density factor of every pool row (exact kNN, the pool as reference).
- c2  the torch kernel: its first ``--torch_picks`` picks timed and extrapolated to ``--k``.
- c3  the Triton kernel: ``--k`` picks (10,000).
- c4  the first picks of c2 and c3 agree.
- e   with two or more GPUs, the same selection by ``novelselect.py`` under ``torchrun``
      (``scale_torchrun.py``): its picks must equal c3's. With one GPU: ``skipped``.

c1 to c3 call the public functions that ``utils.api.novelselect`` calls (``pool_density``,
``check_memory``, ``unit_rows``, ``make_engine``, ``first_pick``, ``select``) one by one, so the
density and the selection are timed apart and a run stopped by the clock keeps what it measured.

Time: every step checks the time left before it starts and is skipped (``skipped: time``) when
its estimate does not fit; the long ones also stop at the budget's end (``stopped: time``,
saying how far they got and what the whole would take). The estimates, ``est. s (H100)``, are
``benchmarks/cost_model.py``'s, the model ``benchmarks/sizing.py`` prints. ``--smoke`` runs every
step at tiny sizes on the CPU (Triton's interpreter runs the fused kernel; step e runs 2 CPU
ranks); it checks this script, not the GPU. A failing step puts its one-line error in the table
and the script exits 1; the table also goes to ``--output`` (git ignores benchmarks/results/).
"""

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cost_model as model
import numpy as np
from check_table import (
    ALWAYS,
    Budget,
    CheckFailed,
    OutOfTime,
    Step,
    log,
    release,
    run_plan,
    synchronize,
    table,
)
from common import BENCH_SPREAD, REPO
from scale_torchrun import (
    DENSITY_POWER,
    KERNEL_VARIABLE,
    SELECTION_ALPHA,
    first_difference,
    needs_ranks,
    step_torchrun,
    torchrun_ranks,
)

from utils.io.atomic import write_text_atomic

NOVELSUM_COLUMN = "neighbor_10_density_0.5_distance_1"  # the paper's recommended grid point
FULL_SIZES = dict(pool=396_000, dim=4096, k=10_000, torch_picks=500, novelsum_size=10_000,
                  budget_s=450.0)
SMOKE_SIZES = dict(pool=80, dim=16, k=10, torch_picks=5, novelsum_size=40, budget_s=300.0)


@dataclass
class Context:
    """What the steps share: options, device, and the pool and its results once made."""

    args: argparse.Namespace
    device: str
    budget: Budget
    pool: np.ndarray = None
    density_factors: np.ndarray = None
    unit: np.ndarray = None
    picks: dict = field(default_factory=dict)  # kernel name -> picks made

    @property
    def on_gpu(self):
        return self.device != "cpu"


@contextlib.contextmanager
def kernel_variable(value):
    """``NOVELSELECT_GPU_KERNEL`` set to ``value`` (None: unset) for the block, then restored."""
    before = os.environ.get(KERNEL_VARIABLE)
    if value is None:
        os.environ.pop(KERNEL_VARIABLE, None)
    else:
        os.environ[KERNEL_VARIABLE] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(KERNEL_VARIABLE, None)
        else:
            os.environ[KERNEL_VARIABLE] = before


# c0: the pool


def clustered_pool(n, dim, device, seed=0, n_clusters=8, spread=BENCH_SPREAD,
                   chunk_rows=50_000):
    """(n, dim) float32 host array: ``n_clusters`` Gaussian centres plus ``spread`` x noise,
    the recipe of ``clustered_vectors`` (tests/synthetic.py) drawn by torch on ``device`` in row
    chunks (numpy draws 1.6e9 normals in about half a minute on one core)."""
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    centres = torch.randn((n_clusters, dim), generator=generator, device=device)
    labels = torch.randint(0, n_clusters, (n,), generator=generator, device=device)
    out = np.empty((n, dim), dtype=np.float32)
    host = torch.from_numpy(out)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        noise = torch.randn((stop - start, dim), generator=generator, device=device)
        host[start:stop] = (centres[labels[start:stop]] + spread * noise).cpu()
    return out


def step_generate(ctx, row):
    ctx.pool = clustered_pool(ctx.args.pool, ctx.args.dim, ctx.device)
    row.result = f"pass: {ctx.pool.nbytes / 2**30:.1f} GiB on the host"


# d and c1: NovelSum and the density at scale


def density_reference_for(ctx, vectors, source):
    """The pool as a density reference: on a GPU the library's own choice of search (faiss-gpu
    when installed, else exact torch); on the CPU the torch search, as a GPU without faiss."""
    from utils.density.factor import DensityReference

    backend = None if ctx.on_gpu else "torch"
    return DensityReference(vectors, ctx.device, backend=backend, source=source)


def knn_backend_name(ctx):
    from utils.density.flat_index import faiss_gpu_available

    return "faiss-gpu" if ctx.on_gpu and faiss_gpu_available() else "exact torch"


def timed_progress(ctx, phases, name):
    """A progress wrapper for the library's chunk lists: records when ``name`` started and
    ended in ``phases`` and stops the step at the budget's end between chunks."""

    def wrap(chunks):
        chunks = list(chunks)
        phases[name] = [time.perf_counter(), None]
        for i, chunk in enumerate(chunks):
            ctx.budget.check(f"{name}: {i} of {len(chunks)} chunks done")
            yield chunk
        phases[name][1] = time.perf_counter()

    return wrap


def phase_seconds(phases, name):
    start, stop = phases.get(name, (None, None))
    return stop - start if stop is not None else float("nan")


def step_novelsum(ctx, row):
    from utils.metrics.novelsum import novelsum_grid

    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(len(ctx.pool), ctx.args.novelsum_size, replace=False))
    phases = {}
    reference = density_reference_for(ctx, ctx.pool, "the pool")
    result = novelsum_grid(ctx.pool[rows], reference=reference, device=ctx.device,
                           density_progress=timed_progress(ctx, phases, "kNN"),
                           distance_progress=timed_progress(ctx, phases, "distances"))
    synchronize(ctx.device)
    values = np.array(list(result.values.values()))
    if len(values) != 18 or not np.isfinite(values).all() or (values < 0).any():
        raise CheckFailed(f"{len(values)} grid values, not 18 finite non-negative ones")
    row.result = (f"pass: NovelSum(k=10, beta=0.5, alpha=1) = {result.values[NOVELSUM_COLUMN]:.4f}"
                  f"; kNN ({knn_backend_name(ctx)}) {phase_seconds(phases, 'kNN'):.1f} s, "
                  f"distances {phase_seconds(phases, 'distances'):.1f} s")


def step_density(ctx, row):
    from utils.density.reference import pool_density

    phases = {}
    reference = density_reference_for(ctx, ctx.pool, "the pool")
    ctx.density_factors = pool_density(ctx.pool, ctx.args.neighbors, DENSITY_POWER,
                                       reference=reference, device=ctx.device,
                                       progress=timed_progress(ctx, phases, "kNN"))
    synchronize(ctx.device)
    if not np.isfinite(ctx.density_factors).all() or (ctx.density_factors <= 0).any():
        raise CheckFailed("density factors not all finite and positive")
    low, high = ctx.density_factors.min(), ctx.density_factors.max()
    row.result = (f"pass: kNN ({knn_backend_name(ctx)}) {phase_seconds(phases, 'kNN'):.1f} s; "
                  f"density factors from {low:.3g} to {high:.3g}")


# c2, c3, c4: the selection kernels at scale


def build_engine(ctx, kernel, k):
    """The engine for ``kernel``: on a GPU ``make_engine`` (what the API runs), which must
    choose that kernel; on the CPU (smoke) the engine class itself, Triton in its interpreter
    (make_engine chooses numba on the CPU)."""
    from utils.selection.engine_choice import make_engine
    from utils.selection.gpu import TorchEngine, TritonEngine

    if not ctx.on_gpu:
        engine_type = TritonEngine if kernel == "triton" else TorchEngine
        return engine_type(ctx.unit, ctx.density_factors, k, SELECTION_ALPHA, "cpu")
    notices = []
    with kernel_variable("torch" if kernel == "torch" else None):
        engine = make_engine(ctx.unit, ctx.density_factors, k, SELECTION_ALPHA, ctx.device, notices.append)
    chosen = type(engine).__name__
    wanted = {"triton": "TritonEngine", "torch": "TorchEngine"}[kernel]
    if chosen != wanted:
        raise CheckFailed(f"make_engine chose {chosen}: {'; '.join(notices) or 'no notice'}")
    return engine


class PickClock:
    """``on_pick`` for ``select``: records each pick and its time, and stops the run at the
    budget's end."""

    def __init__(self, budget, k):
        self.budget, self.k = budget, k
        self.picks, self.times = [], []

    def __call__(self, index, novelty):
        self.picks.append(index)
        self.times.append(time.perf_counter())
        self.budget.check(f"{len(self.picks)} of {self.k} picks")

    def ms_per_pick(self):
        if len(self.times) < 2:
            return float("nan")
        return 1e3 * (self.times[-1] - self.times[0]) / (len(self.times) - 1)

    def extrapolated_s(self, k):
        """Seconds for all ``k - 1`` steps from a linear fit of the measured step times
        against the step number (a step's work grows with the values each candidate holds);
        a fitted step is never below zero (a few noisy steps can slope down)."""
        steps = np.diff(self.times)
        if len(steps) < 2:
            return float("nan")
        slope, intercept = np.polyfit(np.arange(1, len(steps) + 1), steps, 1)
        t = np.arange(1, k)
        return float(np.sum(np.maximum(intercept + slope * t, 0.0)))


def run_selection(ctx, kernel, k):
    """``k`` picks with ``kernel``; returns (clock, engine build seconds). ``OutOfTime`` carries
    how far it got and the extrapolated whole."""
    from utils.numerics.rows import unit_rows
    from utils.selection.selection_engine import first_pick
    from utils.selection.engine_choice import select
    from utils.selection.memory import check_memory

    n = len(ctx.pool)
    check_memory(n, k, ctx.pool.shape[1], ctx.device)
    if ctx.unit is None:
        ctx.unit = unit_rows(ctx.pool)
    started = time.perf_counter()
    engine = build_engine(ctx, kernel, k)
    synchronize(ctx.device)
    build_s = time.perf_counter() - started
    clock = PickClock(ctx.budget, k)
    try:
        picks = select(ctx.unit, ctx.density_factors, k, SELECTION_ALPHA, first_pick(n, ctx.args.seed),
                       engine=engine, on_pick=clock)
    except OutOfTime as stop:
        ctx.picks[kernel] = clock.picks
        raise OutOfTime(f"{stop.done}, {clock.ms_per_pick():.1f} ms/pick; "
                        f"extrapolated {k} picks: {clock.extrapolated_s(k):.1f} s") from None
    finally:
        del engine
        release(ctx.device)
    synchronize(ctx.device)
    ctx.picks[kernel] = picks
    if len(set(picks)) != k:
        raise CheckFailed(f"{k - len(set(picks))} repeated picks")
    return clock, build_s


def step_torch_prefix(ctx, row):
    k, picks = ctx.args.k, ctx.args.torch_picks
    clock, build_s = run_selection(ctx, "torch", picks)
    row.result = (f"pass: {picks} picks, {clock.ms_per_pick():.1f} ms/pick "
                  f"(engine {build_s:.1f} s); extrapolated {k} picks: "
                  f"{clock.extrapolated_s(k):.1f} s (linear fit of the step times; not run)")


def step_triton(ctx, row):
    k = ctx.args.k
    clock, build_s = run_selection(ctx, "triton", k)
    selection_s = clock.times[-1] - clock.times[0]
    build = "engine and Triton self-check" if ctx.on_gpu else "engine"
    row.result = (f"pass: {k} picks in {selection_s:.1f} s, {clock.ms_per_pick():.1f} ms/pick "
                  f"({build} {build_s:.1f} s)")


def step_agree(ctx, row):
    torch_picks, triton_picks = ctx.picks["torch"], ctx.picks["triton"]
    length = min(len(torch_picks), len(triton_picks))
    row.size = f"first {length} picks"
    first = first_difference(torch_picks[:length], triton_picks[:length])
    if first is not None:
        raise CheckFailed(f"the kernels' picks differ from pick {first} on")
    row.result = f"pass: first {length} picks identical"


# the plan


def needs_pool(ctx):
    return None if ctx.pool is not None else "skipped: needs the pool (c0)"


def needs_rho(ctx):
    return None if ctx.density_factors is not None else "skipped: needs the density (c1)"


def needs_both_picks(ctx):
    if ctx.picks.get("torch") and ctx.picks.get("triton"):
        return None
    return "skipped: needs picks of both kernels (c2, c3)"


def plan(ctx):
    """The scale run's steps in running order, with the cost model's estimates."""
    a = ctx.args
    pool = f"{a.pool} x {a.dim}"
    density = model.knn_s(a.pool, a.pool, a.dim, 1, a.neighbors)
    novelsum = model.novelsum_s(a.novelsum_size, a.pool, a.dim, a.neighbors)
    generate = model.generate_s(a.pool, a.dim)
    ranks = torchrun_ranks(ctx)
    torchrun = model.torchrun_s(a.pool, a.dim, a.k, max(ranks, 2), a.neighbors)
    return [
        Step("c0", "synthetic clustered pool (torch on the device)", pool, generate, generate,
             step_generate),
        Step("d", "NovelSum, default 18-point grid (utils.api.novelsum)",
             f"{a.novelsum_size} vs {pool}", novelsum, novelsum, step_novelsum, needs_pool),
        Step("c1", f"density, exact kNN over the pool (k={a.neighbors}, beta={DENSITY_POWER})",
             pool, density, density, step_density, needs_pool),  # half a density is no use
        Step("c2", "NovelSelect, torch kernel, first picks", f"{pool}, {a.torch_picks} picks",
             model.selection_s(a.pool, a.dim, a.torch_picks, kernel="torch"), 1.0,
             step_torch_prefix, needs_rho),
        Step("c3", "NovelSelect, Triton kernel", f"{pool}, k={a.k}",
             model.selection_s(a.pool, a.dim, a.k), 1.0, step_triton, needs_rho),
        Step("c4", "first picks: Triton == torch", "", 0.0, ALWAYS, step_agree,
             needs_both_picks),
        Step("e", f"novelselect.py under torchrun, "
                  f"{f'{ranks} ranks' if ranks >= 2 else 'one rank per GPU'}: picks == c3's",
             f"{pool}, k={a.k}", torchrun, torchrun, step_torchrun, needs_ranks),
    ]  # e: a partial run writes no picks, so it starts only when its whole estimate fits


# the command line


def add_options(parser, output_name):
    parser.add_argument("--smoke", action="store_true",
                        help="every step at tiny sizes on the CPU (the smoke defaults below)")
    parser.add_argument("--pool", type=int, help="pool rows (default 396000; smoke 80)")
    parser.add_argument("--dim", type=int, help="dimensions (default 4096; smoke 16)")
    parser.add_argument("--k", type=int, help="NovelSelect budget (default 10000; smoke 10)")
    parser.add_argument("--torch_picks", type=int,
                        help="picks timed with the torch kernel (default 500; smoke 5)")
    parser.add_argument("--novelsum_size", type=int,
                        help="rows measured by NovelSum (default 10000; smoke 40)")
    parser.add_argument("--neighbors", type=int, default=10, help="k of the density factor")
    parser.add_argument("--seed", type=int, default=42, help="first pick's seed, as the scripts")
    parser.add_argument("--budget_s", type=float,
                        help="seconds for the whole run (default 450: 8 minutes with a "
                             "margin; smoke 300)")
    parser.add_argument("--gpu_id", type=int, default=0, help="the GPU to check")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" /
                        output_name, help="where the table is written too")


def parse_args(argv=None, doc=__doc__, output_name="gpu_scale.md"):
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, output_name)
    args = parser.parse_args(argv)
    for name, value in (SMOKE_SIZES if args.smoke else FULL_SIZES).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 1 <= args.torch_picks <= args.k <= args.pool or args.novelsum_size > args.pool:
        parser.error("need 1 <= --torch_picks <= --k <= --pool and --novelsum_size <= --pool")
    return args


def choose_device(args, program="gpu_scale"):
    """``cpu`` for --smoke; else ``cuda:N``, refusing to run without that GPU."""
    if args.smoke:
        # Triton's interpreter runs the fused kernel on CPU tensors; it must be chosen before
        # Triton is first imported (subprocesses inherit it).
        os.environ["TRITON_INTERPRET"] = "1"
        return "cpu"
    import torch

    if not torch.cuda.is_available() or args.gpu_id >= torch.cuda.device_count():
        sys.exit(f"{program}: no CUDA device {args.gpu_id} here; use --smoke on a CPU machine")
    return f"cuda:{args.gpu_id}"


def start(args, program):
    """The shared context: the budget starts now, the device is resolved once, TF32 off."""
    budget = Budget(args.budget_s)
    device = choose_device(args, program)
    from utils.numerics.compute import exact_torch

    exact_torch()  # TF32 off, as every GPU path of the library
    return Context(args, device, budget)


def finish(ctx, rows, title):
    """Print the table, write it to ``--output``; the exit code (1 when a step failed)."""
    text = table(ctx, rows, title)
    print(text)
    write_text_atomic(ctx.args.output, text)
    log(f"table written to {ctx.args.output}")
    return 1 if any(row.status == "FAIL" for row in rows) else 0


def main(argv=None):
    ctx = start(parse_args(argv), "gpu_scale")
    rows = []
    try:
        run_plan(ctx, plan(ctx), rows)
    finally:
        code = finish(ctx, rows, "GPU scale run (benchmarks/gpu_scale.py)")
    return code


if __name__ == "__main__":
    sys.exit(main())
