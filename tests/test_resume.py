"""Resume and extend: a selection continued from given picks (--resume_from), checkpoints
(--checkpoint_every), and clean errors for bad resume files."""

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
from test_novelselect_cli import run_args

from utils.api import novelselect
from utils.selection.greedy import greedy_selection
from utils.density.reference import pool_density
from utils.cli.novelselect import main
from utils.errors import InputError
from utils.io.vectors import load_vectors
from utils.numerics.rows import unit_rows
from utils.selection.cpu import NumpyEngine
from utils.selection.engine_choice import select
from utils.selection.gpu import TorchEngine

SELECT = GOLDEN / "novelselect"
RUNS = json.loads((SELECT / "expected.json").read_text())
RUN_IDS = [f"k{r['k']}_a{r['distance_power']}" for r in RUNS]
ENGINES = {"numba": lambda u, r, k, a: NumpyEngine(u, r, k, a, kernels="numba"),
           "numpy": lambda u, r, k, a: NumpyEngine(u, r, k, a, kernels="numpy"),
           "torch-cpu": lambda u, r, k, a: TorchEngine(u, r, k, a, "cpu", block_mib=1 / 16)}


@pytest.fixture(scope="module")
def golden_vectors():
    return load_vectors(SELECT / "embeddings").vectors


def golden_quality(n):
    return np.random.default_rng(31).uniform(0.2, 1.0, n)


def three_hot_pool(seed, n=48, dim=10):
    """Binary vectors with three ones: distinct vectors whose values tie exactly in exact
    arithmetic, but not in float sums built in another order."""
    rng = np.random.default_rng(seed)
    pool = np.zeros((n, dim), dtype=np.float32)
    for row in pool:
        row[rng.choice(dim, 3, replace=False)] = 1.0
    return pool


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("with_given", [False, True])
def test_a_resumed_pick_log_has_the_uninterrupted_novelty(engine, with_given):
    """One formula for a pick's novelty (docs/method.md section 6): the novelty logged for
    each given pick of a resumed run equals the one the uninterrupted run logged when it made
    the pick, within 1e-9 (the sums' order), beside a given set or not."""
    vectors = clustered_vectors(700, 24, n_clusters=6, seed=35)
    pool, given = vectors[:640], (unit_rows(vectors[640:]), np.full(60, 1.25, np.float32))
    unit, rho = unit_rows(pool), pool_density(pool, 10, 0.5)
    k, first = (40, []) if with_given else (40, 11)
    total = k + (len(given[0]) if with_given else 0)

    def logged(start):
        novelty = []
        picks = select(unit, rho, k, 1.0, start, engine=ENGINES[engine](unit, rho, total, 1.0),
                       on_pick=lambda _i, value: novelty.append(value),
                       given=given if with_given else None)
        return picks, np.asarray(novelty)

    picks, novelty = logged(first)
    for t in (2, 23, 40):
        resumed_picks, resumed_novelty = logged(picks[:t])
        assert resumed_picks == picks
        np.testing.assert_allclose(resumed_novelty, novelty, rtol=1e-9)


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("seed", range(6))
def test_exact_ties_between_distinct_vectors_resume_to_the_same_picks(engine, seed):
    """docs/method.md section 6: within a relative 2^-22 of the largest score, the lowest index
    wins, so a rebuilt (resumed) state picks what the incremental one picked."""
    pool = three_hot_pool(seed)
    unit, factors, k = unit_rows(pool), np.ones(len(pool), dtype=np.float32), 20
    full = select(unit, factors, k, 1.0, seed % len(pool), engine=ENGINES[engine](
        unit, factors, k, 1.0))
    for t in range(2, k):
        resumed = select(unit, factors, k, 1.0, full[:t], engine=ENGINES[engine](
            unit, factors, k, 1.0))
        assert resumed == full, (t, resumed, full)


