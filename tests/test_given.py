"""A set the user already has (--given_dir, docs/method.md section 10): NovelSelect picks beside
it, NovelSum measures each dataset with it; checked against direct float64 loops, against the
emulation through --resume_from, and against the concatenated file."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from conftest import GOLDEN, clustered_vectors, write_json_shards
from oracles import novelsum_float64

from utils.api import novelselect, novelsum, novelsum_score
from utils.cli.novelselect import main as novelselect_main
from utils.cli.novelsum import main as novelsum_main
from utils.errors import InputError, options_named
from utils.io.vectors import load_vectors
from utils.metrics.proximity import column_name
from utils.numerics.rows import unit_rows
from utils.numerics.weights import rank_weights
from utils.selection import baselines
from utils.selection.cpu import NumpyEngine
from utils.selection.engine_choice import select
from utils.selection.gpu import TorchEngine
from utils.selection.memory import available_memory_bytes, check_memory

SELECT = GOLDEN / "novelselect"
STEM = "novelselect_{k}_dense_0.5_dist_1.0"


def direct_density(queries, reference, neighbors, beta, members):
    """sigma^beta in float64 from every squared distance; ``members``: leave the query's own
    row out (a pool row against the pool), else keep every neighbour (a given row)."""
    queries, reference = queries.astype(np.float64), reference.astype(np.float64)
    distances = np.sort(((queries[:, None, :] - reference[None]) ** 2).sum(-1), axis=1)
    nearest = distances[:, 1:neighbors + 1] if members else distances[:, :neighbors]
    return 1 / (nearest.mean(axis=1) + 1e-9) ** beta


def direct_picks(pool, given, k, neighbors=10, beta=0.5, alpha=1.0):
    """Each pick the float64 argmax of the novelty beside the given set and the picks before
    it, every candidate's values sorted and weighted from scratch (lowest index on ties)."""
    pool_factors = direct_density(pool, pool, neighbors, beta, members=True)
    given_factors = direct_density(given, pool, neighbors, beta, members=False)
    pool_unit = unit_rows(pool.astype(np.float64))
    chosen_unit, chosen_factors = list(unit_rows(given.astype(np.float64))), list(given_factors)
    picks = []
    for _ in range(k):
        values = (1 - pool_unit @ np.asarray(chosen_unit).T) * (
            pool_factors[:, None] + np.asarray(chosen_factors)[None, :])
        values = np.sort(values, axis=1)
        novelty = values @ rank_weights(values.shape[1], alpha) / values.shape[1]
        novelty[picks] = -np.inf
        pick = int(np.argmax(novelty))
        picks.append(pick)
        chosen_unit.append(pool_unit[pick])
        chosen_factors.append(pool_factors[pick])
    return picks


def pool_and_given(with_copies=False):
    pool = clustered_vectors(240, 16, n_clusters=6, seed=11)
    given = clustered_vectors(30, 16, n_clusters=3, seed=12)
    if with_copies:  # rows the user has that the pool holds too
        given[[2, 9, 20]] = pool[[5, 77, 150]]
    return pool, given


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("with_copies", [False, True])
def test_each_pick_is_the_float64_argmax_beside_the_given_set(alpha, with_copies):
    pool, given = pool_and_given(with_copies)
    result = novelselect(pool, 25, distance_power=alpha, given=given)
    assert result.picks == direct_picks(pool, given, 25, alpha=alpha)
    assert np.isfinite(result.novelty).all()  # no random first pick: every pick has one
    if with_copies:
        assert not {5, 77, 150} & set(result.picks[:10])


ENGINES = {"numba": lambda u, r, k: NumpyEngine(u, r, k, 1.0, kernels="numba"),
           "numpy": lambda u, r, k: NumpyEngine(u, r, k, 1.0, kernels="numpy"),
           "torch-cpu": lambda u, r, k: TorchEngine(u, r, k, 1.0, "cpu", block_mib=1 / 64)}


