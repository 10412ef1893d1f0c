"""Shard folders: natural order, validated vectors, text items, global row indices.

A dataset is a folder of shard files (or one file); docs/method.md section 1. Shards are read in
natural order of their stem (ties broken by the plain name), concatenated, and from then on
every row is spoken of by its *global index*, its position in that concatenation. Errors name
the file and the row (global and within the shard).

Vectors are read in two passes, as embedding-reader does: the shape of every shard first
(cheap: .npy and Parquet headers, a bracket count for JSON), then one float32 array of the final
size is allocated and every shard parsed straight into its slice. Several large JSON shards are
parsed by forked worker processes (``utils.json_vectors``), which write into a shared array.
"""

import itertools
import json
import os
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .json_vectors import (WorkerProcesses, can_fork, json_shape, parse_json,
                           read_json_vectors_into, shared_array, text_shard_error,
                           vectors_from_json)
from .progress import tracked
from .text_items import field_value

VECTOR_SUFFIXES = (".json", ".npy", ".parquet")
TEXT_SUFFIXES = (".json", ".jsonl", ".parquet")

# JSON bytes in a dataset from which parsing in worker processes pays for starting them.
PARALLEL_MIN_BYTES = 32 << 20


def natural_key(stem):
    """Sort key putting ``2`` before ``10`` and numbers before words (``"a10"`` after ``"a9"``)."""
    parts = re.split(r"(\d+)", stem)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != "")


def shard_order_key(path):
    """Natural order of the stem, ties (``01.json``, ``1.json``) broken by the plain name."""
    path = Path(path)
    return natural_key(path.stem), path.name


def list_shards(folder, suffixes):
    """Return the shard files of ``folder`` with one of ``suffixes``, in natural stem order.

    Hidden files and files with other suffixes are ignored. Two shards with the same stem
    (``3.json`` and ``3.npy``) are an error, since they would claim the same rows.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: no such file or folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: expected a folder of shard files")
    shards = [p for p in folder.iterdir()
              if p.is_file() and p.suffix in suffixes and not p.name.startswith(".")]
    stems = {}
    for path in shards:
        if path.stem in stems:
            raise InputError(f"{folder}: shards {stems[path.stem].name} and {path.name} "
                             f"have the same name; keep one")
        stems[path.stem] = path
    if not shards:
        raise InputError(f"{folder}: no shard files ({', '.join(suffixes)}) in this folder")
    return sorted(shards, key=shard_order_key)


def dataset_files(path, suffixes):
    """Shards of a dataset given as one file or as a folder of shards."""
    path = Path(path)
    if path.is_file():
        if path.suffix not in suffixes:
            raise InputError(f"{path}: expected a {' or '.join(suffixes)} file")
        return [path]
    return list_shards(path, suffixes)


def _read_bytes(path):
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None


NPY_MAGIC = b"\x93NUMPY"


def read_npy(path, mmap=False):
    """A ``.npy`` array without pickles; anything else is an InputError naming the file.

    ``mmap=True`` maps the file instead of reading it (the rows are read when used).
    """
    try:
        with open(path, "rb") as handle:
            if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise InputError(f"{path}: not a .npy file (no NumPy header)")
            if mmap:
                return np.load(path, mmap_mode="r", allow_pickle=False)
            handle.seek(0)
            return np.load(handle, allow_pickle=False)
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    except (ValueError, EOFError) as err:
        raise InputError(f"{path}: not a readable .npy array ({err})") from None


def _npy_vectors(path, mmap=False):
    """A checked 2-D numeric array from a ``.npy`` shard, as stored (mapped if ``mmap``)."""
    array = read_npy(path, mmap)
    if array.dtype.kind in "US":
        raise text_shard_error(path)
    if array.ndim != 2:
        raise InputError(f"{path}: expected a 2-D array (samples x dimensions), "
                         f"found shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise InputError(f"{path}: expected a numeric array, found dtype {array.dtype}")
    return array


def _parquet_file(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    except pa.ArrowException as err:
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None


def _is_vector_type(arrow_type):
    """A list (any kind) of integers or floats."""
    import pyarrow as pa

    t = pa.types
    return ((t.is_list(arrow_type) or t.is_large_list(arrow_type)
             or t.is_fixed_size_list(arrow_type))
            and (t.is_integer(arrow_type.value_type) or t.is_floating(arrow_type.value_type)))


def _is_text_type(arrow_type):
    """Strings, records or lists of them: what a text shard's columns hold."""
    import pyarrow as pa

    t = pa.types
    if t.is_list(arrow_type) or t.is_large_list(arrow_type):
        arrow_type = arrow_type.value_type
    return t.is_string(arrow_type) or t.is_large_string(arrow_type) or t.is_struct(arrow_type)


