"""Streaming per-dataset statistics: one pass over the samples, fixed histogram bins, numpy maths.

Every statistic is a histogram over bins that are the same for every dataset (`BINS`), so two
datasets can be drawn on the same axes and compared bin by bin without keeping any sample around.
Box sizes are ``sqrt(box area / image area)`` (0..1, unitless); aspect ratios are ``log2(w / h)``;
box centres are in normalised image coordinates (0..1, origin top-left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from synthgap.data.sample import Sample
from synthgap.data.visibility import VisiblePixels, side_table_folder, write_side_table  # noqa: F401 (moved; re-exported)

# statistic -> (bin edges, axis label). Values outside the edges are clipped into the first/last bin.
BINS: dict[str, tuple[np.ndarray, str]] = {
    "objects_per_image": (np.arange(0, 101, 1, dtype=np.float64), "objects per image"),
    "box_size": (np.linspace(0.0, 1.0, 51), "box size sqrt(box area / image area)"),
    "log2_aspect_ratio": (np.linspace(-4.0, 4.0, 49), "log2(width / height) of boxes"),
    "visible_size": (np.linspace(0.0, 1.0, 51), "visible size sqrt(visible pixels / image area)"),
    "visible_fraction": (np.linspace(0.0, 1.0, 21), "visible pixels / unoccluded pixels"),
}
HEATMAP_BINS = 24  # box-centre heatmap: HEATMAP_BINS x HEATMAP_BINS cells over the normalised image


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin, values outside [edges[0], edges[-1]] clipped into the end bins."""
    clipped = np.clip(values, edges[0], np.nextafter(edges[-1], -np.inf))
    return np.histogram(clipped, bins=edges)[0].astype(np.int64)


@dataclass
class _Moments:
    """Running count / sum / sum of squares / min / max of one statistic (float64)."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        self.n += int(values.size)
        self.total += float(values.sum())
        self.total_sq += float(np.square(values).sum())
        self.lo = min(self.lo, float(values.min()))
        self.hi = max(self.hi, float(values.max()))

    def to_dict(self) -> dict[str, Any]:
        if not self.n:
            return {"count": 0, "mean": None, "std": None, "min": None, "max": None}
        mean = self.total / self.n
        var = max(self.total_sq / self.n - mean * mean, 0.0)
        return {"count": self.n, "mean": mean, "std": math.sqrt(var), "min": self.lo, "max": self.hi}


@dataclass
class DatasetStats:
    """Accumulates the statistics of one dataset; `add` one `Sample` at a time, then `to_dict`."""

    name: str
    label_map: Mapping[int, str]
    images: int = 0
    objects: int = 0
    class_counts: dict[int, int] = field(default_factory=dict)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    moments: dict[str, _Moments] = field(default_factory=dict)
    heatmap: np.ndarray = field(default_factory=lambda: np.zeros((HEATMAP_BINS, HEATMAP_BINS), np.int64))
    visible_source: str | None = None

    def __post_init__(self) -> None:
        for key, (edges, _) in BINS.items():
            self.histograms.setdefault(key, np.zeros(len(edges) - 1, np.int64))
            self.moments.setdefault(key, _Moments())

    def _add(self, key: str, values: np.ndarray) -> None:
        values = np.asarray(values, np.float64).reshape(-1)
        values = values[np.isfinite(values)]
        self.histograms[key] += _histogram(values, BINS[key][0])
        self.moments[key].add(values)

    def add(self, sample: Sample, visible: tuple[np.ndarray, np.ndarray | None] | None = None,
            visible_source: str | None = None) -> None:
        """Count one image. ``visible``: (visible pixels (N,), unoccluded pixels (N,) or None) per box."""
        boxes = sample.boxes
        n = len(boxes)
        self.images += 1
        self.objects += n
        self._add("objects_per_image", np.array([n]))
        if n:
            labels, counts = np.unique(sample.labels, return_counts=True)
            for label, count in zip(labels.tolist(), counts.tolist()):
                self.class_counts[label] = self.class_counts.get(label, 0) + count
        image_area = float(sample.width) * float(sample.height)
        w, h = boxes[:, 2], boxes[:, 3]
        self._add("box_size", np.sqrt(np.maximum(w * h, 0.0) / image_area))
        positive = (w > 0) & (h > 0)
        self._add("log2_aspect_ratio", np.log2(w[positive] / h[positive]))
        cx = (boxes[:, 0] + w / 2) / sample.width
        cy = (boxes[:, 1] + h / 2) / sample.height
        cells = np.clip((np.stack([cy, cx], 1) * HEATMAP_BINS).astype(np.int64), 0, HEATMAP_BINS - 1)
        np.add.at(self.heatmap, (cells[:, 0], cells[:, 1]), 1)
        if visible is not None:
            vis, full = visible
            self.visible_source = self.visible_source or visible_source
            self._add("visible_size", np.sqrt(np.maximum(vis, 0.0) / image_area))
            if full is not None:
                self._add("visible_fraction", np.asarray(vis, np.float64) / np.maximum(full, 1.0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: counts, per-class counts (by name), histograms (edges + counts) and moments."""
        hist = {}
        for key, (edges, label) in BINS.items():
            counts = self.histograms[key]
            hist[key] = {"label": label, "edges": edges.tolist(), "counts": counts.tolist(),
                         **self.moments[key].to_dict()}
        names = {int(k): str(v) for k, v in self.label_map.items()}
        per_class = {names.get(k, str(k)): self.class_counts.get(k, 0) for k in sorted(set(names) | set(self.class_counts))}
        return {"name": self.name, "images": self.images, "objects": self.objects,
                "objects_per_image_mean": self.objects / self.images if self.images else None,
                "classes": len(names), "class_counts": per_class, "histograms": hist,
                "center_heatmap": {"bins": HEATMAP_BINS, "rows": "y (top to bottom)", "cols": "x (left to right)",
                                   "counts": self.heatmap.tolist()},
                "visible_pixels_source": self.visible_source}


def dataset_stats(samples: Iterable[Sample], label_map: Mapping[int, str], name: str,
                  root: str | None = None) -> DatasetStats:
    """One streaming pass over ``samples`` (any iterable: a `DetectionDataset` is read lazily);
    ``root`` is the dataset folder, where the generator's side table may be."""
    stats = DatasetStats(name=name, label_map=dict(label_map))
    visible = VisiblePixels(root)
    for sample in samples:
        found = visible(sample)
        if found is None:
            stats.add(sample)
        else:
            stats.add(sample, found[0], found[1])
    return stats
