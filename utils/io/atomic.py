"""Outputs written under a temporary name in the same folder, then renamed."""

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import InputError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the folder of ``path``; rename it onto ``path`` on success.

    The temporary file lives in the same folder so that the final ``os.replace`` is a rename on
    one file system. On any exception (Ctrl-C included) the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # a file where a folder should be, no permission, a full disk
        raise InputError(f"{path}: cannot write ({err.strerror or err})") from None
    os.close(fd)
    try:
        yield Path(tmp_name)
        # mkstemp makes the file private (0600); give the output the usual permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_text_atomic(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_together(writers):
    """Write several outputs, each under a temporary name, and rename them into place only
    once every one is written: a failure or Ctrl-C leaves all the earlier outputs as they were.

    ``writers`` maps each output path to a function that writes it at a given path.
    """
    with contextlib.ExitStack() as stack:
        for path, write in writers.items():
            write(stack.enter_context(atomic_path(path)))
