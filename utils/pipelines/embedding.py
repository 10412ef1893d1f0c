"""The embedding run (``embedding.py``): plan the shards, share them out over ranks, embed,
write."""

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..embedding.backends import close_backend, make_backend
from ..embedding.choice import Choice, choose, may_use_vllm
from ..embedding.models import resolve_model_path
from ..embedding.outputs import (
    output_path,
    shard_done,
    shard_source,
    source_change,
)
from ..errors import InputError, Interrupted
from ..io.atomic import write_text_atomic, write_together
from ..io.listing import TEXT_SUFFIXES, natural_key, shard_stem, shard_suffix
from ..io.provenance import source_path, text_sha256
from ..io.records import RunRecord
from ..io.text_items import item_text
from ..io.texts import read_text_shard
from ..runtime.device import nvidia_driver_present, pin_visible_gpu
from ..runtime.distributed import (
    RankError,
    launched_by_torchrun,
    mixed_devices_error,
    start_ranks,
    stop_ranks,
)
from ..runtime.reporting import Reporter
from ..runtime.store_ranks import start_store_ranks
from .session import Session

CHUNK_TEXTS = 512  # texts per backend call: the progress bar moves at least this often


# The run record sits in the output folder under a hidden name, so that the folder stays a
# clean folder of embedding shards for novelsum.py and novelselect.py (they skip hidden files).
RUN_RECORD = ".embedding_run.json"


@dataclass(frozen=True)
class EmbeddingOptions:
    """A run's options, as the command (``utils/cli/embed.py``) parsed them."""

    input_dirs: list
    model_path: str
    gpu_id: int | None
    max_length: int
    output_dir: Path
    backend: str
    batch_size: int
    output_format: str
    text_field: str | None
    overwrite: bool
    quiet: bool
    dtype: str = "auto"
    verbose: bool = False

    def parameters(self):
        """The options as the run record lists them."""
        return dict(input_dir=self.input_dirs, model_path=self.model_path,
                    max_length=self.max_length, backend=self.backend, dtype=self.dtype,
                    batch_size=self.batch_size, output_format=self.output_format,
                    text_field=self.text_field, overwrite=self.overwrite)


def run_embedding(options):
    """Embed every shard not yet embedded, each rank its share; return the text for stdout
    (None on ranks other than 0)."""
    report = Reporter(options.quiet)
    record = RunRecord("embedding", options.parameters())
    model_path, model_error = model_folder_or_error(options.model_path)
    ranks, device = join_ranks(options.gpu_id, model_error is None and may_use_vllm(
        options.backend, options.dtype, model_path, nvidia_driver_present()), report.notice)
    session = Session(report, ranks, device, record)
    plan, pending, choice = read_plan(options, session, model_path, model_error)
    check_one_view(ranks, pending, options.output_dir)
    skipped = len(plan) - len(pending)
    if skipped:
        report.notice(f"skipping {skipped} shard(s) already embedded in {options.output_dir} "
                      f"(--overwrite to redo them)")
    if not pending:
        stop_ranks(ranks)
        return f"nothing to do: all {len(plan)} shard(s) are embedded" if ranks.is_main else None
    report.notice(f"embedding with {choice.describe()} on {device}: {choice.reason}")
    if report.quiet or not options.verbose:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its weight-loading bar
        transformers_logging.set_verbosity_error()  # its load reports
    record.parameters.update(resolved_model_path=str(model_path),
                             resolved_backend=choice.backend, resolved_dtype=choice.dtype)
    shares = embed_shards(options, session, (choice, model_path), own_shards(pending, ranks),
                          (skipped, len(plan)))
    stop_ranks(ranks)
    if not ranks.is_main:
        return None
    return write_summary(record, shares, pending, skipped, device, ranks, options.output_dir,
                         f"with {choice.describe()} on {session.where(options.gpu_id)}")


def read_plan(options, session, model_path, model_error):
    """Every shard and its output, the shards still to embed with their texts, and the backend
    and dtype for them; a bad input stops every rank, and is reported once."""
    devices = session.ranks.gather_objects(session.device)
    with session.ranks.phase():
        if model_error is not None:
            raise model_error
        check_one_device_kind(devices, options.gpu_id)
        choice, refusal = choice_or_refusal(options, model_path, session.device)
        source = shard_source(model_path, choice.backend, choice.dtype, options.max_length,
                              options.text_field, None)  # the model's files read once
        plan, pending, stale = read_pending(
            options.input_dirs, options.output_dir, options.output_format, options.text_field,
            options.overwrite, session.record,
            lambda input_sha256: {**source, "input_sha256": input_sha256})
        if pending and refusal is not None:
            raise refusal
        check_one_choice(session.ranks.gather_objects(choice.describe()))
    if stale:
        target, change = stale[0]
        session.report.notice(f"embedding {len(stale)} shard(s) again, made before by another "
                              f"run ({target.name}: {change})")
    return plan, pending, choice


