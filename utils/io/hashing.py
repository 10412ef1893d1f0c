"""SHA-256 of files and buffers, for the run records and the records beside embedding shards."""

import hashlib

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
