"""The ``novelsum`` command: its options, then one pipeline call."""

from pathlib import Path

import click

from ..api import DEFAULT_DENSITY_POWERS, DEFAULT_DISTANCE_POWERS, DEFAULT_NEIGHBORS
from ..errors import InputError
from ..metrics.clusters import DEFAULT_N_CLUSTERS
from ..metrics.proximity import format_number
from ..metrics.registry import (
    CLUSTER_METRICS,
    METRIC_NAMES,
    check_metric_inputs,
    needs_reference,
    parse_metrics,
)
from ..numerics.blocks import DEFAULT_BLOCK_MIB
from ..pipelines.novelsum import NovelsumOptions, run_novelsum
from .errors import clean_errors
from .options import (
    NumberList,
    ReferenceStyleCommand,
    debug_option,
    embedding_field_option,
    gpu_option,
    mixed_embeddings_option,
    quiet_option,
    replace_option,
)
from .report_options import report_options

LIST_OPTIONS = ("--neighbors", "--density_powers", "--density-powers", "--distance_powers",
                "--distance-powers", "--metrics")


def spaced(numbers):
    """A default list as --help shows it: ``0 0.25 0.5``."""
    return " ".join(format_number(x) for x in numbers)


@click.command(cls=ReferenceStyleCommand, list_options=LIST_OPTIONS)
@click.option("--single_dataset_path", "--single-dataset-path",
              help="One dataset to measure: an embedding file (.json, .npy or .parquet) or a shard "
                   "folder.")
@click.option("--multi_datasets_dir", "--multi-datasets-dir",
              help="A folder of datasets to measure: each embedding file or subfolder is one.")
@click.option("--dense_ref_dir", "--dense-ref-dir",
              help="Reference embeddings (shard folder or file) for the density factor; "
                   "without it only density power 0 is defined.")
@click.option("--given_dir", "--given-dir",
              help="Embeddings of data you already keep: each dataset is measured together "
                   "with them, the CSV gets a row for them alone, and the table shows each "
                   "dataset's gain.")
@click.option("--output_csv", "--output-csv", required=True,
              help="CSV file to write: one row per dataset, one column per grid point.")
@gpu_option("GPU for distances and kNN (-1: CPU); falls back to CPU with a notice.")
@click.option("--neighbors", type=NumberList(int),
              default=",".join(str(k) for k in DEFAULT_NEIGHBORS), show_default=True,
              help="Numbers of nearest neighbours k for the density factor (list).")
@click.option("--density_powers", "--density-powers", type=NumberList(float), default=None,
              show_default=f"{spaced(DEFAULT_DENSITY_POWERS)}; 0 without --dense_ref_dir",
              help="Powers beta applied to the density factor (list; any finite numbers).")
@click.option("--distance_powers", "--distance-powers", type=NumberList(float),
              default=None, show_default=spaced(DEFAULT_DISTANCE_POWERS),
              help="Powers alpha of the proximity weights r^-alpha (list; any finite numbers).")
@click.option("--block_mib", "--block-mib", type=click.IntRange(min=1),
              default=DEFAULT_BLOCK_MIB, show_default=True,
              help="Working memory of one block of distance rows or kNN queries, in MiB, all "
                   "threads together, CPU or GPU.")
@embedding_field_option
@click.option("--neighbor_density", "--neighbor-density", is_flag=True,
              help="Variant: weight each distance by the NEIGHBOUR's density factor, as the "
                   "paper's method figure writes it (default: the sample's own, as the "
                   "published scripts).")
@click.option("--exclude_self", "--exclude-self", is_flag=True,
              help="Variant: leave each sample's zero distance to itself out, so its nearest "
                   "other sample gets rank 1 (default: kept, as the published scripts).")
@click.option("--per_sample_csv", "--per-sample-csv", default=None,
              help="Also write each sample's novelty at every grid point, its density factors "
                   "and its nearest other sample (Parquet if the name ends in .parquet).")
@click.option("--plot", is_flag=True,
              help="Also draw {csv stem}.png: NovelSum at k=10, beta=0.5, alpha=1 (or the "
                   "nearest grid point) beside the spread of per-sample novelty.")
@click.option("--metrics", default=None, show_default="none",
              help="Baseline diversity metrics to add as CSV columns after cos_distance (list, "
                   f"or all): {', '.join(METRIC_NAMES)}. Definitions: docs/cli.md.")
