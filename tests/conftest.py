"""Shared fixtures: the golden cases, seeded shard builders, and a CLI runner."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from utils.runtime.device import nvidia_driver_present
from utils.synthetic import clustered_vectors  # noqa: F401 (the tests' clustered pools)

if not nvidia_driver_present():
    # Without a GPU, Triton's interpreter runs the GPU engine's kernel on CPU tensors; it must
    # be chosen before Triton is first imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parent.parent


def write_json_shards(folder, vectors, sizes, names=None):
    """Write ``vectors`` as JSON shards of the given uneven ``sizes`` (stems 0, 1, ... or names)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, size in enumerate(sizes):
        name = names[i] if names else str(i)
        (folder / f"{name}.json").write_text(json.dumps(vectors[start:start + size].tolist()))
        start += size
    assert start == len(vectors)
    return folder


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def golden():
    return GOLDEN
