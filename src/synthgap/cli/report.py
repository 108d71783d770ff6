"""`synthgap report`: the HTML report of trained runs (`synthgap.report`).

Heavy imports happen inside the command so `synthgap --help` stays fast.
"""

from __future__ import annotations

import click


@click.command()
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--out", default="report.html", show_default=True, help="The HTML file to write (local or URI).")
@click.option("--test-data", default=None,
              help="Test dataset of the runs (for PR curves and the gallery) when their run.json names none; "
                   "a path relative to the working directory, or a URI.")
@click.option("--name", "names", multiple=True, help="Display name per run, in order (default: run.json / folder).")
@click.option("--title", default="synthgap report", show_default=True, help="Page title and heading.")
@click.option("--gallery-images", type=click.IntRange(0), default=6, show_default=True,
              help="Test images drawn per run.")
@click.option("--score-thresh", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Gallery: draw detections scoring at least this.")
@click.option("--stats", "stats_json", default=None,
              help="A stats.json written by `synthgap stats`: adds the datasets' statistics and gap to the page.")
def report(run_dirs, out, test_data, names, title, gallery_images, score_thresh, stats_json):
    """One self-contained HTML page over RUN_DIRS (folders written by `synthgap evaluate --output`):
    metrics of both protocols, PR curves, per-class AP, training curves and a TP/FP/miss gallery."""
    from synthgap.report import build_report

    if names and len(names) != len(run_dirs):
        raise click.BadParameter(f"{len(names)} --name values for {len(run_dirs)} runs", param_hint="--name")
    try:
        build_report(list(run_dirs), out, test_data=test_data, names=list(names) or None, title=title,
                     gallery_images=gallery_images, score_thresh=score_thresh, stats=stats_json)
    except FileNotFoundError as e:  # a run folder without metrics
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {out} ({len(run_dirs)} runs)")
