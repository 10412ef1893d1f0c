"""Our exceptions turned into one ``Error:`` line and an exit status, once over all ranks."""

import contextlib
import functools
import os
import sys
import time
import traceback

import click

from ..errors import InputError, Interrupted, RunFailed, options_named
from ..runtime.reporting import is_main_rank
from ..runtime.store_ranks import PeerFailed, joined_channel
from .options import OPTION_NAMES


def clean_errors(command_body):
    """Turn library errors into one-line messages: ``Error: ...``, exit 1, no traceback.

    Ctrl-C stops with exit status 130 and a line saying what was kept: by default that no
    output was written (outputs are renamed into place only when complete); a command that
    keeps finished parts raises ``Interrupted`` with its own message. Under ``torchrun`` a
    failure the ranks agreed on (``utils.runtime.distributed``) is printed by rank 0; any
    other is printed once, by the first rank to meet it; a rank whose peer went away exits in
    silence (the peer says why); every rank exits non-zero.
    """

    @functools.wraps(command_body)
    def wrapper(*args, **kwargs):
        debug = kwargs.pop("debug", False)
        speaks = is_main_rank()
        try:
            with options_named(OPTION_NAMES):
                return command_body(*args, **kwargs)
        except InputError as err:
            if "RANK" not in os.environ:
                raise click.ClickException(str(err)) from None
            if agreed(err):  # every rank has it: rank 0 says it
                leave_rank(1, f"Error: {err}" if speaks else None)
            # Found outside an agreed phase: the same fault on every rank (a check that each
            # makes alike), or this rank's own. Whichever rank is first to say it says it.
            leave_rank(1, own_line(f"Error: {err}") if first_to_say(str(err)) else None)
        except RunFailed as err:
            if "RANK" not in os.environ:
                raise click.ClickException(str(err)) from None
            rank_failed(err, debug)
        except click.ClickException as err:  # a usage error: every rank meets it alike
            if "RANK" not in os.environ:
                raise
            if speaks:
                err.show()
            leave_rank(err.exit_code)
        except Interrupted as stop:
            stop_for_peer()
            leave_rank(130, f"\nInterrupted: {stop}" if speaks else None)
        except KeyboardInterrupt:
            stop_for_peer()
            leave_rank(130, "\nInterrupted: stopped cleanly, no output was written."
                       if speaks else None)
        except Exception as err:  # noqa: BLE001 - see rank_failed
            if "RANK" not in os.environ:
                raise  # one process: an internal fault keeps its traceback, for a report
            rank_failed(err, debug)

    return wrapper


def rank_failed(err, debug=False):
    """Under ``torchrun``, any other failure (a collective that broke, a library's OSError,
    IndexError or CUDA error) is one line, printed once, and every rank exits at once: this
    one aborts its process group, so that peers waiting on it fail instead of hanging (NCCL),
    and torchrun stops the others as soon as it exits. With ``debug`` (``--debug``) the rank
    writes the failure's traceback after the line."""
    if isinstance(err, PeerFailed):
        leave_at_once(1)  # the rank that marked its failure has said why
    if is_distributed_error(err) and another_rank_left():
        leave_rank(1)  # the rank that left says why, or torchrun does
    mark_leaving()  # before the abort: peers whose collectives then fail see why
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if is_distributed_error(err):
        message = f"rank {os.environ['RANK']} stopped waiting for the others: {text}"
    elif isinstance(err, RunFailed):
        message = f"rank {os.environ['RANK']}: {text}"
    else:
        message = f"rank {os.environ['RANK']}: {type(err).__name__}: {text}"
    speaks = first_to_say(message)
    abort_ranks()
    lines = [f"Error: {message}"] if speaks else []
    if debug:  # after the line, which stays the one a log is searched for
        lines.append(f"rank {os.environ['RANK']}: "
                     + "".join(traceback.format_exception(err)).rstrip())
    leave_rank(1, own_line("\n".join(lines)) if lines else None)


def abort_ranks():
    """Abort this process's communicators (NCCL's above all), without waiting on peers."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    with contextlib.suppress(AttributeError, RuntimeError, ValueError):
        dist.distributed_c10d._abort_process_group()


def agreed(err):
    """Whether every rank raised ``err`` (``utils.runtime.distributed.Ranks.agree``)."""
    from ..runtime.distributed import RankError

    return isinstance(err, RankError)


def is_distributed_error(err):
    """Whether ``err`` is a failure among the ranks (a peer gone, a timeout), by its type: a
    collective of ``Ranks`` that failed, or torch.distributed's own error types."""
    import torch.distributed as dist

    from ..runtime.distributed import CollectiveFailed

    kinds = tuple(getattr(dist, name) for name in ("DistBackendError", "DistNetworkError",
                                                   "DistStoreError") if hasattr(dist, name))
    return isinstance(err, (CollectiveFailed, *kinds))


