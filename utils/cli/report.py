"""The ``novelsum-report`` command: its options, then one pipeline call."""

import click

from ..pipelines.report_from_outputs import run_report
from .errors import clean_errors
from .options import quiet_option
from .report_options import report_options


@click.command()
@click.argument("source", type=click.Path())
@click.option("--run", default=None,
              help="In a folder of several NovelSelect runs, the one to draw: its output stem "
                   "(novelselect_80_dense_0.5_dist_1.0).")
@click.option("--per_sample_csv", "--per-sample-csv", default=None,
              help="With a novelsum CSV: the per-sample table its run wrote (CSV or Parquet), "
                   "for the per-sample novelty and the map's numbers.")
@report_options("the selection's or the comparison's report", comparison=True)
@quiet_option
@clean_errors
def main(source, run, per_sample_csv, report, quiet):
    """Draw the HTML report of a finished run from what it wrote, running nothing again.

    SOURCE is a novelselect --output_dir (the pool's embeddings and texts are read from where
    the run record says; the pool's density factors are recomputed, as the run does not save
    them) or a novelsum --output_csv (its run record beside it names the datasets' embeddings).
    Example:

    \b
        novelsum-report outputs/picked --report outputs/picked.html
        novelsum-report outputs/novelsum_examples.csv --report outputs/novelsum.html \\
            --per_sample_csv outputs/per_sample.csv
    """
    if report is None:
        raise click.UsageError("give --report FILE.html: where to write the report")
    settings, texts = report
    click.echo(run_report(source, settings, run, per_sample_csv, texts, quiet))
