"""The scripts under torchrun on the CPU (gloo): 1, 2 and 3 ranks write what one process
writes, on the golden cases and on uneven splits; failures are one line from rank 0 and stop
every rank; Ctrl-C stops every rank and keeps the last checkpoint only.

Each torchrun start costs a few seconds (every rank imports torch), so the checks that need
only the library run together in one start per rank count (``tests/rank_checks.py``).
"""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import GOLDEN, REPO, clustered_vectors, write_json_shards

from utils.density.dedup import (
    DistinctPlan,
    DistinctQueries,
    digest_keys,
    row_digests,
    unique_rows,
)
from utils.density.factor import DensityReference
from utils.errors import InputError
from utils.io.hashing import sha256_of_bytes
from utils.io.records import vector_inputs
from utils.io.vectors import load_vector_block, load_vectors
from utils.runtime.distributed import SINGLE, Ranks, owner_of, row_split

SELECT = GOLDEN / "novelselect"


def torchrun(ranks, script, *args, timeout=240, **popen):
    """Run ``script`` under torchrun with ``ranks`` CPU processes; the completed process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(ranks), str(REPO / script), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **popen.pop("env", {})}
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=timeout, **popen)


@pytest.mark.slow
def test_a_failure_that_is_not_bad_input_is_one_line_and_every_rank_stops(tmp_path):
    """Rank 1's kNN search fails (a RuntimeError, as when memory runs out): one Error line naming
    the rank, no traceback from any rank, and every rank gone well within 60 s."""
    select = GOLDEN / "novelselect"
    started = time.monotonic()
    result = torchrun(2, "tests/fault_rank.py", REPO / "novelselect.py", "--text_dir",
                      select / "texts", "--figure_dir", select / "embeddings", "--output_dir",
                      tmp_path / "out", "--k", "20", "--gpu_id", "-1", timeout=120)
    assert time.monotonic() - started < 60
    assert result.returncode != 0
    assert error_lines(result.stderr) == [
        "Error: rank 1: RuntimeError: Error in the kNN search: failed to allocate 8 GB "
        "(simulated)"], result.stderr[-3000:]
    assert f'File "{REPO}' not in result.stderr  # no frame of ours: torchrun's report only
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_a_failure_is_told_by_its_type_and_debug_adds_the_traceback(tmp_path):
    """An error whose text reads like the backend's ("ProcessGroupGloo ... Connection closed by
    peer"), raised by our own code and not by a collective, is reported as what it is; the
    other rank, whose collective then breaks, stays silent; --debug adds the traceback."""
    select = GOLDEN / "novelselect"
    text = "ProcessGroupGloo: Connection closed by peer (simulated, not from a collective)"
    result = torchrun(2, "tests/fault_rank.py", REPO / "novelselect.py", "--text_dir",
                      select / "texts", "--figure_dir", select / "embeddings", "--output_dir",
                      tmp_path / "out", "--k", "20", "--gpu_id", "-1", "--debug", timeout=120,
                      env={"FAULT_MESSAGE": text})
    assert result.returncode != 0
    assert error_lines(result.stderr) == [f"Error: rank 1: RuntimeError: {text}"], \
        result.stderr[-3000:]
    line = result.stderr.index(f"Error: rank 1: RuntimeError: {text}")
    assert result.stderr.index("rank 1: Traceback (most recent call last):") > line
    assert f'File "{REPO / "utils"}' in result.stderr  # the frames of ours


def one_process(script, *args):
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=240)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


# Pure pieces, in one process.

@pytest.mark.parametrize("n, size", [(10, 3), (2, 3), (0, 2), (7, 1), (9, 9)])
def test_row_split_is_contiguous_balanced_and_owned(n, size):
    blocks = row_split(n, size)
    assert len(blocks) == size and blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    sizes = [stop - start for start, stop in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    for index in range(n):
        start, stop = blocks[owner_of(index, blocks)]
        assert start <= index < stop


def test_single_process_collectives_are_the_identity():
    array = np.arange(6.0).reshape(3, 2)
    assert SINGLE.gather_arrays(array) is not None
    np.testing.assert_array_equal(SINGLE.gather_arrays(array), array)
    assert SINGLE.gather_objects({"a": 1}) == [{"a": 1}]
    assert SINGLE.block(5) == (0, 5) and SINGLE.describe() == "1 process"
    with pytest.raises(InputError, match="bad row"):
        with SINGLE.phase():
            raise InputError("bad row")
    assert Ranks(1, 3, grouped=True).describe() == "3 ranks"


def test_the_distinct_plan_lists_queries_as_one_process_does():
    """Members by reference row, then outsiders by first occurrence; duplicates share."""
    reference = load_vectors(GOLDEN / "novelsum_default_grid" / "reference").vectors.copy()
    reference[9] = reference[300]  # a duplicate of the reference
    rng = np.random.default_rng(4)
    outsiders = rng.normal(size=(6, reference.shape[1])).astype(np.float32)
    queries = np.concatenate([reference[[300, 5, 9, 5]], outsiders, outsiders[[2, 0]],
                              reference[[599, 0]]])
    rows, lookup = unique_rows(reference)
    single = DistinctQueries(queries, rows, lookup)
    plan = DistinctPlan(digest_keys(row_digests(reference)), digest_keys(row_digests(queries)))
    assert len(plan) == len(single)
    np.testing.assert_array_equal(plan.which, single.which)
    is_member, where = plan.entries(0, len(plan))
    distinct_rows, _self = single.rows(0, len(single))
    got = np.where(is_member[:, None], reference[np.where(is_member, where, 0)],
                   queries[np.where(is_member, 0, where)])
    np.testing.assert_array_equal(got, distinct_rows)


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_rank_blocks_stack_to_the_whole_dataset_with_every_shard_hashed_once(tmp_path, size):
    vectors = clustered_vectors(50, 6, seed=2)
    folder = write_json_shards(tmp_path / "emb", vectors, [20, 0, 3, 27])
    np.save(folder / "4.npy", clustered_vectors(5, 6, seed=3))
    whole = load_vectors(folder)
    blocks = [load_vector_block(folder, lambda n, r=r: row_split(n, size)[r],
                                shard_digest=sha256_of_bytes) for r in range(size)]
    np.testing.assert_array_equal(np.concatenate([b.vectors for b in blocks]), whole.vectors)
    assert [b.start for b in blocks] == [start for start, _stop in row_split(55, size)]
    hashed = [i for b in blocks for i in b.shard_digests]
    assert sorted(hashed) == list(range(5))  # every shard once, the empty one included
    merged = blocks[0]
    merged.shard_digests = {i: h for b in blocks for i, h in b.shard_digests.items()}
    assert vector_inputs(merged) == vector_inputs(whole)


def test_a_rank_block_names_a_bad_row_by_its_global_index(tmp_path):
    vectors = clustered_vectors(30, 4, seed=5)
    vectors[25] = np.nan
    folder = write_json_shards(tmp_path / "emb", vectors, [20, 10])
    with pytest.raises(InputError) as whole:
        load_vectors(folder)
    with pytest.raises(InputError) as block:
        load_vector_block(folder, lambda n: (15, 30))
    assert str(block.value) == str(whole.value) and "global row 25" in str(block.value)
    assert len(load_vector_block(folder, lambda n: (0, 15)).vectors) == 15  # not its rows


# Under torchrun.

@functools.cache
def rank_checks(ranks):
    """The results of ``tests/rank_checks.py`` on ``ranks`` CPU ranks: one torchrun start
    serves every test that reads them."""
    result = torchrun(ranks, "tests/rank_checks.py")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("ranks", [1, 2, 3])
@pytest.mark.slow
def test_library_checks_on_several_ranks(ranks):
    """Golden picks through the API; every prefix of a golden run resumes to its picks on the
    CPU engine's numba and numpy kernels and the torch engine; uneven splits (a rank with one
    candidate, with none, whose rows are all picked; duplicates across ranks) pick as one
    engine; the sharded kNN gives one
    process's mean distances bit for bit (tests/rank_checks.py)."""
    checks = dict(rank_checks(ranks))
    checks.pop("triton_golden")  # its own test, below
    assert checks == {"golden_selections": [True, True, True], "prefix_failures_numba": [],
                      "prefix_failures_numpy": [], "prefix_failures_torch": [],
                      "uneven": [True] * 15,
                      "density_bitwise": True, "exact_ties_failures": [],
                      "exact_ties_oracle_failures": []}


