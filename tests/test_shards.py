"""Shard folders: natural order, formats, global rows, and one-line errors naming the fault."""

import io
import json

import numpy as np
import pytest

from utils.errors import InputError
from utils.shards import (check_pairing, list_shards, load_items, load_vectors, natural_key,
                          read_vector_shard)


def test_natural_order_puts_2_before_10_and_words_after_numbers(tmp_path):
    for stem in ["10", "2", "1", "b", "a10", "a9"]:
        (tmp_path / f"{stem}.json").write_text("[[1.0]]")
    assert [p.stem for p in list_shards(tmp_path, (".json",))] == ["1", "2", "10", "a9",
                                                                    "a10", "b"]
    assert natural_key("x2") < natural_key("x10")


def test_shard_i_holds_value_i_so_order_shows(tmp_path):
    # "simple" mode: shard i holds rows of value i + 1; loading must keep natural order
    for i in [0, 1, 2, 10, 11]:
        (tmp_path / f"{i}.json").write_text(json.dumps([[i + 1.0, 1.0]] * (i % 3 + 1)))
    data = load_vectors(tmp_path)
    firsts = data.vectors[:, 0]
    assert list(dict.fromkeys(firsts.tolist())) == [1.0, 2.0, 3.0, 11.0, 12.0]
    assert data.offsets == [0, 1, 3, 6, 8, 11]
    assert data.name == tmp_path.name


def test_npy_and_json_shards_mix(tmp_path):
    np.save(tmp_path / "0.npy", np.ones((2, 3), dtype=np.float64))
    (tmp_path / "1.json").write_text("[[2, 2, 2]]")
    data = load_vectors(tmp_path)
    assert data.vectors.dtype == np.float32
    assert data.vectors.tolist() == [[1, 1, 1], [1, 1, 1], [2, 2, 2]]


def test_npy_shards_fill_one_array_in_order_with_checks(tmp_path):
    rng = np.random.default_rng(0)
    shards = [rng.normal(size=(n, 4)) for n in (3, 0, 5, 2)]
    for i, shard in enumerate(shards):
        np.save(tmp_path / f"{i}.npy", shard.astype(np.float64 if i % 2 else np.float32))
    data = load_vectors(tmp_path)
    np.testing.assert_array_equal(data.vectors, np.concatenate(shards).astype(np.float32))
    assert data.vectors.dtype == np.float32 and data.vectors.flags.c_contiguous
    assert data.offsets == [0, 3, 3, 8, 10]
    bad = shards[2].copy()
    bad[1, 2] = np.inf
    np.save(tmp_path / "2.npy", bad)
    with pytest.raises(InputError, match=r"2.npy: row 1 \(global row 4\) holds NaN or inf"):
        load_vectors(tmp_path)
    np.save(tmp_path / "2.npy", np.ones((5, 6)))
    with pytest.raises(InputError, match="2.npy: vectors have 6 dimensions but 0.npy has 4"):
        load_vectors(tmp_path)
    (tmp_path / "2.npy").write_bytes(npy_bytes(np.ones((5, 4)))[:-8])
    with pytest.raises(InputError, match="2.npy: not a readable .npy array"):
        load_vectors(tmp_path)


def test_single_file_dataset_is_named_by_stem(tmp_path):
    path = tmp_path / "my_subset.json"
    path.write_text("[[1, 0], [0, 1]]")
    assert load_vectors(path).name == "my_subset"


BAD_SHARDS = [
    ("[[1.0, 2.0], [3.0", "not valid JSON"),
    ("[[1.0, 2.0], [3.0]]", "row 1 has 1 values but row 0 has 2"),
    ('[[1.0, 2.0], [3.0, "x"]]', 'row 1, element 1 is "x", not a number'),
    ("[[1.0, 2.0], [3.0, true]]", "row 1, element 1 is true, not a number"),
    ("[[1.0, 2.0], [NaN, 1.0]]", "row 1 (global row 2) holds NaN or inf"),
    ("[[1.0, 2.0], [Infinity, 1.0]]", "row 1 (global row 2) holds NaN or inf"),
    ("[[1.0, 2.0], [0, 0.0]]", "row 1 (global row 2) is a zero vector"),
    ('{"a": 1}', "expected a JSON list of vectors"),
    ("[1.0, 2.0]", "expected a list of vectors"),
]


@pytest.mark.parametrize("text, message", BAD_SHARDS)
def test_bad_vector_shard_names_file_and_row(tmp_path, text, message):
    (tmp_path / "0.json").write_text("[[5.0, 5.0]]")
    (tmp_path / "1.json").write_text(text)
    with pytest.raises(InputError) as err:
        load_vectors(tmp_path)
    assert message in str(err.value)
    assert "1.json" in str(err.value)
    assert "\n" not in str(err.value)


