"""The .npy and Parquet vector readers: a shard's shape first, then its rows."""

from pathlib import Path

import numpy as np

from ..errors import InputError
from .json_vectors import json_shape, text_shard_error, vectors_from_json


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
