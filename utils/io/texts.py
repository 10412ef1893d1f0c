"""Text shards: their items, and their pairing with the vector shards."""

import gzip
import json
import zlib
from pathlib import Path

from ..errors import InputError
from ..runtime.progress import tracked
from .formats import _parquet_file, _read_bytes
from .provenance import check_made_from
from .json_vectors import parse_json
from .listing import (
    COMPRESSED,
    TEXT_SUFFIXES,
    dataset_files,
    natural_key,
    shard_stem,
    shard_suffix,
)
from .text_items import field_value


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


def _text_bytes(path):
    """A JSON or JSON Lines shard's bytes, gunzipped where its name ends in ``.gz``."""
    raw = _read_bytes(path)
    if path.suffix != COMPRESSED:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"{path}: not a readable gzip file ({err})") from None


def _text_records(path, raw):
    """The records of a text shard's bytes (``.json`` list, ``.jsonl`` lines, Parquet rows)."""
    if path.suffix == ".parquet":
        import pyarrow as pa

        try:
            return _parquet_file(path).read().to_pylist()
        except pa.ArrowException as err:
            raise InputError(f"{path}: not a readable Parquet file ({err})") from None
    if shard_suffix(path).startswith(".jsonl"):
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
    """Read one text shard: a ``.json`` list of items, ``.jsonl`` with one item per line (either
    gzipped: ``.json.gz``, ``.jsonl.gz``), or ``.parquet`` with one item per row (a dict of its
    columns).

    A shard whose first row is a vector is refused (an embedding shard given for text). With
    ``text_field`` (``--text_field``) every item must be a record holding that field.
    """
    path = Path(path)
    items = _text_records(path, None if path.suffix == ".parquet" else _text_bytes(path))
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
        arrays = ([] if any(shard_suffix(p) in TEXT_SUFFIXES for p in files)
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
    """Check that text and embedding shards pair up by stem, with equal row counts, and that
    each text shard is the one its vectors were made from where embedding.py recorded it.

    When the text side (``text_source``, the path given) and the embedding side are each one
    file, they pair whatever their names; folders pair shard by shard by stem.
    """
    single_files = (text_source is not None and Path(text_source).is_file()
                    and vector_set.source is not None and Path(vector_set.source).is_file())
    text_stems = [shard_stem(p) for p in text_paths]
    vector_stems = [shard_stem(p) for p in vector_set.paths]
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
        check_made_from(text_path, vector_path)
