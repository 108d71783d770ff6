"""AP by object attribute: the engine with attribute values in place of areas equals pycocotools given the
same values as annotation / detection ``area``; hand-made cases for each attribute."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest

from synthgap.data import Sample
from synthgap.metrics import detections_from_records, evaluate, load_ground_truth
from synthgap.metrics.attributes import (ASPECT_BINS, OCCLUSION_BINS, attribute_ap, attributes_table,
                                         evaluate_attributes)

LABELS = {1: "a", 2: "b"}


def random_scene(seed, n_images=12, size=(200, 160)):
    """Samples with visible/unoccluded pixel counts, and noisy detections of most boxes plus background ones."""
    rng = np.random.default_rng(seed)
    W, H = size
    samples, dets = [], []
    for i in range(n_images):
        n = int(rng.integers(1, 7))
        wh = np.exp(rng.uniform(np.log(6), np.log(120), (n, 2)))
        xy = rng.uniform(0, 1, (n, 2)) * (np.array([W, H]) - wh)
        xy[rng.random(n) < 0.3, 0] = 0.0                    # some boxes cut by the left border
        boxes = np.round(np.hstack([xy, wh]), 1)
        labels = rng.integers(1, 3, n)
        full = np.round(boxes[:, 2] * boxes[:, 3])
        samples.append(Sample(image=f"{i}.png", width=W, height=H, boxes=boxes, labels=labels, image_id=i + 1,
                              metadata={"visible_pixels": (full * rng.uniform(0.3, 1.0, n)).round().tolist(),
                                        "full_pixels": full.tolist()}))
        for j in range(n):
            if rng.random() < 0.75:
                b = boxes[j] + rng.normal(0, 0.08, 4) * np.repeat(boxes[j, 2:], 2)
                b[2:] = np.maximum(b[2:], 1)
                dets.append({"image_id": i + 1, "category_id": int(labels[j]), "bbox": np.round(b, 1).tolist(),
                             "score": round(float(rng.uniform(0.3, 1)), 2)})
        for _ in range(int(rng.integers(0, 3))):
            wb = rng.uniform(5, 60, 2)
            dets.append({"image_id": i + 1, "category_id": int(rng.integers(1, 3)),
                         "bbox": np.round(np.r_[rng.uniform(0, 1, 2) * (np.array([W, H]) - wb), wb], 1).tolist(),
                         "score": round(float(rng.uniform(0, 0.6)), 2)})
    return samples, dets


def pycocotools_bins(samples, dets, gt_values, det_values, bins):
    """pycocotools with each annotation's ``area`` = its attribute value (unknown: far below every bin) and
    each detection's ``area`` = its value (NaN: never outside a range): AP per bin, half-open bins."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict = {"images": [{"id": int(s.image_id)} for s in samples],
               "categories": [{"id": k, "name": v} for k, v in LABELS.items()], "annotations": []}
    for s in samples:
        for b, lbl in zip(s.boxes, s.labels):
            j = len(gt_dict["annotations"])
            v = gt_values[j]
            gt_dict["annotations"].append({"id": j + 1, "image_id": int(s.image_id), "category_id": int(lbl),
                                           "bbox": b.tolist(), "iscrowd": 0,
                                           "area": -1e300 if math.isnan(v) else float(v)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(dets))
        for i, ann in dt.anns.items():  # loadRes ids are 1-based input rows
            ann["area"] = math.nan if det_values is None else float(det_values[i - 1])
        E = COCOeval(gt, dt, "bbox")
        E.params.areaRng = [[-math.inf, math.inf]] + [[lo, float(np.nextafter(hi, -math.inf)) if math.isfinite(hi)
                                                       else hi] for _, lo, hi in bins]
        E.params.areaRngLbl = ["all"] + [b[0] for b in bins]
        E.evaluate()
        E.accumulate()
    out = {}
    for a, (label, _, _) in enumerate(bins, start=1):
        p = E.eval["precision"][:, :, :, a, -1]
        out[label] = float(p[p > -1].mean()) if (p > -1).any() else None
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_occlusion_and_aspect_bins_equal_pycocotools_with_values_as_area(seed):
    samples, dets = random_scene(seed)
    gt = load_ground_truth(samples, LABELS)
    dt = detections_from_records(dets, gt)
    vis = np.concatenate([np.asarray(s.metadata["visible_pixels"]) / np.asarray(s.metadata["full_pixels"])
                          for s in samples])
    vis[::7] = np.nan  # some boxes without the numbers: ignored in every bin
    got = attribute_ap(gt, dt, vis, None, OCCLUSION_BINS)
    want = pycocotools_bins(samples, dets, vis, None, OCCLUSION_BINS)
    for label in want:
        assert got[label]["AP"] == pytest.approx(want[label], abs=1e-12) if want[label] is not None \
            else got[label]["AP"] is None
    aspect = gt.boxes[:, 2] / gt.boxes[:, 3]
    det_aspect = dt.boxes[:, 2] / dt.boxes[:, 3]
    got = attribute_ap(gt, dt, aspect, det_aspect, ASPECT_BINS)
    want = pycocotools_bins(samples, dets, aspect, det_aspect, ASPECT_BINS)
    for label in want:
        assert got[label]["AP"] == pytest.approx(want[label], abs=1e-12) if want[label] is not None \
            else got[label]["AP"] is None


def test_size_bins_equal_coco_small_medium_large():
    samples, dets = random_scene(3)
    r = evaluate(samples, dets, label_map=LABELS, attributes=True)
    size = r.attributes["size"]["bins"]
    coco = {k: (None if v == -1 else pytest.approx(v, abs=1e-12)) for k, v in r.stats.items()}  # -1: no boxes
    assert [size[b]["AP"] for b in ("small", "medium", "large")] == [coco["APs"], coco["APm"], coco["APl"]]
    assert [size[b]["AR"] for b in ("small", "medium", "large")] == [coco["ARs"], coco["ARm"], coco["ARl"]]
    assert size["small"]["num_gt"] > 0 and size["medium"]["num_gt"] > 0
    assert r.attributes["occlusion"]["available"] and r.attributes["occlusion"]["source"] == "metadata"
    json.dumps(r.to_dict()["attributes"], allow_nan=False)
    assert "occlusion" in attributes_table(r.attributes)


def sample(boxes, labels, image_id=1, size=(100, 100), **meta):
    return Sample(image="x.png", width=size[0], height=size[1], boxes=np.asarray(boxes, float),
                  labels=np.asarray(labels), image_id=image_id, metadata=meta)


def test_occluded_and_truncated_objects_missed_show_in_their_bins():
    # four boxes: two fully visible inside the image (found), one 30 % visible (missed), one at the border (missed)
    s = sample([[20, 20, 20, 20], [60, 20, 20, 20], [20, 60, 20, 20], [80, 60, 20, 20]], [1, 1, 1, 1],
               visible_pixels=[400, 400, 120, 400], full_pixels=[400, 400, 400, 400])
    dets = [{"image_id": 1, "category_id": 1, "bbox": [20, 20, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [60, 20, 20, 20], "score": 0.8}]
    gt = load_ground_truth([s], LABELS)
    a = evaluate_attributes([s], gt, detections_from_records(dets, gt))
    occ = a["occlusion"]["bins"]
    assert occ["<50%"]["AR"] == 0.0 and occ["<50%"]["num_gt"] == 1
    assert occ[">=90%"]["AR"] == pytest.approx(2 / 3) and occ[">=90%"]["num_gt"] == 3
    trunc = a["truncation"]["bins"]
    assert trunc["at border"] == {"AP": 0.0, "AP50": 0.0, "AR": 0.0, "num_gt": 1, "range": [0.5, 1.5]}
    # inside: 2 of 3 found at precision 1 -> the 67 recall thresholds 0.00..0.66 at precision 1
    assert trunc["inside"]["AR"] == pytest.approx(2 / 3) and trunc["inside"]["AP"] == pytest.approx(67 / 101)
    assert a["aspect"]["bins"]["square"]["num_gt"] == 4 and a["aspect"]["bins"][">2:1"]["AP"] is None


def test_occlusion_not_available_without_pixel_counts_and_coco_dict_rejected():
    s = sample([[10, 10, 20, 20]], [1])
    gt = load_ground_truth([s], LABELS)
    a = evaluate_attributes([s], gt, detections_from_records([], gt))
    assert a["occlusion"] == {"available": False, "bins": {},
                              "reason": "no visible/unoccluded pixel counts in this dataset"}
    coco = {"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    with pytest.raises(ValueError, match="needs Samples"):
        evaluate(coco, [], attributes=True)


def test_generated_dataset_gives_occlusion_from_the_generator_side_table(tmp_path):
    from synthgap.data import open_dataset
    from synthgap.generate import generate

    root = str(tmp_path / "gen")
    generate(root, 3, format="solo", seed=0, width=96, height=72, progress=False)
    ds = open_dataset(root)
    samples = list(ds)
    dets = [{"image_id": int(s.image_id), "category_id": int(lbl), "bbox": list(map(float, b)), "score": 0.9}
            for s in samples for b, lbl in zip(s.boxes, s.labels)]
    r = evaluate(samples, dets, label_map=ds.label_map, attributes=True, attributes_root=root)
    occ = r.attributes["occlusion"]
    assert occ["available"] and occ["source"] == "generator"
    assert sum(b["num_gt"] for b in occ["bins"].values()) == sum(len(s) for s in samples)
    assert all(b["AR"] == 1.0 for b in occ["bins"].values() if b["num_gt"])  # perfect detections
    no_root = evaluate(samples, dets, label_map=ds.label_map, attributes=True)
    assert not no_root.attributes["occlusion"]["available"]
