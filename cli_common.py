"""Command-line glue shared by embedding.py, novelsum.py and novelselect.py (click lives here).

The scripts accept the reference's command lines unchanged: options with underscores and
space-separated lists (``--density_powers 0 0.25 0.5``). Dashed aliases and comma lists
(``--density-powers 0,0.25,0.5``) work too.
"""

import functools
import math
import os
import re
import sys
import time

import click
from tqdm import tqdm

from utils.errors import InputError

_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


PATH_SEPARATOR = "\x1f"  # joins the folders of a path list: a character no path holds


def merge_list_args(args, list_options, path_options=()):
    """Rewrite ``--opt a b c`` into ``--opt a,b,c`` for the options named in ``list_options``.

    Values are taken up to the next token that looks like an option (``-x`` or ``--x``; a
    negative number such as ``-0.5`` is a value). ``--opt=a,b`` passes through unchanged.
    Options in ``path_options`` take several paths, joined with ``PATH_SEPARATOR``.
    """
    merged, i = [], 0
    while i < len(args):
        token = args[i]
        merged.append(token)
        i += 1
        if token in list_options or token in path_options:
            values = []
            while i < len(args) and (not args[i].startswith("-") or _NUMBER.match(args[i])):
                values.append(args[i])
                i += 1
            merged.append((PATH_SEPARATOR if token in path_options else ",").join(values))
    return merged


class NumberList(click.ParamType):
    """A list of numbers written ``0,0.25,0.5`` (or, via ``merge_list_args``, ``0 0.25 0.5``)."""

    def __init__(self, number_type):
        self.number_type = number_type
        self.name = f"{number_type.__name__} list"

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return list(value)
        parts = [p.strip() for p in str(value).split(",") if p.strip()]
        if not parts:
            self.fail("needs at least one value", param, ctx)
        numbers = []
        for part in parts:
            try:
                number = self.number_type(part)
            except ValueError:
                self.fail(f"{part!r} is not a{'n' if self.number_type is int else ''} "
                          f"{self.number_type.__name__}", param, ctx)
            if not math.isfinite(number):  # a NaN power would turn every result into NaN
                self.fail(f"{part!r} is not a finite number", param, ctx)
            numbers.append(number)
        if len(set(numbers)) != len(numbers):
            self.fail(f"lists a value twice ({value})", param, ctx)
        return numbers


class FiniteFloat(click.ParamType):
    """A float that is neither NaN nor infinite (a NaN power would make every novelty NaN)."""

    name = "float"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a float", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()


class ReferenceStyleCommand(click.Command):
    """A click command that also parses the reference's space-separated list options."""

    def __init__(self, *args, list_options=(), path_options=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.list_options = set(list_options)
        self.path_options = set(path_options)

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, merge_list_args(list(args), self.list_options,
                                                           self.path_options))
        except click.ClickException as err:
            if not is_main_rank():  # under torchrun every rank parses alike; rank 0 says it
                sys.exit(err.exit_code)
            raise


class Interrupted(Exception):
    """Ctrl-C, with what the command has kept: its message replaces the default one."""


def is_main_rank():
    """Whether this process speaks for the run: always without ``torchrun``; under it, rank 0
    (the others run silently, so that each message and error is printed once)."""
    return os.environ.get("RANK", "0") == "0"


