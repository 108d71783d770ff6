"""Compile the pipelines to KFP v2 YAML (the files committed under ``pipelines/compiled/``)."""

from __future__ import annotations

import os
import tempfile
from typing import Iterable, Optional

from synthgap.io import storage
from synthgap.pipelines import PIPELINE_NAMES


def compile_pipeline(name: str, *, local: bool = False, gpus: Optional[int] = None) -> str:
    """The compiled YAML text of pipeline ``name`` (``gpus`` per train/evaluate pod; default: datasetinsights')."""
    from kfp import compiler

    from synthgap.pipelines.flows import build

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.yaml")
        compiler.Compiler().compile(build(name, local=local, gpus=gpus), package_path=path)
        with open(path, encoding="utf-8") as f:
            return f.read()


def compile_all(out_dir: str, names: Optional[Iterable[str]] = None, gpus: Optional[int] = None) -> list[str]:
    """Write ``OUT_DIR/<name>.yaml`` for each pipeline (all by default); returns the URIs written."""
    storage.makedirs(out_dir)
    written = []
    for name in names or PIPELINE_NAMES:
        uri = storage.join(out_dir, f"{name}.yaml")
        storage.write_text(uri, compile_pipeline(name, gpus=gpus))
        written.append(uri)
    return written
