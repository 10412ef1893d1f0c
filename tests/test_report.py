"""The report's numbers against independent float64 computations written here: the PCA map
against numpy's SVD, duplicate groups against a brute-force loop, the NovelSum curve against
NovelSum of each prefix; and its bad-input errors."""

import os
import sys

import numpy as np
import pytest

from novelselect import main as novelselect_main
from novelsum import main as novelsum_main
from report import main as report_main
from tests.conftest import REPO
from synthetic import clustered_vectors, with_duplicates
from utils.api import novelsum_score
from utils.io.vectors import load_vectors
from utils.report.duplicates import duplicate_groups
from utils.report.projection import pca_map
from utils.report.selection import novelsum_curve
from utils.selection.greedy import greedy_selection

POOL = REPO / "examples" / "pool"


@pytest.fixture(scope="module")
def example_pool():
    return load_vectors(POOL / "embeddings").vectors


def test_pca_map_is_the_svd_of_the_centred_unit_rows(example_pool):
    unit = example_pool.astype(np.float64)
    unit /= np.sqrt((unit ** 2).sum(axis=1))[:, None]
    centred = unit - unit.mean(axis=0)
    u, s, _vt = np.linalg.svd(centred, full_matrices=False)
    expected = u[:, :2] * s[:2]
    got = pca_map(example_pool)
    for axis in range(2):
        sign = np.sign(got[:, axis] @ expected[:, axis])
        np.testing.assert_allclose(got[:, axis], sign * expected[:, axis], atol=1e-9)


def brute_force_groups(vectors, threshold):
    """Exact groups by row bytes; near groups as connected components of cos >= threshold,
    by a plain union-find over every pair, in float64."""
    exact = {}
    for i, row in enumerate(np.asarray(vectors, dtype=np.float32) + np.float32(0)):
        exact.setdefault(row.tobytes(), []).append(i)
    unit = vectors.astype(np.float64)
    unit /= np.sqrt((unit ** 2).sum(axis=1))[:, None]
    parent = list(range(len(unit)))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(unit)):
        for j in np.flatnonzero(unit[i + 1:] @ unit[i] >= threshold) + i + 1:
            parent[root(int(j))] = root(i)
    near = {}
    for i in range(len(unit)):
        near.setdefault(root(i), []).append(i)
    as_sets = lambda groups: {frozenset(g) for g in groups if len(g) > 1}  # noqa: E731
    return as_sets(exact.values()), as_sets(near.values())


@pytest.mark.parametrize("case", ["example pool, copies added", "tight clusters"])
def test_duplicate_groups_match_a_brute_force_loop(example_pool, case):
    if case == "tight clusters":  # thousands of candidate pairs per tile: the dense path
        vectors, threshold = clustered_vectors(2500, 48, 6, seed=3, spread=0.08), 0.995
    else:
        rng = np.random.default_rng(0)
        vectors = with_duplicates(example_pool, {5: [700, 701], 40: [300]})
        vectors[600] = vectors[10] + 0.02 * rng.normal(size=vectors.shape[1])
        vectors[601] = vectors[600] + 0.02 * rng.normal(size=vectors.shape[1])
        threshold = 0.9
    exact, near = brute_force_groups(vectors, threshold)
    got = duplicate_groups(vectors, threshold)
    assert {frozenset(g.tolist()) for g in got.exact} == exact
    assert {frozenset(g.tolist()) for g in got.near} == near
    assert len(near) > 3 and [len(g) for g in got.near] == sorted(map(len, near), reverse=True)
    if case != "tight clusters":
        assert exact == {frozenset({5, 700, 701}), frozenset({40, 300})}


def test_novelsum_curve_is_novelsum_of_each_prefix(example_pool):
    selection = greedy_selection(example_pool, 30, 10, 0.5, 1.0, 42)
    numbers, values = novelsum_curve(example_pool, selection.picks, selection.density_factor,
                                     1.0)
    assert numbers[0] == 2 and numbers[-1] == 30
    for t, value in zip(numbers, values):
        expected = novelsum_score(example_pool[selection.picks[:t]], reference=example_pool,
                                  neighbors=10, density_power=0.5, distance_power=1.0)
        assert value == pytest.approx(expected, rel=1e-6)


SELECT = ["--text_dir", str(POOL / "text"), "--figure_dir", str(POOL / "embeddings"),
          "--k", "20", "--quiet"]


@pytest.mark.parametrize("where, message", [
    ("missing/report.html", "the folder {tmp}/missing does not exist"),
    ("folder", "--report is a folder; give a file name"),
    ("report.txt", "give a name ending in .html")])