@pytest.mark.parametrize("ranks", [1, 2, 3])
@pytest.mark.slow
def test_the_sharded_triton_engine_gives_the_golden_picks(ranks):
    """In Triton's interpreter on the CPU (tests/rank_checks.py); skipped without Triton, as
    every Triton test is (README: the CPU build of torch does not bring it)."""
    triton = rank_checks(ranks)["triton_golden"]
    if triton is None:
        pytest.skip("the sharded Triton engine needs Triton: python -m pip install triton")
    assert triton is True


def selection_args(out, k=60, *extra):
    return ["--text_dir", SELECT / "texts", "--figure_dir", SELECT / "embeddings",
            "--output_dir", out, "--k", k, "--gpu_id", "-1", *extra]


def select_in_one_process_and_on_ranks(tmp_path, ranks, k, extra):
    """novelselect.py in one process (into ``one``) and on ``ranks`` CPU ranks (``many``): both
    succeed and write the same picked items, indices and pick log, byte for byte. Returns the
    torchrun process."""
    single = one_process("novelselect.py", *selection_args(tmp_path / "one", k, *extra))
    assert single.returncode == 0, single.stderr
    split = torchrun(ranks, "novelselect.py", *selection_args(tmp_path / "many", k, *extra))
    assert split.returncode == 0, split.stderr[-3000:]
    stem = f"novelselect_{k}_dense_0.5_dist_1.0"
    for name in (f"{stem}.json", f"{stem}_indices.json", f"{stem}_picks.csv"):
        assert (tmp_path / "many" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    return split


@pytest.mark.parametrize("ranks", [1, 2, 3])
@pytest.mark.slow
def test_novelselect_writes_what_one_process_writes(tmp_path, ranks):
    """Quality scores, a separate density reference and a resumed start: the same picked
    items, indices and pick log, byte for byte; the record names the ranks and the same
    shards and hashes."""
    rng = np.random.default_rng(1)
    (tmp_path / "quality.json").write_text(json.dumps(rng.uniform(0.2, 1.0, 500).tolist()))
    (tmp_path / "start.json").write_text(json.dumps([17, 402, 5]))
    reference = write_json_shards(tmp_path / "ref", clustered_vectors(300, 16, seed=8),
                                  [100, 200])
    extra = ["--quality_scores", tmp_path / "quality.json", "--dense_ref_dir", reference,
             "--resume_from", tmp_path / "start.json", "--neighbors", "7"]
    split = select_in_one_process_and_on_ranks(tmp_path, ranks, 60, extra)
    stem = "novelselect_60_dense_0.5_dist_1.0"
    one_record = json.loads((tmp_path / "one" / f"{stem}_run.json").read_text())
    record = json.loads((tmp_path / "many" / f"{stem}_run.json").read_text())
    assert record["ranks"] == ranks and one_record["ranks"] == 1
    assert record["inputs"] == one_record["inputs"]
    assert f"on {ranks} rank{'s' if ranks > 1 else ''} on the CPU" in split.stdout
    assert split.stdout.count("picked 60 of 500") == 1  # rank 0 alone reports


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.slow
def test_a_given_set_gives_what_one_process_gives(tmp_path, ranks):
    """--given_dir (docs/method.md section 10) with rows the pool holds too, quality scores, a
    checkpoint, a resumed start and a separate density reference: the same picks, items and
    pick log byte for byte; novelsum beside it: the same table and per-sample table."""
    pool = load_vectors(SELECT / "embeddings").vectors
    given = clustered_vectors(45, pool.shape[1], n_clusters=3, seed=9)
    given[[4, 40]] = pool[[17, 402]]
    given_dir = write_json_shards(tmp_path / "given", given, [20, 25])
    (tmp_path / "quality.json").write_text(json.dumps(
        np.random.default_rng(2).uniform(0.2, 1.0, 500).tolist()))
    (tmp_path / "start.json").write_text(json.dumps([17, 233, 5]))
    reference = write_json_shards(tmp_path / "ref", clustered_vectors(300, 16, seed=8),
                                  [100, 200])
    extra = ["--given_dir", given_dir, "--quality_scores", tmp_path / "quality.json",
             "--checkpoint_every", "9", "--resume_from", tmp_path / "start.json",
             "--dense_ref_dir", reference]
    split = select_in_one_process_and_on_ranks(tmp_path, ranks, 30, extra)
    assert "beside the 45 given" in split.stdout

    case = GOLDEN / "novelsum_default_grid"
    given = load_vectors(case / "reference").vectors[::7].copy()
    given_dir = write_json_shards(tmp_path / "given", given, [30, len(given) - 30])
    args = ["--multi_datasets_dir", case / "targets", "--dense_ref_dir", case / "reference",
            "--given_dir", given_dir, "--gpu_id", "-1"]
    split = torchrun(ranks, "novelsum.py", *args, "--output_csv", tmp_path / "many.csv",
                     "--per_sample_csv", tmp_path / "many_ps.csv")
    assert split.returncode == 0, split.stderr[-3000:]
    single = one_process("novelsum.py", *args, "--output_csv", tmp_path / "one.csv",
                         "--per_sample_csv", tmp_path / "one_ps.csv")
    assert single.returncode == 0, single.stderr
    many, one = pd.read_csv(tmp_path / "many.csv"), pd.read_csv(tmp_path / "one.csv")
    assert many["Dataset Name"].tolist()[0] == "given"
    pd.testing.assert_frame_equal(many, one, rtol=1e-9)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "many_ps.csv"),
                                  pd.read_csv(tmp_path / "one_ps.csv"), rtol=1e-9)