@pytest.mark.parametrize("run", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("with_quality", [False, True])
@pytest.mark.slow
def test_every_prefix_resumes_to_the_same_picks_through_the_api(golden_vectors, run,
                                                                with_quality):
    args = (golden_vectors, run["k"], run["neighbors"], run["density_power"],
            run["distance_power"], run["seed"])
    quality = golden_quality(len(golden_vectors)) if with_quality else None
    full = novelselect(*args, quality=quality)
    if not with_quality:
        assert full.picks == run["indices"]
    for t in range(1, run["k"] + 1):
        resumed = novelselect(*args, quality=quality, resume_from=full.picks[:t])
        assert resumed.picks == full.picks, t
        assert np.isnan(resumed.novelty[0])  # the random first pick has none
        # the given picks' novelty: the same values as the run's, summed in another order
        np.testing.assert_allclose(resumed.novelty[1:], full.novelty[1:], rtol=1e-9)


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("run", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("with_quality", [False, True])
@pytest.mark.slow
def test_every_prefix_resumes_on_each_engine(golden_vectors, engine_name, run, with_quality):
    rho = pool_density(golden_vectors, run["neighbors"], run["density_power"])
    unit, k, alpha = unit_rows(golden_vectors), run["k"], run["distance_power"]
    quality = golden_quality(len(unit)) if with_quality else None
    picks = select(unit, rho, k, alpha, run["indices"][0], quality,
                   ENGINES[engine_name](unit, rho, k, alpha))
    if not with_quality:
        assert picks == run["indices"]
    for t in range(1, k + 1):
        assert select(unit, rho, k, alpha, picks[:t], quality,
                      ENGINES[engine_name](unit, rho, k, alpha)) == picks, t


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("with_quality", [False, True])
@pytest.mark.slow
def test_resume_on_a_clustered_pool_of_2000(engine_name, with_quality):
    vectors = clustered_vectors(2000, 48, n_clusters=8, seed=32)
    rho = pool_density(vectors, 10, 0.5)
    unit = unit_rows(vectors)
    quality = np.random.default_rng(33).uniform(0.2, 1.0, 2000) if with_quality else None
    engine = {"numba": lambda: NumpyEngine(unit, rho, 150, 1.0, kernels="numba"),
              "numpy": lambda: NumpyEngine(unit, rho, 150, 1.0, kernels="numpy"),
              # torch: 1 to 20 blocks
              "torch-cpu": lambda: TorchEngine(unit, rho, 150, 1.0, "cpu", block_mib=2)}
    picks = select(unit, rho, 150, 1.0, 17, quality, engine[engine_name]())
    for t in [9, 100, 149]:
        assert select(unit, rho, 150, 1.0, picks[:t], quality, engine[engine_name]()) == picks


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                    reason="a GPU machine checks the Triton engine on the device (test_gpu.py)")
@pytest.mark.parametrize("alpha", [1.0, 2.0])
@pytest.mark.slow
def test_resume_on_the_triton_engine_in_the_interpreter(alpha):
    pytest.importorskip("triton", reason="pip install triton")
    from utils.selection.gpu import TritonEngine

    vectors = clustered_vectors(30, 12, n_clusters=4, seed=34)
    rho = pool_density(vectors, 5, 0.5)
    unit = unit_rows(vectors)
    picks = select(unit, rho, 14, alpha, 3, engine=NumpyEngine(unit, rho, 14, alpha))
    for t in [2, 9]:
        engine = TritonEngine(unit, rho, 14, alpha, "cpu", block=4, block_mib=1 / 256)
        assert select(unit, rho, 14, alpha, picks[:t], engine=engine) == picks, t


@pytest.mark.parametrize("t", [1, 17, 59, 60])
def test_resume_from_a_file_on_the_command_line(runner, tmp_path, t):
    run = RUNS[0]
    start = tmp_path / "start.json"
    start.write_text(json.dumps(run["indices"][:t]))
    out = tmp_path / "out"
    result = runner.invoke(main, run_args(run, out) + ["--resume_from", str(start)])
    assert result.exit_code == 0, result.output
    stem = "novelselect_60_dense_0.5_dist_1.0"
    assert json.loads((out / f"{stem}_indices.json").read_text()) == run["indices"]
    log = pd.read_csv(out / f"{stem}_picks.csv")
    # every pick but the random first has its novelty, the given ones included
    assert log["novelty"].isna().tolist() == [True] + [False] * 59
    record = json.loads((out / f"{stem}_run.json").read_text())
    assert record["summary"]["resumed_from_picks"] == t
    assert record["parameters"]["resume_from"] == str(start)


def test_extend_an_earlier_run_to_a_larger_k(runner, tmp_path):
    """The 40-pick run's _indices.json, resumed to --k 60, gives the 60-pick run."""
    run = RUNS[0]
    result = runner.invoke(main, run_args({**run, "k": 40}, tmp_path / "short"))
    assert result.exit_code == 0, result.output
    short = tmp_path / "short" / "novelselect_40_dense_0.5_dist_1.0_indices.json"
    result = runner.invoke(main, run_args(run, tmp_path / "long") + ["--resume_from",
                                                                     str(short)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "long" / "novelselect_60_dense_0.5_dist_1.0_indices.json")
                      .read_text()) == run["indices"]


def test_checkpoints_are_written_and_removed_when_the_run_completes(runner, tmp_path):
    run, out = RUNS[0], tmp_path / "out"
    result = runner.invoke(main, run_args(run, out) + ["--checkpoint_every", "7"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "novelselect_60_dense_0.5_dist_1.0_indices.json").read_text()) \
        == run["indices"]
    assert not list(out.glob("*checkpoint*")) and not list(out.glob(".*"))


@pytest.mark.parametrize("content, message", [
    ("[1, 2", "start.json: not JSON (Expecting ',' delimiter: line 1 column 6 (char 5))"),
    ('{"indices": [1]}', "start.json: expected a list of pool indices (integers), not dict"),
    ("[1, 2.0]", "start.json: expected a list of pool indices (integers); item 1 is 2.0"),
    ('[1, "2"]', "start.json: expected a list of pool indices (integers); item 1 is '2'"),
    ("[true]", "start.json: expected a list of pool indices (integers); item 0 is True"),
    ("[3, 500]", "start.json: index 500 (item 1) is out of range for a pool of 500 samples"),
    ("[-1]", "start.json: index -1 (item 0) is out of range for a pool of 500 samples"),
    ("[4, 8, 15, 8]", "start.json: index 8 is given twice (items 1 and 3)"),
    (json.dumps(list(range(61))), "start.json: 61 indices, more than --k 60"),
    ("[]", "start.json: the list of indices is empty; give at least one"),
])
def test_bad_resume_files_are_one_line_errors(runner, tmp_path, content, message):
    start = tmp_path / "start.json"
    start.write_text(content)
    out = tmp_path / "out"
    result = runner.invoke(main, run_args(RUNS[0], out) + ["--resume_from", str(start),
                                                           "--checkpoint_every", "5"])
    assert result.exit_code == 1, result.output
    assert result.output == f"Error: {start.parent}/{message}\n"
    assert not out.exists()


def test_a_missing_resume_file_and_a_baseline_method(runner, tmp_path):
    result = runner.invoke(main, run_args(RUNS[0], tmp_path / "out") + [
        "--resume_from", str(tmp_path / "none.json")])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path}/none.json: cannot read (No such file or " \
                            f"directory)\n"
    result = runner.invoke(main, ["--text_dir", str(SELECT / "texts"), "--figure_dir",
                                  str(SELECT / "embeddings"), "--output_dir",
                                  str(tmp_path / "out"), "--method", "kcenter", "--k", "5",
                                  "--checkpoint_every", "2"])
    assert result.exit_code == 2
    assert "--checkpoint_every is not used by --method kcenter" in result.output


