"""What a call of the public API leaves of its caller's process: nothing changed. The
environment, torch's TF32 flags and thread count, and faiss's OpenMP threads are put back as
they were (the commands, which own their process, tune it instead)."""

import contextlib
import functools
import os
import sys

from ..numerics.compute import FOUND_TF32, set_tf32_flags, tf32_flags


def torch_state():
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return {"tf32": tf32_flags(torch), "threads": torch.get_num_threads()}


def faiss_threads_now():
    faiss = sys.modules.get("faiss")
    return None if faiss is None else faiss.omp_get_max_threads()


def restore_torch(before):
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if before is None:  # first imported in the call: as exact_torch found it then
        if FOUND_TF32:
            set_tf32_flags(torch, dict(FOUND_TF32))
        return
    set_tf32_flags(torch, before["tf32"])
    if torch.get_num_threads() != before["threads"]:
        torch.set_num_threads(before["threads"])


@contextlib.contextmanager
def environment_kept(environ=None):
    """The block may change the environment (vLLM does, and so do we for its engine); it is
    exactly as it was afterwards."""
    environ = os.environ if environ is None else environ
    saved = dict(environ)
    try:
        yield environ
    finally:
        for name in [name for name in environ if name not in saved]:
            del environ[name]
        environ.update(saved)


@contextlib.contextmanager
def process_state_kept():
    """The block may tune the process; afterwards it is as it was (see the module docstring)."""
    saved_torch, saved_faiss = torch_state(), faiss_threads_now()
    try:
        with environment_kept():
            yield
    finally:
        restore_torch(saved_torch)
        faiss = sys.modules.get("faiss")
        if faiss is not None and saved_faiss is not None:
            faiss.omp_set_num_threads(saved_faiss)


def leaves_process_as_found(function):
    """``function`` runs inside ``process_state_kept``."""

    @functools.wraps(function)
    def kept(*args, **kwargs):
        with process_state_kept():
            return function(*args, **kwargs)

    return kept
