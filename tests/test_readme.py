"""The README stays true: every option documented, example commands run as written."""

import csv
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

README = (REPO / "README.md").read_text()


def script_options(module):
    return [opt for param in module.main.params for opt in param.opts if "_" in opt or
            opt in ("--k", "--seed", "--backend", "--overwrite", "--quiet", "--neighbors")]


@pytest.mark.parametrize("script", ["novelsum", "novelselect", "embedding"])
def test_every_option_is_in_the_readme(script):
    module = __import__(script)
    section = README.split(f"### {script}.py")[1].split("###")[0].split("## ")[0]
    for option in script_options(module):
        assert f"`{option}`" in section, f"{option} of {script}.py is not in the README"


def example_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line for block in blocks for line in block.splitlines()
            if line.startswith("python ") and "examples/" in line]


def test_example_commands_run_as_written(tmp_path):
    commands = example_commands()
    assert len(commands) == 3
    for name in ["novelsum.py", "novelselect.py", "embedding.py", "utils",
                 "examples"]:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    python = f'"{sys.executable}"'
    for command in commands:
        result = subprocess.run(command.replace("python ", f"{python} ", 1).replace(
            "$(python ", f"$({python} "), shell=True, cwd=tmp_path, capture_output=True,
            text=True, executable="/bin/bash")
        assert result.returncode == 0, (command, result.stderr[-2000:])
    outputs = tmp_path / "outputs"  # where .gitignore keeps the quick start's results
    assert (outputs / "picked" / "novelselect_80_dense_0.5_dist_1.0_indices.json").is_file()
    assert sorted(p.name for p in (outputs / "my_embeddings").iterdir()) == [
        ".embedding_run.json", "0.json", "1.json", "2.json", "3.json"]
    for picture in ["novelsum_examples.png",
                    "picked/novelselect_80_dense_0.5_dist_1.0_novelty.png"]:
        assert (outputs / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for shard in (REPO / "examples" / "pool" / "embeddings").glob("*.json"):
        shipped = np.array(json.loads(shard.read_text()))
        fresh = np.array(json.loads((outputs / "my_embeddings" / shard.name).read_text()))
        assert np.sum(shipped * fresh, axis=1).min() >= 0.999  # unit vectors: cosine

    with open(outputs / "novelsum_examples.csv", newline="") as handle:
        measured = {row["Dataset Name"]: row for row in csv.DictReader(handle)}
    table = README.split("| subset | NovelSum |")[1].split("\n\n")[0].splitlines()
    columns = ["neighbor_10_density_0.5_distance_1"] + [
        c.strip() for c in table[0].strip(" |").split("|")]
    quoted = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert sorted(row[0] for row in quoted) == sorted(measured) and len(quoted) == 8
    for name, *values in quoted:
        for column, value in zip(columns, values, strict=True):
            assert f"{float(measured[name][column]):.3f}" == value, (name, column)


def test_quick_start_outputs_are_ignored_by_git():
    """The quick start writes only under folders that .gitignore keeps out of git status."""
    import subprocess

    targets = [word for command in example_commands() for option, word in
               zip(command.split(), command.split()[1:])
               if option in ("--output_csv", "--output_dir", "--per_sample_csv")]
    assert len(targets) == 4
    for target in targets:
        result = subprocess.run(["git", "check-ignore", "-q", "--no-index", target], cwd=REPO)
        assert result.returncode == 0, f"{target} would show in git status"


def test_ci_installs_exactly_what_the_readme_says():
    """.ci/run runs the README's install lines, as written, and its test command."""
    ci_commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                   if line.strip().startswith("python")]
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    readme_commands = {line.strip() for block in blocks for line in block.splitlines()}
    assert ci_commands and all(command in readme_commands for command in ci_commands)
    assert ci_commands[-1].startswith("python -m pytest")
    assert "python -m pip install torch==2.13.0" in ci_commands[0]
