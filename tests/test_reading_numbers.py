"""The numbers docs/reading-results.md quotes on dataset size and on negative gains: the script
that measures them, and an independent float64 NovelSum written here (SPEC sections 3-4)."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from oracles import novelsum_float64

POOL = REPO / "examples" / "pool" / "embeddings"
DOC = (REPO / "docs" / "reading-results.md").read_text()
PROSE = " ".join(DOC.split())  # the doc's words, line breaks aside


def shard(i):
    return np.asarray(json.loads((POOL / f"{i}.json").read_text()), dtype=np.float64)


@pytest.fixture(scope="module")
def sources():
    mt_bench, humaneval = shard(0), shard(3)
    sharegpt = np.concatenate([shard(1), shard(2)])
    return mt_bench, sharegpt, humaneval, np.concatenate([mt_bench, sharegpt, humaneval])


def test_a_negative_gain_comes_from_the_datasets_own_redundancy(sources):
    mt_bench, sharegpt, humaneval, pool = sources
    given = novelsum_float64(mt_bench, pool)
    alone = novelsum_float64(humaneval, pool)
    together = novelsum_float64(np.concatenate([mt_bench, humaneval]), pool)
    assert together - given < 0 and alone < given  # lower alone: it lowers the mean
    quoted = (f"the 164 HumanEval prompts beside the 80 MT-Bench questions ({given:.3f} alone) "
              f"give {together:.3f}, a gain of {together - given:.3f}")
    assert quoted in PROSE
    assert f"their NovelSum alone is {alone:.3f}" in PROSE
    sharegpt_alone = novelsum_float64(sharegpt, pool)
    sharegpt_gain = novelsum_float64(np.concatenate([mt_bench, sharegpt]), pool) - given
    assert f"The 500 ShareGPT conversations ({sharegpt_alone:.3f} alone) give " \
           f"{sharegpt_gain:+.3f}" in PROSE


@pytest.mark.slow
def test_the_size_curve_is_what_the_script_measures(sources):
    _mt_bench, sharegpt, _humaneval, pool = sources
    printed = subprocess.run([sys.executable, str(REPO / "benchmarks" / "novelsum_size.py"),
                              "--draws", "10"], capture_output=True, text=True, check=True,
                             cwd=REPO).stdout
    measured = [[float(cell) for cell in line.split()] for line in printed.splitlines()
                if re.fullmatch(r"\s*\d+(\s+[\d.]+){4}", line)]
    table = DOC.split("| rows | NovelSum, mean |")[1].split("\n\n")[0].splitlines()[2:]
    quoted = [[cell.strip() for cell in line.strip(" |").split("|")] for line in table]
    assert [int(row[0]) for row in quoted] == [int(row[0]) for row in measured]
    for doc_row, row in zip(quoted, measured):
        assert float(doc_row[1]) == pytest.approx(row[1], abs=5e-4)
    means = [row[1] for row in measured]
    assert means == sorted(means, reverse=True)  # falls with size, as the doc says
    assert measured[-1][1] == pytest.approx(novelsum_float64(sharegpt, pool), abs=5e-5)
