"""benchmarks/gpu_check.sh: its smoke mode end to end on the CPU with faiss hidden (as on our GPU
machines, which have no faiss), its time budget, and its helpers."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402 (a script folder, not a package)

STEPS = ["p", "a", "b1", "b2", "b3", "b4", "c0", "d", "c1", "c2", "c3", "c4", "e"]


def table_rows(text):
    """step id -> its cells, from the markdown table the check writes."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in STEPS:
            rows[cells[0]] = cells
    return rows


@pytest.fixture
def faiss_hidden(tmp_path):
    """An environment whose Python processes cannot import faiss (a sitecustomize that puts
    None in sys.modules, so ``import faiss`` raises ImportError in every subprocess too)."""
    site = tmp_path / "hide_faiss"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['faiss'] = None\n")
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHON": sys.executable}


def test_smoke_passes_every_step_without_faiss(tmp_path, faiss_hidden):
    pytest.importorskip("triton", reason="the smoke run's fused-kernel steps need Triton: "
                                         "pip install triton")
    output = tmp_path / "gpu_check.md"
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--smoke", "--output", str(output)],
                          cwd=REPO, env=faiss_hidden, text=True, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    text = output.read_text()
    assert text in done.stdout, "the table printed is the table written"
    assert "faiss not importable" in text
    assert "nothing below ran on a GPU" in text
    rows = table_rows(text)
    assert list(rows) == STEPS
    for step in STEPS[:-1]:
        assert rows[step][-1].startswith("pass: "), rows[step]
    assert rows["e"][-1] == "n/a: torchrun needs 2+ GPUs"
    assert "identical" in rows["c4"][-1]
    assert "13 steps: 12 passed, 0 failed" in text


def test_no_time_left_skips_every_step_and_exits_zero(tmp_path, capsys):
    pytest.importorskip("triton", reason="the package step wants Triton: pip install triton")
    output = tmp_path / "table.md"
    assert gpu_check.main(["--smoke", "--budget_s", "0", "--output", str(output)]) == 0
    rows = table_rows(output.read_text())
    assert list(rows) == STEPS
    assert rows["p"][-1].startswith("pass: ")
    for step in ["a", "b1", "b2", "b3", "b4", "c0"]:
        assert rows[step][-1].startswith("skipped: time (est. "), rows[step]
    assert rows["d"][-1] == "skipped: needs the pool (c0)"
    assert rows["c2"][-1] == rows["c3"][-1] == "skipped: needs the density (c1)"
    assert rows["c4"][-1] == "skipped: needs picks of both kernels (c2, c3)"
    assert rows["e"][-1] == "n/a: torchrun needs 2+ GPUs"


def smoke_context(total_s=60.0):
    args = gpu_check.parse_args(["--smoke"])
    ctx = gpu_check.Context(args, "cpu", gpu_check.Budget(total_s))
    ctx.pool = gpu_check.clustered_pool(args.pool, args.dim, "cpu")
    ctx.rho = np.ones(args.pool, dtype=np.float32)
    return ctx


def test_a_selection_stopped_by_the_clock_reports_progress_and_keeps_its_picks():
    ctx = smoke_context()
    ctx.budget.end = ctx.budget.start  # no time left: the first pick stops the run
    with pytest.raises(gpu_check.OutOfTime, match=r"1 of 10 picks, .* extrapolated 10 picks"):
        gpu_check.run_selection(ctx, "torch", 10)
    assert len(ctx.picks["torch"]) == 1


def test_a_failing_step_puts_one_line_in_the_table_and_the_exit_code():
    ctx = smoke_context()

    def broken(ctx, row):
        raise gpu_check.CheckFailed("picks differ from pick 3 on")

    row = gpu_check.run_step(ctx, ("x", "a broken step", "", 1.0, 0.0, None, broken))
    assert row.result == "FAIL: CheckFailed: picks differ from pick 3 on"
    assert row.status == "FAIL"
    assert "1 failed (x)" in gpu_check.table(ctx, [row])


def test_a_missing_package_is_named_with_the_steps_that_need_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    row = gpu_check.run_step(smoke_context(), gpu_check.plan(smoke_context())[0])
    assert row.result.startswith("FAIL: CheckFailed: missing: ")
    assert "tqdm (the scripts (b))" in row.result


def test_pytest_counts_from_junit_xml(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text('<testsuites><testsuite name="pytest" errors="1" failures="2" '
                      'skipped="3" tests="10"/></testsuites>')
    assert gpu_check.pytest_counts(report) == (4, 2, 1, 3)


def test_golden_novelsum_command_line_keeps_gpu_id_and_makes_paths_absolute(tmp_path):
    script, args = gpu_check.golden_novelsum_args("novelsum_custom_grid", tmp_path / "o.csv")
    assert script == "novelsum.py"
    assert args[args.index("--gpu_id") + 1] == "0"
    case = REPO / "tests" / "golden" / "novelsum_custom_grid"
    assert args[args.index("--dense_ref_dir") + 1] == str(case / "reference")
    assert args[args.index("--output_csv") + 1] == str(tmp_path / "o.csv")


def test_largest_relative_error_compares_columns_by_their_numbers():
    expected = {"a": {"Dataset Name": "a", (5, 0.0, 1.0): "2.0"}}
    assert gpu_check.largest_relative_error({"a": {"Dataset Name": "a", (5, 0.0, 1.0): "2.002"}},
                                            expected) == pytest.approx(1e-3)
    assert gpu_check.grid_key("neighbor_5_density_0.0_distance_1") == gpu_check.grid_key(
        "neighbor_5_density_0_distance_1.0")
    with pytest.raises(gpu_check.CheckFailed, match="datasets"):
        gpu_check.largest_relative_error({}, expected)


def test_extrapolation_sums_a_linear_fit_of_the_step_times():
    clock = gpu_check.PickClock(gpu_check.Budget(60.0), 10)
    steps = 0.010 + 0.001 * np.arange(1, 6)  # step t takes 10 ms + t ms
    clock.times = list(np.concatenate([[0.0], np.cumsum(steps)]))
    expected = sum(0.010 + 0.001 * t for t in range(1, 10))
    assert clock.extrapolated_s(10) == pytest.approx(expected)
    assert clock.ms_per_pick() == pytest.approx(1e3 * steps.mean())


def test_clustered_pool_is_seeded_float32_with_the_requested_shape():
    first = gpu_check.clustered_pool(300, 8, "cpu", chunk_rows=7)
    again = gpu_check.clustered_pool(300, 8, "cpu", chunk_rows=7)
    assert first.shape == (300, 8) and first.dtype == np.float32
    assert np.array_equal(first, again)
