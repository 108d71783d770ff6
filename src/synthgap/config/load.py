"""The one config loader: a path, URI or packaged recipe name -> a validated `Config`, with dotted
``--override key=value`` strings applied last.

A datasetinsights estimator YAML (a mapping with an ``estimator`` key) is recognised here, once, and
translated by `synthgap.config.datasetinsights.translate` (a pure mapping -> mapping function); the lines
saying what became of each of its keys are returned by `read_config`. Override strings are parsed only
here, at the edge where users write them (CLI flags, YAML lists): library code changes a `Config` with
`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import typing
from typing import Any, Iterable

import yaml

from synthgap.config import datasetinsights
from synthgap.config.schema import Config, check_value, renamed
from synthgap.errors import ConfigError
from synthgap.io import storage

_RECIPES = ("synthgap.config", "recipes")  # the package folder holding the packaged recipes


def packaged_configs() -> list[str]:
    """Names of the configs shipped inside the package (``synthgap/config/recipes/*.yaml``)."""
    root = importlib.resources.files(_RECIPES[0]) / _RECIPES[1]
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_source(source: str) -> str:
    """YAML text of a packaged recipe name (``cpu_small``), a local path or a URI."""
    name = source[:-5] if source.endswith(".yaml") else source
    if "/" not in source and os.sep not in source and not os.path.exists(source) and name in packaged_configs():
        return (importlib.resources.files(_RECIPES[0]) / _RECIPES[1] / f"{name}.yaml").read_text("utf-8")
    if not storage.exists(source):
        raise ConfigError(f"{source}: config not found (neither a file/URI nor a packaged config: "
                          f"{', '.join(packaged_configs())})")
    return storage.read_text(source)


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=3"`` -> ``("train.epochs", 3)``; the value is read as a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"--override {text!r}: expected KEY=VALUE with a dotted key, e.g. train.epochs=3")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--override {text!r}: value is not valid YAML ({e})") from None
    return key.strip(), parsed


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """A copy of ``cfg`` with dotted ``key=value`` strings set; each value is validated against its field's
    type, and the section holding it is checked again (its range rules)."""
    cfg = dataclasses.replace(cfg, **{f.name: dataclasses.replace(getattr(cfg, f.name))
                                      for f in dataclasses.fields(cfg)})
    for text in datasetinsights.split_overrides(overrides):
        key, value = parse_override(text)
        source = f"--override {text}"
        key = renamed(key, source, value)
        parts = key.split(".")
        node: Any = cfg
        for i, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []
            if part not in names:
                raise ConfigError(f"{source}: unknown key '{'.'.join(parts[:i + 1])}'"
                                  + (f" (known keys here: {', '.join(names)})" if names else ""))
            if i == len(parts) - 1:
                hint = typing.get_type_hints(type(node))[part]
                if dataclasses.is_dataclass(hint):
                    raise ConfigError(f"{source}: '{key}' is a section; override one of its keys instead")
                setattr(node, part, check_value(value, hint, key, source))
                node.check(source)
            else:
                node = getattr(node, part)
    return cfg


def read_config(source: str | None = None, overrides: Iterable[str] = ()) -> tuple[Config, list[str]]:
    """(config, translation notes) from a path, URI or packaged name (None = all defaults).

    For a datasetinsights estimator YAML the notes say, one line per key, what it became (translated, or
    accepted with no effect and why); for a synthgap config they are empty. An override whose key is in the
    datasetinsights file sets it there, before translation (its ``--override "a=1 b=2"`` form is accepted);
    any other is a synthgap key, set after."""
    notes: list[str] = []
    if source is None:
        return apply_overrides(Config(), overrides), notes
    text = read_source(source)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({e})") from None
    if datasetinsights.is_estimator_config(raw):
        raw, notes, overrides = datasetinsights.translate(raw, source, overrides)
    return apply_overrides(Config.from_dict(raw, source), overrides), notes


def load_config(source: str | None = None, overrides: Iterable[str] = ()) -> Config:
    """`read_config` without the notes: the config alone."""
    return read_config(source, overrides)[0]


def dump_config(cfg: Config) -> str:
    """YAML text of a config (every key, defaults included); `load_config` reads it back equal."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