def choice_or_refusal(options, model_path, device):
    """``(Choice, None)``: the backend and dtype that will embed; or the ones asked for and why
    they cannot be used here (``InputError``, raised only if there is work to do)."""
    try:
        return choose(options.backend, options.dtype, model_path, device,
                      options.max_length), None
    except InputError as refusal:
        return Choice(options.backend, options.dtype, "as asked"), refusal


def check_one_choice(choices):
    """Refuse ranks that would embed with different backends or dtypes (nodes whose CPUs
    differ in bfloat16): one output folder would mix their vectors."""
    if any(choice != choices[0] for choice in choices):
        odd = next(rank for rank, choice in enumerate(choices) if choice != choices[0])
        raise InputError(f"rank {odd} would embed with {choices[odd]} and rank 0 with "
                         f"{choices[0]}; give --backend and --dtype so that all ranks agree")


def check_one_view(ranks, pending, output_dir):
    """Refuse ranks that see different shards left to do.

    Which shards are done is read from the file system by every rank: on several nodes a
    cached view could differ, and the ranks would then share out different lists.
    """
    views = ranks.gather_objects([[str(target), len(texts)]
                                  for _, target, texts, _source in pending])
    if any(view != views[0] for view in views):
        odd = next(rank for rank, view in enumerate(views) if view != views[0])
        raise RankError(f"{output_dir}: rank {odd} sees other shards already embedded than "
                        f"rank 0 ({len(views[odd])} vs {len(views[0])} left to do); the ranks "
                        f"need one view of --output_dir (a shared file system, up to date)")


def own_shards(pending, ranks):
    """This rank's share of the pending shards (``balanced_owners``)."""
    owners = balanced_owners([len(texts) for _, _, texts, _source in pending], ranks.size)
    return [shard for shard, owner in zip(pending, owners) if owner == ranks.rank]


def embed_shards(options, session, model, mine, progress):
    """Embed and write this rank's shards; every rank's device, shards, texts and seconds, in
    rank order. ``model``: (``Choice``, model folder); ``progress``: (shards skipped,
    planned), for the message of a Ctrl-C."""
    ranks, record = session.ranks, session.record
    texts_here = sum(len(texts) for _, _, texts, _source in mine)
    written, embedder = 0, None
    try:
        with ranks.phase(patient=True):  # a shard that cannot be written stops every rank
            if texts_here:  # a rank with no texts (more ranks than shards): no model
                choice, model_path = model
                with record.stage("loading model"):
                    embedder = make_backend(choice.backend, model_path, session.device,
                                            options.max_length, options.batch_size,
                                            choice.dtype, verbose=options.verbose,
                                            notify=session.report.notice)
            start = time.perf_counter()
            with session.report.bar("embedding", total=texts_here, unit="text") as bar:
                for _, target, texts, source in mine:
                    write_vectors(target, embed_in_chunks(embedder, texts, bar), source)
                    written += 1
            seconds = time.perf_counter() - start
            close_backend(embedder)
        return ranks.gather_objects({"device": session.device, "shards": written,
                                     "texts": texts_here, "seconds": seconds}, patient=True)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(written, *progress, options.output_dir,
                                              ranks)) from None


def input_root(path):
    """The folder an ``--input_dir`` is laid out from: itself, or a single shard's folder."""
    path = Path(path)
    return path.parent if path.is_file() else path


def single_shard(path):
    if shard_suffix(path) not in TEXT_SUFFIXES:
        raise InputError(f"--input_dir {path}: not a text shard ({', '.join(TEXT_SUFFIXES)})")
    return path


def text_shards(folder, output_dir=None):
    """Text shards under ``folder`` (subfolders included, the output folder left out: its
    vectors are no input), in natural order of their paths; a single shard file as given."""
    folder = Path(folder)
    if folder.is_file():
        return [single_shard(folder)]
    if not folder.is_dir():
        raise InputError(f"--input_dir {folder}: no such file or folder")
    outputs = Path(output_dir).resolve() if output_dir is not None else None
    if outputs == folder.resolve():
        outputs = None  # the same folder: its shards are the input (never written over)
    shards = [p for p in folder.rglob("*") if p.is_file() and shard_suffix(p) in TEXT_SUFFIXES
              and not any(part.startswith(".") for part in p.relative_to(folder).parts)
              and (outputs is None or outputs not in p.resolve().parents)]
    if not shards:
        raise InputError(f"--input_dir {folder}: no text shards ({', '.join(TEXT_SUFFIXES)}) "
                         f"in it")
    # natural order of the path's parts; ties (01.json, 1.json) broken by the plain path
    return sorted(shards, key=lambda p: ([natural_key(part) for part in
                                          p.relative_to(folder).parent.parts]
                                         + [natural_key(shard_stem(p))],
                                         str(p.relative_to(folder))))


