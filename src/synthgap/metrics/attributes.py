"""AP and recall by object attribute: which objects a model misses (small, occluded, cut by the border, elongated).

Each attribute gives every ground-truth box a value and splits the values into bins; AP of a bin is COCO's
AP with the boxes outside the bin ignored, exactly as COCO's small/medium/large area ranges: a detection
matched to an ignored box is ignored, and an unmatched detection is ignored when its *own* value is
outside the bin. The COCO engine (`synthgap.metrics.coco.evaluate_coco`) does the matching, with the
attribute value in place of the area.

Attributes (``ATTRIBUTES``):

* ``size``: box area in pixels^2 with COCO's bins (small < 32^2 <= medium < 96^2 <= large); the AP values
  equal COCO's APs / APm / APl.
* ``aspect``: width / height of the box (xywh pixels), bins <1:2 (tall) .. square .. >2:1 (wide).
* ``truncation``: whether the box touches the image border (within ``border_px`` = 1 pixel): a box cut by
  the image edge. A detection is tested the same way.
* ``occlusion``: visible fraction = visible pixels / unoccluded pixels of the object, where the data has
  both (the generator's ``frames.*.jsonl`` side table or ``Sample.metadata["visible_pixels"]`` and
  ``["full_pixels"]``; see `synthgap.data.visibility.VisiblePixels`). A detection has no visible fraction: an unmatched
  detection is a false positive in every occlusion bin. Boxes without the numbers are ignored in every bin;
  the attribute is left out (``available: false``) when no box has them.

Bins are half-open ``[lo, hi)`` except COCO's inclusive size bins.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from synthgap.metrics.coco import DEFAULT_AREA_RANGES, CocoParams, evaluate_coco
from synthgap.metrics.inputs import Detections, GroundTruth
from synthgap.metrics.result import attributes_table  # noqa: F401 (lives beside its one user; re-exported)

ATTRIBUTES = ("size", "aspect", "truncation", "occlusion")
ASPECT_BINS = (("<1:2", 0.0, 0.5), ("1:2-4:5", 0.5, 0.8), ("square", 0.8, 1.25), ("5:4-2:1", 1.25, 2.0),
               (">2:1", 2.0, math.inf))
TRUNCATION_BINS = (("inside", 0.0, 0.5), ("at border", 0.5, 1.5))  # value: 1.0 at the border, 0.0 inside
OCCLUSION_BINS = (("<50%", 0.0, 0.5), ("50-70%", 0.5, 0.7), ("70-90%", 0.7, 0.9), (">=90%", 0.9, math.inf))
TITLES = {"size": "size (COCO areas)", "aspect": "aspect ratio w/h", "truncation": "touches image border",
          "occlusion": "visible fraction (occlusion)"}
_UNKNOWN = -math.inf  # a box without the attribute: outside every bin, inside "all"


def box_attributes(samples: Sequence, *, root: str | None = None, border_px: float = 1.0) -> dict[str, Any]:
    """Per ground-truth box (rows in sample then box order, as `ground_truth_from_samples`): ``aspect``,
    ``truncation`` (1.0 at the border, 0.0 inside), ``occlusion`` (visible fraction, NaN where unknown) and
    ``occlusion_source`` (where the visible pixels came from, or None)."""
    from synthgap.data.visibility import VisiblePixels

    visible = VisiblePixels(root)
    aspect, trunc, occl = [], [], []
    source = None
    for s in samples:
        b = np.asarray(s.boxes, np.float64).reshape(-1, 4)
        aspect.append(_aspect(b))
        trunc.append(_at_border(b, np.full(len(b), float(s.width)), np.full(len(b), float(s.height)), border_px))
        frac = np.full(len(b), np.nan)
        # only sources with the unoccluded count too (SOLO's metric has none: not worth re-reading its frames)
        has_counts = "visible_pixels" in (s.metadata or {}) or bool(visible.table)
        found = visible(s) if len(b) and has_counts else None
        if found is not None and found[0][1] is not None:
            vis, full = found[0]
            frac = np.where(full > 0, vis / np.maximum(full, 1e-12), np.nan)
            source = source or found[1]
        occl.append(frac)
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0))
    return {"aspect": cat(aspect), "truncation": cat(trunc), "occlusion": cat(occl), "occlusion_source": source}


def _aspect(b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b[:, 3] > 0, b[:, 2] / np.where(b[:, 3] > 0, b[:, 3], 1.0), math.inf)


def _at_border(b: np.ndarray, width: np.ndarray, height: np.ndarray, border_px: float) -> np.ndarray:
    touch = (b[:, 0] <= border_px) | (b[:, 1] <= border_px) | (b[:, 0] + b[:, 2] >= width - border_px) \
        | (b[:, 1] + b[:, 3] >= height - border_px)
    return touch.astype(np.float64)


def attribute_ap(gt: GroundTruth, dt: Detections, gt_values: np.ndarray, det_values: np.ndarray | None,
                 bins: Sequence[tuple[str, float, float]], *, half_open: bool = True,
                 params: CocoParams | None = None) -> dict[str, dict[str, Any]]:
    """AP@[.5:.95], AP50 and AR (at the largest max-dets) per bin of one attribute; see the module docstring.

    ``gt_values`` (G,) per box (NaN = unknown); ``det_values`` (D,) per detection or None (an unmatched
    detection then counts in every bin). Returns {bin label: {"AP", "AP50", "AR", "num_gt"}}, None where the
    bin has no ground truth."""
    p = params or CocoParams()
    ranges = [("all", -math.inf, math.inf)]
    for label, lo, hi in bins:
        hi_in = float(np.nextafter(hi, -math.inf)) if half_open and math.isfinite(hi) else hi
        ranges.append((label, float(lo), hi_in))
    p = dataclasses.replace(p, area_ranges=tuple(ranges))
    values = np.where(np.isnan(gt_values), _UNKNOWN, gt_values).astype(np.float64)
    det = np.full(len(dt), np.nan) if det_values is None else np.asarray(det_values, np.float64)
    r = evaluate_coco(dataclasses.replace(gt, areas=values), dt, p, det_area=det)
    thr = np.asarray(p.iou_thresholds)
    t50 = np.flatnonzero(np.isclose(thr, 0.5))
    out = {}
    for a, (label, _, _) in enumerate(ranges[1:], start=1):
        prec = r.precision[:, :, :, a, -1]
        rec = r.recall[:, :, a, -1]
        num_gt = int(((~gt.iscrowd) & (values >= ranges[a][1]) & (values <= ranges[a][2])).sum())
        out[label] = {"AP": _mean(prec), "AP50": _mean(prec[t50]) if len(t50) else None, "AR": _mean(rec),
                      "num_gt": num_gt, "range": [ranges[a][1], _finite(bins[a - 1][2])]}
    return out


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None  # JSON has no Infinity


def _mean(x: np.ndarray) -> float | None:
    x = x[x > -1]
    return float(x.mean()) if x.size else None


def evaluate_attributes(samples: Sequence, gt: GroundTruth, dt: Detections, *, root: str | None = None,
                        params: CocoParams | None = None, border_px: float = 1.0) -> dict[str, Any]:
    """AP / AR per bin of each attribute in `ATTRIBUTES` for ``dt`` on ``samples`` (whose flattened ground
    truth is ``gt``; ``root``: the dataset folder, for the generator's visible-pixel table).

    Returns {attribute: {"available": bool, "bins": {label: {"AP", "AP50", "AR", "num_gt", "range"}},
    "source"?: str}}."""
    samples = list(samples)
    attrs = box_attributes(samples, root=root, border_px=border_px)
    if len(attrs["aspect"]) != len(gt):
        raise ValueError(f"{len(gt)} ground-truth rows but {len(attrs['aspect'])} boxes in the samples")
    size_by_id = {int(s.image_id): (float(s.width), float(s.height)) for s in samples}
    wh = np.array([size_by_id.get(int(i), (math.nan, math.nan)) for i in gt.image_ids.tolist()]).reshape(-1, 2)
    dwh = wh[dt.image] if len(dt) else np.zeros((0, 2))
    out: dict[str, Any] = {}
    out["size"] = {"available": True, "bins": attribute_ap(gt, dt, gt.areas, dt.boxes[:, 2] * dt.boxes[:, 3],
                                                           DEFAULT_AREA_RANGES[1:], half_open=False, params=params)}
    out["aspect"] = {"available": True, "bins": attribute_ap(gt, dt, attrs["aspect"], _aspect(dt.boxes),
                                                             ASPECT_BINS, params=params)}
    out["truncation"] = {"available": True,
                         "bins": attribute_ap(gt, dt, attrs["truncation"],
                                              _at_border(dt.boxes, dwh[:, 0], dwh[:, 1], border_px),
                                              TRUNCATION_BINS, params=params)}
    occ = attrs["occlusion"]
    if np.isfinite(occ).any():
        out["occlusion"] = {"available": True, "source": attrs["occlusion_source"],
                            "bins": attribute_ap(gt, dt, occ, None, OCCLUSION_BINS, params=params)}
    else:
        out["occlusion"] = {"available": False, "bins": {},
                            "reason": "no visible/unoccluded pixel counts in this dataset"}
    return out
