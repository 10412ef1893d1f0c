"""Step e of the scale run: novelselect.py under torchrun on the pool, picks equal to one GPU's."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from check_table import CheckFailed, OutOfTime, last_line
from common import REPO

KERNEL_VARIABLE = "NOVELSELECT_GPU_KERNEL"  # utils.selection.gpu.GPU_KERNEL_VARIABLE
FALLBACK_NOTICE = "fused Triton kernel is not used"  # what make_engine tells on a fallback
RANKS_DIFFER_NOTICE = "the ranks' kernels differ"  # utils.api's notice: some rank fell back
SELECTION_ALPHA = 1.0  # the scripts' defaults: beta 0.5, alpha 1
DENSITY_POWER = 0.5
TORCHRUN_MAX_RANKS = 8  # one rank per GPU, at most this many
SMOKE_RANKS = 2  # in smoke mode: CPU processes (--gpu_id -1)
PEAK_NOTE = re.compile(r"peak GPU memory ([\d.]+) GiB")
STOP_GRACE_S = 15.0  # a subprocess asked to stop at the budget's end is killed this much later

# In smoke mode each rank starts through this: on the CPU the scripts would search with faiss;
# this runs them with the exact torch search that a GPU without faiss-gpu uses
# (utils.density.flat_index with backend "torch"), so that the smoke run needs no faiss.
TORCH_KNN_LAUNCHER = (
    "import runpy, sys\n"
    "import utils.density.flat_index as density\n"
    "chosen = density.flat_index\n"
    "def torch_search(reference, device='cpu', backend=None, "
    "block_mib=density.DEFAULT_BLOCK_MIB):\n"
    "    return chosen(reference, device, backend or 'torch', block_mib)\n"
    "density.flat_index = torch_search\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def torchrun_ranks(ctx):
    """One rank per GPU from ``--gpu_id`` on, at most ``TORCHRUN_MAX_RANKS``; in smoke mode
    ``SMOKE_RANKS`` processes on the CPU."""
    if ctx.device == "cpu":
        return SMOKE_RANKS
    import torch

    return min(torch.cuda.device_count() - ctx.args.gpu_id, TORCHRUN_MAX_RANKS)


def script_command(ctx, script, args, ranks):
    """One of the scripts under ``torchrun`` (``python -m torch.distributed.run
    --standalone``) with ``ranks`` processes, each through ``TORCH_KNN_LAUNCHER`` in smoke mode."""
    python = [sys.executable, "-c", TORCH_KNN_LAUNCHER] if ctx.args.smoke else [sys.executable]
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


def run_script(ctx, script, args, ranks):
    """Run ``script`` under torchrun with the kernel variable unset; returns its output. A
    non-zero exit fails the step with the script's last line; the budget's end stops it."""
    left = ctx.budget.left()
    if left <= 0:
        raise OutOfTime(f"before {script}")
    env = {name: value for name, value in os.environ.items() if name != KERNEL_VARIABLE}
    try:
        code, output = run_until(script_command(ctx, script, args, ranks), left, env)
    except subprocess.TimeoutExpired:
        raise OutOfTime(f"{script} stopped at the budget's end") from None
    if code != 0:
        raise CheckFailed(f"{script} exited {code}: {last_line(output)}")
    return output


def check_triton_notice(ctx, text):
    """On a GPU every rank must have used the fused Triton kernel: no fallback notice from
    any of them. (On the CPU the ranks use numba.)"""
    if ctx.device == "cpu":
        return
    fell_back = [line for line in text.splitlines()
                 if FALLBACK_NOTICE in line or RANKS_DIFFER_NOTICE in line]
    if fell_back:
        raise CheckFailed(fell_back[0].strip())


def first_difference(ours, theirs):
    """The first position where two pick lists differ (the shorter one differs where it
    ends), or None when they are equal."""
    for t, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            return t
    return None if len(ours) == len(theirs) else min(len(ours), len(theirs))


def shard_bounds(n, shards):
    """``shards`` contiguous ``(start, stop)`` row ranges of ``range(n)``, in order."""
    edges = np.linspace(0, n, shards + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def pool_text(row):
    """The text of pool row ``row`` in the text shards."""
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


def selection_stem(k, density_power, distance_power):
    """The stem of novelselect.py's outputs."""
    from utils.pipelines.novelselect_outputs import output_stem

    return output_stem("novelselect", k, density_power, distance_power)


