"""Shard folders: natural order, validated vectors, text items, global row indices (SPEC section 1).

A dataset is a folder of shard files (or one file). Shards are read in natural order of their
stem, concatenated, and from then on every row is spoken of by its *global index*, its position
in that concatenation. Errors name the file and the row (global and within the shard).
"""

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

VECTOR_SUFFIXES = (".json", ".npy")
TEXT_SUFFIXES = (".json", ".jsonl")

# Bytes a well-formed JSON list of vectors consists of; anything else (quotes, letters such as
# true/null/NaN) sends the file through the slow path that finds and names the bad value.
_NUMERIC_JSON_BYTES = b"0123456789eE+-.,[] \t\r\n"


def natural_key(stem):
    """Sort key putting ``2`` before ``10`` and numbers before words (``"a10"`` after ``"a9"``)."""
    parts = re.split(r"(\d+)", stem)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != "")


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
    return sorted(shards, key=lambda p: natural_key(p.stem))


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


def _parse_json(path, raw):
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: "
                         f"{err.msg}); is the file truncated?") from None


def _first_non_number(rows):
    """(row, column, value) of the first element of ``rows`` that is not a JSON number."""
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            return i, None, row
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return i, j, value
    return None


def _vectors_from_numeric_json(raw):
    """Parse a plain ``[[n, ...], ...]`` shard with pandas' C parser, or return None.

    Two to three times faster than ``json`` for the large shards users have. Taken only for
    numeric text (checked by the caller) with a clean two-level structure and no empty or
    missing values; anything else returns None and goes through ``json`` and the validating
    path, which names the fault.
    """
    body = raw.translate(None, b" \t\r\n")
    if not (body.startswith(b"[[") and body.endswith(b"]]")):
        return None
    table = body[2:-2].replace(b"],[", b"\n")
    if b"[" in table or b"]" in table or not table:
        return None
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(table), header=None, dtype=np.float64, engine="c",
                            na_filter=False, skip_blank_lines=False)
    except (ValueError, pd.errors.ParserError):
        return None
    vectors = np.ascontiguousarray(frame.to_numpy(dtype=np.float32))  # pandas gives columns
    if len(vectors) != table.count(b"\n") + 1 or np.isnan(vectors).any():
        return None
    return vectors


