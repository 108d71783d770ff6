"""`synthgap stats`, `synthgap report`, `synthgap study`: look at datasets and compare trained runs.

Heavy imports (matplotlib, torch) happen inside the commands so `synthgap --help` stays fast.
"""

from __future__ import annotations

import click


@click.command()
@click.argument("dataset")
@click.option("--compare", "others", multiple=True, help="Another dataset drawn on the same axes (repeatable).")
@click.option("--out", required=True, help="Folder for stats.json and the PNG plots (local or URI).")
@click.option("--format", "format", default=None, help="Force a reader (solo, perception, groceries-real, coco).")
@click.option("--name", "names", multiple=True,
              help="Display name per dataset, in order: DATASET first, then each --compare (default: folder names).")
@click.option("--no-plots", is_flag=True, help="Write stats.json only.")
@click.option("--features", "features", default=None, metavar="CHECKPOINT",
              help="With --compare: also the Fréchet distance between the datasets' image features (and per class, "
                   "object-crop features) from this trained checkpoint's backbone (docs/metrics.md).")
@click.option("--feature-images", type=click.IntRange(2), default=500, show_default=True,
              help="--features: images per dataset (an even spread), and at most 200 crops per class.")
@click.option("--leakage", is_flag=True,
              help="With --compare: also near-copies of each compared dataset's images in DATASET (its training "
                   "pool): pHash, and with --features that checkpoint's feature similarity (docs/training.md, "
                   "'Honest splits'). Decodes every image of both at reduced size. Default: off.")
def stats(dataset, others, out, format, names, no_plots, features, feature_images, leakage):
    """Per-class counts, objects per image, box size, aspect ratio, box-centre heatmap and visible pixels
    of DATASET; with --compare, every dataset on the same axes plus a numeric gap summary."""
    from synthgap.stats import write_stats

    roots = [dataset, *others]
    if names and len(names) != len(roots):
        raise click.BadParameter(f"{len(names)} --name values for {len(roots)} datasets", param_hint="--name")
    if features and not others:
        raise click.UsageError("--features needs --compare (a distance between two datasets)")
    if leakage and not others:
        raise click.UsageError("--leakage needs --compare (the test set checked against DATASET)")
    doc = write_stats(roots, out, format=format, names=list(names) or None, plots=not no_plots,
                      features=features, feature_images=feature_images, leakage=leakage)
    for name, d in doc["datasets"].items():
        size = d["histograms"]["box_size"]["mean"]
        click.echo(f"{name}: {d['images']} images, {d['objects']} objects, "
                   f"{d['objects_per_image_mean'] or 0:.2f} objects/image, mean box size "
                   f"{'-' if size is None else f'{size:.3f}'}")
    for name, gap in doc["gap"].items():
        parts = [f"{k} W1={v['wasserstein']:.4f} TV={v['total_variation']:.3f}"
                 for k, v in gap.items() if isinstance(v, dict) and v.get("wasserstein") is not None]
        classes = gap["class_distribution"]["total_variation"]
        click.echo(f"gap {doc['reference']} -> {name}: " + "; ".join(parts)
                   + ("" if classes is None else f"; classes TV={classes:.3f}"))
        fd = gap.get("features")
        if fd is not None:
            image, mean = fd.get("image"), fd.get("per_class_mean")
            click.echo(f"feature gap {doc['reference']} -> {name}: Fréchet distance of images "
                       f"{'-' if image is None else f'{image:.4f}'}; of object crops, mean over classes "
                       f"{'-' if mean is None else f'{mean:.4f}'}")
        for found in gap.get("leakage", []):
            click.echo(f"leakage {doc['reference']} -> {name}: {found['verdict']}")
    click.echo(f"wrote {out}/stats.json" + ("" if no_plots else " and plots"))


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
