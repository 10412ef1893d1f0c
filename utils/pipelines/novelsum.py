"""The ``novelsum`` run: load the reference and each dataset, measure, write the tables and the
record."""

import json
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..density.reference import build_density_reference
from ..errors import InputError
from ..io.atomic import write_together
from ..io.listing import VECTOR_SUFFIXES, shard_order_key
from ..io.outputs import check_output_plan, check_previous_run
from ..io.records import RunRecord, vector_inputs
from ..io.vectors import dataset_rows, load_vectors
from ..metrics.novelsum import novelsum_grid
from ..metrics.proximity import column_name, column_setting
from ..metrics.registry import (
    CLUSTER_METRICS,
    check_metric_inputs,
    compute_metrics,
    fitting_cluster_count,
    metric_columns,
    needs_reference,
)
from ..runtime.distributed import start_ranks, stop_ranks
from ..runtime.reporting import Reporter
from .novelsum_tables import (
    gains_table,
    is_missing,
    metrics_table,
    nearest_grid_point,
    per_sample_frame,
    results_csv,
    results_table,
    summary_line,
    write_table,
)
from .report_outputs import comparison_report_writer, planned_report, report_path
from .session import Session


@dataclass(frozen=True)
class NovelsumOptions:
    """A run's options, checked and resolved by the command (``utils/cli/novelsum.py``)."""

    single_dataset_path: str | None
    multi_datasets_dir: str | None
    dense_ref_dir: str | None
    output_csv: Path
    per_sample_csv: str | None
    plot: bool
    gpu_id: int | None
    neighbors: list
    density_powers: list
    distance_powers: list
    typed_powers: tuple  # whether each power list came from the command line: it names the columns
    block_mib: int
    embedding_field: str | None
    neighbor_density: bool
    exclude_self: bool
    metrics: tuple
    n_clusters: int
    quiet: bool
    n_clusters_given: bool = True  # False: the default, lowered to what small data allows
    overwrite: bool = False
    given_dir: str | None = None  # data already held: each dataset is measured beside it
    allow_mixed_embeddings: bool = False
    report: tuple | None = None  # (ReportSettings, texts folder) of --report, or None

    @property
    def uses_density(self):
        return any(beta != 0 for beta in self.density_powers)

    @property
    def shown(self):
        """The column of the plot and the summary: the grid point nearest the recommended."""
        return column_name(*nearest_grid_point(self.neighbors, self.density_powers,
                                               self.distance_powers), self.typed_powers)

    def parameters(self):
        """The options as the run record lists them."""
        return dict(
            single_dataset_path=self.single_dataset_path,
            multi_datasets_dir=self.multi_datasets_dir, dense_ref_dir=self.dense_ref_dir,
            neighbors=self.neighbors, density_powers=self.density_powers,
            distance_powers=self.distance_powers, neighbor_density=self.neighbor_density,
            exclude_self=self.exclude_self, block_mib=self.block_mib,
            embedding_field=self.embedding_field, metrics=list(self.metrics),
            n_clusters=self.n_clusters, given_dir=self.given_dir,
            allow_mixed_embeddings=self.allow_mixed_embeddings)


@dataclass
class Measured:
    """One dataset's results (measured beside a given set, when there is one): its CSV row, its
    per-sample novelty at the shown grid point and, with --per_sample_csv, its per-sample
    frame."""

    row: dict
    spread: object
    frame: object
    path: Path = None  # where the dataset's embeddings are
    own_novelty: dict = None  # with --report: per-sample novelty of its own rows, per column


def run_novelsum(options):
    """Measure every dataset and write the CSV, the optional per-sample table and plot, and the
    run record; return the text for stdout (None on ranks other than 0)."""
    report = Reporter(options.quiet)
    ranks, device = start_ranks(options.gpu_id, report.notice)
    with ranks.phase():  # every rank checks, and all agree, before any work
        plan_outputs(options)
    session = Session(report, ranks, device, RunRecord("novelsum", options.parameters()))
    paths = dataset_paths(options.single_dataset_path, options.multi_datasets_dir,
                          options.given_dir)
    session.check_embedded_alike(embedding_sets(options, paths), options.allow_mixed_embeddings)
    ref, metric_ref = load_references(options, session)
    options = fit_cluster_count(options, session, paths, ref)
    reference = density_search(options, session, ref)
    metric_cache = {}  # the reference's unit rows and centroids, made once for every dataset
    references = (ref, reference, metric_ref)
    given = (load_dataset(Path(options.given_dir), options, session, given=True)
             if options.given_dir else None)
    results = [] if given is None else [
        measure_parts([(given, True)], Path(options.given_dir), options, session, references,
                      metric_cache)]
    for path in paths:
        parts = [(load_dataset(path, options, session), False)]
        results.append(measure_parts(parts if given is None else [(given, True), *parts],
                                     path, options, session, references, metric_cache))
    writers = output_writers(options, session, results)
    with session.record.stage("writing"), ranks.phase(patient=True):  # rank 0 writes
        if ranks.is_main:
            write_together(writers)
    stop_ranks(ranks)
    if ranks.is_main:
        return summary_text(options, session, [r.row for r in results], writers)
    return None


def plan_outputs(options):
    """Before any work: the outputs on distinct paths, none on an input, none replacing
    another run's."""
    csv = options.output_csv
    record = csv.with_name(f"{csv.stem}_run.json")
    outputs = [("--output_csv", csv), ("--per_sample_csv", options.per_sample_csv),
               ("--plot", csv.with_suffix(".png") if options.plot else None),
               ("the run record", record)]
    outputs += planned_report(options.report and options.report[0], [
        column_name(k, beta, alpha, options.typed_powers) for beta in options.density_powers
        for k in options.neighbors for alpha in options.distance_powers])
    check_output_plan(outputs, [("--single_dataset_path", options.single_dataset_path),
                                ("--multi_datasets_dir", options.multi_datasets_dir),
                                ("--dense_ref_dir", options.dense_ref_dir),
                                ("--given_dir", options.given_dir)])
    check_previous_run(record, [path for _what, path in outputs if path],
                       options.parameters(), options.overwrite)


def fit_cluster_count(options, session, paths, ref):
    """Lower a default ``--n_clusters`` to what every dataset and the reference allow (the
    cluster metrics need as many rows as clusters), with a notice and a note in the record."""
    if options.n_clusters_given or not CLUSTER_METRICS & set(options.metrics):
        return options
    given = dataset_rows(options.given_dir, options.embedding_field) if options.given_dir else 0
    sizes = [given + dataset_rows(path, options.embedding_field) for path in paths]
    sizes += [given] if given else []
    fitted = fitting_cluster_count(options.metrics, options.n_clusters, sizes,
                                   None if ref is None else ref.offsets[-1])
    if fitted < options.n_clusters:
        session.report.notice(f"--n_clusters lowered from its default {options.n_clusters} to "
                              f"{fitted} for small data (cluster_inertia: two samples per "
                              f"cluster; partition_entropy: a reference row per cluster)")
        session.record.parameters.update(n_clusters=fitted,
                                         n_clusters_lowered_from=options.n_clusters)
        return replace(options, n_clusters=fitted)
    return options


def dataset_name(path):
    """A dataset's row name in the CSV: a file's stem, a folder's name."""
    return path.stem if path.is_file() else path.resolve().name


def dataset_paths(single_dataset_path, multi_datasets_dir, given_dir=None):
    """The datasets to measure: the single path, then each file or shard folder of the dir
    (checked apart from the given set's, which has a CSV row of its own)."""
    given = [Path(given_dir)] if given_dir else []
    paths = [Path(single_dataset_path)] if single_dataset_path else []
    for path, option in ((single_dataset_path, "--single_dataset_path"),
                         (multi_datasets_dir, "--multi_datasets_dir")):
        if given and path and Path(path).resolve() == given[0].resolve():
            raise InputError(f"{given_dir}: --given_dir is also the {option}; give the data "
                             f"you already have apart from the datasets to measure")
    if multi_datasets_dir:  # the given set may sit among them: its row is measured once
        paths += [path for path in datasets_in(Path(multi_datasets_dir))
                  if not given or path.resolve() != given[0].resolve()]
    check_found(given, paths, multi_datasets_dir or single_dataset_path)
    check_distinct(given + paths)
    return paths


def check_found(given, paths, where):
    """Every path there, and a dataset to measure besides the given set."""
    for path in given + paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    if given and not paths:
        raise InputError(f"{where}: no dataset besides the given set {given[0]}; give the "
                         f"datasets to measure beside it")


