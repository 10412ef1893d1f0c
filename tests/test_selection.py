"""The NovelSelect engines against a direct recomputation (sort and weight from scratch)."""

import json

import numpy as np
import pytest
from conftest import GOLDEN, clustered_vectors, write_json_shards

from utils.density.factor import DensityReference, density_factor
from utils.errors import InputError, options_named
from utils.io.vectors import load_vectors
from utils.numerics.fixed_order import (
    fixed_order_bytes_per_row,
    fixed_order_dots,
    fixed_order_dots_many,
    halving_sums,
)
from utils.numerics.rows import unit_rows
from utils.numerics.weights import rank_weights, tail_coefficients
from utils.selection.cpu import NumpyEngine
from utils.selection.selection_engine import REBUILD_SUM_RTOL, first_pick
from utils.selection.engine_choice import select
from utils.selection.gpu import INSERT_BYTES_PER_VALUE, TorchEngine
from utils.selection.inputs import check_quality_scores
from utils.selection.memory import check_memory, density_memory_bytes, selection_memory_bytes
from synthetic import with_duplicates

SMALL_BLOCK_MIB = 4 / 1024  # 4 KiB: the torch engine works in many row chunks on small pools
ENGINES = {"numba": lambda u, r, k, a: NumpyEngine(u, r, k, a, kernels="numba"),
           "numpy": lambda u, r, k, a: NumpyEngine(u, r, k, a, kernels="numpy"),
           "torch-cpu": lambda u, r, k, a: TorchEngine(u, r, k, a, "cpu",
                                                       block_mib=SMALL_BLOCK_MIB)}


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
        if isinstance(engine, TorchEngine):  # the chunked engines really run in chunks
            assert len(engine.distance_chunks()) > 1
        if type(engine) is TorchEngine:
            assert len(engine.insertion_chunks()) > 1 or t < 2
        engine.add_pick(picks[-1])
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
    from utils.io.vectors import load_vectors

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
    assert selection_memory_bytes(396_000, 10_000, 0) == 396_000 * 9_999 * 4 + 396_000 * 32
    with pytest.raises(InputError, match=r"^k=1000000 on a pool of 10000000: the selection "
                                         r"needs .* GiB .* free; lower k or"):
        check_memory(10_000_000, 1_000_000, 4096, "cpu")
    with options_named({"k": "--k"}), pytest.raises(
            InputError, match=r"^--k 1000000 on a pool of 10000000: .* lower --k or"):
        check_memory(10_000_000, 1_000_000, 4096, "cpu")


def test_the_memory_check_counts_the_density_stage():
    """A small selection against a reference of 50M x 256 rows: the selection fits, the
    density's copies of the reference (two of 51 GB) do not."""
    check_memory(1_000, 10, 256, "cpu")
    assert density_memory_bytes(50_000_000, 256) == 50_000_000 * (2 * 256 * 4 + 16)
    with pytest.raises(InputError, match=r"^the density stage over 50,000,000 reference rows "
                                         r"needs 96\.1 GiB .* free; use a smaller reference"):
        check_memory(1_000, 10, 256, "cpu", reference_rows=50_000_000)


