"""TIDE error breakdown: identical to the ``tidecv`` package (the oracle) on random sets, and hand-derived cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from synthgap.metrics import detections_from_records, evaluate, load_ground_truth
from synthgap.metrics.tide import ERROR_TYPES, evaluate_errors

from .test_coco import build, coco, det, image

TOL = 1e-9
TIDE_NAMES = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupe": "Dupe", "bkg": "Bkg", "miss": "Miss"}


def tide_oracle(gt_dict, dets, pos=0.5, bg=0.1, max_dets=100):
    """tidecv fed like its own COCO loader: every image registered (id order), crowd boxes as ignore
    regions of their class, detections in input order. Returns (run, {type: dAP}, {special: dAP}) with AP in
    percent as tidecv computes them (its ``fix_main_errors`` / ``fix_special_errors``, one type at a time),
    except FalseNeg: tidecv's own AP of its original data points with the false negatives taken out of the
    box count (its fixed copy re-orders score ties: see `test_duplicated_detections_have_no_false_negative_gain`);
    run None when tidecv divides by zero on the original, a dAP None where it does on that fix."""
    tidecv = pytest.importorskip("tidecv", reason="the TIDE oracle: `make test-venv` installs tidecv")
    from tidecv.errors.main_errors import FalsePositiveError

    gt, pred = tidecv.Data("gt", max_dets=max_dets), tidecv.Data("pred")
    for img in sorted(i["id"] for i in gt_dict["images"]):
        gt.add_image(img, str(img))
    for a in sorted(gt_dict["annotations"], key=lambda a: a["image_id"]):
        if a.get("iscrowd"):
            gt.add_ignore_region(a["image_id"], a["category_id"], a["bbox"])
        else:
            gt.add_ground_truth(a["image_id"], a["category_id"], a["bbox"])
    for d in dets:
        pred.add_detection(d["image_id"], d["category_id"], d["score"], d["bbox"])
    tide = tidecv.TIDE(pos_threshold=pos, background_threshold=bg)
    try:
        run = tide.evaluate(gt, pred, mode=tidecv.TIDE.BOX)
    except ZeroDivisionError:  # no class with ground truth or detections
        return None, None, None

    def fixed_map(**kw):
        try:
            return run.fix_errors(**kw).get_mAP()
        except ZeroDivisionError:  # the fix left no class: synthgap counts that as AP 1 (100 here)
            return None

    main = {}
    for etype in tidecv.TIDE._error_types:
        m = fixed_map(condition=lambda err, etype=etype: isinstance(err, etype))
        main[etype.short_name] = None if m is None else max(m - run.ap, 0)  # as fix_main_errors
    fp, fn = fixed_map(transform=FalsePositiveError.fix), false_negatives_removed(run)
    special = {"FalsePos": None if fp is None else fp - run.ap, "FalseNeg": None if fn is None else fn - run.ap}
    return run, main, special


def false_negatives_removed(run):
    """tidecv's mAP of ``run``'s data points in their original order, every false negative taken out of the
    box count (None where no class is left: tidecv would divide by zero)."""
    from tidecv.ap import APDataObject

    aps = []
    for k, obj in run.ap_data.objs.items():
        fixed = APDataObject()
        fixed.data_points = obj.data_points
        fixed.num_gt_positives = obj.num_gt_positives - len(run.false_negatives.get(k, ()))
        if not fixed.is_empty():
            aps.append(fixed.get_ap())
    return sum(aps) / len(aps) if aps else None


def ours(gt_dict, dets, **kw):
    gt = load_ground_truth(gt_dict)
    return evaluate_errors(gt, detections_from_records(dets, gt), **kw)


def assert_same_as_tidecv(gt_dict, dets, pos=0.5, bg=0.1, max_dets=100):
    run, main, special = tide_oracle(gt_dict, dets, pos, bg, max_dets)
    r = ours(gt_dict, dets, pos_threshold=pos, bg_threshold=bg, max_dets=max_dets)
    if run is None:
        assert math.isnan(r.ap)
        return r
    assert r.ap == pytest.approx(run.ap / 100, abs=TOL)
    counts = {e.short_name: n for e, n in run.count_errors().items()}
    assert r.counts == {t: counts[TIDE_NAMES[t]] for t in ERROR_TYPES}
    for t in ERROR_TYPES:
        want = main[TIDE_NAMES[t]]
        assert r.dap[t] == pytest.approx(1 - r.ap if want is None else want / 100, abs=TOL), t
    for key, name in (("false_pos", "FalsePos"), ("false_neg", "FalseNeg")):
        want = special[name]
        assert r.special[key] == pytest.approx(1 - r.ap if want is None else want / 100, abs=TOL), key
    # per class: the original AP and each single-type fix, class by class
    for k, d in r.per_class.items():
        obj = run.ap_data.objs.get(k)
        if obj is None or obj.is_empty():
            assert math.isnan(d["ap"])
            continue
        assert d["ap"] == pytest.approx(obj.get_ap() / 100, abs=TOL)
    for t in ERROR_TYPES[:-1]:  # miss changes the ground-truth count: checked through the mean above
        etype = next(e for e in counts_types(run) if e.short_name == TIDE_NAMES[t])
        fixed = run.fix_errors(lambda err, etype=etype: isinstance(err, etype))
        for k, d in r.per_class.items():
            if k in fixed.objs and not math.isnan(d["ap"]):
                want = max(fixed.objs[k].get_ap() - run.ap_data.objs[k].get_ap(), 0) / 100
                assert d["dap"][t] == pytest.approx(want, abs=TOL), (t, k)
    return r


def counts_types(run):
    return list(run.count_errors())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(image, min_size=1, max_size=5))
def test_random_sets_match_tidecv(images):
    gt, dets = build(images)
    assert_same_as_tidecv(gt, dets)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(image, min_size=1, max_size=4), st.sampled_from([0.3, 0.5, 0.7]), st.sampled_from([0.0, 0.1, 0.2]),
       st.sampled_from([1, 3, 100]))
def test_random_thresholds_and_caps_match_tidecv(images, pos, bg, max_dets):
    gt, dets = build(images)
    assume(bg <= pos)
    assert_same_as_tidecv(gt, dets, pos, bg, max_dets)


def test_larger_random_set_with_continuous_scores_matches_tidecv():
    rng = np.random.default_rng(7)
    images = []
    for _ in range(60):
        gts = [(int(rng.integers(0, 60)), int(rng.integers(0, 60)), int(rng.integers(4, 40)), int(rng.integers(4, 40)),
                int(rng.integers(1, 4)), bool(rng.random() < 0.05), None) for _ in range(rng.integers(0, 8))]
        dts = [(int(rng.integers(0, 60)), int(rng.integers(0, 60)), int(rng.integers(4, 40)), int(rng.integers(4, 40)),
                int(rng.integers(1, 4)), float(rng.random())) for _ in range(rng.integers(0, 15))]
        images.append((gts, dts))
    gt, dets = build(images)
    r = assert_same_as_tidecv(gt, dets)
    assert sum(r.counts.values()) > 50  # a set where every type has a chance


# ---------------------------------------------------------------------------------------------------------
# hand-derived cases: one error of each type, numbers worked out by hand

def test_each_error_type_on_hand_made_image():
    # image 1: three class-1 boxes, one class-2 box; image 2: no boxes
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
               {"image_id": 1, "category_id": 1, "bbox": [50, 0, 10, 10]},
               {"image_id": 1, "category_id": 2, "bbox": [0, 50, 10, 10]},
               {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10]}])
    dets = [det(1, 1, [0, 0, 10, 10], 0.9),      # TP on box 1
            det(1, 1, [0, 0, 10, 10], 0.8),      # dupe: box 1 already taken
            det(1, 1, [53, 0, 10, 10], 0.7),     # TP on box 2: IoU 70 / 130 = 0.54
            det(1, 1, [0, 50, 10, 10], 0.6),     # cls: IoU 1 with the class-2 box
            det(1, 1, [55, 55, 10, 10], 0.5),    # loc: IoU 25/175 = 0.14 with box 4
            det(1, 1, [30, 30, 5, 5], 0.4),      # bkg: touches nothing
            det(2, 2, [0, 0, 5, 5], 0.3)]        # bkg: image without boxes
    r = ours(gt, dets)
    assert r.counts == {"cls": 1, "loc": 1, "both": 0, "dupe": 1, "bkg": 2, "miss": 0}
    # class 1: 3 boxes, points by score T F T F F F -> precision 1, .5, .67, ...: recall 2/3 reached at
    # precision 2/3 (enveloped), so AP = (34 * 1 + 33 * 2/3) / 101; class 2: 1 box, one FP -> AP 0
    ap1 = (34 * 1 + 33 * (2 / 3)) / 101
    assert r.per_class[1]["ap"] == pytest.approx(ap1)
    assert r.per_class[2]["ap"] == 0.0
    assert r.ap == pytest.approx(ap1 / 2)
    # fixing loc makes the IoU-0.14 detection a TP of box 4: class 1 T F T F T -> recall 1
    assert r.per_class[1]["dap"]["loc"] > 0 and r.dap["cls"] > 0  # cls fix: class 2 gets its TP
    assert r.per_class[2]["dap"]["cls"] == pytest.approx(1.0)


def test_missed_box_and_perfect_detections():
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
               {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10]}], cats=(1,))
    r = ours(gt, [det(1, 1, [0, 0, 10, 10], 0.9)])
    assert r.counts["miss"] == 1 and r.ap == pytest.approx(51 / 101)   # recall 0.5: thresholds 0..0.5
    assert r.dap["miss"] == pytest.approx(50 / 101)                    # remove the miss: AP 1
    assert r.special["false_neg"] == pytest.approx(50 / 101)
    perfect = ours(gt, [det(1, 1, [0, 0, 10, 10], 0.9), det(2, 1, [0, 0, 10, 10], 0.8)])
    assert perfect.ap == 1.0 and sum(perfect.dap.values()) == 0 and sum(perfect.counts.values()) == 0
    assert perfect.share == {t: 0.0 for t in ERROR_TYPES}


def test_crowd_region_ignores_detection_but_still_types_it():
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "iscrowd": 1},
               {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}], n_images=1, cats=(1,))
    r = ours(gt, [det(1, 1, [0, 0, 10, 10], 0.5), det(1, 1, [60, 60, 10, 10], 0.9)])
    assert r.ap == 1.0            # the detection inside the crowd box is not a false positive
    assert r.counts["bkg"] == 1   # ... though tidecv still gives it an error type


def test_evaluate_errors_flag_puts_breakdown_into_json():
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}], cats=(1, 2))
    r = evaluate(gt, [det(1, 2, [0, 0, 10, 10], 0.9)], errors=True)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["errors"]["counts"]["cls"] == 1 and d["errors"]["share"]["cls"] == 1.0
    assert set(d["errors"]["per_class"]) == {"1", "2"}
    assert "errors" not in evaluate(gt, [det(1, 2, [0, 0, 10, 10], 0.9)]).to_dict()


def test_bad_thresholds_are_errors():
    gt = coco([], cats=(1,))
    with pytest.raises(ValueError, match="pos_threshold"):
        ours(gt, [], pos_threshold=0.0)
    with pytest.raises(ValueError, match="max_dets"):
        ours(gt, [], max_dets=0)


def test_tidecv_quirks_cap_crowd_and_zero_background_threshold():
    # found by hypothesis: with bg = 0 a detection touching no box of its class is a "loc" error of the
    # image's first box (tidecv's argmax of an all-zero row); the per-image cap keeps the 0.5 detection only,
    # and removing every false negative leaves no class (tidecv divides by zero; synthgap: AP 1)
    box = {"bbox": [0, 0, 1, 1], "image_id": 1}
    gt = coco([dict(box, category_id=1)] * 4 + [dict(box, category_id=2, iscrowd=1)], n_images=1)
    dets = [det(1, 1, [0, 0, 1, 1], 0.1), det(1, 1, [0, 0, 1, 1], 0.1), det(1, 2, [0, 0, 1, 1], 0.5)]
    r = assert_same_as_tidecv(gt, dets, pos=0.3, bg=0.0, max_dets=1)
    assert r.counts["loc"] == 1 and r.counts["miss"] == 3 and r.special["false_neg"] == 1.0


def test_duplicated_detections_have_no_false_negative_gain():
    """Every box found, every detection written twice with the same score (issue 23: `score --errors` said
    -14.5 AP points of false negatives with 0 missed boxes). tidecv's FalseNeg is negative there: its fixed
    copy puts the duplicates (errors) before the true positives they tie with, and nothing is clipped.
    Here false_neg keeps the detections' order: 0. Everything else is tidecv's."""
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
               {"image_id": 1, "category_id": 1, "bbox": [50, 0, 10, 10]},
               {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10]}], cats=(1,))
    dets = [d for img, box, score in ((1, [0, 0, 10, 10], 0.9), (1, [50, 0, 10, 10], 0.8), (2, [0, 0, 10, 10], 0.7))
            for d in (det(img, 1, box, score), det(img, 1, box, score))]
    run, _, _ = tide_oracle(gt, dets)
    tidecv_false_neg = run.fix_errors(false_neg_dict=run.false_negatives).get_mAP() - run.ap
    assert tidecv_false_neg < -20  # tidecv: -25.6 AP points, with 0 missed boxes
    r = assert_same_as_tidecv(gt, dets)
    assert r.counts["miss"] == 0 and r.counts["dupe"] == 3
    assert r.special["false_neg"] == 0.0 and r.dap["miss"] == 0.0
    assert r.dap["dupe"] == pytest.approx(1 - r.ap)  # dropping the duplicates gives AP 1, as tidecv says
    assert "AP points" in r.table()  # fractions x 100, said where they are printed
