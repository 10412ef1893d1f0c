"""embedding.py under torchrun: whole shards shared out between ranks, the same files
as one process, one error line, resume. Real runs on the CPU (gloo) with all-MiniLM-L6-v2."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO
from test_embedding import MINILM, QUESTIONS  # the real model; skips with the reason there

from utils.cli.embed import main as embed_main
from utils.errors import InputError
from utils.pipelines.embedding import balanced_owners, check_one_device_kind, pin_rank_gpu

SIZES = [7, 1, 4, 2, 5]  # texts per shard: uneven, so that balancing shows
# float32: bfloat16 products may round apart with the thread count (each rank has one thread)


@pytest.mark.parametrize("sizes, n_ranks, owners", [
    ([7, 1, 4, 2, 5], 2, [0, 0, 1, 0, 1]),  # loads 10 and 9
    ([7, 1, 4, 2, 5], 3, [0, 1, 2, 2, 1]),  # loads 7, 6 and 6
    ([3, 3, 3, 3], 2, [0, 1, 0, 1]),  # equal sizes: the earlier shard first, the lower rank
    ([2, 1], 4, [0, 1]),  # more ranks than shards: ranks 2 and 3 get none
    ([0, 0, 5], 2, [1, 1, 0]),  # empty shards still have an owner
    ([], 3, []),
    ([4, 9], 1, [0, 0]),
])
def test_balanced_owners_by_hand(sizes, n_ranks, owners):
    assert balanced_owners(sizes, n_ranks) == owners


def test_balanced_owners_stay_within_one_shard_of_even():
    rng = np.random.default_rng(7)
    for _ in range(200):
        sizes = rng.integers(0, 1000, rng.integers(1, 40)).tolist()
        n_ranks = int(rng.integers(1, 9))
        owners = balanced_owners(sizes, n_ranks)
        loads = np.bincount(owners, weights=sizes, minlength=n_ranks)
        assert loads.sum() == sum(sizes) and all(0 <= o < n_ranks for o in owners)
        assert loads.max() - loads.min() <= max(sizes)  # greedy, largest first


@pytest.mark.parametrize("environ, gpu_id, expected, visible", [
    ({}, 2, (0, False), "2"),  # one process: pin_visible_gpu as ever
    ({}, None, (None, False), None),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, None, (None, True), "1"),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "4,5,6,7"},
     2, (2, True), "7"),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "4,5"},
     1, (1, False), "4,5"),  # not in the list: left for start_ranks to refuse
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, -1, (-1, False), None),
])
def test_each_rank_pins_its_own_gpu_for_vllm(environ, gpu_id, expected, visible):
    assert pin_rank_gpu(gpu_id, environ) == expected
    assert environ.get("CUDA_VISIBLE_DEVICES") == visible


def test_a_pinned_rank_takes_the_first_gpu_it_sees(monkeypatch):
    import utils.runtime.distributed as distributed

    monkeypatch.setattr(distributed, "cuda_device_count", lambda fork_safe=False: 2)
    assert distributed.rank_device(None, 1) == "cuda:1"
    assert distributed.rank_device(None, 1, pinned=True) == "cuda:0"
    assert distributed.rank_device(-1, 1, pinned=True) == "cpu"


def test_ranks_on_gpus_and_the_cpu_at_once_are_refused():
    check_one_device_kind(["cpu", "cpu"], -1)
    check_one_device_kind(["cuda:0", "cuda:0"], None)
    with pytest.raises(InputError, match=r"--gpu_id 0: rank\(s\) 1, 2 found no GPU of their "
                                         r"own"):
        check_one_device_kind(["cuda:0", "cpu", "cpu"], None)


def write_shards(folder, sizes):
    folder.mkdir(parents=True)
    for shard, size in enumerate(sizes):
        texts = [f"{QUESTIONS[i % len(QUESTIONS)]} (shard {shard}, item {i})"
                 for i in range(size)]
        (folder / f"{shard}.json").write_text(json.dumps(texts))
    return folder


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The input shards and what one process (no torchrun) writes for them."""
    root = tmp_path_factory.mktemp("one_process")
    texts = write_shards(root / "text", SIZES)
    result = CliRunner().invoke(embed_main, ["--input_dir", str(texts), "--model_path", MINILM,
                                             "--output_dir", str(root / "out"), "--gpu_id", "-1",
                                             "--output_format", "npy", "--dtype", "float32",
                                             "--quiet"])
    assert result.exit_code == 0, result.output
    return texts, root / "out"


