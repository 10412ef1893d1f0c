"""SHA-256 of files and buffers, for the run records; the record beside each embedding shard of
what made it, and the check that a text shard is still the one its vectors were made from."""

import hashlib
import json
from pathlib import Path

from ..errors import InputError

_HASH_CHUNK = 1 << 26  # bytes handed to the hash at a time


def sha256_of_bytes(buffer):
    """SHA-256 (hex) of a bytes-like object, fed in chunks (hashlib releases the GIL)."""
    digest = hashlib.sha256()
    if not memoryview(buffer).nbytes:  # an empty shard: a view with a zero in its shape
        return digest.hexdigest()
    view = memoryview(buffer).cast("B")
    for start in range(0, len(view), _HASH_CHUNK):
        digest.update(view[start:start + _HASH_CHUNK])
    return digest.hexdigest()


def sha256_of_file(path):
    """SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_path(path):
    """The hidden file beside a shard's vectors that records what made them (embedding.py)."""
    path = Path(path)
    return path.with_name(f".{path.name}.source.json")


def recorded_input_sha256(vector_path):
    """The SHA-256 of the text shard that ``vector_path``'s vectors were made from, as
    embedding.py recorded it; None without a record (vectors made elsewhere)."""
    try:
        recorded = json.loads(source_path(vector_path).read_text())
    except (OSError, ValueError):
        return None
    value = recorded.get("input_sha256") if isinstance(recorded, dict) else None
    return value if isinstance(value, str) else None


def check_made_from(text_path, vector_path):
    """Refuse a text shard that changed (edited, reordered) since ``vector_path`` was embedded
    from it: its rows would be paired with other texts' vectors."""
    recorded = recorded_input_sha256(vector_path)
    if recorded is not None and recorded != sha256_of_file(text_path):
        raise InputError(f"{text_path}: changed since {vector_path} was embedded from it (its "
                         f"SHA-256 is not the one in {source_path(vector_path).name}); embed "
                         f"it again with embedding.py, or give the text it was made from")
