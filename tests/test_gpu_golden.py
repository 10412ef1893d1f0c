"""The golden cases through the scripts on the GPU (``--gpu_id 0``), as users run them.

The tests marked ``gpu`` run ``python novelsum.py`` and ``python novelselect.py`` as processes
(with the fused Triton kernel and with ``NOVELSELECT_GPU_KERNEL=torch``) and skip, naming the
missing device, without CUDA; ``bash benchmarks/gpu_check.sh`` runs them and fails on a skip
there. The command-line builders and the kernel check they use are tested on the CPU too.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import GOLDEN, REPO
from test_novelselect_cli import run_args
from test_novelsum_cli import parse_key, read_results

NOVELSUM_CASES = ["novelsum_default_grid", "novelsum_custom_grid"]
RUNS = json.loads((GOLDEN / "novelselect" / "expected.json").read_text())
KERNEL_VARIABLE = "NOVELSELECT_GPU_KERNEL"  # utils.selection.gpu.GPU_KERNEL_VARIABLE
FALLBACK_NOTICE = "fused Triton kernel is not used"  # make_engine's notice on a fallback


def cuda_available():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


gpu = [pytest.mark.gpu,
       pytest.mark.skipif(not cuda_available(),
                          reason="no CUDA device: the scripts' GPU path unchecked on this machine")]


def with_marks(function):
    for mark in reversed(gpu):
        function = mark(function)
    return function


def golden_novelsum_command(case, output, gpu_id=0):
    """The case's command.txt as a process: its paths made absolute, ``--gpu_id`` naming
    ``gpu_id`` (command.txt asks for GPU 0; the reference ran there)."""
    words = (GOLDEN / case / "command.txt").read_text().split()
    if "--gpu_id" not in words:
        raise ValueError(f"{case}/command.txt has no --gpu_id")
    args = words[1:]
    for i in range(1, len(args)):
        if args[i - 1] in ("--multi_datasets_dir", "--dense_ref_dir"):
            args[i] = str(GOLDEN / case / args[i])
        elif args[i - 1] == "--output_csv":
            args[i] = str(output)
        elif args[i - 1] == "--gpu_id":
            args[i] = str(gpu_id)
    return [sys.executable, words[0], *args]


def golden_novelselect_command(run, output_dir, gpu_id=0):
    """tests/test_novelselect_cli.py's command line for one run, with notices, on ``gpu_id``."""
    args = [a for a in run_args(run, output_dir) if a != "--quiet"]
    return [sys.executable, "novelselect.py", *args, "--gpu_id", str(gpu_id)]


def kernel_problem(output, kernel):
    """Why a script's output shows that it did not use ``kernel`` on the GPU, or None: Triton
    must run without a fallback notice; the torch kernel must be chosen by the variable."""
    if kernel == "triton":
        fell_back = [line.strip() for line in output.splitlines() if FALLBACK_NOTICE in line]
        return fell_back[0] if fell_back else None
    if f"{KERNEL_VARIABLE}=torch" not in output:
        return f"no notice that {KERNEL_VARIABLE}=torch chose the torch kernel"
    return None


def largest_relative_error(ours, expected):
    """The largest relative difference over every value of every dataset (same datasets,
    same columns in the same order, or AssertionError)."""
    assert ours.keys() == expected.keys(), f"datasets {sorted(ours)} vs {sorted(expected)}"
    worst = 0.0
    for name, row in expected.items():
        assert list(ours[name]) == list(row), f"{name}: columns differ from expected.csv"
        for key, value in row.items():
            if key != "Dataset Name":
                want, got = float(value), float(ours[name][key])
                worst = max(worst, abs(got - want) / max(abs(want), 1e-300))
    return worst


