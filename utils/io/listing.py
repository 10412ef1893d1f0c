"""Shard files of a dataset folder, in natural order (docs/method.md section 1)."""

import re
from pathlib import Path

from ..errors import InputError

VECTOR_SUFFIXES = (".json", ".npy", ".parquet")


TEXT_SUFFIXES = (".json", ".jsonl", ".parquet", ".json.gz", ".jsonl.gz")

COMPRESSED = ".gz"  # gzip, read as the format of the suffix before it


def shard_suffix(path):
    """A shard's format as its name says it: ``.jsonl.gz`` for ``0.jsonl.gz``, else the
    suffix (``.json``, ``.npy``)."""
    path = Path(path)
    if path.suffix == COMPRESSED:
        return Path(path.stem).suffix + COMPRESSED
    return path.suffix


def shard_stem(path):
    """A shard's name without its format: ``0`` for ``0.jsonl.gz`` and for ``0.npy``; text and
    embedding shards pair by it."""
    name = Path(path).name
    return name[:len(name) - len(shard_suffix(path))]


def natural_key(stem):
    """Sort key putting ``2`` before ``10`` and numbers before words (``"a10"`` after ``"a9"``)."""
    parts = re.split(r"(\d+)", stem)
    # isdecimal, not isdigit: "²" is a digit that int() cannot read
    return tuple((0, int(p), "") if p.isdecimal() else (1, 0, p) for p in parts if p != "")


def shard_order_key(path):
    """Natural order of the stem, ties (``01.json``, ``1.json``) broken by the plain name."""
    path = Path(path)
    return natural_key(shard_stem(path)), path.name


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
              if p.is_file() and shard_suffix(p) in suffixes and not p.name.startswith(".")]
    stems = {}
    for path in shards:
        if shard_stem(path) in stems:
            raise InputError(f"{folder}: shards {stems[shard_stem(path)].name} and {path.name} "
                             f"have the same name; keep one")
        stems[shard_stem(path)] = path
    if not shards:
        raise InputError(f"{folder}: no shard files ({', '.join(suffixes)}) in this folder")
    return sorted(shards, key=shard_order_key)


def dataset_files(path, suffixes):
    """Shards of a dataset given as one file or as a folder of shards."""
    path = Path(path)
    if path.is_file():
        if shard_suffix(path) not in suffixes:
            raise InputError(f"{path}: expected a {' or '.join(suffixes)} file")
        return [path]
    return list_shards(path, suffixes)
