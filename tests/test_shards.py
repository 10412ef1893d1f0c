"""Shard folders: natural order, formats, global rows, and one-line errors naming the fault."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, clustered_vectors, write_json_shards

from utils.errors import InputError
from utils.io.json_vectors import json_shape, read_json_vectors_into
from utils.io.listing import list_shards, natural_key, shard_order_key
from utils.io.texts import check_pairing, load_items
from utils.io.vectors import check_vectors, load_vectors, plan_rows
from utils.io.workers import WorkerProcesses, can_fork, parse_processes


def test_natural_order_puts_2_before_10_and_words_after_numbers(tmp_path):
    for stem in ["10", "2", "1", "b", "a10", "a9"]:
        (tmp_path / f"{stem}.json").write_text("[[1.0]]")
    assert [p.stem for p in list_shards(tmp_path, (".json",))] == ["1", "2", "10", "a9",
                                                                    "a10", "b"]
    assert natural_key("x2") < natural_key("x10")


def test_a_superscript_digit_in_a_name_is_a_word_not_a_number(tmp_path):
    for stem in ["²", "2", "1"]:  # "²".isdigit() is true, yet int("²") fails
        (tmp_path / f"{stem}.json").write_text("[[1.0]]")
    assert [p.stem for p in list_shards(tmp_path, (".json",))] == ["1", "2", "²"]
    assert load_vectors(tmp_path).vectors.shape == (3, 1)


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
    assert load_vectors(tmp_path / "a.npy").vectors.dtype == np.float32


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
    parsed = load_vectors(tmp_path / "0.json").vectors
    np.testing.assert_array_equal(parsed, np.asarray(json.loads(text), dtype=np.float32))


@pytest.mark.parametrize("text", [b"[[1,2],[3,4]", b"[[1,2],[3]]", b"[[1,2],[3,4,5]]",
                                  b"[[1,,2]]", b"[[[1,2]]]", b"[[1,2],[3,4],]",
                                  b"[[1,2],[],[3,4]]", b"[[1.2.3,4]]", b"[[1,2]],[[3,4]]",
                                  b"[[1,2] [3,4]]", b'[[1,2],[3,"4"]]', b"[[1,2],[3,true]]",
                                  b"[[1,2],[NaN,4]]", b"[[1,2],[1e400,4]]", b"[1,2]"])
@pytest.mark.parametrize("block_bytes", [3, 1 << 20])
def test_fast_numeric_parser_declines_malformed_text(tmp_path, text, block_bytes):
    path = tmp_path / "0.json"
    path.write_bytes(text)
    out = np.empty((2, 2), dtype=np.float32)
    assert read_json_vectors_into(path, out, block_bytes) is False


@pytest.mark.parametrize("block_bytes", [1, 5, 64, 1 << 20])
@pytest.mark.parametrize("text", [b"[[1,2],[3,4],[5,6]]", b" [ [1, 2] ,\n [3,4],[5 ,6]\n]\n",
                                  b"[[1e0,2E+0],[3.0e-0,4],[-5,6]]"])
def test_fast_parser_reads_pieces_of_whole_rows(tmp_path, text, block_bytes):
    path = tmp_path / "0.json"
    path.write_bytes(text)
    assert json_shape(path) == (3, 2)
    out = np.empty((3, 2), dtype=np.float32)
    assert read_json_vectors_into(path, out, block_bytes)
    assert out.tolist() == [[1, 2], [3, 4], [-5 if b"-5" in text else 5, 6]]


def test_natural_order_ties_are_broken_by_name(tmp_path):
    for name in ["1.json", "01.json", "001.json", "2.json", "a01.json", "a1.json"]:
        (tmp_path / name).write_text("[[1.0]]")
    assert [p.name for p in list_shards(tmp_path, (".json",))] == [
        "001.json", "01.json", "1.json", "2.json", "a01.json", "a1.json"]
    assert shard_order_key(tmp_path / "01.json") < shard_order_key(tmp_path / "1.json")


def test_single_files_pair_whatever_their_names(tmp_path):
    text, vectors = tmp_path / "pool_texts.json", tmp_path / "pool_embeddings.npy"
    text.write_text(json.dumps(["a", "b", "c"]))
    np.save(vectors, np.ones((3, 2)))
    items, paths, counts = load_items(text)
    check_pairing(paths, counts, load_vectors(vectors), text_source=text)
    np.save(vectors, np.ones((2, 2)))
    with pytest.raises(InputError) as err:
        check_pairing(paths, counts, load_vectors(vectors), text_source=text)
    assert str(err.value) == f"{text}: 3 items but pool_embeddings.npy has 2 vectors"
    folder = tmp_path / "emb"  # a folder still pairs by name, even with a single shard
    folder.mkdir()
    np.save(folder / "other.npy", np.ones((3, 2)))
    with pytest.raises(InputError, match="text only: pool_texts; embeddings only: other"):
        check_pairing(paths, counts, load_vectors(folder), text_source=text)


def uneven_mixed_folder(folder, rng):
    """JSON shards of uneven sizes (one empty), an .npy shard among them; shard i holds i + 1."""
    sizes = [7, 0, 30, 1, 12, 25]
    arrays = []
    for i, n in enumerate(sizes):
        vectors = (rng.normal(size=(n, 5)) + 10 * (i + 1)).astype(np.float32)
        arrays.append(vectors)
        if i == 3:
            np.save(folder / f"{i}.npy", vectors.astype(np.float64))
        else:
            (folder / f"{i}.json").write_text(json.dumps(vectors.tolist(), indent=i % 2 or None))
    return np.concatenate(arrays), sizes


TWO = min(2, os.cpu_count() or 1)
needs_two_cpus = pytest.mark.skipif(TWO < 2 or not can_fork(),
                                    reason="worker processes need 2 CPUs and fork")


@needs_two_cpus
def test_worker_processes_equal_the_serial_parse(tmp_path):
    expected, sizes = uneven_mixed_folder(tmp_path, np.random.default_rng(3))
    seen = []
    parallel = load_vectors(tmp_path, progress=lambda shards: (seen.append(s) or s
                                                               for s in shards), workers=2)
    serial = load_vectors(tmp_path, workers=1)
    assert parallel.workers == 2 and serial.workers == 0
    assert len(seen) == len(sizes)
    np.testing.assert_array_equal(parallel.vectors, expected)
    np.testing.assert_array_equal(serial.vectors, expected)
    assert parallel.offsets == serial.offsets == np.cumsum([0] + sizes).tolist()
    assert parallel.vectors.dtype == np.float32 and parallel.vectors.flags.c_contiguous


def test_how_many_processes_parse(tmp_path):
    files = [tmp_path / f"{i}.json" for i in range(3)] + [tmp_path / "3.npy"]
    for path in files:
        path.write_text("[[1.0]]")
    assert parse_processes(files) == 0  # a few bytes: not worth starting processes
    assert parse_processes(files, workers=1) == 0
    assert parse_processes(files, workers=64) == (min(3, os.cpu_count()) if TWO == 2 else 0)
    assert parse_processes(files[2:], workers=2) == 0  # one JSON shard


@needs_two_cpus
@pytest.mark.parametrize("text, message", BAD_SHARDS + [
    ('["some text", "more"]', "row 0 is text, not a vector"),
    ("[[1.0, 2.0, 3.0]]", "vectors have 3 dimensions but 0.json has 2")])
def test_bad_third_shard_gives_the_serial_error(tmp_path, text, message):
    for i in range(5):
        (tmp_path / f"{i}.json").write_text("[[5.0, 5.0], [1.0, 2.0]]")
    (tmp_path / "2.json").write_text(text)
    (tmp_path / "4.json").write_text('[[1.0, "late fault"]]')  # later faults are not reported
    errors = []
    for workers in (1, 2):
        with pytest.raises(InputError) as err:
            load_vectors(tmp_path, workers=workers)
        errors.append(str(err.value))
    assert errors[0] == errors[1]
    assert errors[0].startswith(f"{tmp_path / '2.json'}: ")
    assert message.replace("global row 2", "global row 5") in errors[0]  # 4 rows before it


def test_worker_errors_come_back_as_messages_and_deaths_are_reported():
    with WorkerProcesses(check_vectors, [(np.ones((2, 2)), "a.json"),
                                         (np.zeros((2, 2)), "b.json", 5)], 2) as workers:
        assert workers.result(1) == (False, "b.json: row 0 (global row 5) is a zero vector, "
                                            "which has no direction (cosine distance is "
                                            "undefined)")
        assert workers.result(0) == (True, None)
    with WorkerProcesses(os._exit, [(3,)], 1) as workers:
        with pytest.raises(InputError, match=r"died \(exit code 3; out of memory\?\)"):
            workers.result(0)


INTERRUPTED = """
import os, sys
sys.path.insert(0, sys.argv[1])
from utils.io.vectors import load_vectors
print("ready", flush=True)
try:
    while True:
        load_vectors(sys.argv[2], workers=2)
