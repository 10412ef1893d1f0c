"""The paper's comparison from the command line: baseline metrics beside NovelSum, baseline
selections beside NovelSelect, checked against the library functions they wrap."""

import csv
import json

import numpy as np
import pytest
from conftest import GOLDEN

from utils.cli.novelselect import main as select_main
from utils.cli.novelsum import main as novelsum_main
from utils.io.vectors import load_vectors
from utils.metrics.registry import compute_metrics
from utils.numerics.rows import unit_rows
from utils.selection import baselines
from utils.selection.selection_engine import first_pick

CASE = GOLDEN / "novelsum_default_grid"
SELECT = GOLDEN / "novelselect"


def test_metrics_are_columns_after_cos_distance(runner, tmp_path):
    output = tmp_path / "out.csv"
    result = runner.invoke(novelsum_main, [
        "--multi_datasets_dir", str(CASE / "targets"), "--dense_ref_dir", str(CASE / "reference"),
        "--output_csv", str(output), "--metrics", "vendi", "radius", "partition_entropy",
        "knn_distance", "--n_clusters", "20", "--quiet"])
    assert result.exit_code == 0, result.output
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0])
    assert header[header.index("cos_distance") + 1:] == [
        "knn_distance_5", "knn_distance_10", "vendi", "radius", "partition_entropy"]
    reference = load_vectors(CASE / "reference").vectors
    for row in rows:
        vectors = load_vectors(CASE / "targets" / f"{row['Dataset Name']}.json").vectors
        expected = compute_metrics(["knn_distance", "vendi", "radius", "partition_entropy"],
                                   vectors, reference, (5, 10), 20)
        for column, value in expected.items():
            assert float(row[column]) == pytest.approx(value, rel=1e-12)
    assert "partition_entropy" in result.output  # the terminal table shows them too


@pytest.mark.parametrize("args, message", [
    (["--metrics", "facility_location"], "--metrics facility_location needs a reference set: "
                                         "give --dense_ref_dir"),
    (["--metrics", "entropy"], "--metrics entropy: unknown metric"),
])
def test_metric_usage_errors(runner, tmp_path, args, message):
    result = runner.invoke(novelsum_main, ["--single_dataset_path", str(CASE / "reference"),
                                           "--output_csv", str(tmp_path / "o.csv"), *args])
    assert result.exit_code == 2 and message in result.output


def test_too_many_clusters_names_the_option(runner, tmp_path):
    result = runner.invoke(novelsum_main, [
        "--single_dataset_path", str(CASE / "targets" / "subset_a.json"), "--output_csv",
        str(tmp_path / "o.csv"), "--metrics", "all", "--dense_ref_dir", str(CASE / "reference"),
        "--n_clusters", "5000", "--quiet"])
    assert result.exit_code == 1
    assert "lower --n_clusters" in result.output and not (tmp_path / "o.csv").exists()


def test_metrics_all_with_defaults_works_on_80_samples(runner, tmp_path):
    """The shipped 80-sample MT-Bench embeddings against the example pool: the default
    --n_clusters 100 is lowered to 40 (two samples per cluster), said, and recorded; the
    inertia is then above 0 and below the one-cluster inertia (the total variance, in
    float64 here)."""
    examples = GOLDEN.parent.parent / "examples"
    output = tmp_path / "o.csv"
    result = runner.invoke(novelsum_main, [
        "--single_dataset_path", str(examples / "subsets" / "mtbench_80.npy"), "--output_csv",
        str(output), "--metrics", "all", "--dense_ref_dir", str(examples / "pool" / "embeddings")])
    assert result.exit_code == 0, result.output
    assert "--n_clusters lowered from its default 100 to 40" in result.output
    row = next(csv.DictReader(output.open()))
    vectors = np.load(examples / "subsets" / "mtbench_80.npy").astype(np.float64)
    variance = ((vectors - vectors.mean(axis=0)) ** 2).sum(axis=1).mean()
    assert 0.05 * variance < float(row["cluster_inertia"]) < variance
    assert float(row["partition_entropy"]) > 0
    record = json.loads((tmp_path / "o_run.json").read_text())
    assert record["parameters"]["n_clusters"] == 40
    assert record["parameters"]["n_clusters_lowered_from"] == 100


