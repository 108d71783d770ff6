"""MetricsResult's per-class views, shared by TensorBoard logging and the report."""

import numpy as np
import pytest

from synthgap.generate.shapes import LABEL_MAP, make_samples
from synthgap.metrics import CocoParams, evaluate


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return make_samples(tmp_path_factory.mktemp("s"), 6, size=(64, 48), seed=3)


def _perfect(samples):
    return [{"image_id": s.image_id, "category_id": int(c), "bbox": b.tolist(), "score": 1.0}
            for s in samples for b, c in zip(s.boxes, s.labels)]


def test_perfect_detections_give_per_class_ap_one_and_flat_pr_curves(samples):
    result = evaluate(samples, _perfect(samples), "coco", label_map=LABEL_MAP)
    present = {int(c) for s in samples for c in s.labels}
    ap = result.per_class_ap()
    assert set(ap) == set(LABEL_MAP) and {k for k, v in ap.items() if np.isfinite(v)} == present
    assert all(ap[k] == pytest.approx(1.0) for k in present)
    curves = result.pr_curves(0.5)
    assert set(curves) == present
    recall, precision = curves[min(present)]
    assert recall[0] == 0.0 and recall[-1] == 1.0 and len(recall) == 101 and np.allclose(precision, 1.0)


def test_pr_curves_read_the_evaluated_thresholds(samples):
    """The IoU index comes from the params (not a hard-coded 0), the recall grid from rec_thresholds."""
    dets = _perfect(samples)
    for d in dets[::2]:  # shift every other box by a quarter of its width: IoU 0.6, matched at 0.5 only
        d["bbox"] = [d["bbox"][0] + d["bbox"][2] / 4, *d["bbox"][1:]]
    params = CocoParams(iou_thresholds=(0.75, 0.5), rec_thresholds=tuple(np.linspace(0, 1, 11)))
    result = evaluate(samples, dets, "coco", params=params, label_map=LABEL_MAP)
    at_50, at_75 = result.pr_curves(0.5), result.pr_curves(0.75)
    assert len(next(iter(at_50.values()))[0]) == 11
    assert all(np.allclose(p, 1.0) for _, p in at_50.values())
    assert any(not np.allclose(p, 1.0) for _, p in at_75.values())


def test_unity_results_have_no_pr_curves(samples):
    result = evaluate(samples, _perfect(samples), "unity", label_map=LABEL_MAP)
    assert result.pr_curves() == {} and all(v == pytest.approx(1.0) for v in result.per_class_ap().values()
                                            if np.isfinite(v))
