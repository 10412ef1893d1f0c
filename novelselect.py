#!/usr/bin/env python3
"""NovelSelect: pick the subset of a pool with the highest NovelSum, greedily."""

import json
import os
from pathlib import Path

import click
import numpy as np

from cli_common import (FINITE_FLOAT, Interrupted, Reporter, ReferenceStyleCommand,
                        clean_errors, device_summary, embedding_field_option, gpu_option,
                        load_embeddings, quiet_option)
from utils import baselines
from utils.api import novelselect
from utils.atomic import write_text_atomic, write_together
from utils.device import peak_memory_note
from utils.distributed import SINGLE, start_ranks, stop_ranks
from utils.errors import InputError
from utils.records import RunRecord, text_inputs, vector_inputs
from utils.selection import check_quality_scores, check_resume_picks
from utils.shards import check_pairing, load_items, read_npy


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
    from utils.proximity import unit_rows
    from utils.selection import first_pick

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


def refuse_unused_options(ctx, method):
    """Options given on the command line that ``method`` does not use are usage errors."""
    unused = {"--dense_ref_dir": ("dense_ref_dir", baselines.USES_DENSITY_REFERENCE),
              "--quality_scores": ("quality_scores", baselines.USES_QUALITY_SCORES),
              "--neighbors": ("neighbors", {"novelselect"}),
              "--density_power": ("density_power", {"novelselect"}),
              "--distance_power": ("distance_power", {"novelselect"}),
              "--plot": ("plot", {"novelselect"}),
              "--max_similarity": ("max_similarity", {"repr_filter"}),
              "--resume_from": ("resume_from", {"novelselect"}),
              "--checkpoint_every": ("checkpoint_every", {"novelselect"})}
    for option, (name, users) in unused.items():
        if method not in users and ctx.get_parameter_source(name) == \
                click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(f"{option} is not used by --method {method} (it is used by "
                                   f"{', '.join(sorted(users))})")


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


@click.command(cls=ReferenceStyleCommand)
@click.option("--text_dir", "--text-dir", required=True,
              help="Text shards of the pool (.json, .jsonl or .parquet), paired with the "
                   "embeddings by shard name.")
@click.option("--figure_dir", "--figure-dir", "--embedding_dir", "--embedding-dir", "figure_dir",
              required=True,
              help="Embedding shards of the pool (.json, .npy or .parquet), same names and row "
                   "order.")
@click.option("--output_dir", "--output-dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the outputs: the picked items and their global indices (as the "
                   "published script), the pick log, the run record, the plot.")
@click.option("--k", type=int, default=10000, show_default=True,
              help="Number of samples to pick (memory: pool x (k-1) x 4 bytes).")
@gpu_option("GPU for the selection (-1: CPU); falls back to CPU with a notice.")
@click.option("--neighbors", type=int, default=10, show_default=True,
              help="Nearest neighbours k for the density factor.")
@click.option("--density_power", "--density-power", type=FINITE_FLOAT, default=0.5,
              show_default=True,
              help="Power beta of the density factor.")
@click.option("--distance_power", "--distance-power", type=FINITE_FLOAT, default=1.0,
              show_default=True, help="Power alpha of the proximity weights r^-alpha.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=42, show_default=True,
              help="Seed of the first, random pick.")
@click.option("--dense_ref_dir", "--dense-ref-dir",
              help="Estimate density on these embeddings instead of the pool itself.")
@click.option("--quality_scores", "--quality-scores",
              help="One score >= 0 per sample (JSON list or .npy), multiplied into the novelty.")
@embedding_field_option
@click.option("--plot", is_flag=True,
              help="Also draw {stem}_novelty.png: the novelty of each pick against the pick "
                   "number, where further picks stop adding new samples.")
@click.option("--method", type=click.Choice(baselines.METHOD_NAMES), default="novelselect",
              show_default=True,
              help="Selection method: NovelSelect, or a baseline to compare with (random, "
                   "K-Center-Greedy, k-means, DEITA's representation filter); baselines write "
                   "{method}_{K}.json and {method}_{K}_indices.json.")
@click.option("--max_similarity", "--max-similarity", type=FINITE_FLOAT,
              default=baselines.DEFAULT_MAX_SIMILARITY, show_default=True,
              help="repr_filter: keep a sample when its largest cosine similarity to those kept "
                   "is at most this.")
@click.option("--resume_from", "--resume-from", type=click.Path(path_type=Path), default=None,
              help="JSON list of distinct pool indices to continue greedily from to --k: an "
                   "earlier run's _indices.json (same pool and parameters), a checkpoint, or "
                   "any start set. The first t picks of a run resume to that run's picks.")
@click.option("--checkpoint_every", "--checkpoint-every", type=click.IntRange(min=1),
              default=None,
              help="Every N picks, write the picks so far to {stem}_checkpoint.json in "
                   "--output_dir (atomically), for --resume_from after a killed run; removed "
                   "when the run completes.")