def test_bad_report_paths_are_one_line_errors_before_any_work(runner, tmp_path, where,
                                                              message):
    (tmp_path / "folder").mkdir()
    result = runner.invoke(novelselect_main, SELECT + ["--output_dir", str(tmp_path / "out"),
                                                       "--report", str(tmp_path / where)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {tmp_path / where}: " + result.output.split(": ", 2)[2].strip()]
    assert message.format(tmp=tmp_path) in result.output
    assert not (tmp_path / "out").exists()  # refused before the selection


def test_umap_without_umap_learn_names_the_install_line(runner, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # as where umap-learn is not installed
    earlier = tmp_path / "report.html"
    earlier.write_text("an earlier report")
    result = runner.invoke(novelselect_main, SELECT + ["--output_dir", str(tmp_path / "out"),
                                                       "--report", str(earlier),
                                                       "--report_map", "umap"])
    assert result.exit_code == 1
    assert result.output == ("Error: --report_map umap needs umap-learn, which is not "
                             "installed: pip install 'novelsum-toolkit[umap]' (or pip "
                             "install umap-learn)\n")
    assert earlier.read_text() == "an earlier report"
    assert sorted(os.listdir(tmp_path)) == ["report.html"]


def test_report_settings_need_report(runner, tmp_path):
    result = runner.invoke(novelselect_main, SELECT + ["--output_dir", str(tmp_path),
                                                       "--report_similarity", "0.9"])
    assert result.exit_code == 2
    assert "--report_similarity is used with --report FILE.html" in result.output


@pytest.fixture(scope="module")
def finished_selection(tmp_path_factory):
    """A finished run on a copy of the example pool (its texts may then be taken away)."""
    import shutil

    from click.testing import CliRunner

    work = tmp_path_factory.mktemp("finished")
    shutil.copytree(POOL, work / "pool")
    result = CliRunner().invoke(novelselect_main, [
        "--text_dir", str(work / "pool" / "text"), "--figure_dir",
        str(work / "pool" / "embeddings"), "--output_dir", str(work / "out"), "--k", "20",
        "--quiet"])
    assert result.exit_code == 0, result.output
    return work


def test_report_from_a_finished_folder_without_its_texts_fails_cleanly(runner,
                                                                       finished_selection):
    work = finished_selection
    (work / "pool" / "text").rename(work / "pool" / "text_gone")
    try:
        result = runner.invoke(report_main, [str(work / "out"), "--report",
                                             str(work / "r.html"), "--quiet"])
    finally:
        (work / "pool" / "text_gone").rename(work / "pool" / "text")
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert f"the run read --text_dir {work / 'pool' / 'text'}, which is not there" in \
        result.output
    assert not list(work.glob("*.html")) and not list(work.glob(".*tmp"))


def test_report_needs_one_text_per_pool_row(tmp_path, example_pool):
    from utils.errors import InputError
    from utils.report.selection import SelectionData, write_selection_report
    from utils.report.settings import ReportSettings

    data = SelectionData(example_pool, ["only one text"], [0, 1], np.array([np.nan, 1.0]),
                         np.ones(len(example_pool), dtype=np.float32), None,
                         dict(neighbors=10, density_power=0.5, distance_power=1.0))
    with pytest.raises(InputError, match="the report needs the pool's texts, one per row "
                                         r"\(744 rows, 1 texts\)"):
        write_selection_report(data, ReportSettings(tmp_path / "r.html"))
    assert not os.listdir(tmp_path)


def test_comparison_column_must_be_in_the_grid(runner, tmp_path):
    # a dataset that cannot be read: were the column checked after loading, its error would
    # come first
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "broken.npy").write_bytes(b"not an array")
    result = runner.invoke(novelsum_main, [
        "--multi_datasets_dir", str(tmp_path / "data"), "--output_csv",
        str(tmp_path / "n.csv"), "--report", str(tmp_path / "n.html"), "--report_column",
        "neighbor_7_density_0_distance_1", "--quiet"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: --report_column neighbor_7_density_0_distance_1: "
                                    "not a column of the results")
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_a_report_in_a_missing_folder_leaves_no_results(runner, tmp_path):
    result = runner.invoke(novelsum_main, [
        "--multi_datasets_dir", str(REPO / "examples" / "subsets"), "--output_csv",
        str(tmp_path / "n.csv"), "--report", str(tmp_path / "missing" / "n.html"), "--quiet"])
    assert result.exit_code == 1 and "does not exist" in result.output
    assert not list(tmp_path.iterdir())
