"""Detection metrics: exact COCO mAP/mAR (pycocotools' numbers) and the datasetinsights ("unity") protocol.

    from synthgap.metrics import evaluate, CocoParams
    result = evaluate(samples, detections, label_map=ds.label_map)           # COCO protocol
    result = evaluate(coco_dict, detections, protocol="unity")               # datasetinsights protocol
    print(result.table()); result.stats["AP"]; result.per_class[3]["AP50"]
    result = evaluate(samples, detections, errors=True, attributes=True)     # + why AP is lost
    result.errors.dap["bkg"]; result.attributes["occlusion"]["bins"]        # TIDE dAP, AP by attribute
    result.intervals = bootstrap_intervals(result)                          # 95 % intervals over test images
    paired_difference(result_a, result_b, "AP50")                           # b - a, same image resamples

See docs/metrics.md for both protocols and how they differ.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from synthgap.metrics.bootstrap import (Difference, HierarchicalDifference, Intervals, bootstrap_intervals,
                                        hierarchical_difference, image_weights, paired_difference,
                                        resample_metrics, units_needed)
from synthgap.metrics.coco import CocoParams, evaluate_coco
from synthgap.metrics.inputs import (DETECTION_DTYPE, Detections, GroundTruth, detections_from_json,
                                     detections_from_records, ground_truth_from_coco, ground_truth_from_samples)
from synthgap.metrics.result import Matches, MetricsResult
from synthgap.metrics.tide import ErrorBreakdown, evaluate_errors
from synthgap.metrics.unity import evaluate_unity

PROTOCOLS = ("coco", "unity")


def load_ground_truth(ground_truth: Any, label_map: Mapping[int, str] | None = None) -> GroundTruth:
    """A `GroundTruth` from a COCO dict, a sequence of `Sample` (+ ``label_map``), or a GroundTruth."""
    if isinstance(ground_truth, GroundTruth):
        return ground_truth
    if isinstance(ground_truth, Mapping):
        return ground_truth_from_coco(ground_truth)
    if label_map is None:
        label_map = getattr(ground_truth, "label_map", None)  # a DetectionDataset carries its own
    return ground_truth_from_samples(ground_truth, label_map)


def evaluate(ground_truth: Sequence | Mapping | GroundTruth, detections: Any, protocol: str = "coco",
             params: CocoParams | None = None, *, label_map: Mapping[int, str] | None = None,
             errors: bool = False, attributes: bool = False, attributes_root: str | None = None,
             matches: bool = True) -> MetricsResult:
    """Score detections against ground truth.

    Args:
        ground_truth: a sequence of `synthgap.data.Sample` (a `DetectionDataset` brings its ``label_map``),
            or a COCO instances dict. Categories evaluated = label map keys / the dict's ``categories``.
        detections: a COCO results list ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``
            (xywh pixels) or a numpy structured array of ``DETECTION_DTYPE``.
        protocol: ``"coco"`` (pycocotools' COCOeval, exact) or ``"unity"`` (datasetinsights' metrics).
        params: `CocoParams` (IoU thresholds, max detections, area ranges); None = COCO defaults.
        label_map: label id -> name, required with Samples (unless they come from a DetectionDataset).
        errors: also compute TIDE's error breakdown (``result.errors``, `synthgap.metrics.tide`).
        attributes: also compute AP by object attribute (``result.attributes``, `synthgap.metrics.attributes`);
            needs Samples (image sizes, visible pixels). ``attributes_root``: the dataset folder, where the
            generator's visible-pixel table lives.
        matches: build ``result.matches`` (per-detection TP/FP at each IoU, for drawing); False leaves it
            None and saves its (D, T) arrays (``synthgap score`` on 10 M detections); the numbers are the same.

    Raises:
        DatasetError (a ValueError) naming the record and field of a bad detection or annotation.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    samples = None
    if attributes:
        if isinstance(ground_truth, (Mapping, GroundTruth)):
            raise ValueError("evaluate(..., attributes=True) needs Samples (image sizes), not a COCO dict")
        if label_map is None:
            label_map = getattr(ground_truth, "label_map", None)
        samples = ground_truth = list(ground_truth)  # a reader parses on each access: read once
    gt = load_ground_truth(ground_truth, label_map)
    dt = detections if isinstance(detections, Detections) else detections_from_records(detections, gt)
    params = params or CocoParams()
    result = (evaluate_coco(gt, dt, params, matches=matches) if protocol == "coco"
              else evaluate_unity(gt, dt, params, matches=matches))
    if errors:
        result.errors = evaluate_errors(gt, dt)
    if attributes:
        from synthgap.metrics.attributes import evaluate_attributes
        result.attributes = evaluate_attributes(samples, gt, dt, root=attributes_root, params=params)
    return result


__all__ = ["evaluate", "load_ground_truth", "CocoParams", "MetricsResult", "Matches", "GroundTruth",
           "Detections", "DETECTION_DTYPE", "PROTOCOLS", "detections_from_records",
           "detections_from_json", "ErrorBreakdown", "evaluate_errors", "bootstrap_intervals", "paired_difference",
           "hierarchical_difference", "units_needed", "image_weights", "resample_metrics", "Intervals",
           "Difference", "HierarchicalDifference"]
