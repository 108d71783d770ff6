"""`synthgap pipelines compile`: write the Kubeflow pipelines' YAML (see docs/pipelines.md)."""

from __future__ import annotations

import click

from synthgap.pipelines import PIPELINE_NAMES


@click.group()
def pipelines():
    """Kubeflow Pipelines (KFP v2) for training and evaluation on a cluster."""


@pipelines.command("compile")
@click.option("--out", "out_dir", default="pipelines/compiled", show_default=True,
              help="Folder (or URI) to write <pipeline>.yaml files into.")
@click.option("--pipeline", "names", multiple=True, type=click.Choice(PIPELINE_NAMES),
              help="Compile only this pipeline (repeatable). Default: all of them.")
@click.option("--gpus", type=click.IntRange(0), default=None,
              help="nvidia.com/gpu per train/evaluate pod, fixed in the YAML (0: CPU only). Default: datasetinsights', "
                   "8 for train_on_synthdet_sample, 1 for the others.")
def compile_(out_dir: str, names: tuple[str, ...], gpus):
    """Compile the pipelines to KFP v2 YAML, ready to upload to a Kubeflow Pipelines cluster."""
    try:
        from synthgap.pipelines.compile import compile_all
    except ImportError as e:
        raise click.ClickException(f"{e}: install the pipelines extra: pip install 'synthgap[pipelines]'") from None
    for uri in compile_all(out_dir, names or None, gpus):
        click.echo(uri)
