"""Where each input shard's vectors go, what made them, and whether they are already there."""

import hashlib
from pathlib import Path

import numpy as np

from ..io.listing import shard_stem
from ..io.provenance import read_source

# Files of a model folder whose content decides the vectors beside its weights' names.
MODEL_CONFIG_FILES = ("config.json", "modules.json", "sentence_bert_config.json",
                      "tokenizer_config.json", "1_Pooling/config.json")


def output_path(shard, input_root, output_root, output_format):
    """Where a shard's vectors go: the same relative path and stem, the chosen format."""
    relative = Path(shard).relative_to(input_root)
    return Path(output_root) / relative.with_name(f"{shard_stem(relative)}.{output_format}")


def model_fingerprint(model_path):
    """SHA-256 over a model folder's configuration files (those it has), in a fixed order."""
    digest = hashlib.sha256()
    for name in MODEL_CONFIG_FILES:
        config = Path(model_path) / name
        if config.is_file():
            digest.update(name.encode() + b"\0" + config.read_bytes() + b"\0")
    return digest.hexdigest()


def shard_source(model_path, backend, dtype, max_length, text_field, input_sha256):
    """What makes a shard's vectors: the model (folder and configuration), backend, the dtype
    it computes in, token limit, text field, and the input shard's content."""
    return {"model": str(Path(model_path).resolve()),
            "model_config_sha256": model_fingerprint(model_path), "backend": backend,
            "dtype": dtype, "max_length": max_length, "text_field": text_field,
            "input_sha256": input_sha256}


def source_change(path, source):
    """Why the vectors at ``path`` do not come from ``source`` (``"max_length 128 there, 256
    now"``), or None when they do."""
    recorded = read_source(path)
    if recorded is None:
        return "no record of what made them"
    for key, value in source.items():
        if recorded.get(key) != value:
            return f"{key} {recorded.get(key)!r} there, {value!r} now"
    return None


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