def datasets_in(folder):
    """Each embedding file or shard folder of ``folder``, in shard order."""
    if not folder.is_dir():
        raise InputError(f"{folder}: --multi_datasets_dir must be a folder of datasets")
    found = [p for p in folder.iterdir() if not p.name.startswith(".")
             and (p.is_dir() or (p.is_file() and p.suffix in VECTOR_SUFFIXES))]
    if not found:
        raise InputError(f"{folder}: no datasets (.json, .npy or .parquet files, or shard "
                         f"folders)")
    return sorted(found, key=shard_order_key)


def check_distinct(paths):
    """Each dataset once, and under a name of its own: the CSV tells datasets apart by name."""
    seen = {}
    for path in paths:
        if path.resolve() in seen:
            raise InputError(f"{path}: given twice (as {seen[path.resolve()]} too); "
                             f"measure each dataset once")
        seen[path.resolve()] = path
    names = {}
    for path in paths:
        name = dataset_name(path)
        if name in names:
            raise InputError(f"{names[name]} and {path} would both be the dataset '{name}' in "
                             f"the CSV; rename one of them")
        names[name] = path


def embedding_sets(options, paths):
    """The embedding sets the run reads together, each named by its option (None: unused)."""
    uses_reference = options.uses_density or needs_reference(options.metrics)
    return [("--dense_ref_dir", options.dense_ref_dir if uses_reference else None),
            ("--given_dir", options.given_dir),
            *(("dataset", path) for path in paths)]


def load_references(options, session):
    """The reference for the density search and for the baseline metrics (None where unused).

    Under torchrun each rank holds a block of the reference's rows for the density search;
    rank 0 alone computes the baseline metrics, on the whole reference.
    """
    uses_metrics = needs_reference(options.metrics)
    if not options.dense_ref_dir or not (options.uses_density or uses_metrics):
        return None, None
    ranks, record = session.ranks, session.record
    with record.stage("loading"), ranks.phase():
        ref = session.load_embeddings(options.dense_ref_dir,
                                      session.report.progress("loading reference", "shard"),
                                      allow_zero=True, embedding_field=options.embedding_field)
    record.add_input("reference", vector_inputs(ref, ranks))
    if not (ranks.grouped and uses_metrics):
        return ref, ref
    with record.stage("loading"), ranks.phase(patient=True):
        metric_ref = load_vectors(options.dense_ref_dir, allow_zero=True,
                                  embedding_field=options.embedding_field) \
            if ranks.is_main else None
    return ref, metric_ref


def density_search(options, session, ref):
    """The reference's kNN index for the density factor, when a density power is not 0."""
    if ref is None or not options.uses_density:
        return None
    reference = build_density_reference(ref.vectors, session.device, options.block_mib,
                                        str(options.dense_ref_dir), session.ranks)
    reference.check_neighbors(options.neighbors)
    return reference


@contextmanager
def errors_named(path):
    """An ``InputError`` met while measuring a dataset names the dataset's path first."""
    try:
        yield
    except InputError as err:
        raise InputError(f"{path}: {err}") from None


def load_dataset(path, options, session, given=False):
    """One dataset's vectors (or, ``given``, the given set's), whole on every rank, listed in
    the run record."""
    with session.record.stage("loading"), session.ranks.phase():
        dataset = load_vectors(path, session.report.progress(f"loading {path.name}", "shard"),
                               embedding_field=options.embedding_field)
    session.record.add_input("given" if given else f"dataset {dataset.name}",
                             vector_inputs(dataset))
    return dataset