LEFT_KEY = "novelsum-ranks-left"  # in the rendezvous store: ranks leaving on a failure or stop


def mark_leaving():
    """Count this rank, in the rendezvous store, among those leaving before the end (ranks
    that meet through the store, as vLLM's, mark a failure there: ``tell_waiting_ranks``)."""
    import torch.distributed as dist

    with contextlib.suppress(AttributeError, RuntimeError, ValueError):
        if dist.is_initialized():
            dist.distributed_c10d._get_default_store().add(LEFT_KEY, 1)


def another_rank_left():
    """Whether another rank has left on a failure or a stop (``mark_leaving``), so that a
    collective broken by its leaving needs no line of this rank's: that rank (or torchrun)
    says why. A store that cannot be reached has gone with the rank that held it."""
    import torch.distributed as dist

    channel = joined_channel()
    try:
        if dist.is_initialized():
            return dist.distributed_c10d._get_default_store().add(LEFT_KEY, 0) > 0
        if channel is not None:  # ranks that meet through the store (vLLM)
            return channel.failed_rank() not in (None, channel.rank)
    except (AttributeError, RuntimeError, ValueError):
        return True
    return False


def own_line(message):
    """``message`` as printed by a rank other than 0: after a line break, since rank 0 may be
    in the middle of a progress line on the same terminal."""
    return message if is_main_rank() else f"\n{message}"


def first_to_say(text):
    """Whether this rank is the first to report ``text``, so that a fault every rank meets is
    printed once: the ranks count reports in the rendezvous store that torchrun gives them.
    Without a store (before the ranks have met), rank 0 speaks for all."""
    import hashlib

    import torch.distributed as dist

    key = "novelsum-said-" + hashlib.sha256(text.encode()).hexdigest()[:32]
    # No store, or it is gone with rank 0: then rank 0 says it.
    with contextlib.suppress(AttributeError, RuntimeError, ValueError):
        if dist.is_initialized():
            return dist.distributed_c10d._get_default_store().add(key, 1) == 1
        if joined_channel() is not None:  # ranks that meet through the store (vLLM)
            return joined_channel().first_to_say(key)
    return is_main_rank()


def stop_for_peer():
    """Leave in silence when this stop is torchrun's, after another rank failed: ranks that
    meet through the store (vLLM) may not have seen that rank's mark yet; it says why."""
    channel = joined_channel()
    if channel is not None:
        with contextlib.suppress(RuntimeError):  # the store is gone with rank 0
            if channel.failed_rank() not in (None, channel.rank):
                leave_at_once(1)  # torchrun is stopping every rank; that one has said why


def tell_waiting_ranks():
    """Ranks that meet through the store (vLLM) see no connection close when a peer exits:
    mark this rank as failed there, so that ranks waiting on it leave in silence at once."""
    channel = joined_channel()
    if channel is not None:
        with contextlib.suppress(RuntimeError):  # the store is gone with rank 0
            channel.mark_failed()


def leave_at_once(status):
    """Exit at once, in silence, under ``torchrun``: another rank has already said why."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


SILENT_EXIT_DELAY_S = 10


def leave_rank(status, message=None):
    """Print ``message`` (if any) on stderr and exit with ``status``. Under ``torchrun`` the
    process ends at once after flushing its streams: the process group's threads may still
    be waiting on a rank that has gone, and running the interpreter's shutdown beside them
    ends in a C++ ``terminate`` message instead of the one clean line."""
    if message is not None:
        click.echo(message, err=True)
    if "RANK" not in os.environ:
        sys.exit(status)
    if status != 0:
        mark_leaving()
    if status == 1:  # a failure (not Ctrl-C, nor a usage error every rank meets alike)
        tell_waiting_ranks()
    sys.stdout.flush()
    sys.stderr.flush()
    if message is None:
        # A silent rank leaves the word to another (rank 0, or the first to meet the fault).
        # torchrun stops every rank as soon as one exits: waiting a moment lets that one print
        # its line first; torchrun ends this wait when the speaker exits.
        time.sleep(SILENT_EXIT_DELAY_S)
    os._exit(status)
