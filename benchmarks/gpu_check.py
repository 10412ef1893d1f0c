"""The GPU check in one command (``bash benchmarks/gpu_check.sh``): the GPU tests, then the scale run.

    bash benchmarks/gpu_check.sh                  # a machine with a GPU: at most --budget_s seconds
    bash benchmarks/gpu_check.sh --budget_s 600   # 2+ GPUs: room for the torchrun row (e)
    bash benchmarks/gpu_check.sh --smoke          # every step at tiny sizes on the CPU

Steps, each a row of the one table printed at the end:

- p   the packages the check needs import (``NEEDED_MODULES``; a missing one is named with
      what needs it). Never faiss, vLLM or orjson.
- a   ``python -m pytest -m gpu -ra tests/test_gpu*.py``: every test marked ``gpu`` (only
      these modules hold them; the others need faiss to import) (tests/test_gpu.py: the GPU
      engines and kNN against the CPU and the golden picks; tests/test_gpu_golden.py: the
      golden cases through novelsum.py and novelselect.py with ``--gpu_id 0``, with the fused
      Triton kernel and with ``NOVELSELECT_GPU_KERNEL=torch``). Its output goes to stderr; the
      row counts passed / failed / skipped from its JUnit report. With CUDA a skipped gpu test
      fails the row (a GPU path went unchecked); without CUDA they all skip, saying so.
- c0 to e  the scale run of ``benchmarks/gpu_scale.py`` (its docstring), in the time left.
- v   vLLM on the GPU, where installed (``requirements-gpu.txt``): ``benchmarks/embedding_cpu.py
      --device cuda:0`` embeds the 744 example texts with all-MiniLM-L6-v2 and with a model of
      Qwen2.5-0.5B's shape, through sentence-transformers or transformers and through vLLM, in
      float32 and bfloat16; the row gives vLLM's texts/s and its smallest cosine to the first
      (float32) row. Last, as it needs ~300 s (an estimate: it has not run on a GPU yet):
      ``--budget_s 800`` leaves room for it.

The budget (``--budget_s``, default 450 s) covers the whole check: cost_model.py puts a and
c0 to c4 at about 405 s on one H100, and step e at 163 s more on 2 GPUs, 65 s on 8; ``--smoke`` runs the scale steps at tiny
sizes on the CPU (the gpu tests skip there). The other options are gpu_scale.py's. A failing
step puts its one-line error in the table and the check exits 1; the table also goes to
``--output`` (git ignores benchmarks/results/).
"""

import importlib
import importlib.util
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from check_table import ALWAYS, CheckFailed, OutOfTime, Step, last_line, run_plan
from common import REPO
from gpu_scale import finish, parse_args, plan, start

# What the check imports, and where (a GPU machine may lack one: say so first, in one row).
NEEDED_MODULES = {"torch": "every step", "triton": "the fused kernel (a, c3)",
                  "numpy": "every step", "numba": "tests/test_gpu.py's CPU comparisons",
                  "click": "the scripts (a)", "tqdm": "the scripts (a)", "pytest": "step a"}
PYTEST_S = 130.0  # the gpu tests on one H100: ~30 tests, 8 script processes, Triton compiles
VLLM_MIN_COSINE = 0.999  # vLLM's vectors against the float32 row of the same model
VLLM_S = 300.0  # four engine starts and two other backends over 744 texts: a guess, not measured
GPU_MARKER = "gpu"
GPU_TESTS = "test_gpu*.py"  # where the tests marked gpu live, in tests/


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


