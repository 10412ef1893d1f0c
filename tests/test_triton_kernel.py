"""NovelSelect's fused GPU kernel (utils/selection/triton_kernel.py), checked on a machine without a GPU.

Triton's interpreter runs the kernel on CPU tensors, so its logic is checked step by step
against a direct recomputation; Triton's compiler builds it for real GPU targets, so it is known
to compile there. On a GPU machine, tests/test_gpu.py runs it on the device.
"""

import ast
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from conftest import REPO
from test_selection import (
    check_duplicates_tie,
    check_every_step,
    check_lowest_first,
    duplicate_pool,
    pool_inputs,
)

from utils.numerics.rows import unit_rows
from utils.selection.cpu import NumpyEngine
from utils.selection.engine_choice import select
from utils.selection.gpu import DeviceError, is_device_fault, triton_self_check

pytest.importorskip("triton", reason="Triton checks the GPU kernel here: "
                                     "pip install triton")
needs_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1",
    reason="a GPU machine checks the kernel on the device (tests/test_gpu.py)")


def run_without_interpreter(code):
    """Run Python code in a fresh process with Triton's compiler (not its interpreter).

    Its compile cache goes to a fresh temporary folder, so a read-only home does not matter.
    """
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(REPO),
           "TRITON_CACHE_DIR": tempfile.mkdtemp(prefix="triton_cache_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


@needs_interpreter
@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_kernel_equals_direct_recomputation_at_every_step(alpha):
    """Blocks of 4 values make the tails span several blocks, as 512-value blocks do at scale;
    the distances come in several row chunks."""
    from utils.selection.gpu import TritonEngine

    unit, rho = pool_inputs(n=24, seed=int(alpha * 10))
    # 2 KiB: the distances of 24 rows (112 bytes each) come in 2 chunks
    engine = TritonEngine(unit, rho, 14, alpha, "cpu", block=4, block_mib=2 / 1024)
    picks = check_every_step(engine, unit, rho, 14, alpha, None)
    assert picks == select(unit, rho, 14, alpha, picks[0],
                           engine=NumpyEngine(unit, rho, 14, alpha))


@needs_interpreter
def test_self_check_passes_when_the_kernel_is_right():
    assert triton_self_check("cpu", n=24, k=12) is None


def test_a_kernel_that_does_not_compile_costs_a_notice():
    """A block of 3 values is no power of two: Triton refuses to build the kernel (its
    compiler, or its interpreter), and the check says so in one line."""
    problem = triton_self_check("cpu", n=24, k=12, block=3)
    assert "power of 2" in problem and "\n" not in problem


@pytest.mark.parametrize("message", [
    "Triton Error [CUDA]: an illegal memory access was encountered",
    "CUDA error: device-side assert triggered",
])
def test_a_device_fault_in_the_kernel_is_raised_not_hidden(monkeypatch, message):
    """The device fails while the kernel runs (simulated at Triton's launch, below our code):
    the CUDA context is then unusable, so there is no fallback to the torch kernel."""
    from utils.selection import triton_kernel as triton_selection

    def fail_on_the_device(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(type(triton_selection.insert_values), "run", fail_on_the_device)
    with pytest.raises(DeviceError, match=r"^cpu: the fused Triton kernel failed on the device "
                                          r"\(RuntimeError: " + re.escape(message)):
        triton_self_check("cpu", n=24, k=12)


@pytest.mark.parametrize("make_error, device_fault", [
    (lambda: RuntimeError("CUDA error: an illegal memory access was encountered"), True),
    (lambda: RuntimeError("Triton Error [CUDA]: unspecified launch failure"), True),
    (lambda: __import__("torch").OutOfMemoryError("CUDA out of memory"), True),
    (lambda: RuntimeError("0 active drivers ([]). There should only be one."), False),
    (lambda: RuntimeError("Triton cache folder is read-only"), False),
])
def test_device_faults_are_told_from_launch_failures(make_error, device_fault):
    assert is_device_fault(make_error()) is device_fault


@needs_interpreter
@pytest.mark.slow
def test_exact_duplicates_tie_exactly_in_the_kernel(tmp_path):
    """As tests/test_selection.py checks the CPU engines: rows copied to odd offsets in other
    shards (row 3 to rows 101 and 257, row 10 to the last rows) keep bitwise equal values,
    sorted rows and sums in the Triton kernel, and the lowest index of a group is picked
    first. A 300-row pool: the interpreter runs one program per row."""
    from utils.selection.gpu import TritonEngine

    copies = {3: [101, 257], 10: [297, 298, 299], 20: [150], 30: [201]}
    vectors, groups = duplicate_pool(tmp_path, n=300, sizes=(100, 157, 43), copies=copies)
    unit = unit_rows(vectors)
    rho = np.random.default_rng(0).uniform(0.5, 2.0, 300).astype(np.float32)
    for group in groups:
        rho[group] = rho[group[0]]
    quality = np.ones(300)
    quality[[3, 101, 257, 20, 150]] = 5.0  # two groups to pick early
    engine = TritonEngine(unit, rho, 7, 1.0, "cpu", block=4)
    picks = [60]
    for _ in range(6):
        engine.add_pick(picks[-1])
        check_duplicates_tie(engine, groups)
        picks.append(engine.best(engine.device_array(quality))[0])
    assert check_lowest_first(picks, groups) >= 2


@pytest.mark.slow
def test_self_check_reports_a_kernel_that_cannot_run():
    """Compiled Triton with no GPU fails to launch: the check says why in one line."""
    problem = run_without_interpreter(
        "from utils.selection.gpu import triton_self_check; "
        "print(repr(triton_self_check('cpu', n=24, k=12)))")
    assert isinstance(problem, str) and problem and "\n" not in problem


# Triton names the block-wide barrier op differently across releases: ``gpu.barrier`` up to
# 3.6, ``ttg.barrier`` from 3.8 on. What it does, one ``bar.sync`` in the machine code, is the same.
BARRIER_OPS = ("gpu.barrier", "ttg.barrier")


def tail_loop_ops(ptx):
    """The memory operations and barriers of the kernel's tail loop in PTX, in program order.

    The tail loop is the loop (a label and a branch back to it) that loads float64 values, the
    tail's coefficients; the binary search before it loads float32 values only. Repeated
    operations (one per register of a block) are listed once.
    """
    lines = [line.strip() for line in ptx.splitlines()]
    labels = {line.split(":")[0]: i for i, line in enumerate(lines)
              if re.match(r"^\$L__BB\d+_\d+:", line)}
    for end, line in enumerate(lines):
        target = re.search(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);", line)
        if not target or labels.get(target.group(1), end) >= end:
            continue  # not a branch back to an earlier label
        body = lines[labels[target.group(1)]:end]
        if not any("ld.global.b64" in op or "ld.global.f64" in op for op in body):
            continue
        ops = []
        for op in body:
            kind = ("load" if "ld.global" in op else "barrier" if re.search(
                r"\b(bar|barrier)\.sync\b", op) else "store" if "st.global" in op else None)
            if kind and (not ops or ops[-1] != kind):
                ops.append(kind)
        return ops
    raise AssertionError("no loop that loads the tail's float64 coefficients in the PTX")


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.slow
def test_kernel_compiles_for_ampere_and_hopper_with_the_barrier_in_place(arch):
    """The kernel builds to machine code (cubin) for sm_80 and sm_90, and in its compiled form
    every tail block is read, then all threads wait at a barrier, then it is written one place
    down (whichever name this Triton gives the barrier op)."""
    cubin_bytes, ptx, ir_ops = run_without_interpreter(f"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from utils.selection.triton_kernel import BLOCK, NUM_WARPS, insert_values
signature = {{"sorted_values": "*fp32", "row_stride": "i32", "weighted_sums": "*fp64",
             "values": "*fp32", "active": "*i8", "coefficients": "*fp64", "weights": "*fp64",
             "t": "i32", "BLOCK": "constexpr"}}
kernel = triton.compile(ASTSource(insert_values, signature, constexprs={{"BLOCK": BLOCK}}),
                        target=GPUTarget("cuda", {arch}, 32), options={{"num_warps": NUM_WARPS}})
lines = kernel.asm["ttgir"].splitlines()
# the tail loop: the while loop that carries the float64 block of the tail sum
start = next(i for i, line in enumerate(lines) if "scf.while" in line and "xf64" in line)
end = next(i for i in range(start, len(lines)) if "scf.yield" in lines[i])
print(repr([len(kernel.asm["cubin"]), kernel.asm["ptx"],
            [op for line in lines[start:end] for op in ("tt.load", "tt.store") + {BARRIER_OPS!r}
             if op in line]]))
""")
    assert cubin_bytes > 0
    # in the machine code: the tail block's loads, one barrier, then the stores
    assert tail_loop_ops(ptx) == ["load", "barrier", "store"]
    # in Triton's own IR: the values and their coefficients are read, the barrier, the store
    assert len(ir_ops) == 4 and ir_ops[:2] == ["tt.load", "tt.load"] and ir_ops[3] == "tt.store"
    assert ir_ops[2] in BARRIER_OPS
