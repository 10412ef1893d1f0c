"""What a ``novelselect`` run writes: output names, checkpoints, the picks, the pick log, the
plot and the run record."""

import json
import os

import numpy as np

from ..errors import InputError, Interrupted
from ..io.atomic import write_text_atomic, write_together


def output_stem(method, k, density_power, distance_power):
    """The stem of a run's outputs: NovelSelect's as the reference names it, numbers written
    as Python floats (``novelselect_80_dense_0.5_dist_1.0``); a baseline's ``{method}_{k}``."""
    if method != "novelselect":
        return f"{method}_{k}"
    return f"novelselect_{k}_dense_{float(density_power)}_dist_{float(distance_power)}"


class Checkpoints:
    """``on_pick`` for the selection: counts the picks and, every ``every`` picks after the
    ``resumed`` ones, writes them all atomically to ``path`` (nothing when ``every`` is None)."""

    def __init__(self, path, every, resumed, k):
        self.path, self.every, self.resumed, self.k = path, every, resumed, k
        self.picks, self.written = [], False

    def __call__(self, index):
        self.picks.append(index)
        count = len(self.picks)
        if self.every and self.resumed < count < self.k and count % self.every == 0:
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


def novelty_title(k, n, options):
    """The pick-novelty plot's title: ``k`` picks of ``n``, and the parameters (neighbors is
    the density's k, not the number of picks)."""
    return (f"NovelSelect: {k:,} of {n:,} (neighbors={options.neighbors}, "
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

        writers[f"{stem}_novelty.png"] = lambda path: plot_pick_novelty(
            selection.novelty, path, novelty_title(k, n, options))
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
