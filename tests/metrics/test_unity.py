"""datasetinsights ("unity") protocol: hand-derived values, then random sets against a plain-loop restatement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synthgap.metrics import CocoParams, evaluate

from tests.helpers.oracle import unity_reference
from .test_coco import build, det, image
from .test_coco import coco as _coco


def coco(anns, n_images=1, cats=(1,)):
    """A COCO ground-truth dict; here one image and one class unless told."""
    return _coco(anns, n_images, cats)


def test_every_point_ap_by_hand():
    # GT g1 = [0,0,10,10], g2 = [20,0,10,10] (class 1). Detections by score:
    #   d1 .9 = g1 exactly            -> IoU 1 with g1: TP
    #   d2 .8 = g1 exactly            -> best box g1 again, already taken: FP
    #   d3 .7 = [20,0,10,5]           -> IoU with g2 = 50 / 100 = 0.5: TP at t = .50 only
    # t = .50: tp 1,1,2  fp 0,1,1  recall .5,.5,1  precision 1,.5,2/3
    #          envelope 1, 2/3, 2/3; AP = (.5 - 0) * 1 + (1 - .5) * 2/3 = 5/6; AR = 2/2 = 1
    # t >= .55 (9 thresholds): recall .5,.5,.5, precision 1,.5,1/3 -> AP = .5 * 1 = .5; AR = .5
    # mAP = (5/6 + 9 * .5) / 10 = 0.5333...; mAPIOU50 = 5/6; mAR = (1 + 9 * .5) / 10 = .55
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
               {"image_id": 1, "category_id": 1, "bbox": [20, 0, 10, 10]}])
    dets = [det(1, 1, [0, 0, 10, 10], .9), det(1, 1, [0, 0, 10, 10], .8), det(1, 1, [20, 0, 10, 5], .7)]
    r = evaluate(gt, dets, protocol="unity")
    assert r.stats["mAP"] == pytest.approx((5 / 6 + 9 * .5) / 10, abs=1e-12)
    assert r.stats["mAPIOU50"] == pytest.approx(5 / 6, abs=1e-12)
    assert r.stats["mAR"] == pytest.approx(.55, abs=1e-12)
    assert r.per_class[1]["APIOU50"] == pytest.approx(5 / 6, abs=1e-12)
    # COCO's 101-point interpolation gives a different AP50 on the same data: (51 * 1 + 50 * 2/3) / 101
    assert evaluate(gt, dets).stats["AP50"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)


def test_no_fallback_to_second_best_box():
    # g1 = [0,0,10,10], g2 = [5,0,10,10]. d1 .9 = g1 (TP). d2 .8 = [2,0,10,10]:
    #   IoU(g1) = 80 / 120 = .667 (best, but taken), IoU(g2) = 70 / 130 = .538.
    # datasetinsights: d2 is an FP (it only looks at its best box) -> t=.5: precision 1,.5, recall .5,.5:
    #   AP50 = .5, AR50 = .5.  COCOeval falls back to g2 (IoU .538 >= .5): AP50 = 1.
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
               {"image_id": 1, "category_id": 1, "bbox": [5, 0, 10, 10]}])
    dets = [det(1, 1, [0, 0, 10, 10], .9), det(1, 1, [2, 0, 10, 10], .8)]
    r = evaluate(gt, dets, protocol="unity")
    assert r.stats["mAPIOU50"] == pytest.approx(.5, abs=1e-12)
    assert r.recall[0, 0] == pytest.approx(.5, abs=1e-12)
    assert evaluate(gt, dets).stats["AP50"] == pytest.approx(1.0, abs=1e-12)


def test_duplicate_boxes_first_maximum_wins():
    # Two identical GT boxes; two detections equal to them. Both detections' best box is the FIRST one
    # (strict '>' keeps the first maximum), so the second detection is an FP: AP = .5 * 1 = .5, AR = .5.
    box = [0, 0, 10, 10]
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": box}, {"image_id": 1, "category_id": 1, "bbox": box}])
    r = evaluate(gt, [det(1, 1, box, .9), det(1, 1, box, .8)], protocol="unity")
    assert r.stats["mAP"] == pytest.approx(.5, abs=1e-12) and r.stats["mAR"] == pytest.approx(.5, abs=1e-12)


def test_score_ties_put_true_positives_first():
    # One GT; an FP and a TP with the same score .5. Records sorted by (score, is_tp) descending: TP first,
    # precision 1, .5, recall 1, 1 -> AP = 1 * 1 = 1 (FP first would give .5).
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}])
    dets = [det(1, 1, [50, 50, 10, 10], .5), det(1, 1, [0, 0, 10, 10], .5)]
    assert evaluate(gt, dets, protocol="unity").stats["mAP"] == pytest.approx(1.0, abs=1e-12)


def test_classes_without_gt_left_out_classes_without_detections_count_zero():
    # class 1: perfect (AP 1); class 2: GT, no detection (AP 0); class 3: a detection, no GT (left out).
    # mAP = (1 + 0) / 2 = .5 (it would be 1/3 if class 3 counted).
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
               {"image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10]}], cats=(1, 2, 3))
    dets = [det(1, 1, [0, 0, 10, 10], .9), det(1, 3, [40, 40, 5, 5], .8)]
    r = evaluate(gt, dets, protocol="unity")
    assert r.stats["mAP"] == pytest.approx(.5, abs=1e-12)
    assert r.per_class[2]["AP"] == 0.0 and r.per_class[3]["AP"] is None


def test_cap_is_per_image_across_classes():
    # Image 1: 100 class-2 detections at .9 (FPs) and a perfect class-1 detection at .5 -> the 101st by
    # score, dropped by the 100 cap: class 1 AP 0. Image 2 holds the class-2 GT, found exactly (AP 1 only
    # because its TP at .95 ranks first). mAP50 = (0 + 1) / 2 = .5; with a cap of 101 it is (1 + 1) / 2.
    anns = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
            {"image_id": 2, "category_id": 2, "bbox": [0, 0, 10, 10]}]
    dets = [det(1, 2, [50, 50, 5, 5], .9) for _ in range(100)] + [det(1, 1, [0, 0, 10, 10], .5),
                                                                   det(2, 2, [0, 0, 10, 10], .95)]
    gt = coco(anns, n_images=2, cats=(1, 2))
    r = evaluate(gt, dets, protocol="unity")
    assert r.per_class[1]["APIOU50"] == 0.0
    assert r.per_class[2]["APIOU50"] == pytest.approx(1.0, abs=1e-12)
    assert r.stats["mAPIOU50"] == pytest.approx(.5, abs=1e-12)
    r101 = evaluate(gt, dets, protocol="unity", params=CocoParams(unity_max_dets=101))
    assert r101.stats["mAPIOU50"] == pytest.approx(1.0, abs=1e-12)


def test_crowd_flag_is_ignored():
    # datasetinsights has no crowd concept: a crowd box is an ordinary GT box that must be found.
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1}])
    assert evaluate(gt, [], protocol="unity").stats["mAP"] == 0.0
    assert evaluate(gt, [det(1, 1, [0, 0, 10, 10], .3)], protocol="unity").stats["mAP"] == pytest.approx(1.0)


def test_matches_mark_tp_and_misses():
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
               {"image_id": 1, "category_id": 1, "bbox": [40, 0, 10, 10]}])
    r = evaluate(gt, [det(1, 1, [0, 0, 10, 10], .9), det(1, 1, [1, 0, 10, 10], .8)], protocol="unity")
    m = r.matches.for_image(1, .5)
    assert [d["status"] for d in m["detections"]] == ["tp", "fp"]
    assert [g["status"] for g in m["ground_truth"]] == ["matched", "missed"]
    lean = evaluate(gt, [det(1, 1, [0, 0, 10, 10], .9), det(1, 1, [1, 0, 10, 10], .8)], protocol="unity",
                    matches=False)  # what `synthgap score` runs: no match arrays, the same numbers
    assert lean.matches is None and lean.stats == r.stats and lean.per_class == r.per_class


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(image, min_size=1, max_size=5), st.integers(1, 6))
def test_random_sets_match_reference(images, cap):
    gt, dets = build(images)
    r = evaluate(gt, dets, protocol="unity", params=CocoParams(unity_max_dets=cap))
    if not gt["annotations"]:  # datasetinsights: np.mean of no class at all
        assert np.isnan(r.stats["mAP"])
        return
    ref = unity_reference(gt, dets, max_dets=cap)
    for key in ("mAP", "mAPIOU50", "mAR"):
        assert abs(r.stats[key] - ref[key]) <= 1e-12, key
    for cid, row in r.per_class.items():
        if cid in ref["ap"][0.5]:
            assert abs(row["APIOU50"] - ref["ap"][0.5][cid]) <= 1e-12