@pytest.mark.parametrize("engine_name", ENGINES)
def test_every_engine_picks_alike_beside_the_given_set(engine_name):
    pool, given = pool_and_given(with_copies=True)
    expected = novelselect(pool, 20, given=given)
    unit = unit_rows(pool)
    factors = expected.density_factor.astype(np.float32)
    from utils.density.factor import DensityReference, density_factor

    given_factors = density_factor(DensityReference(pool).mean_sq_distances(
        given, [10], outside=True)[10], 0.5).astype(np.float32)
    engine = ENGINES[engine_name](unit, factors, 20 + len(given))
    picks = select(unit, factors, 20, 1.0, [], engine=engine,
                   given=(unit_rows(given), given_factors))
    assert picks == expected.picks


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                    reason="a GPU machine checks the Triton engine on the device (test_gpu.py)")
@pytest.mark.slow
def test_the_triton_engine_picks_alike_beside_the_given_set_in_the_interpreter():
    pytest.importorskip("triton", reason="pip install triton")
    from utils.selection.gpu import TritonEngine

    pool, given = clustered_vectors(30, 12, n_clusters=4, seed=34), clustered_vectors(
        6, 12, n_clusters=2, seed=35)
    unit, given_unit = unit_rows(pool), unit_rows(given)
    factors = np.random.default_rng(0).uniform(0.5, 2.0, len(pool)).astype(np.float32)
    given_factors = np.random.default_rng(1).uniform(0.5, 2.0, len(given)).astype(np.float32)
    picks = select(unit, factors, 8, 1.0, [], engine=NumpyEngine(unit, factors, 14, 1.0),
                   given=(given_unit, given_factors))
    engine = TritonEngine(unit, factors, 14, 1.0, "cpu", block=4, block_mib=1 / 256)
    assert select(unit, factors, 8, 1.0, [], engine=engine,
                  given=(given_unit, given_factors)) == picks


def test_a_separate_density_reference_serves_the_pool_and_the_given_set():
    pool, given = pool_and_given()
    reference = clustered_vectors(200, 16, n_clusters=5, seed=13)
    result = novelselect(pool, 15, reference=reference, given=given)
    pool_factors = direct_density(pool, reference, 10, 0.5, members=False)
    np.testing.assert_allclose(result.density_factor, pool_factors, rtol=1e-6)
    emulation = novelselect(np.concatenate([given, pool]), 15 + len(given),
                            reference=reference, resume_from=list(range(len(given))))
    assert [p - len(given) for p in emulation.picks[len(given):]] == result.picks


def test_the_picks_equal_the_emulation_through_resume_from():
    """Pool = G + P, resumed from G's indices, density on P: the same picks, one for one."""
    pool, given = pool_and_given()
    for quality in (None, np.random.default_rng(3).uniform(0.2, 1.0, len(pool))):
        result = novelselect(pool, 30, given=given, quality=quality)
        emulation = novelselect(
            np.concatenate([given, pool]), 30 + len(given), reference=pool,
            resume_from=list(range(len(given))),
            quality=None if quality is None else np.concatenate([np.ones(len(given)), quality]))
        assert [p - len(given) for p in emulation.picks[len(given):]] == result.picks


def test_resuming_beside_the_given_set_gives_the_uninterrupted_picks():
    pool, given = pool_and_given(with_copies=True)
    full = novelselect(pool, 30, given=given)
    for t in (1, 2, 13, 29, 30):
        resumed = novelselect(pool, 30, given=given, resume_from=full.picks[:t])
        assert resumed.picks == full.picks
        np.testing.assert_allclose(resumed.novelty, full.novelty, rtol=1e-9)


def test_api_refuses_a_given_set_of_another_width():
    pool, given = pool_and_given()
    with pytest.raises(InputError, match="given: vectors have 8 dimensions but the pool has 16"):
        novelselect(pool, 5, given=given[:, :8])
    with pytest.raises(InputError, match="8 dimensions but the dataset has 16"):
        novelsum(pool, given=given[:, :8])


def test_novelsum_of_the_given_set_and_a_dataset_is_that_of_the_concatenation():
    """Bit for bit the concatenation's values (docs/method.md section 10), and those are the
    SPEC's NovelSum of the concatenation, computed in float64 here."""
    pool, given = pool_and_given(with_copies=True)
    dataset = pool[:60]
    beside = novelsum(dataset, reference=pool, given=given)
    joined = novelsum(np.concatenate([given, dataset]), reference=pool)
    assert beside.values == joined.values
    assert novelsum_score(dataset, pool, given=given) == joined.values[
        "neighbor_10_density_0.5_distance_1"]
    concatenation = np.concatenate([given, dataset]).astype(np.float64)
    for k, beta, alpha in [(10, 0.5, 1), (5, 0.25, 2), (10, 0, 0)]:
        expected = novelsum_float64(concatenation, pool, k, beta, alpha)
        assert beside.values[column_name(k, beta, alpha)] == pytest.approx(expected, rel=1e-6)


