"""novelsum.py end to end: golden parity, option syntax, and clean errors."""

import csv
import json
import re

import numpy as np
import pytest
from conftest import GOLDEN, clustered_vectors, write_json_shards

from utils.cli.novelsum import main

COLUMN = re.compile(r"neighbor_(\d+)_density_([\d.]+)_distance_([\d.]+)")


def parse_key(column):
    """Grid columns compared by their parsed numbers (the golden names use '0.0', we use '0')."""
    match = COLUMN.fullmatch(column)
    return (int(match[1]), float(match[2]), float(match[3])) if match else column


def read_results(path):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {row["Dataset Name"]: {parse_key(k): v for k, v in row.items()} for row in rows}


def golden_args(case, output):
    words = (GOLDEN / case / "command.txt").read_text().split()[1:]
    args = []
    for i, word in enumerate(words):
        if words[i - 1] in ("--multi_datasets_dir", "--dense_ref_dir"):
            word = str(GOLDEN / case / word)
        elif words[i - 1] == "--output_csv":
            word = str(output)
        args.append(word)
    return args


@pytest.mark.parametrize("case", ["novelsum_default_grid", "novelsum_custom_grid"])
def test_golden_values_to_relative_1e6(runner, tmp_path, case):
    output = tmp_path / "out.csv"
    result = runner.invoke(main, golden_args(case, output) + ["--quiet"])
    assert result.exit_code == 0, result.output
    ours, expected = read_results(output), read_results(GOLDEN / case / "expected.csv")
    assert ours.keys() == expected.keys()
    for name, row in expected.items():
        assert list(ours[name]) == list(row), "same columns in the same order"
        for key, value in row.items():
            if key != "Dataset Name":
                assert float(ours[name][key]) == pytest.approx(float(value), rel=1e-6), key


def test_column_names_as_the_reference_writes_them(runner, tmp_path):
    """Values from the command line are named as Python floats, byte for byte as the golden
    header; the defaults keep their shortest names."""
    output = tmp_path / "out.csv"
    runner.invoke(main, golden_args("novelsum_custom_grid", output) + ["--quiet"])
    expected = (GOLDEN / "novelsum_custom_grid" / "expected.csv").read_text().splitlines()[0]
    assert output.read_text().splitlines()[0] == expected
    case = GOLDEN / "novelsum_default_grid"
    default_args = ["--multi_datasets_dir", str(case / "targets"), "--dense_ref_dir",
                    str(case / "reference"), "--output_csv", str(output), "--quiet",
                    "--overwrite"]  # one output file for three runs of other grids
    runner.invoke(main, default_args)
    header = output.read_text().splitlines()[0]
    assert header == (case / "expected.csv").read_text().splitlines()[0]
    assert header.startswith("Dataset Name,neighbor_5_density_0_distance_0,"
                             "neighbor_5_density_0_distance_1,neighbor_5_density_0_distance_2,")
    runner.invoke(main, default_args + ["--density_powers", "0", "0.25", "0.5"])
    header = output.read_text().splitlines()[0]
    assert "neighbor_5_density_0.0_distance_0," in header  # given: float text, as the reference
    assert "neighbor_10_density_0.25_distance_2," in header


@pytest.fixture
def small_case(tmp_path):
    pool = clustered_vectors(300, 16, seed=5)
    reference = write_json_shards(tmp_path / "ref", pool, [100, 7, 193])
    target = tmp_path / "target.json"
    target.write_text(json.dumps(pool[::3].tolist()))
    return tmp_path, reference, target


@pytest.mark.parametrize("list_style", [
    ["--neighbors", "2", "4", "--density_powers", "0", "0.5", "--distance_powers", "1", "2"],
    ["--neighbors", "2,4", "--density-powers", "0,0.5", "--distance-powers=1,2"],
])
def test_space_and_comma_lists_give_the_same_result(runner, small_case, list_style):
    folder, reference, target = small_case
    output = folder / "out.csv"
    result = runner.invoke(main, ["--single_dataset_path", str(target), "--dense_ref_dir",
                                  str(reference), "--output_csv", str(output), "--quiet",
                                  "--gpu_id", "-1"] + list_style)
    assert result.exit_code == 0, result.output
    row = read_results(output)["target"]
    assert [k for k in row if isinstance(k, tuple)] == [
        (2, 0, 1), (2, 0, 2), (4, 0, 1), (4, 0, 2), (2, 0.5, 1), (2, 0.5, 2), (4, 0.5, 1),
        (4, 0.5, 2)]
    assert "target" in result.output and "alpha=1" in result.output  # the terminal table


