#!/usr/bin/env python3
"""NovelSelect: pick the subset of a pool with the highest NovelSum, greedily."""

import json
from pathlib import Path

import click
import numpy as np

from cli_common import (FINITE_FLOAT, Reporter, ReferenceStyleCommand, clean_errors,
                        device_summary, gpu_option, quiet_option)
from utils.atomic import atomic_path
from utils.density import DensityReference, density_factor
from utils.device import peak_memory_note, resolve_device
from utils.errors import InputError
from utils.proximity import unit_rows
from utils.selection import check_memory, check_quality_scores, first_pick, make_engine, select
from utils.shards import check_pairing, load_items, load_vectors, read_npy


def output_names(k, density_power, distance_power):
    """The reference's two output names, numbers written as Python floats (``0.5``, ``1.0``)."""
    stem = f"novelselect_{k}_dense_{float(density_power)}_dist_{float(distance_power)}"
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


def pool_density(pool, neighbors, density_power, reference_vectors, device, report, source):
    """rho = sigma_k^beta for every pool row (float32).

    With beta = 0 every factor is 1: no reference is deduplicated, searched or checked against
    ``--neighbors``, since no neighbour is used.
    """
    if density_power == 0:
        return np.ones(len(pool), dtype=np.float32)
    reference = DensityReference(pool if reference_vectors is None else reference_vectors,
                                 device, source=source)
    reference.check_neighbors([neighbors])
    mean_sq = reference.mean_sq_distances(pool, [neighbors], report.progress("density", "chunk"))
    return density_factor(mean_sq[neighbors], density_power).astype(np.float32)


def write_outputs(output_dir, names, selected_items, picks):
    """Write both outputs under temporary names, then rename them into place together."""
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"{output_dir}: --output_dir is a file; give a folder")
    with atomic_path(output_dir / names[0]) as items_tmp, \
            atomic_path(output_dir / names[1]) as indices_tmp:
        items_tmp.write_text(json.dumps(selected_items, indent=2, ensure_ascii=False),
                             encoding="utf-8")
        indices_tmp.write_text(json.dumps(picks, indent=2))


@click.command(cls=ReferenceStyleCommand)
@click.option("--text_dir", "--text-dir", required=True,
              help="Text shards of the pool (.json lists or .jsonl), paired with the embeddings "
                   "by shard name.")
@click.option("--figure_dir", "--embedding_dir", "--embedding-dir", "figure_dir", required=True,
              help="Embedding shards of the pool (.json or .npy), same names and row order.")
@click.option("--output_dir", "--output-dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the picked items and their global indices (two JSON files).")
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
@click.option("--embedding_field", "--embedding-field", default=None,
              help="The column of .parquet embedding shards that holds the vectors (when "
                   "there are several).")
@quiet_option
@clean_errors
def main(text_dir, figure_dir, output_dir, k, gpu_id, neighbors, density_power, distance_power,
         seed, dense_ref_dir, quality_scores, embedding_field, quiet):
    """Pick K samples of a pool, each the most novel given the ones before (NovelSelect).

    Writes novelselect_{K}_dense_{beta}_dist_{alpha}.json (the picked items, in pick order)
    and ..._indices.json (their global indices). The selection keeps pool x (K-1) float32
    values in memory (396,000 x 10,000: 15.8 GB) and refuses a run that cannot fit.
    Example:

    \b
        python novelselect.py --text_dir pool/text --figure_dir pool/emb --output_dir picked \\
            --k 1000 --neighbors 10 --density_power 0.5 --distance_power 1
    """
    if neighbors < 1:
        raise click.UsageError(f"--neighbors {neighbors}: must be at least 1")
    report = Reporter(quiet)
    device = resolve_device(gpu_id, report.notice)
    pool = load_vectors(figure_dir, report.progress("loading embeddings", "shard"),
                        embedding_field=embedding_field)
    items, text_paths, counts = load_items(text_dir, report.progress("loading texts", "shard"))
    check_pairing(text_paths, counts, pool, text_source=text_dir)
    n = len(pool.vectors)
    if not 1 <= k <= n:
        raise InputError(f"--k {k}: must be between 1 and the pool size ({n})")
    quality = read_quality_scores(quality_scores, n) if quality_scores else None
    reference = None
    if dense_ref_dir and density_power != 0:
        reference = load_vectors(dense_ref_dir, report.progress("loading reference", "shard"),
                                 allow_zero=True, embedding_field=embedding_field).vectors
        if reference.shape[1] != pool.vectors.shape[1]:
            raise InputError(f"{dense_ref_dir}: vectors have {reference.shape[1]} dimensions "
                             f"but the pool has {pool.vectors.shape[1]}")
    check_memory(n, k, pool.vectors.shape[1], device)

    rho = pool_density(pool.vectors, neighbors, density_power, reference, device, report,
                       dense_ref_dir or figure_dir)
    unit = unit_rows(pool.vectors)
    engine = make_engine(unit, rho, k, distance_power, device, report.notice)
    with report.bar("selecting", total=k, unit="pick") as bar:
        def on_pick(index, novelty):
            bar.set_postfix_str(f"novelty {novelty:.4g}", refresh=False)
            bar.update(1)

        picks = select(unit, rho, k, distance_power, first_pick(n, seed), quality, engine,
                       on_pick=on_pick)

    names = output_names(k, density_power, distance_power)
    write_outputs(output_dir, names, [items[i] for i in picks], picks)
    click.echo(f"picked {k} of {n} samples on {device_summary(device, gpu_id)}; wrote "
               f"{output_dir / names[0]} and {names[1]}{peak_memory_note(device)}")


if __name__ == "__main__":
    main()
