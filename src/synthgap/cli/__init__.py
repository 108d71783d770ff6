"""The `synthgap` command. Sub-commands live in the modules named below and are imported only
when used, so `synthgap --help` stays fast (no torch import)."""

from __future__ import annotations

import importlib
import importlib.util

import click

from synthgap import __version__

# command name -> "module:attribute" of a click command.
COMMANDS = {
    "info": "synthgap.cli.data:info",
    "convert": "synthgap.cli.data:convert",
    "score": "synthgap.cli.score:score",
    "train": "synthgap.cli.train:train",
    "evaluate": "synthgap.cli.train:evaluate",
    "predict": "synthgap.cli.train:predict",
    "generate": "synthgap.cli.generate:generate",
    "demo": "synthgap.cli.generate:demo",
    "download": "synthgap.cli.download:download",
    "pipelines": "synthgap.cli.pipelines:pipelines",
    "stats": "synthgap.cli.analysis:stats",
    "report": "synthgap.cli.analysis:report",
    "study": "synthgap.cli.analysis:study",
}


class LazyGroup(click.Group):
    """A click group that imports each sub-command's module on first use."""

    def list_commands(self, ctx):
        return sorted(name for name, target in COMMANDS.items()
                      if importlib.util.find_spec(target.split(":")[0]) is not None)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        if importlib.util.find_spec(module) is None:
            return None
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="synthgap")
def main():
    """synthgap: measure how well a synthetic dataset trains a detector for real images.

    Read datasets (Unity Perception legacy, SOLO, COCO, UnityGroceries-Real), generate synthetic
    data, train and evaluate Faster R-CNN, and score predictions with exact COCO / datasetinsights
    metrics. Run `synthgap COMMAND --help` for each command's flags.
    """
