"""Vector datasets: plan every shard's rows first, then read each shard into its slice of one
array with global row indices.

A dataset is a folder of shard files (or one file); docs/method.md section 1. Shards are read in
natural order of their stem (ties broken by the plain name), concatenated, and from then on
every row is spoken of by its *global index*, its position in that concatenation. Errors name
the file and the row (global and within the shard).

Vectors are read in two passes, as embedding-reader does: the shape of every shard first
(cheap: .npy and Parquet headers, a bracket count for JSON), then one float32 array of the final
size is allocated and every shard parsed straight into its slice. Several large JSON shards are
parsed by forked worker processes (``utils.io.json_vectors``), which write into a shared array.
"""

import itertools
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..runtime.progress import tracked
from .formats import _vectors_as_stored, shard_shape
from .json_vectors import json_shape, read_json_vectors_into
from .listing import VECTOR_SUFFIXES, dataset_files
from .workers import WorkerProcesses, parse_processes, shared_array


def as_vectors(vectors, what="vectors", allow_zero=False):
    """A checked float32 (n, d) array from anything numeric: finite, non-empty, no zero rows
    unless allowed; ragged or non-numeric input is refused naming ``what``."""
    try:
        array = np.ascontiguousarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InputError(f"{what}: expected numbers in rows of one length (samples x "
                         f"dimensions): {err}") from None
    if array.ndim != 2 or not array.size:
        raise InputError(f"{what}: expected a non-empty 2-D array (samples x dimensions), "
                         f"found shape {array.shape}")
    check_vectors(array, what, allow_zero=allow_zero)
    return array


def check_vectors(vectors, path, first_row=0, allow_zero=False):
    """Refuse NaN, inf and (unless ``allow_zero``) all-zero rows, naming the first bad row.

    ``first_row`` is the global index of the shard's row 0, so the message gives both numbers.
    """
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise InputError(f"{path}: row {i} (global row {first_row + i}) holds NaN or inf")
    if not allow_zero:
        nonzero = np.any(vectors != 0, axis=1)
        if not nonzero.all():
            i = int(np.argmin(nonzero))
            raise InputError(f"{path}: row {i} (global row {first_row + i}) is a zero vector, "
                             f"which has no direction (cosine distance is undefined)")


def _read_shard_into(path, out, width_from, embedding_field=None):
    """Read the shard ``path`` into ``out``, the rows its planned shape gave it.

    ``width_from`` is the shard that set the dataset's width, for the message when this one
    differs. JSON is parsed straight into ``out``; what the fast parser declines is read by
    the validating one, which names the fault.
    """
    if path.suffix == ".json" and read_json_vectors_into(path, out):
        return
    vectors = _vectors_as_stored(path, embedding_field)
    if len(vectors) != len(out) or (len(vectors) and vectors.shape[1] != out.shape[1]
                                    and path == width_from):
        raise InputError(f"{path}: changed while being read ({len(out)} rows at first, then "
                         f"{len(vectors)}); read it again")
    if len(vectors) and vectors.shape[1] != out.shape[1]:
        raise InputError(f"{path}: vectors have {vectors.shape[1]} dimensions but "
                         f"{width_from.name} has {out.shape[1]}")
    if len(vectors):
        out[...] = vectors


def _fill_shard(path, out, start, stop, width_from, allow_zero, embedding_field,
                first_row=None):
    """Read shard ``path`` into rows ``start:stop`` of ``out`` and check them (a worker's task).
    ``first_row``: the global index of the shard's first row (default ``start``)."""
    _read_shard_into(path, out[start:stop], width_from, embedding_field)
    check_vectors(out[start:stop], path, start if first_row is None else first_row,
                  allow_zero=allow_zero)




