"""benchmarks/gpu_check.sh: its smoke mode end to end on the CPU with faiss hidden (as on our GPU
machines, which have no faiss), its time budget, and its helpers."""

import json
import os
import subprocess
import sys
import time

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


@pytest.mark.slow
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
    for step in STEPS:
        assert rows[step][-1].startswith("pass: "), rows[step]
    assert "identical" in rows["c4"][-1]
    assert rows["e"][-1].startswith("pass: 2 ranks (CPU processes, --gpu_id -1): all 10 picks "
                                    "identical to c3's, density factors of its picks bitwise "
                                    "c1's; torchrun "), rows["e"]
    assert "13 steps: 13 passed, 0 failed" in text


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
    assert rows["e"][-1] == "skipped: needs the Triton kernel's picks (c3)"


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


def test_torchrun_step_is_skipped_with_fewer_than_two_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU, whatever is here
    args = gpu_check.parse_args(["--smoke"])
    ctx = gpu_check.Context(args, "cuda:0", gpu_check.Budget(60.0))
    ctx.picks["triton"] = [0, 1]
    entry = gpu_check.plan(ctx)[-1]
    assert entry[0] == "e" and "one rank per GPU" in entry[1]
    assert gpu_check.run_step(ctx, entry).result == "skipped: needs 2+ GPUs"


def test_torchrun_command_starts_the_script_on_each_rank_through_the_smoke_launcher():
    ctx = smoke_context()
    command = gpu_check.script_command(ctx, "novelselect.py", ["--k", "3"], ranks=2)
    assert command[:7] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "--no-python"]
    assert command[7:] == [sys.executable, "-c", gpu_check.TORCH_KNN_LAUNCHER, "novelselect.py",
                           "--k", "3"]
    assert gpu_check.script_command(ctx, "novelselect.py", ["--k", "3"]) == command[7:]


def test_torchrun_options_are_those_of_the_single_gpu_selection(tmp_path):
    ctx = smoke_context()
    args = gpu_check.torchrun_select_args(ctx, tmp_path / "t", tmp_path / "e", tmp_path / "o")
    options = dict(zip(args[::2], args[1::2]))
    assert options == {"--text_dir": str(tmp_path / "t"), "--figure_dir": str(tmp_path / "e"),
                       "--output_dir": str(tmp_path / "o"), "--k": "10", "--neighbors": "10",
                       "--density_power": "0.5", "--distance_power": "1.0", "--seed": "42",
                       "--gpu_id": "-1"}


@pytest.mark.parametrize("n, shards", [(80, 5), (7, 7), (3, 5), (1000, 11)])
def test_shard_bounds_cover_the_rows_in_order(n, shards):
    bounds = gpu_check.shard_bounds(n, shards)
    assert len(bounds) == shards
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(stop == start for (_a, stop), (start, _b) in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_pool_shards_read_back_as_the_pool_with_each_row_its_text(tmp_path):
    from utils.io.texts import check_pairing, load_items
    from utils.io.vectors import load_vectors

    pool = gpu_check.clustered_pool(100, 8, "cpu")
    texts, embeddings = gpu_check.write_pool_shards(pool, tmp_path, 11)  # 10.npy sorts last
    vectors = load_vectors(embeddings)
    items, text_paths, counts = load_items(texts)
    check_pairing(text_paths, counts, vectors, text_source=texts)
    np.testing.assert_array_equal(vectors.vectors, pool)
    assert items == [gpu_check.pool_text(row) for row in range(100)]


def write_selection_outputs(folder, picks, ranks, texts=None):
    stem = gpu_check.selection_stem(len(picks), 0.5, 1.0)
    folder.mkdir()
    (folder / f"{stem}_indices.json").write_text(json.dumps(picks))
    log = ["order,index,shard,row,novelty,density_factor"] + [
        f"{t},{p},0.npy,{p},,{0.25 * (p + 1)}" for t, p in enumerate(picks)]
    (folder / f"{stem}_picks.csv").write_text("\n".join(log) + "\n")
    (folder / f"{stem}_run.json").write_text(json.dumps({"ranks": ranks}))
    texts = [gpu_check.pool_text(p) for p in picks] if texts is None else texts
    (folder / f"{stem}.json").write_text(json.dumps(texts))
    return folder


def test_torchrun_outputs_must_name_the_ranks_and_pair_texts_with_picks(tmp_path):
    good = write_selection_outputs(tmp_path / "good", [4, 1, 7], 2)
    picks, rho = gpu_check.read_torchrun_outputs(good, 3, 2)
    assert picks == [4, 1, 7]
    assert rho.dtype == np.float32 and rho.tolist() == [1.25, 0.5, 2.0]
    one = write_selection_outputs(tmp_path / "one", [4, 1, 7], 1)
    with pytest.raises(gpu_check.CheckFailed, match=r"ran on 1 rank\(s\), not 2"):
        gpu_check.read_torchrun_outputs(one, 3, 2)
    shifted = write_selection_outputs(tmp_path / "shifted", [4, 1, 7], 2,
                                      [gpu_check.pool_text(p + 1) for p in [4, 1, 7]])
    with pytest.raises(gpu_check.CheckFailed, match="picked texts are not the picked rows'"):
        gpu_check.read_torchrun_outputs(shifted, 3, 2)


def test_largest_relative_difference_of_density_factors():
    rho = np.array([0.5, 2.0], dtype=np.float32)
    assert gpu_check.largest_relative_difference(rho, rho.copy()) == 0.0
    assert gpu_check.largest_relative_difference([0.5, 2.002], rho) == pytest.approx(1e-3)
    assert gpu_check.largest_relative_difference([], []) == 0.0


@pytest.mark.parametrize("ours, theirs, first", [([1, 2, 3], [1, 2, 3], None),
                                                 ([1, 2, 3], [1, 5, 3], 1),
                                                 ([1, 2], [1, 2, 3], 2), ([], [], None)])
def test_first_difference_of_two_pick_lists(ours, theirs, first):
    assert gpu_check.first_difference(ours, theirs) == first
    assert gpu_check.first_difference(theirs, ours) == first


def test_a_kernel_fallback_on_any_rank_fails_the_triton_check():
    ctx = smoke_context()
    ctx.device = "cuda:0"  # the notice check applies on a GPU only
    gpu_check.check_kernel_notice(ctx, "picked 10 of 80 samples on 2 ranks", "triton")
    text = "the ranks' kernels differ (TorchEngine, TritonEngine); every rank uses the torch kernel"
    with pytest.raises(gpu_check.CheckFailed, match="kernels differ"):
        gpu_check.check_kernel_notice(ctx, f"loading\n{text}\npicked", "triton")


@pytest.mark.slow
def test_a_command_past_its_time_is_stopped_then_killed(monkeypatch):
    monkeypatch.setattr(gpu_check, "STOP_GRACE_S", 0.5)
    ignores_sigterm = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                       "print('started', flush=True); time.sleep(60)")
    started = time.perf_counter()
    with pytest.raises(subprocess.TimeoutExpired):
        gpu_check.run_until([sys.executable, "-c", ignores_sigterm], 1.0, dict(os.environ))
    assert time.perf_counter() - started < 10
    assert gpu_check.run_until([sys.executable, "-c", "print('done')"], 30.0,
                               dict(os.environ)) == (0, "done\n")
