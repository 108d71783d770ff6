"""Experiment tracking in MLflow (``--mlflow-uri``; optional: ``pip install 'synthgap[mlflow]'``).

A few functions, no callbacks: the CLI opens a run with `run`, the training loop calls `log_epoch`
after each epoch, and the CLI logs the final metrics and artifacts. Every function is a no-op when
no MLflow run is active, so code paths without ``--mlflow-uri`` never import mlflow. Under torchrun
only rank 0 opens a run. A local folder (or ``file:`` URI) is an MLflow file store, which recent
MLflow versions accept only with ``MLFLOW_ALLOW_FILE_STORE=true``: naming a folder asks for one, so
`run` sets that variable for the process (an explicit value in the environment wins).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from typing import Any, Iterator, Mapping, Optional

from synthgap.io import storage
from synthgap.errors import ConfigError


def _mlflow():
    """The mlflow module when a run is active in this process, else None (mlflow is never imported here)."""
    mlflow = sys.modules.get("mlflow")
    return mlflow if mlflow is not None and mlflow.active_run() is not None else None


def active() -> bool:
    """True while an MLflow run opened by `run` is active."""
    return _mlflow() is not None


def tracking_uri(uri: str) -> str:
    """``uri`` as MLflow wants it: a local folder becomes an absolute ``file://`` URI."""
    if "://" in uri or uri.startswith(("file:", "sqlite:", "databricks", "postgresql:", "mysql:")):
        return uri
    return "file://" + os.path.abspath(uri)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"optimizer.lr": "0.0002", ...}`` (MLflow params are strings)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = str(value)
    return out


@contextlib.contextmanager
def run(uri: Optional[str], experiment: str = "synthgap", run_name: Optional[str] = None,
        params: Optional[Mapping[str, Any]] = None) -> Iterator[Optional[str]]:
    """Open an MLflow run at tracking ``uri`` (None: do nothing) and log ``params`` (flattened); yields the
    run id (None when not tracking). The run ends FAILED when the body raises, FINISHED otherwise."""
    if not uri or os.environ.get("RANK", "0") != "0":
        yield None
        return
    try:
        import mlflow
    except ImportError:
        raise ConfigError("--mlflow-uri needs MLflow: pip install 'synthgap[mlflow]'") from None
    resolved = tracking_uri(uri)
    if resolved.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(resolved)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as active_run:
        if params:
            mlflow.log_params(flatten(params))
        yield active_run.info.run_id


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric, finite values only (MLflow rejects NaN in some stores; COCO uses -1 for 'no data')."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key.replace("@", "_at_")] = float(value)
    return out


def log_epoch(epoch: int, metrics: Mapping[str, Any]) -> None:
    """Per-epoch metrics (loss, images/s, validation AP...) at step ``epoch`` (1-based)."""
    mlflow = _mlflow()
    if mlflow is not None:
        mlflow.log_metrics(_finite(metrics), step=epoch)


def log_final(metrics: Mapping[str, Any], prefix: str = "") -> None:
    """Final metrics (no step), e.g. the test set's 12 COCO stats under ``prefix`` ``test_coco_``."""
    mlflow = _mlflow()
    if mlflow is not None:
        mlflow.log_metrics({f"{prefix}{k}": v for k, v in _finite(metrics).items()})


def log_text(text: str, name: str) -> None:
    """A text artifact (the resolved config, a report table) named ``name`` in the run."""
    mlflow = _mlflow()
    if mlflow is not None:
        mlflow.log_text(text, name)


def log_files(uris, folder: str = "") -> None:
    """Copy files (local paths or URIs, read through `synthgap.io.storage`) into the run's artifacts."""
    mlflow = _mlflow()
    if mlflow is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for uri in uris:
            local = os.path.join(tmp, os.path.basename(uri.rstrip("/")))
            with open(local, "wb") as f:
                f.write(storage.read_bytes(uri))
            mlflow.log_artifact(local, artifact_path=folder or None)
