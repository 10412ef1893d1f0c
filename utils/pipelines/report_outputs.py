"""The --report page of a run, as one more output written with the others: the selection's of
a novelselect run, the comparison's of a novelsum run; and each dataset's texts for its map."""

from pathlib import Path

from ..errors import InputError
from ..io.listing import TEXT_SUFFIXES
from ..io.texts import load_items
from ..io.vectors import load_vectors
from ..report.comparison import DatasetView, chosen_column, comparison_page
from ..report.selection import SelectionData, check_texts, write_selection_report
from ..report.settings import check_settings


def report_path(settings):
    """Where the page goes, absolute: outputs are written by absolute path."""
    return Path(settings.path).absolute()


def planned_report(settings, columns=None):
    """``[("--report", path)]`` for the output plan, its settings checked first (before any
    long work; ``columns``: the grid columns a comparison will have); ``[]`` without a
    report."""
    if settings is None:
        return []
    check_settings(settings)
    if columns is not None:
        chosen_column(columns, settings.column)
    return [("--report", report_path(settings))]


def selection_report_writer(options, inputs, selection):
    """Writes the selection's page at a given path (``ReportSettings`` in ``options.report``)."""
    check_texts(inputs.items, inputs.n, options.text_dir)
    data = SelectionData(inputs.pool.vectors, inputs.items, list(selection.picks),
                         selection.novelty, selection.density_factor,
                         None if inputs.given is None else inputs.given.vectors,
                         dict(neighbors=options.neighbors, density_power=options.density_power,
                              distance_power=options.distance_power))
    return lambda path: write_selection_report(data, options.report, path)


def texts_of(folder, name, rows):
    """The texts of dataset ``name`` in ``folder`` (a shard folder or file of that name), one
    per row; None when the folder has none of that name."""
    candidates = [Path(folder) / name] + [Path(folder) / f"{name}{suffix}"
                                          for suffix in sorted(TEXT_SUFFIXES)]
    found = [path for path in candidates if path.exists()]
    if not found:
        return None
    items = load_items(found[0])[0]
    if len(items) != rows:
        raise InputError(f"{found[0]}: {len(items):,} texts for the {rows:,} rows of the "
                         f"dataset '{name}'; give the texts its embeddings were made from")
    return items


def dataset_view(name, path, novelty, texts_folder, embedding_field=None):
    """One dataset's part of a comparison report: its vectors from ``path`` (None: not on the
    map), and its texts from ``texts_folder`` when given."""
    if path is None:
        return DatasetView(name, None, novelty, None)
    vectors = load_vectors(path, embedding_field=embedding_field).vectors
    items = texts_of(texts_folder, name, len(vectors)) if texts_folder else None
    return DatasetView(name, vectors, novelty, items)


def comparison_report_writer(report, measured, given_name=None, embedding_field=None):
    """Writes a comparison's page; ``report``: ``(ReportSettings, texts folder)``;
    ``measured``: per dataset ``(CSV row, embeddings path, {column: per-sample novelty})``,
    the novelty of the dataset's own rows (beside a given set, its rows come last)."""
    settings, texts_folder = report

    def write(path):
        datasets = [dataset_view(row["Dataset Name"], source, novelty, texts_folder,
                                 embedding_field) for row, source, novelty in measured]
        comparison_page([row for row, _source, _novelty in measured], datasets, settings,
                        given_name).write(path)

    return write