@pytest.mark.parametrize("case, ranks", [("novelsum_default_grid", 1),
                                         ("novelsum_default_grid", 2),
                                         ("novelsum_default_grid", 3),
                                         ("novelsum_custom_grid", 3)])
@pytest.mark.slow
def test_novelsum_writes_what_one_process_writes(tmp_path, case, ranks):
    """The golden values (1e-6) and one process's values and per-sample table (1e-9)."""
    folder = GOLDEN / case
    command = (folder / "command.txt").read_text().split()[1:]
    args = []
    for token in command:
        path = folder / token
        args.append(path if path.exists() else token)
    args[args.index("--output_csv") + 1] = tmp_path / "many.csv"
    args[args.index("--gpu_id") + 1] = "-1"
    split = torchrun(ranks, "novelsum.py", *args, "--per_sample_csv", tmp_path / "many_ps.csv")
    assert split.returncode == 0, split.stderr[-3000:]
    args[args.index("--output_csv") + 1] = tmp_path / "one.csv"
    single = one_process("novelsum.py", *args, "--per_sample_csv", tmp_path / "one_ps.csv")
    assert single.returncode == 0, single.stderr
    expected = pd.read_csv(folder / "expected.csv").set_index("Dataset Name")
    many = pd.read_csv(tmp_path / "many.csv").set_index("Dataset Name")
    one = pd.read_csv(tmp_path / "one.csv").set_index("Dataset Name")
    expected = expected.loc[many.index]  # the reference wrote its rows in another order
    assert list(many.columns) == list(expected.columns)
    assert list(many.index) == list(one.index)
    np.testing.assert_allclose(many, expected, rtol=1e-6)
    np.testing.assert_allclose(many, one, rtol=1e-9)
    many_ps, one_ps = pd.read_csv(tmp_path / "many_ps.csv"), pd.read_csv(tmp_path / "one_ps.csv")
    assert list(many_ps.columns) == list(one_ps.columns)
    numeric = many_ps.select_dtypes("number").columns
    np.testing.assert_allclose(many_ps[numeric], one_ps[numeric], rtol=1e-9)
    assert (many_ps["dataset"] == one_ps["dataset"]).all()
    assert json.loads((tmp_path / "many_run.json").read_text())["ranks"] == ranks


