#!/usr/bin/env python3
"""NovelSum: the diversity of one or more embedded datasets, over a grid of parameters."""

import csv
import io
import json
from pathlib import Path

import click
import numpy as np

from cli_common import (NumberList, Reporter, ReferenceStyleCommand, clean_errors,
                        device_summary, embedding_field_option, gpu_option, load_embeddings,
                        quiet_option)
from utils.api import density_reference, novelsum
from utils.atomic import write_together
from utils.distributed import start_ranks, stop_ranks
from utils.errors import InputError
from utils.proximity import DEFAULT_BLOCK_MIB, column_name, format_number
from utils.metrics import (CLUSTER_METRICS, DEFAULT_N_CLUSTERS, METRIC_NAMES,
                           check_metric_inputs, compute_metrics, metric_columns,
                           needs_reference, parse_metrics)
from utils.records import RunRecord, vector_inputs
from utils.shards import VECTOR_SUFFIXES, load_vectors, shard_order_key

LIST_OPTIONS = ("--neighbors", "--density_powers", "--density-powers", "--distance_powers",
                "--distance-powers", "--metrics")
DEFAULT_DENSITY_POWERS = [0.0, 0.25, 0.5]
DEFAULT_DISTANCE_POWERS = [0.0, 1.0, 2.0]


def dataset_name(path):
    """A dataset's row name in the CSV: a file's stem, a folder's name."""
    return path.stem if path.is_file() else path.resolve().name


def dataset_paths(single_dataset_path, multi_datasets_dir):
    """The datasets to measure: the single path, then each file or shard folder of the dir."""
    paths = [Path(single_dataset_path)] if single_dataset_path else []
    if multi_datasets_dir:
        folder = Path(multi_datasets_dir)
        if not folder.is_dir():
            raise InputError(f"{folder}: --multi_datasets_dir must be a folder of datasets")
        found = [p for p in folder.iterdir() if not p.name.startswith(".")
                 and (p.is_dir() or (p.is_file() and p.suffix in VECTOR_SUFFIXES))]
        if not found:
            raise InputError(f"{folder}: no datasets (.json, .npy or .parquet files, or shard "
                             f"folders)")
        paths += sorted(found, key=shard_order_key)
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    seen = {}
    for path in paths:
        if path.resolve() in seen:
            raise InputError(f"{path}: given twice (as {seen[path.resolve()]} too); "
                             f"measure each dataset once")
        seen[path.resolve()] = path
    names = {}
    for path in paths:  # the CSV tells datasets apart by name only
        name = dataset_name(path)
        if name in names:
            raise InputError(f"{names[name]} and {path} would both be the dataset '{name}' in "
                             f"the CSV; rename one of them")
        names[name] = path
    return paths


def results_csv(rows):
    """The CSV text of the result rows (dicts with the same keys, in column order)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def metrics_table(rows, columns):
    """The baseline metrics as a text table: one line per dataset, one column per metric."""
    name_width = max(len("dataset"), *(len(r["Dataset Name"]) for r in rows))
    widths = [max(12, len(c)) for c in columns]
    lines = [f"{'dataset':<{name_width}}  " + "  ".join(f"{c:>{w}}" for c, w in
                                                         zip(columns, widths))]
    lines.append("-" * len(lines[0]))
    lines += [f"{row['Dataset Name']:<{name_width}}  " + "  ".join(
        f"{row[c]:>{w}.6g}" for c, w in zip(columns, widths)) for row in rows]
    return "\n".join(lines)


def results_table(rows, neighbors, density_powers, distance_powers, given):
    """A compact text table: one line per dataset, k and beta; one column per alpha."""
    name_width = max(len("dataset"), *(len(r["Dataset Name"]) for r in rows))
    header = (f"{'dataset':<{name_width}}  {'k':>4}  {'beta':>5}  "
              + "  ".join(f"{'alpha=' + format_number(a):>10}" for a in distance_powers)
              + f"  {'cos_distance':>12}")
    lines = [header, "-" * len(header)]
    for row in rows:
        for beta in density_powers:
            for k in neighbors:
                values = "  ".join(f"{row[column_name(k, beta, a, given)]:>10.6g}"
                                   for a in distance_powers)
                lines.append(f"{row['Dataset Name']:<{name_width}}  {k:>4}  "
                             f"{format_number(beta):>5}  {values}  "
                             f"{row['cos_distance']:>12.6g}")
    return "\n".join(lines)


RECOMMENDED = (10, 0.5, 1.0)  # k, beta, alpha: the paper's recommended setting


def nearest_grid_point(neighbors, density_powers, distance_powers, target=RECOMMENDED):
    """The grid point closest to ``target`` in each coordinate (ties: the smaller value)."""
    return tuple(min(values, key=lambda v, t=t: (abs(v - t), v))
                 for values, t in zip((neighbors, density_powers, distance_powers), target))


def per_sample_frame(dataset, result):
    """One row per sample of a dataset: where it is, its novelty at every grid point, its
    density factors and its nearest other sample."""
    import pandas as pd

    n = len(dataset.vectors)
    shards, rows = dataset.locate(np.arange(n))
    columns = {"dataset": [dataset.name] * n, "shard": shards, "row": rows,
               "index": np.arange(n)}
    columns.update({f"novelty_{name}": values for name, values in result.per_sample.items()})
    columns.update({f"density_factor_{name}": values
                    for name, values in result.density_factors.items()})
    columns.update(nearest_index=result.nearest_index, nearest_distance=result.nearest_distance)
    return pd.DataFrame(columns)


def write_table(path, frame, suffix):
    """A table at ``path``: Parquet when ``suffix`` is ``.parquet``, else CSV."""
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, lineterminator="\n")


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
        from utils.plots import plot_novelsum

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


if __name__ == "__main__":
    main()