def test_the_memory_check_names_the_largest_k_and_given_set_that_fit():
    # A pool so large that about 50 values per candidate fit in this machine's free memory.
    n, dim, given, k = available_memory_bytes("cpu") // (4 * 60), 1, 30, 40
    with pytest.raises(InputError) as err, options_named({"k": "--k", "given": "--given_dir"}):
        check_memory(n, k, dim, "cpu", given_rows=given)
    message = str(err.value)
    assert message.startswith(f"--k 40 with 30 given rows (--given_dir) on a pool of {n}")
    largest_k = int(message.split("at most --k ")[1].split()[0])
    largest_given = int(message.split(", or at most ")[1].split()[0].replace(",", ""))
    assert 0 < largest_k < k and 0 < largest_given < given
    check_memory(n, largest_k, dim, "cpu", given_rows=given)  # each fits
    check_memory(n, k, dim, "cpu", given_rows=largest_given)
    with pytest.raises(InputError):
        check_memory(n, largest_k + 1, dim, "cpu", given_rows=given)


def direct_kcenter(unit, given_unit, k):
    chosen, picks = list(given_unit), []
    for _ in range(k):
        nearest = (1 - unit.astype(np.float64) @ np.asarray(chosen, dtype=np.float64).T).min(1)
        nearest[picks] = -np.inf
        picks.append(int(np.argmax(nearest)))
        chosen.append(unit[picks[-1]])
    return picks


def test_kcenter_starts_from_the_given_centres():
    pool, given = pool_and_given()
    unit, given_unit = unit_rows(pool), unit_rows(given)
    picks = baselines.kcenter_selection(unit, 20, None, given=given_unit)
    assert picks == direct_kcenter(unit, given_unit, 20)


def test_the_representation_filter_keeps_the_given_set_first():
    pool, given = pool_and_given(with_copies=True)
    unit, given_unit = unit_rows(pool), unit_rows(given)
    picks = baselines.repr_filter_selection(unit, 25, 0.9, given=given_unit, block_mib=1 / 64)
    kept, expected = list(given_unit), []
    for i in np.random.RandomState(42).permutation(len(pool)):
        if (np.asarray(kept) @ unit[i]).max() <= 0.9:
            kept.append(unit[i])
            expected.append(int(i))
        if len(expected) == 25:
            break
    assert picks == expected
    assert not {5, 77, 150} & set(picks)  # each equals a given row: never kept again


# The commands.

def selection_args(out, k, *extra, quiet=True):
    return ["--text_dir", str(SELECT / "texts"), "--figure_dir", str(SELECT / "embeddings"),
            "--output_dir", str(out), "--k", str(k), *(["--quiet"] if quiet else []),
            *map(str, extra)]


@pytest.fixture
def given_dir(tmp_path):
    pool = load_vectors(SELECT / "embeddings").vectors
    given = clustered_vectors(40, pool.shape[1], n_clusters=4, seed=21) * float(
        np.linalg.norm(pool, axis=1).mean())
    given[[3, 30]] = pool[[10, 321]]
    return write_json_shards(tmp_path / "given", given, [25, 15])


def test_novelselect_command_picks_beside_the_given_set(runner, tmp_path, given_dir):
    result = runner.invoke(novelselect_main, selection_args(
        tmp_path / "out", 30, "--given_dir", given_dir, "--checkpoint_every", 7, "--plot"))
    assert result.exit_code == 0, result.output
    assert "picked 30 of 500 samples beside the 40 given" in result.output
    out, stem = tmp_path / "out", STEM.format(k=30)
    picks = json.loads((out / f"{stem}_indices.json").read_text())
    pool = load_vectors(SELECT / "embeddings").vectors
    given = load_vectors(given_dir).vectors
    assert picks == direct_picks(pool, given, 30)
    assert json.loads((out / f"{stem}.json").read_text()) == [f"sample {i}" for i in picks]
    log = pd.read_csv(out / f"{stem}_picks.csv")
    assert log["index"].tolist() == picks and log["novelty"].notna().all()
    assert (out / f"{stem}_novelty.png").exists()
    record = json.loads((out / f"{stem}_run.json").read_text())
    assert record["parameters"]["given_dir"] == str(given_dir)
    assert [s["rows"] for s in record["inputs"]["given"]["shards"]] == [25, 15]
    assert not (out / f"{stem}_checkpoint.json").exists()

    (tmp_path / "start.json").write_text(json.dumps(picks[:12]))
    resumed = runner.invoke(novelselect_main, selection_args(
        tmp_path / "resumed", 30, "--given_dir", given_dir, "--resume_from",
        tmp_path / "start.json"))
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((tmp_path / "resumed" / f"{stem}_indices.json").read_text()) == picks
    resumed_log = pd.read_csv(tmp_path / "resumed" / f"{stem}_picks.csv")
    np.testing.assert_allclose(resumed_log["novelty"], log["novelty"], rtol=1e-9)


