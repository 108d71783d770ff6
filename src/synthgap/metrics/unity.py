"""The datasetinsights ("unity") protocol: the metrics behind the published SynthDet / UnityGroceries numbers.

Reimplements datasetinsights' ``MeanAveragePrecisionAverageOverIOU`` (``mAP``), ``MeanAveragePrecisionIOU50``
(``mAPIOU50``), ``MeanAverageRecallAverageOverIOU`` (``mAR``) and ``AveragePrecisionIOU50`` (per class), as
stored in Unity-Technologies/datasetinsights ``evaluation_metrics/average_precision_2d.py`` @0d7d04cc,
``average_recall_2d.py`` @06b39a21, ``records.py`` @cddd340b and ``io/bbox.py`` @23f8d1fc:

* Per image, detections sorted by score (descending, stable) and capped at 100 **across classes**.
* Matching (``Records.add_records``), per image and class, detections in score order: the best box is the
  *first* box of highest IoU among **all** boxes of the class (matched or not); the detection is a TP when
  that IoU >= t and the box is not yet taken, otherwise an FP (no fallback to the second-best box).
  No crowd handling (iscrowd is ignored), no area ranges.
* IoU is ``BBox2D.iou``: inter / (area_gt + area_det - inter), 0 when the boxes do not touch.
* Per class: records sorted by (score, TP) descending (score ties: TPs first), precision = tp / (tp + fp),
  recall = tp / num_gt, AP by every-point interpolation (area under the right-monotone PR envelope).
  AR = TPs / num_gt (the maximum recall).
* Means over the classes that have ground truth (a class without detections counts 0; a class without
  ground truth is left out, its detections never count), and over IoU thresholds 0.50:0.95.
"""

from __future__ import annotations

import warnings

import numpy as np

from synthgap.metrics.coco import CocoParams, group_rank
from synthgap.metrics.inputs import Detections, GroundTruth
from synthgap.metrics.result import Matches, MetricsResult


