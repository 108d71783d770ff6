"""Experiment tracking in MLflow (``--mlflow-uri``; optional: ``pip install 'synthgap[mlflow]'``).

A few functions, no callbacks: the CLI opens a run with `run`, the training loop calls `log_epoch`
after each epoch's checkpoints are written, and the CLI logs the final metrics and artifacts. Every
function is a no-op when no run is open, so code paths without ``--mlflow-uri`` never import mlflow.
Under torchrun only rank 0 opens a run. A local folder (or ``file:`` URI) is an MLflow file store,
which recent MLflow versions accept only with ``MLFLOW_ALLOW_FILE_STORE=true``: naming a folder asks
for one, so `run` sets that variable for the process (an explicit value in the environment wins).

Tracking never costs a run its checkpoints. Opening the run is checked at the start (a bad or
unreachable URI is a `TrackingError` in one line, before any training). After that every call is
best-effort: the first one that fails logs one warning line and tracking stops for the rest of the
run, which goes on (``strict=True``, ``--mlflow-strict``: the failure stops the run instead, after the
epoch's checkpoints). Each call is bounded: MLflow's HTTP client retries 7 times with a backoff
factor of 2 and waits up to 120 s per request by default (an unreachable server cost 252 s of silent
retries; a dead one stalled training for over 7 min), so a run sets `HTTP_LIMITS` (10 s per request,
2 retries, backoff factor 1: a dead server costs about 3-5 s once, a hanging one about 35 s once)
unless the environment sets them. The run talks to MLflow through an ``MlflowClient`` of its own,
so a failure leaves no half-open "active run" behind in mlflow's global state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Optional

from synthgap.errors import ConfigError, TrackingError
from synthgap.io import storage

log = logging.getLogger(__name__)

# MLflow's own variables, set for the duration of a run unless the environment sets them (see above)
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


@dataclasses.dataclass
class _Run:
    client: Any                   # mlflow.tracking.MlflowClient of the tracking URI
    run_id: str
    uri: str                      # as the user wrote it (messages)
    strict: bool = False
    failed: Optional[str] = None  # what failed first; no further calls once set


_current: Optional[_Run] = None


def active() -> bool:
    """True while a run opened by `run` is open and tracking has not failed."""
    return _current is not None and _current.failed is None


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
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` set in ``os.environ`` for the block where the environment does not set them already."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _reason(e: BaseException) -> str:
    """An exception as one short line (MLflow's HTTP errors run over several long lines)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@contextlib.contextmanager
def run(uri: Optional[str], experiment: str = "synthgap", run_name: Optional[str] = None,
        params: Optional[Mapping[str, Any]] = None, *, strict: bool = False) -> Iterator[Optional[str]]:
    """Open an MLflow run at tracking ``uri`` (None: do nothing) and log ``params`` (flattened); yields the
    run id (None when not tracking). The run ends FAILED when the body raises, FINISHED otherwise.

    TrackingError when the run cannot be opened (a bad URI, no server there). ``strict``: a later failed
    call raises TrackingError instead of a warning (see the module docstring)."""
    global _current
    if not uri or os.environ.get("RANK", "0") != "0":
        yield None
        return
    try:
        from mlflow.entities import RunStatus
        from mlflow.tracking import MlflowClient
        from mlflow.tracking.context.registry import resolve_tags
    except ImportError:
        raise ConfigError("--mlflow-uri needs MLflow: pip install 'synthgap[mlflow]'") from None
    resolved = tracking_uri(uri)
    if resolved.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    with _environment(HTTP_LIMITS):
        try:
            client = MlflowClient(resolved)
            found = client.get_experiment_by_name(experiment)
            if found is not None and found.lifecycle_stage == "deleted":
                raise TrackingError(f"--mlflow-uri {uri}: experiment {experiment!r} is deleted there; restore it "
                                    "or pass another --mlflow-experiment")
            experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
            tags = resolve_tags({"mlflow.runName": run_name} if run_name else None)
            opened = client.create_run(experiment_id, run_name=run_name, tags=tags)
        except TrackingError:
            raise
        except Exception as e:  # MLflow raises MlflowException, requests' errors, ValueError ... by store
            raise TrackingError(f"--mlflow-uri {uri}: cannot open an MLflow run there ({_reason(e)}); check the URI "
                                "and that its server runs, or drop --mlflow-uri") from None
        _current = _Run(client, opened.info.run_id, uri, strict)
        status = RunStatus.to_string(RunStatus.FAILED)
        try:
            if params:
                _call("logging the params", lambda c, r: c.log_batch(r, params=_params(flatten(params))))
            yield _current.run_id
            status = RunStatus.to_string(RunStatus.FINISHED)
        finally:
            done, _current = _current, None
            if done.failed is None:
                try:
                    done.client.set_terminated(done.run_id, status)
                except Exception as e:  # the run's work is done: say so, never hide the body's own error
                    log.warning("MLflow at %s: ending the run failed (%s); it stays RUNNING there", uri, _reason(e))


def _params(flat: Mapping[str, str]) -> list:
    from mlflow.entities import Param

    return [Param(k, v) for k, v in flat.items()]


def _call(what: str, call: Callable[[Any, str], None]) -> None:
    """``call(client, run_id)`` when tracking; a failure warns once and stops tracking (strict: raises)."""
    current = _current
    if current is None or current.failed is not None:
        return
    try:
        call(current.client, current.run_id)
    except Exception as e:
        reason = _reason(e)
        if current.strict:
            current.failed = f"{what}: {reason}"
            raise TrackingError(f"MLflow at {current.uri}: {what} failed ({reason}); the run stops (--mlflow-strict; "
                                "the checkpoints written so far are kept)") from None
        current.failed = f"{what}: {reason}"
        log.warning("MLflow at %s: %s failed (%s); training goes on without tracking for the rest of the run "
                    "(checkpoints and TensorBoard are not affected; --mlflow-strict stops instead)",
                    current.uri, what, reason)


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric, finite values only (MLflow rejects NaN in some stores; COCO uses -1 for 'no data')."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key.replace("@", "_at_")] = float(value)
    return out


def _log_metrics(what: str, metrics: Mapping[str, float], step: int = 0) -> None:
    if _current is None or not metrics:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    _call(what, lambda c, r: c.log_batch(r, metrics=[Metric(k, v, now, step) for k, v in metrics.items()]))


def log_epoch(epoch: int, metrics: Mapping[str, Any]) -> None:
    """Per-epoch metrics (loss, images/s, validation AP...) at step ``epoch`` (1-based)."""
    _log_metrics(f"logging epoch {epoch}'s metrics", _finite(metrics), step=epoch)


def log_final(metrics: Mapping[str, Any], prefix: str = "") -> None:
    """Final metrics (no step), e.g. the test set's 12 COCO stats under ``prefix`` ``test_coco_``."""
    _log_metrics("logging the final metrics", {f"{prefix}{k}": v for k, v in _finite(metrics).items()})


def log_text(text: str, name: str) -> None:
    """A text artifact (the resolved config, a report table) named ``name`` in the run."""
    _call(f"logging {name}", lambda c, r: c.log_text(r, text, name))


def log_files(uris, folder: str = "") -> None:
    """Copy files (local paths or URIs, read through `synthgap.io.storage`) into the run's artifacts."""
    if not active():
        return
    with tempfile.TemporaryDirectory() as tmp:
        for uri in uris:
            local = os.path.join(tmp, os.path.basename(uri.rstrip("/")))
            with open(local, "wb") as f:
                f.write(storage.read_bytes(uri))
            _call(f"logging {os.path.basename(local)}", lambda c, r: c.log_artifact(r, local, folder or None))