def test_global_row_counts_earlier_shards(tmp_path):
    (tmp_path / "0.json").write_text("[[5.0, 5.0], [1.0, 1.0]]")
    (tmp_path / "1.json").write_text("[[1.0, 2.0], [NaN, 1.0]]")
    with pytest.raises(InputError, match=r"row 1 \(global row 3\)"):
        load_vectors(tmp_path)


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "no shard files"),
    (lambda d: (d / "0.json").write_text("[]"), "the dataset is empty"),
    (lambda d: ((d / "0.json").write_text("[[1.0]]"), (d / "0.npy").write_bytes(b"")),
     "have the same name"),
    (lambda d: ((d / "0.json").write_text("[[1.0, 2.0]]"), (d / "1.json").write_text("[[1.0]]")),
     "1 dimensions but 0.json has 2"),
    (lambda d: (d / "0.npy").write_bytes(b"garbage"), "not a .npy file"),
    (lambda d: (d / "0.npy").write_bytes(npy_bytes(np.ones((4, 4)))[:-8]),
     "not a readable .npy array"),
    (lambda d: np.save(d / "0.npy", np.ones(3)), "expected a 2-D array"),
])
def test_bad_dataset_folders(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(InputError, match=message):
        load_vectors(tmp_path)


def test_missing_path_and_unreadable_file(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        load_vectors(tmp_path / "absent")
    shard = tmp_path / "0.json"
    shard.mkdir()  # a folder where a file is expected is skipped, leaving no shards
    with pytest.raises(InputError, match="no shard files"):
        load_vectors(tmp_path)


def test_a_file_named_npy_that_is_not_npy(tmp_path):
    (tmp_path / "0.npy").write_text("[[1.0, 2.0]]")
    with pytest.raises(InputError, match=r"0.npy: not a .npy file \(no NumPy header\)"):
        load_vectors(tmp_path)


def test_npy_shard_reads_float32_from_ints(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6).reshape(3, 2))
    assert read_vector_shard(tmp_path / "a.npy").dtype == np.float32


def test_text_items_json_and_jsonl_pair_with_embeddings(tmp_path):
    texts, vectors = tmp_path / "texts", tmp_path / "emb"
    texts.mkdir(), vectors.mkdir()
    (texts / "0.json").write_text(json.dumps(["a", [{"from": "user", "value": "b"}]]))
    (texts / "1.jsonl").write_text('"c"\n\n{"k": 1}\n')
    (vectors / "0.json").write_text("[[1, 0], [0, 1]]")
    np.save(vectors / "1.npy", np.ones((2, 2)))
    items, paths, counts = load_items(texts)
    assert items == ["a", [{"from": "user", "value": "b"}], "c", {"k": 1}]
    assert counts == [2, 2]
    check_pairing(paths, counts, load_vectors(vectors))


def test_pairing_errors_name_the_shards(tmp_path):
    texts, vectors = tmp_path / "texts", tmp_path / "emb"
    texts.mkdir(), vectors.mkdir()
    (texts / "0.json").write_text('["a", "b"]')
    (texts / "1.json").write_text('["c"]')
    (vectors / "0.json").write_text("[[1, 0], [0, 1]]")
    (vectors / "2.json").write_text("[[1, 0]]")
    items, paths, counts = load_items(texts)
    with pytest.raises(InputError, match="text only: 1; embeddings only: 2"):
        check_pairing(paths, counts, load_vectors(vectors))
    (vectors / "2.json").rename(vectors / "1.json")
    (texts / "1.json").write_text('["c", "d"]')
    _items, paths, counts = load_items(texts)
    with pytest.raises(InputError, match="1.json: 2 items but its embedding shard has 1"):
        check_pairing(paths, counts, load_vectors(vectors))


def test_bad_jsonl_line_is_named(tmp_path):
    (tmp_path / "0.jsonl").write_text('"a"\n{oops\n')
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        load_items(tmp_path)


@pytest.mark.parametrize("indent", [None, 4])
def test_fast_numeric_parser_equals_json(tmp_path, indent):
    rng = np.random.default_rng(1)
    vectors = (rng.normal(size=(300, 17)) * rng.choice([1e-30, 1e-6, 1.0, 1e6, 1e30],
                                                       size=(300, 1))).astype(np.float32)
    text = json.dumps(vectors.tolist(), indent=indent)
    (tmp_path / "0.json").write_text(text)
    parsed = read_vector_shard(tmp_path / "0.json")
    np.testing.assert_array_equal(parsed, np.asarray(json.loads(text), dtype=np.float32))


@pytest.mark.parametrize("text", [b"[[1,2],[3,4]", b"[[1,2],[3]]", b"[[1,2],[3,4,5]]",
                                  b"[[1,,2]]", b"[[[1,2]]]", b"[[1,2],[3,4],]",
                                  b"[[1,2],[],[3,4]]", b"[[1.2.3,4]]", b"[[1,2]],[[3,4]]"])
def test_fast_numeric_parser_declines_malformed_text(text):
    from utils.shards import _vectors_from_numeric_json

    assert _vectors_from_numeric_json(text) is None
