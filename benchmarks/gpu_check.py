"""The GPU paths checked on a GPU in one command, one table at the end (issue 7).

    bash benchmarks/gpu_check.sh            # a machine with a GPU: at most --budget_s seconds
    bash benchmarks/gpu_check.sh --smoke    # every step at tiny sizes on the CPU (CI, laptops)

Needs torch, Triton (comes with torch's CUDA builds), numpy, numba, click, tqdm and pytest
(``NEEDED_MODULES``); never faiss, vLLM or orjson (JSON shards fall back to the standard
parser): without faiss-gpu the density's kNN is the
library's exact torch search. Steps, in the order they run (each row of the table is one of them):

- p   the packages above import (a missing one is named with the steps that need it).
- a   ``python -m pytest tests/test_gpu.py``: passed / failed / skipped counted. On a GPU a
      skipped test fails the row (a GPU path went unchecked); without CUDA they all skip.
- b   the golden cases through the scripts with ``--gpu_id 0``: novelsum.py on both NovelSum
      cases against ``expected.csv`` (relative 1e-6), novelselect.py on every run of
      ``tests/golden/novelselect/expected.json`` (identical picks), with the fused Triton
      kernel and again with ``NOVELSELECT_GPU_KERNEL=torch``.
- c0  a synthetic clustered pool, the paper's size (396,000 x 4,096 float32, 6.5 GB): the
      recipe of ``utils.synthetic.clustered_vectors`` drawn by torch on the device.
- d   NovelSum (``utils.api.novelsum``, the default 18-point grid) of 10,000 pool rows against
      the whole pool as reference.
- c1  the density factor of every pool row (exact kNN, the pool as reference).
- c2  the torch kernel: its first ``--torch_picks`` picks timed and extrapolated to ``--k``
      (a full run is several minutes, over the budget).
- c3  the Triton kernel: ``--k`` picks (10,000).
- c4  the first picks of c2 and c3 agree.
- e   with two or more GPUs, the same selection under ``torchrun``: the pool written to a
      temporary folder (``TMPDIR``) as ``.npy`` embedding shards with matching JSON text
      shards, then ``python -m torch.distributed.run --standalone --nproc_per_node R
      novelselect.py`` with c1 and c3's parameters (``--k``, ``--neighbors``, beta 0.5,
      alpha 1, ``--seed``), one rank per GPU from ``--gpu_id`` on (R at most 8); its picks
      must equal c3's, its picked texts the picked rows', its run record name R ranks, and
      its kernel be Triton on every rank. With one GPU: ``skipped: needs 2+ GPUs``.

c1 to c3 call the public functions that ``utils.api.novelselect`` calls (``pool_density``,
``check_memory``, ``unit_rows``, ``make_engine``, ``first_pick``, ``select``) one by one: so the
density and the selection are timed apart, one density serves both kernels, and a run stopped
by the clock keeps what it measured. The scripts' own path (the API on the GPU) is what step b
runs.

Time: every step checks the time left before it starts and is skipped with a
``skipped: time`` row when its estimate does not fit; the long ones (the subprocesses, the kNN
search, the selections) also stop at the budget's end with a ``stopped: time`` row that says
how far they got and what the whole would take. The column ``est. s (H100)`` is the estimate
the skip decision uses, a model of the work on one H100 (``estimate_*`` below: bytes at
3 TB/s, matrix products at 50 TFLOP/s in float32 without TF32, and each elementwise operation
of the selection's fixed-order dot product at 7 us of Python dispatch and kernel launch, 4 us
of it measured on a CPU, the launch assumed). At the default sizes the model adds up to about
350 s, within the 450 s budget; if c3 runs out of time it stops and gives its extrapolated
total. Step e, with two or more GPUs only, adds a model of the same work split over R GPUs
(``estimate_torchrun_s``; its gloo traffic assumed at 1 GB/s and 0.2 ms a collective): about
140 s with 2 GPUs, 110 s with 4 or 8. A partial run writes no picks, so it starts only when
its whole estimate fits, as c1; on a machine with several GPUs ``--budget_s 540`` makes room
for it. With one GPU it is skipped at once and the check stays within the 450 s.

``--smoke`` runs every step at tiny sizes on the CPU: Triton's interpreter runs the fused
kernel, the kNN is the torch search (as on a GPU without faiss, also for the scripts of step b,
which on the CPU would otherwise use faiss), and the scripts' ``--gpu_id 0`` falls back to the
CPU, where they use the numba engine; step e runs 2 CPU ranks (``--gpu_id -1``, numba, the
torch kNN through the same launcher). It checks this script, not the GPU.

A failing step puts its one-line error in the table and the script exits 1 at the end; the
table also goes to ``--output`` (git ignores benchmarks/results/).
"""

import argparse
import contextlib
import csv
import importlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import BENCH_SPREAD, REPO

from utils.errors import InputError
from utils.io.atomic import write_text_atomic

