"""What ``novelselect.py`` does: select, checkpoint, write the picks, log and record."""

import json
import os
from pathlib import Path

import click
import numpy as np

from ..api import novelselect
from ..cli.errors import Interrupted
from ..errors import InputError
from ..io.atomic import write_text_atomic, write_together
from ..io.formats import read_npy
from ..runtime.distributed import SINGLE
from ..selection import baselines
from ..selection.inputs import check_quality_scores


def output_stem(k, density_power, distance_power):
    """The reference's output stem, numbers written as Python floats (``0.5``, ``1.0``)."""
    return f"novelselect_{k}_dense_{float(density_power)}_dist_{float(distance_power)}"


def output_names(k, density_power, distance_power):
    """The reference's two output names."""
    stem = output_stem(k, density_power, distance_power)
    return f"{stem}.json", f"{stem}_indices.json"


def read_quality_scores(path, n):
    """Quality scores from a JSON list or a 1-D ``.npy`` file, checked against the pool size."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            scores = read_npy(path)
        else:
            scores = json.loads(path.read_text())
            if not isinstance(scores, list) or any(
                    isinstance(s, bool) or not isinstance(s, (int, float)) for s in scores):
                raise InputError(f"{path}: expected a JSON list of numbers")
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    except ValueError as err:
        raise InputError(f"{path}: not a JSON list or .npy array of numbers ({err})") from None
    return check_quality_scores(scores, n, path)


def read_resume_picks(path):
    """The picks to continue from: the JSON value of ``path`` (the selection checks that it is
    a list of distinct pool indices, at most --k of them)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise InputError(f"{path}: not JSON ({err})") from None


class Checkpoints:
    """``on_pick`` for the selection: counts the picks and, every ``every`` picks after the
    ``given`` ones, writes them all atomically to ``path`` (nothing when ``every`` is None)."""

    def __init__(self, path, every, given, k):
        self.path, self.every, self.given, self.k = path, every, given, k
        self.picks, self.written = [], False

    def __call__(self, index):
        self.picks.append(index)
        count = len(self.picks)
        if self.every and self.given < count < self.k and count % self.every == 0:
            self.written = True  # before the write: a Ctrl-C may land just after it
            write_text_atomic(self.path, json.dumps(self.picks))

    @property
    def saved(self):
        """How many picks the checkpoint holds (0 before this run wrote one). Read from the
        file itself: a Ctrl-C between the rename and any bookkeeping cannot make it wrong."""
        if not self.written:
            return 0
        try:
            return len(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return 0

    def interrupted(self):
        """What a Ctrl-C keeps: the last checkpoint this run wrote, and how to go on from it."""
        return Interrupted(f"stopped cleanly after {len(self.picks)} picks; {self.path} holds "
                           f"the first {self.saved}: continue with --resume_from {self.path}")

    def finish(self):
        """The run is complete and its outputs are written: the checkpoint is not needed."""
        if self.every:
            self.path.unlink(missing_ok=True)


def pick_log(selection, pool):
    """The pick log: one row per pick, in order, with where it is and what it was worth.

    Columns: order, index, shard, row, novelty (empty for the first, random pick),
    density_factor, and quality and score (quality x novelty) when scores were given.
    """
    import pandas as pd

    picks = np.asarray(selection.picks)
    shards, rows = pool.locate(picks)
    columns = {"order": np.arange(len(picks)), "index": picks, "shard": shards, "row": rows,
               "novelty": selection.novelty,
               "density_factor": selection.density_factor[picks].astype(np.float64)}
    if selection.quality is not None:
        columns["quality"] = selection.quality[picks]
        columns["score"] = columns["quality"] * selection.novelty
    return pd.DataFrame(columns)


def baseline_picks(method, vectors, k, seed, quality, max_similarity, device, report):
    """The picks of a baseline selection method (utils/baselines.py), in pick order."""
    from ..numerics.rows import unit_rows
    from ..selection.engine import first_pick

    n = len(vectors)
    progress = report.progress(f"selecting ({method})", "step")
    if method == "random":
        return baselines.random_selection(n, k, seed)
    if method == "kcenter":
        return baselines.kcenter_selection(unit_rows(vectors), k, first_pick(n, seed), device,
                                           progress=progress)
    if method == "kmeans":
        return baselines.kmeans_selection(vectors, k, seed, device, progress=progress)
    return baselines.repr_filter_selection(unit_rows(vectors), k, max_similarity, quality, seed,
                                           device, progress=progress)


def check_kmeans_seed(method, seed):
    """faiss's k-means takes a 32-bit signed seed."""
    if method == "kmeans" and seed >= 2**31:
        raise click.UsageError(f"--seed {seed}: --method kmeans takes a seed below 2^31 "
                               f"({2**31}), faiss's limit")


def check_output_folder(output_dir):
    """``--output_dir`` must be a folder, or creatable: its nearest existing folder writable."""
    for folder in [output_dir, *output_dir.absolute().parents]:
        if not folder.exists():
            continue
        if not folder.is_dir():
            raise InputError(f"{output_dir}: --output_dir is a file; give a folder"
                             if folder == output_dir else
                             f"{output_dir}: cannot write there: {folder} is a file")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"{output_dir}: cannot write there: {folder} is not writable")
        return


