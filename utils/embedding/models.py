"""What a model folder is, read from its files before any model loads: where it is, what kind
of model it holds, and how many tokens of one text it takes."""

import json
from pathlib import Path

from ..errors import InputError, setting


def read_model_config(model_path):
    """A model folder's ``config.json`` as a dict (``{}`` when the folder has none)."""
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return {}
    try:
        loaded = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{config}: not a readable JSON model configuration ({err}); restore "
                         f"the model folder's config.json") from None
    if not isinstance(loaded, dict):
        raise InputError(f"{config}: holds a JSON {type(loaded).__name__}, not an object of "
                         f"settings; restore the model folder's config.json")
    return loaded


def is_sentence_transformers_folder(model_path):
    return (Path(model_path) / "modules.json").is_file()


def normalises(model_path):
    """Whether a sentence-transformers folder ends in a Normalize module."""
    modules = Path(model_path) / "modules.json"
    return modules.is_file() and "models.Normalize" in modules.read_text()


def is_causal_lm(model_path):
    architectures = read_model_config(model_path).get("architectures") or []
    return any(name.endswith("ForCausalLM") for name in architectures)


def model_kind(model_path):
    """``"causal-lm"``, ``"sentence-transformers"`` or ``"other"``: what decides the backends
    that can embed it."""
    if is_causal_lm(model_path):
        return "causal-lm"
    if is_sentence_transformers_folder(model_path):
        return "sentence-transformers"
    return "other"


def json_setting(path, key):
    """``key`` of a JSON object file, when it is a positive int; else None."""
    try:
        value = json.loads(Path(path).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and 0 < value < 10**6 else None


def token_limits(model_path, for_vllm=False):
    """``(tokens, where it is said)`` for each limit on the tokens of one text: the model's
    position embeddings, and for vLLM also the sentence-transformers and tokenizer limits,
    which vLLM enforces too."""
    config = read_model_config(model_path)
    limits = [(config[key], f"{key} in its config.json")
              for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
              if isinstance(config.get(key), int) and config[key] > 0][:1]
    if for_vllm:
        for name, key in (("sentence_bert_config.json", "max_seq_length"),
                          ("tokenizer_config.json", "model_max_length")):
            value = json_setting(Path(model_path) / name, key)
            if value is not None:
                limits.append((value, f"{key} in its {name}, which vLLM enforces"))
    return limits


def check_max_length(max_length, model_path, for_vllm=False):
    """Refuse a token limit longer than the model takes: its tail would be embedded by
    positions the model never learned (transformers) or refused as the engine starts (vLLM)."""
    limits = token_limits(model_path, for_vllm)
    if limits and max_length > min(limits)[0]:
        limit, where = min(limits)
        raise InputError(f"{setting('max_length', max_length)}: {model_path} takes at most "
                         f"{limit} tokens ({where}); give {setting('max_length', limit)} or "
                         f"less")


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
    read_model_config(path)  # a broken config.json is named now, not misjudged later
    return path