def test_one_sample_per_cluster_leaves_cluster_inertia_empty(runner, tmp_path):
    """--n_clusters equal to the dataset's distinct rows: every row is a centroid, the inertia
    0 whatever the data; the cell is empty, with a notice, and the other metrics are there."""
    examples = GOLDEN.parent.parent / "examples"
    vectors = np.load(examples / "subsets" / "mtbench_80.npy")
    (tmp_path / "sets").mkdir()
    np.save(tmp_path / "sets" / "mtbench_80.npy", vectors)
    np.save(tmp_path / "sets" / "doubled.npy", np.concatenate([vectors[:30], vectors[:30]]))
    output = tmp_path / "o.csv"
    result = runner.invoke(novelsum_main, [
        "--multi_datasets_dir", str(tmp_path / "sets"), "--output_csv", str(output),
        "--metrics", "cluster_inertia,vendi", "--n_clusters", "30"])
    assert result.exit_code == 0, result.output
    rows = {row["Dataset Name"]: row for row in csv.DictReader(output.open())}
    assert rows["doubled"]["cluster_inertia"] == ""  # 60 rows, 30 distinct
    assert float(rows["doubled"]["vendi"]) > 1
    assert float(rows["mtbench_80"]["cluster_inertia"]) > 0
    assert ("doubled: cluster_inertia left empty: its rows have at most 30 distinct values"
            in result.output)


@pytest.mark.parametrize("method", ["random", "kcenter", "kmeans", "repr_filter"])
def test_baseline_methods_write_what_their_functions_pick(runner, tmp_path, method):
    out = tmp_path / "out"
    result = runner.invoke(select_main, [
        "--text_dir", str(SELECT / "texts"), "--figure_dir", str(SELECT / "embeddings"),
        "--output_dir", str(out), "--k", "30", "--method", method, "--seed", "7", "--quiet",
        *(["--max_similarity", "0.95"] if method == "repr_filter" else [])])
    assert result.exit_code == 0, result.output
    picks = json.loads((out / f"{method}_30_indices.json").read_text())
    assert json.loads((out / f"{method}_30.json").read_text()) == [f"sample {i}" for i in picks]
    vectors = load_vectors(SELECT / "embeddings").vectors
    expected = {
        "random": lambda: baselines.random_selection(500, 30, 7),
        "kcenter": lambda: baselines.kcenter_selection(unit_rows(vectors), 30,
                                                       first_pick(500, 7)),
        "kmeans": lambda: baselines.kmeans_selection(vectors, 30, 7),
        "repr_filter": lambda: baselines.repr_filter_selection(unit_rows(vectors), 30, 0.95,
                                                               seed=7),
    }[method]()
    assert picks == expected and len(set(picks)) == 30
    assert json.loads((out / f"{method}_30_run.json").read_text())["parameters"]["method"] \
        == method


def test_repr_filter_follows_quality_scores(runner, tmp_path):
    scores = np.random.default_rng(3).uniform(0, 1, 500)
    (tmp_path / "q.json").write_text(json.dumps(scores.tolist()))
    result = runner.invoke(select_main, [
        "--text_dir", str(SELECT / "texts"), "--figure_dir", str(SELECT / "embeddings"),
        "--output_dir", str(tmp_path / "out"), "--k", "20", "--method", "repr_filter",
        "--quality_scores", str(tmp_path / "q.json"), "--max_similarity", "0.95", "--quiet"])
    assert result.exit_code == 0, result.output
    picks = json.loads((tmp_path / "out" / "repr_filter_20_indices.json").read_text())
    unit = unit_rows(load_vectors(SELECT / "embeddings").vectors)
    assert picks == baselines.repr_filter_selection(unit, 20, 0.95, scores)
    assert picks[0] == int(np.argmax(scores))