def plan_shards(input_dirs, output_dir, output_format):
    """(input shard, output path) for every shard; several inputs get a subfolder each."""
    names = [Path(d).resolve().name if Path(d).is_dir() else shard_stem(d) for d in input_dirs]
    if len(set(names)) != len(names):
        raise InputError("--input_dir folders must have different names: their outputs go "
                         "to subfolders of --output_dir named after them")
    plan, sources = [], {}
    shards = {folder: text_shards(folder, output_dir) for folder in input_dirs}
    inputs = {shard.resolve(): shard for found in shards.values() for shard in found}
    for folder, name in zip(input_dirs, names):
        root = Path(output_dir) / name if len(input_dirs) > 1 else Path(output_dir)
        for shard in shards[folder]:
            target = output_path(shard, input_root(folder), root, output_format)
            if target.resolve() in inputs:  # never write over an input
                raise InputError(f"{target}: --output_dir {output_dir} would write {shard.name}'s "
                                 f"vectors over the input shard {inputs[target.resolve()]}; "
                                 f"write them elsewhere")
            if target in sources:  # 3.json and 3.jsonl would overwrite each other
                raise InputError(f"{sources[target]} and {shard} would both be embedded into "
                                 f"{target}; rename one of them")
            other = target.with_suffix(".npy" if target.suffix == ".json" else ".json")
            if other.exists():  # the loaders would refuse two shards of one name
                raise InputError(f"{other} already holds {shard.name}'s vectors in the other "
                                 f"format; use --output_format {other.suffix[1:]} to resume "
                                 f"that run, or remove it")
            sources[target] = shard
            plan.append((shard, target))
    return plan


def read_pending(input_dirs, output_dir, output_format, text_field, overwrite, record,
                 source_of):
    """The plan (every shard and its output), the shards still to embed with their texts and
    what will make their vectors (``source_of(input_sha256)``), and those embedded before by
    something else, with what changed: they are embedded again, never mixed in.

    Every item of every shard is checked here, before the model is loaded.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output_dir {output_dir}: is a file; give a folder")
    plan = plan_shards(input_dirs, output_dir, output_format)
    pending, inputs, stale = [], [], []
    with record.stage("reading"):
        for shard, target in plan:
            texts = shard_texts(shard, text_field)
            if not texts:  # else it is embedded into an empty shard, refused by every reader
                raise InputError(f"{shard}: holds no records; remove it from --input_dir or "
                                 f"fill it")
            inputs.append({"name": str(shard), "rows": len(texts),
                           "sha256": text_sha256(shard)})
            source = source_of(inputs[-1]["sha256"])
            done = not overwrite and shard_done(target, len(texts))
            change = source_change(target, source) if done else None
            if change is not None:
                stale.append((target, change))
            if not done or change is not None:
                pending.append((shard, target, texts, source))
    record.add_input("texts", {"shards": inputs})
    return plan, pending, stale


def balanced_owners(sizes, n_ranks):
    """The rank that embeds each shard: whole shards, balanced by size.

    Greedy, largest shard first (ties: the earlier shard), each to the rank with the fewest
    texts so far (ties: the lowest rank). Deterministic, so every rank computes the same
    assignment. ``sizes``: texts per shard, in plan order; returns one rank per shard.
    """
    loads = [0] * n_ranks
    owners = [0] * len(sizes)
    for shard in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        rank = min(range(n_ranks), key=lambda r: (loads[r], r))
        owners[shard] = rank
        loads[rank] += sizes[shard]
    return owners


def pin_rank_gpu(gpu_id, environ=None):
    """Make this process's GPU the only one it sees, before CUDA starts (vLLM runs on the
    first visible GPU). Returns ``(gpu_id, pinned)`` for ``start_store_ranks``.

    One process pins ``--gpu_id`` (``pin_visible_gpu``), as ever. Under ``torchrun`` local
    rank r pins GPU ``(gpu_id or 0) + r`` and then runs on ``cuda:0`` of its view; a GPU
    outside ``CUDA_VISIBLE_DEVICES`` is not pinned, and is refused by ``rank_device``.
    """
    environ = os.environ if environ is None else environ
    if not launched_by_torchrun(environ):
        return pin_visible_gpu(gpu_id, environ), False
    if gpu_id is not None and gpu_id < 0:
        return gpu_id, False
    own_gpu = (gpu_id or 0) + int(environ.get("LOCAL_RANK", 0))
    return gpu_id, pin_visible_gpu(own_gpu, environ) == 0


def check_one_device_kind(devices, gpu_id):
    """Refuse ranks of which some would run on GPUs and some on the CPU (a rank whose pinned
    GPU this node lacks sees none): ``devices`` holds each rank's device, in rank order."""
    error = mixed_devices_error(devices, gpu_id)
    if error is not None:
        raise error


