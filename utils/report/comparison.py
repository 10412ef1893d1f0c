"""The comparison report: NovelSum of each dataset at one grid point, the whole grid, each
dataset's per-sample novelty, and a map of all datasets together."""

import re
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..metrics.proximity import column_setting
from .hover import excerpt, hover_label, number
from .page import Page
from .projection import map_coordinates
from .sampling import drawn_others, sample_note

GRID_COLUMN = re.compile(r"^neighbor_(\d+)_density_([-\d.e]+)_distance_([-\d.e]+)$")
RECOMMENDED = (10, 0.5, 1.0)  # k, beta, alpha: the paper's recommended setting


@dataclass
class DatasetView:
    """One dataset of a comparison: its ``name`` (the CSV row), its ``vectors`` (or None: not
    on the map), per-sample ``novelty`` (name of column -> values, or None), its ``items``
    (texts, or None: no hover text)."""

    name: str
    vectors: np.ndarray | None = None
    novelty: dict | None = None
    items: list | None = None


def grid_columns(row):
    """The NovelSum grid columns of a CSV row, in order."""
    return [column for column in row if GRID_COLUMN.match(column)]


def chosen_column(columns, column=None):
    """``column`` when the grid has it, else the grid point nearest the recommended one (ties:
    the smaller value, per coordinate in the order k, beta, alpha)."""
    if column is not None:
        if column not in columns:
            raise InputError(f"--report_column {column}: not a column of the results; choose "
                             f"one of {', '.join(columns)}")
        return column
    if not columns:
        raise InputError("the results hold no NovelSum grid column "
                         "(neighbor_{k}_density_{beta}_distance_{alpha})")
    points = [tuple(float(v) for v in GRID_COLUMN.match(c).groups()) for c in columns]
    best = list(points)
    for axis, target in enumerate(RECOMMENDED):
        nearest = min((p[axis] for p in best), key=lambda v: (abs(v - target), v))
        best = [p for p in best if p[axis] == nearest]
    return columns[points.index(best[0])]


def dataset_labels(dataset, rows, column):
    novelty = None if dataset.novelty is None else dataset.novelty.get(column)
    return [hover_label(f"{dataset.name}, row {i}",
                        [("novelty", number(None if novelty is None else float(novelty[i])))],
                        None if dataset.items is None else excerpt(dataset.items[i]))
            for i in rows]


def map_traces(datasets, settings, column):
    """Per dataset on the map: its coordinates and labels, rows sampled uniformly over all
    datasets together above the cap; and the note saying so."""
    shown = [d for d in datasets if d.vectors is not None]
    sizes = [len(d.vectors) for d in shown]
    coordinates = map_coordinates(np.concatenate([d.vectors for d in shown]),
                                  settings.map_method)
    drawn = drawn_others(sum(sizes), [], settings.max_points)
    traces, start = {}, 0
    for dataset, size in zip(shown, sizes):
        rows = drawn[(drawn >= start) & (drawn < start + size)] - start
        traces[dataset.name] = (coordinates[start + rows], dataset_labels(dataset, rows,
                                                                          column))
        start += size
    return traces, sample_note(len(drawn), sum(sizes), "rows")


def comparison_page(rows, datasets, settings, given_name=None):
    """The comparison report as a ``Page``: ``rows`` are the results CSV's rows (dicts)."""
    from .comparison_figures import (  # plotly, imported when a page is drawn
        bars_figure,
        datasets_map_figure,
        grid_figure,
        spread_figure,
    )

    columns = grid_columns(rows[0])
    column = chosen_column(columns, settings.column)
    names = [row["Dataset Name"] for row in rows]
    page = Page(f"NovelSum of {len(rows)} dataset{'s' * (len(rows) != 1)}",
                f"shown: {column_setting(column)}"
                + (f"; each dataset measured beside {given_name}" if given_name else ""))
    page.section("NovelSum of each dataset")
    page.figure(bars_figure(names, [float(row[column]) for row in rows], column), "bars")
    page.section("The whole grid", "Rows: datasets; columns: (k, beta, alpha).")
    page.figure(grid_figure(names, columns, [[float(row[c]) for c in columns] for row in rows]),
                "grid")
    spreads = {d.name: d.novelty[column] for d in datasets
               if d.novelty is not None and column in d.novelty}
    if spreads:
        page.section("Per-sample novelty", "Each box spans a dataset's per-sample novelty "
                     "(quartiles; whiskers to 1.5 times the box); its mean is the bar above.")
        page.figure(spread_figure(spreads, column), "spread")
    if any(d.vectors is not None for d in datasets):
        traces, note = map_traces(datasets, settings, column)
        method = "PCA of the unit vectors" if settings.map_method == "pca" else "UMAP"
        page.section("Map of all datasets", f"{method}. {note}")
        page.figure(datasets_map_figure(traces, "Every dataset's rows, one colour each"),
                    "datasets_map")
    return page
