"""The JSON vector reader: a shard's shape from its head, then its rows parsed in pieces.

The reference format, a JSON list of vectors, is the slowest to read: the paper's pool (396k x
4,096) is about 36 GB of text. It is read in two passes (docs/method.md section 1):

1. ``json_shape``: one cheap pass per shard counts brackets, giving the rows and width the shard
   has if it is well formed, so the caller can allocate the final float32 array once and give
   each shard its slice.
2. ``read_json_vectors_into``: parses a shard a few megabytes of whole rows at a time with
   orjson, writing each piece straight into the shard's slice; memory stays at one piece.
   Anything but a clean two-level list of numbers of the planned shape is declined, and
   ``vectors_from_json`` (the ``json`` module, slow) then reads the shard and names the fault.

``WorkerProcesses`` runs either pass over several shards in forked processes, which write into
an array from ``shared_array`` (an anonymous shared mapping: no named segment can be left
behind). A worker's InputError comes back as its message; a Ctrl-C stops the workers.
"""

import json
import os

import numpy as np

from ..errors import InputError
from .text_items import is_conversation, preview

# Bytes a well-formed JSON list of vectors consists of; anything else (quotes, letters such as
# true/null/NaN) makes the streaming parser decline, so the validating parser names the value.
NUMERIC_JSON_BYTES = b"0123456789eE+-.,[] \t\r\n"


WHITESPACE = b" \t\r\n"


BLOCK_BYTES = 2 << 20  # bytes read per piece (2 MiB measured fastest: the piece stays in cache)


HEAD_LIMIT = 16 << 20  # bytes looked at for the first row's width


def cannot_read(path, err):
    return InputError(f"{path}: cannot read ({err.strerror or err})")


def first_row_width(head):
    """Values in the first row of the JSON text ``head`` (commas + 1), or None if not in it."""
    start = head.find(b"[", head.find(b"[") + 1)
    end = head.find(b"]", start) if start >= 0 else -1
    if end < 0:
        return None
    row = head[start + 1:end]
    return row.count(b",") + 1 if row.strip(WHITESPACE) else 0


def json_shape(path):
    """``(rows, width)`` of a JSON list of vectors, by counting brackets in one pass.

    Exact for every well-formed shard (a vector holds no brackets); for any other file the
    numbers mean nothing, and parsing it raises the error that says why.
    """
    brackets, head, width = 0, b"", None
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
                brackets += block.count(b"[")
                if width is None and len(head) < HEAD_LIMIT:
                    head += block
                    width = first_row_width(head)
    except OSError as err:
        raise cannot_read(path, err) from None
    return max(brackets - 1, 0), width or 0


def _outer_span(handle, size):
    """Byte offsets just inside the outer ``[`` ... ``]`` of a JSON list, or None."""
    head = handle.read(64)
    handle.seek(max(0, size - 64))
    tail = handle.read()
    start = len(head) - len(head.lstrip(WHITESPACE))
    stop = size - (len(tail) - len(tail.rstrip(WHITESPACE))) - 1
    if head[start:start + 1] != b"[" or tail.rstrip(WHITESPACE)[-1:] != b"]" or stop <= start:
        return None
    return start + 1, stop


def row_pieces(path, block_bytes=BLOCK_BYTES):
    """The text of a JSON list of vectors in pieces of whole rows, ``[..],[..]``; None if odd.

    Pieces are cut after a ``]`` and lose the comma that separates them from the previous
    piece, so that ``[`` + piece + ``]`` is a JSON list of the piece's rows. A ``None`` means
    the text is not framed as a list of lists (the caller declines).
    """
    with open(path, "rb") as handle:
        span = _outer_span(handle, os.fstat(handle.fileno()).st_size)
        if span is None:
            yield None
            return
        handle.seek(span[0])
        remaining, pending, first = span[1] - span[0], b"", True
        while remaining > 0:
            block = handle.read(min(block_bytes, remaining))
            if not block:  # the file shrank under us
                yield None
                return
            remaining -= len(block)
            text = pending + block
            cut = text.rfind(b"]") + 1 if remaining else len(text)
            piece, pending = text[:cut].lstrip(WHITESPACE), text[cut:]
            if not piece.rstrip(WHITESPACE):
                continue
            if not first:
                if piece[:1] != b",":
                    yield None
                    return
                piece = piece[1:]
            first = False
            yield piece


