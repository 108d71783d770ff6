"""Every command and every flag documents itself (`synthgap COMMAND --help`)."""

import click
from click.testing import CliRunner

from synthgap.cli import COMMANDS, main


def _leaf_commands():
    ctx = click.Context(main)
    stack = [(name, main.get_command(ctx, name)) for name in main.list_commands(ctx)]
    while stack:
        name, cmd = stack.pop()
        if isinstance(cmd, click.Group):
            stack += [(f"{name} {sub}", cmd.get_command(ctx, sub)) for sub in cmd.list_commands(ctx)]
        else:
            yield name, cmd


def test_top_level_help_lists_every_registered_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output, name


def test_every_command_and_flag_has_help_text():
    missing = [f"{name} {p.name}" for name, cmd in _leaf_commands() for p in cmd.params
               if isinstance(p, click.Option) and not p.help]
    missing += [f"{name} (docstring)" for name, cmd in _leaf_commands() if not cmd.help]
    assert missing == []
    for name, _ in _leaf_commands():
        result = CliRunner().invoke(main, [*name.split(), "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, name
