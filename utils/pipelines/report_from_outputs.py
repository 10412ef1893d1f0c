"""The ``novelsum-report`` run: draw the report of a finished run from what it wrote (a
novelselect output folder, or a novelsum CSV with its per-sample table), running nothing again
but the pool's density factors, which a selection does not save."""

import csv
import json
from pathlib import Path

import numpy as np

from ..density.reference import pool_density
from ..errors import InputError
from ..io.texts import load_items
from ..io.vectors import load_vectors
from ..report.comparison import grid_columns
from ..report.selection import SelectionData, check_texts, write_selection_report
from ..report.settings import check_settings
from ..runtime.reporting import Reporter
from .novelsum import dataset_name, dataset_paths
from .report_outputs import comparison_report_writer, report_path

DENSITY_TOLERANCE = 1e-4  # relative: the picks' factors recomputed against the pick log's


def read_json(path, what):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"{path}: cannot read {what} ({err.strerror or err})") from None
    except ValueError as err:
        raise InputError(f"{path}: {what} is not JSON ({err})") from None


def is_novelselect(record):
    return record.get("tool") == "novelselect" and \
        record.get("parameters", {}).get("method") == "novelselect"


def selection_record(folder, run):
    """The run record of the NovelSelect run in ``folder`` (the one there, or ``run``'s)."""
    records = [path for path in sorted(folder.glob(f"{run or '*'}_run.json"))
               if is_novelselect(read_json(path, "a run record"))]
    if not records:
        raise InputError(f"{folder}: no NovelSelect run record (*_run.json) here"
                         + (f" for --run {run}" if run else "")
                         + "; give the --output_dir of a finished novelselect run")
    if len(records) > 1:
        stems = ", ".join(path.name.removesuffix("_run.json") for path in records)
        raise InputError(f"{folder}: several NovelSelect runs ({stems}); choose one with --run")
    return records[0]


def input_path(parameters, name, record):
    """A folder the run read, as its record names it, checked to exist from here."""
    value = parameters.get(name)
    if value is None:
        return None
    if not Path(value).exists():
        raise InputError(f"{record}: the run read --{name} {value}, which is not there from "
                         f"{Path.cwd()}; run novelsum-report from the folder the run ran in")
    return value


def read_csv_rows(path, what):
    """The rows of a CSV file as dicts."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError as err:
        raise InputError(f"{path}: cannot read {what} ({err.strerror or err})") from None


def read_pick_log(path):
    """Picks and novelty (NaN where empty) from a pick log."""
    rows = read_csv_rows(path, "the pick log")
    picks = [int(row["index"]) for row in rows]
    novelty = np.array([float(row["novelty"]) if row["novelty"] else np.nan for row in rows])
    logged = np.array([float(row["density_factor"]) for row in rows])
    return picks, novelty, logged


def pool_factors(parameters, pool, reference, record, logged, picks):
    """Every pool row's density factor, recomputed (a kNN search over the pool), checked
    against the factors the pick log wrote for the picks."""
    factors = pool_density(pool, parameters["neighbors"], parameters["density_power"],
                           reference=reference)
    if not np.allclose(factors[picks], logged, rtol=DENSITY_TOLERANCE, atol=0):
        raise InputError(f"{record}: the pool's density factors differ from those the run "
                         f"logged for its picks; the embeddings have changed since the run")
    return factors


def selection_data(folder, run, report):
    """Everything the selection report needs, from the finished run in ``folder``."""
    record = selection_record(folder, run)
    parameters = read_json(record, "a run record")["parameters"]
    paths = {name: input_path(parameters, name, record)
             for name in ("text_dir", "figure_dir", "dense_ref_dir", "given_dir")}
    field = parameters.get("embedding_field")
    pool = load_vectors(paths["figure_dir"], embedding_field=field).vectors
    items = load_items(paths["text_dir"])[0] if paths["text_dir"] else None
    check_texts(items, len(pool), paths["text_dir"] or record)
    stem = record.name.removesuffix("_run.json")
    picks, novelty, logged = read_pick_log(folder / f"{stem}_picks.csv")
    report.notice("recomputing the pool's density factors (a kNN search; the run does not "
                  "save them)")
    reference = (load_vectors(paths["dense_ref_dir"], allow_zero=True,
                              embedding_field=field).vectors if paths["dense_ref_dir"] else None)
    factors = pool_factors(parameters, pool, reference, record, logged, picks)
    given = (load_vectors(paths["given_dir"], embedding_field=field).vectors
             if paths["given_dir"] else None)
    return SelectionData(pool, items, picks, novelty, factors, given, parameters)


def read_results(path):
    """The rows of a novelsum CSV, grid columns as floats."""
    rows = read_csv_rows(path, "the results")
    if not rows or "Dataset Name" not in rows[0] or not grid_columns(rows[0]):
        raise InputError(f"{path}: not a novelsum results CSV (Dataset Name and "
                         f"neighbor_..._density_..._distance_... columns)")
    return [{name: value if name == "Dataset Name" else float(value)
             for name, value in row.items()} for row in rows]


def per_sample_novelty(path, rows, given_name):
    """Per dataset: {grid column: novelty of its own rows, by index} from a per-sample table
    (given rows of each measurement left out, but for the given set's own)."""
    import pandas as pd

    frame = pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)
    novelty = {}
    for row in rows:
        name = row["Dataset Name"]
        own = frame[frame["dataset"] == name]
        if "from_given" in own and name != given_name:
            own = own[~own["from_given"].astype(bool)]
        own = own.sort_values("index")
        novelty[name] = {column.removeprefix("novelty_"): own[column].to_numpy()
                         for column in own.columns if column.startswith("novelty_")}
    return novelty


def comparison_inputs(csv_path, per_sample, texts):
    """``(rows, measured, given name, embedding field)`` for ``comparison_report_writer``,
    from a novelsum CSV, its run record beside it (for the datasets' embeddings, when there)
    and its per-sample table (when given)."""
    rows = read_results(csv_path)
    record = csv_path.with_name(f"{csv_path.stem}_run.json")
    parameters = read_json(record, "the run record")["parameters"] if record.exists() else {}
    given = parameters.get("given_dir")
    given_name = dataset_name(Path(given)) if given else None
    sources = {}
    if parameters:
        paths = dataset_paths(parameters.get("single_dataset_path"),
                              parameters.get("multi_datasets_dir"), given)
        sources = {dataset_name(path): path for path in ([Path(given)] if given else []) + paths}
    novelty = per_sample_novelty(per_sample, rows, given_name) if per_sample else {}
    measured = [(row, sources.get(row["Dataset Name"]), novelty.get(row["Dataset Name"]))
                for row in rows]
    return measured, given_name, parameters.get("embedding_field")


def run_report(source, settings, run=None, per_sample=None, texts=None, quiet=False):
    """Draw the report of the finished run at ``source`` (a novelselect output folder or a
    novelsum CSV) into ``settings.path``; return the line for stdout."""
    source = Path(source)
    check_settings(settings)
    if not source.exists():
        raise InputError(f"{source}: no such folder or file; give a novelselect --output_dir "
                         f"or a novelsum --output_csv")
    if source.is_dir():
        if per_sample or texts or settings.column:
            raise InputError(f"{source}: --per_sample_csv, --report_texts and --report_column "
                             f"go with a novelsum CSV, not a selection folder")
        write_selection_report(selection_data(source, run, Reporter(quiet)), settings)
    else:
        measured, given_name, field = comparison_inputs(source, per_sample, texts)
        comparison_report_writer((settings, texts), measured, given_name, field)(
            report_path(settings))
    return f"wrote {settings.path}"
