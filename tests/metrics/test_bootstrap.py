"""The bootstrap over test images: a resample's numbers equal the engine's (and pycocotools') on the
materialised resampled dataset; intervals that collapse, centre and cover as they should; paired and
by-seed differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthgap.errors import BootstrapError
from synthgap.metrics import (CocoParams, bootstrap_intervals, evaluate, hierarchical_difference, image_weights,
                              paired_difference, resample_metrics, units_needed)

from tests.helpers.oracle import cocoeval

TOL = 1e-12


def random_set(seed: int, n_images: int, n_classes: int = 3, ties: bool = False) -> tuple[dict, list]:
    """COCO GT dict + results list: Poisson(3) boxes of 6-150 px per 200x150 image (small, medium and large),
    5 % crowd, some with an ``area`` field; 0-3 jittered copies per box (80 % right class) and 0-4 background
    boxes. ``ties``: scores rounded to 1 digit, so detections of one image and class share scores."""
    rng = np.random.default_rng(seed)
    gt = {"images": [{"id": 10 + 3 * i} for i in range(n_images)],
          "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(n_classes)], "annotations": []}
    dets = []
    for img in gt["images"]:
        boxes = []
        for _ in range(rng.poisson(3)):
            w, h = np.exp(rng.uniform(np.log(6), np.log(150), 2))
            x, y = rng.uniform(0, 200 - min(w, 199)), rng.uniform(0, 150 - min(h, 149))
            c = int(rng.integers(1, n_classes + 1))
            ann = {"id": len(gt["annotations"]) + 1, "image_id": img["id"], "category_id": c,
                   "bbox": [float(x), float(y), float(w), float(h)], "iscrowd": int(rng.random() < 0.05)}
            if rng.random() < 0.3:
                ann["area"] = float(0.7 * w * h)
            gt["annotations"].append(ann)
            boxes.append((x, y, w, h, c))
        for x, y, w, h, c in boxes:
            for _ in range(rng.integers(0, 4)):
                j = rng.normal(0, 0.12, 4) * [w, h, w, h]
                cat = c if rng.random() < 0.8 else int(rng.integers(1, n_classes + 1))
                box = [float(x + j[0]), float(y + j[1]), float(max(w + j[2], 1)), float(max(h + j[3], 1))]
                dets.append({"image_id": img["id"], "category_id": cat, "bbox": box,
                             "score": float(rng.uniform(0.2, 1.0))})
        for _ in range(rng.integers(0, 5)):
            w, h = np.exp(rng.uniform(np.log(6), np.log(100), 2))
            dets.append({"image_id": img["id"], "category_id": int(rng.integers(1, n_classes + 1)),
                         "bbox": [float(rng.uniform(0, 150)), float(rng.uniform(0, 100)), float(w), float(h)],
                         "score": float(rng.uniform(0.0, 0.7))})
    if ties:
        for d in dets:
            d["score"] = round(d["score"], 1)
    return gt, dets


def materialise(gt: dict, dets: list, weights: np.ndarray) -> tuple[dict, list]:
    """The resampled dataset itself: image i (in id order) copied weights[i] times with new ids, in order."""
    ids = sorted(img["id"] for img in gt["images"])
    copies, images = {}, []
    for iid, w in zip(ids, weights.tolist()):
        copies[iid] = [len(images) + c + 1 for c in range(w)]
        images += [{"id": j} for j in copies[iid]]
    anns = [dict(a, id=n + 1, image_id=j) for n, (a, j) in
            enumerate((a, j) for a in gt["annotations"] for j in copies[a["image_id"]])]
    return ({"images": images, "annotations": anns, "categories": gt["categories"]},
            [dict(d, image_id=j) for d in dets for j in copies[d["image_id"]]])


def assert_same_numbers(out: dict, b: int, r) -> None:
    """Resample ``b`` of `resample_metrics` output == the engine's result ``r`` (NaN == COCO's -1 / None)."""
    for name, v in r.stats.items():
        got = out["stats"][name][b]
        assert (v == -1.0 and math.isnan(got)) or abs(got - v) <= TOL, (name, got, v)
    for cid, row in r.per_class.items():
        for metric in out["per_class"][cid]:
            got, v = out["per_class"][cid][metric][b], row[metric]
            assert (v is None and math.isnan(got)) or (v is not None and abs(got - v) <= TOL), (cid, metric, got, v)


# ---------------------------------------------------------------------------------------------------------
# the exact oracle

@pytest.mark.parametrize("ties", [False, True])
def test_a_resample_equals_the_engine_on_the_materialised_dataset(ties):
    """Every stat and per-class metric of five resamples equals evaluate() on the dataset with each image
    copied as often as drawn (crowd boxes, area fields, every area range; with ties: scores shared by
    detections of one image and class, which COCO interleaves copy by copy)."""
    gt, dets = random_set(1, 40, ties=ties)
    r = evaluate(gt, dets)
    weights = image_weights(40, 5, seed=3)
    assert weights.max() >= 3 and (weights == 0).any()
    out = resample_metrics(r, weights)
    for b in range(len(weights)):
        assert_same_numbers(out, b, evaluate(*materialise(gt, dets, weights[b])))


def test_a_resample_equals_pycocotools_with_custom_params():
    """Custom IoU thresholds, max dets (the cap bites: 1, 2, 4 per image and class, so AP at 100 is -1)
    and area ranges; pycocotools on the materialised dataset as the oracle."""
    gt, dets = random_set(2, 30)
    areas = (("all", 0, 1e10), ("small", 0, 400), ("medium", 400, 2500), ("large", 2500, 1e10))
    params = CocoParams(iou_thresholds=(0.3, 0.5, 0.75), max_dets=(1, 2, 4), area_ranges=areas)
    r = evaluate(gt, dets, params=params)
    weights = image_weights(30, 3, seed=1)
    out = resample_metrics(r, weights)
    for b in range(len(weights)):
        g2, d2 = materialise(gt, dets, weights[b])
        E = cocoeval(g2, d2, iou_thresholds=params.iou_thresholds, max_dets=params.max_dets, area_ranges=areas)
        got = np.array([out["stats"][n][b] for n in r.stats])
        np.testing.assert_allclose(np.where(np.isnan(got), -1.0, got), E.stats[:12], rtol=0, atol=TOL)
        assert_same_numbers(out, b, evaluate(g2, d2, params=params))


def test_weights_of_ones_give_the_result_itself_and_ids_of_any_size_work():
    gt, dets = random_set(3, 25)
    r = evaluate(gt, dets)
    assert_same_numbers(resample_metrics(r, np.ones((1, 25), np.int64)), 0, r)
    big = {img["id"]: (7 << 120) + img["id"] for img in gt["images"]}  # 128-bit ids (datasetinsights' uuid ints)
    gt_big = {**gt, "images": [{"id": big[i["id"]]} for i in gt["images"]],
              "annotations": [dict(a, image_id=big[a["image_id"]]) for a in gt["annotations"]]}
    r_big = evaluate(gt_big, [dict(d, image_id=big[d["image_id"]]) for d in dets])
    assert r_big.matches.image_ids.dtype == object
    assert bootstrap_intervals(r_big, 200, seed=4).to_dict() == bootstrap_intervals(r, 200, seed=4).to_dict()


# ---------------------------------------------------------------------------------------------------------
# intervals

def test_identical_images_collapse_the_interval_to_a_point():
    gt1, dets1 = random_set(4, 1)
    assert dets1 and gt1["annotations"]
    n = 12
    gt = {"images": [{"id": i + 1} for i in range(n)], "categories": gt1["categories"],
          "annotations": [dict(a, id=i * 100 + a["id"], image_id=i + 1) for i in range(n) for a in gt1["annotations"]]}
    dets = [dict(d, image_id=i + 1) for i in range(n) for d in dets1]
    r = evaluate(gt, dets)
    iv = bootstrap_intervals(r, 300, seed=0)
    for name, v in r.stats.items():
        if v == -1.0:
            assert iv.stats[name] is None
        else:
            lo, hi = iv.stats[name]
            assert abs(lo - v) <= TOL and abs(hi - v) <= TOL and iv.std[name] <= TOL, name


def test_with_many_resamples_the_bootstrap_mean_is_the_full_set_metric():
    """On 150 images, 2,000 resamples: the bootstrap mean of a recall (a ratio of sums, nearly linear in the
    images) is within 0.05 bootstrap standard errors of the full-set value; of an AP within 0.5 (AP's
    right-monotone envelope is a running maximum, so resampled AP runs a little high: +0.4 SE for AP50
    here, measured 2026-12-01); and the interval holds the full-set value."""
    gt, dets = random_set(5, 150)
    r = evaluate(gt, dets)
    iv = bootstrap_intervals(r, 2000, seed=1)
    for name, tolerance in (("AR1", 0.05), ("AR100", 0.05), ("ARm", 0.05), ("AP", 0.5), ("AP50", 0.5)):
        assert abs(iv.mean[name] - r.stats[name]) < tolerance * iv.std[name], name
        lo, hi = iv.stats[name]
        assert lo < r.stats[name] < hi and 0.02 < hi - lo < 0.3, name


def _generative_set(rng, n_images: int) -> tuple[dict, np.ndarray]:
    """One class, 3 objects per image on a grid; each found with probability 0.7 by an exact box (a TP at
    every IoU) scored Beta(4, 2), plus Poisson(2) background boxes scored Beta(2, 4). As arrays (fast)."""
    from synthgap.metrics import DETECTION_DTYPE

    gt = {"images": [{"id": i + 1} for i in range(n_images)], "categories": [{"id": 1, "name": "obj"}],
          "annotations": [{"id": 3 * i + j + 1, "image_id": i + 1, "category_id": 1,
                           "bbox": [40.0 * j, 0.0, 20.0, 20.0]} for i in range(n_images) for j in range(3)]}
    found = rng.random((n_images, 3)) < 0.7
    img, slot = np.nonzero(found)
    n_bg = rng.poisson(2, n_images)
    bg_img = np.repeat(np.arange(n_images), n_bg)
    dets = np.zeros(len(img) + len(bg_img), DETECTION_DTYPE)
    dets["image_id"] = np.r_[img, bg_img] + 1
    dets["category_id"] = 1
    dets["bbox"] = np.r_[np.c_[40.0 * slot, np.zeros(len(img)), np.full((len(img), 2), 20.0)],
                         np.c_[40.0 * (np.arange(len(bg_img)) % 7), np.full(len(bg_img), 100.0),
                               np.full((len(bg_img), 2), 20.0)]]
    dets["score"] = np.r_[rng.beta(4, 2, len(img)), rng.beta(2, 4, len(bg_img))]
    return gt, dets


@pytest.mark.slow
def test_the_95_interval_covers_the_population_ap_about_95_percent_of_the_time():
    """200 test sets of 80 images drawn from a fixed generative model; the population AP50 is the AP50 of
    40,000 images of it. The 95 % interval (400 resamples) covers it in [0.88, 0.99] of the sets (measured
    2026-12-01: 0.955; 5 sets above the interval, 4 below)."""
    rng = np.random.default_rng(0)
    truth = evaluate(*_generative_set(rng, 40_000), matches=False).stats["AP50"]
    covered = 0
    for rep in range(200):
        r = evaluate(*_generative_set(rng, 80))
        lo, hi = bootstrap_intervals(r, 400, seed=rep).stats["AP50"]
        covered += lo <= truth <= hi
    assert 0.88 <= covered / 200 <= 0.99, covered / 200


# ---------------------------------------------------------------------------------------------------------
# paired and by seed

def _models_on_shared_difficulty(seed: int, n_images: int = 60, better: float = 0.15):
    """Two runs on one test set where images differ a lot in difficulty (0.1-0.95 of objects found) and
    model b finds, on every image, what a finds plus more: their errors are on the same images."""
    rng = np.random.default_rng(seed)
    ease = rng.uniform(0.1, 0.95, n_images)
    gt = {"images": [{"id": i + 1} for i in range(n_images)], "categories": [{"id": 1, "name": "obj"}],
          "annotations": []}
    a, b = [], []
    for i in range(n_images):
        for j in range(4):
            box = [40.0 * j, 0.0, 20.0, 20.0]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": 1,
                                      "bbox": box})
            u, s = rng.random(), float(rng.uniform(0.3, 1.0))
            if u < ease[i]:
                a.append({"image_id": i + 1, "category_id": 1, "bbox": box, "score": s})
            if u < min(ease[i] + better, 1.0):
                b.append({"image_id": i + 1, "category_id": 1, "bbox": box, "score": s})
        for k in range(rng.poisson(1)):
            fp = {"image_id": i + 1, "category_id": 1, "bbox": [20.0 * k, 90.0, 20.0, 20.0],
                  "score": float(rng.uniform(0, 0.8))}
            a.append(fp)
            b.append(fp)
    return gt, evaluate(gt, a), evaluate(gt, b)


def test_the_paired_interval_is_tighter_than_the_unpaired_one_when_models_err_on_the_same_images():
    _, ra, rb = _models_on_shared_difficulty(0)
    d = paired_difference(ra, rb, "AP50", resamples=1000, seed=2)
    assert d.difference == pytest.approx(rb.stats["AP50"] - ra.stats["AP50"]) and d.difference > 0.05
    assert d.low > 0 and d.p_positive == 1.0
    # unpaired: each run resampled on its own draws
    va = resample_metrics(ra, image_weights(60, 1000, seed=3))["stats"]["AP50"]
    vb = resample_metrics(rb, image_weights(60, 1000, seed=4))["stats"]["AP50"]
    lo, hi = np.quantile(vb - va, [0.025, 0.975])
    assert (d.high - d.low) < 0.5 * (hi - lo)
    assert lo < 0 < d.low  # unpaired, the difference is not resolved; paired it is
    per_class = paired_difference(ra, rb, "AP", category_id=1, resamples=200)
    assert per_class.difference == pytest.approx(rb.per_class[1]["AP"] - ra.per_class[1]["AP"])


def test_hierarchical_with_one_seed_is_the_paired_image_bootstrap():
    _, ra, rb = _models_on_shared_difficulty(1)
    d = paired_difference(ra, rb, "AP", resamples=300, seed=5)
    h = hierarchical_difference([(ra, rb)], "AP", resamples=300, seed=5)
    assert (h.mean, h.low, h.high, h.p_positive) == pytest.approx((d.difference, d.low, d.high, d.p_positive))
    assert h.seeds == 1 and h.seed_sd is None and h.seeds_needed is None and h.image_sd > 0


def test_hierarchical_with_many_varied_seeds_approaches_the_seed_interval():
    """10 seeds whose gain over run a varies from -0.3 to +0.6 of the objects, on one test set of 50
    images: the seeds dominate the uncertainty, and the interval is within 15 % of the width of the
    seed-resampling interval of the per-seed differences (7 % measured)."""
    rng = np.random.default_rng(7)
    pairs = []
    for gain in rng.uniform(-0.3, 0.6, 10):
        _, a, b = _models_on_shared_difficulty(2, n_images=50, better=abs(float(gain)))
        pairs.append((b, a) if gain < 0 else (a, b))  # b - a has the gain's sign
    h = hierarchical_difference(pairs, "AP50", resamples=500, seed=0)
    diffs = np.array(h.per_seed)
    seed_means = diffs[np.random.default_rng(1).integers(0, 10, (4000, 10))].mean(axis=1)
    lo, hi = np.quantile(seed_means, [0.025, 0.975])
    assert h.dominant == "seeds" and h.seed_sd ** 2 / 10 > 5 * h.image_sd ** 2
    assert abs((h.high - h.low) - (hi - lo)) < 0.15 * (hi - lo)
    assert h.mean == pytest.approx(diffs.mean()) and h.low < h.mean < h.high and h.seeds == 10
    assert h.seeds_needed == units_needed(h.mean, h.seed_sd)
    assert h.images_needed == units_needed(h.mean, h.image_sd * math.sqrt(50))
    assert set(h.to_dict()) >= {"mean", "low", "high", "p_positive", "seed_sd", "image_sd", "per_seed"}


def test_units_needed_is_the_least_n_with_z_sd_over_root_n_below_the_difference():
    n = units_needed(0.1, 0.2)                       # (1.96 * 0.2 / 0.1)^2 = 15.37
    assert n == 16 and 1.959964 * 0.2 / math.sqrt(n) < 0.1 <= 1.959964 * 0.2 / math.sqrt(n - 1)
    assert units_needed(-0.1, 0.2) == 16 and units_needed(0.1, 0.0) == 1
    assert units_needed(0.0, 0.2) is None and units_needed(0.1, None) is None
    assert units_needed(0.1, 0.2, level=0.99) > n


# ---------------------------------------------------------------------------------------------------------
# results, seeds and errors

def test_intervals_are_seeded_json_ready_and_carried_by_the_result():
    import json

    gt, dets = random_set(6, 20)
    r = evaluate(gt, dets)
    a, b, c = (bootstrap_intervals(r, 100, seed=s) for s in (0, 0, 1))
    assert a.to_dict() == b.to_dict() != c.to_dict()
    r.intervals = a
    doc = json.loads(json.dumps(r.to_dict()))
    assert doc["intervals"]["resamples"] == 100 and doc["intervals"]["seed"] == 0
    assert set(doc["intervals"]["stats"]) == set(r.stats) and doc["intervals"]["level"] == 0.95
    lo, hi = a.stats["AP50"]
    assert f"{lo:.4f}, {hi:.4f}]" in r.table() and "percentile bootstrap" in r.table()
    assert set(doc["intervals"]["per_class"]) == {str(c) for c in r.per_class}


def test_bad_inputs_are_clear_bootstrap_errors():
    gt, dets = random_set(7, 10)
    with pytest.raises(BootstrapError, match="matches=True"):
        bootstrap_intervals(evaluate(gt, dets, matches=False))
    with pytest.raises(BootstrapError, match="'unity' protocol"):
        bootstrap_intervals(evaluate(gt, dets, protocol="unity"))
    r = evaluate(gt, dets)
    fewer = evaluate({**gt, "images": gt["images"][:-1],
                      "annotations": [a for a in gt["annotations"] if a["image_id"] != gt["images"][-1]["id"]]},
                     [d for d in dets if d["image_id"] != gt["images"][-1]["id"]])
    with pytest.raises(BootstrapError, match="same test images: run 1 has 9 images"):
        paired_difference(r, fewer)
    with pytest.raises(BootstrapError, match="unknown metric 'mAP'"):
        paired_difference(r, r, "mAP")
    with pytest.raises(BootstrapError, match="category_id 99"):
        paired_difference(r, r, "AP", category_id=99)
    with pytest.raises(BootstrapError, match=r"weights must be \(resamples, 10\)"):
        resample_metrics(r, np.ones((2, 9), np.int64))
    with pytest.raises(BootstrapError, match="level"):
        bootstrap_intervals(r, level=95)
    with pytest.raises(BootstrapError, match="at least one"):
        hierarchical_difference([])