def box_iou_datasetinsights(gt: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Row-wise ``BBox2D.iou`` of xywh ``gt[i]`` and ``dt[i]`` (float64; 0 when they do not touch)."""
    gx, gy, gw, gh = gt.T
    dx, dy, dw, dh = dt.T
    touch = ~((gx > dx + dw) | (dx > gx + gw) | (gy + gh < dy) | (gy > dy + dh))
    inter = (np.minimum(gx + gw, dx + dw) - np.maximum(gx, dx)) * (np.minimum(gy + gh, dy + dh) - np.maximum(gy, dy))
    union = gw * gh + dw * dh - inter
    ok = touch & (union > 0)  # datasetinsights divides by zero for two touching empty boxes; synthgap says 0
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def evaluate_unity(gt: GroundTruth, dt: Detections, params: CocoParams | None = None, *,
                   matches: bool = True) -> MetricsResult:
    """datasetinsights' detection metrics; see the module docstring for the rules. ``matches=False``:
    ``result.matches`` is None (same numbers, without the per-detection arrays)."""
    p = params or CocoParams()
    thr = np.asarray(p.iou_thresholds, np.float64)
    has50 = bool((thr == 0.5).any())
    thr_all = thr if has50 else np.append(thr, 0.5)
    T, K = len(thr_all), len(gt.category_ids)

    # -- per image: score order (stable), capped across classes
    order = np.lexsort((-dt.scores, dt.image))
    rank_sorted = group_rank(dt.image[order])
    kept = order[rank_sorted < p.unity_max_dets]
    kept_rank = rank_sorted[rank_sorted < p.unity_max_dets]

    best_gt, valid = _best_boxes(gt, dt, kept, thr_all)
    # a TP is the first detection (in score order) of its best box whose IoU passes the threshold
    tp = np.zeros((len(kept), T), bool)
    has = np.flatnonzero(best_gt >= 0)
    if len(has):
        o = has[np.lexsort((kept_rank[has], best_gt[has]))]
        v = valid[o]
        run = group_rank(best_gt[o])
        starts = np.flatnonzero(run == 0)
        csum = np.cumsum(v, axis=0)
        before = np.repeat(np.vstack([np.zeros((1, T), np.int64), csum[starts[1:] - 1]]),
                           np.diff(np.append(starts, len(o))), axis=0)
        tp[o] = v & (csum - before == 1)

    num_gt = np.bincount(gt.category, minlength=K)
    kept_cat = dt.category[kept]
    ap = np.full((T, K), -1.0)
    ar = np.full((T, K), -1.0)
    cls_order = np.lexsort((-dt.scores[kept], kept_cat))
    cat_sorted = kept_cat[cls_order]
    score_sorted = dt.scores[kept][cls_order]
    tp_sorted = _tps_first_on_ties(tp[cls_order], cat_sorted, score_sorted)
    bounds = np.searchsorted(cat_sorted, np.arange(K + 1))
    for k in np.flatnonzero(num_gt > 0):
        seg = tp_sorted[bounds[k]:bounds[k + 1]]
        ap[:, k], ar[:, k] = _ap_ar(seg, int(num_gt[k]))

    # classes in order of first appearance in the ground-truth stream (dict order in datasetinsights)
    cats_present, first = np.unique(gt.category, return_index=True)
    label_order = cats_present[np.argsort(first, kind="stable")]
    t_main = np.arange(len(thr))
    t50 = int(np.flatnonzero(thr_all == 0.5)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no ground truth at all: nan, as np.mean([])
        stats = {"mAP": float(np.mean(ap[np.ix_(t_main, label_order)].ravel())),
                 "mAPIOU50": float(np.mean(ap[t50, label_order])),
                 "mAR": float(np.mean(ar[np.ix_(t_main, label_order)].ravel()))}
    per_class = {}
    for k, cid in enumerate(gt.category_ids.tolist()):
        defined = num_gt[k] > 0
        per_class[cid] = {"name": gt.category_names[cid],
                          "AP": float(np.mean(ap[t_main, k])) if defined else None,
                          "APIOU50": float(ap[t50, k]) if defined else None,
                          "AR": float(np.mean(ar[t_main, k])) if defined else None,
                          "num_gt": int(num_gt[k]), "num_det": int((kept_cat == k).sum())}
    match_arrays = _matches(gt, dt, kept, best_gt, tp[:, t_main], thr) if matches else None
    return MetricsResult(protocol="unity", stats=stats, per_class=per_class,
                         params={"iou_thresholds": thr.tolist(), "max_dets_per_image": p.unity_max_dets},
                         category_ids=gt.category_ids, matches=match_arrays, recall=ar[t_main],
                         extra={"ap": ap[t_main], "ap50": ap[t50]})


def _best_boxes(gt: GroundTruth, dt: Detections, kept: np.ndarray, thr: np.ndarray):
    """For each kept detection: the first box of highest IoU in its (image, class) (-1: none), and IoU >= t."""
    K = len(gt.category_ids)
    gkey = gt.image * K + gt.category
    gorder = np.argsort(gkey, kind="stable")
    gkey_sorted = gkey[gorder]
    dkey = dt.image[kept] * K + dt.category[kept]
    lo = np.searchsorted(gkey_sorted, dkey, side="left")
    cnt = np.searchsorted(gkey_sorted, dkey, side="right") - lo
    pe = np.repeat(np.arange(len(kept)), cnt)
    pg = gorder[np.repeat(lo - (np.cumsum(cnt) - cnt), cnt) + np.arange(int(cnt.sum()))]
    iou = box_iou_datasetinsights(gt.boxes[pg], dt.boxes[kept[pe]])
    if thr.min() > 0:  # the best box of a detection that can match has IoU >= min threshold
        keep = iou >= thr.min()
        pe, pg, iou = pe[keep], pg[keep], iou[keep]
    best_gt = np.full(len(kept), -1, np.int64)
    best_iou = np.full(len(kept), -1.0)
    if len(pe):
        starts = np.flatnonzero(np.r_[True, pe[1:] != pe[:-1]])
        counts = np.diff(np.append(starts, len(pe)))
        best = np.maximum.reduceat(iou, starts)
        pos = np.where(iou == np.repeat(best, counts), np.arange(len(pe)), len(pe))
        first = np.minimum.reduceat(pos, starts)  # strict '>' in datasetinsights: the first maximum wins
        best_gt[pe[starts]] = pg[first]
        best_iou[pe[starts]] = best
    return best_gt, best_iou[:, None] >= thr[None, :]


def _tps_first_on_ties(tp: np.ndarray, cat: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``sorted(records, reverse=True)`` on (score, is_tp): within equal scores of a class, TPs come first."""
    n = len(tp)
    if n == 0:
        return tp
    new_block = np.r_[True, (cat[1:] != cat[:-1]) | (score[1:] != score[:-1])]
    starts = np.flatnonzero(new_block)
    lengths = np.diff(np.append(starts, n))
    n_tp = np.add.reduceat(tp.astype(np.int64), starts, axis=0)
    pos = group_rank(np.cumsum(new_block))
    return pos[:, None] < np.repeat(n_tp, lengths, axis=0)


def _ap_ar(tp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Every-point interpolated AP and max recall per threshold, for one class (``tp`` (n, T) sorted)."""
    n, T = tp.shape
    if n == 0:
        return np.zeros(T), np.zeros(T)
    acc_tp = np.cumsum(tp, axis=0)
    acc_fp = np.arange(1, n + 1)[:, None] - acc_tp
    recall = acc_tp / num_gt
    precision = np.divide(acc_tp, acc_fp + acc_tp)
    env = np.maximum.accumulate(precision[::-1], axis=0)[::-1]
    step = np.diff(recall, axis=0, prepend=0.0)
    ap = np.cumsum(step * env, axis=0)[-1]  # sequential sum, as datasetinsights' Python loop
    return ap, acc_tp[-1] / num_gt


def _matches(gt: GroundTruth, dt: Detections, kept, best_gt, tp, thr) -> Matches:
    D, G, T = len(dt), len(gt), len(thr)
    evaluated = np.zeros(D, bool)
    evaluated[kept] = True
    det_gt = np.full((D, T), -1, np.int64)
    det_gt[kept] = np.where(tp, best_gt[:, None], -1)
    gt_det = np.full((G, T), -1, np.int64)
    d_i, t_i = np.nonzero(tp)
    gt_det[best_gt[d_i], t_i] = kept[d_i]
    return Matches(iou_thresholds=thr, det_image_id=gt.image_ids[dt.image],
                   det_category_id=gt.category_ids[dt.category], det_score=dt.scores, det_evaluated=evaluated,
                   det_gt=det_gt, det_ignore=np.zeros((D, T), bool), gt_image_id=gt.image_ids[gt.image],
                   gt_category_id=gt.category_ids[gt.category], gt_id=gt.ids, gt_box=gt.boxes,
                   gt_ignore=np.zeros(G, bool), gt_det=gt_det)
