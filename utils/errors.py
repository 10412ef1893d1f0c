"""The one exception type the library raises for bad input."""


class InputError(Exception):
    """Input data or options that cannot be used, found where the fault is.

    The message is one line and names the file, row, shape or option at fault; the command-line
    scripts print it as ``Error: <message>`` and exit with status 1.
    """


class Interrupted(Exception):
    """Ctrl-C, with what the run has kept: its message replaces the default one."""
