"""The ``novelsum-embed`` command (``embedding.py``): its options, then one pipeline call."""

import os

# Models are local folders: never let transformers wait on a hub it cannot reach.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import time
from pathlib import Path

import click

from ..embedding.backends import BACKENDS, choose_backend, make_backend, may_use_vllm
from ..io.records import RunRecord
from ..pipelines.embedding import (
    balanced_owners,
    check_one_device_kind,
    embed_texts,
    interrupted_message,
    join_ranks,
    model_folder_or_error,
    read_pending,
    write_summary,
    write_vectors,
)
from ..runtime.device import nvidia_driver_present
from ..runtime.distributed import RankError, stop_ranks
from .errors import Interrupted, clean_errors
from .options import PATH_SEPARATOR, ReferenceStyleCommand, gpu_option, quiet_option
from .reporting import Reporter, device_summary


@click.command(cls=ReferenceStyleCommand, path_options=("--input_dir", "--input-dir"))
@click.option("--input_dir", "--input-dir", required=True,
              help="One or more folders of text shards (.json, .jsonl or .parquet; strings, "
                   "ShareGPT, OpenAI chat or Alpaca records).")
@click.option("--model_path", "--model-path", required=True,
              help="Model folder, or a Hugging Face model id already in the local cache: a causal "
                   "LM (LLaMA, Qwen...) or a sentence-transformers model.")
@gpu_option("GPU for the model (-1: CPU); falls back to CPU with a notice.")
@click.option("--max_length", "--max-length", type=click.IntRange(min=1), default=256,
              show_default=True, help="Tokens kept per text, special tokens included.")
@click.option("--output_dir", "--output-dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the vectors: mirrors the input tree, one shard per input shard.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: vLLM for a causal LM on a GPU, sentence-transformers for its folders, "
                   "else transformers.")
@click.option("--batch_size", "--batch-size", type=click.IntRange(min=1), default=32,
              show_default=True, help="Texts per forward pass (transformers, "
                                      "sentence-transformers).")
@click.option("--output_format", "--output-format", type=click.Choice(["json", "npy"]),
              default="json", show_default=True,
              help="json as the reference writes; npy is ~10x smaller and faster to load.")
@click.option("--text_field", "--text-field", default=None,
              help="The field of each record that holds the text (records with several "
                   "fields: Parquet columns, JSON objects).")
@click.option("--overwrite", is_flag=True, help="Embed shards again even if their output exists.")
@quiet_option
@clean_errors
def main(input_dir, model_path, gpu_id, max_length, output_dir, backend, batch_size,
         output_format, text_field, overwrite, quiet):
    """Embed every item of the input shards; a rerun skips shards already done.

    Example:

    \b
        python embedding.py --input_dir examples/pool/text --model_path MODEL_DIR \\
            --output_dir pool_embeddings --output_format npy
    """
    report = Reporter(quiet)
    record = RunRecord("embedding", dict(
        input_dir=input_dir.split(PATH_SEPARATOR), model_path=model_path,
        max_length=max_length, backend=backend, batch_size=batch_size,
        output_format=output_format, text_field=text_field, overwrite=overwrite))
    model_path, model_error = model_folder_or_error(model_path)
    ranks, device = join_ranks(gpu_id, model_error is None and may_use_vllm(
        backend, model_path, nvidia_driver_present()), report.notice)
    devices = ranks.gather_objects(device)
    with ranks.phase():  # a bad input stops every rank, and is reported once
        if model_error is not None:
            raise model_error
        check_one_device_kind(devices, gpu_id)
        plan, pending = read_pending(input_dir.split(PATH_SEPARATOR), output_dir, output_format,
                                     text_field, overwrite, record)
        if pending:
            backend = choose_backend(backend, model_path, device)
    # Which shards are done is read from the file system by every rank: on several nodes a
    # cached view could differ, and the ranks would then share out different lists.
    views = ranks.gather_objects([[str(target), len(texts)] for _, target, texts in pending])
    if any(view != views[0] for view in views):
        odd = next(rank for rank, view in enumerate(views) if view != views[0])
        raise RankError(f"{output_dir}: rank {odd} sees other shards already embedded than "
                        f"rank 0 ({len(views[odd])} vs {len(views[0])} left to do); the ranks "
                        f"need one view of --output_dir (a shared file system, up to date)")
    skipped = len(plan) - len(pending)
    if skipped:
        report.notice(f"skipping {skipped} shard(s) already embedded in {output_dir} "
                      f"(--overwrite to redo them)")
    if not pending:
        if ranks.is_main:
            click.echo(f"nothing to do: all {len(plan)} shard(s) are embedded")
        stop_ranks(ranks)
        return
    report.notice(f"embedding with {backend} on {device}")
    owners = balanced_owners([len(texts) for _, _, texts in pending], ranks.size)
    mine = [shard for shard, owner in zip(pending, owners) if owner == ranks.rank]
    if report.quiet:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its weight-loading bar
    record.parameters.update(resolved_model_path=str(model_path), resolved_backend=backend)
    texts_here = sum(len(texts) for _, _, texts in mine)
    written, embedder = 0, None
    try:
        with ranks.phase(patient=True):  # a shard that cannot be written stops every rank
            if texts_here:  # a rank with no texts (more ranks than shards): no model
                with record.stage("loading model"):
                    embedder = make_backend(backend, model_path, device, max_length, batch_size)
            start = time.perf_counter()
            with report.bar("embedding", total=texts_here, unit="text") as bar:
                for _, target, texts in mine:
                    write_vectors(target, embed_texts(embedder, texts, bar))
                    written += 1
            seconds = time.perf_counter() - start
        shares = ranks.gather_objects({"device": device, "shards": written,
                                       "texts": texts_here, "seconds": seconds}, patient=True)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(written, skipped, len(plan), output_dir,
                                              ranks)) from None
    stop_ranks(ranks)
    if ranks.is_main:
        write_summary(record, shares, pending, skipped, device, ranks, output_dir,
                      f"with {backend} on {device_summary(device, gpu_id, ranks)}")