GOLDEN = REPO / "tests" / "golden"
NOVELSUM_CASES = ("novelsum_default_grid", "novelsum_custom_grid")
KERNEL_VARIABLE = "NOVELSELECT_GPU_KERNEL"  # utils.selection.GPU_KERNEL_VARIABLE
FALLBACK_NOTICE = "fused Triton kernel is not used"  # what make_engine tells on a fallback
PEAK_NOTE = re.compile(r"peak GPU memory ([\d.]+) GiB")
# The scale runs use the scripts' defaults: k = 10 neighbours (--neighbors), beta 0.5, alpha 1.
SELECTION_ALPHA = 1.0
DENSITY_POWER = 0.5
NOVELSUM_COLUMN = "neighbor_10_density_0.5_distance_1"  # the paper's recommended grid point

# The estimate model of one H100 (module docstring).
BANDWIDTH = 3.0e12  # bytes/s of HBM3; a device copy was measured at 3.0 TB/s on one
FP32_FLOPS = 5.0e13  # float32 matrix products, TF32 off (utils.device.exact_torch)
OP_S = 7e-6  # one elementwise torch operation of fixed_order_dots: dispatch + launch
HOST_BYTES_S = 5.0e9  # a host pass over an array (numpy checks, normalising, pageable copies)
PROCESS_S = 8.0  # one script process: Python, torch, the CUDA context, Triton's self-check
PYTEST_S = 60.0  # tests/test_gpu.py: about 15 tests, two processes' worth of Triton compiles
WRITE_BYTES_S = 2.0e9  # writing the pool's shards into the page cache (assumed)
HASH_BYTES_S = 1.0e9  # one core's blake2b or sha256 over a rank's rows (digests, run record)
GLOO_BYTES_S = 1.0e9  # bytes one rank receives per second in a gloo all-gather (assumed)
GLOO_S = 2e-4  # one small gloo collective between the ranks of one machine (assumed)
COLLECTIVES_PER_PICK = 2  # ShardedEngine: one all-gather of the best, one broadcast of the pick

TORCHRUN_MAX_RANKS = 8  # step e: one rank per GPU, at most this many
SMOKE_RANKS = 2  # step e in smoke mode: CPU processes (--gpu_id -1)
STOP_GRACE_S = 15.0  # a subprocess asked to stop at the budget's end is killed this much later
RANKS_DIFFER_NOTICE = "the ranks' kernels differ"  # utils.api.selection_engine's notice

SMOKE_SIZES = dict(pool=80, dim=16, k=10, torch_picks=5, novelsum_size=40, budget_s=300.0)


class OutOfTime(Exception):
    """The budget ran out inside a step; ``done`` says how far the step got."""

    def __init__(self, done=""):
        super().__init__(done)
        self.done = done


class CheckFailed(Exception):
    """A step ran but its result is wrong (the message is the table's one line)."""


# A step that raises one of these fails its row; anything else is a bug of this script and
# stops it (after the table so far is printed). InputError and DeviceError come from the
# library; torch reports CUDA faults and out-of-memory as RuntimeError subclasses; ValueError
# is the engine contract's; ImportError a package missing on the machine.
STEP_ERRORS = (InputError, CheckFailed, ImportError, RuntimeError, ValueError)


@dataclass
class Row:
    step: str
    what: str
    size: str = ""
    estimate_s: float = None
    seconds: float = None
    peak_gib: str = ""
    result: str = ""

    @property
    def status(self):
        return self.result.split(":")[0]


class Budget:
    """Seconds left of the whole check, from the script's start."""

    def __init__(self, total_s):
        self.total_s = total_s
        self.start = time.perf_counter()
        self.end = self.start + total_s

    def left(self):
        return self.end - time.perf_counter()

    def used(self):
        return time.perf_counter() - self.start

    def check(self, done=""):
        if self.left() <= 0:
            raise OutOfTime(done)


@dataclass
class Context:
    """What the steps share: options, device, and the pool and its results once made."""

    args: argparse.Namespace
    device: str
    budget: Budget
    pool: np.ndarray = None
    rho: np.ndarray = None
    unit: np.ndarray = None
    picks: dict = field(default_factory=dict)  # kernel name -> picks made

    @property
    def on_gpu(self):
        return self.device != "cpu"


# ---------------------------------------------------------------------------------------
# estimates (seconds on one H100)


def fixed_order_chunks(n, dim):
    """Row chunks of one selection step's distance pass (TorchEngine.distance_chunks)."""
    from utils.numerics.blocks import MIB, rows_per_block
    from utils.numerics.fixed_order import fixed_order_bytes_per_row
    from utils.selection.memory import TORCH_BUDGET_MIB

    return math.ceil(n / rows_per_block(fixed_order_bytes_per_row(dim), TORCH_BUDGET_MIB * MIB))


def step_distance_s(n, dim):
    """One pick's distance pass (utils.selection.fixed_order_dots: the products, then a
    halving tree): bound by launching its log2(dim) + 3 elementwise operations per chunk, or
    by about five passes over n x dim float32 (read the rows, write and read the products,
    write and read the first halving; the later halvings add as much again as the first)."""
    launches = fixed_order_chunks(n, dim) * (math.ceil(math.log2(max(dim, 2))) + 3) * OP_S
    return max(launches, 5 * n * dim * 4 / BANDWIDTH)


