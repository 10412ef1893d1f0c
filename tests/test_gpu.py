"""The GPU paths against the CPU results. Marked ``gpu``: they need CUDA and are skipped, with
a reason naming the missing device, without it.

Run them on a GPU machine with ``python -m pytest -m gpu -ra`` (``bash benchmarks/gpu_check.sh``
does, and fails on a skip there).
"""

import json

import numpy as np
import pytest
from conftest import GOLDEN, clustered_vectors

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA device: GPU path unchecked on this machine")]


@pytest.mark.parametrize("engine_name", ["torch", "triton"])
def test_gpu_selection_reproduces_golden_picks(engine_name):
    from utils.density.factor import DensityReference, density_factor
    from utils.io.vectors import load_vectors
    from utils.numerics.rows import unit_rows
    from utils.selection.selection_engine import first_pick
    from utils.selection.engine_choice import select
    from utils.selection.gpu import TorchEngine, TritonEngine

    if engine_name == "triton":
        pytest.importorskip("triton", reason="the fused GPU kernel needs Triton")
    engine_type = {"torch": TorchEngine, "triton": TritonEngine}[engine_name]
    vectors = load_vectors(GOLDEN / "novelselect" / "embeddings").vectors
    for run in json.loads((GOLDEN / "novelselect" / "expected.json").read_text()):
        k = run["neighbors"]
        mean_sq = DensityReference(vectors, "cuda:0").mean_sq_distances(vectors, [k])[k]
        rho = density_factor(mean_sq, run["density_power"]).astype(np.float32)
        unit = unit_rows(vectors)
        engine = engine_type(unit, rho, run["k"], run["distance_power"], "cuda:0")
        picks = select(unit, rho, run["k"], run["distance_power"],
                       first_pick(len(vectors), run["seed"]), engine=engine)
        assert picks == run["indices"]


@pytest.mark.parametrize("block", [4, 512])
def test_triton_kernel_equals_torch_kernel_on_gpu(block):
    """Same picks, same stored values, same sums after 1,100 picks from 3,000 candidates."""
    pytest.importorskip("triton", reason="the fused GPU kernel needs Triton")
    from utils.numerics.rows import unit_rows
    from utils.selection.engine_choice import select
    from utils.selection.gpu import TorchEngine, TritonEngine, triton_self_check

    assert triton_self_check("cuda:0") is None
    unit = unit_rows(clustered_vectors(3000, 64, seed=22))
    rho = np.random.default_rng(0).uniform(0.5, 2.0, 3000).astype(np.float32)
    fused = TritonEngine(unit, rho, 1101, 1.0, "cuda:0", block=block)
    plain = TorchEngine(unit, rho, 1101, 1.0, "cuda:0")
    assert select(unit, rho, 1101, 1.0, 7, engine=fused) == select(unit, rho, 1101, 1.0, 7,
                                                                     engine=plain)
    active = fused.active.bool()
    assert bool((fused.sorted_values[active] == plain.sorted_values[active]).all())
    np.testing.assert_allclose(fused.weighted_sums[active].cpu().numpy(),
                               plain.weighted_sums[active].cpu().numpy(), rtol=1e-12)


@pytest.mark.parametrize("engine_name", ["torch", "triton"])
def test_gpu_values_equal_cpu_values_bitwise_and_duplicates_tie(tmp_path, engine_name):
    """The fixed-order distances make the GPU engines' values equal the numba engine's, bit
    for bit, and exact duplicates at odd offsets in other shards tie exactly on the GPU."""
    from test_selection import check_lowest_first, duplicate_pool, picks_beside_numba

    from utils.density.factor import DensityReference, density_factor
    from utils.numerics.rows import unit_rows
    from utils.selection.gpu import TorchEngine, TritonEngine

    if engine_name == "triton":
        pytest.importorskip("triton", reason="the fused GPU kernel needs Triton")
    vectors, groups = duplicate_pool(tmp_path)
    rho = density_factor(DensityReference(vectors, "cuda:0").mean_sq_distances(vectors, [10])[10],
                         0.5).astype(np.float32)
    for group in groups:
        assert len(set(rho[group].tolist())) == 1, group
    unit = unit_rows(vectors)
    engine = {"torch": TorchEngine, "triton": TritonEngine}[engine_name](
        unit, rho, 40, 1.0, "cuda:0")
    assert check_lowest_first(picks_beside_numba(engine, unit, rho, groups), groups) >= 10


