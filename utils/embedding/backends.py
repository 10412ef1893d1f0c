"""Embedding backends (sentence-transformers, transformers, vLLM) and the choice among them.

Records become text (``utils.io.text_items``, docs/method.md section 1), are cut to
``max_length`` tokens by the model's own tokenizer (special tokens included, the head kept), and
are embedded by one of three backends:

- ``sentence-transformers``: a sentence-transformers folder, with the model's own pooling;
- ``transformers``: a causal LM; the final layer's hidden state at the last token, L2-normalised;
- ``vllm``: the same vectors from vLLM's embedding runner, on a GPU.

The causal-LM backends are given the same token ids, so CPU and GPU users get comparable
vectors. torch, transformers, sentence-transformers and vLLM are imported only when used.
"""

import json
from pathlib import Path

import numpy as np

from ..errors import InputError, setting
from ..numerics.rows import unit_rows
from ..runtime.store_ranks import torchrun_hidden

BACKENDS = ("auto", "vllm", "transformers", "sentence-transformers")


def read_model_config(model_path):
    config = Path(model_path) / "config.json"
    try:
        return json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def is_sentence_transformers_folder(model_path):
    return (Path(model_path) / "modules.json").is_file()


def is_causal_lm(model_path):
    architectures = read_model_config(model_path).get("architectures") or []
    return any(name.endswith("ForCausalLM") for name in architectures)


def cached_model_folder(model_id):
    """The local folder of a Hugging Face model id in this machine's cache, or None.

    Nothing is downloaded: the cache is where ``huggingface-cli download`` or an earlier online
    run put the model (``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``).
    """
    import os

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(model_id, local_files_only=True,
                                 cache_dir=os.environ.get("HF_HUB_CACHE"))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, OSError):
        return None


def resolve_model_path(model_path):
    """A model folder for ``--model_path``: a local folder as given, or a Hugging Face model id
    (``org/name``) found in the local cache. Checked to hold a model."""
    path = Path(model_path)
    if not path.exists():
        if str(model_path).startswith((".", "/", "~")) or str(model_path).count("/") > 1:
            raise InputError(f"{setting('model_path', model_path)}: no such model folder")
        cached = cached_model_folder(str(model_path))
        if cached is None:
            raise InputError(f"{setting('model_path', model_path)}: no such folder, and no "
                             f"model of that name in the local Hugging Face cache (models are "
                             f"never downloaded here); download it with `hf download "
                             f"{model_path}` where there is network, or give a model folder")
        path = Path(cached)
    if not path.is_dir():
        raise InputError(f"{setting('model_path', model_path)}: no such model folder")
    if not (path / "config.json").is_file() and not is_sentence_transformers_folder(path):
        raise InputError(f"{setting('model_path', model_path)}: not a model folder (no "
                         f"config.json)")
    return path


def vllm_installed():
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def may_use_vllm(backend, model_path, gpu_present):
    """Whether ``backend`` will be vLLM once the device is known (so that GPU choice must be
    made through ``CUDA_VISIBLE_DEVICES`` before CUDA starts)."""
    if backend == "vllm":
        return True
    return backend == "auto" and gpu_present and is_causal_lm(model_path) and vllm_installed()


def choose_backend(backend, model_path, device):
    """Resolve ``auto`` and check the choice, before any model is loaded.

    ``auto``: vLLM for a causal LM with vLLM and a GPU, sentence-transformers for a
    sentence-transformers folder, transformers otherwise.
    """
    if backend == "auto":
        if is_causal_lm(model_path) and device != "cpu" and vllm_installed():
            return "vllm"
        if is_sentence_transformers_folder(model_path):
            return "sentence-transformers"
        return "transformers"
    if backend == "vllm":
        if device == "cpu":
            works = ("sentence-transformers" if is_sentence_transformers_folder(model_path)
                     else "transformers (the same vectors)")
            raise InputError(f"{setting('backend', 'vllm')} needs a GPU and none is available; "
                             f"on the CPU use {setting('backend', works)}")
        if not vllm_installed():
            raise InputError(f"{setting('backend', 'vllm')}: vLLM is not installed "
                             "(python -m pip install -r requirements-gpu.txt)")
    if backend == "transformers" and not is_causal_lm(model_path):
        if is_sentence_transformers_folder(model_path):
            raise InputError(f"{setting('backend', 'transformers')}: {model_path} is a "
                             f"sentence-transformers model; use "
                             f"{setting('backend', 'sentence-transformers')} (or auto)")
        raise InputError(f"{setting('backend', 'transformers')}: {model_path} is not a causal "
                         f"LM (its config.json lists no *ForCausalLM architecture)")
    return backend