def vector_column(path, schema, embedding_field=None):
    """The column of a Parquet embedding shard that holds the vectors.

    ``embedding_field`` (``--embedding_field``) names it; without it the shard must have
    exactly one column of number lists.
    """
    columns = ", ".join(f"{field.name} ({field.type})" for field in schema)
    if embedding_field is not None:
        if embedding_field not in schema.names:
            raise InputError(f"{path}: no column '{embedding_field}' (--embedding_field); its "
                             f"columns are {columns}")
        if not _is_vector_type(schema.field(embedding_field).type):
            raise InputError(f"{path}: column '{embedding_field}' (--embedding_field) holds "
                             f"{schema.field(embedding_field).type}, not lists of numbers")
        return embedding_field
    found = [field.name for field in schema if _is_vector_type(field.type)]
    if len(found) == 1:
        return found[0]
    if found:
        raise InputError(f"{path}: columns {', '.join(found)} all hold vectors; choose one "
                         f"with --embedding_field")
    if any(_is_text_type(field.type) for field in schema):
        raise text_shard_error(path)
    raise InputError(f"{path}: no column holds vectors (lists of numbers); its columns are "
                     f"{columns or 'none'}")


def _parquet_shape(path, embedding_field=None):
    """(rows, width) of a Parquet embedding shard from its metadata and first vector."""
    import pyarrow as pa

    parquet = _parquet_file(path)
    column = vector_column(path, parquet.schema_arrow, embedding_field)
    arrow_type = parquet.schema_arrow.field(column).type
    if pa.types.is_fixed_size_list(arrow_type):
        return parquet.metadata.num_rows, arrow_type.list_size
    for group in range(parquet.num_row_groups):
        if parquet.metadata.row_group(group).num_rows:
            first = parquet.read_row_group(group, columns=[column]).column(0)[0].as_py()
            return parquet.metadata.num_rows, len(first or ())
    return 0, 0


def _first(mask):
    return int(np.flatnonzero(mask)[0])


def _parquet_vectors(path, embedding_field=None):
    """A float32 array from the vector column of a Parquet shard, each row checked."""
    import pyarrow.compute as pc

    parquet = _parquet_file(path)
    column = vector_column(path, parquet.schema_arrow, embedding_field)
    vectors = parquet.read(columns=[column]).column(0).combine_chunks()
    if vectors.null_count:
        row = _first(vectors.is_null().to_numpy(zero_copy_only=False))
        raise InputError(f"{path}: row {row} is null, not a vector")
    if not len(vectors):
        return np.zeros((0, 0), dtype=np.float32)
    lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
    width = int(lengths[0])
    if (lengths != width).any():
        row = _first(lengths != width)
        raise InputError(f"{path}: row {row} has {lengths[row]} values but row 0 has {width}; "
                         f"all vectors of a shard must have the same length")
    values = vectors.flatten()
    if values.null_count:
        k = _first(values.is_null().to_numpy(zero_copy_only=False))
        raise InputError(f"{path}: row {k // width}, element {k % width} is null, not a number")
    return values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(vectors), width)