def run_script(command, kernel=None):
    env = {name: value for name, value in os.environ.items() if name != KERNEL_VARIABLE}
    if kernel == "torch":
        env[KERNEL_VARIABLE] = "torch"
    done = subprocess.run(command, cwd=REPO, env=env, text=True, capture_output=True,
                          timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


# ---------------------------------------------------------------------------------------
# on the GPU


@with_marks
@pytest.mark.parametrize("case", NOVELSUM_CASES)
def test_novelsum_script_on_gpu_matches_golden_to_relative_1e6(tmp_path, case):
    output = run_script(golden_novelsum_command(case, tmp_path / "novelsum.csv"))
    assert "computed on cuda:0" in output, output
    worst = largest_relative_error(read_results(tmp_path / "novelsum.csv"),
                                   read_results(GOLDEN / case / "expected.csv"))
    assert worst <= 1e-6


@with_marks
@pytest.mark.parametrize("kernel", ["triton", "torch"])
@pytest.mark.parametrize("run", RUNS, ids=lambda r: f"k{r['k']}_a{r['distance_power']}")
def test_novelselect_script_on_gpu_reproduces_golden_picks(tmp_path, run, kernel):
    if kernel == "triton":
        pytest.importorskip("triton", reason="the fused GPU kernel needs Triton")
    output = run_script(golden_novelselect_command(run, tmp_path / "out"), kernel)
    assert kernel_problem(output, kernel) is None, output
    assert "peak GPU memory" in output
    stem = f"novelselect_{run['k']}_dense_{float(run['density_power'])}" \
           f"_dist_{float(run['distance_power'])}"
    assert json.loads((tmp_path / "out" / f"{stem}_indices.json").read_text()) == run["indices"]


# ---------------------------------------------------------------------------------------
# their pieces, on the CPU


def test_golden_novelsum_command_keeps_gpu_id_and_makes_paths_absolute(tmp_path):
    command = golden_novelsum_command("novelsum_custom_grid", tmp_path / "o.csv")
    assert command[:2] == [sys.executable, "novelsum.py"]
    assert command[command.index("--gpu_id") + 1] == "0"
    case = GOLDEN / "novelsum_custom_grid"
    assert command[command.index("--dense_ref_dir") + 1] == str(case / "reference")
    assert command[command.index("--multi_datasets_dir") + 1] == str(case / "targets")
    assert command[command.index("--output_csv") + 1] == str(tmp_path / "o.csv")
    assert golden_novelsum_command("novelsum_custom_grid", "o.csv", 3)[-1] == "3"


def test_golden_novelselect_command_asks_for_the_gpu_and_shows_notices(tmp_path):
    command = golden_novelselect_command(RUNS[0], tmp_path)
    assert command[:2] == [sys.executable, "novelselect.py"]
    assert command[-2:] == ["--gpu_id", "0"]
    assert "--quiet" not in command
    assert command[command.index("--k") + 1] == str(RUNS[0]["k"])


def test_largest_relative_error_compares_every_value():
    expected = {"a": {"Dataset Name": "a", (5, 0.0, 1.0): "2.0"}}
    ours = {"a": {"Dataset Name": "a", (5, 0.0, 1.0): "2.002"}}
    assert largest_relative_error(ours, expected) == pytest.approx(1e-3)
    assert parse_key("neighbor_5_density_0.0_distance_1") == parse_key(
        "neighbor_5_density_0_distance_1.0"), "columns compared by their numbers"
    with pytest.raises(AssertionError, match="datasets"):
        largest_relative_error({}, expected)
    with pytest.raises(AssertionError, match="columns differ"):
        largest_relative_error({"a": {"Dataset Name": "a", (5, 0.0, 2.0): "2.0"}}, expected)


def test_kernel_problem_names_a_fallback_or_a_missing_torch_notice():
    notice = "the fused Triton kernel is not used (no Triton); using the slower torch kernel"
    assert kernel_problem("picked 60 of 500 samples on cuda:0", "triton") is None
    assert kernel_problem(f"loading\n{notice}\npicked", "triton") == notice
    torch_notice = "the fused Triton kernel is not used (NOVELSELECT_GPU_KERNEL=torch); ..."
    assert kernel_problem(torch_notice, "torch") is None
    assert "no notice" in kernel_problem("picked 60 of 500 samples", "torch")


def test_every_gpu_test_here_is_marked_and_skips_saying_no_cuda(request):
    """The marks the GPU tests carry: ``gpu`` and, here without CUDA, a skip naming it."""
    for test in (test_novelsum_script_on_gpu_matches_golden_to_relative_1e6,
                 test_novelselect_script_on_gpu_reproduces_golden_picks):
        names = [mark.name for mark in test.pytestmark]
        assert "gpu" in names and "skipif" in names
        skip = next(mark for mark in test.pytestmark if mark.name == "skipif")
        assert skip.kwargs["reason"].startswith("no CUDA device")
        assert skip.args == (not cuda_available(),)
