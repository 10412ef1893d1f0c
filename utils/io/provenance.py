"""What embedded each set of vectors a command reads: the record embedding.py writes beside each
shard, the check that a text shard is still the one its vectors came from, and the check that
sets read together were embedded alike (docs/method.md section 11)."""

import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .hashing import sha256_of_file
from .listing import COMPRESSED, VECTOR_SUFFIXES, dataset_files

# What records written before a key existed meant by its absence: shards embedded before
# --dtype were computed in float32 on a CPU.
RECORDED_BEFORE = {"dtype": "float32"}

# The settings a run record names for each set it read.
SETTINGS = ("model", "model_config_sha256", "backend", "dtype", "max_length", "text_field")

# What sets compared or combined must share: the model, known by the hash of its configuration
# files (one model copied to another folder is still the same model), and the token limit.
# Backend and dtype change a vector by rounding only (cosine >= 0.999).
COMPARED = ("model_config_sha256", "max_length")

MIXED_OPTION = "--allow_mixed_embeddings"


def source_path(path):
    """The hidden file beside a shard's vectors that records what made them (embedding.py)."""
    path = Path(path)
    return path.with_name(f".{path.name}.source.json")


def read_source(vector_path):
    """What embedding.py recorded for ``vector_path``'s vectors (keys it did not write yet read
    as ``RECORDED_BEFORE``), or None without a readable record (vectors made elsewhere)."""
    try:
        recorded = json.loads(source_path(vector_path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict):
        return None
    return {**RECORDED_BEFORE, **recorded}


def text_sha256(path):
    """SHA-256 (hex) of a text shard's content: of a gzipped shard, its content unzipped, since
    gzip stamps a time into the file (the same text zipped twice differs)."""
    path = Path(path)
    if path.suffix != COMPRESSED:
        return sha256_of_file(path)
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"{path}: not a readable gzip file ({err})") from None
    return digest.hexdigest()


def check_made_from(text_path, vector_path):
    """Refuse a text shard that changed (edited, reordered) since ``vector_path`` was embedded
    from it: its rows would be paired with other texts' vectors."""
    recorded = (read_source(vector_path) or {}).get("input_sha256")
    if isinstance(recorded, str) and recorded != text_sha256(text_path):
        raise InputError(f"{text_path}: changed since {vector_path} was embedded from it (its "
                         f"SHA-256 is not the one in {source_path(vector_path).name}); embed "
                         f"it again with embedding.py, or give the text it was made from")


def shard_settings(vector_path):
    """The settings of ``SETTINGS`` recorded for one shard, or None without a record."""
    recorded = read_source(vector_path)
    return None if recorded is None else {key: recorded.get(key) for key in SETTINGS}


@dataclass(frozen=True)
class EmbeddedWith:
    """What embedded one set: ``settings`` of its first recorded shard (None if none has a
    record), its shards without a record, and how two of its shards differ (``mixed``), if
    they do. ``what`` names the set in messages (``--given_dir x``)."""

    what: str
    settings: dict | None
    unrecorded: tuple
    mixed: str | None = None

    def describe(self):
        """As the run record lists it."""
        return {**(self.settings or {}), "shards_without_record": len(self.unrecorded)}


def embedded_with(what, path):
    """What embedded the set at ``path`` (a file or a folder of shards), and the first pair of
    its shards embedded with different models or token limits."""
    settings, first, unrecorded, mixed = None, None, [], None
    for shard in dataset_files(path, VECTOR_SUFFIXES):
        found = shard_settings(shard)
        if found is None:
            unrecorded.append(shard.name)
        elif settings is None:
            settings, first = found, shard
        elif mixed is None and difference(settings, found):
            theirs, its = difference(settings, found)
            mixed = f"{what}: {first.name} was embedded with {theirs}, {shard.name} with {its}"
    return EmbeddedWith(what, settings, tuple(unrecorded), mixed)


def difference(a, b):
    """``(a's, b's)`` descriptions of the compared settings where two sets differ, or None."""
    keys = [key for key in COMPARED if a.get(key) != b.get(key)]
    if not keys:
        return None
    same_folder = a.get("model") == b.get("model")  # its configuration edited in between

    def described(settings):
        parts = []
        if "model_config_sha256" in keys:
            configuration = str(settings.get("model_config_sha256"))[:12]
            parts.append(f"model {settings.get('model')}"
                         + (f" (configuration {configuration})" if same_folder else ""))
        if "max_length" in keys:
            parts.append(f"max_length {settings.get('max_length')}")
        return ", ".join(parts)
    return described(a), described(b)


def mixed_sets(sets):
    """The first difference among ``sets``: between two shards of one set, else between two
    sets (``(text, within one set)``), or ``(None, False)``."""
    within = next((s.mixed for s in sets if s.mixed), None)
    if within:
        return within, True
    recorded = [s for s in sets if s.settings is not None]
    for other in recorded[1:]:
        found = difference(recorded[0].settings, other.settings)
        if found is not None:
            return (f"{other.what} was embedded with {found[1]}, but {recorded[0].what} with "
                    f"{found[0]}"), False
    return None, False


def check_embedded_alike(sets, allow_mixed=False):
    """Refuse sets (``EmbeddedWith``) whose recorded model or token limit differ, or whose
    shards do, naming both; with ``allow_mixed``, return that difference instead (for the
    notice and the run record). Returns ``(difference text or None, notice about sets without
    a record or None)``."""
    mixed, within = mixed_sets(sets)
    if mixed and not allow_mixed:
        fix = ("embed the set again with one model and --max_length" if within else
               "their vectors are not comparable; embed them with the same model and "
               "--max_length")
        raise InputError(f"{mixed}{'; ' if within else ': '}{fix}, or give {MIXED_OPTION} to "
                         f"go on")
    unrecorded = [s.what for s in sets if s.unrecorded]
    notice = None
    if unrecorded and len(sets) > 1:  # a set alone is compared with nothing
        notice = (f"no record of what embedded {', '.join(unrecorded[:3])}"
                  f"{f' and {len(unrecorded) - 3} more' if len(unrecorded) > 3 else ''} "
                  f"(made without embedding.py): whether they match the other sets' model and "
                  f"--max_length is not checked")
    return mixed, notice
