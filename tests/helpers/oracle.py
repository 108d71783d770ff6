"""Test oracles: pycocotools' COCOeval (quiet), and a plain-loop restatement of datasetinsights' metrics."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np


def cocoeval(gt_dict: dict, dets: list, iou_thresholds=None, max_dets=None, area_ranges=None):
    """Run pycocotools (evaluate, accumulate, summarize) without its prints; returns the COCOeval object."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_dict)
        for a in gt.dataset["annotations"]:  # pycocotools needs the fields synthgap defaults
            a.setdefault("area", a["bbox"][2] * a["bbox"][3])
            a.setdefault("iscrowd", 0)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(dets))
        E = COCOeval(gt, dt, "bbox")
        if iou_thresholds is not None:
            E.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        if max_dets is not None:
            E.params.maxDets = list(max_dets)
        if area_ranges is not None:
            E.params.areaRng = [[lo, hi] for _, lo, hi in area_ranges]
            E.params.areaRngLbl = [lbl for lbl, _, _ in area_ranges]
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E


def _iou_bbox2d(g, d):
    """datasetinsights' BBox2D.iou(gt, pred), restated with plain floats."""
    if g[0] > d[0] + d[2] or d[0] > g[0] + g[2] or g[1] + g[3] < d[1] or g[1] > d[1] + d[3]:
        return 0
    inter = (min(g[0] + g[2], d[0] + d[2]) - max(g[0], d[0])) * (min(g[1] + g[3], d[1] + d[3]) - max(g[1], d[1]))
    return inter / float(g[2] * g[3] + d[2] * d[3] - inter)


def unity_reference(gt_dict: dict, dets: list, thresholds=None, max_dets=100):
    """datasetinsights' AveragePrecision / AverageRecall / means, one image at a time, with Python loops.

    Returns {"mAP", "mAPIOU50", "mAR", "ap": {t: {label: ap}}, "ar": {t: {label: ar}}}.
    """
    if thresholds is None:
        thresholds = list(np.linspace(0.5, 0.95, 10))
    thresholds = list(thresholds)
    if 0.5 not in thresholds:
        thresholds_all = thresholds + [0.5]
    else:
        thresholds_all = thresholds
    by_img_gt = {img["id"]: [] for img in gt_dict["images"]}
    for a in gt_dict["annotations"]:
        by_img_gt[a["image_id"]].append((a["category_id"], a["bbox"]))
    by_img_dt = {img["id"]: [] for img in gt_dict["images"]}
    for d in dets:
        by_img_dt[d["image_id"]].append((d["category_id"], d["bbox"], d["score"]))
    gt_count = {}
    records = {t: {} for t in thresholds_all}
    for img in gt_dict["images"]:
        gts = by_img_gt[img["id"]]
        for label, _ in gts:
            gt_count[label] = gt_count.get(label, 0) + 1
        preds = sorted(by_img_dt[img["id"]], key=lambda p: p[2], reverse=True)[:max_dets]
        labels = []
        for p in preds:
            if p[0] not in labels:
                labels.append(p[0])
        for t in thresholds_all:
            for label in labels:
                seen = [False] * len(gts)
                for p in (p for p in preds if p[0] == label):
                    best, best_i = -1, -1
                    for i, (gl, gb) in enumerate(gts):
                        if gl != label:
                            continue
                        iou = _iou_bbox2d(gb, p[1])
                        if iou > best:
                            best, best_i = iou, i
                    tp = best >= t and not seen[best_i]
                    if tp:
                        seen[best_i] = True
                    records[t].setdefault(label, []).append((p[2], tp))
    ap = {t: {} for t in thresholds_all}
    ar = {t: {} for t in thresholds_all}
    for t in thresholds_all:
        for label in gt_count:
            recs = records[t].get(label)
            if recs is None:
                ap[t][label] = 0
                ar[t][label] = 0
                continue
            recs = sorted(recs, reverse=True)
            tps = np.array([r[1] for r in recs]).astype(int)
            acc_tp, acc_fp = np.cumsum(tps), np.cumsum(1 - tps)
            rec = acc_tp / gt_count[label]
            prec = np.divide(acc_tp, acc_fp + acc_tp)
            mrec = [0] + list(rec) + [1]
            mpre = [0] + list(prec) + [0]
            for i in range(len(mpre) - 1, 0, -1):
                mpre[i - 1] = max(mpre[i - 1], mpre[i])
            total = 0
            for i in range(1, len(mrec)):
                if mrec[i] != mrec[i - 1]:
                    total = total + (mrec[i] - mrec[i - 1]) * mpre[i]
            ap[t][label] = total
            ar[t][label] = sum(r[1] for r in recs) / gt_count[label]
    return {"mAP": np.mean([v for t in thresholds for v in ap[t].values()]),
            "mAPIOU50": np.mean(list(ap[0.5].values())),
            "mAR": np.mean([v for t in thresholds for v in ar[t].values()]), "ap": ap, "ar": ar}