def _vectors_from_json(path, raw):
    if not raw.translate(None, _NUMERIC_JSON_BYTES):
        vectors = _vectors_from_numeric_json(raw)
        if vectors is not None:
            return vectors
    rows = _parse_json(path, raw)
    if not isinstance(rows, list):
        raise InputError(f"{path}: expected a JSON list of vectors, found {type(rows).__name__}")
    if rows and not isinstance(rows[0], list):
        raise InputError(f"{path}: expected a list of vectors (lists of numbers), "
                         f"found a list of {type(rows[0]).__name__}")
    if raw.translate(None, _NUMERIC_JSON_BYTES):
        bad = _first_non_number(rows)
        if bad is not None:
            i, j, value = bad
            where = f"row {i}" if j is None else f"row {i}, element {j}"
            raise InputError(f"{path}: {where} is {json.dumps(value)[:40]}, not a number")
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InputError(f"{path}: row {i} has {len(row)} values but row 0 has {width}; "
                             f"all vectors of a shard must have the same length")
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), width)


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
    if array.ndim != 2:
        raise InputError(f"{path}: expected a 2-D array (samples x dimensions), "
                         f"found shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise InputError(f"{path}: expected a numeric array, found dtype {array.dtype}")
    return array


def _vectors_from_npy(path):
    return np.ascontiguousarray(_npy_vectors(path), dtype=np.float32)


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


def read_vector_shard(path):
    """Read one embedding shard (``.json`` list of vectors or 2-D ``.npy``) as float32."""
    path = Path(path)
    if path.suffix == ".npy":
        return _vectors_from_npy(path)
    return _vectors_from_json(path, _read_bytes(path))


@dataclass
class VectorSet:
    """Vectors of a dataset, concatenated in shard order, with where each shard starts.

    ``offsets[i]`` is the global index of row 0 of ``paths[i]``; ``offsets[-1]`` the row count.
    ``name`` is the stem of a single-file dataset or the name of a shard folder.
    """

    vectors: np.ndarray
    paths: list
    offsets: list
    name: str


def load_vectors(path, progress=None, allow_zero=False):
    """Load a dataset of embedding vectors (one file or a folder of shards).

    Every shard is validated (SPEC section 1: same dimension, numbers only, finite, non-zero);
    an empty dataset is an error. ``progress`` wraps the list of shards (for example tqdm).
    """
    path = Path(path)
    files = dataset_files(path, VECTOR_SUFFIXES)
    # .npy shards are mapped first, so their rows go straight into one array of the right size
    # instead of into parts and then a concatenated copy (twice the memory at 400k x 4096).
    mapped = ([_npy_vectors(f, mmap=True) for f in files]
              if len(files) > 1 and all(f.suffix == ".npy" for f in files) else None)
    out = None
    if mapped is not None:
        widths = [m.shape[1] for m in mapped if len(m)]
        out = np.empty((sum(len(m) for m in mapped), widths[0] if widths else 0), np.float32)
    parts, offsets, width, width_from = [], [0], None, None
    for i, shard in enumerate(progress(files) if progress else files):
        vectors = mapped[i] if mapped is not None else read_vector_shard(shard)
        if len(vectors):
            if width is None:
                width, width_from = vectors.shape[1], shard
            elif vectors.shape[1] != width:
                raise InputError(f"{shard}: vectors have {vectors.shape[1]} dimensions but "
                                 f"{width_from.name} has {width}")
            if out is not None:
                out[offsets[-1]:offsets[-1] + len(vectors)] = vectors
                vectors = out[offsets[-1]:offsets[-1] + len(vectors)]
            else:
                parts.append(vectors)
            check_vectors(vectors, shard, offsets[-1], allow_zero=allow_zero)
        offsets.append(offsets[-1] + len(vectors))
    if not offsets[-1]:
        raise InputError(f"{path}: the dataset is empty (no vectors in {len(files)} shard(s))")
    if out is None:
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return VectorSet(out, files, offsets,
                     path.stem if path.is_file() else path.resolve().name)


def read_text_shard(path):
    """Read one text shard: a ``.json`` list of items, or ``.jsonl`` with one item per line."""
    path = Path(path)
    raw = _read_bytes(path)
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
    items = _parse_json(path, raw)
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a JSON list of items, found {type(items).__name__}")
    return items


def load_items(path, progress=None):
    """Load the text items of a dataset, returning ``(items, shard_paths, shard_counts)``."""
    files = dataset_files(path, TEXT_SUFFIXES)
    items, counts = [], []
    for shard in (progress(files) if progress else files):
        shard_items = read_text_shard(shard)
        items.extend(shard_items)
        counts.append(len(shard_items))
    return items, files, counts


def check_pairing(text_paths, text_counts, vector_set):
    """Check that text and embedding shards pair up by stem, with equal row counts."""
    text_stems = [p.stem for p in text_paths]
    vector_stems = [p.stem for p in vector_set.paths]
    if text_stems != vector_stems:
        only_text = sorted(set(text_stems) - set(vector_stems), key=natural_key)
        only_vectors = sorted(set(vector_stems) - set(text_stems), key=natural_key)
        detail = []
        if only_text:
            detail.append(f"text only: {', '.join(only_text[:5])}")
        if only_vectors:
            detail.append(f"embeddings only: {', '.join(only_vectors[:5])}")
        raise InputError("text and embedding shards do not pair up by name "
                         f"({'; '.join(detail) or 'different order'})")
    for text_path, count, start, stop in zip(text_paths, text_counts, vector_set.offsets,
                                             vector_set.offsets[1:]):
        if count != stop - start:
            raise InputError(f"{text_path}: {count} items but its embedding shard has "
                             f"{stop - start} vectors")
