"""The ``novelsum`` command: its options, then one pipeline call."""

import json
from pathlib import Path

import click

from ..api import density_reference, novelsum
from ..errors import InputError
from ..io.atomic import write_together
from ..io.records import RunRecord, vector_inputs
from ..io.vectors import load_vectors
from ..metrics.clusters import DEFAULT_N_CLUSTERS
from ..metrics.proximity import DEFAULT_BLOCK_MIB, column_name
from ..metrics.registry import (
    CLUSTER_METRICS,
    METRIC_NAMES,
    check_metric_inputs,
    compute_metrics,
    metric_columns,
    needs_reference,
    parse_metrics,
)
from ..pipelines.loading import load_embeddings
from ..pipelines.novelsum import (
    dataset_paths,
    metrics_table,
    nearest_grid_point,
    per_sample_frame,
    results_csv,
    results_table,
    write_table,
)
from ..runtime.distributed import start_ranks, stop_ranks
from .errors import clean_errors
from .options import (
    NumberList,
    ReferenceStyleCommand,
    embedding_field_option,
    gpu_option,
    quiet_option,
)
from .reporting import Reporter, device_summary

LIST_OPTIONS = ("--neighbors", "--density_powers", "--density-powers", "--distance_powers",
                "--distance-powers", "--metrics")


DEFAULT_DENSITY_POWERS = [0.0, 0.25, 0.5]


DEFAULT_DISTANCE_POWERS = [0.0, 1.0, 2.0]


@click.command(cls=ReferenceStyleCommand, list_options=LIST_OPTIONS)
@click.option("--single_dataset_path", "--single-dataset-path",
              help="One dataset to measure: an embedding file (.json, .npy or .parquet) or a shard "
                   "folder.")
@click.option("--multi_datasets_dir", "--multi-datasets-dir",
              help="A folder of datasets to measure: each embedding file or subfolder is one.")
@click.option("--dense_ref_dir", "--dense-ref-dir",
              help="Reference embeddings (shard folder or file) for the density factor; "
                   "without it only density power 0 is defined.")
@click.option("--output_csv", "--output-csv", required=True,
              help="CSV file to write: one row per dataset, one column per grid point.")
@gpu_option("GPU for distances and kNN (-1: CPU); falls back to CPU with a notice.")
@click.option("--neighbors", type=NumberList(int), default="5,10", show_default=True,
              help="Numbers of nearest neighbours k for the density factor (list).")
@click.option("--density_powers", "--density-powers", type=NumberList(float), default=None,
              show_default="0 0.25 0.5; 0 without --dense_ref_dir",
              help="Powers beta applied to the density factor (list; any finite numbers).")
@click.option("--distance_powers", "--distance-powers", type=NumberList(float),
              default=None, show_default="0 1 2",
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
                   f"or all): {', '.join(METRIC_NAMES)}. Definitions: README.")
@click.option("--n_clusters", "--n-clusters", type=int, default=DEFAULT_N_CLUSTERS,
              show_default=True, help="Clusters of the cluster_inertia and partition_entropy "
                                      "metrics.")