def clean_errors(command_body):
    """Turn library errors into one-line messages: ``Error: ...``, exit 1, no traceback.

    Ctrl-C stops with exit status 130 and a line saying what was kept: by default that no
    output was written (outputs are renamed into place only when complete); a command that
    keeps finished parts raises ``Interrupted`` with its own message. Under ``torchrun`` a
    failure the ranks agreed on (``utils.distributed``) is printed by rank 0; any other is
    printed once, by the first rank to meet it; a rank whose peer went away exits in silence
    (the peer says why); every rank exits non-zero.
    """

    @functools.wraps(command_body)
    def wrapper(*args, **kwargs):
        speaks = is_main_rank()
        try:
            return command_body(*args, **kwargs)
        except InputError as err:
            if "RANK" not in os.environ:
                raise click.ClickException(str(err)) from None
            if agreed(err):  # every rank has it: rank 0 says it
                leave_rank(1, f"Error: {err}" if speaks else None)
            # Found outside an agreed phase: the same fault on every rank (a check that each
            # makes alike), or this rank's own. Whichever rank is first to say it says it.
            leave_rank(1, own_line(f"Error: {err}") if first_to_say(str(err)) else None)
        except RuntimeError as err:
            if "RANK" not in os.environ or not is_distributed_error(err):
                raise
            if peer_went_away(err):  # the rank that went away says why, or torchrun does
                leave_rank(1)
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            message = f"rank {os.environ['RANK']} stopped waiting for the others: {text}"
            leave_rank(1, own_line(f"Error: {message}") if first_to_say(message) else None)
        except click.ClickException as err:  # a usage error: every rank meets it alike
            if "RANK" not in os.environ:
                raise
            if speaks:
                err.show()
            leave_rank(err.exit_code)
        except Interrupted as stop:
            leave_rank(130, f"\nInterrupted: {stop}" if speaks else None)
        except KeyboardInterrupt:
            leave_rank(130, "\nInterrupted: stopped cleanly, no output was written."
                       if speaks else None)

    return wrapper


def agreed(err):
    """Whether every rank raised ``err`` (``utils.distributed.Ranks.agree``)."""
    from utils.distributed import RankError

    return isinstance(err, RankError)


def is_distributed_error(err):
    """Whether ``err`` comes from torch.distributed's collectives (a peer gone, a timeout)."""
    import torch.distributed as dist

    kinds = tuple(getattr(dist, name) for name in ("DistBackendError", "DistNetworkError",
                                                   "DistStoreError") if hasattr(dist, name))
    return isinstance(err, kinds) or "ProcessGroup" in str(err) or \
        "gloo" in str(err).lower()


def peer_went_away(err):
    """Whether ``err`` says the other end of a collective closed: that rank has exited, and
    its own line (or torchrun's report) says why."""
    return any(marker in str(err) for marker in ("Connection closed by peer",
                                                 "Connection reset by peer"))


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

    if not dist.is_initialized():
        return is_main_rank()
    try:
        store = dist.distributed_c10d._get_default_store()
        key = "novelsum-said-" + hashlib.sha256(text.encode()).hexdigest()[:32]
        return store.add(key, 1) == 1
    except (AttributeError, RuntimeError, ValueError):  # no store, or it is gone with rank 0
        return is_main_rank()


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
    sys.stdout.flush()
    sys.stderr.flush()
    if message is None:
        # A silent rank leaves the word to another (rank 0, or the first to meet the fault).
        # torchrun stops every rank as soon as one exits: waiting a moment lets that one print
        # its line first; torchrun ends this wait when the speaker exits.
        time.sleep(SILENT_EXIT_DELAY_S)
    os._exit(status)


