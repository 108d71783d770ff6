"""A run as the report sees it: the folder `synthgap evaluate --output DIR` writes, plus optional extras.

Layout read (all optional except one of the metrics files or predictions):

    RUN_DIR/metrics_coco.json, metrics_unity.json   MetricsResult.to_dict() per protocol
    RUN_DIR/predictions.json                        COCO results (xywh pixels)
    RUN_DIR/run.json                                {"name", "test_data", "tb_log_dir", ...} (the study writes it)
    RUN_DIR/**/events.out.tfevents.*               TensorBoard logs (or under run.json's tb_log_dir)

The test dataset is needed for PR curves and the gallery: they come from re-scoring ``predictions.json``
with `synthgap.metrics`. It is ``run.json``'s ``test_data`` (relative to the run folder), else the report's
``--test-data`` / ``load_run(test_data=...)`` (relative to the working directory, as any path on a command
line): the run's own record wins. With ``label_alignment.json`` (`synthgap evaluate` writes it) only the
test classes the model was scored on are re-scored, as in its metrics files.
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthgap.errors import DatasetError, SynthgapError
from synthgap.io import storage

PROTOCOLS = ("coco", "unity")


@dataclass
class Run:
    """Everything the report shows about one run (one trained model evaluated on one test set)."""

    name: str
    path: str
    info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # protocol -> MetricsResult.to_dict()
    predictions: list[dict] | None = None
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # tag -> (steps, values)
    test_data: str | None = None
    samples: list | None = None        # test Samples, when the test data was found
    label_map: dict[int, str] | None = None
    result: Any = None                 # MetricsResult (coco) of predictions vs samples: PR arrays + matches
    notes: list[str] = field(default_factory=list)


def _resolve(base: str, path: str) -> str:
    """``path`` as given when absolute or a URI, else relative to ``base``."""
    if "://" in path or os.path.isabs(path) or not storage.is_local(base):
        return path if "://" in path or os.path.isabs(path) else storage.join(base, path)
    return os.path.join(storage.local_path(base), path)


def read_scalars(log_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All scalar series below a local TensorBoard log dir: tag -> (steps, values), read with
    tensorboard's EventAccumulator (every event folder found, merged by tag, sorted by step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its INFO "No path found after ..." is noise
    folders = _event_folders(log_dir)
    series: dict[str, dict[int, float]] = {}
    for folder in folders:
        acc = EventAccumulator(folder, size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for event in acc.Scalars(tag):
                series.setdefault(tag, {})[int(event.step)] = float(event.value)
    return {tag: (np.array(sorted(d), np.int64), np.array([d[k] for k in sorted(d)], np.float64))
            for tag, d in series.items()}


def _event_folders(log_dir: str) -> list[str]:
    """Folders below ``log_dir`` (itself included) holding TensorBoard event files."""
    rels = [p for p in storage.walk_files(log_dir) if "tfevents" in posixpath.basename(p)]
    return sorted({os.path.join(log_dir, posixpath.dirname(p)) if posixpath.dirname(p) else log_dir for p in rels})


def _find_event_dirs(run_dir: str) -> str | None:
    if storage.is_local(run_dir) and _event_folders(storage.local_path(run_dir)):
        return storage.local_path(run_dir)
    return None


def _test_set(run_dir: str, test_data: str, format: str | None, datasets: dict | None) -> tuple[list, dict]:
    """(samples, label map) of the test data, read once per (test data, format) through ``datasets``;
    restricted to the classes the run was scored on when it has ``label_alignment.json``."""
    from synthgap.data import open_dataset

    key = (test_data, format)
    if datasets is None or key not in datasets:
        ds = open_dataset(test_data, format)
        loaded = (list(ds), dict(ds.label_map))
        if datasets is not None:
            datasets[key] = loaded
    else:
        loaded = datasets[key]
    samples, label_map = loaded
    alignment = storage.join(run_dir, "label_alignment.json")
    if storage.exists(alignment):  # written by `synthgap evaluate`: the test classes the model knows
        from synthgap.data.labels import keep_classes

        kept = {int(k) for k in storage.read_json(alignment).get("test_classes", label_map)}
        if set(label_map) - kept:
            samples = keep_classes(samples, kept, root=test_data)
            label_map = {k: v for k, v in label_map.items() if k in kept}
    return samples, label_map


def load_run(run_dir: str, name: str | None = None, test_data: str | None = None,
             datasets: dict | None = None) -> Run:
    """Read a run folder; PR arrays and matches are computed when the test data can be opened.

    ``test_data``: the test set (path relative to the working directory, or URI) for a run whose ``run.json``
    names none. ``datasets``: a dict shared between calls, (test data, format) -> (samples, label map), so
    runs evaluated on the same test set read it once. A test set that cannot be read raises `DatasetError`
    naming the run, the test data and where it was named."""
    info = storage.read_json(storage.join(run_dir, "run.json")) if storage.exists(storage.join(run_dir, "run.json")) \
        else {}
    run = Run(name=name or info.get("name") or posixpath.basename(str(run_dir).rstrip("/\\").replace("\\", "/")),
              path=str(run_dir), info=info)
    for protocol in PROTOCOLS:
        path = storage.join(run_dir, f"metrics_{protocol}.json")
        if storage.exists(path):
            run.metrics[protocol] = storage.read_json(path)
    pred_path = storage.join(run_dir, "predictions.json")
    if storage.exists(pred_path):
        run.predictions = storage.read_json(pred_path)
    if not run.metrics and run.predictions is None:
        raise FileNotFoundError(f"{run_dir}: not a run folder (no metrics_coco.json, metrics_unity.json or "
                                f"predictions.json; write one with `synthgap evaluate --output {run_dir}`)")

    tb = info.get("tb_log_dir")
    tb_dir = _resolve(run_dir, tb) if tb else _find_event_dirs(run_dir)
    if tb_dir and storage.is_local(tb_dir) and os.path.isdir(storage.local_path(tb_dir)):
        run.scalars = read_scalars(storage.local_path(tb_dir))
    if not run.scalars:
        run.notes.append("no TensorBoard scalars found")

    if info.get("test_data"):  # the run's own record: relative to the run folder
        run.test_data, named_by = _resolve(run_dir, info["test_data"]), f"{storage.join(run_dir, 'run.json')} test_data"
    else:  # the caller's: relative to the working directory
        run.test_data, named_by = (storage.absolute(test_data), "--test-data") if test_data else (None, None)
    if run.test_data and run.predictions is not None:
        from synthgap.metrics import evaluate

        try:
            run.samples, run.label_map = _test_set(run_dir, run.test_data, info.get("format"), datasets)
            run.result = evaluate(run.samples, run.predictions, "coco", label_map=run.label_map)
        except (SynthgapError, OSError) as e:
            raise DatasetError(f"run {run_dir}: cannot score its predictions.json on the test data {run.test_data} "
                               f"(named by {named_by}): {e}") from e
        for protocol in PROTOCOLS:  # an evaluate output always has both; fill in what is missing
            if protocol not in run.metrics:
                run.metrics[protocol] = (run.result if protocol == "coco" else
                                         evaluate(run.samples, run.predictions, protocol,
                                                  label_map=run.label_map)).to_dict()
    elif run.predictions is not None:
        run.notes.append("test data unknown (pass --test-data): no PR curves or gallery")
    return run
