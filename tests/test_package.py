"""The installed package: `pip install .` gives `novelsum_toolkit` and the three commands, which
work from any folder (a user's own `utils.py` there neither shadows nor is shadowed)."""

import csv
import os
import subprocess
import sys

import pytest

from conftest import GOLDEN, REPO

pytestmark = pytest.mark.slow

COMMANDS = {"novelsum": "novelsum.py", "novelselect": "novelselect.py",
            "novelsum-embed": "embedding.py"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package installed into a folder of its own (its dependencies are this
    environment's), and a working folder holding a `utils.py` that must never be imported."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                             "--no-build-isolation", "--target", str(target), str(REPO)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "utils.py").write_text("raise SystemExit('the user utils.py was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    return target, elsewhere, env


def run_in(folder, env, *command):
    return subprocess.run([str(part) for part in command], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_has_exactly_the_script_s_options(installed, command):
    target, elsewhere, env = installed
    ours = run_in(elsewhere, env, target / "bin" / command, "--help")
    assert ours.returncode == 0, ours.stderr
    script = run_in(REPO, os.environ, sys.executable, COMMANDS[command], "--help")
    assert ours.stdout == script.stdout.replace(f"Usage: {COMMANDS[command]} ",
                                                f"Usage: {command} ")


def test_the_installed_api_gives_the_csv_s_number(installed, tmp_path):
    target, elsewhere, env = installed
    case = GOLDEN / "novelsum_default_grid"
    result = run_in(elsewhere, env, target / "bin" / "novelsum", "--multi_datasets_dir",
                    case / "targets", "--dense_ref_dir", case / "reference", "--output_csv",
                    tmp_path / "out.csv", "--gpu_id", "-1")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out.csv") as handle:
        rows = {row["Dataset Name"]: row for row in csv.DictReader(handle)}
    code = ("import sys, novelsum_toolkit as nt\n"
            "from novelsum_toolkit.io.vectors import load_vectors\n"
            "target, reference = (load_vectors(p).vectors for p in sys.argv[1:3])\n"
            "print(repr(nt.novelsum_score(target, reference=reference)))\n"
            "print(nt.novelsum.__module__)\n")
    score = run_in(elsewhere, env, sys.executable, "-c", code,
                   case / "targets" / "subset_a.json", case / "reference")
    assert score.returncode == 0, score.stderr
    value, module = score.stdout.split()
    assert float(value) == float(rows["subset_a"]["neighbor_10_density_0.5_distance_1"])
    assert module == "novelsum_toolkit.api"