def interrupt_once(signum, frame):
    """Ctrl-C under ``torchrun``: the terminal interrupts every rank, and torchrun then sends
    its own SIGINT (or SIGTERM); one stop is enough, so that the cleanup that follows (the
    shard in progress removed, the message) is not interrupted in its turn."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def model_folder_or_error(model_path):
    """``(folder, None)`` for a usable ``--model_path``, else ``(None, InputError)``: the
    folder decides the GPU pinning, which must come before the ranks meet, and the error is
    raised once they have (every rank stops with it, rank 0 reports it)."""
    try:
        return resolve_model_path(model_path), None
    except InputError as err:
        return None, err


def join_ranks(gpu_id, use_vllm, notify):
    """This process's ``(ranks, device)``: one process as ever, or a rank of ``torchrun`` on
    its own device, stopped once by Ctrl-C. With vLLM the ranks meet through torchrun's store
    and no process group exists (``start_store_ranks``): vLLM starts its own, a world of one
    on the one GPU pinned for the rank (docs/distributed.md, "vLLM under torchrun")."""
    if use_vllm:
        gpu_id, pinned = pin_rank_gpu(gpu_id)  # before CUDA starts
        ranks, device = start_store_ranks(gpu_id, notify, pinned)
    else:
        ranks, device = start_ranks(gpu_id, notify, host_only=True)
    if ranks.grouped:
        signal.signal(signal.SIGINT, interrupt_once)
        signal.signal(signal.SIGTERM, interrupt_once)
    return ranks, device


def shard_texts(shard, text_field=None):
    """Texts of one shard's records (docs/method.md section 1); a bad record is named by file
    and index."""
    return [item_text(item, f"{shard}: item {i}", text_field)
            for i, item in enumerate(read_text_shard(shard, text_field))]


def write_vectors(path, vectors, source):
    """A shard's vectors and, beside them, what made them (``source_path``), together."""
    def vectors_to(tmp):
        if path.suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, vectors.astype(np.float32))
        else:
            tmp.write_text(json.dumps(vectors.tolist()))

    write_together({path: vectors_to,
                    source_path(path): lambda tmp: tmp.write_text(json.dumps(source))})


def embed_in_chunks(embedder, texts, bar):
    """One shard's vectors, ``CHUNK_TEXTS`` texts per backend call."""
    parts = []
    for i in range(0, len(texts), CHUNK_TEXTS):
        parts.append(embedder.embed(texts[i:i + CHUNK_TEXTS]))
        bar.update(len(parts[-1]))
    width = parts[0].shape[1] if parts else 0
    return np.concatenate(parts) if parts else np.zeros((0, width))


def interrupted_message(written, skipped, planned, output_dir, ranks=None):
    """What a Ctrl-C leaves: the finished shards stay (a rerun resumes after them). Under
    ``torchrun`` rank 0 speaks for ranks whose progress it does not know."""
    if ranks is not None and ranks.grouped:
        return (f"stopped cleanly; each of the {ranks.size} ranks kept the shards it had "
                f"finished in {output_dir} ({skipped} of {planned} were there before); the "
                f"shards in progress were not written. Run the same command again to embed "
                f"the rest.")
    kept = written + skipped
    if not kept:
        return "stopped cleanly, no output was written."
    return (f"stopped cleanly; {kept} of {planned} shard(s) are embedded in {output_dir} "
            f"({written} by this run) and kept; the shard in progress was not written. Run the "
            f"same command again to embed the rest.")


def write_summary(record, shares, pending, skipped, device, ranks, output_dir, used):
    """Rank 0's end of a run: write the run record (every rank's shards counted); return the
    summary line. ``shares``: each rank's device, shards, texts and seconds, in rank order."""
    total = sum(share["texts"] for share in shares)
    embedded = sum(share["shards"] for share in shares)
    seconds = max(share["seconds"] for share in shares)  # the slowest rank ends the run
    record.stages["embedding"] = seconds
    summary = {"texts": total, "shards_embedded": embedded, "shards_skipped": skipped,
               "texts_per_second": round(total / seconds, 1)}
    if ranks.grouped:
        summary["per_rank"] = [{**share, "seconds": round(share["seconds"], 3)}
                               for share in shares]
    write_text_atomic(output_dir / RUN_RECORD, json.dumps(record.finish(
        device, [target for _, target, _, _ in pending], ranks=ranks.size, summary=summary),
        indent=2))
    return (f"embedded {total} texts in {embedded} shard(s) {used}: {seconds:.1f} s, "
            f"{total / seconds:.1f} texts/s; output in {output_dir}")
