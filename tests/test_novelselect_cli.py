"""novelselect.py end to end: golden picks, outputs, and clean errors with nothing partial."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import GOLDEN, REPO, clustered_vectors, write_json_shards

from utils.cli.novelselect import main
from utils.pipelines.novelselect import NovelselectOptions

SELECT = GOLDEN / "novelselect"


def run_args(run, output_dir):
    return ["--text_dir", str(SELECT / "texts"), "--figure_dir", str(SELECT / "embeddings"),
            "--output_dir", str(output_dir), "--k", str(run["k"]), "--neighbors",
            str(run["neighbors"]), "--density_power", str(run["density_power"]),
            "--distance_power", str(run["distance_power"]), "--seed", str(run["seed"]),
            "--quiet"]


@pytest.mark.parametrize("run", json.loads((SELECT / "expected.json").read_text()),
                         ids=lambda r: f"k{r['k']}_a{r['distance_power']}")
def test_golden_picks_and_output_files(runner, tmp_path, run):
    result = runner.invoke(main, run_args(run, tmp_path / "out"))
    assert result.exit_code == 0, result.output
    stem = f"novelselect_{run['k']}_dense_{float(run['density_power'])}" \
           f"_dist_{float(run['distance_power'])}"
    indices = json.loads((tmp_path / "out" / f"{stem}_indices.json").read_text())
    items = json.loads((tmp_path / "out" / f"{stem}.json").read_text())
    assert indices == run["indices"]
    assert items == [f"sample {i}" for i in indices]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{stem}.json", f"{stem}_indices.json", f"{stem}_picks.csv", f"{stem}_run.json"]


@pytest.fixture
def pool(tmp_path):
    """A 90-sample pool: conversations as items, uneven shards, .json and .npy embeddings."""
    vectors = clustered_vectors(90, 8, seed=11)
    texts, embeddings = tmp_path / "texts", tmp_path / "emb"
    texts.mkdir()
    sizes, start = [40, 7, 43], 0
    for i, size in enumerate(sizes):
        (texts / f"{i}.json").write_text(json.dumps(
            [[{"from": "user", "value": f"q{j}"}, {"from": "assistant", "value": f"a{j}"}]
             for j in range(start, start + size)]))
        start += size
    write_json_shards(embeddings, vectors[:47], [40, 7])
    np.save(embeddings / "2.npy", vectors[47:])
    return tmp_path, texts, embeddings


def test_conversations_alias_and_dense_ref_dir(runner, pool):
    folder, texts, embeddings = pool
    reference = write_json_shards(folder / "ref", clustered_vectors(200, 8, seed=12), [200])
    out = folder / "out"
    result = runner.invoke(main, ["--text_dir", str(texts), "--embedding_dir", str(embeddings),
                                  "--output_dir", str(out), "--k", "12", "--dense_ref_dir",
                                  str(reference), "--quiet"])
    assert result.exit_code == 0, result.output
    items = json.loads((out / "novelselect_12_dense_0.5_dist_1.0.json").read_text())
    indices = json.loads((out / "novelselect_12_dense_0.5_dist_1.0_indices.json").read_text())
    assert items == [[{"from": "user", "value": f"q{i}"},
                      {"from": "assistant", "value": f"a{i}"}] for i in indices]
    assert len(set(indices)) == 12


def test_quality_scores_from_json_and_npy_agree(runner, pool):
    folder, texts, embeddings = pool
    scores = np.random.default_rng(0).uniform(0, 1, 90)
    (folder / "q.json").write_text(json.dumps(scores.tolist()))
    np.save(folder / "q.npy", scores)
    picked = []
    for source in ["q.json", "q.npy"]:
        out = folder / source.replace(".", "_")
        result = runner.invoke(main, ["--text_dir", str(texts), "--figure_dir", str(embeddings),
                                      "--output_dir", str(out), "--k", "10", "--quality_scores",
                                      str(folder / source), "--quiet"])
        assert result.exit_code == 0, result.output
        picked.append(json.loads((out / "novelselect_10_dense_0.5_dist_1.0_indices.json")
                                 .read_text()))
    assert picked[0] == picked[1]


def bad_cases(folder, texts, embeddings):
    (folder / "short.json").write_text("[1, 2]")
    (folder / "neg.json").write_text(json.dumps([1.0] * 89 + [-1.0]))
    (folder / "a_file").write_text("x")
    (folder / "fake.npy").write_text("[1, 2]")
    (folder / "zeros.json").write_text(json.dumps([0] * 90))
    uneven = folder / "uneven"
    shutil.copytree(texts, uneven)
    (uneven / "1.json").write_text('["only one"]')
    renamed = folder / "renamed"
    shutil.copytree(texts, renamed)
    (renamed / "2.json").rename(renamed / "9.json")
    nan = folder / "nan_emb"
    shutil.copytree(embeddings, nan)
    (nan / "1.json").write_text("[[NaN" + ", 1.0" * 7 + "]]" )
    base = {"--text_dir": texts, "--figure_dir": embeddings, "--k": "5"}
    return [
        ({"--k": "0"}, "--k 0: must be between 1 and the pool size (90)"),
        ({"--k": "91"}, "--k 91: must be between 1 and the pool size (90)"),
        ({"--text_dir": uneven}, "1.json: 1 items but its embedding shard has 7 vectors"),
        ({"--text_dir": renamed}, "do not pair up by name (text only: 9; embeddings only: 2)"),
        ({"--quality_scores": folder / "short.json"}, "2 quality scores for a pool of 90"),
        ({"--quality_scores": folder / "neg.json"}, "score 89 is -1.0"),
        ({"--quality_scores": folder / "zeros.json"}, "every quality score is 0"),
        ({"--quality_scores": folder / "fake.npy"}, "fake.npy: not a .npy file (no NumPy header)"),
        ({"--figure_dir": nan}, "1.json: row 0 (global row 40) holds NaN or inf"),
        ({"--neighbors": "90"}, "--neighbors 90: must be at least 1 and below"),
        ({"--output_dir": folder / "a_file"}, "--output_dir is a file"),
    ], base


def test_bad_input_one_line_error_nothing_partial(runner, pool):
    folder, texts, embeddings = pool
    cases, base = bad_cases(folder, texts, embeddings)
    out = folder / "out"
    for override, message in cases:
        options = {**base, "--output_dir": out, **override}
        args = [str(v) for pair in options.items() for v in pair] + ["--quiet"]
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (override, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], \
            result.output
        assert not out.exists()


@pytest.mark.parametrize("option, value, message", [
    ("--seed", "-1", "Invalid value for '--seed': -1 is not in the range"),
    ("--density_power", "nan", "'nan' is not a finite number"),
    ("--distance_power", "-inf", "'-inf' is not a finite number"),
])
def test_out_of_range_numbers_are_usage_errors(runner, pool, option, value, message):
    folder, texts, embeddings = pool
    result = runner.invoke(main, ["--text_dir", str(texts), "--figure_dir", str(embeddings),
                                  "--output_dir", str(folder / "out"), option, value])
    assert result.exit_code == 2
    assert message in result.output
    assert not (folder / "out").exists()


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_writes_nothing(tmp_path):
    vectors = clustered_vectors(3000, 32, seed=13)
    embeddings = write_json_shards(tmp_path / "emb", vectors, [3000])
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "0.json").write_text(json.dumps([str(i) for i in range(3000)]))
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "novelselect.py"), "--text_dir", str(tmp_path / "texts"),
         "--figure_dir", str(embeddings), "--output_dir", str(out), "--k", "2999"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = ""
    while "selecting" not in seen:  # wait until the greedy loop has started
        chunk = process.stderr.read(1)
        assert chunk, "novelselect.py ended before selecting"
        seen += chunk
    process.send_signal(signal.SIGINT)
    _stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert "Interrupted: stopped cleanly, no output was written." in stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_density_power_zero_uses_no_neighbours(runner, pool):
    """With beta = 0 every density factor is 1: --neighbors is not checked against the pool
    (90 samples), and the picks are those of a pool whose factors are all 1."""
    from utils.io.vectors import load_vectors
    from utils.numerics.rows import unit_rows
    from utils.selection.selection_engine import first_pick
    from utils.selection.engine_choice import select

    folder, texts, embeddings = pool
    out = folder / "out"
    result = runner.invoke(main, ["--text_dir", str(texts), "--figure_dir", str(embeddings),
                                  "--output_dir", str(out), "--k", "15", "--density_power", "0",
                                  "--neighbors", "1000", "--quiet"])
    assert result.exit_code == 0, result.output
    picks = json.loads((out / "novelselect_15_dense_0.0_dist_1.0_indices.json").read_text())
    vectors = load_vectors(embeddings).vectors
    assert picks == select(unit_rows(vectors), np.ones(90, dtype=np.float32), 15, 1.0,
                           first_pick(90, 42))


def test_summary_names_the_device_used(runner, pool):
    folder, texts, embeddings = pool
    result = runner.invoke(main, ["--text_dir", str(texts), "--figure_dir", str(embeddings),
                                  "--output_dir", str(folder / "out"), "--k", "5", "--gpu_id",
                                  "3", "--quiet"])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("picked 5 of 90 samples at neighbors=10, beta=0.5, alpha=1 (the "
                           "recommended setting)")
    assert last.endswith("; on cpu (GPU 3 was asked for but is not available)")


def test_the_last_line_gives_the_last_picks_novelty_against_the_first(runner, tmp_path):
    """Against the pick log, read back here: the last novelty and the mean of the first 10%
    of the picks that have one."""
    import pandas as pd

    run = json.loads((SELECT / "expected.json").read_text())[0]
    result = runner.invoke(main, run_args(run, tmp_path / "out") + ["--quiet"])
    assert result.exit_code == 0, result.output
    novelty = pd.read_csv(next((tmp_path / "out").glob("*_picks.csv")))["novelty"].to_numpy()
    known = novelty[np.isfinite(novelty)]
    level = known[:max(1, round(len(known) * 0.1))].mean()
    last = result.output.strip().splitlines()[-1]
    assert (f": the last pick's novelty {novelty[-1]:.4g} is {novelty[-1] / level:.0%} of the "
            f"first picks' ({level:.4g}); on cpu") in last


def test_the_pick_log_is_written_as_pandas_writes_it(runner, tmp_path):
    """The pick log comes from the csv module (no pandas import in a run): the same bytes as
    pandas' ``to_csv`` of the table it reads back, NaN novelty of the random first pick as an
    empty field, floats in their shortest form."""
    import pandas as pd

    scores = tmp_path / "quality.json"
    scores.write_text(json.dumps(np.random.default_rng(4).uniform(0.2, 1.0, 500).tolist()))
    run = json.loads((SELECT / "expected.json").read_text())[0]
    result = runner.invoke(main, run_args(run, tmp_path / "out") + ["--quality_scores",
                                                                    str(scores)])
    assert result.exit_code == 0, result.output
    log = next((tmp_path / "out").glob("*_picks.csv"))
    text = log.read_text()
    assert text.splitlines()[1].split(",")[4] == ""  # the first pick's novelty
    assert pd.read_csv(log).to_csv(index=False, lineterminator="\n") == text


def test_run_options_are_given_by_name():
    """Twenty options in a row are too easy to shift by one: they are keyword-only."""
    with pytest.raises(TypeError):
        NovelselectOptions(*["x"] * 20)