def shard_shape(path, embedding_field=None):
    """``(rows, width)`` of an embedding shard, read cheaply (headers, a bracket count)."""
    path = Path(path)
    if path.suffix == ".json":
        return json_shape(path)
    if path.suffix == ".parquet":
        return _parquet_shape(path, embedding_field)
    return _npy_vectors(path, mmap=True).shape


def _vectors_as_stored(path, embedding_field=None):
    """A shard's vectors by the validating readers (the slow JSON parser; .npy mapped)."""
    if path.suffix == ".json":
        return vectors_from_json(path, _read_bytes(path))
    if path.suffix == ".parquet":
        return _parquet_vectors(path, embedding_field)
    return _npy_vectors(path, mmap=True)


def check_vectors(vectors, path, first_row=0, allow_zero=False):
    """Refuse NaN, inf and (unless ``allow_zero``) all-zero rows, naming the first bad row.

    ``first_row`` is the global index of the shard's row 0, so the message gives both numbers.
    """
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise InputError(f"{path}: row {i} (global row {first_row + i}) holds NaN or inf")
    if not allow_zero:
        nonzero = np.any(vectors != 0, axis=1)
        if not nonzero.all():
            i = int(np.argmin(nonzero))
            raise InputError(f"{path}: row {i} (global row {first_row + i}) is a zero vector, "
                             f"which has no direction (cosine distance is undefined)")


def _read_shard_into(path, out, width_from, embedding_field=None):
    """Read the shard ``path`` into ``out``, the rows its planned shape gave it.

    ``width_from`` is the shard that set the dataset's width, for the message when this one
    differs. JSON is parsed straight into ``out``; what the fast parser declines is read by
    the validating one, which names the fault.
    """
    if path.suffix == ".json" and read_json_vectors_into(path, out):
        return
    vectors = _vectors_as_stored(path, embedding_field)
    if len(vectors) != len(out) or (len(vectors) and vectors.shape[1] != out.shape[1]
                                    and path == width_from):
        raise InputError(f"{path}: changed while being read ({len(out)} rows at first, then "
                         f"{len(vectors)}); read it again")
    if len(vectors) and vectors.shape[1] != out.shape[1]:
        raise InputError(f"{path}: vectors have {vectors.shape[1]} dimensions but "
                         f"{width_from.name} has {out.shape[1]}")
    if len(vectors):
        out[...] = vectors


def _fill_shard(path, out, start, stop, width_from, allow_zero, embedding_field,
                first_row=None):
    """Read shard ``path`` into rows ``start:stop`` of ``out`` and check them (a worker's task).
    ``first_row``: the global index of the shard's first row (default ``start``)."""
    _read_shard_into(path, out[start:stop], width_from, embedding_field)
    check_vectors(out[start:stop], path, start if first_row is None else first_row,
                  allow_zero=allow_zero)


def read_vector_shard(path, embedding_field=None):
    """Read one embedding shard (``.json`` list of vectors, 2-D ``.npy``, Parquet) as float32."""
    path = Path(path)
    out = np.empty(shard_shape(path, embedding_field), dtype=np.float32)
    _read_shard_into(path, out, path, embedding_field)
    return out


def parse_processes(files, workers=None):
    """How many worker processes parse the JSON shards among ``files``: 0 means this one.

    ``workers=None`` uses every CPU this process may run on when the JSON shards hold at least
    ``PARALLEL_MIN_BYTES``; ``workers=1`` parses here. Never more processes than JSON shards or
    CPUs, and none where processes cannot be forked (they share the array by fork).
    """
    json_files = [f for f in files if Path(f).suffix == ".json"]
    cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1)
    if workers is None:
        workers = cpus if sum(_size(f) for f in json_files) >= PARALLEL_MIN_BYTES else 1
    processes = min(workers, cpus, len(json_files))
    return processes if processes >= 2 and can_fork() else 0


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # the read names the fault


