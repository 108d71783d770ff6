"""`synthgap stats`: what is in one dataset, and how it compares with others (`synthgap.stats`).

Heavy imports (matplotlib, torch) happen inside the command so `synthgap --help` stays fast.
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