def estimate_selection_s(n, dim, picks, kernel):
    """``picks`` steps: the distance pass each, plus the insertion, whose tail is half the
    stored values on average (Triton: 8 bytes per tail value) or every stored value (torch:
    about 40 bytes each through its masks, copies and float64 products)."""
    stored = picks * picks / 2  # sum over steps of the values each candidate holds
    insert = n * stored * (8 / 2 if kernel == "triton" else 40) / BANDWIDTH
    setup = 3 * n * dim * 4 / HOST_BYTES_S + 2.0  # normalise, upload; the Triton self-check
    return setup + picks * step_distance_s(n, dim) + insert


def estimate_density_s(n_queries, n_reference, dim):
    """Exact kNN: the distance matrix products, plus host passes (checks, keys, upload)."""
    return (2 * n_queries * n_reference * dim / FP32_FLOPS
            + 3 * n_reference * dim * 4 / HOST_BYTES_S)


def estimate_torchrun_s(n, dim, k, ranks):
    """Step e with ``ranks`` GPUs: the pool written as shards; torchrun and its ranks started
    (together); each rank's block read, digested and hashed; the sharded kNN, where every
    rank receives each query chunk from every rank (gloo all-gathers of padded blocks: ranks x
    the pool) and multiplies it by its block of the reference; then the selection over a
    block of candidates per rank, with ``COLLECTIVES_PER_PICK`` small collectives a pick."""
    pool_bytes, block = n * dim * 4, math.ceil(n / ranks)
    write = pool_bytes / WRITE_BYTES_S
    load = block * dim * 4 * (1 / HOST_BYTES_S + 2 / HASH_BYTES_S)
    knn = ranks * pool_bytes / GLOO_BYTES_S + estimate_density_s(n, block, dim)
    selection = (estimate_selection_s(block, dim, k, "triton")
                 + k * COLLECTIVES_PER_PICK * GLOO_S)
    return write + 2 * PROCESS_S + load + knn + selection


def estimate_generate_s(n, dim):
    return 3 * n * dim * 4 / BANDWIDTH + n * dim * 4 / HOST_BYTES_S


def estimate_novelsum_s(size, n, dim):
    return estimate_density_s(size, n, dim) + 2 * size * size * dim / FP32_FLOPS + 1.0


# ---------------------------------------------------------------------------------------
# helpers


def log(message):
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def synchronize(device):
    if device != "cpu":
        import torch

        torch.cuda.synchronize(device)


def reset_peak(device):
    if device != "cpu":
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device):
    if device == "cpu":
        return "n/a (CPU)"
    import torch

    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}"


def release(device):
    """Give the memory of finished steps back, so that each step's peak is its own."""
    if device != "cpu":
        import torch

        torch.cuda.empty_cache()


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


def last_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def first_line(err):
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


