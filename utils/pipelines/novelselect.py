"""The ``novelselect`` run: load the pool, its texts and reference, select (NovelSelect or a
baseline), write the outputs."""

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.formats import read_npy
from ..io.hashing import sha256_of_file
from ..io.plots import early_level
from ..io.outputs import check_output_plan, check_previous_run, run_differences
from ..io.records import RunRecord, text_inputs, vector_inputs
from ..io.texts import check_pairing, load_items
from ..io.vectors import load_vectors
from ..runtime.device import peak_memory_note
from ..runtime.distributed import start_ranks, stop_ranks
from ..runtime.reporting import Reporter
from ..selection import baselines
from ..selection.greedy import greedy_selection
from ..selection.inputs import (
    check_pick_count,
    check_quality_scores,
    check_resume_picks,
)
from .novelselect_outputs import (
    Checkpoints,
    check_checkpoint_parameters,
    check_output_folder,
    checkpoint_picks,
    checkpoint_record_path,
    discard_checkpoint,
    made_by,
    output_stem,
    write_baseline,
    write_selection,
)
from .novelsum_tables import RECOMMENDED, setting_text
from .report_outputs import planned_report
from .session import Session


@dataclass(frozen=True, kw_only=True)
class NovelselectOptions:
    """A run's options, checked by the command (``utils/cli/novelselect.py``), given by name:
    twenty fields in a row are too easy to shift by one."""

    text_dir: str
    figure_dir: str
    output_dir: Path
    k: int
    gpu_id: int | None
    neighbors: int
    density_power: float
    distance_power: float
    seed: int
    dense_ref_dir: str | None
    quality_scores: str | None
    embedding_field: str | None
    plot: bool
    method: str
    max_similarity: float
    resume_from: Path | None
    checkpoint_every: int | None
    quiet: bool
    overwrite: bool = False
    given_dir: str | None = None
    allow_mixed_embeddings: bool = False
    report: object = None  # ReportSettings of --report, or None

    def parameters(self):
        """The options as the run record lists them."""
        return dict(
            text_dir=self.text_dir, figure_dir=self.figure_dir, k=self.k,
            neighbors=self.neighbors, density_power=self.density_power,
            distance_power=self.distance_power, seed=self.seed,
            dense_ref_dir=self.dense_ref_dir, quality_scores=self.quality_scores,
            embedding_field=self.embedding_field, method=self.method,
            max_similarity=self.max_similarity,
            resume_from=self.resume_from and str(self.resume_from),
            checkpoint_every=self.checkpoint_every, given_dir=self.given_dir,
            allow_mixed_embeddings=self.allow_mixed_embeddings)


@dataclass
class Inputs:
    """What a run selects from: the pool (this rank's block under torchrun), its texts (rank
    0's only), its size, the quality scores, the picks to resume from, the density reference,
    and the set the user already has (whole on every rank), or None."""

    pool: object
    items: list
    n: int
    quality: object
    resume: list
    reference: object
    given: object = None


def run_novelselect(options):
    """Select ``options.k`` samples of the pool and write them; return the text for stdout
    (None on ranks other than 0)."""
    report = Reporter(options.quiet)
    ranks, device = start_ranks(options.gpu_id, report.notice)
    session = Session(report, ranks, device, RunRecord("novelselect", options.parameters()))
    with ranks.phase():
        resume = read_resume_picks(options.resume_from) if options.resume_from else None
        check_output_folder(options.output_dir)  # before the long work, not at its end
        plan_outputs(options)
    differences = resume_differences(options) if options.resume_from else []
    if differences:
        report.notice(f"--resume_from {options.resume_from}: made by a run with other "
                      f"parameters ({'; '.join(differences)}); its picks are continued as given")
    session.check_embedded_alike(embedding_sets(options), options.allow_mixed_embeddings)
    inputs = load_inputs(options, session, resume)
    if options.method != "novelselect":
        return select_baseline(options, session, inputs)
    if resume is None:
        inputs = resumed_from_checkpoint(options, session, inputs)
    return select_novel(options, session, inputs)


def checkpoint_of(options):
    """Where a NovelSelect run keeps its checkpoint."""
    stem = output_stem("novelselect", options.k, options.density_power, options.distance_power)
    return options.output_dir / f"{stem}_checkpoint.json"


def resumed_from_checkpoint(options, session, inputs):
    """``inputs`` resumed from the checkpoint that an interrupted run of this same command left
    in --output_dir, with a notice; as they are when there is none. Rank 0 reads it and
    tells the others."""
    path, ranks = checkpoint_of(options), session.ranks
    if options.overwrite and ranks.is_main:  # starting over
        discard_checkpoint(path)
    with ranks.phase(patient=True):
        picks = checkpoint_picks(path, made_by(options.parameters(), session.record.inputs),
                                 options.overwrite) if ranks.is_main else None
    picks = ranks.gather_objects(picks)[0]
    if picks is None:
        return inputs
    with ranks.phase():
        picks = check_resume_picks(picks, inputs.n, options.k, path)
    session.report.notice(f"resuming from {path}: its {len(picks)} picks of {options.k} were made "
                          f"by this same command, stopped before it finished (--overwrite starts "
                          f"over)")
    return replace(inputs, resume=picks)


def embedding_sets(options):
    """The embedding sets the run reads together, each named by its option (None: unused)."""
    uses_reference = options.density_power != 0 and options.method == "novelselect"
    return [("--figure_dir", options.figure_dir),
            ("--dense_ref_dir", options.dense_ref_dir if uses_reference else None),
            ("--given_dir", options.given_dir if options.method != "random" else None)]


def plan_outputs(options):
    """Before any work: no output on an input or inside an input folder, none replacing
    another run's. The checkpoint may be the file resumed from: it is read first."""
    stem = output_stem(options.method, options.k, options.density_power, options.distance_power)
    names = [f"{stem}.json", f"{stem}_indices.json", f"{stem}_run.json"]
    if options.method == "novelselect":
        names += [f"{stem}_picks.csv"] + ([f"{stem}_novelty.png"] if options.plot else [])
    outputs = [("--output_dir", options.output_dir / name) for name in names]
    outputs += planned_report(options.report)
    check_output_plan(outputs, [("--text_dir", options.text_dir),
                                ("--figure_dir", options.figure_dir),
                                ("--dense_ref_dir", options.dense_ref_dir),
                                ("--given_dir", options.given_dir),
                                ("--quality_scores", options.quality_scores),
                                ("--resume_from", options.resume_from)])
    check_previous_run(options.output_dir / f"{stem}_run.json", [p for _w, p in outputs],
                       options.parameters(), options.overwrite)
    checkpoint = checkpoint_of(options)
    if options.method == "novelselect" and (options.resume_from is None or Path(
            options.resume_from).resolve() != checkpoint.resolve()):
        check_checkpoint_parameters(checkpoint, options.parameters(), options.overwrite)


def resume_differences(options):
    """How the run that wrote ``--resume_from`` (its record beside it: ``{stem}_run.json`` for
    ``{stem}_indices.json`` or ``{stem}_checkpoint.json``) differs from this one, if at all."""
    path = Path(options.resume_from)
    stem = path.stem.removesuffix("_indices").removesuffix("_checkpoint")
    record = path.with_name(f"{stem}_run.json")
    if not record.exists():  # a checkpoint: the record of its run is beside it
        record = checkpoint_record_path(path)
    return run_differences(record, options.parameters(), ignore={"k"}) or []


def read_quality_scores(path, n):
    """Quality scores from a JSON list or a 1-D ``.npy`` file, checked against the pool size."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            scores = read_npy(path)
        else:
            scores = json.loads(path.read_text())
            if not isinstance(scores, list) or any(
                    isinstance(s, bool) or not isinstance(s, (int, float)) for s in scores):
                raise InputError(f"{path}: expected a JSON list of numbers")
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    except ValueError as err:
        raise InputError(f"{path}: not a JSON list or .npy array of numbers ({err})") from None
    return check_quality_scores(scores, n, path)


def read_resume_picks(path):
    """The picks to continue from: the JSON value of ``path`` (the selection checks that it is
    a list of distinct pool indices, at most --k of them)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise InputError(f"{path}: not JSON ({err})") from None


