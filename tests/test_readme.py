"""The README and docs/ stay true: every option documented with its default, the README's
commands run as written, the quoted numbers are what they produce, and CI installs what the
README says."""

import csv
import importlib
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

README = (REPO / "README.md").read_text()
DOCS = REPO / "docs"
CLI_DOC = (DOCS / "cli.md").read_text()
RESULTS_DOC = (DOCS / "reading-results.md").read_text()
DEVELOPMENT_DOC = (DOCS / "development.md").read_text()
SCRIPTS = ["embedding.py", "novelsum.py", "novelselect.py"]

def bash_lines(text):
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()]


def script_options(module):
    return [opt for param in module.main.params for opt in param.opts if "_" in opt or
            opt in ("--k", "--seed", "--backend", "--overwrite", "--quiet", "--neighbors",
                                   "--debug")]


def cli_section(script):
    """The part of docs/cli.md under the heading `## {script}.py`, up to the next `## `."""
    return CLI_DOC.split(f"\n## {script}.py\n")[1].split("\n## ")[0]


def option_rows(section):
    """First cell -> second cell of every table row of a section."""
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `--") and len(cells) >= 3:
            rows[cells[0]] = cells[1]
    return rows


@pytest.mark.parametrize("script", ["novelsum", "novelselect", "embedding", "report"])
def test_every_option_is_in_the_cli_doc(script):
    module = __import__(script)
    section = cli_section(script)
    for option in script_options(module):
        assert f"`{option}`" in section, f"{option} of {script}.py is not in docs/cli.md"


@pytest.mark.parametrize("script", ["novelsum", "novelselect", "embedding"])
def test_documented_defaults_are_the_code_defaults(script):
    """A shown default (a number or a word) appears, in backticks, in the option's row."""
    module = __import__(script)
    rows = option_rows(cli_section(script))
    checked = 0
    for param in module.main.params:
        if param.show_default is not True or not isinstance(param.default, (int, float, str)):
            continue
        row = next(cells for first, cells in rows.items() if f"`{param.opts[0]}`" in first)
        assert f"`{str(param.default).replace(',', ' ')}`" in row, (param.opts[0], row)
        checked += 1
    assert checked >= 3


def readme_commands():
    """The README's runnable commands: the three scripts, on the examples, in README order."""
    return [line for line in bash_lines(README)
            if re.match(r"python (novelsum|novelselect|embedding)\.py ", line)]


def test_readme_shows_the_run_then_embed_measure_select():
    scripts = [command.split()[1] for command in readme_commands()]
    assert scripts == ["novelsum.py", "embedding.py", "novelsum.py", "novelselect.py",
                       "novelselect.py", "novelsum.py"]


def test_readme_is_short_and_links_every_doc():
    assert len(README.splitlines()) <= 250
    for name in ["cli.md", "method.md", "distributed.md", "benchmarks.md",
                 "reading-results.md", "development.md"]:
        assert f"(docs/{name}" in README and (DOCS / name).is_file(), name
    assert "(docs/images/example_novelsum.png)" in README
    assert 'python -m pytest -m "not slow"' in bash_lines(README)


def documentation():
    return {"README.md": README} | {f"docs/{p.name}": p.read_text() for p in DOCS.glob("*.md")}


def test_links_and_code_paths_in_the_docs_exist():
    """Relative links resolve, and every `folder/file.py` named exists (docs/method.md's table
    names modules relative to utils/), so a moved module cannot leave a stale path behind."""
    for name, text in documentation().items():
        base = (REPO / name).parent
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (base / target).exists(), (name, target)
        for path in re.findall(r"`([\w./-]+/[\w-]+\.py)`", text):
            assert (REPO / path).is_file() or (REPO / "utils" / path).is_file(), (name, path)
        for old in ["cli_common", "utils/selection.py", "utils/density.py", "utils.shards",
                    "utils/metrics.py"]:
            assert old not in text, (name, old)


def test_python_api_names_exist():
    """Every `nt.NAME` of the README's Python block is in the installed package."""
    package = importlib.import_module("utils")  # novelsum_toolkit, as it is in the checkout
    block = README.split("```python\n")[1].split("```")[0]
    names = set(re.findall(r"\bnt\.(\w+)", block)) | {"InputError"}
    assert {"novelsum", "novelselect", "embed_texts"} <= names
    for name in names:
        assert hasattr(package, name), name


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    commands = readme_commands()
    assert len(commands) == 6
    for name in SCRIPTS + ["utils", "examples"]:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    python = f'"{sys.executable}"'
    printed = []
    for command in commands:
        result = subprocess.run(command.replace("python ", f"{python} ", 1).replace(
            "$(python ", f"$({python} "), shell=True, cwd=tmp_path, capture_output=True,
            text=True, executable="/bin/bash")
        assert result.returncode == 0, (command, result.stderr[-2000:])
        printed.append(result.stdout)
    check_the_given_set_example(tmp_path / "outputs", printed[-1])
    outputs = tmp_path / "outputs"  # where .gitignore keeps the README's results
    assert (outputs / "picked" / "novelselect_80_dense_0.5_dist_1.0_indices.json").is_file()
    assert sorted(p.name for p in (outputs / "my_embeddings").iterdir()
                  if not p.name.endswith(".source.json")) == [  # beside: each shard's source
        ".embedding_run.json", "0.json", "1.json", "2.json", "3.json"]
    page = (outputs / "picked.html").read_text()  # the README's --report: a selection's page
    assert "NovelSelect: 80 picks of 744 rows" in page and 'id="map"' in page
    for picture in ["novelsum_examples.png",
                    "picked/novelselect_80_dense_0.5_dist_1.0_novelty.png"]:
        assert (outputs / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for shard in (REPO / "examples" / "pool" / "embeddings").glob("[!.]*.json"):
        shipped = np.array(json.loads(shard.read_text()))
        fresh = np.array(json.loads((outputs / "my_embeddings" / shard.name).read_text()))
        assert np.sum(shipped * fresh, axis=1).min() >= 0.999  # unit vectors: cosine
    with open(outputs / "my_novelsum.csv", newline="") as handle:
        assert [row["Dataset Name"] for row in csv.DictReader(handle)] == ["my_embeddings"]

    # The example table of docs/reading-results.md is what the README's run command writes.
    assert commands[0] in bash_lines(RESULTS_DOC)
    with open(outputs / "novelsum_examples.csv", newline="") as handle:
        measured = {row["Dataset Name"]: row for row in csv.DictReader(handle)}
    table = RESULTS_DOC.split("| subset | NovelSum |")[1].split("\n\n")[0].splitlines()
    columns = ["neighbor_10_density_0.5_distance_1"] + [
        c.strip() for c in table[0].strip(" |").split("|")]
    quoted = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert sorted(row[0] for row in quoted) == sorted(measured) and len(quoted) == 8
    for name, *values in quoted:
        for column, value in zip(columns, values, strict=True):
            assert f"{float(measured[name][column]):.3f}" == value, (name, column)


def test_readme_outputs_are_ignored_by_git():
    """The README's commands write only under folders that .gitignore keeps out of git status."""
    targets = [word for command in readme_commands() for option, word in
               zip(command.split(), command.split()[1:])
               if option in ("--output_csv", "--output_dir", "--per_sample_csv", "--report")]
    assert len(targets) == 7
    for target in targets:
        result = subprocess.run(["git", "check-ignore", "-q", "--no-index", target], cwd=REPO)
        assert result.returncode == 0, f"{target} would show in git status"


def test_ci_installs_exactly_what_the_docs_say():
    """.ci/run runs the README's install line as written, then only commands the docs give:
    the README's test command, then vLLM's environment as docs/embedding.md builds it and the
    tests marked vllm in it, as docs/development.md says."""
    ci_commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                   if line.strip().startswith(("python", ".venv-vllm/bin/python"))]
    readme_commands_ = set(bash_lines(README))
    documented = (readme_commands_ | set(bash_lines(DEVELOPMENT_DOC))
                  | set(bash_lines((DOCS / "embedding.md").read_text())))
    assert ci_commands and all(command in documented for command in ci_commands)
    assert ci_commands[0] in readme_commands_
    assert "python -m pip install torch==2.13.0" in ci_commands[0]
    main_env = [command for command in ci_commands if command.startswith("python -m pip")
                or command.startswith("python -m pytest")]
    assert main_env[-1].startswith("python -m pytest") and main_env[-1] in readme_commands_
    assert ci_commands[-1] == ".venv-vllm/bin/python -m pytest -m vllm"


def check_the_given_set_example(outputs, printed):
    """The README's numbers for --given_dir: no MT-Bench question among the 40 picks (four
    without it), and the gains table as the command prints it."""
    grown = json.loads((outputs / "grown" / "novelselect_40_dense_0.5_dist_1.0_indices.json")
                       .read_text())
    from utils.api import novelselect
    from utils.io.vectors import load_vectors

    plain = novelselect(load_vectors(REPO / "examples" / "pool" / "embeddings").vectors,
                        40).picks
    mtbench = 80  # examples/pool/text/0.json: the first 80 rows
    assert len(grown) == 40 and not [i for i in grown if i < mtbench]
    assert len([i for i in plain if i < mtbench]) == 4
    assert quoted_gains().strip() in printed


def quoted_gains():
    """The gains table the README quotes for its --given_dir example."""
    return README.split("prints each subset's gain over MT-Bench alone:\n\n```\n")[1] \
        .split("```")[0]


def test_the_readme_gains_are_novelsum_in_float64():
    """The README's gains table against the SPEC's NovelSum in float64 (tests/oracles.py):
    the given set alone, each subset beside it, and the difference."""
    from oracles import novelsum_float64

    quoted = quoted_gains()
    pool = np.concatenate([np.array(json.loads((REPO / "examples" / "pool" / "embeddings" /
                                                f"{i}.json").read_text())) for i in range(4)])
    subsets = REPO / "examples" / "subsets"
    given = np.load(subsets / "mtbench_80.npy").astype(np.float64)
    alone = novelsum_float64(given, pool)
    lines = quoted.strip().splitlines()
    assert float(lines[0].split("(")[1].split()[0]) == pytest.approx(alone, rel=6e-6)
    for line in lines[2:]:
        name, with_it, gain = line.split()
        together = novelsum_float64(np.concatenate([given, np.load(subsets / f"{name}.npy")]),
                                    pool)
        assert float(with_it) == pytest.approx(together, rel=6e-6)  # 6 digits printed
        assert float(gain) == pytest.approx(together - alone, rel=6e-6, abs=2e-6)