def torchrun_select_args(ctx, texts, embeddings, output_dir):
    """novelselect.py's options: c1 and c3's parameters (k, neighbours, beta, alpha, seed),
    one GPU per rank from ``--gpu_id`` on (the CPU in smoke mode)."""
    a = ctx.args
    return ["--text_dir", str(texts), "--figure_dir", str(embeddings), "--output_dir",
            str(output_dir), "--k", str(a.k), "--neighbors", str(a.neighbors),
            "--density_power", str(DENSITY_POWER), "--distance_power", str(SELECTION_ALPHA),
            "--seed", str(a.seed), "--gpu_id", str(a.gpu_id if ctx.device != "cpu" else -1)]


def check_disk_for(path, nbytes):
    """Refuse to write ``nbytes`` where fewer are free (with a tenth more for the texts)."""
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


def peak_of_output(text):
    """The largest "peak GPU memory X GiB" printed (rank 0 reports its own GPU's)."""
    peaks = [float(m) for m in PEAK_NOTE.findall(text)]
    return f"{max(peaks):.2f}" if peaks else "n/a (subprocess)"


def run_torchrun(ctx, ranks):
    """Write the shards, run the selection; (picks, their density factors, output, seconds
    of writing, seconds of torchrun)."""
    with tempfile.TemporaryDirectory(prefix="gpu_scale_torchrun_") as tmp:
        check_disk_for(tmp, ctx.pool.nbytes)
        started = time.perf_counter()
        # An odd number of shards: rank blocks start inside shards, as they will on real data.
        texts, embeddings = write_pool_shards(ctx.pool, Path(tmp), 2 * ranks + 1)
        write_s = time.perf_counter() - started
        ctx.budget.check("while the shards were written")
        output_dir = Path(tmp) / "selected"
        started = time.perf_counter()
        text = run_script(ctx, "novelselect.py",
                          torchrun_select_args(ctx, texts, embeddings, output_dir), ranks)
        run_s = time.perf_counter() - started
        check_triton_notice(ctx, text)
        picks, pick_density_factors = read_torchrun_outputs(output_dir, ctx.args.k, ranks)
    return picks, pick_density_factors, text, write_s, run_s


def step_torchrun(ctx, row):
    ranks, k, single = torchrun_ranks(ctx), ctx.args.k, ctx.picks["triton"]
    picks, pick_density_factors, text, write_s, run_s = run_torchrun(ctx, ranks)
    row.peak_gib = peak_of_output(text)
    # Which part differs, if the picks do: the density factors of its picks against c1's.
    difference = largest_relative_difference(pick_density_factors, ctx.density_factors[picks])
    rho_note = ("density factors of its picks bitwise c1's" if difference == 0 else
                f"density factors of its picks within {difference:.1e} (relative) of c1's")
    length = min(len(picks), len(single))
    first = first_difference(picks[:length], single[:length])
    if first is not None:
        raise CheckFailed(f"{ranks} ranks' picks differ from c3's from pick {first} on; "
                          f"{rho_note} (torchrun {run_s:.1f} s)")
    where = "GPUs" if ctx.device != "cpu" else "CPU processes, --gpu_id -1"
    same = f"all {k} picks" if length == k else f"first {length} picks (c3 made {length})"
    row.result = (f"pass: {ranks} ranks ({where}): {same} identical to c3's, {rho_note}; "
                  f"torchrun {run_s:.1f} s wall, writing the shards {write_s:.1f} s")


def needs_ranks(ctx):
    """Why step e cannot run, or None."""
    if torchrun_ranks(ctx) < 2:
        return "skipped: needs 2+ GPUs"
    if not ctx.picks.get("triton"):
        return "skipped: needs the Triton kernel's picks (c3)"
    return None