def load_inputs(options, session, resume):
    """Load the pool, its texts and the reference, and check the other inputs against the
    pool's size.

    Under torchrun each rank loads its block of the pool's rows (and of the reference's);
    rank 0 alone reads the texts, which only it writes out. Each phase ends with the ranks
    agreeing on any fault, in the order one process would meet them.
    """
    report, ranks, record = session.report, session.ranks, session.record
    with record.stage("loading"):
        with ranks.phase():
            pool = session.load_embeddings(options.figure_dir,
                                           report.progress("loading embeddings", "shard"),
                                           embedding_field=options.embedding_field)
        with ranks.phase(patient=True):  # rank 0 alone reads the texts
            items, text_paths, counts = load_texts(options, session, pool)
            n = pool.offsets[-1]
            check_pick_count(options.k, n)
            quality = read_quality_scores(options.quality_scores, n) \
                if options.quality_scores else None
            if resume is not None:
                resume = check_resume_picks(resume, n, options.k, options.resume_from)
        reference = load_reference(options, session, pool)
        given = load_given(options, session, pool)
    record.add_input("embeddings", vector_inputs(pool, ranks))
    if ranks.is_main:
        record.add_input("texts", text_inputs(options.text_dir, text_paths, counts))
        if options.quality_scores:
            record.add_input("quality_scores", {"path": str(options.quality_scores),
                                                "sha256": sha256_of_file(options.quality_scores)})
        if given is not None:
            record.add_input("given", vector_inputs(given))
    return Inputs(pool, items, n, quality, resume, reference, given)


def load_texts(options, session, pool):
    """The pool's items, text shards and their counts, paired with the embedding shards; on
    rank 0 alone (``None`` each elsewhere)."""
    if not session.ranks.is_main:
        return None, None, None
    items, text_paths, counts = load_items(
        options.text_dir, session.report.progress("loading texts", "shard"))
    check_pairing(text_paths, counts, pool, text_source=options.text_dir)
    return items, text_paths, counts


def load_reference(options, session, pool):
    """The density reference of --dense_ref_dir, when NovelSelect's density power uses it."""
    if not options.dense_ref_dir:
        return None
    if options.density_power == 0 or options.method != "novelselect":
        session.report.notice("--dense_ref_dir is not used with --density_power 0")
        return None
    with session.ranks.phase():
        reference = session.load_embeddings(
            options.dense_ref_dir, session.report.progress("loading reference", "shard"),
            allow_zero=True, embedding_field=options.embedding_field)
        if reference.vectors.shape[1] != pool.vectors.shape[1]:
            raise InputError(f"{options.dense_ref_dir}: vectors have "
                             f"{reference.vectors.shape[1]} dimensions but the pool "
                             f"has {pool.vectors.shape[1]}")
    session.record.add_input("reference", vector_inputs(reference, session.ranks))
    return reference


def load_given(options, session, pool):
    """The vectors of --given_dir (docs/method.md section 10), whole on every rank, or None."""
    if not options.given_dir:
        return None
    if options.method == "random":
        session.report.notice("--given_dir is not used by --method random: its picks are drawn "
                              "at random, whatever the set already holds")
        return None
    with session.ranks.phase():
        given = load_vectors(options.given_dir,
                             session.report.progress("loading the given set", "shard"),
                             embedding_field=options.embedding_field)
        if given.vectors.shape[1] != pool.vectors.shape[1]:
            raise InputError(f"{options.given_dir}: vectors have {given.vectors.shape[1]} "
                             f"dimensions but the pool has {pool.vectors.shape[1]}")
    return given


def baseline_picks(method, vectors, k, seed, quality, max_similarity, device, report,
                   given=None):
    """The picks of a baseline selection method (``utils/selection/baselines.py``), in pick
    order; ``given``: vectors of a set already held (kcenter's first centres, repr_filter's
    first kept rows)."""
    from ..numerics.rows import unit_rows
    from ..selection.selection_engine import first_pick

    n = len(vectors)
    progress = report.progress(f"selecting ({method})", "step")
    given_unit = None if given is None else unit_rows(given)
    if method == "random":
        return baselines.random_selection(n, k, seed)
    if method == "kcenter":
        first = first_pick(n, seed) if given is None else None
        return baselines.kcenter_selection(unit_rows(vectors), k, first, device,
                                           progress=progress, given=given_unit)
    if method == "kmeans":
        return baselines.kmeans_selection(vectors, k, seed, device, progress=progress)
    return baselines.repr_filter_selection(unit_rows(vectors), k, max_similarity, quality, seed,
                                           device, progress=progress, given=given_unit)


