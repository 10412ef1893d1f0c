"""benchmarks/gpu_check.sh and its scale run: smoke mode end to end on the CPU with faiss hidden
(as on our GPU machines, which have no faiss), the time budget, the table, the pytest row, the
torchrun step's pieces, and the one cost model."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import check_table  # noqa: E402 (a script folder, not a package)
import cost_model  # noqa: E402
import gpu_check  # noqa: E402
import gpu_scale  # noqa: E402
import scale_torchrun  # noqa: E402
import sizing  # noqa: E402

STEPS = ["p", "a", "c0", "d", "c1", "c2", "c3", "c4", "e", "v"]


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


@pytest.mark.slow
def test_smoke_passes_every_step_without_faiss(tmp_path, faiss_hidden):
    pytest.importorskip("triton", reason="the smoke run's fused-kernel steps need Triton: "
                                         "pip install triton")
    output = tmp_path / "gpu_check.md"
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--smoke", "--output", str(output)],
                          cwd=REPO, env=faiss_hidden, text=True, capture_output=True, timeout=420)
    assert done.returncode == 0, done.stdout + done.stderr
    text = output.read_text()
    assert text in done.stdout, "the table printed is the table written"
    assert "faiss not importable" in text
    assert "nothing below ran on a GPU" in text
    rows = table_rows(text)
    assert list(rows) == STEPS
    for step in STEPS[:-1]:
        assert rows[step][-1].startswith("pass: "), rows[step]
    if importlib.util.find_spec("vllm") is None:  # this environment's case in CI
        assert rows["v"][-1] == ("skipped: vLLM is not installed (python -m pip install -r "
                                 "requirements-gpu.txt)")
    assert rows["a"][-1].startswith("pass: 0 passed, 0 failed, 0 errors, "), rows["a"]
    assert "skipped (no CUDA device here: no CUDA device" in rows["a"][-1]
    assert "-m gpu" in done.stderr and "SKIPPED" in done.stderr, "pytest -ra's report shown"
    assert "identical" in rows["c4"][-1]
    assert rows["e"][-1].startswith("pass: 2 ranks (CPU processes, --gpu_id -1): all 10 picks "
                                    "identical to c3's, density factors of its picks bitwise "
                                    "c1's; torchrun "), rows["e"]
    assert "10 steps: 9 passed, 0 failed" in text or "10 steps: 10 passed, 0 failed" in text


def test_no_time_left_skips_every_step_and_exits_zero(tmp_path):
    pytest.importorskip("triton", reason="the package step wants Triton: pip install triton")
    output = tmp_path / "table.md"
    assert gpu_check.main(["--smoke", "--budget_s", "0", "--output", str(output)]) == 0
    rows = table_rows(output.read_text())
    assert list(rows) == STEPS
    assert rows["p"][-1].startswith("pass: ")
    for step in ["a", "c0"]:
        assert rows[step][-1].startswith("skipped: time (est. "), rows[step]
    assert rows["d"][-1] == rows["c1"][-1] == "skipped: needs the pool (c0)"
    assert rows["c2"][-1] == rows["c3"][-1] == "skipped: needs the density (c1)"
    assert rows["c4"][-1] == "skipped: needs picks of both kernels (c2, c3)"
    assert rows["e"][-1] == "skipped: needs the Triton kernel's picks (c3)"


def test_the_scale_script_alone_writes_its_own_table(tmp_path):
    output = tmp_path / "scale.md"
    assert gpu_scale.main(["--smoke", "--budget_s", "0", "--output", str(output)]) == 0
    text = output.read_text()
    assert text.startswith("# GPU scale run (benchmarks/gpu_scale.py)")
    assert list(table_rows(text)) == STEPS[2:-1]  # v is the check's own step


def smoke_context(total_s=60.0):
    args = gpu_scale.parse_args(["--smoke"])
    ctx = gpu_scale.Context(args, "cpu", check_table.Budget(total_s))
    ctx.pool = gpu_scale.clustered_pool(args.pool, args.dim, "cpu")
    ctx.density_factors = np.ones(args.pool, dtype=np.float32)
    return ctx


def test_a_selection_stopped_by_the_clock_reports_progress_and_keeps_its_picks():
    ctx = smoke_context()
    ctx.budget.end = ctx.budget.start  # no time left: the first pick stops the run
    with pytest.raises(check_table.OutOfTime, match=r"1 of 10 picks, .* extrapolated 10 picks"):
        gpu_scale.run_selection(ctx, "torch", 10)
    assert len(ctx.picks["torch"]) == 1


def test_a_failing_step_puts_one_line_in_the_table_and_the_exit_code(tmp_path):
    ctx = smoke_context()
    ctx.args.output = tmp_path / "table.md"

    def broken(ctx, row):
        raise check_table.CheckFailed("picks differ from pick 3 on")

    row = check_table.run_step(ctx, check_table.Step("x", "a broken step", "", 1.0, 0.0, broken))
    assert row.result == "FAIL: CheckFailed: picks differ from pick 3 on"
    assert row.status == "FAIL"
    assert "1 failed (x)" in check_table.table(ctx, [row], "title")
    assert gpu_scale.finish(ctx, [row], "title") == 1


def test_a_step_whose_estimate_does_not_fit_is_skipped_before_it_starts():
    ctx = smoke_context(total_s=5.0)
    ran = []
    step = check_table.Step("x", "long", "", 30.0, 30.0, lambda c, r: ran.append(r))
    assert check_table.run_step(ctx, step).result.startswith("skipped: time (est. 30 s, ")
    assert ran == []


def test_a_missing_package_is_named_with_the_steps_that_need_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    ctx = smoke_context()
    row = check_table.run_step(ctx, gpu_check.check_plan(ctx)[0])
    assert row.result.startswith("FAIL: CheckFailed: missing: ")
    assert "tqdm (the scripts (a))" in row.result


def test_the_gpu_tests_row_runs_pytest_on_the_gpu_marker():
    command = gpu_check.pytest_command("j.xml")
    assert command[1:6] == ["-m", "pytest", "-m", "gpu", "-ra"]
    assert {"tests/test_gpu.py", "tests/test_gpu_golden.py"} <= set(command)
    ini = (REPO / "pytest.ini").read_text()
    assert "\n    gpu: " in ini.split("markers =", 1)[1], "the marker is registered"


def test_no_module_outside_the_gpu_test_files_marks_a_gpu_test():
    """gpu_check.sh runs only tests/test_gpu*.py (the others need faiss to import)."""
    marked = {path.name for path in (REPO / "tests").glob("*.py")
              if re.search(r"mark\.gpu\b", path.read_text())}
    gpu_files = {path.name for path in (REPO / "tests").glob(gpu_check.GPU_TESTS)}
    assert marked and marked <= gpu_files


JUNIT = ('<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" tests="10">'
         '<testcase classname="tests.test_gpu" name="test_a"><failure message="assert 1 == 2'
         '&#10;more"/></testcase>'
         '<testcase classname="tests.test_gpu" name="test_b"><skipped message="no CUDA device: '
         'x"/></testcase>'
         '<testcase classname="tests.test_gpu" name="test_c"><skipped message="no CUDA device: '
         'x"/></testcase></testsuite></testsuites>')


def test_pytest_report_from_junit_xml(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text(JUNIT)
    counts, first, reasons = gpu_check.pytest_report(report)
    assert counts == (4, 2, 1, 3)
    assert first == "tests.test_gpu::test_a: assert 1 == 2"
    assert reasons == ["no CUDA device: x"]


@pytest.mark.parametrize("counts, on_gpu, result", [
    ((5, 0, 0, 0), True, "pass: 5 passed, 0 failed, 0 errors, 0 skipped"),
    ((0, 0, 0, 5), False, "pass: 0 passed, 0 failed, 0 errors, 5 skipped (no CUDA device here: "
                          "no CUDA device: x)"),
    ((4, 0, 0, 1), True, "on a GPU no gpu test may skip (no CUDA device: x)"),
    ((4, 1, 0, 0), False, "first: tests.test_gpu::test_a: boom"),
    ((0, 0, 0, 0), False, "no test is marked gpu")])
def test_a_skipped_gpu_test_fails_the_check_on_a_gpu(counts, on_gpu, result):
    judged = ["tests.test_gpu::test_a: boom", ["no CUDA device: x"], on_gpu]
    if result.startswith("pass: "):
        assert gpu_check.judge_gpu_tests(counts, *judged) == result
    else:
        with pytest.raises(check_table.CheckFailed, match=re.escape(result)):
            gpu_check.judge_gpu_tests(counts, *judged)


def test_extrapolation_sums_a_linear_fit_of_the_step_times():
    clock = gpu_scale.PickClock(check_table.Budget(60.0), 10)
    steps = 0.010 + 0.001 * np.arange(1, 6)  # step t takes 10 ms + t ms
    clock.times = list(np.concatenate([[0.0], np.cumsum(steps)]))
    expected = sum(0.010 + 0.001 * t for t in range(1, 10))
    assert clock.extrapolated_s(10) == pytest.approx(expected)
    assert clock.ms_per_pick() == pytest.approx(1e3 * steps.mean())


def test_clustered_pool_is_seeded_float32_with_the_requested_shape():
    first = gpu_scale.clustered_pool(300, 8, "cpu", chunk_rows=7)
    again = gpu_scale.clustered_pool(300, 8, "cpu", chunk_rows=7)
    assert first.shape == (300, 8) and first.dtype == np.float32
    assert np.array_equal(first, again)


# ---------------------------------------------------------------------------------------
# step e's pieces


def test_torchrun_step_is_skipped_with_fewer_than_two_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU, whatever is here
    args = gpu_scale.parse_args(["--smoke"])
    ctx = gpu_scale.Context(args, "cuda:0", check_table.Budget(60.0))
    ctx.picks["triton"] = [0, 1]
    step = gpu_scale.plan(ctx)[-1]
    assert step.step == "e" and "one rank per GPU" in step.what
    assert check_table.run_step(ctx, step).result == "skipped: needs 2+ GPUs"


def test_torchrun_command_starts_the_script_on_each_rank_through_the_smoke_launcher():
    ctx = smoke_context()
    command = scale_torchrun.script_command(ctx, "novelselect.py", ["--k", "3"], ranks=2)
    assert command[:7] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "--no-python"]
    assert command[7:] == [sys.executable, "-c", scale_torchrun.TORCH_KNN_LAUNCHER,
                           "novelselect.py", "--k", "3"]
    ctx.args.smoke = False
    assert scale_torchrun.script_command(ctx, "novelselect.py", ["--k", "3"], 2)[7:] == [
        sys.executable, "novelselect.py", "--k", "3"]


def test_torchrun_options_are_those_of_the_single_gpu_selection(tmp_path):
    ctx = smoke_context()
    args = scale_torchrun.torchrun_select_args(ctx, tmp_path / "t", tmp_path / "e",
                                               tmp_path / "o")
    options = dict(zip(args[::2], args[1::2]))
    assert options == {"--text_dir": str(tmp_path / "t"), "--figure_dir": str(tmp_path / "e"),
                       "--output_dir": str(tmp_path / "o"), "--k": "10", "--neighbors": "10",
                       "--density_power": "0.5", "--distance_power": "1.0", "--seed": "42",
                       "--gpu_id": "-1"}


@pytest.mark.parametrize("n, shards", [(80, 5), (7, 7), (3, 5), (1000, 11)])
def test_shard_bounds_cover_the_rows_in_order(n, shards):
    bounds = scale_torchrun.shard_bounds(n, shards)
    assert len(bounds) == shards
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(stop == start for (_a, stop), (start, _b) in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_pool_shards_read_back_as_the_pool_with_each_row_its_text(tmp_path):
    from utils.io.texts import check_pairing, load_items
    from utils.io.vectors import load_vectors

    pool = gpu_scale.clustered_pool(100, 8, "cpu")
    texts, embeddings = scale_torchrun.write_pool_shards(pool, tmp_path, 11)  # 10.npy sorts last
    vectors = load_vectors(embeddings)
    items, text_paths, counts = load_items(texts)
    check_pairing(text_paths, counts, vectors, text_source=texts)
    np.testing.assert_array_equal(vectors.vectors, pool)
    assert items == [scale_torchrun.pool_text(row) for row in range(100)]


def write_selection_outputs(folder, picks, ranks, texts=None):
    stem = scale_torchrun.selection_stem(len(picks), 0.5, 1.0)
    folder.mkdir()
    (folder / f"{stem}_indices.json").write_text(json.dumps(picks))
    log = ["order,index,shard,row,novelty,density_factor"] + [
        f"{t},{p},0.npy,{p},,{0.25 * (p + 1)}" for t, p in enumerate(picks)]
    (folder / f"{stem}_picks.csv").write_text("\n".join(log) + "\n")
    (folder / f"{stem}_run.json").write_text(json.dumps({"ranks": ranks}))
    texts = [scale_torchrun.pool_text(p) for p in picks] if texts is None else texts
    (folder / f"{stem}.json").write_text(json.dumps(texts))
    return folder


def test_torchrun_outputs_must_name_the_ranks_and_pair_texts_with_picks(tmp_path):
    read = scale_torchrun.read_torchrun_outputs
    picks, rho = read(write_selection_outputs(tmp_path / "good", [4, 1, 7], 2), 3, 2)
    assert picks == [4, 1, 7]
    assert rho.dtype == np.float32 and rho.tolist() == [1.25, 0.5, 2.0]
    one = write_selection_outputs(tmp_path / "one", [4, 1, 7], 1)
    with pytest.raises(check_table.CheckFailed, match=r"ran on 1 rank\(s\), not 2"):
        read(one, 3, 2)
    shifted = write_selection_outputs(tmp_path / "shifted", [4, 1, 7], 2,
                                      [scale_torchrun.pool_text(p + 1) for p in [4, 1, 7]])
    with pytest.raises(check_table.CheckFailed, match="picked texts are not the picked rows'"):
        read(shifted, 3, 2)


def test_largest_relative_difference_of_density_factors():
    rho = np.array([0.5, 2.0], dtype=np.float32)
    assert scale_torchrun.largest_relative_difference(rho, rho.copy()) == 0.0
    assert scale_torchrun.largest_relative_difference([0.5, 2.002], rho) == pytest.approx(1e-3)
    assert scale_torchrun.largest_relative_difference([], []) == 0.0


@pytest.mark.parametrize("ours, theirs, first", [([1, 2, 3], [1, 2, 3], None),
                                                 ([1, 2, 3], [1, 5, 3], 1),
                                                 ([1, 2], [1, 2, 3], 2), ([], [], None)])
def test_first_difference_of_two_pick_lists(ours, theirs, first):
    assert scale_torchrun.first_difference(ours, theirs) == first
    assert scale_torchrun.first_difference(theirs, ours) == first


def test_a_kernel_fallback_on_any_rank_fails_the_triton_check():
    ctx = smoke_context()
    ctx.device = "cuda:0"  # the notice check applies on a GPU only
    scale_torchrun.check_triton_notice(ctx, "picked 10 of 80 samples on 2 ranks")
    text = "the ranks' kernels differ (TorchEngine, TritonEngine); every rank uses the torch kernel"
    with pytest.raises(check_table.CheckFailed, match="kernels differ"):
        scale_torchrun.check_triton_notice(ctx, f"loading\n{text}\npicked")
    with pytest.raises(check_table.CheckFailed, match="fused Triton kernel is not used"):
        scale_torchrun.check_triton_notice(ctx, "the fused Triton kernel is not used (x)")


def test_peak_memory_is_read_from_the_scripts_output():
    assert scale_torchrun.peak_of_output("a\npeak GPU memory 1.50 GiB\n") == "1.50"
    assert scale_torchrun.peak_of_output("no peak here") == "n/a (subprocess)"


@pytest.mark.slow
def test_a_command_past_its_time_is_stopped_then_killed(monkeypatch):
    monkeypatch.setattr(scale_torchrun, "STOP_GRACE_S", 0.5)
    ignores_sigterm = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                       "print('started', flush=True); time.sleep(60)")
    started = time.perf_counter()
    with pytest.raises(subprocess.TimeoutExpired):
        scale_torchrun.run_until([sys.executable, "-c", ignores_sigterm], 1.0, dict(os.environ))
    assert time.perf_counter() - started < 10
    assert scale_torchrun.run_until([sys.executable, "-c", "print('done')"], 30.0,
                                    dict(os.environ)) == (0, "done\n")


# ---------------------------------------------------------------------------------------
# the one cost model


def test_sizing_and_the_scale_run_use_the_one_cost_model():
    assert sizing.model is cost_model
    assert sizing.memory_per_rank is cost_model.memory_per_rank
    assert sizing.dot_bytes_per_row is cost_model.dot_bytes_per_row
    ctx = smoke_context()
    a = ctx.args
    steps = {step.step: step for step in gpu_scale.plan(ctx)}
    assert steps["c1"].estimate_s == cost_model.knn_s(a.pool, a.pool, a.dim, 1, a.neighbors)
    assert steps["c3"].estimate_s == cost_model.selection_s(a.pool, a.dim, a.k)
    assert steps["e"].estimate_s == cost_model.torchrun_s(a.pool, a.dim, a.k, 2, a.neighbors)
    assert not hasattr(gpu_check, "estimate_density_s"), "no second model"


@pytest.mark.parametrize("gpus", [2, 8, 64])
def test_knn_query_traffic_is_each_query_once_whatever_the_ranks(gpus):
    n, dim, k = 1_000_000, 4096, 10
    vectors = n * dim * 4
    results = gpus * n * (k + 1) * 16  # every rank's nearest of every query, gathered
    assert cost_model.knn_traffic_bytes(n, dim, gpus, k) == vectors + results
    assert cost_model.knn_traffic_bytes(n, dim, 1, k) == 0
    assert cost_model.knn_compute_s(n, n, dim, gpus) == pytest.approx(
        2 * n * -(-n // gpus) * dim / cost_model.KNN_FLOPS
        + 3 * -(-n // gpus) * dim * 4 / cost_model.HOST_BYTES_S)


def test_knn_messages_count_chunks_and_rank_boundaries():
    chunk = cost_model.QUERY_CHUNK_ROWS
    assert cost_model.knn_messages(3 * chunk, 1) == 0
    assert cost_model.knn_messages(3 * chunk, 4) == 3 * 5 + 3
    assert cost_model.knn_messages(3 * chunk + 1, 2) == 4 * 5 + 1


def test_the_torch_kernel_moves_every_stored_value_triton_the_tail():
    assert cost_model.insert_bytes_per_row(100, 0.5, "torch") == (
        cost_model.INSERT_FIXED_BYTES + cost_model.TORCH_VALUE_BYTES * 100)
    assert cost_model.insert_bytes_per_row(100, 0.5) == (
        cost_model.INSERT_FIXED_BYTES + cost_model.SECTOR * 7 + 8 * 0.5 * 100)
    assert cost_model.insert_bytes_per_row(0, 0.5) == cost_model.INSERT_FIXED_BYTES


def test_default_check_fits_its_budget_on_one_h100_by_the_model():
    args = gpu_scale.parse_args([])
    ctx = gpu_scale.Context(args, "cpu", check_table.Budget(args.budget_s))
    ctx.device = "cuda:0"
    ctx.args.smoke = False
    # e needs 2+ GPUs, v vLLM: both fit only a larger --budget_s (as gpu_check.py says)
    steps = [step for step in gpu_check.check_plan(ctx) if step.step not in ("e", "v")]
    assert sum(step.estimate_s for step in steps) < args.budget_s


def test_every_benchmark_module_reads_in_one_sitting():
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        assert len(path.read_text().splitlines()) <= 450, path.name


def test_the_vllm_row_reads_the_embedding_table():
    table = """# NVIDIA H100; torch GEMM 50000 GFLOP/s float32, 700000 bfloat16
| model | backend | dtype | batch | load s | texts/s | tokens/s | GFLOP/s | cos to first row | share |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| all-MiniLM-L6-v2 (744 texts) | sentence-transformers | float32 | 32 | 5.0 | 900.0 | 1 | 1 | 1.000000 | 1% |
| all-MiniLM-L6-v2 (744 texts) | vllm | bfloat16 | engine | 40.1 | 5000.5 | 1 | 1 | 0.999910 | 1% |
| Qwen2.5-0.5B shape (744 texts) | vllm | float32 | engine | failed: CUDA error | | | | | |
"""
    rows, failed = gpu_check.vllm_rows(table)
    assert rows == [("all-MiniLM-L6-v2 (744 texts)", "bfloat16", "5000.5", "0.999910")]
    assert failed == ["Qwen2.5-0.5B shape (744 texts) float32: failed: CUDA error"]