def _plan_shapes(files, embedding_field, processes):
    """Each shard's ``(rows, width)``, or the InputError reading it gave (raised in its turn,
    so that the first fault in shard order is the one reported, as when read one by one)."""
    shapes = [None] * len(files)
    json_ids = [i for i, f in enumerate(files) if f.suffix == ".json"] if processes else []
    with WorkerProcesses(json_shape, [(files[i],) for i in json_ids], processes) if json_ids \
            else nullcontext() as scans:
        for task, i in enumerate(json_ids):
            ok, value = scans.result(task)
            shapes[i] = value if ok else InputError(value)
    for i, shard in enumerate(files):
        if shapes[i] is None:
            try:
                shapes[i] = shard_shape(shard, embedding_field)
            except InputError as err:
                shapes[i] = err
    return shapes


def plan_rows(shapes):
    """Global offsets of the shards' rows and the dataset's width, from their shapes.

    ``shapes`` holds each shard's ``(rows, width)``, or the InputError its shape gave: such a
    shard counts no rows (its error is raised in its turn, before a later offset matters).
    Returns ``(offsets, width, width_from)``: ``offsets[i]`` is the global index of shard i's
    row 0 and ``offsets[-1]`` the row count; the width is that of shard ``width_from``, the
    first with rows (0 if none has).
    """
    sizes = [(0, 0) if isinstance(shape, InputError) else shape for shape in shapes]
    offsets = list(itertools.accumulate((rows for rows, _width in sizes), initial=0))
    width_from = next((i for i, (rows, _width) in enumerate(sizes) if rows), 0)
    return offsets, (sizes[width_from][1] if sizes else 0), width_from


@dataclass
class VectorSet:
    """Vectors of a dataset, concatenated in shard order, with where each shard starts.

    ``offsets[i]`` is the global index of row 0 of ``paths[i]``; ``offsets[-1]`` the row count.
    ``name`` is the stem of a single-file dataset or the name of a shard folder; ``source`` the
    file or folder given. ``workers`` is how many worker processes parsed its JSON shards (0:
    this process did).
    """

    vectors: np.ndarray
    paths: list
    offsets: list
    name: str
    source: Path = None
    workers: int = 0
    start: int = 0  # global index of ``vectors[0]``: not 0 when a rank loaded its block only
    shard_sha256: dict = None  # shard number -> SHA-256 of its rows, hashed while loading

    @property
    def stop(self):
        return self.start + len(self.vectors)

    def locate(self, indices):
        """``(shard names, rows)`` of global ``indices``: each one's shard file name and its row
        within that shard."""
        indices = np.asarray(indices, dtype=np.int64)
        offsets = np.asarray(self.offsets)
        shard_of = np.searchsorted(offsets, indices, side="right") - 1
        return [self.paths[i].name for i in shard_of], indices - offsets[shard_of]