def test_the_command_equals_its_emulation_through_resume_from(runner, tmp_path):
    pool = load_vectors(SELECT / "embeddings").vectors
    given = clustered_vectors(40, pool.shape[1], n_clusters=4, seed=22)
    write_json_shards(tmp_path / "given", given, [40])
    result = runner.invoke(novelselect_main, selection_args(
        tmp_path / "out", 20, "--given_dir", tmp_path / "given"))
    assert result.exit_code == 0, result.output
    write_json_shards(tmp_path / "joined" / "embeddings", np.concatenate([given, pool]),
                      [40, 500])
    texts = tmp_path / "joined" / "texts"
    texts.mkdir()
    (texts / "0.json").write_text(json.dumps([f"given {i}" for i in range(40)]))
    (texts / "1.json").write_text(json.dumps([f"sample {i}" for i in range(500)]))
    (tmp_path / "start.json").write_text(json.dumps(list(range(40))))
    emulation = runner.invoke(novelselect_main, [
        "--text_dir", str(texts), "--figure_dir", str(tmp_path / "joined" / "embeddings"),
        "--output_dir", str(tmp_path / "emulated"), "--k", "60", "--quiet",
        "--resume_from", str(tmp_path / "start.json"), "--dense_ref_dir",
        str(SELECT / "embeddings")])
    assert emulation.exit_code == 0, emulation.output
    picks = json.loads((tmp_path / "out" / f"{STEM.format(k=20)}_indices.json").read_text())
    emulated = json.loads(
        (tmp_path / "emulated" / f"{STEM.format(k=60)}_indices.json").read_text())
    assert [p - 40 for p in emulated[40:]] == picks


def test_a_resume_file_made_without_the_given_set_names_the_difference(runner, tmp_path,
                                                                       given_dir):
    plain = runner.invoke(novelselect_main, selection_args(tmp_path / "plain", 10))
    assert plain.exit_code == 0, plain.output
    stem = STEM.format(k=10)
    result = runner.invoke(novelselect_main, selection_args(
        tmp_path / "out", 12, "--given_dir", given_dir, "--resume_from",
        tmp_path / "plain" / f"{stem}_indices.json", quiet=False))
    assert result.exit_code == 0, result.output
    assert (f"made by a run with other parameters (given_dir None there, "
            f"'{given_dir.resolve()}' now)") in result.output


@pytest.mark.parametrize("extra, message", [
    (["--method", "kmeans"], "--given_dir is not used by --method kmeans: its picks are the "
                             "pool samples nearest the pool's own k-means centroids"),
])
def test_kmeans_refuses_the_given_set_and_says_why(runner, tmp_path, given_dir, extra,
                                                   message):
    result = runner.invoke(novelselect_main, selection_args(
        tmp_path / "out", 10, "--given_dir", given_dir, *extra))
    assert result.exit_code == 2 and message in result.output


def test_the_baselines_use_or_ignore_the_given_set(runner, tmp_path, given_dir):
    random = runner.invoke(novelselect_main, selection_args(
        tmp_path / "random", 10, "--method", "random", "--given_dir", given_dir, quiet=False))
    assert random.exit_code == 0, random.output
    assert "--given_dir is not used by --method random" in random.output
    plain = runner.invoke(novelselect_main, selection_args(
        tmp_path / "plain", 10, "--method", "random"))
    assert (tmp_path / "random" / "random_10_indices.json").read_text() == \
        (tmp_path / "plain" / "random_10_indices.json").read_text()
    assert plain.exit_code == 0
    kcenter = runner.invoke(novelselect_main, selection_args(
        tmp_path / "kcenter", 10, "--method", "kcenter", "--given_dir", given_dir))
    assert kcenter.exit_code == 0, kcenter.output
    pool, given = load_vectors(SELECT / "embeddings").vectors, load_vectors(given_dir).vectors
    assert json.loads((tmp_path / "kcenter" / "kcenter_10_indices.json").read_text()) == \
        direct_kcenter(unit_rows(pool), unit_rows(given), 10)