def test_gpu_novelsum_profile_and_knn_equal_cpu():
    from utils.density.factor import DensityReference
    from utils.metrics.proximity import proximity_profile

    vectors = clustered_vectors(3000, 64, seed=21)
    cpu_means, cpu_total = proximity_profile(vectors, [0, 1, 2])
    gpu_means, gpu_total = proximity_profile(vectors, [0, 1, 2], device="cuda:0", block_mib=64)
    np.testing.assert_allclose(gpu_means.mean(axis=0), cpu_means.mean(axis=0), rtol=1e-6)
    assert gpu_total == pytest.approx(cpu_total, rel=1e-6)
    # the CPU side uses the torch search too (tests/test_density.py checks it against faiss),
    # so that this file runs on GPU machines without faiss
    by_cpu = DensityReference(vectors, backend="torch").mean_sq_distances(vectors[:500], [5, 10])
    by_gpu = DensityReference(vectors, "cuda:0").mean_sq_distances(vectors[:500], [5, 10])
    for k in (5, 10):
        np.testing.assert_allclose(by_gpu[k], by_cpu[k], rtol=1e-5)


@pytest.mark.parametrize("run", json.loads((GOLDEN / "novelselect" / "expected.json").read_text()),
                         ids=lambda r: f"k{r['k']}_a{r['distance_power']}")
def test_novelselect_cli_on_gpu_reproduces_golden_picks_with_the_fused_kernel(tmp_path, run):
    from click.testing import CliRunner
    from test_novelselect_cli import run_args

    from utils.cli.novelselect import main

    pytest.importorskip("triton", reason="the fused GPU kernel needs Triton")
    args = [a for a in run_args(run, tmp_path / "out") if a != "--quiet"] + ["--gpu_id", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "fused Triton kernel is not used" not in result.output
    assert "peak GPU memory" in result.output
    stem = f"novelselect_{run['k']}_dense_{float(run['density_power'])}" \
           f"_dist_{float(run['distance_power'])}"
    assert json.loads((tmp_path / "out" / f"{stem}_indices.json").read_text()) == run["indices"]


@pytest.mark.parametrize("engine_name", ["torch", "triton"])
def test_gpu_engines_beside_a_given_set_and_resumed_pick_as_the_cpu(engine_name):
    """The device counterparts of the interpreter tests in test_given.py and test_resume.py:
    a given set, and runs resumed from prefixes, pick as the numpy engine does."""
    from utils.numerics.rows import unit_rows
    from utils.selection.cpu import NumpyEngine
    from utils.selection.engine_choice import select
    from utils.selection.gpu import TorchEngine, TritonEngine

    if engine_name == "triton":
        pytest.importorskip("triton", reason="the fused GPU kernel needs Triton")
    engine_type = {"torch": TorchEngine, "triton": TritonEngine}[engine_name]
    pool, given = clustered_vectors(600, 32, n_clusters=6, seed=34), clustered_vectors(
        40, 32, n_clusters=2, seed=35)
    unit, given_unit = unit_rows(pool), unit_rows(given)
    factors = np.random.default_rng(0).uniform(0.5, 2.0, len(pool)).astype(np.float32)
    given_factors = np.random.default_rng(1).uniform(0.5, 2.0, len(given)).astype(np.float32)
    for alpha in (1.0, 2.0):
        expected = select(unit, factors, 60, alpha, [],
                          engine=NumpyEngine(unit, factors, 60 + len(given), alpha),
                          given=(given_unit, given_factors))
        engine = engine_type(unit, factors, 60 + len(given), alpha, "cuda:0")
        assert select(unit, factors, 60, alpha, [], engine=engine,
                      given=(given_unit, given_factors)) == expected
        picks = select(unit, factors, 60, alpha, 3, engine=NumpyEngine(unit, factors, 60, alpha))
        for t in (1, 17, 59):
            engine = engine_type(unit, factors, 60, alpha, "cuda:0")
            assert select(unit, factors, 60, alpha, picks[:t], engine=engine) == picks, t