def fast_json_parser():
    """``(loads, errors)``: orjson's parser (several times faster), or the standard library's
    where orjson is not installed (a GPU image may lack it); both round numbers alike."""
    try:
        import orjson
    except ImportError:
        return json.loads, (json.JSONDecodeError, ValueError, OverflowError)
    return orjson.loads, (orjson.JSONDecodeError, ValueError, OverflowError)


def read_json_vectors_into(path, out, block_bytes=BLOCK_BYTES):
    """Parse the JSON list of vectors ``path`` straight into ``out`` (rows x width, float32).

    Returns True when the shard was a clean list of numbers of exactly ``out``'s shape, False
    (``out`` partly written) otherwise: then ``vectors_from_json`` must read it and name the
    fault. Numbers are parsed as ``json`` parses them (to float64, correctly rounded) and
    rounded to float32, as ``numpy.asarray(json.load(f), dtype=float32)`` does.
    """
    loads, decode_errors = fast_json_parser()
    rows, width = out.shape
    filled = 0
    try:
        for piece in row_pieces(path, block_bytes):
            if piece is None or piece.translate(None, NUMERIC_JSON_BYTES):
                return False
            try:
                part = np.array(loads(b"[" + piece + b"]"), dtype=np.float32)
            except decode_errors:
                return False
            if part.ndim != 2 or part.shape[1] != width or filled + len(part) > rows:
                return False
            out[filled:filled + len(part)] = part
            filled += len(part)
    except OSError as err:
        raise cannot_read(path, err) from None
    return filled == rows


def parse_json(path, raw):
    """``json.loads`` with a one-line InputError naming the file."""
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: "
                         f"{err.msg}); is the file truncated?") from None


def looks_like_text(value):
    """A string, a record or a conversation: what a text shard holds, never a vector."""
    return isinstance(value, (str, dict)) or is_conversation(value)


def text_shard_error(path):
    return InputError(f"{path}: row 0 is text, not a vector; this looks like a text shard - "
                      f"embed it first with embedding.py")


def first_non_number(rows):
    """(row, column, value) of the first element of ``rows`` that is not a JSON number."""
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            return i, None, row
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return i, j, value
    return None


def vectors_from_json(path, raw):
    """The validating parser: a float32 array from the bytes of a JSON shard, or the fault.

    Slow (the ``json`` module); used where ``read_json_vectors_into`` declines, to name the
    file, row and value at fault, or to read a shard with NaN or Infinity (refused later).
    """
    rows = parse_json(path, raw)
    if not isinstance(rows, list):
        raise InputError(f"{path}: expected a JSON list of vectors, found {type(rows).__name__}")
    if rows and looks_like_text(rows[0]):
        raise text_shard_error(path)
    if rows and not isinstance(rows[0], list):
        raise InputError(f"{path}: expected a list of vectors (lists of numbers), "
                         f"found a list of {type(rows[0]).__name__}")
    bad = first_non_number(rows)
    if bad is not None:
        i, j, value = bad
        where = f"row {i}" if j is None else f"row {i}, element {j}"
        raise InputError(f"{path}: {where} is {preview(value, 40)}, not a number")
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InputError(f"{path}: row {i} has {len(row)} values but row 0 has {width}; "
                             f"all vectors of a shard must have the same length")
    try:
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), width)
    except OverflowError:
        raise InputError(f"{path}: holds an integer too large for a float") from None
