#!/usr/bin/env python3
"""NovelSum: the diversity of one or more embedded datasets, over a grid of parameters."""

import csv
import io
from pathlib import Path

import click

from cli_common import (NumberList, Reporter, ReferenceStyleCommand, clean_errors,
                        device_summary, gpu_option, quiet_option)
from utils.atomic import write_text_atomic
from utils.density import DensityReference
from utils.device import resolve_device
from utils.errors import InputError
from utils.proximity import (DEFAULT_BLOCK_MIB, column_name, density_grid, format_number,
                             novelsum_grid, proximity_profile, row_factors)
from utils.shards import VECTOR_SUFFIXES, load_vectors, shard_order_key

LIST_OPTIONS = ("--neighbors", "--density_powers", "--density-powers", "--distance_powers",
                "--distance-powers")
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
            raise InputError(f"{folder}: no datasets (.json or .npy files, or shard folders)")
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
              help="Memory for one block of distance rows, in MiB.")
@click.option("--embedding_field", "--embedding-field", default=None,
              help="The column of .parquet embedding shards that holds the vectors (when "
                   "there are several).")
@click.option("--neighbor_density", "--neighbor-density", is_flag=True,
              help="Variant: weight each distance by the NEIGHBOUR's density factor, as the "
                   "paper's method figure writes it (default: the sample's own, as the "
                   "published scripts).")
@click.option("--exclude_self", "--exclude-self", is_flag=True,
              help="Variant: leave each sample's zero distance to itself out, so its nearest "
                   "other sample gets rank 1 (default: kept, as the published scripts).")
@quiet_option
@clean_errors
def main(single_dataset_path, multi_datasets_dir, dense_ref_dir, output_csv, gpu_id, neighbors,
         density_powers, distance_powers, block_mib, embedding_field, neighbor_density,
         exclude_self, quiet):
    """Compute NovelSum for embedded datasets and write one CSV row per dataset.

    Lists may be space- or comma-separated. Example:

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
    if Path(output_csv).is_dir():
        raise InputError(f"{output_csv}: --output_csv is a folder; give a file name")
    report = Reporter(quiet)
    device = resolve_device(gpu_id, report.notice)
    paths = dataset_paths(single_dataset_path, multi_datasets_dir)

    reference = None
    if dense_ref_dir and any(beta != 0 for beta in density_powers):
        ref = load_vectors(dense_ref_dir, report.progress("loading reference", "shard"),
                           allow_zero=True, embedding_field=embedding_field)
        reference = DensityReference(ref.vectors, device, source=f"{dense_ref_dir}")
        reference.check_neighbors(neighbors)

    rows = []
    for path in paths:
        dataset = load_vectors(path, report.progress(f"loading {path.name}", "shard"),
                               embedding_field=embedding_field)
        if reference is not None and dataset.vectors.shape[1] != reference.rows.shape[1]:
            raise InputError(f"{path}: vectors have {dataset.vectors.shape[1]} dimensions but "
                             f"the reference {dense_ref_dir} has {reference.rows.shape[1]}")
        n = len(dataset.vectors)
        if exclude_self and n < 2:
            raise InputError(f"{path}: one sample, so --exclude_self leaves no distance to "
                             f"average; drop --exclude_self or the dataset")
        mean_sq_by_k = None
        if reference is not None:
            mean_sq_by_k = reference.mean_sq_distances(
                dataset.vectors, neighbors, report.progress(f"density {dataset.name}", "chunk"))
        neighbor_factors = ([row_factors(mean_sq_by_k, beta, k, n) for beta, k in
                             density_grid(neighbors, density_powers)]
                            if neighbor_density else None)
        means, distance_sum, _, _ = proximity_profile(
            dataset.vectors, distance_powers, device, block_mib,
            report.progress(f"distances {dataset.name}", "block"), exclude_self=exclude_self,
            neighbor_factors=neighbor_factors)
        row = {"Dataset Name": dataset.name}
        row.update(novelsum_grid(means, mean_sq_by_k, neighbors, density_powers,
                                 distance_powers, given, neighbor_density))
        row["cos_distance"] = distance_sum / len(dataset.vectors) ** 2
        rows.append(row)

    write_text_atomic(output_csv, results_csv(rows))
    click.echo(results_table(rows, neighbors, density_powers, distance_powers, given))
    click.echo(f"wrote {output_csv}: {len(rows)} dataset(s), computed on "
               f"{device_summary(device, gpu_id)}")


if __name__ == "__main__":
    main()