def torchrun(n_ranks, input_dir, output_dir, *extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NOVELSUM_RANK_TIMEOUT_S": "120"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         str(n_ranks), "embedding.py", "--input_dir", str(input_dir), "--model_path", MINILM,
         "--output_dir", str(output_dir), "--gpu_id", "-1", "--output_format", "npy", "--dtype",
         "float32", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def shard_names(folder):
    return sorted(p.name for p in folder.iterdir())


EMBEDDING_COSINE_TOLERANCE = 1e-6  # a model's output varies with the thread count (torchrun
# gives each rank OMP_NUM_THREADS=1) and the CPU's kernels: never compared bitwise


def assert_same_shards(folder, reference):
    """The same file names and shapes, and the same vectors within a cosine tolerance: each shard
    is embedded alone, in the same batches, whichever rank has it."""
    assert shard_names(folder) == shard_names(reference)  # the run record included
    for shard in range(len(SIZES)):
        ours, theirs = np.load(folder / f"{shard}.npy"), np.load(reference / f"{shard}.npy")
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        if len(ours):
            cosines = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1)
                                                * np.linalg.norm(theirs, axis=1))
            assert cosines.min() >= 1 - EMBEDDING_COSINE_TOLERANCE, (shard, cosines.min())


def error_lines(result):
    """The ``Error:`` lines of a failed run; no traceback from our code on any rank (the one
    torchrun prints about its failed workers is its own)."""
    assert result.returncode != 0
    assert 'File "embedding.py"' not in result.stderr and str(REPO) not in result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


@pytest.mark.slow
def test_two_ranks_write_the_files_one_process_writes(tmp_path, one_process):
    texts, reference = one_process
    result = torchrun(2, texts, tmp_path / "out", "--quiet")
    assert result.returncode == 0, result.stderr
    assert_same_shards(tmp_path / "out", reference)
    assert result.stdout.count("\n") == 1  # one summary line, from rank 0
    assert (f"embedded {sum(SIZES)} texts in {len(SIZES)} shard(s) with sentence-transformers "
            f"(float32) on 2 ranks on the CPU: ") in result.stdout
    record = json.loads((tmp_path / "out" / ".embedding_run.json").read_text())
    assert record["ranks"] == 2 and record["summary"]["texts"] == sum(SIZES)
    assert record["outputs"] == [f"{shard}.npy" for shard in range(len(SIZES))]
    assert [(share["shards"], share["texts"]) for share in record["summary"]["per_rank"]] == [
        (3, 10), (2, 9)]  # balanced_owners(SIZES, 2)


@pytest.mark.slow
def test_one_rank_under_torchrun_writes_the_files_one_process_writes(tmp_path, one_process):
    texts, reference = one_process
    result = torchrun(1, texts, tmp_path / "out", "--quiet")
    assert result.returncode == 0, result.stderr
    assert_same_shards(tmp_path / "out", reference)
    assert "on 1 rank on the CPU: " in result.stdout


@pytest.mark.slow
def test_three_ranks_resume_with_more_ranks_than_shards_left(tmp_path, one_process):
    """Three ranks finish what one process began: two shards are left, so one rank has none;
    then nothing is left to do."""
    texts, reference = one_process
    shutil.copytree(reference, tmp_path / "out")
    (tmp_path / "out" / "1.npy").unlink()
    (tmp_path / "out" / "4.npy").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.npy")}
    result = torchrun(3, texts, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("skipping 3 shard(s) already embedded") == 1
    assert result.stdout.startswith(f"embedded {SIZES[1] + SIZES[4]} texts in 2 shard(s) with "
                                    f"sentence-transformers (float32) on 3 ranks on the "
                                    f"CPU: ")
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.npy")
            if p.name in kept} == kept
    assert_same_shards(tmp_path / "out", reference)
    record = json.loads((tmp_path / "out" / ".embedding_run.json").read_text())
    assert record["ranks"] == 3 and record["outputs"] == ["1.npy", "4.npy"]
    assert [share["shards"] for share in record["summary"]["per_rank"]] == [1, 1, 0]
    result = torchrun(2, texts, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"nothing to do: all {len(SIZES)} shard(s) are embedded\n"


@pytest.mark.slow
def test_a_bad_shard_is_one_error_line_and_every_rank_stops(tmp_path):
    texts = write_shards(tmp_path / "text", SIZES)
    (texts / "3.json").write_text(json.dumps(["fine", 42]))
    result = torchrun(2, texts, tmp_path / "out")
    assert error_lines(result) == [
        f"Error: {texts / '3.json'}: item 1: is neither text nor a conversation (found 42)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_shard_one_rank_cannot_write_stops_the_others_after_their_shards(tmp_path):
    """Rank 1's shard cannot be written, as a file stands where its folder should be: rank 0
    writes its own, then both stop with rank 1's error, printed once."""
    texts = write_shards(tmp_path / "text", [1])
    write_shards(texts / "sub", [1])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_text("in the way")
    result = torchrun(2, texts, tmp_path / "out", "--quiet")
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {tmp_path / 'out' / 'sub' / '0.npy'}: cannot write")
    assert shard_names(tmp_path / "out") == [".0.npy.source.json", "0.npy", "sub"]  # no record
