"""What a model folder is, read from its files before any model loads: where it is, what kind
of model it holds, how many tokens it takes, and which dtype its weights are in."""

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


def config_dtype(model_path):
    """The dtype the weights were saved in, as config.json names it (``"bfloat16"``...), or
    None."""
    config = read_model_config(model_path)
    name = config.get("dtype") or config.get("torch_dtype")
    return name if isinstance(name, str) else None


def context_length(model_path):
    """The most tokens the model takes in one text (its position embeddings), or None when
    its configuration does not say."""
    config = read_model_config(model_path)
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    return None


def check_max_length(max_length, model_path):
    """Refuse a token limit longer than the model's context: its tail would be embedded by
    positions the model never learned (transformers) or refused mid-run (vLLM)."""
    limit = context_length(model_path)
    if limit is not None and max_length > limit:
        raise InputError(f"{setting('max_length', max_length)}: {model_path} takes at most "
                         f"{limit} tokens (max_position_embeddings in its config.json); give "
                         f"{setting('max_length', limit)} or less")


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
