"""novelsum.py end to end: golden parity, option syntax, and clean errors."""

import csv
import json
import re

import numpy as np
import pytest

from conftest import GOLDEN, clustered_vectors, write_json_shards
from novelsum import main

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


def test_column_names_use_shortest_numbers(runner, tmp_path):
    output = tmp_path / "out.csv"
    runner.invoke(main, golden_args("novelsum_custom_grid", output) + ["--quiet"])
    header = output.read_text().splitlines()[0]
    assert header.startswith("Dataset Name,neighbor_3_density_0_distance_0.5,"
                             "neighbor_3_density_0_distance_3,")
    assert header.endswith(",cos_distance")


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
    output.write_text("earlier results\n")
    for args, message in bad_input_cases(folder, reference, target):
        result = runner.invoke(main, args + ["--output_csv", str(output), "--quiet"])
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