@pytest.mark.slow
def test_a_bad_shard_on_one_rank_is_one_line_and_every_rank_stops(tmp_path):
    """The bad row sits in the last rank's block: that rank finds it, all agree, rank 0 says
    it once as one process would, every rank exits non-zero, nothing is written."""
    vectors = clustered_vectors(90, 8, seed=6)
    vectors[80] = np.nan
    embeddings = write_json_shards(tmp_path / "emb", vectors, [45, 45])
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(2):
        (texts / f"{i}.json").write_text(json.dumps([f"s{j}" for j in range(45)]))
    args = ["--text_dir", texts, "--figure_dir", embeddings, "--output_dir", tmp_path / "out",
            "--k", 10, "--gpu_id", "-1"]
    single = one_process("novelselect.py", *args)
    split = torchrun(3, "novelselect.py", *args)
    assert single.returncode == 1 and split.returncode != 0
    assert error_lines(split.stderr) == error_lines(single.stderr)
    assert len(error_lines(split.stderr)) == 1 and "global row 80" in split.stderr
    assert "]: Traceback" not in split.stderr  # no rank printed a traceback
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_options_one_process_refuses_are_refused_once(tmp_path):
    split = torchrun(2, "novelselect.py", *selection_args(tmp_path / "out", 10, "--method",
                                                         "kcenter"))
    assert split.returncode != 0  # torchrun exits 1 when a rank fails, whatever its status
    assert split.stderr.count("Error: --method kcenter runs in one process") == 1
    bad_k = torchrun(2, "novelselect.py", *selection_args(tmp_path / "out", 501))
    assert bad_k.returncode != 0
    assert error_lines(bad_k.stderr) == ["Error: --k 501: must be between 1 and the pool size "
                                         "(500)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_fault_every_rank_meets_outside_an_agreed_phase_is_printed_once(tmp_path):
    """--neighbors above the pool's distinct rows: each rank's density check refuses it on
    its own, and the first to say so speaks for all."""
    split = torchrun(2, "novelselect.py", *selection_args(tmp_path / "out", 10, "--neighbors",
                                                         "600"))
    assert split.returncode != 0
    assert error_lines(split.stderr) == [
        f"Error: --neighbors 600: must be at least 1 and below the number of distinct rows of "
        f"{SELECT / 'embeddings'} (500)"]
    assert "]: Traceback" not in split.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_and_keeps_the_checkpoint(tmp_path):
    """SIGINT to torchrun's process group (a terminal's Ctrl-C): every rank stops, only the
    checkpoint written by rank 0 is kept, and it resumes to the uninterrupted run's picks."""
    vectors = clustered_vectors(3000, 32, seed=13)
    embeddings = write_json_shards(tmp_path / "emb", vectors, [1500, 1500])
    (tmp_path / "texts").mkdir()
    for i in range(2):
        (tmp_path / "texts" / f"{i}.json").write_text(json.dumps([str(j) for j in range(1500)]))
    out = tmp_path / "out"
    checkpoint = out / "novelselect_2999_dense_0.5_dist_1.0_checkpoint.json"
    args = ["--text_dir", tmp_path / "texts", "--figure_dir", embeddings, "--output_dir", out,
            "--gpu_id", "-1"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(REPO / "novelselect.py"),
               *map(str, args + ["--k", 2999, "--checkpoint_every", 40])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=REPO, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 180
    while not checkpoint.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    _stdout, stderr = process.communicate(timeout=90)
    assert process.returncode != 0
    assert "]: Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == [  # nothing partial
        ".novelselect_2999_dense_0.5_dist_1.0_checkpoint.run.json", checkpoint.name]
    saved = json.loads(checkpoint.read_text())
    assert len(saved) >= 40 and len(saved) % 40 == 0
    k = len(saved) + 20
    resumed = torchrun(2, "novelselect.py", *args, "--k", k, "--resume_from", checkpoint)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    from utils.api import novelselect

    assert json.loads((out / f"novelselect_{k}_dense_0.5_dist_1.0_indices.json").read_text()) \
        == novelselect(vectors, k).picks


def test_density_reference_is_unchanged_for_one_process():
    """The single-process path builds no process group and no sharded reference."""
    reference = load_vectors(GOLDEN / "novelsum_default_grid" / "reference").vectors
    from utils.api import density_reference

    assert isinstance(density_reference(reference), DensityReference)


def test_too_few_gpus_for_the_node_s_ranks_are_refused_by_every_rank(monkeypatch):
    """Every local rank refuses alike (rank 0 prints it), not only the ranks left without a
    GPU; otherwise those would exit in silence and torchrun would stop rank 0 mid-sentence."""
    import utils.runtime.distributed as distributed

    monkeypatch.setattr(distributed, "cuda_device_count", lambda fork_safe=False: 2)
    assert [distributed.rank_device(None, r, local_size=2) for r in range(2)] == \
        ["cuda:0", "cuda:1"]
    assert distributed.rank_device(1, 0, local_size=1) == "cuda:1"
    for local_rank in range(3):
        with pytest.raises(InputError, match=r"^--gpu_id 0: 3 ranks on this node would use "
                                             r"GPUs 0 to 2 but it has 2; start at most 2 "):
            distributed.rank_device(None, local_rank, local_size=3)
    assert distributed.rank_device(-1, 2, local_size=3) == "cpu"
