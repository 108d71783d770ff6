"""Per-box visible pixel counts (occlusion) of a dataset, from whichever source it has, and the side table
that carries them beside a COCO subset. Used by `synthgap.metrics.attributes` (AP by occlusion),
`synthgap.stats` and the study's subsets, so it lives in the data layer below all three."""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any, Iterable, Mapping

import numpy as np

from synthgap.data.sample import Sample
from synthgap.io import storage


def side_table_folder(root: str) -> str:
    """The dataset folder of ``root``: itself, or the folder of a ``.json`` annotation file."""
    if not str(root).lower().endswith(".json"):
        return root
    if storage.is_local(root):
        return os.path.dirname(os.path.abspath(storage.local_path(root)))
    return posixpath.dirname(root)


def write_side_table(folder: str, rows: Iterable[Mapping[str, Any]], tag: str = "subset") -> str:
    """Write ``folder/generator/frames.<tag>.jsonl``, the generator's per-frame table (``frame`` = the
    sample's ``image_id`` there, ``visible_pixels``, ``full_pixels`` per box in box order), which
    `VisiblePixels` reads: how a subset written elsewhere keeps its visible pixels. Returns the path."""
    path = storage.join(folder, "generator", f"frames.{tag}.jsonl")
    storage.write_text(path, "".join(json.dumps(dict(r), separators=(",", ":")) + "\n" for r in rows))
    return path


class VisiblePixels:
    """Per-box visible pixel counts of a dataset, when it has them.

    Sources, in order: ``Sample.metadata["visible_pixels"]`` (+ ``"full_pixels"``); the generator's side
    table ``ROOT/generator/frames.*.jsonl`` (frame k = SOLO ``sequence`` or the image id); Unity SOLO's
    ``RenderedObjectInfo`` metric in the frame file (``visiblePixels`` per ``instanceId``; the frame is read
    a second time); legacy Perception's "rendered object info" metric in ``metrics_*.json`` (``visible_pixels``
    per capture and ``instance_id``, read once); else the annotated areas (``Sample.areas``, e.g. COCO
    segmentation areas). The last three give visible pixels without the unoccluded count. None when none
    applies. ``root`` may be a COCO ``.json`` file: the side table is then looked for in its folder (where
    the generator and `synthgap study`'s subsets put it).
    """

    def __init__(self, root: str | None = None):
        self.root = root
        self._legacy: dict[str, dict[str, float]] | None = None  # legacy Perception metrics, read on first use
        self.table: dict[int, tuple[list, list | None]] = {}
        paths = storage.glob(storage.join(side_table_folder(root), "generator", "frames.*.jsonl")) \
            if root is not None and not storage.is_http(root) else []
        for path in paths:
            for line in storage.read_text(path).splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if "visible_pixels" in rec:
                        self.table[int(rec["frame"])] = (rec["visible_pixels"], rec.get("full_pixels"))

    def __call__(self, sample: Sample) -> tuple[tuple[np.ndarray, np.ndarray | None], str] | None:
        n = len(sample)
        meta = sample.metadata or {}
        if "visible_pixels" in meta and len(meta["visible_pixels"]) == n:
            full = meta.get("full_pixels")
            return (np.asarray(meta["visible_pixels"], np.float64),
                    np.asarray(full, np.float64) if full is not None and len(full) == n else None), "metadata"
        if self.table:
            key = meta.get("sequence")
            key = int(key) if isinstance(key, (int, np.integer)) else int(sample.image_id)
            row = self.table.get(key)
            if row is not None and len(row[0]) == n:
                full = row[1]
                return (np.asarray(row[0], np.float64),
                        np.asarray(full, np.float64) if full is not None and len(full) == n else None), "generator"
        solo = self._solo_metric(sample)
        if solo is not None:
            return (solo, None), "SOLO RenderedObjectInfo"
        legacy = self._legacy_metric(sample)
        if legacy is not None:
            return (legacy, None), "Perception rendered object info"
        if sample.areas is not None:
            return (sample.areas, None), "annotated areas"
        return None

    def _solo_metric(self, sample: Sample) -> np.ndarray | None:
        """visiblePixels of each box from the SOLO frame's RenderedObjectInfo metric (matched by instance id)."""
        meta = sample.metadata or {}
        if self.root is None or "step" not in meta or not str(meta.get("file", "")).endswith(".json") \
                or len(sample.instance_ids) != len(sample):
            return None
        frame = storage.read_json(storage.join(self.root, meta["file"]))
        sensor = meta.get("sensor_id")
        for metric in frame.get("metrics") or []:
            if str(metric.get("@type", "")).endswith("RenderedObjectInfoMetric") \
                    and metric.get("sensorId") in (sensor, "", None):
                pixels = {str(v.get("instanceId")): v.get("visiblePixels") for v in metric.get("values") or []}
                found = [pixels.get(str(i)) for i in sample.instance_ids]
                if all(isinstance(v, (int, float)) for v in found):
                    return np.asarray(found, np.float64)
        return None


    def _legacy_metric(self, sample: Sample) -> np.ndarray | None:
        """visible_pixels of each box from a legacy Perception dataset's "rendered object info" metric
        (metrics_*.json, read once, matched by capture id and instance id)."""
        meta = sample.metadata or {}
        if self.root is None or "capture_id" not in meta or len(sample.instance_ids) != len(sample):
            return None
        if self._legacy is None:
            from synthgap.data.perception import find_json_folder, read_visible_pixels

            folder = find_json_folder(self.root) if storage.isdir(self.root) else None
            self._legacy = read_visible_pixels(folder) if folder is not None else {}
        pixels = self._legacy.get(str(meta["capture_id"]))
        if pixels is None:
            return None
        found = [pixels.get(str(i)) for i in sample.instance_ids]
        return np.asarray(found, np.float64) if all(v is not None for v in found) else None
