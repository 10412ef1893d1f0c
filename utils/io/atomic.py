"""Outputs written under a temporary name in the same folder, then renamed: one file, or a set
of files all or nothing."""

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError


def cannot_write(path, err):
    return InputError(f"{path}: cannot write ({err.strerror or err})")


def prepare_folder(path):
    """Make the folder of ``path``, naming the file that stands where a folder must be."""
    path = Path(path)
    for ancestor in reversed(path.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise InputError(f"{path}: cannot write: {ancestor} is a file, not a folder")
    if path.is_dir():
        raise InputError(f"{path}: cannot write: a folder stands where this output goes")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # no permission, a full disk
        raise cannot_write(path, err) from None


def temporary_beside(path):
    """A new empty file in the folder of ``path`` (so that a rename onto it is atomic), with
    the permissions a plain new file gets (mkstemp makes it private)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise cannot_write(path, err) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the folder of ``path``; rename it onto ``path`` on success.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is left as it
    was; an OSError while writing becomes an InputError naming ``path``.
    """
    path = Path(path)
    prepare_folder(path)
    tmp = None
    try:  # made inside: a Ctrl-C just after it is made still removes it
        tmp = temporary_beside(path)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise cannot_write(path, err) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def write_text_atomic(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_together(writers):
    """Write several outputs all or nothing: each under a temporary name, then all renamed into
    place; if any write or rename fails (or Ctrl-C comes), every output is as it was before.

    ``writers`` maps each output path to a function that writes it at a given path.
    """
    paths = [Path(path) for path in writers]
    for path in paths:
        prepare_folder(path)
    temps = {}
    try:
        for path, write in zip(paths, writers.values()):
            temps[path] = temporary_beside(path)
            try:
                write(temps[path])
            except OSError as err:
                raise cannot_write(path, err) from None
        replace_all(temps)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def replace_all(temps):
    """Rename each temporary onto its path; on a failure put back what was there."""
    token = secrets.token_hex(4)
    backups = {path: path.with_name(f".{path.name}.{token}.bak") for path in temps
               if path.exists()}
    try:
        for path, backup in backups.items():
            keep_copy(path, backup)
        done, failed = [], None
        try:
            for failed, tmp in temps.items():
                os.replace(tmp, failed)
                done.append(failed)
        except BaseException as err:
            for path in done:
                if path in backups:
                    os.replace(backups[path], path)
                else:
                    path.unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise cannot_write(failed, err) from None
            raise
    finally:
        for backup in backups.values():
            backup.unlink(missing_ok=True)


def keep_copy(path, backup):
    """``backup`` holds what ``path`` holds: a hard link, or a copy where links are refused."""
    try:
        os.link(path, backup)
    except OSError:
        try:
            shutil.copy2(path, backup)
        except OSError as err:
            raise cannot_write(path, err) from None
