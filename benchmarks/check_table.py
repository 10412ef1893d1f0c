"""The GPU check's steps and table: a time budget, one row per step, the markdown table."""

import importlib
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import common  # noqa: F401 (the repository on the import path, for utils)

from utils.errors import InputError


class OutOfTime(Exception):
    """The budget ran out inside a step; ``done`` says how far the step got."""

    def __init__(self, done=""):
        super().__init__(done)
        self.done = done


class CheckFailed(Exception):
    """A step ran but its result is wrong (the message is the table's one line)."""


# A step that raises one of these fails its row; anything else is a bug of the check and
# stops it (after the table so far is printed). InputError and DeviceError come from the
# library; torch reports CUDA faults and out-of-memory as RuntimeError subclasses; ValueError
# is the engine contract's; ImportError a package missing on the machine.
STEP_ERRORS = (InputError, CheckFailed, ImportError, RuntimeError, ValueError)

ALWAYS = -math.inf  # seconds that must be left to start a step that takes none


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


@dataclass
class Step:
    """One step of a plan: ``run(ctx, row)`` fills the row's result; it starts only when
    ``must_leave`` seconds are left and ``need(ctx)`` gives no reason to skip."""

    step: str
    what: str
    size: str
    estimate_s: float
    must_leave: float
    run: Callable
    need: Callable = None


class Budget:
    """Seconds left of the whole check, from its start."""

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


def log(message):
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def last_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def first_line(err):
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


# ---------------------------------------------------------------------------------------
# the device's clock and memory (nothing on the CPU)


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


# ---------------------------------------------------------------------------------------
# running a step


def skip_reason(ctx, step):
    reason = step.need(ctx) if step.need else None
    if reason is None and ctx.budget.left() < step.must_leave:
        reason = (f"skipped: time (est. {step.estimate_s:.0f} s, "
                  f"{max(0.0, ctx.budget.left()):.0f} s left)")
    return reason


def run_step(ctx, step):
    """One row: skipped (a missing prerequisite, too little time), or run, timed, and
    passed, failed (its one-line error) or stopped by the clock."""
    row = Row(step.step, step.what, step.size, step.estimate_s)
    skip = skip_reason(ctx, step)
    if skip:
        row.result = skip
        log(f"{step.step} {step.what}: {skip}")
        return row
    log(f"{step.step} {step.what} ({step.size or '-'}): starting, {ctx.budget.left():.0f} s left")
    reset_peak(ctx.device)
    started = time.perf_counter()
    try:
        step.run(ctx, row)
    except OutOfTime as stop:
        row.result = f"stopped: time ({stop.done})"
    except STEP_ERRORS as err:
        row.result = f"FAIL: {first_line(err)}"
    synchronize(ctx.device)
    row.seconds = time.perf_counter() - started
    row.peak_gib = row.peak_gib or peak_gib(ctx.device)
    release(ctx.device)
    log(f"{step.step}: {row.result} ({row.seconds:.1f} s)")
    return row


def run_plan(ctx, steps, rows):
    """Run ``steps`` in order, appending each row to ``rows`` (kept if a bug stops it)."""
    for step in steps:
        rows.append(run_step(ctx, step))
    return rows


# ---------------------------------------------------------------------------------------
# the table


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
    if ctx.device != "cpu":
        gpu = (f"{torch.cuda.get_device_name(ctx.device)} "
               f"({torch.cuda.device_count()} device(s) visible; CUDA {torch.version.cuda})")
    else:
        gpu = "none: smoke mode on the CPU, nothing below ran on a GPU"
    return [f"- GPU: {gpu}",
            f"- torch {torch.__version__}; Triton {triton_version}; faiss {faiss_state}; "
            f"Python {platform.python_version()}"
            + ("; Triton interpreter" if os.environ.get("TRITON_INTERPRET") == "1" else ""),
            f"- device {ctx.device}; budget {ctx.budget.total_s:.0f} s, used "
            f"{ctx.budget.used():.0f} s; est. s = benchmarks/cost_model.py's seconds on one "
            f"H100 at these sizes"]


def format_cell(value, digits=1):
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(ctx, rows, title):
    lines = [f"# {title}", "", *environment_lines(ctx), "",
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
