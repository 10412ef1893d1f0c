#!/usr/bin/env python3
"""Embed text shards: one vector per item, one output shard per input shard."""

import os

# Models are local folders: never let transformers wait on a hub it cannot reach.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import time
from pathlib import Path

import click
import numpy as np

from cli_common import (PATH_SEPARATOR, Interrupted, Reporter, ReferenceStyleCommand,
                        clean_errors, device_summary, gpu_option, quiet_option)
from utils.atomic import atomic_path, write_text_atomic
from utils.device import nvidia_driver_present, pin_visible_gpu, resolve_device
from utils.embedders import (BACKENDS, choose_backend, make_backend, may_use_vllm, output_path,
                             resolve_model_path, shard_done)
from utils.errors import InputError
from utils.records import RunRecord, sha256_of_file
from utils.shards import TEXT_SUFFIXES, natural_key, read_text_shard
from utils.text_items import item_text

CHUNK_TEXTS = 512  # texts per backend call: the progress bar moves at least this often
# The run record sits in the output folder under a hidden name, so that the folder stays a
# clean folder of embedding shards for novelsum.py and novelselect.py (they skip hidden files).
RUN_RECORD = ".embedding_run.json"


def text_shards(folder):
    """Text shards under ``folder`` (subfolders included), in natural order of their paths."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--input_dir {folder}: no such folder")
    shards = [p for p in folder.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
              and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if not shards:
        raise InputError(f"--input_dir {folder}: no text shards (.json, .jsonl or .parquet) in it")
    # natural order of the path's parts; ties (01.json, 1.json) broken by the plain path
    return sorted(shards, key=lambda p: ([natural_key(part) for part in
                                          p.relative_to(folder).with_suffix("").parts],
                                         str(p.relative_to(folder))))


def plan_shards(input_dirs, output_dir, output_format):
    """(input shard, output path) for every shard; several inputs get a subfolder each."""
    names = [Path(d).resolve().name for d in input_dirs]
    if len(set(names)) != len(names):
        raise InputError("--input_dir folders must have different names: their outputs go "
                         "to subfolders of --output_dir named after them")
    plan, sources = [], {}
    for folder, name in zip(input_dirs, names):
        root = Path(output_dir) / name if len(input_dirs) > 1 else Path(output_dir)
        for shard in text_shards(folder):
            target = output_path(shard, folder, root, output_format)
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


def shard_texts(shard, text_field=None):
    """Texts of one shard's records (docs/method.md section 1); a bad record is named by file
    and index."""
    return [item_text(item, f"{shard}: item {i}", text_field)
            for i, item in enumerate(read_text_shard(shard, text_field))]


def write_vectors(path, vectors):
    with atomic_path(path) as tmp:
        if path.suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, vectors.astype(np.float32))
        else:
            tmp.write_text(json.dumps(vectors.tolist()))


def interrupted_message(written, skipped, planned, output_dir):
    """What a Ctrl-C leaves: the finished shards stay (a rerun resumes after them)."""
    kept = written + skipped
    if not kept:
        return "stopped cleanly, no output was written."
    return (f"stopped cleanly; {kept} of {planned} shard(s) are embedded in {output_dir} "
            f"({written} by this run) and kept; the shard in progress was not written. Run the "
            f"same command again to embed the rest.")


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
    model_path = resolve_model_path(model_path)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output_dir {output_dir}: is a file; give a folder")
    plan = plan_shards(input_dir.split(PATH_SEPARATOR), output_dir, output_format)
    pending, inputs = [], []
    with record.stage("reading"):
        for shard, target in plan:  # every item is checked before the model is loaded
            texts = shard_texts(shard, text_field)
            inputs.append({"name": str(shard), "rows": len(texts),
                           "sha256": sha256_of_file(shard)})
            if overwrite or not shard_done(target, len(texts)):
                pending.append((shard, target, texts))
    record.add_input("texts", {"shards": inputs})
    skipped = len(plan) - len(pending)
    if skipped:
        report.notice(f"skipping {skipped} shard(s) already embedded in {output_dir} "
                      f"(--overwrite to redo them)")
    if not pending:
        click.echo(f"nothing to do: all {len(plan)} shard(s) are embedded")
        return
    asked_gpu = gpu_id
    if may_use_vllm(backend, model_path, nvidia_driver_present()):
        gpu_id = pin_visible_gpu(gpu_id)  # before CUDA starts: vLLM takes the first visible GPU
    device = resolve_device(gpu_id, report.notice)
    backend = choose_backend(backend, model_path, device)
    report.notice(f"embedding with {backend} on {device}")
    if quiet:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its weight-loading bar
    with record.stage("loading model"):
        embedder = make_backend(backend, model_path, device, max_length, batch_size)
    record.parameters.update(resolved_model_path=str(model_path), resolved_backend=backend)
    total = sum(len(texts) for _, _, texts in pending)
    start = time.perf_counter()
    written = 0
    try:
        with report.bar("embedding", total=total, unit="text") as bar:
            for _, target, texts in pending:
                parts = []
                for i in range(0, len(texts), CHUNK_TEXTS):
                    parts.append(embedder.embed(texts[i:i + CHUNK_TEXTS]))
                    bar.update(len(parts[-1]))
                width = parts[0].shape[1] if parts else 0
                write_vectors(target, np.concatenate(parts) if parts else np.zeros((0, width)))
                written += 1
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(written, skipped, len(plan), output_dir)) from None
    seconds = time.perf_counter() - start
    record.stages["embedding"] = seconds
    write_text_atomic(output_dir / RUN_RECORD, json.dumps(record.finish(
        device, [target for _, target, _ in pending],
        summary={"texts": total, "shards_embedded": len(pending), "shards_skipped": skipped,
                 "texts_per_second": round(total / seconds, 1)}), indent=2))
    click.echo(f"embedded {total} texts in {len(pending)} shard(s) with {backend} on "
               f"{device_summary(device, asked_gpu)}: {seconds:.1f} s, "
               f"{total / seconds:.1f} texts/s; output in {output_dir}")


if __name__ == "__main__":
    main()
