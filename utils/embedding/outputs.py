"""Where each input shard's vectors go, and whether they are already there."""

from pathlib import Path

import numpy as np


def output_path(shard, input_root, output_root, output_format):
    """Where a shard's vectors go: the same relative path and stem, the chosen format."""
    relative = Path(shard).relative_to(input_root)
    return Path(output_root) / relative.with_suffix(f".{output_format}")


def shard_done(path, n_items):
    """Whether ``path`` already holds the vectors of a shard of ``n_items`` (a resumable run)."""
    if not path.is_file():
        return False
    try:
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r").shape[0] == n_items
        return json_vector_count(path) == n_items
    except (ValueError, OSError):
        return False


def json_vector_count(path):
    """Rows of a JSON list of number lists, counted by its brackets without parsing the floats.

    A shard changed since it was embedded (items added or removed) then gets embedded again.
    """
    with open(path, "rb") as handle:
        brackets = sum(block.count(b"[") for block in iter(lambda: handle.read(1 << 24), b""))
    return brackets - 1