@pytest.mark.parametrize("method, option, value", [
    ("random", "--dense_ref_dir", "x"), ("kcenter", "--quality_scores", "q.json"),
    ("kmeans", "--plot", None), ("novelselect", "--max_similarity", "0.5"),
    ("repr_filter", "--density_power", "1"),
])
def test_options_a_method_does_not_use_are_refused(runner, tmp_path, method, option, value):
    result = runner.invoke(select_main, [
        "--text_dir", str(SELECT / "texts"), "--figure_dir", str(SELECT / "embeddings"),
        "--output_dir", str(tmp_path / "out"), "--method", method, option,
        *([value] if value else [])])
    assert result.exit_code == 2
    assert f"{option} is not used by --method {method}" in result.output


def test_repr_filter_says_when_the_pool_runs_out(runner, tmp_path):
    result = runner.invoke(select_main, [
        "--text_dir", str(SELECT / "texts"), "--figure_dir", str(SELECT / "embeddings"),
        "--output_dir", str(tmp_path / "out"), "--k", "40", "--method", "repr_filter",
        "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: --max_similarity 0.9: the representation filter kept only 36 of the 500 pool "
        "samples, fewer than --k 40; raise --max_similarity or lower --k")
    assert not (tmp_path / "out").exists()


def test_reference_metric_errors_are_one_line_and_write_nothing(runner, tmp_path):
    """A zero row in the reference (facility_location), a reference of another width
    (partition_entropy), --n_clusters without a cluster metric: each one clean line."""
    target = CASE / "targets" / "subset_a.json"
    reference = load_vectors(CASE / "reference").vectors
    (tmp_path / "zero").mkdir()
    np.save(tmp_path / "zero" / "0.npy", np.vstack([reference[:50], np.zeros((1, 24))]))
    (tmp_path / "wide").mkdir()
    np.save(tmp_path / "wide" / "0.npy", np.ones((60, 30), dtype=np.float32))
    output = tmp_path / "out.csv"
    output.write_text("earlier\n")  # not a run's output: replaced only with --overwrite
    cases = [
        (["--dense_ref_dir", str(tmp_path / "zero"), "--metrics", "facility_location",
          "--density_powers", "0"], 1,
         "reference row 50 is a zero vector, which has no direction: facility_location"),
        (["--dense_ref_dir", str(tmp_path / "wide"), "--metrics", "partition_entropy",
          "--n_clusters", "5", "--density_powers", "0"], 1,
         "vectors have 24 dimensions but the reference (--dense_ref_dir) has 30"),
        (["--n_clusters", "5"], 2, "--n_clusters is used by the cluster_inertia and "
                                   "partition_entropy metrics only"),
    ]
    for args, code, message in cases:
        result = runner.invoke(novelsum_main, ["--single_dataset_path", str(target),
                                               "--output_csv", str(output), "--quiet",
                                               "--overwrite", *args])
        assert result.exit_code == code, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert output.read_text() == "earlier\n"


def test_unwritable_outputs_are_one_line_and_leave_earlier_ones(runner, tmp_path):
    target = CASE / "targets" / "subset_a.json"
    (tmp_path / "afile").write_text("x")
    output = tmp_path / "out.csv"
    output.write_text("earlier\n")
    result = runner.invoke(novelsum_main, ["--single_dataset_path", str(target), "--output_csv",
                                           str(output), "--per_sample_csv",
                                           str(tmp_path / "afile" / "x.csv"), "--quiet",
                                           "--overwrite"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: ") and "afile/x.csv: cannot write" \
        in result.output
    assert output.read_text() == "earlier\n" and not (tmp_path / "out_run.json").exists()
    result = runner.invoke(select_main, ["--text_dir", str(SELECT / "texts"), "--figure_dir",
                                         str(SELECT / "embeddings"), "--output_dir",
                                         str(tmp_path / "afile" / "sub"), "--k", "3",
                                         "--quiet"])
    assert result.exit_code == 1 and "cannot write" in result.output


def test_kmeans_seed_beyond_faiss_range_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(select_main, [
        "--text_dir", str(SELECT / "texts"), "--figure_dir", str(SELECT / "embeddings"),
        "--output_dir", str(tmp_path / "out"), "--k", "5", "--method", "kmeans", "--seed",
        "3000000000"])
    assert result.exit_code == 2
    assert "--seed 3000000000: --method kmeans takes a seed below 2^31" in result.output
