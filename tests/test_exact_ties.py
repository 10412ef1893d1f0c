"""Exact ties go to the lowest index (docs/method.md section 6), on every engine: picks on
binary pools against NovelSelect in exact arithmetic (tests/exact_oracle.py).

What these tests prove: on pools of binary rows with 1 to 4 ones (beta = 0; alpha 0, 0.5, 1
and 2; beside a given set; resumed from prefixes), every pick of every engine is the lowest
index among the candidates whose exact novelty ties with the largest, and no pick is more than
the tie tolerance (2^-22 relative) plus the float32 rounding of the values (2^-23) below the
exact largest. Rows with 1, 2 or 4 ones have dyadic values (exact in float32); with 3 ones the
values are thirds, each rounded once, and exact ties hold through the tolerance. Where two
exact novelties differ by less than the tolerance, the lower index may win (a near-tie).
"""

import json

import numpy as np
import pytest
from exact_oracle import ALPHAS, binary_pool, exact_selection, tie_failures

from utils.cli.novelselect import main
from utils.numerics.rows import unit_rows
from utils.selection.cpu import NumpyEngine
from utils.selection.engine_choice import select
from utils.selection.gpu import TorchEngine

# docs/method.md section 6: a tie is a score within 2^-22 of the largest; a computed relative
# gap lies within 2^-23 (each of two sums rounded by at most 2^-24) plus 1e-12 (float64 sums)
# of the exact one.
TIE_RTOL = 2.0**-22
ROUNDING = 2.0**-23 + 1e-12

ENGINES = {"numpy": lambda u, r, k, a: NumpyEngine(u, r, k, a, kernels="numpy"),
           "numba": lambda u, r, k, a: NumpyEngine(u, r, k, a, kernels="numba"),
           "torch-cpu": lambda u, r, k, a: TorchEngine(u, r, k, a, "cpu", block_mib=1 / 64)}


def first_of(seed, n=100):
    return int(np.random.RandomState(seed).randint(0, n))


@pytest.mark.parametrize("alpha", [0, 1])
@pytest.mark.parametrize("hot", [2, 3])
@pytest.mark.parametrize("seed", [1001, 1002])
def test_the_review_runs_pick_as_exact_arithmetic(runner, tmp_path, seed, hot, alpha):
    """novelselect.py --k 30 --neighbors 5 --density_power 0 --distance_power ALPHA --seed 1
    on 100 x 8 binary rows. With two ones and alpha 0 it once picked row 18 (seed 1001, step 4)
    and row 2 (seed 1002) where rows 0 and 1 tie exactly."""
    pool = binary_pool(seed, hot)
    (tmp_path / "emb").mkdir()
    (tmp_path / "texts").mkdir()
    np.save(tmp_path / "emb" / "0.npy", pool)
    (tmp_path / "texts" / "0.json").write_text(json.dumps([f"s{i}" for i in range(len(pool))]))
    result = runner.invoke(main, [
        "--text_dir", str(tmp_path / "texts"), "--figure_dir", str(tmp_path / "emb"),
        "--output_dir", str(tmp_path / "out"), "--k", "30", "--neighbors", "5",
        "--density_power", "0", "--distance_power", str(alpha), "--seed", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    picks = json.loads((tmp_path / "out" / f"novelselect_30_dense_0.0_dist_{float(alpha)}"
                        "_indices.json").read_text())
    assert picks == exact_selection(pool, 30, alpha, first_of(1))


@pytest.mark.parametrize("engine, seed", [(name, 1001) for name in ENGINES] + [("numpy", 1002)])
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("hot", [1, 2, 3, 4])
def test_every_engine_breaks_exact_ties_to_the_lowest_index(engine, seed, alpha, hot):
    pool = binary_pool(seed, hot)
    unit, factors = unit_rows(pool), np.ones(len(pool), dtype=np.float32)
    picks = select(unit, factors, 30, alpha, first_of(seed),
                   engine=ENGINES[engine](unit, factors, 30, alpha))
    assert tie_failures(pool, picks, alpha, TIE_RTOL, ROUNDING) == []


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("hot", [2, 3])
@pytest.mark.slow
def test_resumed_runs_pick_as_exact_arithmetic(engine, alpha, hot):
    pool = binary_pool(1003, hot)
    unit, factors = unit_rows(pool), np.ones(len(pool), dtype=np.float32)
    full = select(unit, factors, 30, alpha, first_of(7),
                  engine=ENGINES[engine](unit, factors, 30, alpha))
    assert tie_failures(pool, full, alpha, TIE_RTOL, ROUNDING) == []
    for t in (2, 4, 11, 29):
        assert select(unit, factors, 30, alpha, full[:t],
                      engine=ENGINES[engine](unit, factors, 30, alpha)) == full, t


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("hot", [1, 2, 3, 4])
def test_picks_beside_a_given_set_pick_as_exact_arithmetic(engine, alpha, hot):
    pool, given = binary_pool(1004, hot), binary_pool(2004, hot, n=6)
    unit, factors = unit_rows(pool), np.ones(len(pool), dtype=np.float32)
    picks = select(unit, factors, 24, alpha, [],
                   engine=ENGINES[engine](unit, factors, 24 + len(given), alpha),
                   given=(unit_rows(given), np.ones(len(given), dtype=np.float32)))
    assert tie_failures(pool, picks, alpha, TIE_RTOL, ROUNDING, given=list(given),
                        start=0) == []


@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("hot", [2, 3])
@pytest.mark.slow
def test_the_triton_kernel_breaks_exact_ties_to_the_lowest_index(alpha, hot):
    """In Triton's interpreter on the CPU (tests/conftest.py); 12 picks, as it is slow."""
    pytest.importorskip("triton", reason="Triton checks the GPU kernel here: pip install triton")
    from utils.selection.gpu import TritonEngine

    pool = binary_pool(1001, hot)
    unit, factors = unit_rows(pool), np.ones(len(pool), dtype=np.float32)
    engine = TritonEngine(unit, factors, 12, alpha, "cpu", block=4)
    picks = select(unit, factors, 12, alpha, first_of(1), engine=engine)
    assert tie_failures(pool, picks, alpha, TIE_RTOL, ROUNDING) == []


def test_a_pick_s_duplicate_gets_the_value_zero():
    """cos(u, u) is 1 exactly for any row (docs/method.md section 6), so a duplicate of a pick
    stores the value 0 on every engine; with two ones a unit row's own dot was 0.99999994."""
    pool = binary_pool(1001, 2)
    pool[1] = pool[0]
    rng = np.random.default_rng(5)
    pool[2] = rng.normal(size=8).astype(np.float32)
    pool[3] = pool[2]
    unit, factors = unit_rows(pool), np.ones(len(pool), dtype=np.float32)
    for name, make in ENGINES.items():
        for pick, twin in [(0, 1), (2, 3)]:
            engine = make(unit, factors, 3, 0.0)
            engine.add_pick(pick)
            values = np.asarray(engine.sorted_values[:, 0])
            assert values[twin] == 0.0, (name, pick)