# The scripts of step b in smoke mode: on the CPU they would search with faiss; this runs them
# with the exact torch search that a GPU without faiss-gpu uses (utils.density.flat_index with
# backend "torch"), so that the smoke run needs no faiss either.
TORCH_KNN_LAUNCHER = (
    "import runpy, sys\n"
    "import utils.density.flat_index as density\n"
    "chosen = density.flat_index\n"
    "def torch_search(reference, device='cpu', backend=None, "
    "budget_mib=density.DEFAULT_BUDGET_MIB):\n"
    "    return chosen(reference, device, backend or 'torch', budget_mib)\n"
    "density.flat_index = torch_search\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def script_command(ctx, script, args, ranks=None):
    """The command line of one of the scripts: one process, or ``ranks`` processes under
    ``torchrun`` (``python -m torch.distributed.run --standalone``); in smoke mode each
    process starts through ``TORCH_KNN_LAUNCHER``."""
    python = [sys.executable, "-c", TORCH_KNN_LAUNCHER] if ctx.args.smoke else [sys.executable]
    if ranks is None:
        return [*python, script, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            str(ranks), "--no-python", *python, script, *args]


def run_until(command, timeout_s, env):
    """``command`` run from the repository root; returns (exit code, output). At ``timeout_s``
    it is asked to stop (SIGTERM: torchrun passes it on to its ranks, which it started in
    sessions of their own), killed ``STOP_GRACE_S`` later if still running, and
    ``subprocess.TimeoutExpired`` is raised."""
    process = subprocess.Popen(command, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.communicate(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        raise
    return process.returncode, output


def run_script(ctx, script, args, env=None, ranks=None):
    """Run one of the scripts with ``--gpu_id`` (in ``args``), under ``torchrun`` with
    ``ranks`` processes if given; returns its output. A non-zero exit fails the step with the
    script's last line; the budget's end stops it."""
    left = ctx.budget.left()
    if left <= 0:
        raise OutOfTime(f"before {script}")
    try:
        code, output = run_until(script_command(ctx, script, args, ranks), left,
                                 {**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        raise OutOfTime(f"{script} stopped at the budget's end") from None
    if code != 0:
        raise CheckFailed(f"{script} exited {code}: {last_line(output)}")
    return output


def first_difference(ours, theirs):
    """The first position where two pick lists differ (the shorter one differs where it
    ends), or None when they are equal."""
    for t, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            return t
    return None if len(ours) == len(theirs) else min(len(ours), len(theirs))


def peak_of_outputs(outputs):
    """The largest "peak GPU memory X GiB" the scripts printed (they report their own)."""
    peaks = [float(m) for text in outputs for m in PEAK_NOTE.findall(text)]
    return f"{max(peaks):.2f}" if peaks else "n/a (subprocess)"


# ---------------------------------------------------------------------------------------
# step p: the packages


# What the steps import, and where (a GPU machine may lack one: say so first, in one row).
NEEDED_MODULES = {"torch": "every step", "triton": "the fused kernel (b3, c3)",
                  "numpy": "every step", "numba": "tests/test_gpu.py's CPU comparisons",
                  "click": "the scripts (b)", "tqdm": "the scripts (b)",
                  "pytest": "step a"}


def step_packages(ctx, row):
    missing = []
    for name, used_by in NEEDED_MODULES.items():
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(f"{name} ({used_by})")
    if missing:
        raise CheckFailed(f"missing: {'; '.join(missing)}")
    row.result = f"pass: {', '.join(NEEDED_MODULES)} import; faiss and vLLM not needed"


# ---------------------------------------------------------------------------------------
# step a: the GPU tests


def pytest_counts(junit_path):
    """(passed, failed, errors, skipped) from pytest's JUnit XML report."""
    root = ElementTree.parse(junit_path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {key: sum(int(s.get(key, 0)) for s in suites)
             for key in ("tests", "failures", "errors", "skipped")}
    passed = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    return passed, total["failures"], total["errors"], total["skipped"]


def step_pytest(ctx, row):
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "tests/test_gpu.py", f"--junitxml={junit}"]
        try:
            done = subprocess.run(command, cwd=REPO, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=max(1.0, ctx.budget.left()))
        except subprocess.TimeoutExpired:
            raise OutOfTime("pytest killed at the budget's end") from None
        if not junit.exists():
            raise CheckFailed(f"pytest exited {done.returncode}: {last_line(done.stdout)}")
        passed, failed, errors, skipped = pytest_counts(junit)
    row.peak_gib = "n/a (subprocess)"
    counts = f"{passed} passed, {failed} failed, {errors} errors, {skipped} skipped"
    if failed or errors:
        raise CheckFailed(f"{counts}; first: {first_failure(done.stdout)}")
    if ctx.on_gpu and (skipped or not passed):
        raise CheckFailed(f"{counts}: on a GPU no GPU test may skip")
    row.result = f"pass: {counts}" + ("" if ctx.on_gpu else " (no CUDA device here)")


def first_failure(output):
    for line in output.splitlines():
        if line.startswith(("FAILED", "ERROR")):
            return line.strip()
    return last_line(output)


# ---------------------------------------------------------------------------------------
# step b: the golden cases through the scripts


def golden_novelsum_args(case, output, gpu_id=0):
    """The script and arguments of the case's command.txt, as tests/test_novelsum_cli.py builds
    them: its paths made absolute, and its ``--gpu_id 0`` naming ``gpu_id``."""
    words = (GOLDEN / case / "command.txt").read_text().split()
    args = words[1:]
    if "--gpu_id" not in args:
        raise CheckFailed(f"{case}/command.txt has no --gpu_id")
    for i in range(1, len(args)):
        if args[i - 1] in ("--multi_datasets_dir", "--dense_ref_dir"):
            args[i] = str(GOLDEN / case / args[i])
        elif args[i - 1] == "--output_csv":
            args[i] = str(output)
        elif args[i - 1] == "--gpu_id":
            args[i] = str(gpu_id)
    return words[0], args


def grid_key(column):
    """Columns compared by their parsed numbers: the golden header writes '0.0' where we may
    write '0' (tests/golden/README.md)."""
    match = re.fullmatch(r"neighbor_(\d+)_density_([\d.]+)_distance_([\d.]+)", column)
    return (int(match[1]), float(match[2]), float(match[3])) if match else column


def read_novelsum_csv(path):
    with open(path, newline="") as handle:
        return {row["Dataset Name"]: {grid_key(k): v for k, v in row.items()}
                for row in csv.DictReader(handle)}


def largest_relative_error(ours, expected):
    """The largest relative difference over every value of every dataset; the datasets and
    columns must be the same."""
    if ours.keys() != expected.keys():
        raise CheckFailed(f"datasets {sorted(ours)} but expected {sorted(expected)}")
    worst = 0.0
    for name, row in expected.items():
        if list(ours[name]) != list(row):
            raise CheckFailed(f"{name}: columns differ from expected.csv")
        for key, value in row.items():
            if key != "Dataset Name":
                want, got = float(value), float(ours[name][key])
                worst = max(worst, abs(got - want) / max(abs(want), 1e-300))
    return worst


def step_golden_novelsum(ctx, row, case):
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "novelsum.csv"
        script, args = golden_novelsum_args(case, output, ctx.args.gpu_id)
        text = run_script(ctx, script, args)
        worst = largest_relative_error(read_novelsum_csv(output),
                                       read_novelsum_csv(GOLDEN / case / "expected.csv"))
    row.peak_gib = peak_of_outputs([text])
    values = sum(len(r) - 1 for r in read_novelsum_csv(GOLDEN / case / "expected.csv").values())
    if worst > 1e-6:
        raise CheckFailed(f"largest relative error {worst:.2e} > 1e-6 over {values} values")
    row.result = f"pass: {values} values, largest relative error {worst:.1e}"


def selection_stem(k, density_power, distance_power):
    """The stem of novelselect.py's outputs (its ``output_stem``: numbers as Python floats)."""
    return f"novelselect_{k}_dense_{float(density_power)}_dist_{float(distance_power)}"


def golden_select_args(run, output_dir, gpu_id=0):
    """tests/test_novelselect_cli.py's command line for one run, with notices, on ``gpu_id``."""
    select = GOLDEN / "novelselect"
    return ["--text_dir", str(select / "texts"), "--figure_dir", str(select / "embeddings"),
            "--output_dir", str(output_dir), "--k", str(run["k"]), "--neighbors",
            str(run["neighbors"]), "--density_power", str(run["density_power"]),
            "--distance_power", str(run["distance_power"]), "--seed", str(run["seed"]),
            "--gpu_id", str(gpu_id)]


def check_kernel_notice(ctx, text, kernel):
    """On a GPU the script must have used the kernel asked for: no fallback notice for Triton,
    the notice naming the variable for torch. (On the CPU both use numba.)"""
    if not ctx.on_gpu:
        return
    notices = (FALLBACK_NOTICE, RANKS_DIFFER_NOTICE)  # the second: some rank fell back
    fell_back = [line for line in text.splitlines() if any(n in line for n in notices)]
    if kernel == "triton" and fell_back:
        raise CheckFailed(fell_back[0].strip())
    if kernel == "torch" and f"{KERNEL_VARIABLE}=torch" not in text:
        raise CheckFailed(f"no notice that {KERNEL_VARIABLE}=torch chose the torch kernel")


def step_golden_novelselect(ctx, row, kernel):
    runs = json.loads((GOLDEN / "novelselect" / "expected.json").read_text())
    env = {KERNEL_VARIABLE: "torch"} if kernel == "torch" else {}
    outputs = []
    with tempfile.TemporaryDirectory() as tmp, kernel_variable(None):
        for i, run in enumerate(runs):
            out = Path(tmp) / str(i)
            text = run_script(ctx, "novelselect.py", golden_select_args(run, out, ctx.args.gpu_id),
                              env)
            outputs.append(text)
            check_kernel_notice(ctx, text, kernel)
            stem = selection_stem(run["k"], run["density_power"], run["distance_power"])
            picks = json.loads((out / f"{stem}_indices.json").read_text())
            first = first_difference(picks, run["indices"])
            if first is not None:
                raise CheckFailed(f"run {i} (k={run['k']}): picks differ from pick {first} on")
    row.peak_gib = peak_of_outputs(outputs)
    engine = "" if ctx.on_gpu else " (CPU fallback: numba engine)"
    row.result = f"pass: {len(runs)}/{len(runs)} runs' picks identical{engine}"


# ---------------------------------------------------------------------------------------
# step c0: the pool


def clustered_pool(n, dim, device, seed=0, n_clusters=8, spread=BENCH_SPREAD,
                   chunk_rows=50_000):
    """(n, dim) float32 host array: ``n_clusters`` Gaussian centres plus ``spread`` x noise,
    the recipe of ``utils.synthetic.clustered_vectors`` drawn by torch on ``device`` in row
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
    args = ctx.args
    ctx.pool = clustered_pool(args.pool, args.dim, ctx.device)
    row.result = f"pass: {ctx.pool.nbytes / 2**30:.1f} GiB on the host"


# ---------------------------------------------------------------------------------------
# steps d and c1: NovelSum and the density at scale


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
    from utils.api import novelsum

    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(len(ctx.pool), ctx.args.novelsum_size, replace=False))
    targets = ctx.pool[rows]
    phases = {}
    reference = density_reference_for(ctx, ctx.pool, "the pool")
    result = novelsum(targets, reference=reference, device=ctx.device,
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
    from utils.api import pool_density

    phases = {}
    reference = density_reference_for(ctx, ctx.pool, "the pool")
    ctx.rho = pool_density(ctx.pool, ctx.args.neighbors, DENSITY_POWER, reference=reference,
                           device=ctx.device, progress=timed_progress(ctx, phases, "kNN"))
    synchronize(ctx.device)
    if not np.isfinite(ctx.rho).all() or (ctx.rho <= 0).any():
        raise CheckFailed("density factors not all finite and positive")
    row.result = (f"pass: kNN ({knn_backend_name(ctx)}) {phase_seconds(phases, 'kNN'):.1f} s; "
                  f"rho from {ctx.rho.min():.3g} to {ctx.rho.max():.3g}")


# ---------------------------------------------------------------------------------------
# steps c2, c3, c4: the selection kernels at scale


def build_engine(ctx, kernel, k):
    """The engine for ``kernel``: on a GPU ``make_engine`` (what the API runs), which must
    choose that kernel; on the CPU (smoke) the engine class itself, Triton in its interpreter
    (make_engine chooses numba on the CPU)."""
    from utils.selection.engines import make_engine
    from utils.selection.gpu import TorchEngine, TritonEngine

    if not ctx.on_gpu:
        engine_type = TritonEngine if kernel == "triton" else TorchEngine
        return engine_type(ctx.unit, ctx.rho, k, SELECTION_ALPHA, "cpu")
    notices = []
    with kernel_variable("torch" if kernel == "torch" else None):
        engine = make_engine(ctx.unit, ctx.rho, k, SELECTION_ALPHA, ctx.device, notices.append)
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


def ensure_unit(ctx):
    from utils.numerics.rows import unit_rows

    if ctx.unit is None:
        ctx.unit = unit_rows(ctx.pool)
    return ctx.unit


def run_selection(ctx, kernel, k):
    """``k`` picks with ``kernel``; returns (clock, engine build seconds). ``OutOfTime`` carries
    how far it got and the extrapolated whole."""
    from utils.selection.engine import first_pick
    from utils.selection.engines import select
    from utils.selection.memory import check_memory

    n = len(ctx.pool)
    check_memory(n, k, ctx.pool.shape[1], ctx.device)
    ensure_unit(ctx)
    started = time.perf_counter()
    engine = build_engine(ctx, kernel, k)
    synchronize(ctx.device)
    build_s = time.perf_counter() - started
    clock = PickClock(ctx.budget, k)
    try:
        picks = select(ctx.unit, ctx.rho, k, SELECTION_ALPHA, first_pick(n, ctx.args.seed),
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


# ---------------------------------------------------------------------------------------
# step e: the same selection under torchrun


def torchrun_ranks(ctx):
    """Ranks of step e: one per GPU from ``--gpu_id`` on, at most ``TORCHRUN_MAX_RANKS``; in
    smoke mode ``SMOKE_RANKS`` processes on the CPU."""
    if not ctx.on_gpu:
        return SMOKE_RANKS
    import torch

    return min(torch.cuda.device_count() - ctx.args.gpu_id, TORCHRUN_MAX_RANKS)


def shard_bounds(n, shards):
    """``shards`` contiguous ``(start, stop)`` row ranges of ``range(n)``, in order."""
    edges = np.linspace(0, n, shards + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def pool_text(row):
    """The text of pool row ``row`` in step e's text shards."""
    return f"pool row {row}"


def write_pool_shards(pool, folder, shards):
    """The pool as ``shards`` embedding shards ``folder/embeddings/{i}.npy`` and matching text
    shards ``folder/texts/{i}.json`` (a JSON list of ``pool_text(row)``); returns the two
    folders."""
    embeddings, texts = folder / "embeddings", folder / "texts"
    embeddings.mkdir(parents=True)
    texts.mkdir()
    for i, (start, stop) in enumerate(shard_bounds(len(pool), shards)):
        np.save(embeddings / f"{i}.npy", pool[start:stop])
        (texts / f"{i}.json").write_text(json.dumps([pool_text(r) for r in range(start, stop)]))
    return texts, embeddings


def torchrun_select_args(ctx, texts, embeddings, output_dir):
    """novelselect.py's options for step e: c1 and c3's parameters (k, neighbours, beta,
    alpha, seed), one GPU per rank from ``--gpu_id`` on (the CPU in smoke mode)."""
    a = ctx.args
    return ["--text_dir", str(texts), "--figure_dir", str(embeddings), "--output_dir",
            str(output_dir), "--k", str(a.k), "--neighbors", str(a.neighbors),
            "--density_power", str(DENSITY_POWER), "--distance_power", str(SELECTION_ALPHA),
            "--seed", str(a.seed), "--gpu_id", str(a.gpu_id if ctx.on_gpu else -1)]


def check_disk_for(path, nbytes):
    """Refuse to write ``nbytes`` where fewer are free (with a tenth more for the texts)."""
    import shutil

    free = shutil.disk_usage(path).free
    if free < 1.1 * nbytes:
        raise CheckFailed(f"{path}: {free / 2**30:.1f} GiB free, the shards need "
                          f"{1.1 * nbytes / 2**30:.1f} GiB (set TMPDIR to a larger disk)")


def read_torchrun_outputs(output_dir, k, ranks):
    """The picks novelselect.py wrote and their density factors (float32, from the pick log),
    after checking that it ran on ``ranks`` ranks and that the picked texts are the picked
    rows' (rank 0 pairs them with rows that other ranks hold)."""
    stem = selection_stem(k, DENSITY_POWER, SELECTION_ALPHA)
    picks = json.loads((output_dir / f"{stem}_indices.json").read_text())
    record = json.loads((output_dir / f"{stem}_run.json").read_text())
    if record.get("ranks") != ranks:
        raise CheckFailed(f"novelselect.py ran on {record.get('ranks')} rank(s), not {ranks}")
    items = json.loads((output_dir / f"{stem}.json").read_text(encoding="utf-8"))
    if items != [pool_text(p) for p in picks]:
        raise CheckFailed(f"{stem}.json: the picked texts are not the picked rows' texts")
    with open(output_dir / f"{stem}_picks.csv", newline="") as handle:
        log_rows = list(csv.DictReader(handle))
    if [int(r["index"]) for r in log_rows] != picks:
        raise CheckFailed(f"{stem}_picks.csv: its indices are not those of _indices.json")
    return picks, np.array([float(r["density_factor"]) for r in log_rows], dtype=np.float32)


def largest_relative_difference(ours, theirs):
    """max |ours - theirs| / |theirs| over two float arrays (0.0 when both are empty)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if not len(theirs):
        return 0.0
    return float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-300)))


def step_torchrun(ctx, row):
    ranks, k, single = torchrun_ranks(ctx), ctx.args.k, ctx.picks["triton"]
    with tempfile.TemporaryDirectory(prefix="gpu_check_torchrun_") as tmp:
        check_disk_for(tmp, ctx.pool.nbytes)
        started = time.perf_counter()
        # An odd number of shards: rank blocks start inside shards, as they will on real data.
        texts, embeddings = write_pool_shards(ctx.pool, Path(tmp), 2 * ranks + 1)
        write_s = time.perf_counter() - started
        ctx.budget.check("while the shards were written")
        output_dir = Path(tmp) / "selected"
        started = time.perf_counter()
        with kernel_variable(None):
            text = run_script(ctx, "novelselect.py",
                              torchrun_select_args(ctx, texts, embeddings, output_dir),
                              ranks=ranks)
        run_s = time.perf_counter() - started
        check_kernel_notice(ctx, text, "triton")
        picks, pick_rho = read_torchrun_outputs(output_dir, k, ranks)
    row.peak_gib = peak_of_outputs([text])  # rank 0 reports its own GPU's peak
    # Which part differs, if the picks do: the density factors of its picks against c1's.
    rho = largest_relative_difference(pick_rho, ctx.rho[picks])
    rho_note = ("density factors of its picks bitwise c1's" if rho == 0 else
                f"density factors of its picks within {rho:.1e} (relative) of c1's")
    length = min(len(picks), len(single))
    first = first_difference(picks[:length], single[:length])
    if first is not None:
        raise CheckFailed(f"{ranks} ranks' picks differ from c3's from pick {first} on; "
                          f"{rho_note} (torchrun {run_s:.1f} s)")
    where = "GPUs" if ctx.on_gpu else "CPU processes, --gpu_id -1"
    same = f"all {k} picks" if length == k else f"first {length} picks (c3 made {length})"
    row.result = (f"pass: {ranks} ranks ({where}): {same} identical to c3's, {rho_note}; "
                  f"torchrun {run_s:.1f} s wall, writing the shards {write_s:.1f} s")


# ---------------------------------------------------------------------------------------
# the plan and the table


ALWAYS = -math.inf  # seconds that must be left to start a step that takes none


def plan(ctx):
    """(step id, what, size, estimate s on one H100, seconds that must be left to start,
    prerequisite, function) in running order."""
    a = ctx.args
    pool = f"{a.pool} x {a.dim}"
    scale = estimate_density_s(a.pool, a.pool, a.dim)
    triton = estimate_selection_s(a.pool, a.dim, a.k, "triton")
    torch_prefix = estimate_selection_s(a.pool, a.dim, a.torch_picks, "torch")
    novelsum = estimate_novelsum_s(a.novelsum_size, a.pool, a.dim)
    generate = estimate_generate_s(a.pool, a.dim)
    ranks = torchrun_ranks(ctx)
    torchrun = estimate_torchrun_s(a.pool, a.dim, a.k, max(ranks, 2))  # a partial run is no use
    runs = len(json.loads((GOLDEN / "novelselect" / "expected.json").read_text()))
    return [
        ("p", "packages the check imports", "", 0.0, ALWAYS, None, step_packages),
        ("a", "pytest tests/test_gpu.py", "", PYTEST_S, 1.0, None, step_pytest),
        ("b1", f"novelsum.py --gpu_id {a.gpu_id}, golden default grid", "600 ref x 24",
         PROCESS_S, 1.0, None, lambda c, r: step_golden_novelsum(c, r, NOVELSUM_CASES[0])),
        ("b2", f"novelsum.py --gpu_id {a.gpu_id}, golden custom grid", "600 ref x 24",
         PROCESS_S, 1.0, None, lambda c, r: step_golden_novelsum(c, r, NOVELSUM_CASES[1])),
        ("b3", f"novelselect.py --gpu_id {a.gpu_id}, golden runs, Triton kernel",
         f"500 x 16, {runs} runs", runs * PROCESS_S, 1.0, None,
         lambda c, r: step_golden_novelselect(c, r, "triton")),
        ("b4", f"novelselect.py --gpu_id {a.gpu_id}, golden runs, {KERNEL_VARIABLE}=torch",
         f"500 x 16, {runs} runs", runs * PROCESS_S, 1.0, None,
         lambda c, r: step_golden_novelselect(c, r, "torch")),
        ("c0", "synthetic clustered pool (torch on the device)", pool, generate, generate,
         None, step_generate),
        ("d", "NovelSum, default 18-point grid (utils.api.novelsum)",
         f"{a.novelsum_size} vs {pool}", novelsum, novelsum, "pool", step_novelsum),
        ("c1", f"density, exact kNN over the pool (k={a.neighbors}, beta={DENSITY_POWER})",
         pool, scale, scale, "pool", step_density),  # half a density is of no use
        ("c2", "NovelSelect, torch kernel, first picks", f"{pool}, {a.torch_picks} picks",
         torch_prefix, 1.0, "rho", step_torch_prefix),
        ("c3", "NovelSelect, Triton kernel", f"{pool}, k={a.k}", triton, 1.0, "rho",
         step_triton),
        ("c4", "first picks: Triton == torch", "", 0.0, ALWAYS, "picks", step_agree),
        ("e", f"novelselect.py under torchrun, "
              f"{f'{ranks} ranks' if ranks >= 2 else 'one rank per GPU'}: picks == c3's",
         f"{pool}, k={a.k}", torchrun, torchrun, "ranks", step_torchrun),
    ]


def missing_prerequisite(ctx, need):
    if need == "pool" and ctx.pool is None:
        return "skipped: needs the pool (c0)"
    if need == "rho" and ctx.rho is None:
        return "skipped: needs the density (c1)"
    if need == "picks" and not (ctx.picks.get("torch") and ctx.picks.get("triton")):
        return "skipped: needs picks of both kernels (c2, c3)"
    if need == "ranks" and torchrun_ranks(ctx) < 2:
        return "skipped: needs 2+ GPUs"
    if need == "ranks" and not ctx.picks.get("triton"):
        return "skipped: needs the Triton kernel's picks (c3)"
    return None


def run_step(ctx, entry):
    step, what, size, estimate, must_leave, need, function = entry
    row = Row(step, what, size, estimate)
    skip = missing_prerequisite(ctx, need)
    if skip is None and ctx.budget.left() < must_leave:
        skip = f"skipped: time (est. {estimate:.0f} s, {max(0.0, ctx.budget.left()):.0f} s left)"
    if skip:
        row.result = skip
        log(f"{step} {what}: {skip}")
        return row
    log(f"{step} {what} ({size or '-'}): starting, {ctx.budget.left():.0f} s left")
    reset_peak(ctx.device)
    started = time.perf_counter()
    try:
        function(ctx, row)
    except OutOfTime as stop:
        row.result = f"stopped: time ({stop.done})"
    except STEP_ERRORS as err:
        row.result = f"FAIL: {first_line(err)}"
    synchronize(ctx.device)
    row.seconds = time.perf_counter() - started
    row.peak_gib = row.peak_gib or peak_gib(ctx.device)
    release(ctx.device)
    log(f"{step}: {row.result} ({row.seconds:.1f} s)")
    return row


def environment_lines(ctx):
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    try:
        importlib.import_module("faiss")  # only whether it imports
        faiss_state = "importable (not needed)"
    except ImportError:
        faiss_state = "not importable (not needed)"
    if ctx.on_gpu:
        gpu = (f"{torch.cuda.get_device_name(ctx.device)} "
               f"({torch.cuda.device_count()} device(s) visible; CUDA {torch.version.cuda})")
    else:
        gpu = "none: smoke mode on the CPU, nothing below ran on a GPU"
    return [f"- GPU: {gpu}",
            f"- torch {torch.__version__}; Triton {triton_version}; faiss {faiss_state}; "
            f"Python {platform.python_version()}"
            + ("; Triton interpreter" if os.environ.get("TRITON_INTERPRET") == "1" else ""),
            f"- device {ctx.device}; budget {ctx.budget.total_s:.0f} s, used "
            f"{ctx.budget.used():.0f} s; est. s = the model's seconds on one H100 at these sizes"]


def format_cell(value, digits=1):
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(ctx, rows):
    lines = ["# GPU check (benchmarks/gpu_check.sh)", "", *environment_lines(ctx), "",
             "| step | what | size | est. s (H100) | seconds | peak GPU GiB | result |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        cells = [row.step, row.what, row.size, format_cell(row.estimate_s, 0),
                 format_cell(row.seconds), row.peak_gib, row.result.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [row.step for row in rows if row.status == "FAIL"]
    lines += ["", f"{len(rows)} steps: {sum(row.status == 'pass' for row in rows)} passed, "
                  f"{len(failed)} failed" + (f" ({', '.join(failed)})" if failed else "")]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
                        help="seconds for the whole check (default 450: 8 minutes with a "
                             "margin; smoke 300)")
    parser.add_argument("--gpu_id", type=int, default=0, help="the GPU to check")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" /
                        "gpu_check.md", help="where the table is written too")
    args = parser.parse_args(argv)
    defaults = (SMOKE_SIZES if args.smoke else
                dict(pool=396_000, dim=4096, k=10_000, torch_picks=500, novelsum_size=10_000,
                     budget_s=450.0))
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 1 <= args.torch_picks <= args.k <= args.pool or args.novelsum_size > args.pool:
        parser.error("need 1 <= --torch_picks <= --k <= --pool and --novelsum_size <= --pool")
    return args


def choose_device(args):
    """``cpu`` for --smoke; else ``cuda:N``, refusing to run without that GPU."""
    if args.smoke:
        # Triton's interpreter runs the fused kernel on CPU tensors; it must be chosen before
        # Triton is first imported (the test subprocesses inherit it).
        os.environ["TRITON_INTERPRET"] = "1"
        return "cpu"
    import torch

    if not torch.cuda.is_available() or args.gpu_id >= torch.cuda.device_count():
        sys.exit(f"gpu_check: no CUDA device {args.gpu_id} here; use --smoke on a CPU machine")
    return f"cuda:{args.gpu_id}"


def main(argv=None):
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    device = choose_device(args)
    from utils.numerics.compute import exact_torch

    exact_torch()  # TF32 off, as every GPU path of the library
    ctx = Context(args, device, budget)
    rows = []
    try:
        for entry in plan(ctx):
            rows.append(run_step(ctx, entry))
    finally:
        text = table(ctx, rows)
        print(text)
        write_text_atomic(args.output, text)
        log(f"table written to {args.output}")
    return 1 if any(row.status == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