def test_torch_engine_chunks_stay_in_budget_and_equal_one_chunk():
    unit, rho = pool_inputs(n=160, seed=4)
    chunked = TorchEngine(unit, rho, 40, 1.0, "cpu", block_mib=SMALL_BLOCK_MIB)
    whole = TorchEngine(unit, rho, 40, 1.0, "cpu", block_mib=1024)
    # 112 bytes per row for the dots (12 columns: the products, the copy of their first
    # halving, the later halvings) and 24 for the float64 cosine, factor sum and value: 4 KiB
    # holds 30 rows; then 33 bytes per stored value for the insertion: 124 rows down to 3
    assert fixed_order_bytes_per_row(12) == 112 and INSERT_BYTES_PER_VALUE == 33
    assert len(chunked.distance_chunks()) == 6 and len(whole.distance_chunks()) == 1
    assert chunked.run(0) == whole.run(0)
    assert len(chunked.insertion_chunks()) == -(-160 // (4096 // (33 * 39))) == 54
    for start, stop in chunked.insertion_chunks():
        assert (stop - start) * INSERT_BYTES_PER_VALUE * chunked.t <= 4096
    assert bool((chunked.sorted_values == whole.sorted_values).all())
    assert bool((chunked.weighted_sums == whole.weighted_sums).all())


@pytest.mark.parametrize("width", [0, 1, 2, 5, 8, 13])
def test_halving_sums_equal_sums_and_ignore_the_chunk(width):
    torch = pytest.importorskip("torch")
    matrix = torch.from_numpy(np.random.default_rng(width).normal(size=(9, width)))
    sums = halving_sums(matrix)
    np.testing.assert_allclose(sums.numpy(), matrix.sum(dim=1).numpy(), rtol=1e-14)
    assert bool((torch.cat([halving_sums(matrix[:4]), halving_sums(matrix[4:])])
                 == sums).all())


def test_fixed_order_dot_ignores_position_and_row_count():
    torch = pytest.importorskip("torch")
    rows = torch.from_numpy(unit_rows(clustered_vectors(301, 385, seed=12)))
    target = rows[17]
    dots = fixed_order_dots(rows, target)
    # every row alone, and the rows in reverse order, give bitwise the same numbers
    alone = torch.stack([fixed_order_dots(rows[i:i + 1], target)[0] for i in range(301)])
    assert bool((alone == dots).all())
    assert bool((fixed_order_dots(rows.flip(0), target).flip(0) == dots).all())
    np.testing.assert_allclose(dots.numpy(), (rows @ target).numpy(), rtol=0, atol=1e-6)


def test_select_refuses_an_engine_built_for_another_selection():
    unit, rho = pool_inputs(n=40, seed=5)
    engine = NumpyEngine(unit, rho, 10, 1.0)
    with pytest.raises(ValueError, match=r"built for n=40, k=10, alpha=1.0 but the selection "
                                         r"asks for n=40, k=20, alpha=1.0"):
        select(unit, rho, 20, 1.0, 0, engine=engine)
    with pytest.raises(ValueError, match="alpha=2.0"):
        select(unit, rho, 10, 2.0, 0, engine=engine)
    assert engine.t == 0  # refused before any work
    picks = select(unit, rho, 10, 1.0, 0, engine=engine)
    assert len(picks) == 10 and engine.t == 9
    with pytest.raises(ValueError, match="built for k=10 and already holds 9 values"):
        engine.add_pick(picks[-1])
    with pytest.raises(ValueError, match="already holds 9 picks"):
        engine.run(0)


# A dim-384 pool in JSON shards of 1,000, 1,049 and 351 rows: row 3 is copied to rows 1001 and
# 2050 (odd offsets, the two other shards), 30 more rows of the first shard to rows of the
# others, and row 10 to the pool's last rows (where blocked kernels handle their remainder).
def duplicate_copies():
    rng = np.random.default_rng(3)
    sources = rng.choice(np.arange(20, 1000), 30, replace=False)
    targets = rng.choice(np.setdiff1d(np.arange(1002, 2397), [2050]), 30, replace=False)
    return {3: [1001, 2050], 10: [2397, 2398, 2399],
            **{int(s): [int(t)] for s, t in zip(sources, targets)}}


def duplicate_pool(folder, n=2400, sizes=(1000, 1049, 351), copies=None):
    """The pool, read back from its shards, and its duplicate groups (sorted global rows)."""
    copies = copies or duplicate_copies()
    vectors = with_duplicates(clustered_vectors(n, 384, n_clusters=6, seed=11), copies)
    vectors = load_vectors(write_json_shards(folder, vectors, list(sizes))).vectors
    return vectors, [sorted([source, *targets]) for source, targets in copies.items()]


def check_duplicates_tie(engine, groups):
    """Duplicates hold bitwise equal values, sorted rows and sums while they are unpicked."""
    def host(array):  # numpy, or a torch tensor on any device
        return array.cpu().numpy() if hasattr(array, "cpu") else np.asarray(array)

    active = host(engine.active).astype(bool)
    values = host(engine.values)
    sorted_values = host(engine.sorted_values)[:, :engine.t]
    sums = engine.weighted_sums_host()
    for group in groups:
        group = [i for i in group if active[i]]
        for array in (values, sorted_values, sums):
            assert all(np.array_equal(array[group[0]], array[i]) for i in group[1:]), group


def check_lowest_first(picks, groups):
    """Whenever a duplicate group is picked (after the first, random pick), its lowest index
    comes first. Returns how many groups were picked."""
    picked = 0
    for group in groups:
        members = [p for p in picks[1:] if p in group and picks[0] not in group]
        if members:
            picked += 1
            assert members[0] == group[0], (group, members)
    return picked


# chunks of the torch engine at 1 MiB: 327 rows (distances), 9,532 down to 815 (insertion)
DUPLICATE_ENGINES = {"numba": ENGINES["numba"], "numpy": ENGINES["numpy"],
                     "torch-cpu": lambda u, r, k, a: TorchEngine(u, r, k, a, "cpu", block_mib=1)}


@pytest.mark.parametrize("engine_name", DUPLICATE_ENGINES)
@pytest.mark.slow
def test_exact_duplicates_tie_exactly_and_the_lowest_index_wins(tmp_path, engine_name):
    vectors, groups = duplicate_pool(tmp_path)
    rho = density_factor(DensityReference(vectors).mean_sq_distances(vectors, [10])[10],
                         0.5).astype(np.float32)
    unit = unit_rows(vectors)
    engine = DUPLICATE_ENGINES[engine_name](unit, rho, 40, 1.0)

    def chunked(step_engine):
        if isinstance(step_engine, TorchEngine):
            assert len(step_engine.distance_chunks()) == 8

    picks = picks_beside_numba(engine, unit, rho, groups, chunked)
    assert check_lowest_first(picks, groups) >= 10


def picks_beside_numba(engine, unit, rho, groups, each_step=None):
    """40 picks from row 1500 on ``engine`` (k = 40, alpha = 1), the numba engine taking the
    same picks beside it; after each, exact duplicates tie and every candidate's value equals
    numba's bit for bit (``each_step(engine)`` checks more). The groups of the 15 lowest
    sources weigh 3 in the quality, so that they get picked. Returns the picks."""
    quality = np.ones(len(unit))
    for group in sorted(groups)[:15]:
        quality[group] = 3.0
    reference_engine = NumpyEngine(unit, rho, 40, 1.0, kernels="numba")
    picks = [1500]
    for _ in range(39):
        engine.add_pick(picks[-1])
        reference_engine.add_pick(picks[-1])
        check_duplicates_tie(engine, groups)
        if each_step is not None:
            each_step(engine)
        active = reference_engine.active
        values = engine.values.cpu().numpy() if hasattr(engine.values, "cpu") else engine.values
        assert np.array_equal(np.asarray(values)[active], reference_engine.values[active])
        picks.append(engine.best(engine.device_array(quality))[0])
    return picks


def host_state(engine):
    """(active mask, sorted values, weighted sums) of an engine, as numpy arrays."""
    active = engine.active.cpu().numpy() if hasattr(engine.active, "cpu") else engine.active
    values = engine.sorted_values
    values = values.cpu().numpy() if hasattr(values, "cpu") else values
    return active.astype(bool), values[:, :engine.t], engine.weighted_sums_host()


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
@pytest.mark.slow
def test_rebuild_equals_the_incremental_state(alpha):
    """Starting an engine from t picks gives bitwise the sorted values that t insertions leave
    and their sums to REBUILD_SUM_RTOL, on every engine; the rebuilt sums are bitwise the
    same on the numba and torch engines, and duplicates still tie exactly."""
    vectors = with_duplicates(clustered_vectors(2000, 37, n_clusters=6, seed=21),
                              {5: [1001, 1999], 40: [41]})
    unit = unit_rows(vectors)
    rho = density_factor(DensityReference(vectors).mean_sq_distances(vectors, [10])[10],
                         0.5).astype(np.float32)
    picks = select(unit, rho, 120, alpha, 3)
    engines = {"numba": ENGINES["numba"], "numpy": ENGINES["numpy"],
               # 64 KiB: a few rows a block at 119 picks
               "torch-cpu": lambda u, r, k, a: TorchEngine(u, r, k, a, "cpu", block_mib=1 / 16)}
    for t in [1, 2, 37, 119]:
        rebuilt = {}
        for name, engine in engines.items():
            incremental = engine(unit, rho, 120, alpha)
            for pick in picks[:t]:
                incremental.add_pick(pick)
            fresh = engine(unit, rho, 120, alpha)
            fresh.rebuild(picks[:t])
            assert fresh.t == incremental.t == t
            active, values, sums = host_state(incremental)
            fresh_active, fresh_values, fresh_sums = host_state(fresh)
            assert np.array_equal(active, fresh_active)
            assert np.array_equal(values[active], fresh_values[active])
            np.testing.assert_allclose(fresh_sums[active], sums[active], rtol=REBUILD_SUM_RTOL)
            if t == 1 or alpha == 0:  # one value, or float32 values summed exactly in float64
                assert np.array_equal(fresh_sums[active], sums[active])
            for group in ([5, 1001, 1999], [40, 41]):  # duplicates tie exactly
                group = [i for i in group if fresh_active[i]]
                assert all(np.array_equal(fresh_values[i], fresh_values[group[0]])
                           and fresh_sums[i] == fresh_sums[group[0]] for i in group)
            rebuilt[name] = fresh_sums[active]
        assert np.array_equal(rebuilt["numba"], rebuilt["torch-cpu"])
        assert np.array_equal(rebuilt["numba"], rebuilt["numpy"])


@pytest.mark.parametrize("engine_name, bytes_per_row, blocks", [
    ("numba", 16 * 50, 25),              # 65,536 // 800 = 81 rows a block
    # the numpy kernel's products and halvings (8 x 37 + 16), the float64 cosines and factor
    # sums, the values and their weighted float64 copy
    ("numpy", (8 * 37 + 16 + 8 + 8 + 4 + 8) * 50, 667),  # 65,536 // 17,000 = 3 rows a block
    # products, their first halving's copy, later halvings (8 x 37 + 16), dots, float64
    # cosines and factor sums, values (4 + 8 + 8 + 4)
    ("torch-cpu", (8 * 37 + 16 + 24) * 50, 667),  # 65,536 // 16,800 = 3 rows a block
])
def test_rebuild_runs_in_row_blocks_under_the_budget(engine_name, bytes_per_row, blocks):
    unit, rho = pool_inputs(n=2000, dim=37, seed=22)
    picks = select(unit, rho, 80, 1.0, 0)
    make = {"numba": lambda b: NumpyEngine(unit, rho, 80, 1.0, block_mib=b, kernels="numba"),
            "numpy": lambda b: NumpyEngine(unit, rho, 80, 1.0, block_mib=b, kernels="numpy"),
            "torch-cpu": lambda b: TorchEngine(unit, rho, 80, 1.0, "cpu", block_mib=b)}
    small, whole = make[engine_name](64 / 1024), make[engine_name](1024)
    assert small.rebuild_bytes_per_row(50) == bytes_per_row
    assert len(small.rebuild(picks[:50])) == blocks and len(whole.rebuild(picks[:50])) == 1
    for (start, stop) in small.rebuild_blocks(50):
        assert (stop - start) * bytes_per_row <= 64 * 1024
    active, values, sums = host_state(small)
    assert np.array_equal(values[active], host_state(whole)[1][active])
    assert np.array_equal(sums[active], host_state(whole)[2][active])
    rest = make[engine_name](64 / 1024)
    assert rest.run(picks[:50]) == picks


def test_fixed_order_dots_many_equal_one_target_at_a_time():
    torch = pytest.importorskip("torch")
    rows = torch.from_numpy(unit_rows(clustered_vectors(97, 385, seed=23)))
    dots = fixed_order_dots_many(rows, rows[[4, 50, 4, 96]])
    for column, target in enumerate([4, 50, 4, 96]):
        assert bool((dots[:, column] == fixed_order_dots(rows, rows[target])).all())


def test_an_engine_refuses_bad_start_picks():
    unit, rho = pool_inputs(n=40, seed=24)
    with pytest.raises(ValueError, match="built for k=5: room for 4 values per candidate, "
                                         "not 5"):
        NumpyEngine(unit, rho, 5, 1.0).rebuild([0, 1, 2, 3, 4])
    with pytest.raises(InputError, match="the picks to start from: index 7 is given twice"):
        NumpyEngine(unit, rho, 5, 1.0).run([7, 1, 7])
    engine = NumpyEngine(unit, rho, 5, 1.0)
    assert engine.run([9, 3, 1, 2, 0]) == [9, 3, 1, 2, 0] and engine.t == 0  # k given: done
