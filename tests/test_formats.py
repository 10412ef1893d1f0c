"""Record formats (ShareGPT, OpenAI chat, Alpaca, one field, --text_field), Parquet shards,
and the messages that send an embedding shard or a text shard back to where it belongs."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO

from utils.errors import InputError
from utils.io.text_items import item_text, preview
from utils.io.texts import check_pairing, load_items, read_text_shard
from utils.io.vectors import load_vectors

WHERE = "d/0.json: item 1"
SHAREGPT = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]
OPENAI = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("item, text_field, text", [
    ("plain text", None, "plain text"),
    (SHAREGPT, None, "Hi\nHello!"),
    ({"id": "a7", "conversations": SHAREGPT}, None, "Hi\nHello!"),
    ({"messages": OPENAI, "id": 3}, None, "Be brief.\nHi"),
    (OPENAI, None, "Be brief.\nHi"),
    ({"instruction": "Add", "input": "2 and 3", "output": "5"}, None, "Add\n2 and 3\n5"),
    ({"instruction": "Say hi", "input": "", "output": "hi", "text": "x"}, None, "Say hi\nhi"),
    ({"instruction": "Say hi", "output": "hi"}, None, "Say hi\nhi"),
    ({"text": "one field"}, None, "one field"),
    ({"dialog": SHAREGPT}, None, "Hi\nHello!"),
    ({"prompt": "a", "response": "b"}, "response", "b"),
    ({"prompt": "a", "chat": SHAREGPT}, "chat", "Hi\nHello!"),
    ({"id": 1, "conversations": SHAREGPT}, "conversations", "Hi\nHello!"),
])
def test_each_record_format_gives_its_text(item, text_field, text):
    assert item_text(item, WHERE, text_field) == text


def mtbench_records():
    """The 80 MT-Bench questions in their own format, rebuilt from the shipped example pool
    (whose first shard holds them as ShareGPT conversations of the two user turns)."""
    conversations = json.loads((REPO / "examples" / "pool" / "text" / "0.json").read_text())
    return conversations, [{"question_id": 81 + i, "category": "writing",
                            "turns": [turn["value"] for turn in conversation]}
                           for i, conversation in enumerate(conversations)]


@pytest.mark.parametrize("text_field", [None, "turns"])
def test_mtbench_records_are_conversations_of_user_turns(tmp_path, text_field):
    """MT-Bench's "turns", a list of strings, is a conversation, with or without
    --text_field turns, and gives the text of the same questions as ShareGPT turns."""
    conversations, records = mtbench_records()
    assert len(records) == 80 and all(len(r["turns"]) == 2 for r in records)
    (tmp_path / "0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    items, _paths, counts = load_items(tmp_path / "0.jsonl")
    assert counts == [80]
    texts = [item_text(record, WHERE, text_field) for record in items]
    assert texts == [item_text(conversation, WHERE) for conversation in conversations]
    assert texts[0] == "\n".join(records[0]["turns"])


@pytest.mark.parametrize("item, text_field, message", [
    (42, None, "d/0.json: item 1: is neither text nor a conversation (found 42)"),
    ([], None, "d/0.json: item 1: is neither text nor a conversation (found [])"),
    ({}, None, "d/0.json: item 1: is neither text nor a conversation (found {})"),
    ({"prompt": "a", "response": "b"}, None,
     "d/0.json: item 1: a record with fields 'prompt', 'response' matches no known format "
     "(ShareGPT, OpenAI chat, Alpaca); choose the field to embed with --text_field"),
    ({"prompt": "a", "response": "b"}, "text",
     "d/0.json: item 1: has no field 'text' (--text_field); its fields are 'prompt', "
     "'response'"),
    ("abc", "text",
     'd/0.json: item 1: is "abc", not a record with fields, so --text_field text cannot apply'),
    ([{"from": "human", "value": "Hi"}, {"from": "gpt"}], None,
     "d/0.json: item 1: turn 1 has no text ('value' or 'content' string)"),
    ({"instruction": "Add", "input": 3, "output": "5"}, None,
     "d/0.json: item 1: field 'input' is 3, not text"),
])
def test_records_that_are_not_text_are_named(item, text_field, message):
    with pytest.raises(InputError) as err:
        item_text(item, WHERE, text_field)
    assert str(err.value) == message


def test_preview_never_cuts_a_word():
    words = " ".join(f"word{i}" for i in range(30))
    assert preview(words, 40) == '"word0 word1 word2 word3 word4 word5 ...'
    assert preview("x" * 200, 40) == "a string of 200 characters"
    assert preview(list(range(100)), 40) == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 ..."
    assert preview("short") == '"short"'


def write_parquet(path, columns, **kwargs):
    pq.write_table(pa.table(columns), path, **kwargs)
    return path


def test_parquet_text_rows_are_records_of_their_columns(tmp_path):
    path = write_parquet(tmp_path / "0.parquet", {
        "id": [1, 2], "conversations": [SHAREGPT, SHAREGPT[:1]], "score": [0.5, None]})
    items, files, counts = load_items(tmp_path)
    assert items == [{"id": 1, "conversations": SHAREGPT, "score": 0.5},
                     {"id": 2, "conversations": SHAREGPT[:1], "score": None}]
    assert files == [path] and counts == [2]
    assert [item_text(item, "x") for item in items] == ["Hi\nHello!", "Hi"]
    one = write_parquet(tmp_path / "one.parquet", {"text": ["a b", "c"]})
    assert [item_text(item, "x") for item in read_text_shard(one)] == ["a b", "c"]


def test_text_field_is_checked_on_every_row(tmp_path):
    (tmp_path / "0.jsonl").write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "c"}\n')
    items, _files, _counts = load_items(tmp_path, text_field="prompt")
    assert [item_text(item, "x", "prompt") for item in items] == ["a", "c"]
    with pytest.raises(InputError) as err:
        load_items(tmp_path, text_field="answer")
    assert str(err.value) == (f"{tmp_path / '0.jsonl'}: row 1: has no field 'answer' "
                              f"(--text_field); its fields are 'prompt'")


def test_embedding_shards_given_as_text_are_refused(tmp_path):
    emb = tmp_path / "emb"
    emb.mkdir()
    (emb / "0.json").write_text("[[0.5, 1, -2.0], [1, 1, 1]]")
    with pytest.raises(InputError) as err:
        load_items(emb)
    assert str(err.value) == (f"{emb / '0.json'}: row 0 is a vector of 3 numbers, not text; "
                              f"this looks like an embedding shard - give the text shards")
    table = write_parquet(tmp_path / "t.parquet", {"id": [7], "embedding": [[0.1, 0.2]]})
    with pytest.raises(InputError, match="t.parquet: row 0 is a vector of 2 numbers, not text"):
        load_items(table)
    arrays = tmp_path / "arrays"
    arrays.mkdir()
    np.save(arrays / "0.npy", np.ones((2, 3)))
    for given in (arrays, arrays / "0.npy"):
        with pytest.raises(InputError) as err:
            load_items(given)
        assert str(err.value) == (f"{given}: holds .npy arrays (0.npy), which are embeddings, "
                                  f"not text; this looks like an embedding shard - give the "
                                  f"text shards")


@pytest.mark.parametrize("write", [
    lambda p: p.with_suffix(".json").write_text(json.dumps(["a long text " * 20, "b"])),
    lambda p: p.with_suffix(".json").write_text(json.dumps([SHAREGPT])),
    lambda p: p.with_suffix(".json").write_text(json.dumps([{"text": "a"}])),
    lambda p: write_parquet(p.with_suffix(".parquet"), {"text": ["a"], "id": [1]}),
    lambda p: write_parquet(p.with_suffix(".parquet"), {"conversations": [SHAREGPT]}),
    lambda p: np.save(p.with_suffix(".npy"), np.array([["some", "text"]])),
])
def test_text_shards_given_as_embeddings_are_refused(tmp_path, write):
    write(tmp_path / "pool")
    path = next(tmp_path.iterdir())
    with pytest.raises(InputError) as err:
        load_vectors(path)
    assert str(err.value) == (f"{path}: row 0 is text, not a vector; this looks like a text "
                              f"shard - embed it first with embedding.py")


@pytest.mark.parametrize("arrow_type", [pa.list_(pa.float32()), pa.large_list(pa.float64()),
                                        pa.list_(pa.float32(), 3), pa.list_(pa.int64())])
def test_parquet_embeddings_of_each_list_type(tmp_path, arrow_type):
    rows = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    pq.write_table(pa.table({"emb": pa.array(rows, type=arrow_type)}), tmp_path / "0.parquet",
                   row_group_size=2)
    data = load_vectors(tmp_path / "0.parquet")
    assert data.vectors.dtype == np.float32 and data.vectors.tolist() == rows
    assert data.offsets == [0, 3]


def test_parquet_json_and_npy_shards_mix_in_order(tmp_path):
    write_parquet(tmp_path / "0.parquet", {"id": [0, 1], "vector": [[1.0, 0.0], [0.0, 1.0]]})
    (tmp_path / "1.json").write_text("[[2, 2]]")
    np.save(tmp_path / "2.npy", np.full((2, 2), 3.0))
    write_parquet(tmp_path / "3.parquet", {"vector": pa.array([], pa.list_(pa.float32()))})
    data = load_vectors(tmp_path)
    assert data.vectors.tolist() == [[1, 0], [0, 1], [2, 2], [3, 3], [3, 3]]
    assert data.offsets == [0, 2, 3, 5, 5]


def test_several_vector_columns_need_embedding_field(tmp_path):
    path = write_parquet(tmp_path / "0.parquet", {"text": ["a", "b"], "small": [[1.0], [2.0]],
                                                  "large": [[1.0, 0.0], [0.0, 1.0]]})
    with pytest.raises(InputError) as err:
        load_vectors(path)
    assert str(err.value) == (f"{path}: columns small, large all hold vectors; choose one with "
                              f"--embedding_field")
    assert load_vectors(path, embedding_field="large").vectors.tolist() == [[1, 0], [0, 1]]
    assert load_vectors(path, embedding_field="small").vectors.tolist() == [[1], [2]]
    with pytest.raises(InputError) as err:
        load_vectors(path, embedding_field="emb")
    assert str(err.value) == (f"{path}: no column 'emb' (--embedding_field); its columns are "
                              f"text (string), small (list<element: double>), "
                              f"large (list<element: double>)")
    with pytest.raises(InputError, match=r"column 'text' \(--embedding_field\) holds string, "
                                         r"not lists of numbers"):
        load_vectors(path, embedding_field="text")


@pytest.mark.parametrize("vectors, message", [
    ([[1.0, 2.0], None], "row 1 is null, not a vector"),
    ([[1.0, 2.0], [1.0, None]], "row 1, element 1 is null, not a number"),
    ([[1.0, 2.0], [1.0]], "row 1 has 1 values but row 0 has 2"),
    ([[1.0, 2.0], [0.0, 0.0]], "row 1 (global row 1) is a zero vector"),
    ([[1.0, 2.0], [float("nan"), 0.0]], "row 1 (global row 1) holds NaN or inf"),
])
def test_bad_parquet_vectors_name_file_and_row(tmp_path, vectors, message):
    path = write_parquet(tmp_path / "0.parquet", {"v": pa.array(vectors, pa.list_(pa.float64()))})
    with pytest.raises(InputError) as err:
        load_vectors(tmp_path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_a_file_named_parquet_that_is_not_parquet(tmp_path):
    (tmp_path / "0.parquet").write_text("[[1.0]]")
    with pytest.raises(InputError, match="0.parquet: not a readable Parquet file"):
        load_vectors(tmp_path)


def test_parquet_text_pairs_with_parquet_embeddings(tmp_path):
    texts, emb = tmp_path / "texts", tmp_path / "emb"
    texts.mkdir(), emb.mkdir()
    write_parquet(texts / "0.parquet", {"text": ["a", "b"]})
    write_parquet(emb / "0.parquet", {"embedding": [[1.0, 0.0], [0.0, 1.0]]})
    _items, paths, counts = load_items(texts, text_field="text")
    check_pairing(paths, counts, load_vectors(emb))