def test_single_and_multi_together_and_npy(runner, small_case):
    folder, reference, target = small_case
    multi = folder / "multi"
    multi.mkdir()
    np.save(multi / "b.npy", np.array(json.loads(target.read_text()), dtype=np.float32))
    write_json_shards(multi / "a_sharded", clustered_vectors(30, 16, seed=6), [10, 20])
    output = folder / "out.csv"
    result = runner.invoke(main, ["--single_dataset_path", str(target), "--multi_datasets_dir",
                                  str(multi), "--dense_ref_dir", str(reference),
                                  "--output_csv", str(output), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = read_results(output)
    assert list(rows) == ["target", "a_sharded", "b"]
    assert rows["target"] == {**rows["b"], "Dataset Name": "target"}


def test_without_reference_only_density_zero(runner, small_case):
    folder, _reference, target = small_case
    output = folder / "out.csv"
    result = runner.invoke(main, ["--single_dataset_path", str(target), "--output_csv",
                                  str(output), "--quiet"])
    assert result.exit_code == 0, result.output
    row = read_results(output)["target"]
    assert {k[1] for k in row if isinstance(k, tuple)} == {0.0}
    assert float(row[(5, 0.0, 0.0)]) == pytest.approx(float(row["cos_distance"]), rel=1e-6)
    result = runner.invoke(main, ["--single_dataset_path", str(target), "--output_csv",
                                  str(output), "--density_powers", "0", "0.5"])
    assert result.exit_code == 2
    assert "need a reference set" in result.output


def bad_input_cases(folder, reference, target):
    """(arguments, expected message) for each kind of bad input the issue lists."""
    def write(name, text):
        path = folder / name
        path.write_text(text)
        return str(path)

    empty = folder / "empty_ref"
    empty.mkdir()
    ref, tgt = str(reference), str(target)
    return [
        (["--single_dataset_path", str(folder / "nope.json"), "--dense_ref_dir", ref],
         "nope.json: no such file or folder"),
        (["--single_dataset_path", write("t1.json", "[[1.0, 2.0"), "--dense_ref_dir", ref],
         "t1.json: not valid JSON"),
        (["--single_dataset_path", write("t2.json", "[[1.0, 2.0], [1.0]]")],
         "t2.json: row 1 has 1 values but row 0 has 2"),
        (["--single_dataset_path", write("t3.json", '[[1.0, "a"]]')],
         't3.json: row 0, element 1 is "a", not a number'),
        (["--single_dataset_path", write("t4.json", "[[1.0, NaN]]")],
         "t4.json: row 0 (global row 0) holds NaN or inf"),
        (["--single_dataset_path", write("t5.json", "[[1.0, 1.0], [0.0, 0.0]]")],
         "t5.json: row 1 (global row 1) is a zero vector"),
        (["--single_dataset_path", write("t6.json", "[]")], "t6.json: the dataset is empty"),
        (["--single_dataset_path", write("t7.json", "[[1.0, 2.0, 3.0]]"), "--dense_ref_dir", ref],
         "t7.json: vectors have 3 dimensions but the reference"),
        (["--single_dataset_path", tgt, "--dense_ref_dir", str(empty)],
         "empty_ref: no shard files"),
        (["--single_dataset_path", tgt, "--dense_ref_dir", ref, "--neighbors", "300"],
         "--neighbors 300: must be at least 1 and below the number of distinct rows"),
    ]


def test_bad_input_one_line_error_and_output_untouched(runner, small_case):
    folder, reference, target = small_case
    output = folder / "out.csv"
    output.write_text("earlier results\n")  # replaced only with --overwrite, and only whole
    for args, message in bad_input_cases(folder, reference, target):
        result = runner.invoke(main, args + ["--output_csv", str(output), "--quiet",
                                             "--overwrite"])
        assert result.exit_code == 1, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert message in lines[0]
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert output.read_text() == "earlier results\n"
    assert [p.name for p in folder.iterdir() if p.name.startswith(".out.csv")] == []


@pytest.mark.parametrize("args, message", [
    ([], "give --single_dataset_path, --multi_datasets_dir, or both"),
    (["--single_dataset_path", "x.json", "--neighbors", "0"], "--neighbors 0: must be at least 1"),
    (["--single_dataset_path", "x.json", "--distance_powers"], "needs at least one value"),
    (["--single_dataset_path", "x.json", "--neighbors", "5", "a"], "'a' is not an int"),
    (["--single_dataset_path", "x.json", "--neighbors", "5", "5"], "lists a value twice"),
    (["--single_dataset_path", "x.json", "--distance_powers", "0", "nan"],
     "'nan' is not a finite number"),
    (["--single_dataset_path", "x.json", "--distance_powers", "inf"], "'inf' is not a finite"),
])
def test_usage_errors_exit_2(runner, tmp_path, args, message):
    result = runner.invoke(main, args + ["--output_csv", str(tmp_path / "o.csv")])
    assert result.exit_code == 2
    assert message in result.output


def test_help_has_one_line_per_option_and_an_example(runner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for option in ["--single_dataset_path", "--multi_datasets_dir", "--dense_ref_dir",
                   "--output_csv", "--gpu_id", "--neighbors", "--density_powers",
                   "--distance_powers"]:
        assert option in result.output
    assert "python novelsum.py --multi_datasets_dir" in result.output


def test_one_sample_dataset_scores_exactly_zero(runner, small_case):
    folder, reference, _target = small_case
    single = folder / "single.json"
    single.write_text(json.dumps([[0.3, -1.2] + [0.7] * 14]))
    output = folder / "out.csv"
    result = runner.invoke(main, ["--single_dataset_path", str(single), "--dense_ref_dir",
                                  str(reference), "--output_csv", str(output), "--quiet"])
    assert result.exit_code == 0, result.output
    row = read_results(output)["single"]
    assert {float(v) for k, v in row.items() if k != "Dataset Name"} == {0.0}


def test_negative_powers_follow_the_definition(runner, small_case):
    """alpha = -1 weighs rank r by r (far samples more); accepted like negative densities."""
    folder, reference, target = small_case
    output = folder / "out.csv"
    result = runner.invoke(main, ["--single_dataset_path", str(target), "--dense_ref_dir",
                                  str(reference), "--output_csv", str(output), "--quiet",
                                  "--neighbors", "5", "--density_powers", "-0.5",
                                  "--distance_powers", "-1"])
    assert result.exit_code == 0, result.output
    vectors = np.array(json.loads(target.read_text()))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    distances = np.sort(1.0 - unit @ unit.T, axis=1)
    weights = np.arange(1, len(vectors) + 1, dtype=np.float64)
    proximity = distances @ weights / weights.sum()
    ref = np.concatenate([np.array(json.loads(p.read_text()))
                          for p in sorted(reference.glob("*.json"), key=lambda p: int(p.stem))])
    sq = ((vectors[:, None, :] - ref[None, :, :]) ** 2).sum(axis=2)
    sq.sort(axis=1)
    density = 1.0 / (sq[:, 1:6].mean(axis=1) + 1e-9) ** -0.5  # each target is a reference row
    expected = float(np.mean(density * proximity))
    column = "neighbor_5_density_-0.5_distance_-1.0"
    assert float(read_results_raw(output)["target"][column]) == pytest.approx(expected, rel=1e-6)


def read_results_raw(path):
    with open(path, newline="") as handle:
        return {row["Dataset Name"]: row for row in csv.DictReader(handle)}


def test_two_datasets_with_one_name_are_refused(runner, small_case):
    folder, _reference, target = small_case
    multi = folder / "multi"
    write_json_shards(multi / "x", clustered_vectors(10, 16, seed=1), [10])
    (multi / "x.json").write_text(target.read_text())
    output = folder / "out.csv"
    result = runner.invoke(main, ["--multi_datasets_dir", str(multi), "--output_csv",
                                  str(output), "--quiet"])
    assert result.exit_code == 1
    assert "would both be the dataset 'x' in the CSV; rename one of them" in result.output
    (multi / "x.json").unlink()
    result = runner.invoke(main, ["--multi_datasets_dir", str(multi), "--single_dataset_path",
                                  str(multi / "x"), "--output_csv", str(output), "--quiet"])
    assert result.exit_code == 1
    assert "given twice" in result.output
    assert not output.exists()


def test_the_table_stars_the_recommended_setting_and_the_last_line_sums_up(runner, tmp_path):
    """The golden default grid: the starred cell of each dataset is the reference script's
    value at k=10, beta=0.5, alpha=1, and the last line names the highest and lowest."""
    case = "novelsum_default_grid"
    result = runner.invoke(main, golden_args(case, tmp_path / "out.csv") + ["--quiet"])
    assert result.exit_code == 0, result.output
    expected = {row["Dataset Name"]: float(row["neighbor_10_density_0.5_distance_1"])
                for row in csv.DictReader(open(GOLDEN / case / "expected.csv"))}
    lines = result.output.strip().splitlines()
    starred = {line.split()[0]: float(cell.rstrip("*")) for line in lines
               for cell in line.split() if cell.endswith("*") and cell[0].isdigit()}
    assert starred.keys() == expected.keys()
    for name, value in expected.items():
        assert starred[name] == pytest.approx(value, rel=1e-5)
    assert "* k=10, beta=0.5, alpha=1, the recommended setting" in lines
    high, low = max(expected, key=expected.get), min(expected, key=expected.get)
    last = lines[-1]
    assert last.startswith(f"NovelSum at k=10, beta=0.5, alpha=1: highest {high} ")
    assert f", lowest {low} " in last and f"of {len(expected)} datasets; computed on cpu" in last


def test_off_the_recommended_grid_the_nearest_point_is_starred(runner, small_case):
    folder, reference, target = small_case
    result = runner.invoke(main, [
        "--single_dataset_path", str(target), "--dense_ref_dir", str(reference),
        "--output_csv", str(folder / "out.csv"), "--neighbors", "3", "7", "--density_powers",
        "0", "0.75", "--distance_powers", "2", "--quiet", "--gpu_id", "-1"])
    assert result.exit_code == 0, result.output
    row = next(csv.DictReader(open(folder / "out.csv")))
    value = float(row["neighbor_7_density_0.75_distance_2.0"])  # |7-10| < |3-10|; 0.75 nearest 0.5
    lines = result.output.strip().splitlines()
    assert [line.split()[1:3] for line in lines
            if len(line.split()) == 5 and line.split()[3].endswith("*")] == [["7", "0.75"]]
    assert ("* k=7, beta=0.75, alpha=2, the grid point nearest the recommended k=10, beta=0.5, "
            "alpha=1") in lines
    assert lines[-1].startswith(f"NovelSum of {target.stem} at k=7, beta=0.75, alpha=2: ")
    assert float(lines[-1].split(": ")[1].split(";")[0]) == pytest.approx(value, rel=1e-5)


def test_summary_names_the_device_used(runner, small_case):
    folder, _reference, target = small_case
    result = runner.invoke(main, ["--single_dataset_path", str(target), "--output_csv",
                                  str(folder / "out.csv"), "--quiet", "--gpu_id", "7"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].endswith(
        "computed on cpu (GPU 7 was asked for but is not available)")


@pytest.mark.slow
def test_progress_in_a_log_is_one_line_per_stage(small_case):
    import subprocess
    import sys

    from conftest import REPO

    folder, reference, target = small_case
    result = subprocess.run([sys.executable, str(REPO / "novelsum.py"), "--single_dataset_path",
                             str(target), "--dense_ref_dir", str(reference), "--output_csv",
                             str(folder / "out.csv")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    notice, *stages = result.stderr.splitlines()
    assert notice.startswith("no record of what embedded")  # made here, not by embedding.py
    assert stages == [line for line in stages if re.fullmatch(
        r"[\w .]+: \d+ (shard|chunk|block)\(s\) \.\.\. done in [\d.]+ s", line)]
    assert len(stages) == 4  # reference, target, density, distances


def direct_density(vectors, reference, k):
    """sigma_k of docs/method.md section 3 for target rows that are rows of the reference."""
    sq = ((vectors[:, None, :] - reference[None, :, :]) ** 2).sum(axis=2)
    sq.sort(axis=1)
    return 1.0 / (sq[:, 1:k + 1].mean(axis=1) + 1e-9)


@pytest.mark.parametrize("variant", ["--neighbor_density", "--exclude_self", "both"])
def test_variants_follow_their_definitions(runner, small_case, variant):
    folder, reference, target = small_case
    flags = ["--neighbor_density", "--exclude_self"] if variant == "both" else [variant]
    output = folder / "out.csv"
    result = runner.invoke(main, ["--single_dataset_path", str(target), "--dense_ref_dir",
                                  str(reference), "--output_csv", str(output), "--quiet",
                                  "--neighbors", "4", "--density_powers", "0.5",
                                  "--distance_powers", "1", *flags])
    assert result.exit_code == 0, result.output
    vectors = np.array(json.loads(target.read_text()))
    ref = np.concatenate([np.array(json.loads(p.read_text()))
                          for p in sorted(reference.glob("*.json"), key=lambda p: int(p.stem))])
    sigma = direct_density(vectors, ref, 4) ** 0.5
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    distances = 1.0 - unit @ unit.T
    np.fill_diagonal(distances, -np.inf if "--exclude_self" in flags else 0.0)
    order = np.argsort(distances, axis=1, kind="stable")
    if "--exclude_self" in flags:
        order = order[:, 1:]
    ranked = np.take_along_axis(distances, order, axis=1)
    weights = 1.0 / np.arange(1, ranked.shape[1] + 1)
    if "--neighbor_density" in flags:
        expected = np.mean((ranked * sigma[order]) @ weights / weights.sum())
    else:
        expected = np.mean(sigma * (ranked @ weights / weights.sum()))
    value = float(read_results(output)["target"][(4, 0.5, 1.0)])
    assert value == pytest.approx(expected, rel=1e-6)
    default = runner.invoke(main, ["--single_dataset_path", str(target), "--dense_ref_dir",
                                   str(reference), "--output_csv", str(folder / "d.csv"),
                                   "--quiet", "--neighbors", "4", "--density_powers", "0.5",
                                   "--distance_powers", "1"])
    assert default.exit_code == 0
    assert float(read_results(folder / "d.csv")["target"][(4, 0.5, 1.0)]) != pytest.approx(
        value, rel=1e-6)  # the variant is not the default


def test_exclude_self_needs_two_samples(runner, small_case):
    folder, _reference, _target = small_case
    single = folder / "single.json"
    single.write_text(json.dumps([[0.3, -1.2] + [0.7] * 14]))
    result = runner.invoke(main, ["--single_dataset_path", str(single), "--output_csv",
                                  str(folder / "o.csv"), "--exclude_self", "--quiet"])
    assert result.exit_code == 1
    assert "one sample, so --exclude_self leaves no distance to average" in result.output


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_missing_input_is_named_before_an_earlier_run_s_outputs(runner, tmp_path, overwrite):
    """A typo in a dataset path beside an older CSV: the typo is the fault to report, with or
    without --overwrite, and the older outputs stay as they were."""
    case = GOLDEN / "novelsum_default_grid"
    csv = tmp_path / "scores.csv"
    first = runner.invoke(main, ["--single_dataset_path",
                                          str(case / "targets" / "subset_a.json"),
                                          "--dense_ref_dir", str(case / "reference"),
                                          "--output_csv", str(csv), "--quiet"])
    assert first.exit_code == 0, first.output
    before = csv.read_bytes()
    typo = tmp_path / "subset_typo.json"
    result = runner.invoke(main, ["--single_dataset_path", str(typo), "--dense_ref_dir",
                                           str(case / "reference"), "--output_csv", str(csv),
                                           "--quiet", *overwrite])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: --single_dataset_path {typo}: no such file or folder"
    assert csv.read_bytes() == before
