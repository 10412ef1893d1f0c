"""The tables of a novelsum run: the results CSV, the text tables on stdout, the per-sample
frame, and which grid point the plot and summary show."""

import csv
import io
import math

import numpy as np

from ..metrics.proximity import column_name, column_setting, format_number


def is_missing(value):
    """A value left out (NaN: a metric undefined on this dataset, with a notice)."""
    return isinstance(value, float) and math.isnan(value)


def results_csv(rows):
    """The CSV text of the result rows (dicts with the same keys, in column order); a missing
    value is an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if is_missing(value) else value for key, value in row.items()}
                     for row in rows)
    return buffer.getvalue()


def metrics_table(rows, columns):
    """The baseline metrics as a text table: one line per dataset, one column per metric."""
    name_width = max(len("dataset"), *(len(r["Dataset Name"]) for r in rows))
    widths = [max(12, len(c)) for c in columns]
    lines = [f"{'dataset':<{name_width}}  " + "  ".join(f"{c:>{w}}" for c, w in
                                                         zip(columns, widths))]
    lines.append("-" * len(lines[0]))
    lines += [f"{row['Dataset Name']:<{name_width}}  " + "  ".join(
        f"{'':>{w}}" if is_missing(row[c]) else f"{row[c]:>{w}.6g}"
        for c, w in zip(columns, widths)) for row in rows]
    return "\n".join(lines)


RECOMMENDED = (10, 0.5, 1.0)  # k, beta, alpha: the paper's recommended setting


def nearest_grid_point(neighbors, density_powers, distance_powers, target=RECOMMENDED):
    """The grid point closest to ``target`` in each coordinate (ties: the smaller value)."""
    return tuple(min(values, key=lambda v, t=t: (abs(v - t), v))
                 for values, t in zip((neighbors, density_powers, distance_powers), target))


def setting_text(point):
    """``k=10, beta=0.5, alpha=1`` for a grid point ``(k, beta, alpha)``."""
    k, beta, alpha = point
    return f"k={k}, beta={format_number(beta)}, alpha={format_number(alpha)}"


def shown_setting(point):
    """How the tables name the shown grid point: the recommended setting, or the grid point
    nearest it."""
    if tuple(point) == RECOMMENDED:
        return f"{setting_text(point)}, the recommended setting"
    return (f"{setting_text(point)}, the grid point nearest the recommended "
            f"{setting_text(RECOMMENDED)}")


def results_table(rows, neighbors, density_powers, distance_powers, typed_powers):
    """A compact text table: one line per dataset, k and beta; one column per alpha. The value
    at the grid point nearest the recommended setting is starred, with a note below."""
    shown = nearest_grid_point(neighbors, density_powers, distance_powers)
    name_width = max(len("dataset"), *(len(r["Dataset Name"]) for r in rows))
    header = (f"{'dataset':<{name_width}}  {'k':>4}  {'beta':>5}  "
              + "  ".join(f"{'alpha=' + format_number(a):>10} " for a in distance_powers)
              + f"  {'cos_distance':>12}")
    lines = [header, "-" * len(header)]
    for row in rows:
        for beta in density_powers:
            for k in neighbors:
                values = "  ".join(
                    f"{row[column_name(k, beta, a, typed_powers)]:>10.6g}"
                    + ("*" if (k, beta, a) == shown else " ") for a in distance_powers)
                lines.append(f"{row['Dataset Name']:<{name_width}}  {k:>4}  "
                             f"{format_number(beta):>5}  {values}  "
                             f"{row['cos_distance']:>12.6g}")
    lines.append(f"* {shown_setting(shown)}")
    return "\n".join(lines)


def summary_line(rows, column, point, given=False):
    """The run's last line: NovelSum at the shown grid point ``point`` (its CSV ``column``): a
    single dataset's value, or the highest and lowest; beside a given set (the first row),
    the gains over it."""
    where = f"at {setting_text(point)}"
    if given:
        given_row, *rows = rows
        gains = sorted(((row[column] - given_row[column], row["Dataset Name"]) for row in rows),
                       reverse=True)
        if len(gains) == 1:
            return (f"gain of {gains[0][1]} over {given_row['Dataset Name']} {where}: "
                    f"{gains[0][0]:+.6g}")
        return (f"gain over {given_row['Dataset Name']} {where}: highest {gains[0][1]} "
                f"{gains[0][0]:+.6g}, lowest {gains[-1][1]} {gains[-1][0]:+.6g} of "
                f"{len(gains)} datasets")
    ranked = sorted(((row[column], row["Dataset Name"]) for row in rows), reverse=True)
    if len(ranked) == 1:
        return f"NovelSum of {ranked[0][1]} {where}: {ranked[0][0]:.6g}"
    return (f"NovelSum {where}: highest {ranked[0][1]} {ranked[0][0]:.6g}, lowest "
            f"{ranked[-1][1]} {ranked[-1][0]:.6g} of {len(ranked)} datasets")


def gains_table(rows, column):
    """Each dataset's gain over the given set (the first row) at one grid point: NovelSum of
    the given set plus the dataset, less the given set's own."""
    given, *rows = rows
    name_width = max(len("dataset"), *(len(r["Dataset Name"]) for r in rows))
    lines = [f"gain over {given['Dataset Name']} ({given[column]:.6g} alone) at "
             f"{column_setting(column)}:",
             f"{'dataset':<{name_width}}  {'with it':>10}  {'gain':>10}"]
    lines += [f"{row['Dataset Name']:<{name_width}}  {row[column]:>10.6g}  "
              f"{row[column] - given[column]:>+10.6g}" for row in rows]
    return "\n".join(lines)


def per_sample_frame(name, parts, result, marked=False):
    """One row per sample of a measured set, named ``name``: where it is (its shard and row,
    and its index in its own dataset), its novelty at every grid point, its density factors
    and its nearest other sample. ``parts``: ``(VectorSet, from the given set)`` pairs in
    the order they were measured; ``marked``: add the column ``from_given``."""
    import pandas as pd

    shards, rows, index, from_given = [], [], [], []
    for part, is_given in parts:
        count = len(part.vectors)
        part_shards, part_rows = part.locate(np.arange(count))
        shards += part_shards
        rows.append(part_rows)
        index.append(np.arange(count))
        from_given.append(np.full(count, is_given))
    n = sum(len(part.vectors) for part, _given in parts)
    columns = {"dataset": [name] * n, "shard": shards, "row": np.concatenate(rows),
               "index": np.concatenate(index)}
    if marked:
        columns["from_given"] = np.concatenate(from_given)
    columns.update({f"novelty_{column}": values for column, values in result.per_sample.items()})
    columns.update({f"density_factor_{column}": values
                    for column, values in result.density_factors.items()})
    columns.update(nearest_index=result.nearest_index, nearest_distance=result.nearest_distance)
    return pd.DataFrame(columns)


def write_table(path, frame, suffix):
    """A table at ``path``: Parquet when ``suffix`` is ``.parquet``, else CSV."""
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, lineterminator="\n")