@quiet_option
@clean_errors
def main(single_dataset_path, multi_datasets_dir, dense_ref_dir, output_csv, gpu_id, neighbors,
         density_powers, distance_powers, block_mib, embedding_field, neighbor_density,
         exclude_self, per_sample_csv, plot, metrics, n_clusters, quiet):
    """Compute NovelSum for embedded datasets and write one CSV row per dataset.

    Lists may be space- or comma-separated. Next to the CSV, {csv stem}_run.json records how
    it was made. Example:

    \b
        python novelsum.py --multi_datasets_dir subsets/ --dense_ref_dir pool/ \\
            --output_csv novelsum.csv --neighbors 5 10 --density_powers 0 0.25 0.5
    """
    if not single_dataset_path and not multi_datasets_dir:
        raise click.UsageError("give --single_dataset_path, --multi_datasets_dir, or both")
    if min(neighbors) < 1:
        raise click.UsageError(f"--neighbors {min(neighbors)}: must be at least 1")
    # The published script names columns after its defaults in shortest form and after
    # values from the command line as floats (docs/method.md section 4).
    given = (density_powers is not None, distance_powers is not None)
    if density_powers is None:
        density_powers = DEFAULT_DENSITY_POWERS if dense_ref_dir else [0.0]
    if distance_powers is None:
        distance_powers = DEFAULT_DISTANCE_POWERS
    if not dense_ref_dir and any(beta != 0 for beta in density_powers):
        raise click.UsageError("--density_powers other than 0 need a reference set: "
                               "give --dense_ref_dir (or use --density_powers 0)")
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
    except InputError as err:
        raise click.UsageError(str(err)) from None
    output_csv = Path(output_csv)
    for option, path in [("--output_csv", output_csv), ("--per_sample_csv", per_sample_csv)]:
        if path is not None and Path(path).is_dir():
            raise InputError(f"{path}: {option} is a folder; give a file name")
    if per_sample_csv and Path(per_sample_csv).resolve() == output_csv.resolve():
        raise click.UsageError("--per_sample_csv must differ from --output_csv")
    report = Reporter(quiet)
    ranks, device = start_ranks(gpu_id, report.notice)
    record = RunRecord("novelsum", dict(
        single_dataset_path=single_dataset_path, multi_datasets_dir=multi_datasets_dir,
        dense_ref_dir=dense_ref_dir, neighbors=neighbors, density_powers=density_powers,
        distance_powers=distance_powers, neighbor_density=neighbor_density,
        exclude_self=exclude_self, block_mib=block_mib, embedding_field=embedding_field,
        metrics=list(metrics), n_clusters=n_clusters))
    paths = dataset_paths(single_dataset_path, multi_datasets_dir)

    # Under torchrun each rank holds a block of the reference's rows for the density search;
    # rank 0 alone computes the baseline metrics, on the whole reference.
    reference = ref = metric_ref = None
    if dense_ref_dir and (any(beta != 0 for beta in density_powers) or needs_reference(metrics)):
        with record.stage("loading"), ranks.phase():
            ref = load_embeddings(dense_ref_dir, ranks,
                                  report.progress("loading reference", "shard"),
                                  allow_zero=True, embedding_field=embedding_field)
        record.add_input("reference", vector_inputs(ref, ranks))
        metric_ref = ref
        if ranks.grouped and needs_reference(metrics):
            with record.stage("loading"), ranks.phase(patient=True):
                metric_ref = load_vectors(dense_ref_dir, allow_zero=True,
                                          embedding_field=embedding_field) \
                    if ranks.is_main else None
    if ref is not None and any(beta != 0 for beta in density_powers):
        reference = density_reference(ref.vectors, device, block_mib, str(dense_ref_dir),
                                      ranks)
        reference.check_neighbors(neighbors)

    rows, frames, spreads = [], [], []
    metric_cache = {}  # the reference's unit rows and centroids, made once for every dataset
    shown = column_name(*nearest_grid_point(neighbors, density_powers, distance_powers), given)
    for path in paths:
        with record.stage("loading"), ranks.phase():
            dataset = load_vectors(path, report.progress(f"loading {path.name}", "shard"),
                                   embedding_field=embedding_field)
        record.add_input(f"dataset {dataset.name}", vector_inputs(dataset))
        if metrics:  # sizes checked before any long work
            try:
                check_metric_inputs(metrics, len(dataset.vectors),
                                    None if ref is None else ref.offsets[-1], neighbors,
                                    n_clusters)
            except InputError as err:
                raise InputError(f"{path}: {err}") from None
        with record.stage("novelsum"):
            try:
                result = novelsum(
                    dataset.vectors, reference, neighbors, density_powers, distance_powers,
                    device=device, block_mib=block_mib, neighbor_density=neighbor_density,
                    exclude_self=exclude_self, given=given,
                    density_progress=report.progress(f"density {dataset.name}", "chunk"),
                    distance_progress=report.progress(f"distances {dataset.name}", "block"),
                    ranks=ranks)
            except InputError as err:
                raise InputError(f"{path}: {err}") from None
        row = {"Dataset Name": dataset.name, **result.values, "cos_distance": result.cos_distance}
        if metrics:
            with record.stage("metrics"), ranks.phase(patient=True):
                if ranks.is_main:
                    try:
                        row.update(compute_metrics(
                            metrics, dataset.vectors,
                            None if metric_ref is None else metric_ref.vectors, neighbors,
                            n_clusters, device, block_mib, cache=metric_cache))
                    except InputError as err:
                        raise InputError(f"{path}: {err}") from None
        rows.append(row)
        spreads.append(result.per_sample[shown])
        if per_sample_csv:
            frames.append(per_sample_frame(dataset, result))

    writers = {output_csv: lambda path: path.write_text(results_csv(rows), encoding="utf-8")}
    if per_sample_csv:
        import pandas as pd

        writers[Path(per_sample_csv)] = lambda path: write_table(
            path, pd.concat(frames, ignore_index=True), Path(per_sample_csv).suffix)
    if plot:
        from ..io.plots import plot_novelsum

        writers[output_csv.with_suffix(".png")] = lambda path: plot_novelsum(
            [row["Dataset Name"] for row in rows], [row[shown] for row in rows], spreads,
            shown.replace("neighbor_", "k=").replace("_density_", ", beta=")
            .replace("_distance_", ", alpha="), path)
    run_path = output_csv.with_name(f"{output_csv.stem}_run.json")
    summary = {row["Dataset Name"]: {"samples": len(spread), shown: row[shown]}
               for row, spread in zip(rows, spreads)}
    writers[run_path] = lambda path: path.write_text(json.dumps(
        record.finish(device, list(writers), ranks=ranks.size, summary=summary), indent=2))
    with record.stage("writing"), ranks.phase(patient=True):  # rank 0 writes, others wait
        if ranks.is_main:
            write_together(writers)
    stop_ranks(ranks)
    if not ranks.is_main:
        return
    click.echo(results_table(rows, neighbors, density_powers, distance_powers, given))
    if metrics:
        click.echo(metrics_table(rows, metric_columns(metrics, neighbors)))
    click.echo(f"wrote {', '.join(str(p) for p in writers)}: {len(rows)} "
               f"dataset(s), computed on {device_summary(device, gpu_id, ranks)}")