def _plan_shapes(files, embedding_field, processes):
    """Each shard's ``(rows, width)``, or the InputError reading it gave (raised in its turn,
    so that the first fault in shard order is the one reported, as when read one by one)."""
    shapes = [None] * len(files)
    json_ids = [i for i, f in enumerate(files) if f.suffix == ".json"] if processes else []
    with WorkerProcesses(json_shape, [(files[i],) for i in json_ids], processes) if json_ids \
            else nullcontext() as scans:
        for task, i in enumerate(json_ids):
            ok, value = scans.result(task)
            shapes[i] = value if ok else InputError(value)
    for i, shard in enumerate(files):
        if shapes[i] is None:
            try:
                shapes[i] = shard_shape(shard, embedding_field)
            except InputError as err:
                shapes[i] = err
    return shapes


def dataset_rows(path, embedding_field=None):
    """The number of vectors of a dataset, from its shards' shapes alone (nothing parsed)."""
    files = dataset_files(Path(path), VECTOR_SUFFIXES)
    shapes = _plan_shapes(files, embedding_field, 0)
    for shape in shapes:
        if isinstance(shape, InputError):
            raise shape
    return plan_rows(shapes)[0][-1]


def plan_rows(shapes):
    """Global offsets of the shards' rows and the dataset's width, from their shapes.

    ``shapes`` holds each shard's ``(rows, width)``, or the InputError its shape gave: such a
    shard counts no rows (its error is raised in its turn, before a later offset matters).
    Returns ``(offsets, width, width_from)``: ``offsets[i]`` is the global index of shard i's
    row 0 and ``offsets[-1]`` the row count; the width is that of shard ``width_from``, the
    first with rows (0 if none has).
    """
    sizes = [(0, 0) if isinstance(shape, InputError) else shape for shape in shapes]
    offsets = list(itertools.accumulate((rows for rows, _width in sizes), initial=0))
    width_from = next((i for i, (rows, _width) in enumerate(sizes) if rows), 0)
    return offsets, (sizes[width_from][1] if sizes else 0), width_from


@dataclass
class VectorSet:
    """Vectors of a dataset, concatenated in shard order, with where each shard starts.

    ``offsets[i]`` is the global index of row 0 of ``paths[i]``; ``offsets[-1]`` the row count.
    ``name`` is the stem of a single-file dataset or the name of a shard folder; ``source`` the
    file or folder given. ``workers`` is how many worker processes parsed its JSON shards (0:
    this process did).
    """

    vectors: np.ndarray
    paths: list
    offsets: list
    name: str
    source: Path = None
    workers: int = 0
    start: int = 0  # global index of ``vectors[0]``: not 0 when a rank loaded its block only
    shard_digests: dict = None  # shard number -> digest of its rows, taken while loading

    @property
    def stop(self):
        return self.start + len(self.vectors)

    def locate(self, indices):
        """``(shard names, rows)`` of global ``indices``: each one's shard file name and its row
        within that shard."""
        indices = np.asarray(indices, dtype=np.int64)
        offsets = np.asarray(self.offsets)
        shard_of = np.searchsorted(offsets, indices, side="right") - 1
        return [self.paths[i].name for i in shard_of], indices - offsets[shard_of]


def _refuse_empty(path, files, shapes):
    """As ``load_vectors`` says it: the first unreadable shard, else "empty"."""
    for shape in shapes:
        if isinstance(shape, InputError):
            raise shape
    raise InputError(f"{path}: the dataset is empty (no vectors in {len(files)} shard(s))")


