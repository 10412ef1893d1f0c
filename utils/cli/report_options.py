"""The --report options that novelselect and novelsum share, gathered into one ``report``
argument (a ``ReportSettings``, or None)."""

import functools
import os
from pathlib import Path

import click

from ..report.duplicates import DEFAULT_SIMILARITY
from ..report.projection import MAP_METHODS
from ..report.sampling import DEFAULT_MAX_POINTS
from ..report.settings import ReportSettings
from .options import FINITE_FLOAT

REPORT_HELP = ("Also write this interactive HTML page (one offline file): {what}. The "
               "novelsum-report command draws it later from finished outputs.")


def settings_from(report, comparison, values):
    """A ``ReportSettings`` from the option values, or None without --report (then no
    --report_* option may be given)."""
    given = [f"--{name}" for name, value in values.items() if value is not None]
    if report is None:
        if given:
            raise click.UsageError(f"{given[0]} is used with --report FILE.html")
        return None
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise click.UsageError("--report runs in one process: draw the report afterwards "
                               "with novelsum-report, from the finished outputs")
    chosen = {name: value for name, value in values.items() if value is not None}
    texts = chosen.pop("report_texts", None)
    settings = ReportSettings(Path(report), map_method=chosen.get("report_map", "pca"),
                              similarity=chosen.get("report_similarity", DEFAULT_SIMILARITY),
                              max_points=chosen.get("report_max_points", DEFAULT_MAX_POINTS),
                              column=chosen.get("report_column"))
    return (settings, texts) if comparison else settings


def report_options(what, selection=True, comparison=False):
    """Decorate a command with --report and its settings: the map's for all, the duplicate
    threshold with ``selection``, the grid column and texts folder with ``comparison``. The
    command gets ``report``: a ``ReportSettings`` or None (with ``comparison``:
    ``(settings, texts folder)`` or None)."""
    options = [
        click.option("--report", type=click.Path(), default=None,
                     help=REPORT_HELP.format(what=what)),
        click.option("--report_map", "--report-map", type=click.Choice(MAP_METHODS),
                     default=None, show_default="pca",
                     help="How the report maps vectors to 2-D: pca (deterministic, fast) or "
                          "umap (needs umap-learn)."),
        click.option("--report_max_points", "--report-max-points", type=click.IntRange(min=1),
                     default=None, show_default=str(DEFAULT_MAX_POINTS),
                     help="Points a report map draws at most; above it a stated uniform "
                          "sample of the other rows (picks and given rows are always drawn).")]
    if selection:
        options.append(click.option(
            "--report_similarity", "--report-similarity", type=FINITE_FLOAT, default=None,
            show_default=str(DEFAULT_SIMILARITY),
            help="Cosine similarity at or above which the report counts two rows as near "
                 "duplicates (identical vectors are counted apart)."))
    if comparison:
        options += [
            click.option("--report_column", "--report-column", default=None,
                         show_default="neighbor_10_density_0.5_distance_1 or the nearest",
                         help="The grid column the report's bars, boxes and map show."),
            click.option("--report_texts", "--report-texts", default=None,
                         help="A folder holding each dataset's text shards under the "
                              "dataset's name (file or folder), for the map's hover text.")]
    names = ("report_map", "report_max_points", "report_column", "report_texts",
             "report_similarity")

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, report, **kwargs):
            values = {name: kwargs.pop(name) for name in names if name in kwargs}
            return command(*args, report=settings_from(report, comparison, values), **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate
