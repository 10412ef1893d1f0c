"""The run record written beside every output: inputs and their hashes, options, versions.

A record (``{stem}_run.json``) holds the tool and every parameter, the inputs (each shard's
name, row count and a SHA-256 of its content), the code version, the versions of the packages
that computed the numbers, the device and number of ranks, and the wall time of each stage.
Two outputs are comparable when their records agree on parameters, inputs and model.
"""

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .hashing import sha256_of_bytes, sha256_of_file

REPO = Path(__file__).resolve().parents[2]  # the checkout, when run from one
DISTRIBUTION = "novelsum-toolkit"  # the name pip installs it under


PACKAGES = ("numpy", "torch", "faiss-cpu", "faiss-gpu-cu12", "numba", "triton", "pandas",
            "pyarrow", "orjson", "click", "transformers", "sentence-transformers", "vllm")


def vector_inputs(vector_set, ranks=None):
    """Each shard of a loaded ``VectorSet``: name, rows, and the SHA-256 of its rows as loaded
    (float32, C order), so JSON, .npy and Parquet copies of the same vectors hash alike.

    Shards are hashed in parallel threads: 6.5 GB of vectors take seconds, not a minute. A
    rank's block (``load_vector_block`` with ``shard_digest=sha256_of_bytes``) brings the
    hashes made while loading; with ``ranks`` every rank's are gathered (collective), so the
    record lists every shard.
    """
    spans = list(zip(vector_set.offsets, vector_set.offsets[1:]))
    if vector_set.shard_digests is not None:
        known = dict(vector_set.shard_digests)
        if ranks is not None:
            for part in ranks.gather_objects({str(i): h for i, h in known.items()}):
                known.update({int(i): h for i, h in part.items()})
        hashes = [known.get(i) for i in range(len(spans))]
        width = int(vector_set.vectors.shape[1])
    else:
        vectors = np.ascontiguousarray(vector_set.vectors, dtype=np.float32)
        width = int(vectors.shape[1])
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            hashes = list(pool.map(lambda span: sha256_of_bytes(vectors[span[0]:span[1]]),
                                   spans))
    return {"path": str(vector_set.source),
            "dimensions": width,
            "shards": [{"name": Path(p).name, "rows": stop - start, "sha256": h}
                       for p, (start, stop), h in zip(vector_set.paths, spans, hashes)]}


def text_inputs(source, paths, counts):
    """Each text shard: name, records, and the SHA-256 of the file."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        hashes = list(pool.map(sha256_of_file, paths))
    return {"path": str(source),
            "shards": [{"name": Path(p).name, "rows": int(c), "sha256": h}
                       for p, c, h in zip(paths, counts, hashes)]}


def code_version():
    """``git describe`` of the checkout this code runs from (``-dirty`` with local changes);
    installed as a package, its version; None when neither is known."""
    if (REPO / ".git").exists() and (REPO / "utils" / "io" / "records.py").is_file():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            result = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"],
                                    cwd=REPO, capture_output=True, text=True, timeout=10)
            if result.returncode == 0:
                return result.stdout.strip()
        return None
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.version(DISTRIBUTION)
    return None


def package_versions():
    """Versions of the installed packages that can change a number (absent ones left out)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


class RunRecord:
    """Collects a run's record as it goes; ``finish`` returns it as a JSON-ready dict."""

    def __init__(self, tool, parameters):
        self.tool = tool
        self.parameters = dict(parameters)
        self.inputs = {}
        self.embedded_with = {}  # what embedded each set read (io/provenance.py)
        self.stages = {}
        self.started = datetime.now(timezone.utc)
        self._clock = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name):
        """Time a stage; a stage run several times (per dataset) adds up."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - start

    def add_input(self, role, description):
        self.inputs[role] = description

    def finish(self, device, outputs, ranks=1, summary=None):
        return {"tool": self.tool,
                "parameters": self.parameters,
                "inputs": self.inputs,
                **({"embedded_with": self.embedded_with} if self.embedded_with else {}),
                "outputs": [Path(p).name for p in outputs],
                "summary": summary or {},
                "device": device,
                "ranks": ranks,
                "code_version": code_version(),
                "packages": package_versions(),
                "command": [Path(sys.argv[0]).name, *sys.argv[1:]],  # how it was started
                "started": self.started.isoformat(timespec="seconds"),
                "seconds": {**{k: round(v, 3) for k, v in self.stages.items()},
                            "total": round(time.perf_counter() - self._clock, 3)}}