def select_baseline(options, session, inputs):
    """A baseline's selection, written; the summary line."""
    with session.record.stage("selection"):
        picks = baseline_picks(options.method, inputs.pool.vectors, options.k, options.seed,
                               inputs.quality, options.max_similarity, session.device,
                               session.report,
                               None if inputs.given is None else inputs.given.vectors)
    names = write_baseline(options, session, inputs, picks)
    stop_ranks(session.ranks)
    return (f"picked {options.k} of {inputs.n} samples{given_note(inputs)} with "
            f"{options.method} on {session.where(options.gpu_id)}; wrote "
            f"{options.output_dir / names[0]} and {', '.join(names[1:])}")


def select_novel(options, session, inputs):
    """NovelSelect, checkpointed, written by rank 0; its summary line (None on other ranks).
    A Ctrl-C after a checkpoint says how to resume from it."""
    ranks = session.ranks
    checkpoints = Checkpoints(checkpoint_of(options) if ranks.is_main else None,
                              options.checkpoint_every,
                              len(inputs.resume) if inputs.resume is not None else 0, options.k,
                              made_by(options.parameters(), session.record.inputs))
    try:
        selection = run_selection(options, session, inputs, checkpoints)
        names = None
        with ranks.phase(patient=True):  # rank 0 writes; the others wait to hear that it did
            if ranks.is_main:
                names = write_selection(options, session, inputs, selection,
                                        checkpoints.resumed)
    except KeyboardInterrupt:
        if checkpoints.saved:
            raise checkpoints.interrupted() from None
        raise
    checkpoints.finish()
    stop_ranks(ranks)
    if not ranks.is_main:
        return None
    return (f"wrote {options.output_dir / names[0]} and {', '.join(names[1:])}"
            f"{peak_memory_note(session.device)}\n"
            f"picked {options.k} of {inputs.n} samples{given_note(inputs)} at "
            f"{novelselect_setting(options)}{novelty_note(selection.novelty)}; on "
            f"{session.where(options.gpu_id)}")


def novelselect_setting(options):
    """The run's setting, and whether it is the paper's recommended one."""
    point = (options.neighbors, options.density_power, options.distance_power)
    text = setting_text(point).replace("k=", "neighbors=")
    if point == RECOMMENDED:
        return f"{text} (the recommended setting)"
    return f"{text} (recommended: {setting_text(RECOMMENDED).replace('k=', 'neighbors=')})"


def novelty_note(novelty):
    """The last pick's novelty beside the early level (the first 10% of picks), which says
    whether the last picks still add new samples."""
    last, level = float(novelty[-1]), early_level(novelty)
    if not (np.isfinite(last) and np.isfinite(level) and level > 0):
        return ""
    return (f": the last pick's novelty {last:.4g} is {last / level:.0%} of the first "
            f"picks' ({level:.4g})")


def given_note(inputs):
    """How the summary line names a given set."""
    return "" if inputs.given is None else f" beside the {len(inputs.given.vectors)} given"


def run_selection(options, session, inputs, checkpoints):
    """NovelSelect on the loaded pool, with a progress bar and ``checkpoints``."""
    report = session.report
    with session.record.stage("selection"), \
            report.bar("selecting", total=options.k, unit="pick") as bar:
        def on_pick(index, novelty):
            if np.isfinite(novelty):
                bar.set_postfix_str(f"novelty {novelty:.4g}", refresh=False)
            bar.update(1)
            checkpoints(index)

        return greedy_selection(
            inputs.pool.vectors, options.k, options.neighbors, options.density_power,
            options.distance_power, options.seed,
            reference=None if inputs.reference is None else inputs.reference.vectors,
            quality=inputs.quality, device=session.device, notify=report.notice,
            on_pick=on_pick, density_progress=report.progress("density", "chunk"),
            source=str(options.dense_ref_dir or options.figure_dir),
            resume_from=inputs.resume, resume_source=str(options.resume_from),
            given=None if inputs.given is None else inputs.given.vectors,
            given_source=str(options.given_dir),
            given_progress=report.progress("density of the given set", "chunk"),
            ranks=session.ranks)