def load_vector_block(path, block_of, progress=None, allow_zero=False, embedding_field=None,
                      shard_digest=None):
    """Load one rank's contiguous block of a dataset's rows (``torchrun``; ``load_vectors``
    loads them all).

    Every shard's shape is read first, which gives the row count n; ``block_of(n)`` gives the
    rows ``(start, stop)`` to keep. Only the shards holding some of them are read (whole, and
    validated, their errors naming global rows as ``load_vectors`` does), so a rank's memory
    is its block plus one shard. ``shard_digest(rows)``, if given, is taken of each shard
    whose first row (or, for an empty shard, whose offset) falls in the block
    (``shard_digests``), so that every shard is digested by exactly one rank, while it is read.
    """
    path = Path(path)
    files = dataset_files(path, VECTOR_SUFFIXES)
    shapes = _plan_shapes(files, embedding_field, 0)
    offsets, width, width_from = plan_rows(shapes)
    total = offsets[-1]
    if not total:
        _refuse_empty(path, files, shapes)
    start, stop = block_of(total)
    out = np.empty((stop - start, width), np.float32)
    digests = {}
    for i, shard in enumerate(tracked(files, progress)):
        first, last = offsets[i], offsets[i + 1]
        owned = shard_digest is not None and start <= min(first, total - 1) < stop
        if isinstance(shapes[i], InputError):
            if first < stop and (last > start or owned):
                raise shapes[i]
            continue
        if not (first < stop and last > start) and not owned:
            continue
        rows = np.empty((last - first, width), np.float32)
        _fill_shard(shard, rows, 0, last - first, files[width_from], allow_zero,
                    embedding_field, first)
        lo, hi = max(first, start), min(last, stop)
        if hi > lo:
            out[lo - start:hi - start] = rows[lo - first:hi - first]
        if owned:
            digests[i] = shard_digest(rows)
    return VectorSet(out, files, offsets, path.stem if path.is_file() else path.resolve().name,
                     source=path, start=start,
                     shard_digests=digests if shard_digest is not None else None)


def _fill_in_order(tasks, shapes, in_workers, processes, progress):
    """Fill every shard's slice, in shard order: the shards ``in_workers`` by forked workers
    (their results awaited in turn), the others here; the first fault in order is raised."""
    task_of = {i: task for task, i in enumerate(in_workers)}
    with WorkerProcesses(_fill_shard, [tasks[i] for i in in_workers], processes) \
            if in_workers else nullcontext() as parsers:
        for i, _task in enumerate(tracked(tasks, progress)):
            if isinstance(shapes[i], InputError):
                raise shapes[i]
            if i not in task_of:
                _fill_shard(*tasks[i])
                continue
            ok, message = parsers.result(task_of[i])
            if not ok:
                raise InputError(message)


def load_vectors(path, progress=None, allow_zero=False, embedding_field=None, workers=None):
    """Load a dataset of embedding vectors (one file or a folder of shards).

    Every shard is validated (docs/method.md section 1: same dimension, numbers only, finite,
    non-zero); an empty dataset is an error, and the first fault in shard order is the one
    reported. ``.json``, ``.npy`` and ``.parquet`` shards may be mixed; ``embedding_field``
    names the vector column of Parquet shards that have several. ``progress`` wraps the list
    of shards (for example tqdm). ``workers`` caps the processes parsing JSON shards (see
    ``parse_processes``); they write straight into the final array.
    """
    path = Path(path)
    files = dataset_files(path, VECTOR_SUFFIXES)
    processes = parse_processes(files, workers)
    shapes = _plan_shapes(files, embedding_field, processes)
    offsets, width, width_from = plan_rows(shapes)
    out = (shared_array if processes else np.empty)((offsets[-1], width), np.float32)
    tasks = [(shard, out, offsets[i], offsets[i + 1], files[width_from], allow_zero,
              embedding_field) for i, shard in enumerate(files)]
    in_workers = [i for i, shard in enumerate(files) if processes and shard.suffix == ".json"
                  and not isinstance(shapes[i], InputError)]
    _fill_in_order(tasks, shapes, in_workers, processes, progress)
    if not offsets[-1]:
        raise InputError(f"{path}: the dataset is empty (no vectors in {len(files)} shard(s))")
    return VectorSet(out, files, offsets, path.stem if path.is_file() else path.resolve().name,
                     source=path, workers=processes if in_workers else 0)