@click.option("--n_clusters", "--n-clusters", type=int, default=DEFAULT_N_CLUSTERS,
              show_default=True, help="Clusters of the cluster_inertia and partition_entropy "
                                      "metrics.")
@mixed_embeddings_option
@debug_option
@report_options("NovelSum of each dataset, the whole grid, per-sample novelty and a map of "
                "all datasets", selection=False, comparison=True)
@replace_option
@quiet_option
@clean_errors
def main(single_dataset_path, multi_datasets_dir, dense_ref_dir, given_dir, output_csv, gpu_id,
         neighbors, density_powers, distance_powers, block_mib, embedding_field,
         neighbor_density, exclude_self, per_sample_csv, plot, metrics, n_clusters,
         allow_mixed_embeddings, overwrite, quiet, report):
    """Compute NovelSum for embedded datasets and write one CSV row per dataset.

    Lists may be space- or comma-separated. Next to the CSV, {csv stem}_run.json records how
    it was made. Example:

    \b
        python novelsum.py --multi_datasets_dir examples/subsets \\
            --dense_ref_dir examples/pool/embeddings --output_csv novelsum.csv \\
            --neighbors 5 10 --density_powers 0 0.25 0.5
    """
    if not single_dataset_path and not multi_datasets_dir:
        raise click.UsageError("give --single_dataset_path, --multi_datasets_dir, or both")
    if min(neighbors) < 1:
        raise click.UsageError(f"--neighbors {min(neighbors)}: must be at least 1")
    # The published script names columns after its defaults in shortest form and after
    # values from the command line as floats (docs/method.md section 4).
    typed_powers = (density_powers is not None, distance_powers is not None)
    density_powers, distance_powers = grid_powers(density_powers, distance_powers, dense_ref_dir)
    metrics = checked_metrics(metrics, n_clusters, dense_ref_dir)
    output_csv = Path(output_csv)
    check_outputs(output_csv, per_sample_csv)
    summary = run_novelsum(NovelsumOptions(
        single_dataset_path, multi_datasets_dir, dense_ref_dir, output_csv, per_sample_csv,
        plot, gpu_id, neighbors, density_powers, distance_powers, typed_powers, block_mib,
        embedding_field, neighbor_density, exclude_self, metrics, n_clusters, quiet,
        n_clusters_given=click.get_current_context().get_parameter_source("n_clusters")
        != click.core.ParameterSource.DEFAULT, overwrite=overwrite, given_dir=given_dir,
        allow_mixed_embeddings=allow_mixed_embeddings, report=report))
    if summary is not None:
        click.echo(summary)


def grid_powers(density_powers, distance_powers, dense_ref_dir):
    """The powers of the grid, defaults filled in; beta other than 0 needs a reference."""
    if density_powers is None:
        density_powers = list(DEFAULT_DENSITY_POWERS) if dense_ref_dir else [0.0]
    if distance_powers is None:
        distance_powers = list(DEFAULT_DISTANCE_POWERS)
    if not dense_ref_dir and any(beta != 0 for beta in density_powers):
        raise click.UsageError("--density_powers other than 0 need a reference set: "
                               "give --dense_ref_dir (or use --density_powers 0)")
    return density_powers, distance_powers


def checked_metrics(metrics, n_clusters, dense_ref_dir):
    """The metric names of --metrics, refused with --n_clusters that none uses, or with a
    reference metric but no --dense_ref_dir."""
    try:
        metrics = parse_metrics(metrics or "")
        if n_clusters < 1:
            raise InputError(f"--n_clusters {n_clusters}: must be at least 1")
        if not CLUSTER_METRICS & set(metrics) and click.get_current_context(). \
                get_parameter_source("n_clusters") == click.core.ParameterSource.COMMANDLINE:
            raise InputError("--n_clusters is used by the cluster_inertia and "
                             "partition_entropy metrics only: add one to --metrics")
        if needs_reference(metrics) and not dense_ref_dir:
            check_metric_inputs(metrics, 1)  # names the metric and the option
    except InputError as err:  # all of them misuse of the options
        raise click.UsageError(str(err)) from None
    return metrics


def check_outputs(output_csv, per_sample_csv):
    """Output names that are files, and two different ones."""
    for option, path in [("--output_csv", output_csv), ("--per_sample_csv", per_sample_csv)]:
        if path is not None and Path(path).is_dir():
            raise InputError(f"{path}: {option} is a folder; give a file name")
    if per_sample_csv and Path(per_sample_csv).resolve() == output_csv.resolve():
        raise click.UsageError("--per_sample_csv must differ from --output_csv")
