"""COCO protocol: identical to pycocotools (the oracle) on random and hand-made inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synthgap.data import Sample
from synthgap.metrics import CocoParams, evaluate

from tests.helpers.oracle import cocoeval

TOL = 1e-12


def assert_same_as_pycocotools(gt_dict, dets, params: CocoParams | None = None):
    kw = {}
    if params is not None:
        kw = dict(iou_thresholds=params.iou_thresholds, max_dets=params.max_dets, area_ranges=params.area_ranges)
    E = cocoeval(gt_dict, dets, **kw)
    r = evaluate(gt_dict, dets, params=params)
    np.testing.assert_allclose(list(r.stats.values()), E.stats, rtol=0, atol=TOL)
    np.testing.assert_allclose(r.precision, E.eval["precision"], rtol=0, atol=TOL)
    np.testing.assert_allclose(r.recall, E.eval["recall"], rtol=0, atol=TOL)
    np.testing.assert_allclose(r.scores, E.eval["scores"], rtol=0, atol=TOL)
    assert_same_matches(r, E)
    lean = evaluate(gt_dict, dets, params=params, matches=False)  # what `synthgap score` runs: same numbers
    assert lean.matches is None and lean.stats == r.stats and lean.per_class == r.per_class
    for name in ("precision", "recall", "scores"):
        np.testing.assert_array_equal(getattr(lean, name), getattr(r, name))
    return r, E


def assert_same_matches(r, E):
    """Matches (first area range) equal COCOeval's evalImgs: matched GT id and ignore flag per detection."""
    m = r.matches
    assert m.det_gt.dtype == m.gt_det.dtype == np.int32  # row numbers: 4 bytes (issue 14, 10 M detections)
    n_img, n_area = len(E.params.imgIds), len(E.params.areaRng)
    seen = 0
    for i, e in enumerate(E.evalImgs):  # ordered [class][area range][image]
        if e is None or (i // n_img) % n_area != 0:
            continue
        rows = np.asarray(e["dtIds"], dtype=np.int64) - 1          # loadRes ids are 1-based input rows
        seen += len(rows)
        got = np.append(m.gt_id, 0)[m.det_gt[rows]].T              # -1 (unmatched) -> 0, as dtMatches
        np.testing.assert_array_equal(got, e["dtMatches"])
        np.testing.assert_array_equal(m.det_ignore[rows].T, e["dtIgnore"])
    assert seen == int(m.det_evaluated.sum())


# ---------------------------------------------------------------------------------------------------------
# random sets: small integer boxes on a 24 px grid make overlaps, IoU ties and score ties common

coord = st.integers(0, 16)
size = st.integers(1, 12)
gt_box = st.tuples(coord, coord, size, size, st.integers(1, 3), st.booleans(),
                   st.one_of(st.none(), st.integers(1, 300)))          # x, y, w, h, category, crowd, area
det_box = st.tuples(coord, coord, size, size, st.integers(1, 3), st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0]))
image = st.tuples(st.lists(gt_box, max_size=6), st.lists(det_box, max_size=8))


def build(images, crowd_rate=True):
    gt = {"images": [{"id": i + 1} for i in range(len(images))],
          "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3, 4)], "annotations": []}
    dets = []
    for i, (gts, dts) in enumerate(images):
        for x, y, w, h, c, crowd, area in gts:
            ann = {"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": c,
                   "bbox": [float(x), float(y), float(w), float(h)], "iscrowd": int(crowd and crowd_rate)}
            if area is not None:
                ann["area"] = float(area)
            gt["annotations"].append(ann)
        for x, y, w, h, c, s in dts:
            dets.append({"image_id": i + 1, "category_id": c, "bbox": [float(x), float(y), float(w), float(h)],
                         "score": s})
    return gt, dets


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(image, min_size=1, max_size=5))
def test_random_sets_match_pycocotools(images):
    gt, dets = build(images)
    if not dets:  # pycocotools' loadRes cannot take an empty list
        return
    assert_same_as_pycocotools(gt, dets)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(image, min_size=1, max_size=4),
       st.lists(st.floats(0.05, 1.0).map(lambda v: round(v, 2)), min_size=1, max_size=5),
       st.lists(st.integers(1, 9), min_size=3, max_size=3, unique=True),
       st.tuples(st.floats(0, 80), st.floats(0, 150)).map(sorted))
def test_random_params_match_pycocotools(images, iou, max_dets, edges):
    gt, dets = build(images)
    if not dets:
        return
    lo, hi = edges
    params = CocoParams(iou_thresholds=iou + [0.5, 0.75], max_dets=max_dets,
                        area_ranges=(("all", 0, 1e10), ("small", 0, lo), ("medium", lo, hi), ("large", hi, 1e10)))
    assert_same_as_pycocotools(gt, dets, params)


