"""The CPU engine's numpy kernels (small selections) against its numba kernels, bit for bit."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import GOLDEN, REPO, clustered_vectors

from utils.density.reference import pool_density
from utils.io.vectors import load_vectors
from utils.numerics.rows import unit_rows
from utils.selection.cpu import NumpyEngine, uses_numpy_kernels
from synthetic import with_duplicates


def awkward_pool():
    """Clustered rows with exact duplicates, near-copies (dots that round above 1, so negative
    values) and density factors of zero (values of -0.0 and +0.0)."""
    vectors = with_duplicates(clustered_vectors(300, 24, n_clusters=4, seed=41),
                              {3: [150, 299], 20: [21]})
    vectors[60:70] = vectors[59] + np.float32(1e-7) * np.arange(1, 11, dtype=np.float32)[:, None]
    factors = pool_density(vectors, 5, 0.5)
    factors[[59, 60, 61, 3]] = 0.0
    return unit_rows(vectors), factors


def golden_pool():
    run = json.loads((GOLDEN / "novelselect" / "expected.json").read_text())[0]
    vectors = load_vectors(GOLDEN / "novelselect" / "embeddings").vectors
    return unit_rows(vectors), pool_density(vectors, run["neighbors"], run["density_power"])


def state(engine):
    """The active rows' sorted values, weighted sums and latest values, as raw bits."""
    active = engine.active
    return (engine.sorted_values[active, :engine.t].view(np.uint32),
            engine.weighted_sums[active].view(np.uint64), engine.values[active].view(np.uint32))


@pytest.mark.parametrize("pool", [awkward_pool, golden_pool])
@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_every_step_leaves_the_numba_kernels_bits(pool, alpha):
    unit, factors = pool()
    quality = np.random.default_rng(2).uniform(0.5, 1.5, len(unit))
    numba_engine = NumpyEngine(unit, factors, 60, alpha, kernels="numba")
    numpy_engine = NumpyEngine(unit, factors, 60, alpha, kernels="numpy")
    assert numpy_engine.small and not numba_engine.small
    pick = 59
    for _ in range(59):
        numba_engine.add_pick(pick)
        numpy_engine.add_pick(pick)
        for numba_bits, numpy_bits in zip(state(numba_engine), state(numpy_engine)):
            assert np.array_equal(numba_bits, numpy_bits)
        pick = numba_engine.best(quality)[0]
        assert numpy_engine.best(quality)[0] == pick


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_rebuild_leaves_the_numba_kernels_sums_and_the_insertions_values(alpha):
    """Rebuilt sums are numba's bit for bit; the sorted values equal numba's (whose sort may
    put -0.0 and +0.0 the other way round) and are bitwise those the insertions leave."""
    unit, factors = awkward_pool()
    picks = NumpyEngine(unit, factors, 80, alpha, kernels="numba").run(59)
    inserted = NumpyEngine(unit, factors, 80, alpha, kernels="numpy")
    for t in [1, 2, 33, 79]:
        while inserted.t < t:
            inserted.add_pick(picks[inserted.t])
        rebuilt = {}
        for kernels in ("numba", "numpy"):
            engine = NumpyEngine(unit, factors, 80, alpha, block_mib=1 / 256, kernels=kernels)
            assert len(engine.rebuild(picks[:t])) > 1  # in several row blocks
            rebuilt[kernels] = engine
        numba_bits, numpy_bits = state(rebuilt["numba"]), state(rebuilt["numpy"])
        assert np.array_equal(numba_bits[1], numpy_bits[1])
        assert np.array_equal(numba_bits[0].view(np.float32), numpy_bits[0].view(np.float32))
        assert np.array_equal(numpy_bits[0], state(inserted)[0])


def test_the_kernels_follow_the_size_of_the_selection():
    assert uses_numpy_kernels("auto", 500, 20, 16)
    assert not uses_numpy_kernels("auto", 5_000, 1_000, 256)
    assert uses_numpy_kernels("numpy", 5_000, 1_000, 256)
    assert not uses_numpy_kernels("numba", 500, 20, 16)
    with pytest.raises(ValueError, match="kernels must be one of auto, numba, numpy, not 'c'"):
        uses_numpy_kernels("c", 500, 20, 16)


def test_a_small_selection_starts_no_numba(tmp_path):
    """A golden NovelSelect run through the command finishes without importing numba or torch
    (numba's import and first kernel load cost about 0.8 s) and gives the golden picks."""
    case = GOLDEN / "novelselect"
    run = json.loads((case / "expected.json").read_text())[0]
    code = ("import sys; from utils.cli.novelselect import main; "
            f"main(['--embedding_dir', r'{case / 'embeddings'}', '--text_dir', "
            f"r'{case / 'texts'}', '--output_dir', r'{tmp_path}', '--k', '{run['k']}', "
            f"'--neighbors', '{run['neighbors']}', '--density_power', "
            f"'{run['density_power']}', '--distance_power', '{run['distance_power']}', "
            f"'--seed', '{run['seed']}', '--gpu_id', '-1', '--quiet'], standalone_mode=False); "
            "print('numba' in sys.modules, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False False"
    written = sorted(tmp_path.glob("*_indices.json"))
    assert len(written) == 1 and json.loads(written[0].read_text()) == run["indices"]
