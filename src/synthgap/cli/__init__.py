"""The `synthgap` command. Sub-commands live in the modules named below and are imported only
when used, so `synthgap --help` stays fast (no torch import).

A `synthgap.errors.SynthgapError` (bad input: a dataset, config, checkpoint or download problem) ends
any command with its one-line message (exit status 2 for a config error, else 1); every other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib

import click

from synthgap import __version__
from synthgap.errors import ConfigError, SynthgapError

# command name -> "module:attribute" of a click command.
COMMANDS = {
    "info": "synthgap.cli.data:info",
    "convert": "synthgap.cli.data:convert",
    "configs": "synthgap.cli.config:configs",
    "score": "synthgap.cli.score:score",
    "train": "synthgap.cli.engine:train",
    "evaluate": "synthgap.cli.engine:evaluate",
    "predict": "synthgap.cli.engine:predict",
    "generate": "synthgap.cli.generate:generate",
    "demo": "synthgap.cli.demo:demo",
    "download": "synthgap.cli.download:download",
    "pipelines": "synthgap.cli.pipelines:pipelines",
    "stats": "synthgap.cli.stats:stats",
    "report": "synthgap.cli.report:report",
    "study": "synthgap.cli.study:study",
}


class _ConfigProblem(click.ClickException):
    exit_code = 2  # like a bad option: the command line (or the config it names) needs fixing


class LazyGroup(click.Group):
    """A click group that imports each sub-command's module on first use, and turns a `SynthgapError`
    into a clean message (once, for every command)."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)  # an import error is a bug: shown, not hidden

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            raise _ConfigProblem(str(e)) from None
        except SynthgapError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="synthgap")
def main():
    """synthgap: measure how well a synthetic dataset trains a detector for real images.

    Read datasets (Unity Perception legacy, SOLO, COCO, UnityGroceries-Real), generate synthetic
    data, train and evaluate Faster R-CNN, and score predictions with exact COCO / datasetinsights
    metrics. Run `synthgap COMMAND --help` for each command's flags.
    """