# ---------------------------------------------------------------------------------------------------------
# hand-made cases

def coco(anns, n_images=2, cats=(1, 2)):
    return {"images": [{"id": i + 1} for i in range(n_images)],
            "categories": [{"id": c, "name": f"c{c}"} for c in cats],
            "annotations": [dict(a, id=j + 1) for j, a in enumerate(anns)]}


def det(img, cat, box, score):
    return {"image_id": img, "category_id": cat, "bbox": list(map(float, box)), "score": score}


def test_perfect_detections_score_one():
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40]},
               {"image_id": 2, "category_id": 2, "bbox": [0, 0, 200, 100]}])
    dets = [det(1, 1, [10, 10, 40, 40], 0.9), det(2, 2, [0, 0, 200, 100], 0.8)]
    r, _ = assert_same_as_pycocotools(gt, dets)
    assert r.stats["AP"] == pytest.approx(1.0) and r.stats["AR100"] == 1.0
    assert r.stats["APs"] == -1.0  # no small boxes at all: -1, like COCOeval
    assert r.per_class[1]["AP"] == pytest.approx(1.0) and r.per_class[2]["num_gt"] == 1


def test_crowd_region_absorbs_detections_and_uses_detection_area():
    # A crowd box covering the image: detections inside it are ignored, not false positives.
    # Crowd IoU = intersection / detection area, so a small detection inside a huge crowd box has IoU 1.
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "iscrowd": 1},
               {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}], n_images=1, cats=(1,))
    dets = [det(1, 1, [10, 10, 20, 20], 0.5), det(1, 1, [60, 60, 10, 10], 0.9), det(1, 1, [70, 70, 10, 10], 0.95)]
    r, _ = assert_same_as_pycocotools(gt, dets)
    assert r.stats["AP50"] == pytest.approx(1.0)
    m = r.matches.for_image(1, 0.5)
    status = {d["index"]: d["status"] for d in m["detections"]}
    assert status == {0: "tp", 1: "ignored", 2: "ignored"}
    assert [g["status"] for g in m["ground_truth"]] == ["ignored", "matched"]


def test_area_field_overrides_box_size_for_area_ranges():
    # bbox 50x50 (2500 px^2, medium) but annotated area 500 (small): COCOeval ranges by the area field.
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 500.0}], n_images=1, cats=(1,))
    dets = [det(1, 1, [0, 0, 50, 50], 0.9)]
    r, _ = assert_same_as_pycocotools(gt, dets)
    assert r.stats["APs"] == pytest.approx(1.0) and r.stats["APm"] == -1.0


def test_images_without_gt_or_detections_and_class_without_gt():
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}], n_images=3, cats=(1, 2, 3))
    dets = [det(1, 1, [0, 0, 10, 10], 0.9), det(2, 2, [5, 5, 10, 10], 0.8), det(1, 3, [0, 0, 10, 10], 0.7)]
    r, E = assert_same_as_pycocotools(gt, dets)
    assert r.per_class[2]["AP"] is None and r.per_class[3]["AP"] is None  # no GT: excluded, as -1 in COCOeval
    assert (r.precision[:, :, 1:] == -1).all()
    assert r.stats["AP"] == pytest.approx(1.0)


def test_tied_scores_keep_input_order():
    # Two detections with the same score on one GT: the first in the input wins (stable sort), the other is FP.
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}], n_images=1, cats=(1,))
    dets = [det(1, 1, [1, 0, 10, 10], 0.5), det(1, 1, [0, 0, 10, 10], 0.5)]
    r, _ = assert_same_as_pycocotools(gt, dets)
    assert r.matches.det_gt[:, 0].tolist() == [0, -1]


def test_more_detections_than_max_dets():
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [i * 12, 0, 10, 10]} for i in range(12)], n_images=1,
              cats=(1,))
    dets = [det(1, 1, [i * 12, 0, 10, 10], 1 - i / 100) for i in range(12)] + [det(1, 1, [0, 50, 5, 5], 0.99)]
    params = CocoParams(max_dets=(1, 5, 10))
    r, _ = assert_same_as_pycocotools(gt, dets, params)
    assert r.matches.det_evaluated.sum() == 10 and not r.matches.det_evaluated[11]


def test_no_detections_gives_zero_not_minus_one():
    # pycocotools cannot load an empty result list; by COCOeval's rules every class with GT has
    # precision 0 at every recall threshold and recall 0, so AP = AR = 0.
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}], n_images=1, cats=(1, 2))
    r = evaluate(gt, [])
    assert r.stats["AP"] == 0.0 and r.stats["AR100"] == 0.0
    assert (r.precision[:, :, 0, 0, :] == 0).all() and (r.precision[:, :, 1] == -1).all()


