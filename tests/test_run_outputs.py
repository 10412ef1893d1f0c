"""What a run leaves beside its results: per-sample novelty, the pick log, run records, plots."""

import hashlib
import json
import struct

import numpy as np
import pandas as pd
import pytest
from conftest import GOLDEN
from test_novelsum_cli import golden_args, read_results

from utils.cli.novelselect import main as select_main
from utils.cli.novelsum import main as novelsum_main
from utils.density.factor import DensityReference, density_factor
from utils.io.vectors import load_vectors
from utils.numerics.weights import rank_weights

SELECT = GOLDEN / "novelselect"


def png_size(path):
    """(width, height) of a PNG file, read from its header; fails on anything else."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("case", ["novelsum_default_grid", "novelsum_custom_grid"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_per_sample_means_are_the_dataset_values(runner, tmp_path, case, suffix):
    output, per_sample = tmp_path / "out.csv", tmp_path / f"samples{suffix}"
    result = runner.invoke(novelsum_main, golden_args(case, output) + [
        "--quiet", "--per_sample_csv", str(per_sample)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(per_sample) if suffix == ".parquet" else pd.read_csv(per_sample)
    values = pd.read_csv(output).set_index("Dataset Name")
    grid_columns = [c for c in values.columns if c.startswith("neighbor_")]
    assert [c for c in table.columns if c.startswith("novelty_")] == [
        f"novelty_{c}" for c in grid_columns]
    for name, rows in table.groupby("dataset", sort=False):
        target = load_vectors(GOLDEN / case / "targets" / f"{name}.json")
        assert rows["index"].tolist() == list(range(len(target.vectors)))
        assert set(rows["shard"]) == {f"{name}.json"} and rows["row"].tolist() == \
            rows["index"].tolist()
        for column in grid_columns:
            assert rows[f"novelty_{column}"].mean() == pytest.approx(values.loc[name, column],
                                                                     rel=1e-12)
        unit = target.vectors / np.linalg.norm(target.vectors, axis=1, keepdims=True)
        distances = 1.0 - unit.astype(np.float64) @ unit.T.astype(np.float64)
        np.fill_diagonal(distances, np.inf)
        np.testing.assert_allclose(rows["nearest_distance"], distances.min(axis=1), atol=1e-6)
    factor_columns = [c for c in table.columns if c.startswith("density_factor_")]
    assert factor_columns and all("_density_0_" not in c and not c.endswith("density_0")
                                  for c in factor_columns)


def direct_novelty_of(unit, rho, picks, candidate, alpha):
    """v(u) of docs/method.md section 5 from scratch: sorted values against the picks."""
    values = np.sort([(1.0 - float(unit[candidate] @ unit[s])) * (rho[candidate] + rho[s])
                      for s in picks])
    return float(values @ rank_weights(len(values), alpha)) / len(values)


@pytest.mark.parametrize("with_quality", [False, True])
def test_pick_log_novelty_equals_a_direct_recomputation(runner, tmp_path, with_quality):
    args = ["--text_dir", str(SELECT / "texts"), "--figure_dir", str(SELECT / "embeddings"),
            "--output_dir", str(tmp_path / "out"), "--k", "40", "--quiet"]
    quality = None
    if with_quality:
        quality = np.random.default_rng(5).uniform(0.1, 1.0, 500)
        (tmp_path / "q.json").write_text(json.dumps(quality.tolist()))
        args += ["--quality_scores", str(tmp_path / "q.json")]
    result = runner.invoke(select_main, args)
    assert result.exit_code == 0, result.output
    log = pd.read_csv(tmp_path / "out" / "novelselect_40_dense_0.5_dist_1.0_picks.csv")
    assert list(log.columns) == ["order", "index", "shard", "row", "novelty", "density_factor"] \
        + (["quality", "score"] if with_quality else [])
    indices = json.loads((tmp_path / "out" / "novelselect_40_dense_0.5_dist_1.0_indices.json")
                         .read_text())
    assert log["index"].tolist() == indices and log["order"].tolist() == list(range(40))
    pool = load_vectors(SELECT / "embeddings")
    shard_starts = dict(zip((p.name for p in pool.paths), pool.offsets))
    assert [shard_starts[s] + r for s, r in zip(log["shard"], log["row"])] == indices
    unit = pool.vectors / np.linalg.norm(pool.vectors, axis=1, keepdims=True)
    mean_sq = DensityReference(pool.vectors).mean_sq_distances(pool.vectors, [10])[10]
    rho = density_factor(mean_sq, 0.5).astype(np.float32)
    assert np.isnan(log["novelty"][0])
    np.testing.assert_allclose(log["density_factor"], rho[indices], rtol=1e-7)
    for t in range(1, 40):
        direct = direct_novelty_of(unit, rho, indices[:t], indices[t], 1.0)
        assert log["novelty"][t] == pytest.approx(direct, rel=1e-6)
        if with_quality:
            assert log["quality"][t] == pytest.approx(quality[indices[t]])
            assert log["score"][t] == pytest.approx(quality[indices[t]] * direct, rel=1e-6)


def test_a_run_resumed_into_its_folder_logs_every_pick_s_novelty(runner, tmp_path):
    """Resumed from 8 picks of a 20-pick run, in the same folder: the new pick log has a
    novelty for every pick but the random first one."""
    out = tmp_path / "out"
    args = ["--text_dir", str(SELECT / "texts"), "--figure_dir", str(SELECT / "embeddings"),
            "--output_dir", str(out), "--quiet"]
    assert runner.invoke(select_main, args + ["--k", "20"]).exit_code == 0
    full = pd.read_csv(out / "novelselect_20_dense_0.5_dist_1.0_picks.csv")
    (tmp_path / "first8.json").write_text(json.dumps(full["index"].tolist()[:8]))
    result = runner.invoke(select_main, args + ["--k", "30", "--resume_from",
                                                str(tmp_path / "first8.json")])
    assert result.exit_code == 0, result.output
    log = pd.read_csv(out / "novelselect_30_dense_0.5_dist_1.0_picks.csv")
    assert log["index"].tolist()[:20] == full["index"].tolist()
    assert np.isnan(log["novelty"][0]) and not log["novelty"][1:].isna().any()
    np.testing.assert_allclose(log["novelty"][1:20], full["novelty"][1:20], rtol=1e-5)
    other = runner.invoke(select_main, [*args[:-1], "--k", "25", "--seed", "7", "--resume_from",
                                        str(out / "novelselect_20_dense_0.5_dist_1.0_indices"
                                                  ".json")])
    assert other.exit_code == 0, other.output
    assert ("novelselect_20_dense_0.5_dist_1.0_indices.json: made by a run with other "
            "parameters (seed 42 there, 7 now); its picks are continued as given") in other.output


def test_run_records_hold_what_they_say(runner, tmp_path):
    output = tmp_path / "out.csv"
    result = runner.invoke(novelsum_main, golden_args("novelsum_custom_grid", output) + [
        "--quiet", "--gpu_id", "-1"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out_run.json").read_text())
    assert record["tool"] == "novelsum" and record["device"] == "cpu" and record["ranks"] == 1
    assert record["parameters"]["neighbors"] == [3, 7]
    assert record["parameters"]["distance_powers"] == [0.5, 3.0]
    assert record["outputs"] == ["out.csv", "out_run.json"]
    reference = load_vectors(GOLDEN / "novelsum_custom_grid" / "reference")
    shards = record["inputs"]["reference"]["shards"]
    assert [s["name"] for s in shards] == ["0.json", "1.json", "2.json"]
    assert [s["rows"] for s in shards] == np.diff(reference.offsets).tolist()
    for shard, start, stop in zip(shards, reference.offsets, reference.offsets[1:]):
        assert shard["sha256"] == hashlib.sha256(reference.vectors[start:stop].tobytes()
                                                 ).hexdigest()
    assert {"numpy", "faiss-cpu", "python"} <= set(record["packages"])
    assert record["seconds"]["total"] >= record["seconds"]["novelsum"] > 0
    assert isinstance(record["command"], list)  # how the process was started
    assert record["summary"]["subset_c"]["samples"] == 300
    # the plotted setting (k=10, beta=0.5, alpha=1) is nearest to k=7, beta=0 (of the tie
    # 0 and 1, the smaller), alpha=0.5
    assert record["summary"]["subset_c"]["neighbor_7_density_0.0_distance_0.5"] == float(
        read_results(output)["subset_c"][(7, 0.0, 0.5)])


def test_selection_record_and_plots_are_written(runner, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(select_main, [
        "--text_dir", str(SELECT / "texts"), "--figure_dir", str(SELECT / "embeddings"),
        "--output_dir", str(out), "--k", "60", "--quiet", "--plot"])
    assert result.exit_code == 0, result.output
    stem = "novelselect_60_dense_0.5_dist_1.0"
    assert png_size(out / f"{stem}_novelty.png") == (960, 540)
    record = json.loads((out / f"{stem}_run.json").read_text())
    assert record["tool"] == "novelselect" and record["parameters"]["k"] == 60
    assert record["outputs"] == [f"{stem}.json", f"{stem}_indices.json", f"{stem}_picks.csv",
                                 f"{stem}_novelty.png", f"{stem}_run.json"]
    assert [s["rows"] for s in record["inputs"]["texts"]["shards"]] == \
        [s["rows"] for s in record["inputs"]["embeddings"]["shards"]]
    assert record["inputs"]["texts"]["shards"][0]["sha256"] == hashlib.sha256(
        (SELECT / "texts" / "0.json").read_bytes()).hexdigest()

    csv_path = tmp_path / "sum.csv"
    result = runner.invoke(novelsum_main, [
        "--multi_datasets_dir", str(GOLDEN / "novelsum_default_grid" / "targets"),
        "--dense_ref_dir", str(GOLDEN / "novelsum_default_grid" / "reference"),
        "--output_csv", str(csv_path), "--quiet", "--plot"])
    assert result.exit_code == 0, result.output
    assert png_size(tmp_path / "sum.png") == (1344, 540)


def test_one_pick_has_no_novelty_to_plot_and_says_so(runner, tmp_path):
    """--k 1 --plot: the only pick is the random first one."""
    out = tmp_path / "out"
    result = runner.invoke(select_main, [
        "--text_dir", str(SELECT / "texts"), "--figure_dir", str(SELECT / "embeddings"),
        "--output_dir", str(out), "--k", "1", "--plot"])
    assert result.exit_code == 0, result.output
    assert "--plot: no picture, as no pick has a novelty to draw" in result.output
    assert not list(out.glob("*.png"))


def test_the_plot_title_names_neighbors_apart_from_the_pick_count():
    from types import SimpleNamespace

    from utils.pipelines.novelselect_outputs import novelty_title

    options = SimpleNamespace(neighbors=10, density_power=0.5, distance_power=1.0)
    assert novelty_title(1000, 396000, options) == (
        "NovelSelect: 1,000 of 396,000 (neighbors=10, beta=0.5, alpha=1)")


def test_half_point_marks_where_novelty_halves():
    from utils.io.plots import early_level, half_point

    novelty = np.array([np.nan] + [1.0] * 10 + [0.8, 0.6, 0.5, 0.4] + [0.3] * 10)
    assert early_level(novelty) == pytest.approx(1.0)  # first 10% of 24 picks: 2 of them
    assert half_point(novelty) == 14  # pick 14 (1-based) has novelty 0.5
    assert half_point(np.array([np.nan, 1.0, 0.9, 0.8])) is None


def test_beside_a_given_set_the_first_pick_is_drawn_and_counted():
    """With --given_dir the first pick has a novelty (against the given rows): it is plotted
    and counts in the early level; the title names the given rows."""
    from types import SimpleNamespace

    from utils.io.plots import early_level, half_point, known_picks
    from utils.pipelines.novelselect_outputs import novelty_title

    novelty = np.array([3.0] + [1.0] * 18 + [0.5])  # 20 picks: the first 10% is picks 1-2
    assert list(known_picks(novelty)) == list(range(1, 21))
    assert early_level(novelty) == pytest.approx(2.0)  # (3 + 1) / 2
    assert half_point(novelty) == 2  # pick 2's 1.0 is half of 2.0
    assert list(known_picks(np.array([np.nan, 1.0, 0.5]))) == [2, 3]
    options = SimpleNamespace(neighbors=10, density_power=0.5, distance_power=1.0)
    assert novelty_title(40, 744, options, given_rows=80) == (
        "NovelSelect: 40 of 744 beside 80 given rows (neighbors=10, beta=0.5, alpha=1)")


def test_per_sample_rows_name_their_shard_and_row(runner, tmp_path):
    """A dataset of several shards: shard and row point back to each sample's vector."""
    dataset = GOLDEN / "novelsum_default_grid" / "reference"
    per_sample = tmp_path / "samples.csv"
    result = runner.invoke(novelsum_main, ["--single_dataset_path", str(dataset), "--output_csv",
                                           str(tmp_path / "out.csv"), "--per_sample_csv",
                                           str(per_sample), "--quiet"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(per_sample)
    vectors = load_vectors(dataset).vectors
    shards = {name: load_vectors(dataset / name).vectors for name in set(table["shard"])}
    assert len(shards) == 3
    for shard, row, index in zip(table["shard"], table["row"], table["index"]):
        assert np.array_equal(shards[shard][row], vectors[index])
