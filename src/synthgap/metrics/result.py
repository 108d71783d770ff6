"""What an evaluation returns: summary stats, per-class numbers, PR arrays and per-detection matches."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


@dataclass(eq=False)
class Matches:
    """Which ground truth each detection matched, at each IoU threshold, for drawing TP / FP / misses.

    Rows of the ``det_*`` arrays follow the detections as given (row i = ``detections[i]``); rows of the
    ``gt_*`` arrays follow the ground truth (images in the order given, then boxes in source order).
    COCO protocol: matching of the first area range (``all`` by default).

    Attributes:
        iou_thresholds: (T,) IoU thresholds.
        det_image_id, det_category_id, det_score: (D,) per detection.
        det_evaluated: (D,) False for detections beyond the per-image cap (never matched, never counted).
        det_gt: (D, T) int row of the matched ground-truth box, -1 when unmatched (a false positive unless
            ``det_ignore``).
        det_ignore: (D, T) bool, COCO only: matched a crowd/ignored box, or unmatched outside the area range.
        gt_image_id, gt_category_id: (G,); gt_id: (G,) COCO annotation id (1-based running index for Samples).
        gt_box: (G, 4) xywh pixels; gt_ignore: (G,) crowd or outside the area range (never a miss).
        gt_det: (G, T) int row of the detection that matched the box, -1 for a miss.

    COCO protocol only, every area range (what `synthgap.metrics.bootstrap` recomputes the metrics from;
    None from the unity protocol):
        image_ids: (N,) every ground-truth image (sorted ids, with or without boxes and detections): the test
            images a bootstrap resamples; ``det_*``/``gt_*`` image ids are among them.
        det_outside: (D, A) bool, the detection's own area (w*h px^2) is outside area range a.
        gt_ignore_area: (G, A) bool, crowd or ``area`` outside area range a (column 0 = ``gt_ignore``).
        area_det: (C,) rows of the evaluated detections with a candidate box (IoU >= the lowest threshold).
        area_gt: (C, A, T) the ground-truth row each of those matched per area range and IoU threshold, -1
            when unmatched (``area_gt[:, 0] == det_gt[area_det]``).
    """

    iou_thresholds: np.ndarray
    det_image_id: np.ndarray
    det_category_id: np.ndarray
    det_score: np.ndarray
    det_evaluated: np.ndarray
    det_gt: np.ndarray
    det_ignore: np.ndarray
    gt_image_id: np.ndarray
    gt_category_id: np.ndarray
    gt_id: np.ndarray
    gt_box: np.ndarray
    gt_ignore: np.ndarray
    gt_det: np.ndarray
    image_ids: np.ndarray | None = None
    det_outside: np.ndarray | None = None
    gt_ignore_area: np.ndarray | None = None
    area_det: np.ndarray | None = None
    area_gt: np.ndarray | None = None

    def for_image(self, image_id: int, iou_threshold: float = 0.5) -> dict[str, Any]:
        """Detections (TP/FP/ignored) and ground truth (matched/missed) of one image at one IoU threshold.

        Returns ``{"detections": [{"index", "category_id", "score", "status", "gt"}],
        "ground_truth": [{"index", "id", "category_id", "bbox", "status", "det"}]}`` where status is
        ``tp``/``fp``/``ignored``/``not_evaluated`` and ``matched``/``missed``/``ignored``.
        """
        t = int(np.argmin(np.abs(self.iou_thresholds - iou_threshold)))
        if not math.isclose(float(self.iou_thresholds[t]), iou_threshold, abs_tol=1e-9):
            raise ValueError(f"IoU threshold {iou_threshold} was not evaluated ({self.iou_thresholds.tolist()})")
        dets = []
        for i in np.flatnonzero(self.det_image_id == image_id).tolist():
            gt = int(self.det_gt[i, t])
            if not self.det_evaluated[i]:
                status = "not_evaluated"
            elif self.det_ignore[i, t]:
                status = "ignored"
            else:
                status = "tp" if gt >= 0 else "fp"
            dets.append({"index": i, "category_id": int(self.det_category_id[i]),
                         "score": float(self.det_score[i]), "status": status, "gt": gt})
        gts = []
        for j in np.flatnonzero(self.gt_image_id == image_id).tolist():
            det = int(self.gt_det[j, t])
            status = "ignored" if self.gt_ignore[j] else ("matched" if det >= 0 else "missed")
            gts.append({"index": j, "id": int(self.gt_id[j]), "category_id": int(self.gt_category_id[j]),
                        "bbox": self.gt_box[j].tolist(), "status": status, "det": det})
        return {"detections": dets, "ground_truth": gts}


@dataclass(eq=False)
class MetricsResult:
    """The outcome of `synthgap.metrics.evaluate`.

    Attributes:
        protocol: ``coco`` or ``unity``.
        stats: ordered name -> value (COCO's 12 stats, -1 where undefined as in COCOeval; or the
            datasetinsights ``mAP``, ``mAPIOU50``, ``mAR``).
        per_class: label id -> {"name", metric -> value or None when the class has no ground truth, "num_gt",
            "num_det"}.
        params: the parameters used (JSON-ready).
        precision: COCO: [T, R, K, A, M] as COCOeval's ``eval["precision"]`` (-1 = no ground truth); None for unity.
        recall: COCO: [T, K, A, M]; unity: [T, K] AR per threshold and class (-1 = no ground truth).
        scores: COCO: [T, R, K, A, M] score at each recall threshold; None for unity.
        category_ids: (K,) label ids, the K axis of the arrays.
        matches: per-detection / per-box match results (`Matches`); None from ``evaluate(..., matches=False)``.
        errors: TIDE error breakdown (`synthgap.metrics.tide.ErrorBreakdown`) or None.
        attributes: AP / recall by object attribute bin (`synthgap.metrics.attributes`) or None.
        intervals: bootstrap intervals over the test images (`synthgap.metrics.bootstrap.Intervals`) or None;
            set by ``result.intervals = bootstrap_intervals(result)`` (``synthgap score --ci``).
    """

    protocol: str
    stats: dict[str, float]
    per_class: dict[int, dict[str, Any]]
    params: dict[str, Any]
    category_ids: np.ndarray
    matches: Matches | None
    precision: np.ndarray | None = None
    recall: np.ndarray | None = None
    scores: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    errors: Any = None        # synthgap.metrics.tide.ErrorBreakdown, from evaluate(..., errors=True)
    attributes: dict[str, Any] | None = None  # synthgap.metrics.attributes output, from evaluate(..., attributes=True)
    intervals: Any = None     # synthgap.metrics.bootstrap.Intervals, from bootstrap_intervals(result)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: protocol, params, stats, per-class numbers (arrays are left out); plus
        ``errors`` (TIDE breakdown), ``attributes`` (AP by object attribute) and ``intervals`` (bootstrap, with
        its resamples and seed) when they were computed."""
        out = {"protocol": self.protocol, "params": self.params,
               "stats": {k: float(v) for k, v in self.stats.items()},
               "per_class": {str(k): {m: _jsonable(v) for m, v in d.items()} for k, d in self.per_class.items()}}
        if self.errors is not None:
            out["errors"] = self.errors.to_dict()
        if self.attributes is not None:
            out["attributes"] = self.attributes
        if self.intervals is not None:
            out["intervals"] = self.intervals.to_dict()
        return out

    def table(self) -> str:
        """Readable text: the summary stats (with their bootstrap interval when computed), then one row per
        class ("n/a" / "-": no ground truth); then the TIDE error breakdown and AP by attribute when they were
        computed."""
        lines = [f"{self.protocol} protocol"]
        width = max(len(k) for k in self.stats) if self.stats else 4
        for k, v in self.stats.items():
            ci = self.intervals.stats.get(k) if self.intervals is not None else None
            lines.append(f"  {k:<{width}}  {_fmt(v)}" + (f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
        if self.intervals is not None:
            iv = self.intervals
            lines.append(f"  [..]: {100 * iv.level:g} % percentile bootstrap interval over the {iv.images} test images "
                         f"({iv.resamples} resamples, seed {iv.seed})")
            high = [k for k, v in self.stats.items() if iv.stats.get(k) and iv.std[k] and iv.mean[k] - v > iv.std[k]]
            if high:  # AP of duplicated images runs high where precision is low: say so (docs/metrics.md)
                lines.append(f"  note: the resampled {', '.join(high)} average more than one standard error above "
                             "the full-set value; the interval is shifted up (docs/metrics.md, uncertainty)")
        if self.per_class:
            metrics = [m for m in next(iter(self.per_class.values())) if m not in ("name",)]
            name_w = max(8, *(len(str(d["name"])) for d in self.per_class.values()))
            header = f"  {'id':>5}  {'class':<{name_w}}" + "".join(f"  {m:>8}" for m in metrics)
            lines += ["", header, "  " + "-" * (len(header) - 2)]
            for k, d in self.per_class.items():
                lines.append(f"  {k:>5}  {str(d['name']):<{name_w}}"
                             + "".join(f"  {_fmt(d[m]):>8}" for m in metrics))
        if self.errors is not None:
            lines += ["", self.errors.table()]
        if self.attributes is not None:
            lines += ["", "AP by object attribute (COCO AP@[.5:.95], AP50, AR100 per bin)",
                      attributes_table(self.attributes)]
        return "\n".join(lines)

    def per_class_ap(self) -> dict[int, float]:
        """Label id -> the class's AP (COCO: AP@[.5:.95]; unity: AP at its main IoU), NaN where the class
        has no ground truth."""
        return {k: math.nan if d.get("AP") is None else float(d["AP"]) for k, d in self.per_class.items()}

    def pr_curves(self, iou: float = 0.5) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Label id -> (recall grid, precision) at the evaluated IoU threshold nearest ``iou``, all areas, the
        largest max-detections; classes without ground truth are left out. Empty for the unity protocol,
        which has no precision array."""
        if self.precision is None:
            return {}
        precision = np.asarray(self.precision)  # [T, R, K, A, M]
        thresholds = np.asarray(self.params.get("iou_thresholds", np.linspace(0.5, 0.95, 10)), np.float64)
        t = int(np.argmin(np.abs(thresholds - iou)))
        recall = np.asarray(self.params.get("rec_thresholds", ()), np.float64)
        if len(recall) != precision.shape[1]:
            recall = np.linspace(0.0, 1.0, precision.shape[1])
        curves = {}
        for k, label in enumerate(int(i) for i in self.category_ids):
            p = precision[t, :, k, 0, -1]
            if (p > -1).any():
                curves[label] = (recall, np.clip(p, 0.0, 1.0))
        return curves

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={_fmt(v)}" for k, v in self.stats.items())
        return f"MetricsResult({self.protocol}: {body})"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    v = float(v)
    if v == -1.0:  # COCOeval's "undefined" (no ground truth in that slice)
        return "n/a"
    return "nan" if math.isnan(v) else f"{v:.4f}"


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = float(v)
    return None if math.isnan(v) else v


def attributes_table(attributes: Mapping[str, Any]) -> str:
    """Readable text of `synthgap.metrics.attributes.evaluate_attributes` output: one line per bin."""
    lines = [f"  {'attribute':<11}{'bin':<22}{'AP':>8}{'AP50':>8}{'AR':>8}{'boxes':>8}"]
    for name, a in attributes.items():
        if not a.get("available"):
            lines.append(f"  {name:<11}{'(not available)':<22}")
            continue
        for label, d in a["bins"].items():
            f = (lambda v: "-" if v is None else f"{v:.4f}")
            lines.append(f"  {name:<11}{label:<22}{f(d['AP']):>8}{f(d['AP50']):>8}{f(d['AR']):>8}{d['num_gt']:>8}")
    return "\n".join(lines)
