"""The ``novelselect`` command: its options, then one pipeline call."""

import os
from pathlib import Path

import click

from ..pipelines.novelselect import NovelselectOptions, run_novelselect
from ..selection import baselines
from .errors import clean_errors
from .options import (
    FINITE_FLOAT,
    ReferenceStyleCommand,
    debug_option,
    embedding_field_option,
    gpu_option,
    mixed_embeddings_option,
    quiet_option,
    replace_option,
)
from .report_options import report_options


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
              "--checkpoint_every": ("checkpoint_every", {"novelselect"}),
              "--report": ("report", {"novelselect"})}
    for option, (name, users) in unused.items():
        if method not in users and ctx.get_parameter_source(name) == \
                click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(f"{option} is not used by --method {method} (it is used by "
                                   f"{', '.join(sorted(users))})")


@click.command(cls=ReferenceStyleCommand)
@click.option("--text_dir", "--text-dir", required=True,
              help="Text shards of the pool (.json, .jsonl, either gzipped, or .parquet), "
                   "paired with the embeddings by shard name.")
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
@click.option("--given_dir", "--given-dir",
              help="Embeddings of data you already keep: they count as picks made before the "
                   "first, are not candidates and are not written out; --k counts new picks.")
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
@click.option("--checkpoint_every", "--checkpoint-every", type=click.IntRange(min=0),
              default=None, show_default="a checkpoint every 60 s",
              help="Every N picks, write the picks so far to {stem}_checkpoint.json in "
                   "--output_dir (atomically; 0: no checkpoints). The same command run again "
                   "resumes from it; it is removed when the run completes.")
@mixed_embeddings_option
@debug_option
@report_options("the pool's map with the picks and their texts, the pick curve, density "
                "factors and duplicates")
@replace_option
@quiet_option
@click.pass_context
@clean_errors
def main(ctx, text_dir, figure_dir, output_dir, k, gpu_id, neighbors, density_power,
         distance_power, seed, dense_ref_dir, given_dir, quality_scores, embedding_field, plot,
         method, max_similarity, resume_from, checkpoint_every, allow_mixed_embeddings, overwrite,
         quiet, report):
    """Pick K samples of a pool, each the most novel given the ones before (NovelSelect).

    Writes novelselect_{K}_dense_{beta}_dist_{alpha}.json (the picked items, in pick order)
    and ..._indices.json (their global indices), as the published script; beside them
    ..._picks.csv (each pick's shard, row and novelty) and ..._run.json (how the run was
    made). The selection keeps pool x (K-1) float32 values in memory (396,000 x 10,000:
    15.8 GB) and refuses a run that cannot fit. --checkpoint_every N saves the picks every N
    picks; --resume_from continues from such a checkpoint, or extends an earlier run's
    _indices.json, to --k. Example:

    \b
        python novelselect.py --text_dir examples/pool/text \\
            --figure_dir examples/pool/embeddings --output_dir picked \\
            --k 40 --neighbors 10 --density_power 0.5 --distance_power 1
    """
    if neighbors < 1:
        raise click.UsageError(f"--neighbors {neighbors}: must be at least 1")
    refuse_unused_options(ctx, method)
    check_kmeans_seed(method, seed)
    if method == "kmeans" and given_dir:
        raise click.UsageError("--given_dir is not used by --method kmeans: its picks are the "
                               "pool samples nearest the pool's own k-means centroids, which "
                               "a given set does not move; use kcenter, repr_filter or "
                               "novelselect")
    if method != "novelselect" and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise click.UsageError(f"--method {method} runs in one process: start it without "
                               f"torchrun (only NovelSelect is split over ranks)")
    summary = run_novelselect(NovelselectOptions(
        text_dir=text_dir, figure_dir=figure_dir, output_dir=output_dir, k=k, gpu_id=gpu_id,
        neighbors=neighbors, density_power=density_power, distance_power=distance_power,
        seed=seed, dense_ref_dir=dense_ref_dir, quality_scores=quality_scores,
        embedding_field=embedding_field, plot=plot, method=method,
        max_similarity=max_similarity, resume_from=resume_from,
        checkpoint_every=checkpoint_every, quiet=quiet, overwrite=overwrite,
        given_dir=given_dir, allow_mixed_embeddings=allow_mixed_embeddings,
        report=report))
    if summary is not None:
        click.echo(summary)


def check_kmeans_seed(method, seed):
    """faiss's k-means takes a 32-bit signed seed."""
    if method == "kmeans" and seed >= 2**31:
        raise click.UsageError(f"--seed {seed}: --method kmeans takes a seed below 2^31 "
                               f"({2**31}), faiss's limit")