@pytest.mark.parametrize("make, message", [
    (lambda d: write_json_shards(d, np.ones((3, 5), dtype=np.float32), [3]),
     "vectors have 5 dimensions but the pool has"),
    (lambda d: d, "no such file or folder"),
])
def test_a_bad_given_set_is_a_one_line_error(runner, tmp_path, make, message):
    given = make(tmp_path / "given")
    result = runner.invoke(novelselect_main, selection_args(tmp_path / "out", 10,
                                                            "--given_dir", given))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and str(given) in lines[0] and message in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_novelsum_command_measures_each_dataset_beside_the_given_set(runner, tmp_path):
    case = GOLDEN / "novelsum_default_grid"
    reference = case / "reference"
    targets = sorted((case / "targets").iterdir())
    given = load_vectors(targets[0]).vectors
    result = runner.invoke(novelsum_main, [
        "--multi_datasets_dir", str(case / "targets"), "--dense_ref_dir", str(reference),
        "--given_dir", str(targets[0]), "--output_csv", str(tmp_path / "beside.csv"),
        "--per_sample_csv", str(tmp_path / "samples.csv")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "beside.csv")
    names = [t.stem if t.is_file() else t.name for t in targets]
    assert table["Dataset Name"].tolist() == names  # the given set's row first, once
    for target in targets[1:]:  # each equals its concatenated file, measured alone
        joined = tmp_path / "joined" / f"{target.stem}.npy"
        joined.parent.mkdir(exist_ok=True)
        np.save(joined, np.concatenate([given, load_vectors(target).vectors]))
        alone = runner.invoke(novelsum_main, [
            "--single_dataset_path", str(joined), "--dense_ref_dir", str(reference),
            "--output_csv", str(tmp_path / f"{target.stem}.csv"), "--quiet"])
        assert alone.exit_code == 0, alone.output
        expected = (tmp_path / f"{target.stem}.csv").read_text().splitlines()[1]
        row = (tmp_path / "beside.csv").read_text().splitlines()[names.index(target.stem) + 1]
        assert row == expected
    lines = result.output.splitlines()
    gains = lines.index(next(line for line in lines if line.startswith("gain over")))
    shown = "neighbor_10_density_0.5_distance_1"
    first = table.set_index("Dataset Name")[shown]
    assert lines[gains].startswith(f"gain over {names[0]} ({first[names[0]]:.6g} alone) at "
                                   f"k=10, beta=0.5, alpha=1:")
    for line, name in zip(lines[gains + 2:], names[1:]):
        assert line.split() == [name, f"{first[name]:.6g}",
                                f"{first[name] - first[names[0]]:+.6g}"]
    samples = pd.read_csv(tmp_path / "samples.csv")
    second = samples[samples["dataset"] == names[1]]
    assert second["from_given"].tolist() == [True] * len(given) + [False] * (
        len(second) - len(given))


def test_novelsum_names_a_dataset_of_another_width_than_the_given_set(runner, tmp_path):
    case = GOLDEN / "novelsum_default_grid"
    given = write_json_shards(tmp_path / "given", np.ones((4, 7), dtype=np.float32), [4])
    result = runner.invoke(novelsum_main, [
        "--single_dataset_path", str(case / "targets" / "subset_a.json"), "--given_dir",
        str(given), "--output_csv", str(tmp_path / "out.csv")])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: {case / 'targets' / 'subset_a.json'}: vectors have 24 dimensions but the "
        f"given set ({given}) has 7")
    assert not (tmp_path / "out.csv").exists()


def test_novelsum_refuses_a_given_set_that_is_also_a_dataset_to_measure(runner, tmp_path):
    subsets = GOLDEN / "novelsum_default_grid" / "targets"
    for option, path in (("--multi_datasets_dir", subsets),
                         ("--single_dataset_path", subsets / "subset_a.json")):
        result = runner.invoke(novelsum_main, [option, str(path), "--given_dir", str(path),
                                               "--output_csv", str(tmp_path / "out.csv")])
        assert result.exit_code == 1
        assert result.output.splitlines()[-1] == (
            f"Error: {path}: --given_dir is also the {option}; give the data you already "
            f"have apart from the datasets to measure")



def test_a_given_set_with_nothing_beside_it_is_refused_before_any_work(runner, tmp_path):
    folder = tmp_path / "sets"
    folder.mkdir()
    np.save(folder / "mine.npy", clustered_vectors(20, 8, seed=3))
    result = runner.invoke(novelsum_main, [
        "--multi_datasets_dir", str(folder), "--given_dir", str(folder / "mine.npy"),
        "--output_csv", str(tmp_path / "out.csv")])
    assert result.exit_code == 1
    assert result.output == (f"Error: {folder}: no dataset besides the given set "
                             f"{folder / 'mine.npy'}; give the datasets to measure beside it\n")
    assert not (tmp_path / "out.csv").exists()
