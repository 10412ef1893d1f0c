"""What a ``novelselect`` run writes: output names, checkpoints, the picks, the pick log, the
plot and the run record."""

import json
import os
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, Interrupted
from ..io.atomic import write_text_atomic, write_together
from ..io.outputs import run_identity


def output_stem(method, k, density_power, distance_power):
    """The stem of a run's outputs: NovelSelect's as the reference names it, numbers written
    as Python floats (``novelselect_80_dense_0.5_dist_1.0``); a baseline's ``{method}_{k}``."""
    if method != "novelselect":
        return f"{method}_{k}"
    return f"novelselect_{k}_dense_{float(density_power)}_dist_{float(distance_power)}"


CHECKPOINT_INTERVAL_VARIABLE = "NOVELSUM_CHECKPOINT_INTERVAL_S"
DEFAULT_CHECKPOINT_INTERVAL_S = 60.0  # without --checkpoint_every: at most a minute of work lost


def checkpoint_interval():
    """Seconds between checkpoints without --checkpoint_every: ``NOVELSUM_CHECKPOINT_INTERVAL_S``,
    else 60."""
    try:
        return float(os.environ.get(CHECKPOINT_INTERVAL_VARIABLE, DEFAULT_CHECKPOINT_INTERVAL_S))
    except ValueError:
        return DEFAULT_CHECKPOINT_INTERVAL_S


def checkpoint_record_path(path):
    """The hidden file beside a checkpoint that says which run wrote it (``made_by``)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.run.json")


def made_by(parameters, inputs):
    """What makes a checkpoint this command's: the run's identity (``run_identity``: what it
    computes) and its inputs with their hashes, as the run record lists them."""
    return json.loads(json.dumps({"parameters": run_identity(parameters), "inputs": inputs}))


class Checkpoints:
    """``on_pick`` for the selection: counts the picks and, after the ``resumed`` ones, writes
    them all atomically to ``path``: every ``every`` picks, or without ``every`` at most every
    ``checkpoint_interval()`` seconds (``every`` 0 or ``path`` None: never). The first write
    also writes ``made_by`` beside it, so that the same command run again resumes from it."""

    def __init__(self, path, every, resumed, k, made_by=None):
        self.path, self.every, self.resumed, self.k = path, every, resumed, k
        self.made_by, self.interval, self.last = made_by, checkpoint_interval(), time.monotonic()
        self.picks, self.written = [], False

    def __call__(self, index):
        self.picks.append(index)
        count = len(self.picks)
        if self.path is None or self.every == 0 or not self.resumed < count < self.k:
            return
        if count % self.every == 0 if self.every else \
                time.monotonic() - self.last >= self.interval:
            self.save()

    def save(self):
        if not self.written and self.made_by is not None:
            write_text_atomic(checkpoint_record_path(self.path), json.dumps(self.made_by))
        self.written = True  # before the write: a Ctrl-C may land just after it
        write_text_atomic(self.path, json.dumps(self.picks))
        self.last = time.monotonic()

    @property
    def saved(self):
        """How many picks the checkpoint holds (this run's, or the one it resumed from; 0 when
        there is none). Read from the file itself: a Ctrl-C between the rename and any
        bookkeeping cannot make it wrong."""
        if self.path is None:
            return 0
        try:
            return len(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return 0

    def interrupted(self):
        """What a Ctrl-C keeps: the last checkpoint this run wrote, and how to go on from it."""
        return Interrupted(f"stopped cleanly after {len(self.picks)} picks; {self.path} holds "
                           f"the first {self.saved}: run the same command again to continue "
                           f"from there (or give --resume_from {self.path})")

    def finish(self):
        """The run is complete and its outputs are written: the checkpoint is not needed."""
        if self.path is not None:
            discard_checkpoint(self.path)


def discard_checkpoint(path):
    """Remove a checkpoint and the record of its run."""
    path.unlink(missing_ok=True)
    checkpoint_record_path(path).unlink(missing_ok=True)


def recorded_run(path):
    """What ``made_by`` recorded beside the checkpoint ``path``, or None without a record."""
    try:
        recorded = json.loads(checkpoint_record_path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("parameters"), dict):
        return None
    return recorded


def another_runs_checkpoint(path, why):
    return InputError(f"{path}: the checkpoint of another run ({why}); continue it with "
                      f"--resume_from {path} and that run's options, give --overwrite to start "
                      f"over, or write elsewhere")


def check_checkpoint_parameters(path, parameters, overwrite):
    """Before any input is read: refuse a checkpoint at ``path`` that a run with other
    parameters wrote (or one without a record): this run would write over it."""
    if overwrite or not path.exists():
        return
    recorded = recorded_run(path)
    if recorded is None:
        raise another_runs_checkpoint(path, "no record of its run")
    before, now = recorded["parameters"], made_by(parameters, {})["parameters"]
    changed = sorted(key for key in before.keys() | now.keys()
                     if before.get(key) != now.get(key))
    if changed:
        raise another_runs_checkpoint(path, f"{changed[0]} {before.get(changed[0])!r} there, "
                                            f"{now.get(changed[0])!r} now")


def checkpoint_picks(path, made_by_now, overwrite):
    """The picks of ``path``, the checkpoint of an interrupted run of this same command (its
    ``made_by`` equal to ``made_by_now``: parameters and inputs), or None when there is none
    (or ``overwrite`` starts over)."""
    if overwrite or not path.exists():
        return None
    if recorded_run(path) != made_by_now:  # its parameters were checked before the inputs
        raise another_runs_checkpoint(path, "the same parameters, other input files")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable checkpoint ({err}); give --overwrite to start "
                         f"over") from None


def pick_log(selection, pool):
    """The pick log: one row per pick, in order, with where it is and what it was worth, as
    ``{column: list}``.

    Columns: order, index, shard, row, novelty (empty for the first, random pick),
    density_factor, and quality and score (quality x novelty) when scores were given.
    """
    picks = np.asarray(selection.picks)
    shards, rows = pool.locate(picks)
    columns = {"order": np.arange(len(picks)), "index": picks, "shard": shards, "row": rows,
               "novelty": selection.novelty,
               "density_factor": selection.density_factor[picks].astype(np.float64)}
    if selection.quality is not None:
        columns["quality"] = selection.quality[picks]
        columns["score"] = columns["quality"] * selection.novelty
    return {name: np.asarray(values).tolist() for name, values in columns.items()}


def write_pick_log(columns, path):
    """The pick log as CSV (the csv module: pandas would cost a third of a second to import),
    numbers in Python's shortest form and NaN as an empty field, as pandas writes them."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in zip(*columns.values()):
            writer.writerow(["" if value != value else value for value in row])  # NaN


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
    (``utils.io.atomic.write_together``). ``writers`` maps a file name in ``output_dir`` to a
    function that writes it at a path."""
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"{output_dir}: --output_dir is a file; give a folder")
    write_together({output_dir / name: write for name, write in writers.items()})


def picked_items_writer(items, picks):
    """Writes the picked items, in pick order, as the published script."""
    return lambda path: path.write_text(json.dumps([items[i] for i in picks], indent=2,
                                                   ensure_ascii=False), encoding="utf-8")


def write_baseline(options, session, inputs, picks):
    """Write a baseline's picks, their indices and the run record; return the names written."""
    output_dir = options.output_dir
    stem = output_stem(options.method, options.k, options.density_power,
                       options.distance_power)
    writers = {
        f"{stem}.json": picked_items_writer(inputs.items, picks),
        f"{stem}_indices.json": lambda path: path.write_text(json.dumps(picks, indent=2))}
    writers[f"{stem}_run.json"] = lambda path: path.write_text(json.dumps(
        session.record.finish(session.device, [output_dir / name for name in writers],
                              summary={"picked": options.k, "pool": inputs.n}), indent=2))
    write_outputs(output_dir, writers)
    return list(writers)