@quiet_option
@click.pass_context
@clean_errors
def main(ctx, text_dir, figure_dir, output_dir, k, gpu_id, neighbors, density_power,
         distance_power, seed, dense_ref_dir, quality_scores, embedding_field, plot, method,
         max_similarity, resume_from, checkpoint_every, quiet):
    """Pick K samples of a pool, each the most novel given the ones before (NovelSelect).

    Writes novelselect_{K}_dense_{beta}_dist_{alpha}.json (the picked items, in pick order)
    and ..._indices.json (their global indices), as the published script; beside them
    ..._picks.csv (each pick's shard, row and novelty) and ..._run.json (how the run was
    made). The selection keeps pool x (K-1) float32 values in memory (396,000 x 10,000:
    15.8 GB) and refuses a run that cannot fit. --checkpoint_every N saves the picks every N
    picks; --resume_from continues from such a checkpoint, or extends an earlier run's
    _indices.json, to --k. Example:

    \b
        python novelselect.py --text_dir pool/text --figure_dir pool/emb --output_dir picked \\
            --k 1000 --neighbors 10 --density_power 0.5 --distance_power 1
    """
    if neighbors < 1:
        raise click.UsageError(f"--neighbors {neighbors}: must be at least 1")
    refuse_unused_options(ctx, method)
    check_kmeans_seed(method, seed)
    if method != "novelselect" and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise click.UsageError(f"--method {method} runs in one process: start it without "
                               f"torchrun (only NovelSelect is split over ranks)")
    report = Reporter(quiet)
    ranks, device = start_ranks(gpu_id, report.notice)
    record = RunRecord("novelselect", dict(
        text_dir=text_dir, figure_dir=figure_dir, k=k, neighbors=neighbors,
        density_power=density_power, distance_power=distance_power, seed=seed,
        dense_ref_dir=dense_ref_dir, quality_scores=quality_scores,
        embedding_field=embedding_field, method=method, max_similarity=max_similarity,
        resume_from=resume_from and str(resume_from), checkpoint_every=checkpoint_every))
    with ranks.phase():
        resume = read_resume_picks(resume_from) if resume_from else None
        check_output_folder(output_dir)  # before the long work, not when writing its results
    with record.stage("loading"):
        # Under torchrun each rank loads its block of the pool's rows (and of the reference's);
        # rank 0 alone reads the texts, which only it writes out. Each phase ends with the
        # ranks agreeing on any fault, in the order one process would meet them.
        with ranks.phase():
            pool = load_embeddings(figure_dir, ranks, report.progress("loading embeddings", "shard"),
                             embedding_field=embedding_field)
        items = text_paths = counts = None
        with ranks.phase(patient=True):  # rank 0 alone reads the texts
            if ranks.is_main:
                items, text_paths, counts = load_items(
                    text_dir, report.progress("loading texts", "shard"))
                check_pairing(text_paths, counts, pool, text_source=text_dir)
            n = pool.offsets[-1]
            if not 1 <= k <= n:
                raise InputError(f"--k {k}: must be between 1 and the pool size ({n})")
            quality = read_quality_scores(quality_scores, n) if quality_scores else None
            if resume is not None:
                resume = check_resume_picks(resume, n, k, resume_from)
        reference = None
        if dense_ref_dir and density_power != 0 and method == "novelselect":
            with ranks.phase():
                reference = load_embeddings(dense_ref_dir, ranks,
                                      report.progress("loading reference", "shard"),
                                      allow_zero=True, embedding_field=embedding_field)
                if reference.vectors.shape[1] != pool.vectors.shape[1]:
                    raise InputError(f"{dense_ref_dir}: vectors have "
                                     f"{reference.vectors.shape[1]} dimensions but the pool "
                                     f"has {pool.vectors.shape[1]}")
            record.add_input("reference", vector_inputs(reference, ranks))
        elif dense_ref_dir:
            report.notice("--dense_ref_dir is not used with --density_power 0")
    record.add_input("embeddings", vector_inputs(pool, ranks))
    if ranks.is_main:
        record.add_input("texts", text_inputs(text_dir, text_paths, counts))

    if method != "novelselect":
        with record.stage("selection"):
            picks = baseline_picks(method, pool.vectors, k, seed, quality, max_similarity,
                                   device, report)
        stem = baselines.output_stem(method, k)
        writers = {
            f"{stem}.json": lambda path: path.write_text(json.dumps(
                [items[i] for i in picks], indent=2, ensure_ascii=False), encoding="utf-8"),
            f"{stem}_indices.json": lambda path: path.write_text(json.dumps(picks, indent=2))}
        writers[f"{stem}_run.json"] = lambda path: path.write_text(json.dumps(
            record.finish(device, [output_dir / name for name in writers],
                          summary={"picked": k, "pool": n}), indent=2))
        write_outputs(output_dir, writers)
        stop_ranks(ranks)
        click.echo(f"picked {k} of {n} samples with {method} on "
                   f"{device_summary(device, gpu_id, ranks)}; wrote {output_dir / f'{stem}.json'} and "
                   f"{', '.join(list(writers)[1:])}")
        return

    stem = output_stem(k, density_power, distance_power)
    checkpoints = Checkpoints(output_dir / f"{stem}_checkpoint.json",
                              checkpoint_every if ranks.is_main else None,
                              len(resume) if resume is not None else 0, k)
    try:
        selection = run_selection(pool, k, neighbors, density_power, distance_power, seed,
                                  reference, quality, device, report, record, resume,
                                  resume_from, checkpoints, dense_ref_dir or figure_dir, ranks)
        names = None
        with ranks.phase(patient=True):  # rank 0 writes; the others wait to hear that it did
            if ranks.is_main:
                names = write_selection(output_dir, stem, k, n, pool, items, selection, record,
                                        device, plot, (neighbors, density_power,
                                                       distance_power), checkpoints.given,
                                        ranks)
    except KeyboardInterrupt:
        if checkpoints.saved:
            raise checkpoints.interrupted() from None
        raise
    checkpoints.finish()
    stop_ranks(ranks)
    if ranks.is_main:
        click.echo(f"picked {k} of {n} samples on {device_summary(device, gpu_id, ranks)}; "
                   f"wrote {output_dir / names[0]} and {', '.join(names[1:])}"
                   f"{peak_memory_note(device)}")


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
        from utils.plots import plot_pick_novelty

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


if __name__ == "__main__":
    main()
