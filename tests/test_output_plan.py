"""A run's outputs are planned before any work: no two on one path, none over an
input or inside an input folder, none replacing another run's outputs without --overwrite."""

import json
import shutil

import pytest
from conftest import GOLDEN
from test_embedding import MINILM, QUESTIONS

from utils.cli.embed import main as embed_main
from utils.cli.novelselect import main as select_main
from utils.cli.novelsum import main as novelsum_main

CASE = GOLDEN / "novelsum_default_grid"
SELECT = GOLDEN / "novelselect"


def novelsum(runner, *args):
    return runner.invoke(novelsum_main, ["--multi_datasets_dir", str(CASE / "targets"),
                                         "--dense_ref_dir", str(CASE / "reference"),
                                         "--quiet", *map(str, args)])


def select(runner, output_dir, *args):
    return runner.invoke(select_main, ["--text_dir", str(SELECT / "texts"), "--figure_dir",
                                       str(SELECT / "embeddings"), "--output_dir",
                                       str(output_dir), "--k", "20", "--quiet",
                                       *map(str, args)])


def error(result):
    assert result.exit_code == 1, result.output
    return result.output.strip()


@pytest.mark.parametrize("args, clash", [
    (["--output_csv", "res.png", "--plot"], "res.png: --output_csv and --plot would both "
                                            "write it; give them different names"),
    (["--output_csv", "r.csv", "--per_sample_csv", "r_run.json"],
     "r_run.json: --per_sample_csv and the run record would both write it; give them "
     "different names"),
])
def test_novelsum_outputs_on_one_path_are_refused_before_any_work(runner, tmp_path, args,
                                                                  clash):
    args = [str(tmp_path / a) if a.endswith((".png", ".csv", ".json")) else a for a in args]
    assert error(novelsum(runner, *args)) == f"Error: {tmp_path}/{clash}"
    assert list(tmp_path.iterdir()) == []


def test_novelsum_never_writes_into_an_input_folder(runner, tmp_path):
    targets = shutil.copytree(CASE / "targets", tmp_path / "targets")
    result = runner.invoke(novelsum_main, ["--multi_datasets_dir", str(targets),
                                           "--output_csv", str(targets / "out.csv")])
    assert error(result) == (f"Error: {targets / 'out.csv'}: --output_csv would write over the "
                             f"input --multi_datasets_dir {targets}; write the outputs elsewhere")
    assert sorted(p.name for p in targets.iterdir()) == sorted(
        p.name for p in (CASE / "targets").iterdir())


def test_novelselect_refuses_another_run_s_outputs_unless_told(runner, tmp_path):
    out = tmp_path / "out"
    assert select(runner, out).exit_code == 0
    indices = out / "novelselect_20_dense_0.5_dist_1.0_indices.json"
    first = indices.read_text()
    assert select(runner, out).exit_code == 0  # the same run again may replace its own
    message = error(select(runner, out, "--seed", "7"))
    assert message == (f"Error: {out / 'novelselect_20_dense_0.5_dist_1.0_run.json'}: its "
                       f"outputs come from another run (seed 42 there, 7 now); give --overwrite "
                       f"to replace them, or write elsewhere")
    assert indices.read_text() == first
    assert select(runner, out, "--seed", "7", "--overwrite").exit_code == 0
    assert json.loads((out / "novelselect_20_dense_0.5_dist_1.0_run.json").read_text())[
        "parameters"]["seed"] == 7
    assert select(runner, out, "--method", "random").exit_code == 0  # other names: no clash


def test_a_baseline_refuses_another_baseline_run_s_outputs(runner, tmp_path):
    out = tmp_path / "out"
    assert select(runner, out, "--method", "random").exit_code == 0
    assert "seed 42 there, 3 now" in error(select(runner, out, "--method", "random", "--seed",
                                                  "3"))


def test_novelselect_never_writes_into_its_input_folder(runner, tmp_path):
    figures = shutil.copytree(SELECT / "embeddings", tmp_path / "emb")
    message = error(runner.invoke(select_main, [
        "--text_dir", str(SELECT / "texts"), "--figure_dir", str(figures), "--output_dir",
        str(figures), "--k", "20"]))
    assert "--output_dir would write over the input --figure_dir" in message
    assert sorted(p.name for p in figures.iterdir()) == ["0.json", "1.json", "2.json", "3.json"]


def test_embedding_never_writes_over_its_input(runner, tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "0.json").write_text(json.dumps(QUESTIONS))
    result = runner.invoke(embed_main, ["--input_dir", str(texts), "--model_path", MINILM,
                                        "--output_dir", str(texts), "--quiet"])
    assert error(result) == (f"Error: {texts / '0.json'}: --output_dir {texts} would write "
                             f"0.json's vectors over the input shard {texts / '0.json'}; write "
                             f"them elsewhere")
    assert json.loads((texts / "0.json").read_text()) == QUESTIONS


def test_embedding_leaves_its_output_folder_out_of_the_input(runner, tmp_path):
    """Outputs inside the input folder are not read as text on the next run."""
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "0.json").write_text(json.dumps(QUESTIONS))
    args = ["--input_dir", str(texts), "--model_path", MINILM, "--output_dir",
            str(texts / "vectors")]
    assert runner.invoke(embed_main, args + ["--quiet"]).exit_code == 0
    again = runner.invoke(embed_main, args)
    assert again.exit_code == 0, again.output
    assert again.output.strip().endswith("nothing to do: all 1 shard(s) are embedded")


def test_a_file_no_run_made_is_kept_unless_overwrite(runner, tmp_path):
    output = tmp_path / "scores.csv"
    output.write_text("someone's table\n")
    message = error(novelsum(runner, "--output_csv", output))
    assert message == (f"Error: {output}: an output of another run, with no readable record "
                       f"(scores_run.json); give --overwrite to replace it, or write elsewhere")
    assert output.read_text() == "someone's table\n"
    assert novelsum(runner, "--output_csv", output, "--overwrite").exit_code == 0
    assert novelsum(runner, "--output_csv", output).exit_code == 0  # now its own run's output


def test_the_same_run_again_is_the_same_run_however_its_paths_are_written(runner, tmp_path,
                                                                          monkeypatch):
    """A lowered default --n_clusters and a path typed another way are still the same run."""
    monkeypatch.chdir(GOLDEN.parent.parent)
    args = ["--multi_datasets_dir", "examples/subsets", "--metrics", "cluster_inertia",
            "--output_csv", str(tmp_path / "a.csv"), "--quiet"]
    assert runner.invoke(novelsum_main, args).exit_code == 0  # n_clusters 100 lowered to 80
    again = runner.invoke(novelsum_main, [args[0], "./examples/subsets/", *args[2:]])
    assert again.exit_code == 0, again.output