def novelty_title(k, n, options, given_rows=None):
    """The pick-novelty plot's title: ``k`` picks of ``n`` (beside ``given_rows`` given ones),
    and the parameters (neighbors is the density's k, not the number of picks)."""
    beside = f" beside {given_rows:,} given rows" if given_rows else ""
    return (f"NovelSelect: {k:,} of {n:,}{beside} (neighbors={options.neighbors}, "
            f"beta={options.density_power:g}, alpha={options.distance_power:g})")


def write_selection(options, session, inputs, selection, resumed):
    """Write the picks, the pick log, the plot and the run record (``resumed``: how many picks
    the run was resumed from, 0 for none); return the names written."""
    k, n, output_dir = options.k, inputs.n, options.output_dir
    stem = output_stem("novelselect", k, options.density_power, options.distance_power)
    names = f"{stem}.json", f"{stem}_indices.json"
    writers = {
        names[0]: picked_items_writer(inputs.items, selection.picks),
        names[1]: lambda path: path.write_text(json.dumps(selection.picks, indent=2)),
        f"{stem}_picks.csv": lambda path: write_pick_log(pick_log(selection, inputs.pool),
                                                         path)}
    if options.plot and not np.isfinite(selection.novelty).any():
        session.report.notice("--plot: no picture, as no pick has a novelty to draw (the first "
                              "pick is drawn at random, and this run has no other)")
    elif options.plot:
        from ..io.plots import plot_pick_novelty

        given_rows = None if inputs.given is None else len(inputs.given.vectors)
        writers[f"{stem}_novelty.png"] = lambda path: plot_pick_novelty(
            selection.novelty, path, novelty_title(k, n, options, given_rows))
    if options.report is not None:
        from .report_outputs import report_path, selection_report_writer

        writers[str(report_path(options.report))] = selection_report_writer(options, inputs,
                                                                            selection)
    last = float(selection.novelty[-1])
    summary = {"picked": k, "pool": n, "last_novelty": last if np.isfinite(last) else None,
               "resumed_from_picks": resumed,
               "given_rows": None if inputs.given is None else len(inputs.given.vectors)}
    writers[f"{stem}_run.json"] = lambda path: path.write_text(json.dumps(
        session.record.finish(session.device, [output_dir / name for name in writers],
                              ranks=session.ranks.size, summary=summary), indent=2))
    write_outputs(output_dir, writers)
    return list(writers)