def pytest_report(junit_path):
    """(counts, first failing test, skip reasons) from pytest's JUnit XML report; counts:
    passed, failed, errors, skipped."""
    root = ElementTree.parse(junit_path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {key: sum(int(s.get(key, 0)) for s in suites)
             for key in ("tests", "failures", "errors", "skipped")}
    passed = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    first_failure, reasons = None, []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for outcome in case:
            if outcome.tag in ("failure", "error") and first_failure is None:
                message = (outcome.get("message") or "").splitlines()
                first_failure = f"{name}: {message[0] if message else outcome.tag}"
            elif outcome.tag == "skipped" and outcome.get("message") not in reasons:
                reasons.append(outcome.get("message"))
    counts = (passed, total["failures"], total["errors"], total["skipped"])
    return counts, first_failure, reasons


def judge_gpu_tests(counts, first_failure, reasons, on_gpu):
    """The row's result, or ``CheckFailed``: no failure, at least one test, and on a GPU none
    skipped."""
    passed, failed, errors, skipped = counts
    text = f"{passed} passed, {failed} failed, {errors} errors, {skipped} skipped"
    if failed or errors:
        raise CheckFailed(f"{text}; first: {first_failure}")
    if not passed + skipped:
        raise CheckFailed(f"no test is marked {GPU_MARKER}")
    if on_gpu and skipped:
        raise CheckFailed(f"{text}: on a GPU no gpu test may skip ({'; '.join(reasons)})")
    if not on_gpu:
        return f"pass: {text} (no CUDA device here: {'; '.join(reasons)})"
    return f"pass: {text}"


def gpu_test_files():
    """The modules that hold the gpu tests, ``tests/test_gpu*.py`` (a test checks that no other
    module marks one): others import faiss, which the GPU machines lack, so collecting every
    module there fails."""
    return sorted(str(path.relative_to(REPO)) for path in (REPO / "tests").glob(GPU_TESTS))


def pytest_command(junit):
    return [sys.executable, "-m", "pytest", "-m", GPU_MARKER, "-ra", "-q", "-p",
            "no:cacheprovider", f"--junitxml={junit}", *gpu_test_files()]


def step_gpu_tests(ctx, row):
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        try:
            done = subprocess.run(pytest_command(junit), cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=max(1.0, ctx.budget.left()))
        except subprocess.TimeoutExpired:
            raise OutOfTime("pytest killed at the budget's end") from None
        print(done.stdout, file=sys.stderr, flush=True)
        if not junit.exists():
            raise CheckFailed(f"pytest exited {done.returncode}: {last_line(done.stdout)}")
        report = pytest_report(junit)
    row.peak_gib = "n/a (subprocess)"
    row.result = judge_gpu_tests(*report, ctx.on_gpu)


def needs_vllm(ctx):
    if importlib.util.find_spec("vllm") is None:
        return "skipped: vLLM is not installed (python -m pip install -r requirements-gpu.txt)"
    return None


def vllm_rows(table):
    """``(model, dtype, texts/s, cosine)`` of each vLLM row of embedding_cpu.py's table, and
    the rows that failed."""
    rows, failed = [], []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) < 9 or cells[1] != "vllm":
            continue
        if cells[4].startswith("failed"):
            failed.append(f"{cells[0]} {cells[2]}: {cells[4]}")
        else:
            rows.append((cells[0], cells[2], cells[5], cells[8]))
    return rows, failed


def step_vllm(ctx, row):
    command = [sys.executable, "benchmarks/embedding_cpu.py", "--device", ctx.device,
               "--causal_texts", "744"]
    try:
        done = subprocess.run(command, cwd=REPO, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=max(1.0, ctx.budget.left()))
    except subprocess.TimeoutExpired:
        raise OutOfTime("the embedding rows killed at the budget's end") from None
    print(done.stdout, file=sys.stderr, flush=True)
    rows, failed = vllm_rows(done.stdout)
    failed += [f"{model} {dtype}: cosine {cosine} to float32 (under {VLLM_MIN_COSINE})"
               for model, dtype, _rate, cosine in rows if float(cosine) < VLLM_MIN_COSINE]
    if done.returncode or failed or not rows:
        raise CheckFailed(failed[0] if failed else
                          f"embedding_cpu.py exited {done.returncode}: {last_line(done.stderr)}")
    row.peak_gib = "n/a (subprocess)"
    row.result = "pass: " + "; ".join(f"{model} {dtype} {rate} texts/s, cosine {cosine}"
                                      for model, dtype, rate, cosine in rows)


def check_plan(ctx):
    return [Step("p", "packages the check imports", "", 0.0, ALWAYS, step_packages),
            Step("a", f"pytest -m {GPU_MARKER} (tests marked gpu)", "", PYTEST_S, 1.0,
                 step_gpu_tests),
            *plan(ctx),
            Step("v", "vLLM embedding (benchmarks/embedding_cpu.py)", "744 texts", VLLM_S, 1.0,
                 step_vllm, needs_vllm)]


def main(argv=None):
    ctx = start(parse_args(argv, __doc__, "gpu_check.md"), "gpu_check")
    rows = []
    try:
        run_plan(ctx, check_plan(ctx), rows)
    finally:
        code = finish(ctx, rows, "GPU check (benchmarks/gpu_check.sh)")
    return code


if __name__ == "__main__":
    sys.exit(main())