except KeyboardInterrupt:  # the load returned: its workers must be gone already
    children = f"/proc/{os.getpid()}/task/{os.getpid()}/children"
    print("interrupted; children left:", open(children).read().split(), flush=True)
"""


@needs_two_cpus
@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="finds the workers in /proc")
@pytest.mark.slow
def test_ctrl_c_leaves_no_worker_processes(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        (tmp_path / f"{i}.json").write_text(json.dumps(rng.normal(size=(3000, 64)).tolist()))
    shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    process = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(REPO), str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    children, deadline = [], time.monotonic() + 20
    while not children and time.monotonic() < deadline:
        listed = Path(f"/proc/{process.pid}/task/{process.pid}/children")  # forked by main thread
        children = [int(c) for c in listed.read_text().split()]
    assert children, "no worker process was seen"
    # Python drops a KeyboardInterrupt raised inside a garbage-collection finalizer
    # ("Exception ignored in: <Finalize object>"); this script loads for ever, so a Ctrl-C
    # that lands there is pressed again, as a user would.
    for _attempt in range(5):
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    else:
        process.kill()
        out, err = process.communicate()
    assert out == "interrupted; children left: []\n", err
    assert not [c for c in children if Path(f"/proc/{c}").exists()]
    if os.path.isdir("/dev/shm"):
        assert set(os.listdir("/dev/shm")) <= shm


def test_plan_rows_counts_faulty_shards_as_empty():
    fault = InputError("x.json: not valid JSON")
    assert plan_rows([(0, 0), (3, 4), fault, (2, 4)]) == ([0, 0, 3, 3, 5], 4, 1)
    assert plan_rows([(0, 5), (0, 0)]) == ([0, 0, 0], 5, 0)
    assert plan_rows([]) == ([0], 0, 0)


@pytest.mark.slow
def test_json_shards_load_without_orjson(tmp_path):
    """Where orjson is not installed (the GPU machines' image), the standard parser reads the
    same float32 array."""
    vectors = clustered_vectors(300, 12, seed=4)
    write_json_shards(tmp_path / "emb", vectors, [100, 200])
    code = ("import sys; sys.modules['orjson'] = None\n"
            "import numpy as np\n"
            "from utils.io.vectors import load_vectors\n"
            f"np.save({str(tmp_path / 'out.npy')!r}, load_vectors({str(tmp_path / 'emb')!r}, "
            "workers=1).vectors)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), vectors)