def test_samples_input_equals_coco_dict_input():
    rng = np.random.default_rng(3)
    samples, anns = [], []
    for i in range(4):
        n = int(rng.integers(0, 4))
        boxes = np.c_[rng.integers(0, 50, (n, 2)), rng.integers(5, 40, (n, 2))].astype(float)
        labels = rng.integers(1, 3, n)
        crowd = rng.random(n) < 0.2
        samples.append(Sample(image=f"{i}.png", width=100, height=100, boxes=boxes, labels=labels,
                              image_id=10 + i, iscrowd=crowd))
        anns += [{"image_id": 10 + i, "category_id": int(c), "bbox": b.tolist(), "iscrowd": int(k)}
                 for b, c, k in zip(boxes, labels, crowd)]
    gt = {"images": [{"id": 10 + i} for i in range(4)], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [dict(a, id=j + 1) for j, a in enumerate(anns)]}
    dets = [det(10 + i, int(rng.integers(1, 3)), [*rng.integers(0, 50, 2), *rng.integers(5, 40, 2)],
                float(rng.random())) for i in range(4) for _ in range(5)]
    a = evaluate(samples, dets, label_map={1: "a", 2: "b"})
    b, _ = assert_same_as_pycocotools(gt, dets)
    assert a.stats == b.stats
    assert a.per_class[1]["name"] == "a"


def test_structured_array_detections_equal_list():
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}], n_images=1, cats=(1,))
    dets = [det(1, 1, [0, 0, 10, 9], 0.9), det(1, 1, [3, 3, 10, 10], 0.4)]
    from synthgap.metrics import DETECTION_DTYPE
    arr = np.zeros(2, DETECTION_DTYPE)
    for i, d in enumerate(dets):
        arr[i] = (d["image_id"], d["category_id"], d["bbox"], d["score"])
    assert evaluate(gt, arr).stats == evaluate(gt, dets).stats


def test_result_to_dict_is_json_and_table_lists_classes():
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}], n_images=1, cats=(1, 2))
    r = evaluate(gt, [det(1, 1, [0, 0, 10, 10], 0.9)])
    d = json.loads(json.dumps(r.to_dict()))
    assert d["stats"]["AP"] == pytest.approx(1.0) and d["per_class"]["2"]["AP"] is None
    text = r.table()
    assert "AP50" in text and "c1" in text and "c2" in text


def test_matches_for_image_reports_misses_and_false_positives():
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
               {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10]}], n_images=1, cats=(1,))
    r = evaluate(gt, [det(1, 1, [0, 0, 10, 10], 0.9), det(1, 1, [30, 0, 10, 10], 0.8)])
    m = r.matches.for_image(1, 0.5)
    assert [d["status"] for d in m["detections"]] == ["tp", "fp"]
    assert [g["status"] for g in m["ground_truth"]] == ["matched", "missed"]
    assert m["ground_truth"][0]["det"] == 0
    with pytest.raises(ValueError, match="not evaluated"):
        r.matches.for_image(1, 0.42)


@pytest.mark.parametrize("bad,field", [
    ({"image_id": 9}, "image_id"), ({"category_id": 7}, "category_id"), ({"score": float("nan")}, "score"),
    ({"score": float("inf")}, "score"), ({"bbox": [0, 0, -1, 5]}, "bbox"), ({"bbox": [0, float("nan"), 1, 5]}, "bbox"),
    ({"bbox": [0, 0, 1]}, "bbox"), ({"score": "high"}, "score"),
])
def test_bad_detection_names_record_and_field(bad, field):
    from synthgap.data import DatasetError
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}], n_images=1, cats=(1,))
    dets = [det(1, 1, [0, 0, 10, 10], 0.9), dict(det(1, 1, [0, 0, 10, 10], 0.5), **bad)]
    with pytest.raises(DatasetError) as e:
        evaluate(gt, dets)
    assert e.value.field == field and e.value.record == "detections[1]"


def test_bad_ground_truth_names_annotation():
    from synthgap.data import DatasetError
    gt = coco([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
               {"image_id": 1, "category_id": 5, "bbox": [0, 0, 10, 10]}], n_images=1, cats=(1,))
    with pytest.raises(DatasetError) as e:
        evaluate(gt, [])
    assert e.value.record == "annotations[1]" and e.value.field == "category_id"
    with pytest.raises(DatasetError, match="label id 3"):
        evaluate([Sample(image="a.png", width=10, height=10, boxes=[[0, 0, 5, 5]], labels=[3])], [],
                 label_map={1: "a"})


def test_params_validation():
    with pytest.raises(ValueError):
        CocoParams(max_dets=(1, 10))
    with pytest.raises(ValueError):
        CocoParams(iou_thresholds=(1.5,))
    assert CocoParams(max_dets=(100, 1, 10)).max_dets == (1, 10, 100)
