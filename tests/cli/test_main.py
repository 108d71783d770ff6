"""The `synthgap` group: user errors end in one line, bugs keep their traceback, no command is hidden."""

import click
import pytest
from click.testing import CliRunner

from synthgap.cli import COMMANDS, main
from synthgap.errors import CheckpointError, ConfigError, DatasetError, DownloadError


@click.command()
@click.argument("kind")
def _raise(kind):
    """Raise the exception named KIND."""
    raise {"config": ConfigError("c.yaml: unknown key 'train.epoch'"),
           "dataset": DatasetError("bbox must be 4 numbers", file="a.json", record=3, field="bbox"),
           "checkpoint": CheckpointError("m.estimator: checkpoint file not found"),
           "download": DownloadError("giving up on https://host/x.zip after 2 retries"),
           "bug": ValueError("an unexpected value: a bug")}[kind]


@pytest.fixture
def invoke(monkeypatch):
    monkeypatch.setitem(COMMANDS, "raise", f"{__name__}:_raise")
    return lambda *args: CliRunner().invoke(main, list(args))


def test_user_errors_are_one_clean_line(invoke):
    r = invoke("raise", "config")
    assert r.exit_code == 2 and r.output == "Error: c.yaml: unknown key 'train.epoch'\n"
    r = invoke("raise", "dataset")
    assert r.exit_code == 1 and r.output == "Error: a.json: record 3: field 'bbox': bbox must be 4 numbers\n"
    for kind in ("checkpoint", "download"):
        r = invoke("raise", kind)
        assert r.exit_code == 1 and r.output.startswith("Error: ") and r.output.count("\n") == 1


def test_a_bug_is_not_dressed_up_as_a_user_error(invoke):
    r = invoke("raise", "bug")
    assert type(r.exception) is ValueError and "Error: an unexpected value" not in r.output


def test_a_command_whose_module_fails_to_import_is_listed_and_fails_loudly(monkeypatch):
    monkeypatch.setitem(COMMANDS, "broken", "synthgap.cli.no_such_module:command")
    assert "broken" in main.list_commands(click.Context(main))
    r = CliRunner().invoke(main, ["broken"])
    assert isinstance(r.exception, ModuleNotFoundError)


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_help_has_an_example(command):
    r = CliRunner().invoke(main, [command, "--help"])
    assert r.exit_code == 0 and "Example:" in r.output and f"synthgap {command} --" in r.output