def measure_parts(parts, path, options, session, references, metric_cache):
    """NovelSum over the grid and the baseline metrics of the concatenated ``parts``
    (``(VectorSet, from the given set)`` pairs, the given set first), named after the last."""
    ref, reference, metric_ref = references
    report, ranks, record = session.report, session.ranks, session.record
    widths = [part.vectors.shape[1] for part, _given in parts]
    if len(set(widths)) > 1:
        raise InputError(f"{path}: vectors have {widths[-1]} dimensions but the given set "
                         f"({parts[0][0].source}) has {widths[0]}")
    vectors = np.concatenate([part.vectors for part, _given in parts]) if len(parts) > 1 \
        else parts[0][0].vectors
    name = parts[-1][0].name
    if options.metrics:  # sizes checked before any long work
        with errors_named(path):
            check_metric_inputs(options.metrics, len(vectors),
                                None if ref is None else ref.offsets[-1], options.neighbors,
                                options.n_clusters)
    with record.stage("novelsum"), errors_named(path):
        result = novelsum_grid(
            vectors, reference, options.neighbors, options.density_powers,
            options.distance_powers, device=session.device, block_mib=options.block_mib,
            neighbor_density=options.neighbor_density, exclude_self=options.exclude_self,
            typed_powers=options.typed_powers,
            density_progress=report.progress(f"density {name}", "chunk"),
            distance_progress=report.progress(f"distances {name}", "block"),
            ranks=ranks)
    row = {"Dataset Name": name, **result.values, "cos_distance": result.cos_distance}
    if options.metrics:
        with record.stage("metrics"), ranks.phase(patient=True):
            if ranks.is_main:
                with errors_named(path):
                    row.update(compute_metrics(
                        options.metrics, vectors,
                        None if metric_ref is None else metric_ref.vectors, options.neighbors,
                        options.n_clusters, session.device, options.block_mib,
                        cache=metric_cache))
                if is_missing(row.get("cluster_inertia")):
                    report.notice(empty_inertia_notice(name, options.n_clusters))
    frame = (per_sample_frame(name, parts, result, marked=bool(options.given_dir))
             if options.per_sample_csv else None)
    own = len(parts[-1][0].vectors)  # beside a given set, the dataset's rows come last
    own_novelty = {column: values[-own:] for column, values in result.per_sample.items()} \
        if options.report else None
    return Measured(row, result.per_sample[options.shown], frame, path, own_novelty)


def empty_inertia_notice(name, n_clusters):
    """Why a dataset's cluster_inertia cell is empty, and what to do."""
    if n_clusters == 1:
        return (f"{name}: cluster_inertia left empty: all its rows are the same vector, so the "
                f"inertia is 0 whatever --n_clusters")
    return (f"{name}: cluster_inertia left empty: its rows have at most {n_clusters} distinct "
            f"values, so each is a centroid and the inertia 0 whatever the data; lower "
            f"--n_clusters")


def output_writers(options, session, results):
    """Each output path and the function that writes it there: the CSV, the per-sample table
    and the plot when asked for, and last the run record, which lists them all."""
    rows, shown = [r.row for r in results], options.shown
    output_csv = options.output_csv
    writers = {output_csv: lambda path: path.write_text(results_csv(rows), encoding="utf-8")}
    if options.per_sample_csv:
        import pandas as pd

        writers[Path(options.per_sample_csv)] = lambda path: write_table(
            path, pd.concat([r.frame for r in results], ignore_index=True),
            Path(options.per_sample_csv).suffix)
    if options.plot:
        from ..io.plots import plot_novelsum

        writers[output_csv.with_suffix(".png")] = lambda path: plot_novelsum(
            [row["Dataset Name"] for row in rows], [row[shown] for row in rows],
            [r.spread for r in results],
            column_setting(shown) + (f"; each beside {rows[0]['Dataset Name']}" if options.given_dir else ""), path)
    if options.report:
        writers[report_path(options.report[0])] = comparison_report_writer(
            options.report, [(r.row, r.path, r.own_novelty) for r in results],
            dataset_name(Path(options.given_dir)) if options.given_dir else None,
            options.embedding_field)
    summary = {r.row["Dataset Name"]: {"samples": len(r.spread), shown: r.row[shown]}
               for r in results}
    writers[output_csv.with_name(f"{output_csv.stem}_run.json")] = \
        lambda path: path.write_text(json.dumps(session.record.finish(
            session.device, list(writers), ranks=session.ranks.size, summary=summary),
            indent=2))
    return writers


def summary_text(options, session, rows, writers):
    """What rank 0 prints: the results table, the gains and metrics tables, what was written,
    and last one line at the grid point nearest the recommended setting, with the device."""
    lines = [results_table(rows, options.neighbors, options.density_powers,
                           options.distance_powers, options.typed_powers)]
    if options.given_dir:
        lines.append(gains_table(rows, options.shown))
    if options.metrics:
        lines.append(metrics_table(rows, metric_columns(options.metrics, options.neighbors)))
    lines.append(f"wrote {', '.join(str(p) for p in writers)}: {len(rows)} dataset(s)")
    point = nearest_grid_point(options.neighbors, options.density_powers,
                               options.distance_powers)
    lines.append(f"{summary_line(rows, options.shown, point, bool(options.given_dir))}; "
                 f"computed on {session.where(options.gpu_id)}")
    return "\n".join(lines)