def load_vector_block(path, block_of, progress=None, allow_zero=False, embedding_field=None):
    """Load one rank's contiguous block of a dataset's rows (``torchrun``; ``load_vectors``
    loads them all).

    Every shard's shape is read first, which gives the row count n; ``block_of(n)`` gives the
    rows ``(start, stop)`` to keep. Only the shards holding some of them are read (whole, and
    validated, their errors naming global rows as ``load_vectors`` does), so a rank's memory
    is its block plus one shard. Each shard whose first row (or, for an empty shard, whose
    offset) falls in the block is hashed here for the run record (``shard_sha256``), so that
    every shard is hashed by exactly one rank.
    """
    from .records import sha256_of_bytes

    path = Path(path)
    files = dataset_files(path, VECTOR_SUFFIXES)
    shapes = _plan_shapes(files, embedding_field, 0)
    offsets, width, width_from = plan_rows(shapes)
    total = offsets[-1]
    if not total:  # as load_vectors: the first unreadable shard, else "empty"
        for shape in shapes:
            if isinstance(shape, InputError):
                raise shape
        raise InputError(f"{path}: the dataset is empty (no vectors in {len(files)} shard(s))")
    start, stop = block_of(total)
    out = np.empty((stop - start, width), np.float32)
    hashes = {}
    for i, shard in enumerate(tracked(files, progress)):
        first, last = offsets[i], offsets[i + 1]
        hashed_here = start <= min(first, total - 1) < stop
        if isinstance(shapes[i], InputError):
            if first < stop and (last > start or hashed_here):
                raise shapes[i]
            continue
        if not (first < stop and last > start) and not hashed_here:
            continue
        rows = np.empty((last - first, width), np.float32)
        _fill_shard(shard, rows, 0, last - first, files[width_from], allow_zero,
                    embedding_field, first)
        lo, hi = max(first, start), min(last, stop)
        if hi > lo:
            out[lo - start:hi - start] = rows[lo - first:hi - first]
        if hashed_here:
            hashes[i] = sha256_of_bytes(rows)
    return VectorSet(out, files, offsets, path.stem if path.is_file() else path.resolve().name,
                     source=path, start=start, shard_sha256=hashes)


def load_vectors(path, progress=None, allow_zero=False, embedding_field=None, workers=None):
    """Load a dataset of embedding vectors (one file or a folder of shards).

    Every shard is validated (docs/method.md section 1: same dimension, numbers only, finite,
    non-zero); an empty dataset is an error, and the first fault in shard order is the one
    reported. ``.json``, ``.npy`` and ``.parquet`` shards may be mixed; ``embedding_field``
    names the vector column of Parquet shards that have several. ``progress`` wraps the list
    of shards (for example tqdm). ``workers`` caps the processes parsing JSON shards (see
    ``parse_processes``); they write straight into the final array.
    """
    path = Path(path)
    files = dataset_files(path, VECTOR_SUFFIXES)
    processes = parse_processes(files, workers)
    shapes = _plan_shapes(files, embedding_field, processes)
    offsets, width, width_from = plan_rows(shapes)
    out = (shared_array if processes else np.empty)((offsets[-1], width), np.float32)
    tasks = [(shard, out, offsets[i], offsets[i + 1], files[width_from], allow_zero,
              embedding_field) for i, shard in enumerate(files)]
    in_workers = [i for i, shard in enumerate(files) if processes and shard.suffix == ".json"
                  and not isinstance(shapes[i], InputError)]
    task_of = {i: task for task, i in enumerate(in_workers)}
    with WorkerProcesses(_fill_shard, [tasks[i] for i in in_workers], processes) \
            if in_workers else nullcontext() as parsers:
        for i, _shard in enumerate(tracked(files, progress)):
            if isinstance(shapes[i], InputError):
                raise shapes[i]
            if i not in task_of:
                _fill_shard(*tasks[i])
                continue
            ok, message = parsers.result(task_of[i])
            if not ok:
                raise InputError(message)
    if not offsets[-1]:
        raise InputError(f"{path}: the dataset is empty (no vectors in {len(files)} shard(s))")
    return VectorSet(out, files, offsets, path.stem if path.is_file() else path.resolve().name,
                     source=path, workers=processes if in_workers else 0)


def _is_number_list(value):
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def vector_size(item):
    """The length of the vector ``item`` is, or None if it is not one.

    A vector is a list of numbers, or a record holding one and otherwise only numbers (a
    Parquet row ``{"id": 3, "embedding": [...]}``).
    """
    if _is_number_list(item):
        return len(item)
    if isinstance(item, dict):
        vectors = [v for v in item.values() if _is_number_list(v)]
        if vectors and all(_is_number_list(v) or (isinstance(v, (int, float))
                                                  and not isinstance(v, bool))
                           for v in item.values()):
            return len(vectors[0])
    return None


