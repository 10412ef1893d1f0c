"""A run's outputs planned before any work: no two on one path, none on or inside an input, and
none replacing another run's outputs unless the user says so."""

import json
from pathlib import Path

from ..errors import InputError

# Options that change how a run goes, not what it computes: a rerun that differs only in them
# is the same run and may replace its own outputs.
HOW_NOT_WHAT = frozenset({"gpu_id", "quiet", "plot", "block_mib", "resume_from",
                          "checkpoint_every", "per_sample_csv", "output_csv", "output_dir",
                          "overwrite", "n_clusters_lowered_from",
                          "allow_mixed_embeddings"})


def check_output_plan(outputs, inputs):
    """Refuse two outputs on one path, and an output on an input or inside an input folder
    (where the next run would read it as data). ``outputs`` and ``inputs``: (what, path)
    pairs naming each path's option; a path may be None (not used). A missing input is named
    first: a typo is the fault to fix, not an output it would collide with."""
    for what, path in inputs:
        if path and not Path(path).exists():
            raise InputError(f"{what} {path}: no such file or folder")
    written = {}
    sources = [(what, Path(path), Path(path).resolve()) for what, path in inputs if path]
    for what, path in outputs:
        if path is None:
            continue
        target = Path(path).resolve()
        if target in written:
            raise InputError(f"{path}: {written[target]} and {what} would both write it; give "
                             f"them different names")
        written[target] = what
        for source_what, source, resolved in sources:
            if target == resolved or resolved in target.parents:
                raise InputError(f"{path}: {what} would write over the input {source_what} "
                                 f"{source}; write the outputs elsewhere")


# Parameters that name files or folders: compared as resolved paths, not as typed.
PATH_PARAMETERS = frozenset({"text_dir", "figure_dir", "dense_ref_dir", "quality_scores",
                             "single_dataset_path", "multi_datasets_dir", "given_dir"})


def run_identity(parameters):
    """What a run computes, from its record's parameters (JSON-normalised): paths resolved,
    and a cluster count the run lowered by itself read as the one it was given."""
    parameters = json.loads(json.dumps(parameters))
    if "n_clusters_lowered_from" in parameters:
        parameters["n_clusters"] = parameters["n_clusters_lowered_from"]
    return {key: str(Path(value).resolve()) if key in PATH_PARAMETERS and value else value
            for key, value in parameters.items() if key not in HOW_NOT_WHAT}


def run_differences(record_path, parameters, ignore=()):
    """``"seed 7 there, 42 now"`` for each parameter (but ``ignore``) in which the run recorded
    at ``record_path`` differs from ``parameters``; None when there is no readable record."""
    try:
        earlier = run_identity(json.loads(Path(record_path).read_text()).get("parameters", {}))
    except (OSError, ValueError, AttributeError):
        return None
    now = run_identity(parameters)
    return [f"{key} {earlier.get(key)!r} there, {now.get(key)!r} now"
            for key in sorted(earlier.keys() | now.keys())
            if key not in ignore and earlier.get(key) != now.get(key)]


def check_previous_run(record_path, outputs, parameters, overwrite):
    """Refuse to replace the outputs of another run unless ``overwrite``: ``outputs`` exist
    and the run record ``record_path`` beside them describes other parameters (or is missing
    or unreadable). The same run again may replace its own outputs."""
    if overwrite or not any(Path(path).exists() for path in outputs):
        return
    try:
        earlier = run_identity(json.loads(Path(record_path).read_text()).get("parameters", {}))
    except (OSError, ValueError, AttributeError):
        found = next(Path(path) for path in outputs if Path(path).exists())
        raise InputError(f"{found}: an output of another run, with no readable record "
                         f"({Path(record_path).name}); give --overwrite to replace it, or "
                         f"write elsewhere") from None
    now = run_identity(parameters)
    changed = sorted(key for key in earlier.keys() | now.keys()
                     if earlier.get(key) != now.get(key))
    if changed:
        key = changed[0]
        raise InputError(f"{record_path}: its outputs come from another run ({key} "
                         f"{earlier.get(key)!r} there, {now.get(key)!r} now); give --overwrite "
                         f"to replace them, or write elsewhere")
