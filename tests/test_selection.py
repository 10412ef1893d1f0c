"""The NovelSelect engines against a direct recomputation (sort and weight from scratch)."""

import json

import numpy as np
import pytest

from conftest import GOLDEN, clustered_vectors
from utils.density import DensityReference, density_factor
from utils.errors import InputError
from utils.proximity import rank_weights, unit_rows
from utils.selection import (NumpyEngine, TorchEngine, check_memory, check_quality_scores,
                             first_pick, select, selection_memory_bytes, tail_coefficients)

ENGINES = {"numba": lambda u, r, k, a: NumpyEngine(u, r, k, a),
           "torch-cpu": lambda u, r, k, a: TorchEngine(u, r, k, a, "cpu", chunk_mib=1)}


def pool_inputs(n=160, dim=12, seed=0, beta=0.5, k=5):
    vectors = clustered_vectors(n, dim, n_clusters=5, seed=seed)
    mean_sq = DensityReference(vectors).mean_sq_distances(vectors, [k])[k]
    return unit_rows(vectors), density_factor(mean_sq, beta).astype(np.float32)


def direct_novelty(history, alpha):
    """v(u) = (1/t) sum_r r^-alpha x_(r), each candidate's values sorted from scratch."""
    values = np.sort(np.stack(history, axis=1).astype(np.float64), axis=1)
    return values @ rank_weights(values.shape[1], alpha) / values.shape[1]


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("with_quality", [False, True])
def test_incremental_equals_direct_at_every_step(engine_name, alpha, with_quality):
    unit, rho = pool_inputs(seed=int(alpha * 10) + with_quality)
    quality = np.random.default_rng(1).uniform(0.2, 1.0, len(unit)) if with_quality else None
    picks = check_every_step(ENGINES[engine_name](unit, rho, 40, alpha), unit, rho, 40, alpha,
                             quality)
    assert picks == select(unit, rho, 40, alpha, picks[0], quality,
                           ENGINES[engine_name](unit, rho, 40, alpha))


def check_every_step(engine, unit, rho, k, alpha, quality):
    """Run the greedy loop on ``engine``, checking its state against a direct recomputation."""
    n = len(unit)
    picks, history = [first_pick(n, 3)], []
    for t in range(k - 1):
        engine.add_pick(picks[-1], t)
        history.append(np.asarray(engine.values, dtype=np.float32).copy())
        incremental = np.asarray(engine.weighted_sums_host()) / (t + 1)
        direct = direct_novelty(history, alpha)
        active = np.ones(n, dtype=bool)
        active[picks] = False
        np.testing.assert_allclose(incremental[active], direct[active], rtol=1e-9)
        stored = np.asarray(engine.sorted_values)[active, :t + 1]
        np.testing.assert_array_equal(stored, np.sort(np.stack(history, axis=1)[active], axis=1))
        score = direct * (quality if quality is not None else 1.0)
        score[~active] = -np.inf
        picks.append(int(np.argmax(score)))
    return picks


def test_tail_coefficients_make_the_insertion_identity_hold():
    weights = rank_weights(6, 1.0)
    old = np.array([0.1, 0.4, 0.7, 0.9])
    new_value, m = 0.5, 2  # lands after two stored values
    new = np.sort(np.append(old, new_value))
    updated = (old @ weights[:4] + weights[m] * new_value
               - tail_coefficients(weights)[m:4] @ old[m:])
    assert updated == pytest.approx(new @ weights[:5], rel=1e-15)


def golden_runs():
    return json.loads((GOLDEN / "novelselect" / "expected.json").read_text())


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("run", golden_runs(), ids=lambda r: f"k{r['k']}_a{r['distance_power']}")
def test_engines_reproduce_golden_picks(engine_name, run):
    from utils.shards import load_vectors

    vectors = load_vectors(GOLDEN / "novelselect" / "embeddings").vectors
    k_nn = run["neighbors"]
    mean_sq = DensityReference(vectors).mean_sq_distances(vectors, [k_nn])[k_nn]
    rho = density_factor(mean_sq, run["density_power"]).astype(np.float32)
    unit = unit_rows(vectors)
    engine = ENGINES[engine_name](unit, rho, run["k"], run["distance_power"])
    picks = select(unit, rho, run["k"], run["distance_power"],
                   first_pick(len(vectors), run["seed"]), engine=engine)
    assert picks == run["indices"]


def test_first_pick_is_numpy_randomstate_randint():
    assert first_pick(500, 42) == np.random.RandomState(42).randint(0, 500) == 102


def test_picks_are_unique_and_greedy_prefix_is_stable():
    unit, rho = pool_inputs(n=120, seed=7)
    longer = select(unit, rho, 31, 1.0, 0)
    shorter = select(unit, rho, 30, 1.0, 0)
    assert len(set(longer)) == 31
    assert longer[:30] == shorter


def test_ties_go_to_the_lowest_index():
    # four copies of two points: after picking row 0, rows 1, 5 and 7 are all at distance 2,
    # ties broken to the lowest index
    base = np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    vectors = base[[0, 1, 0, 0, 1, 1, 0, 1]]
    picks = select(unit_rows(vectors), np.ones(8, dtype=np.float32), 3, 1.0, 0)
    assert picks[:2] == [0, 1]
    assert picks[2] == 2  # all remaining tie at novelty 1.0 (mean of 0 and 2): lowest index


def test_zero_quality_is_never_preferred():
    unit, rho = pool_inputs(n=60, seed=8)
    quality = np.zeros(60)
    quality[10:20] = 1.0
    picks = select(unit, rho, 11, 1.0, 10, quality)
    assert set(picks) == set(range(10, 20)) | {picks[-1]}
    assert set(picks[:10]) == set(range(10, 20))


def test_quality_of_ones_changes_nothing():
    unit, rho = pool_inputs(n=80, seed=9)
    assert select(unit, rho, 20, 2.0, 5, np.ones(80)) == select(unit, rho, 20, 2.0, 5)


@pytest.mark.parametrize("scores, message", [
    ([1.0, 2.0], "2 quality scores for a pool of 3"),
    ([1.0, -0.5, 2.0], "score 1 is -0.5"),
    ([1.0, float("nan"), 2.0], "score 1 is nan"),
    ([[1.0], [2.0], [3.0]], "expected a flat list of numbers"),
])
def test_bad_quality_scores(scores, message):
    with pytest.raises(InputError, match=message):
        check_quality_scores(np.array(scores), 3, "q.json")


def test_memory_need_is_pool_times_budget_times_four_bytes():
    assert selection_memory_bytes(396_000, 10_000, 0) == 396_000 * 9_999 * 4 + 396_000 * 24
    with pytest.raises(InputError, match=r"--k 1000000 on a pool of 10000000: the selection "
                                         r"needs .* GiB .* free; lower --k"):
        check_memory(10_000_000, 1_000_000, 4096, "cpu")