def truncated_token_ids(tokenizer, texts, max_length):
    """Token ids of each text, special tokens included, cut to at most ``max_length``."""
    return tokenizer(texts, add_special_tokens=True, truncation=True,
                     max_length=max_length)["input_ids"]


def last_token_states(hidden_states, attention_mask):
    """Hidden state of each row's last real token, whichever side the padding is on."""
    import torch

    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask * positions).argmax(dim=1)
    return hidden_states[torch.arange(len(last), device=last.device), last]


class SentenceTransformersBackend:
    """A sentence-transformers folder, embedded with the model's own modules and pooling."""

    name = "sentence-transformers"

    def __init__(self, model_path, device, max_length, batch_size):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
        self.model.max_seq_length = max_length
        self.batch_size = batch_size

    def embed(self, texts):
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                 show_progress_bar=False).astype(np.float32)


class TransformersBackend:
    """A causal LM through transformers: last-token final hidden state, L2-normalised."""

    name = "transformers"

    def __init__(self, model_path, device, max_length, batch_size):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        dtype = torch.float32 if device == "cpu" else "auto"
        self.model = AutoModel.from_pretrained(str(model_path), local_files_only=True,
                                               dtype=dtype).to(self.device).eval()
        self.max_length, self.batch_size = max_length, batch_size
        self.pad_id = (self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                       else self.tokenizer.eos_token_id or 0)

    def embed(self, texts):
        torch = self.torch
        ids = truncated_token_ids(self.tokenizer, texts, self.max_length)
        # batches of similar length waste less compute on padding; order restored at the end
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty((len(ids), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(ids), self.batch_size):
            rows = order[start:start + self.batch_size]
            width = max(len(ids[i]) for i in rows)
            batch = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                batch[r, :len(ids[i])] = torch.tensor(ids[i])
                mask[r, :len(ids[i])] = 1
            with torch.inference_mode():
                states = self.model(input_ids=batch.to(self.device),
                                    attention_mask=mask.to(self.device)).last_hidden_state
            out[rows] = last_token_states(states, mask.to(self.device)).float().cpu().numpy()
        return unit_rows(out)


class VllmBackend:
    """vLLM's embedding runner (pinned version: see requirements-gpu.txt) on one GPU.

    The model runs as a pooling model converted for ``embed``, whose pooling for a generative
    model is the last token's final hidden state, normalised. It is given the same truncated
    token ids as the transformers backend, so both backends embed exactly the same input.
    """

    name = "vllm"

    def __init__(self, model_path, device, max_length, batch_size):
        # vLLM runs on the first visible GPU: embedding.py has made the one --gpu_id names the
        # only visible one (utils.runtime.device.pin_visible_gpu) before CUDA started. Under
        # torchrun each rank's vLLM is a plain one-GPU engine: it must not see the torchrun
        # world (no process group exists, utils.runtime.store_ranks), nor its variables.
        from transformers import AutoTokenizer
        from vllm import LLM

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        with torchrun_hidden():  # its engine process, started here, inherits the environment
            self.llm = LLM(model=str(model_path), runner="pooling", convert="embed",
                           max_model_len=max_length, enforce_eager=True,
                           gpu_memory_utilization=0.9)
        self.max_length = max_length

    def embed(self, texts):
        ids = truncated_token_ids(self.tokenizer, texts, self.max_length)
        outputs = self.llm.embed([{"prompt_token_ids": list(x)} for x in ids], use_tqdm=False)
        return unit_rows([o.outputs.embedding for o in outputs])


def make_backend(backend, model_path, device, max_length, batch_size):
    kinds = {"sentence-transformers": SentenceTransformersBackend,
             "transformers": TransformersBackend, "vllm": VllmBackend}
    return kinds[backend](model_path, device, max_length, batch_size)
