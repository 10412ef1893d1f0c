"""The embedding backends: sentence-transformers, transformers and vLLM.

Records become text (``utils.io.text_items``, docs/method.md section 1), are cut to
``max_length`` tokens by the model's own tokenizer (special tokens included, the head kept), and
are embedded by one of three backends, in the dtype chosen for them (``choice.py``):

- ``sentence-transformers``: a sentence-transformers folder, with the model's own pooling;
- ``transformers``: a causal LM; the final layer's hidden state at the last token, L2-normalised;
- ``vllm``: either kind through vLLM's pooling runner (the same pooling), on a CPU or a GPU.

transformers and vLLM are given the same token ids, so every backend embeds the same input.
torch, transformers, sentence-transformers and vLLM are imported only when used.
"""

import numpy as np

from ..numerics.rows import unit_rows
from .models import normalises, read_model_config
from .vllm_engine import start_engine


def truncated_token_ids(tokenizer, texts, max_length):
    """Token ids of each text, special tokens included, cut to at most ``max_length``.

    A text that gives no token at all (an empty text, for a tokenizer that adds no special
    tokens) is embedded as the tokenizer's end-of-text token alone (docs/method.md section 2):
    a model cannot run on nothing.
    """
    ids = tokenizer(texts, add_special_tokens=True, truncation=True,
                    max_length=max_length)["input_ids"]
    stand_in = next((token for token in (tokenizer.eos_token_id, tokenizer.bos_token_id,
                                         tokenizer.pad_token_id) if token is not None), 0)
    return [list(row) if len(row) else [stand_in] for row in ids]


def torch_dtype(name):
    """torch's dtype of that name; ``"auto"`` (a GPU's default) as is: the model's own."""
    import torch

    return name if name == "auto" else getattr(torch, name)


def last_token_states(hidden_states, attention_mask):
    """Hidden state of each row's last real token, whichever side the padding is on."""
    import torch

    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask * positions).argmax(dim=1)
    return hidden_states[torch.arange(len(last), device=last.device), last]


class SentenceTransformersBackend:
    """A sentence-transformers folder, embedded with the model's own modules and pooling (it
    sorts each call's texts by length into batches)."""

    name = "sentence-transformers"

    def __init__(self, model_path, device, max_length, batch_size, dtype, **_engine):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
        if dtype != "auto":
            self.model.to(torch_dtype(dtype))
        self.model.max_seq_length = max_length
        self.batch_size = batch_size
        # a model that normalises does it in its dtype (bfloat16: lengths off by ~0.004)
        self.normalised = normalises(model_path)

    def embed(self, texts):
        if not texts:
            width = getattr(self.model, "get_embedding_dimension",  # its name from version 6
                            getattr(self.model, "get_sentence_embedding_dimension", None))()
            return np.zeros((0, width), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                    show_progress_bar=False)
        vectors = vectors.float().cpu().numpy().reshape(len(texts), -1)
        return unit_rows(vectors) if self.normalised else vectors


class TransformersBackend:
    """A causal LM through transformers: last-token final hidden state, L2-normalised."""

    name = "transformers"

    def __init__(self, model_path, device, max_length, batch_size, dtype, **_engine):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_path), local_files_only=True,
                                               dtype=torch_dtype(dtype)).to(self.device).eval()
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
    """vLLM's pooling runner (``vllm_engine.py``), on a CPU or the one GPU in view.

    A causal LM is converted for ``embed``: the last token's final hidden state, normalised,
    as the transformers backend computes it; a sentence-transformers folder keeps its own
    pooling. vLLM is given the token ids the other backends are given, and batches them
    itself, without padding.
    """

    name = "vllm"

    def __init__(self, model_path, device, max_length, batch_size, dtype, verbose=False,
                 notify=None):
        # Under torchrun each rank's engine is a plain one-device engine: it must not see the
        # torchrun world (no process group exists, utils.runtime.store_ranks); on a GPU it
        # runs on the first visible one, which embedding.py made the one --gpu_id names
        # (utils.runtime.device.pin_visible_gpu) before CUDA started.
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        self.llm, self.start_seconds = start_engine(model_path, device, max_length, dtype,
                                                    verbose, notify)
        self.max_length = max_length
        self.width = read_model_config(model_path).get("hidden_size")

    def embed(self, texts):
        if not texts:
            return np.zeros((0, self.width or 0), dtype=np.float32)
        ids = truncated_token_ids(self.tokenizer, texts, self.max_length)
        outputs = self.llm.embed([{"prompt_token_ids": x} for x in ids], use_tqdm=False)
        return unit_rows([o.outputs.embedding for o in outputs])

    def close(self):
        """Stop the engine process now rather than when the process exits."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()


def make_backend(backend, model_path, device, max_length, batch_size, dtype, verbose=False,
                 notify=None):
    kinds = {"sentence-transformers": SentenceTransformersBackend,
             "transformers": TransformersBackend, "vllm": VllmBackend}
    return kinds[backend](model_path, device, max_length, batch_size, dtype, verbose=verbose,
                          notify=notify)


def close_backend(embedder):
    """Stop a backend's engine process (vLLM's) now, rather than when the process exits."""
    close = getattr(embedder, "close", None)
    if close is not None:
        close()
