"""Option types of the three commands: the reference's space-separated lists, finite floats."""

import math
import re
import sys

import click

from ..runtime.reporting import is_main_rank

# How library messages name parameters while a command runs (``utils.errors.option``).
OPTION_NAMES = {"k": "--k", "neighbors": "--neighbors", "reference": "--dense_ref_dir",
                "exclude_self": "--exclude_self", "density_power": "--density_power",
                "model_path": "--model_path", "backend": "--backend", "given": "--given_dir",
                "max_length": "--max_length", "dtype": "--dtype"}

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


def gpu_option(help_text):
    return click.option("--gpu_id", "--gpu-id", type=int, default=None, show_default="GPU 0 "
                        "if there is one, else CPU", help=help_text)


embedding_field_option = click.option(
    "--embedding_field", "--embedding-field", default=None,
    help="The column of .parquet embedding shards that holds the vectors (when there are "
         "several).")


replace_option = click.option(
    "--overwrite", is_flag=True,
    help="Replace outputs that another run (other parameters) wrote under the same names.")
quiet_option = click.option("--quiet", is_flag=True, help="No progress bars or notices on stderr.")

mixed_embeddings_option = click.option(
    "--allow_mixed_embeddings", "--allow-mixed-embeddings", is_flag=True,
    help="Go on when the embedding sets read together were embedded with different models or "
         "--max_length (refused otherwise, as their vectors are not comparable); the run "
         "record says so.")

debug_option = click.option(
    "--debug", is_flag=True,
    help="Under torchrun, a rank that fails unexpectedly also writes the traceback after its "
         "one-line error (one process always shows it).")