def _text_records(path, raw):
    """The records of a text shard's bytes (``.json`` list, ``.jsonl`` lines, Parquet rows)."""
    if path.suffix == ".parquet":
        import pyarrow as pa

        try:
            return _parquet_file(path).read().to_pylist()
        except pa.ArrowException as err:
            raise InputError(f"{path}: not a readable Parquet file ({err})") from None
    if path.suffix == ".jsonl":
        items = []
        for lineno, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise InputError(f"{path}: line {lineno} is not valid JSON ({err})") from None
        return items
    items = parse_json(path, raw)
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a JSON list of items, found {type(items).__name__}")
    return items


def read_text_shard(path, text_field=None):
    """Read one text shard: a ``.json`` list of items, ``.jsonl`` with one item per line, or
    ``.parquet`` with one item per row (a dict of its columns).

    A shard whose first row is a vector is refused (an embedding shard given for text). With
    ``text_field`` (``--text_field``) every item must be a record holding that field.
    """
    path = Path(path)
    items = _text_records(path, None if path.suffix == ".parquet" else _read_bytes(path))
    size = vector_size(items[0]) if items else None
    if size:
        raise InputError(f"{path}: row 0 is a vector of {size} numbers, not text; this looks "
                         f"like an embedding shard - give the text shards")
    if text_field is not None:
        for i, item in enumerate(items):
            field_value(item, f"{path}: row {i}", text_field)
    return items


def _refuse_embedding_arrays(path):
    """Point a text loader given ``.npy`` embeddings (a file, or a folder of only them) back."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        arrays = ([] if any(p.suffix in TEXT_SUFFIXES for p in files)
                  else [p for p in files if p.suffix == ".npy"])
    else:
        arrays = [path] if path.suffix == ".npy" and path.is_file() else []
    if arrays:
        raise InputError(f"{path}: holds .npy arrays ({arrays[0].name}), which are embeddings, "
                         f"not text; this looks like an embedding shard - give the text shards")


def load_items(path, progress=None, text_field=None):
    """Load the text items of a dataset, returning ``(items, shard_paths, shard_counts)``.

    ``text_field`` (``--text_field``): every item must be a record holding that field.
    """
    _refuse_embedding_arrays(path)
    files = dataset_files(path, TEXT_SUFFIXES)
    items, counts = [], []
    for shard in tracked(files, progress):
        shard_items = read_text_shard(shard, text_field)
        items.extend(shard_items)
        counts.append(len(shard_items))
    return items, files, counts


def check_pairing(text_paths, text_counts, vector_set, text_source=None):
    """Check that text and embedding shards pair up by stem, with equal row counts.

    When the text side (``text_source``, the path given) and the embedding side are each one
    file, they pair whatever their names; folders pair shard by shard by stem.
    """
    single_files = (text_source is not None and Path(text_source).is_file()
                    and vector_set.source is not None and Path(vector_set.source).is_file())
    text_stems = [p.stem for p in text_paths]
    vector_stems = [p.stem for p in vector_set.paths]
    if text_stems != vector_stems and not single_files:
        only_text = sorted(set(text_stems) - set(vector_stems), key=natural_key)
        only_vectors = sorted(set(vector_stems) - set(text_stems), key=natural_key)
        detail = []
        if only_text:
            detail.append(f"text only: {', '.join(only_text[:5])}")
        if only_vectors:
            detail.append(f"embeddings only: {', '.join(only_vectors[:5])}")
        raise InputError("text and embedding shards do not pair up by name "
                         f"({'; '.join(detail) or 'different order'})")
    for text_path, vector_path, count, start, stop in zip(
            text_paths, vector_set.paths, text_counts, vector_set.offsets,
            vector_set.offsets[1:]):
        if count != stop - start:
            where = vector_path.name if single_files else "its embedding shard"
            raise InputError(f"{text_path}: {count} items but {where} has {stop - start} "
                             f"vectors")
