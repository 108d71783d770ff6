"""`synthgap study`: the synthetic-vs-real study of a YAML config (`synthgap.study`), and its report.

Heavy imports happen inside the command so `synthgap --help` stays fast.
"""

from __future__ import annotations

import click


@click.command()
@click.option("--config", "config", required=True, help="Study YAML (see docs/report.md).")
@click.option("--out", required=True, help="Study folder: one sub-folder per cell and seed, then report.html.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def study(config, out, no_progress):
    """Train on synthetic; for each real fraction, train on that real subset from scratch and fine-tune the
    synthetic model on the same subset; evaluate all on the real test split and in their own domain (held-out
    data), over one or more seeds; finished cells are skipped on a rerun. Before anything trains, the data are
    checked: the test set shares no image with a training set, label maps match by class name, and subsets
    and cells made from other data are rebuilt or refused. Prints the summary (cells that did not learn in
    their own domain flagged) and what it says; ends with the HTML report."""
    import logging

    from synthgap.report import write_study_report
    from synthgap.study import format_summary, load_study_config, read_summary, run_study

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_study_config(config)
        summary = run_study(cfg, out, progress=not no_progress)
    except FileNotFoundError as e:  # a fine-tuning cell whose synthetic cell did not run
        raise click.ClickException(str(e)) from None
    click.echo("\n" + format_summary(read_summary(summary)))
    click.echo(f"\nstudy done; report: {write_study_report(out)}")
