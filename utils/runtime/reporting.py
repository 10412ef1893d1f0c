"""Progress and stage lines on stderr (tqdm on a terminal, one line per stage in logs), and
which rank speaks for a run."""

import os
import sys
import time

import click
from tqdm import tqdm


def is_main_rank():
    """Whether this process speaks for the run: always without ``torchrun``; under it, rank 0
    (the others run silently, so that each message and error is printed once)."""
    return os.environ.get("RANK", "0") == "0"


LOG_INTERVAL_VARIABLE = "NOVELSUM_LOG_INTERVAL_S"
DEFAULT_LOG_INTERVAL_S = 30.0  # a progress line at least this often in a log


def log_interval():
    """Seconds between progress lines in a log: ``NOVELSUM_LOG_INTERVAL_S``, else 30."""
    try:
        return float(os.environ.get(LOG_INTERVAL_VARIABLE, DEFAULT_LOG_INTERVAL_S))
    except ValueError:
        return DEFAULT_LOG_INTERVAL_S


class StageLine:
    """Progress for a log: one line per stage, no bar redraws.

    The line is begun when the stage starts (``selecting: 10000 pick(s) ...``) and finished
    when it ends (``done in 52.3 s``), with a line of count, rate and ETA every 30 s between
    (``NOVELSUM_LOG_INTERVAL_S``), so a log being followed shows where the run is. A stage
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
        self.done, self.last_line = 0, None
        self.interval = log_interval()

    def __iter__(self):
        with self:
            for item in self.iterable:
                yield item
                self.update(1)

    def __enter__(self):
        if StageLine.open_line is not None:  # end the outer stage's line
            click.echo("", err=True)
            StageLine.open_line.interrupted = True
        self.start, self.outer = time.perf_counter(), StageLine.open_line
        size = f" {self.total} {self.unit}(s)" if self.total is not None else ""
        click.echo(f"{self.desc}:{size} ...", err=True, nl=False)
        sys.stderr.flush()
        StageLine.open_line = self
        self.last_line = self.start
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
        """Counted towards the stage's total; a line with the count, rate and ETA at least
        every ``interval`` seconds (a SLURM log shows the run is alive, and how far)."""
        self.done += n
        now = time.perf_counter()
        if self.start is not None and now - self.last_line >= self.interval:
            self.last_line = now
            self.report(now - self.start)

    def report(self, elapsed):
        if StageLine.open_line is self and not self.interrupted:
            click.echo("", err=True)  # end the stage's opening line
        self.interrupted = True  # its last line then names the stage again
        rate = self.done / elapsed if elapsed > 0 else 0.0
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        eta = (f", ETA {(self.total - self.done) / rate:.0f} s"
               if self.total is not None and rate > 0 else "")
        click.echo(f"{self.desc}: {count} {self.unit}(s), {rate:.3g}/s{eta}", err=True)

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