def test_api_refuses_bad_resume_lists():
    vectors = load_vectors(SELECT / "embeddings").vectors
    with pytest.raises(InputError, match=r"^resume_from: index 9 is given twice \(items 0 "
                                         r"and 1\)$"):
        novelselect(vectors, 10, resume_from=[9, 9])
    with pytest.raises(InputError, match=r"^resume_from: 3 indices, more than k=2$"):
        novelselect(vectors, 2, resume_from=np.array([1, 2, 3]))
    with pytest.raises(InputError, match=r"^my picks: 3 indices, more than k=2$"):
        greedy_selection(vectors, 2, 10, 0.5, 1.0, 42, resume_from=np.array([1, 2, 3]),
                         resume_source="my picks")


def pool_to_interrupt(tmp_path):
    """A 3,000-row pool (embeddings and texts) whose selection of 2,999 runs long enough to be
    interrupted: ``(vectors, embeddings folder, texts folder)``."""
    vectors = clustered_vectors(3000, 32, seed=13)
    embeddings = write_json_shards(tmp_path / "emb", vectors, [3000])
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "0.json").write_text(json.dumps([str(i) for i in range(3000)]))
    return vectors, embeddings, tmp_path / "texts"


def interrupt_after_a_checkpoint(command, checkpoint, env=None):
    """Start ``command``, send SIGINT once ``checkpoint`` exists, return its stderr."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, cwd=REPO, env=env)
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert process.poll() is None, "novelselect.py ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    return stderr


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint(tmp_path):
    """SIGINT after a checkpoint: exit 130, one line naming the checkpoint, no other output;
    resuming from the checkpoint gives the picks of an uninterrupted run."""
    vectors, embeddings, texts = pool_to_interrupt(tmp_path)
    out = tmp_path / "out"
    checkpoint = out / "novelselect_2999_dense_0.5_dist_1.0_checkpoint.json"
    stderr = interrupt_after_a_checkpoint(
        [sys.executable, str(REPO / "novelselect.py"), "--text_dir", str(texts),
         "--figure_dir", str(embeddings), "--output_dir", str(out), "--k", "2999",
         "--checkpoint_every", "40", "--quiet"], checkpoint)
    assert "Traceback" not in stderr
    saved = json.loads(checkpoint.read_text())
    assert len(saved) >= 40 and len(saved) % 40 == 0
    assert (f"holds the first {len(saved)}: run the same command again to continue from there "
            f"(or give --resume_from {checkpoint})") in stderr
    assert sorted(p.name for p in out.iterdir()) == [  # nothing else, no temp file
        ".novelselect_2999_dense_0.5_dist_1.0_checkpoint.run.json", checkpoint.name]
    k = len(saved) + 25
    uninterrupted = novelselect(vectors, k).picks
    assert saved == uninterrupted[:len(saved)]
    result = subprocess.run(
        [sys.executable, str(REPO / "novelselect.py"), "--text_dir", str(texts),
         "--figure_dir", str(embeddings), "--output_dir", str(out), "--k", str(k),
         "--resume_from", str(checkpoint), "--quiet"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / f"novelselect_{k}_dense_0.5_dist_1.0_indices.json")
                      .read_text()) == uninterrupted


@pytest.mark.slow
def test_the_same_command_again_resumes_without_being_told(tmp_path):
    """No --checkpoint_every: checkpoints come by time (every 60 s; 0.05 s here). A Ctrl-C'd
    run's command, run again as it was, resumes with a notice and picks what an uninterrupted
    run picks; another run's command is refused rather than let write over the checkpoint;
    --overwrite starts over."""
    vectors, embeddings, texts = pool_to_interrupt(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "novelselect.py"), "--text_dir", str(texts),
               "--figure_dir", str(embeddings), "--output_dir", str(out), "--k", "2999"]
    checkpoint = out / "novelselect_2999_dense_0.5_dist_1.0_checkpoint.json"
    env = {**os.environ, "NOVELSUM_CHECKPOINT_INTERVAL_S": "0.05"}
    stderr = interrupt_after_a_checkpoint(command + ["--quiet"], checkpoint, env)
    saved = json.loads(checkpoint.read_text())
    assert "run the same command again to continue from there" in stderr
    other = subprocess.run(command + ["--seed", "7"], capture_output=True, text=True, cwd=REPO)
    assert other.returncode == 1
    assert other.stderr == (f"Error: {checkpoint}: the checkpoint of another run (seed 42 there, "
                            f"7 now); continue it with --resume_from {checkpoint} and that "
                            f"run's options, give --overwrite to start over, or write "
                            f"elsewhere\n")
    assert json.loads(checkpoint.read_text()) == saved
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0, again.stderr
    assert (f"resuming from {checkpoint}: its {len(saved)} picks of 2999 were made by this same "
            f"command") in again.stderr
    assert json.loads((out / "novelselect_2999_dense_0.5_dist_1.0_indices.json").read_text()) \
        == novelselect(vectors, 2999).picks
    assert not list(out.glob("*checkpoint*")) and not list(out.glob(".*checkpoint*"))


def test_a_checkpoint_without_its_record_is_not_resumed_silently(runner, tmp_path):
    """A bare list of picks where this run's checkpoint goes (written by hand, or by an older
    version) is refused, not resumed from or written over; --overwrite starts over."""
    run = json.loads((GOLDEN / "novelselect" / "expected.json").read_text())[0]
    out = tmp_path / "out"
    out.mkdir()
    stem = f"novelselect_{run['k']}_dense_{float(run['density_power'])}_dist_" \
           f"{float(run['distance_power'])}"
    checkpoint = out / f"{stem}_checkpoint.json"
    checkpoint.write_text(json.dumps([0, 1, 2]))
    result = runner.invoke(main, run_args(run, out))
    assert result.exit_code == 1
    assert result.output == (f"Error: {checkpoint}: the checkpoint of another run (no record of "
                             f"its run); continue it with --resume_from {checkpoint} and that "
                             f"run's options, give --overwrite to start over, or write "
                             f"elsewhere\n")
    start = tmp_path / "start.json"
    start.write_text(json.dumps(run["indices"][:5]))
    result = runner.invoke(main, run_args(run, out) + ["--resume_from", str(start)])
    assert result.exit_code == 1 and "the checkpoint of another run" in result.output
    assert json.loads(checkpoint.read_text()) == [0, 1, 2]  # not resumed over, not removed
    result = runner.invoke(main, run_args(run, out) + ["--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / f"{stem}_indices.json").read_text()) == run["indices"]
    assert not checkpoint.exists()