def write_outputs(output_dir, writers):
    """Write every output under a temporary name, then rename them all into place
    (``utils.atomic.write_together``). ``writers`` maps a file name in ``output_dir`` to a
    function that writes it at a path."""
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"{output_dir}: --output_dir is a file; give a folder")
    write_together({output_dir / name: write for name, write in writers.items()})


def run_selection(pool, k, neighbors, density_power, distance_power, seed, reference, quality,
                  device, report, record, resume, resume_from, checkpoints, source,
                  ranks=SINGLE):
    """NovelSelect on the loaded pool, with a progress bar and ``checkpoints``."""
    with record.stage("selection"), report.bar("selecting", total=k, unit="pick") as bar:
        def on_pick(index, novelty):
            if np.isfinite(novelty):
                bar.set_postfix_str(f"novelty {novelty:.4g}", refresh=False)
            bar.update(1)
            checkpoints(index)

        return novelselect(
            pool.vectors, k, neighbors, density_power, distance_power, seed,
            reference=None if reference is None else reference.vectors, quality=quality,
            device=device, notify=report.notice, on_pick=on_pick,
            density_progress=report.progress("density", "chunk"), source=str(source),
            resume_from=resume, resume_source=str(resume_from), ranks=ranks)


def write_selection(output_dir, stem, k, n, pool, items, selection, record, device, plot,
                    parameters, given, ranks=SINGLE):
    """Write the picks, the pick log, the plot and the run record (``given``: the picks the
    run was resumed from, 0 for none); return the names written."""
    neighbors, density_power, distance_power = parameters
    names, picks = output_names(k, density_power, distance_power), selection.picks
    writers = {
        names[0]: lambda path: path.write_text(json.dumps([items[i] for i in picks], indent=2,
                                                          ensure_ascii=False), encoding="utf-8"),
        names[1]: lambda path: path.write_text(json.dumps(picks, indent=2)),
        f"{stem}_picks.csv": lambda path: pick_log(selection, pool).to_csv(
            path, index=False, lineterminator="\n")}
    if plot:
        from ..io.plots import plot_pick_novelty

        writers[f"{stem}_novelty.png"] = lambda path: plot_pick_novelty(
            selection.novelty, path, f"NovelSelect: {k:,} of {n:,} (k={neighbors}, "
                                     f"beta={density_power:g}, alpha={distance_power:g})")
    last = float(selection.novelty[-1])
    summary = {"picked": k, "pool": n, "last_novelty": last if np.isfinite(last) else None,
               "resumed_from_picks": given}
    writers[f"{stem}_run.json"] = lambda path: path.write_text(json.dumps(
        record.finish(device, [output_dir / name for name in writers], ranks=ranks.size,
                      summary=summary), indent=2))
    write_outputs(output_dir, writers)
    return list(writers)
