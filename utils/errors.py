"""The one exception type the library raises for bad input, and how its messages name options."""

import contextlib

_option_names = {}  # parameter -> command-line option, while a command runs


class InputError(Exception):
    """Input data or options that cannot be used, found where the fault is.

    The message is one line and names the file, row, shape or parameter at fault; the
    command-line scripts print it as ``Error: <message>`` and exit with status 1.
    """


def option(parameter):
    """How a message names ``parameter``: its command-line option (``--k``) while a command
    runs, else the Python parameter itself (``k``)."""
    return _option_names.get(parameter, parameter)


def setting(parameter, value):
    """``--k 5`` while a command runs, ``k=5`` from Python."""
    name = _option_names.get(parameter)
    return f"{name} {value}" if name else f"{parameter}={value}"


@contextlib.contextmanager
def options_named(names):
    """Messages raised inside name parameters as the command-line ``names`` map them."""
    saved = dict(_option_names)
    _option_names.update(names)
    try:
        yield
    finally:
        _option_names.clear()
        _option_names.update(saved)


class RunFailed(Exception):
    """A run that cannot go on for a reason outside its inputs (an engine that did not start).

    One line, as for ``InputError``; under ``torchrun`` the rank that meets it says it, and the
    others leave (it is not a fault every rank would find alike).
    """


class Interrupted(Exception):
    """Ctrl-C, with what the run has kept: its message replaces the default one."""