class StageLine:
    """Progress for a log: one line per stage, no bar redraws.

    The line is begun when the stage starts (``selecting: 10000 pick(s) ...``) and finished
    when it ends (``done in 52.3 s``), so a log being followed shows where the run is. A stage
    that starts inside another (the density search inside the selection) ends the outer line
    first; the outer stage then reports on a line of its own. It takes the calls the scripts
    make on a tqdm bar (``update``, ``set_postfix_str``, use as a context manager or as a
    wrapping iterable).
    """

    open_line = None  # the stage whose line is waiting for its "done"

    def __init__(self, desc, unit, iterable=None, total=None):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.desc, self.unit, self.iterable, self.total = desc, unit, iterable, total
        self.postfix, self.start, self.interrupted = "", None, False

    def __iter__(self):
        with self:
            yield from self.iterable

    def __enter__(self):
        if StageLine.open_line is not None:  # end the outer stage's line
            click.echo("", err=True)
            StageLine.open_line.interrupted = True
        self.start, self.outer = time.perf_counter(), StageLine.open_line
        size = f" {self.total} {self.unit}(s)" if self.total is not None else ""
        click.echo(f"{self.desc}:{size} ...", err=True, nl=False)
        sys.stderr.flush()
        StageLine.open_line = self
        return self

    def __exit__(self, kind, *_):
        StageLine.open_line = self.outer
        lead = f"{self.desc}:" if self.interrupted else ""
        if kind is not None:
            click.echo(f"{lead} stopped", err=True)
            return
        postfix = f" ({self.postfix})" if self.postfix else ""
        click.echo(f"{lead} done in {time.perf_counter() - self.start:.1f} s{postfix}",
                   err=True)
        if self.outer is not None:
            self.outer.interrupted = True

    def update(self, n=1):
        """Counted by the stage's total; nothing is printed until the stage ends."""

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text


class Reporter:
    """Progress and notices on stderr, all switched off by ``--quiet``.

    On a terminal progress is a tqdm bar; when stderr is a file or a pipe (a log), each stage
    writes one line when it ends instead of a bar's many redraws.
    """

    def __init__(self, quiet=False, interactive=None):
        self.quiet = quiet or not is_main_rank()  # under torchrun, rank 0 reports for all
        self.interactive = sys.stderr.isatty() if interactive is None else interactive

    def notice(self, message):
        if not self.quiet:
            click.echo(message, err=True)

    def progress(self, desc, unit="it", total=None, **kwargs):
        """A function wrapping an iterable in a progress report named ``desc``."""
        if not self.interactive or self.quiet:
            return lambda iterable: (iterable if self.quiet else
                                     StageLine(desc, unit, iterable=iterable, total=total))
        return lambda iterable: tqdm(iterable, desc=desc, unit=unit, total=total,
                                     file=sys.stderr, leave=False, dynamic_ncols=True, **kwargs)

    def bar(self, desc, total, unit="it", **kwargs):
        """A manually updated progress bar (``update``, ``set_postfix_str``)."""
        if not self.interactive and not self.quiet:
            return StageLine(desc, unit, total=total)
        return tqdm(total=total, desc=desc, unit=unit, disable=self.quiet, file=sys.stderr,
                    dynamic_ncols=True, **kwargs)


def device_summary(device, gpu_id, ranks=None):
    """The device a run used, for its summary line; says so when an asked-for GPU was missing.
    Under ``torchrun`` it names the ranks and rank 0's device (``2 ranks, cuda:0 ...``)."""
    where = device
    if device == "cpu" and gpu_id is not None and gpu_id >= 0:
        where = f"cpu (GPU {gpu_id} was asked for but is not available)"
    if ranks is not None and ranks.grouped:
        if device == "cpu":
            return f"{ranks.describe()} on the CPU"
        return f"{ranks.describe()}, one GPU each from {device}"
    return where


def gpu_option(help_text):
    return click.option("--gpu_id", "--gpu-id", type=int, default=None, show_default="GPU 0 "
                        "if there is one, else CPU", help=help_text)


embedding_field_option = click.option(
    "--embedding_field", "--embedding-field", default=None,
    help="The column of .parquet embedding shards that holds the vectors (when there are "
         "several).")

quiet_option = click.option("--quiet", is_flag=True, help="No progress bars or notices on stderr.")


def load_embeddings(path, ranks, progress, allow_zero=False, embedding_field=None):
    """Embedding vectors (``utils.shards``): all of them in one process; under ``torchrun``
    this rank's block of rows (``ranks.block``), with global offsets."""
    from utils.shards import load_vector_block, load_vectors

    if ranks.grouped:
        return load_vector_block(path, ranks.block, progress, allow_zero=allow_zero,
                                 embedding_field=embedding_field)
    return load_vectors(path, progress, allow_zero=allow_zero, embedding_field=embedding_field)
