"""COCO bbox evaluation, numerically identical to pycocotools' COCOeval (evaluate + accumulate + summarize).

The rules reproduced (pycocotools 2.0 ``cocoeval.py`` and ``maskApi.c``):

* IoU is maskApi's bbox IoU in float64: for a crowd box the union is the detection's area.
* Per (image, class): detections sorted by score, descending, stable (``argsort(-s, kind="mergesort")``),
  capped at ``max(max_dets)``; ground truth "ignored" (crowd, or ``area`` outside the range) is tried last.
* Greedy matching per IoU threshold t (capped at 1 - 1e-10): each detection takes, among the boxes not yet
  matched (crowd boxes always available) with IoU >= t, the one of highest IoU (the *last* such box on ties);
  a regular box always wins over an ignored one. A detection matched to an ignored box is ignored; an
  unmatched detection whose area w*h lies outside the range is ignored.
* Per class: detections of all images pooled, sorted by score (stable, images in id order), precision made
  monotone from the right, sampled at the recall thresholds with ``searchsorted(side="left")``.
* Summary: mean over entries > -1; a class without ground truth is -1 and left out.

How it is vectorised: all candidate (detection, box) pairs (same image and class, IoU >= the lowest
threshold) are built at once; the greedy loop then runs over the *rank* of a detection within its
(image, class) group, processing that rank of every group together, for all area ranges and IoU
thresholds at once (detections with c candidate boxes as one dense (d, c, A, T) block). The loop count
is the largest number of candidate detections in one (image, class), not the number of detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from synthgap.metrics.inputs import Detections, GroundTruth
from synthgap.metrics.result import Matches, MetricsResult

_EPS = np.spacing(1)  # pycocotools' guard in precision = tp / (tp + fp + eps)
_PAIR_CHUNK = 1 << 20  # (detection, box) pairs whose IoU is computed at once: bounds box_iou's temporaries


def _row_dtype(n: int) -> type:
    """int32 for row numbers (and -1) of arrays below 2**31 rows: the per-detection match arrays are the
    bulk of an evaluation's memory (issue 14: 10 M detections), and they hold only row indices."""
    return np.int32 if n < 2 ** 31 - 1 else np.int64


def _default_iou() -> tuple[float, ...]:
    return tuple(float(x) for x in np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True))


def _default_rec() -> tuple[float, ...]:
    return tuple(float(x) for x in np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True))


DEFAULT_AREA_RANGES = (("all", 0.0, 1e5 ** 2), ("small", 0.0, 32.0 ** 2), ("medium", 32.0 ** 2, 96.0 ** 2),
                       ("large", 96.0 ** 2, 1e5 ** 2))


@dataclass(frozen=True)
class CocoParams:
    """COCOeval parameters (defaults = COCOeval's bbox defaults).

    Args:
        iou_thresholds: IoU thresholds T (``iouThrs``).
        rec_thresholds: recall thresholds R (``recThrs``).
        max_dets: detections kept per image and class, ascending, at least 3 (``maxDets``; the summary
            uses the first three, and ``AP`` is taken at 100 like COCOeval).
        area_ranges: (label, min, max) in pixels^2 (``areaRng`` / ``areaRngLbl``); the summary looks up
            the labels all/small/medium/large. The first range is the one reported in `Matches`.
        unity_max_dets: datasetinsights protocol only: detections kept per image across classes.
    """

    iou_thresholds: tuple[float, ...] = field(default_factory=_default_iou)
    rec_thresholds: tuple[float, ...] = field(default_factory=_default_rec)
    max_dets: tuple[int, ...] = (1, 10, 100)
    area_ranges: tuple[tuple[str, float, float], ...] = DEFAULT_AREA_RANGES
    unity_max_dets: int = 100

    def __post_init__(self) -> None:
        iou = tuple(float(x) for x in self.iou_thresholds)
        if not iou or not all(0.0 <= x <= 1.0 for x in iou):
            raise ValueError(f"IoU thresholds must be in [0, 1], got {iou}")
        rec = tuple(float(x) for x in self.rec_thresholds)
        if not rec or not all(0.0 <= x <= 1.0 for x in rec) or list(rec) != sorted(rec):
            raise ValueError(f"recall thresholds must be ascending values in [0, 1], got {rec}")
        dets = tuple(sorted(int(x) for x in self.max_dets))  # COCOeval sorts maxDets
        if len(dets) < 3 or dets[0] < 1 or len(set(dets)) != len(dets):
            raise ValueError(f"max_dets needs at least 3 distinct positive values (COCO's summary uses 3), "
                             f"got {dets}")
        areas = tuple((str(lbl), float(lo), float(hi)) for lbl, lo, hi in self.area_ranges)
        if not areas:
            raise ValueError("area_ranges needs at least one (label, min, max)")
        if int(self.unity_max_dets) < 1:
            raise ValueError(f"unity_max_dets must be positive, got {self.unity_max_dets}")
        object.__setattr__(self, "iou_thresholds", iou)
        object.__setattr__(self, "rec_thresholds", rec)
        object.__setattr__(self, "max_dets", dets)
        object.__setattr__(self, "area_ranges", areas)
        object.__setattr__(self, "unity_max_dets", int(self.unity_max_dets))

    def to_dict(self) -> dict:
        return {"iou_thresholds": list(self.iou_thresholds), "rec_thresholds": list(self.rec_thresholds),
                "max_dets": list(self.max_dets),
                "area_ranges": [list(a) for a in self.area_ranges], "unity_max_dets": self.unity_max_dets}


def box_iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Row-wise IoU of xywh boxes ``dt[i]`` and ``gt[i]`` exactly as maskApi's ``bbIou`` (float64).

    For crowd ground truth the union is the detection's area (intersection / detection area).
    """
    w = np.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(dt[:, 0], gt[:, 0])
    h = np.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(dt[:, 1], gt[:, 1])
    inter = w * h
    da = dt[:, 2] * dt[:, 3]
    union = np.where(crowd, da, da + gt[:, 2] * gt[:, 3] - inter)
    hit = (w > 0) & (h > 0)
    return np.where(hit, inter / np.where(hit, union, 1.0), 0.0)


def group_rank(keys: np.ndarray) -> np.ndarray:
    """Position (0, 1, 2, ...) of each element within its run of equal ``keys``.

    ``keys`` must already be grouped (equal keys adjacent, e.g. sorted); ``group_rank([7, 7, 3, 3, 3])``
    is ``[0, 1, 0, 1, 2]``. Both protocols use it to number detections within an (image, class) or
    image group without a Python loop.
    """
    n = len(keys)
    if n == 0:
        return np.zeros(0, np.int64)
    start = np.empty(n, bool)
    start[0] = True
    np.not_equal(keys[1:], keys[:-1], out=start[1:])
    idx = np.arange(n)
    return idx - np.maximum.accumulate(np.where(start, idx, 0))


def _match(gt: GroundTruth, dt: Detections, ev: np.ndarray, ekey: np.ndarray, thr: np.ndarray,
           gt_ig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's greedy matching for the evaluated detections ``ev`` (grouped by (image, class), ranked).

    Returns (cand, dtm): ``cand`` the positions in ``ev`` of detections with at least one candidate box,
    ``dtm`` (len(cand), A, T) the matched ground-truth row or -1 (int32 below 2**31 boxes).
    """
    A, T = gt_ig.shape[1], len(thr)
    K = len(gt.category_ids)
    gkey = gt.image * K + gt.category
    gorder = np.argsort(gkey, kind="stable")
    gkey_sorted = gkey[gorder]
    lo = np.searchsorted(gkey_sorted, ekey, side="left")
    cnt = np.searchsorted(gkey_sorted, ekey, side="right") - lo
    total = int(cnt.sum())
    pe = np.repeat(np.arange(len(ev)), cnt)
    pg = gorder[np.repeat(lo - (np.cumsum(cnt) - cnt), cnt) + np.arange(total)]
    del lo, cnt
    iou = np.empty(total)
    for c0 in range(0, total, _PAIR_CHUNK):  # elementwise, so chunking changes no value
        c = slice(c0, c0 + _PAIR_CHUNK)
        iou[c] = box_iou(dt.boxes[ev[pe[c]]], gt.boxes[pg[c]], gt.iscrowd[pg[c]])
    keep = iou >= thr.min()
    pe, pg, iou = pe[keep], pg[keep], iou[keep]
    del keep
    if not len(pe):
        return np.zeros(0, np.int64), np.zeros((0, A, T), _row_dtype(len(gt)))
    first = np.empty(len(pe), bool)
    first[0] = True
    np.not_equal(pe[1:], pe[:-1], out=first[1:])
    cand = pe[first]
    pairs_per_cand = np.diff(np.append(np.flatnonzero(first), len(pe)))
    step = group_rank(ekey[cand])  # k-th candidate detection of its (image, class)
    row = np.repeat(np.arange(len(cand)), pairs_per_cand)
    order = np.argsort(np.repeat(step, pairs_per_cand), kind="stable")
    pg, iou, row = pg[order], iou[order], row[order]
    bounds = np.searchsorted(np.repeat(step, pairs_per_cand)[order], np.arange(step.max() + 2))

    matched = np.zeros((len(gt), A, T), bool)
    crowd = gt.iscrowd
    dtm = np.full((len(cand), A, T), -1, _row_dtype(len(gt)))
    for s in range(len(bounds) - 1):
        s0, s1 = bounds[s], bounds[s + 1]
        g, v, r = pg[s0:s1], iou[s0:s1], row[s0:s1]
        ok = (v[:, None, None] >= thr) & (~matched[g] | crowd[g][:, None, None])   # (n, A, T)
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        counts = np.diff(np.append(starts, s1 - s0))
        # detections with the same number c of candidate boxes form a dense (d, c, A, T) block
        for c in np.unique(counts).tolist():
            which = np.flatnonzero(counts == c)
            if c == 1:  # a single candidate box matches wherever it is available
                p0 = starts[which]
                chosen = np.where(ok[p0], g[p0][:, None, None], -1)
            else:
                pi = starts[which][:, None] + np.arange(c)                           # (d, c)
                okc = ok[pi]
                ig = gt_ig[g[pi]][:, :, :, None]                                    # (d, c, A, 1)
                has_reg = (okc & ~ig).any(axis=1, keepdims=True)                    # a regular box wins
                key = np.where(okc & ~(ig & has_reg), v[pi][:, :, None, None], -1.0)
                last = c - 1 - np.argmax(key[:, ::-1], axis=1)                      # last box of highest IoU
                best = np.take_along_axis(key, last[:, None], axis=1)[:, 0]
                chosen = np.where(best >= 0, g[pi][np.arange(len(which))[:, None, None], last], -1)
            dtm[r[starts[which]]] = chosen
            d_i, a_i, t_i = np.nonzero(chosen >= 0)
            matched[chosen[d_i, a_i, t_i], a_i, t_i] = True
    return cand, dtm


def evaluate_coco(gt: GroundTruth, dt: Detections, params: CocoParams | None = None, *,
                  det_area: np.ndarray | None = None, matches: bool = True) -> MetricsResult:
    """COCOeval bbox evaluation of ``dt`` against ``gt``; see the module docstring for the rules.

    ``det_area`` (D,): the value each detection's area range test uses instead of w * h (NaN: never
    outside); with ``gt.areas`` swapped for another per-box value this gives AP per bin of any
    attribute (`synthgap.metrics.attributes`). ``matches=False`` leaves ``result.matches`` None: the
    numbers are the same, without the (D, T) per-detection arrays (~55 bytes a detection)."""
    p = params or CocoParams()
    thr_raw = np.asarray(p.iou_thresholds, np.float64)
    thr = np.minimum(thr_raw, 1 - 1e-10)
    rec_thr = np.asarray(p.rec_thresholds, np.float64)
    area_lo = np.array([a[1] for a in p.area_ranges])
    area_hi = np.array([a[2] for a in p.area_ranges])
    max_dets = list(p.max_dets)
    T, R, K, A, M = len(thr), len(rec_thr), len(gt.category_ids), len(area_lo), len(max_dets)

    # -- per (image, class): rank detections by score (stable), keep the top max(max_dets)
    dkey = dt.image * K + dt.category
    order = np.lexsort((-dt.scores, dkey))
    rank_sorted = group_rank(dkey[order])
    keep = rank_sorted < max_dets[-1]
    ev = order[keep]                                  # evaluated detections, grouped by (image, class)
    ev_rank = rank_sorted[keep].astype(_row_dtype(max_dets[-1]))
    ekey = dkey[ev]
    del dkey, order, rank_sorted, keep                # 10 M detections: 80 MB each

    gt_ig = gt.iscrowd[:, None] | (gt.areas[:, None] < area_lo) | (gt.areas[:, None] > area_hi)  # (G, A)
    cand, dtm = _match(gt, dt, ev, ekey, thr, gt_ig)
    del ekey

    # -- per evaluated detection: area outside each range (ignored when unmatched)
    det_area = dt.boxes[ev, 2] * dt.boxes[ev, 3] if det_area is None else np.asarray(det_area, np.float64)[ev]
    det_out = (det_area[:, None] < area_lo) | (det_area[:, None] > area_hi)   # (E, A)
    del det_area
    cand_row = np.full(len(ev), -1, _row_dtype(len(cand)))
    cand_row[cand] = np.arange(len(cand))

    # -- accumulate: per class, detections pooled over images, sorted by score (stable over image id, rank)
    npig = np.zeros((K, A), np.int64)
    for a in range(A):
        npig[:, a] = np.bincount(gt.category[~gt_ig[:, a]], minlength=K)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    scores = -np.ones((T, R, K, A, M))
    ev_cat = dt.category[ev].astype(_row_dtype(K))
    ev_score = dt.scores[ev]
    # ev is ordered by (image, class, rank): a stable sort by (class, -score) leaves ties in (image, rank)
    # order, which is COCOeval's concatenation order before its stable sort by score
    pooled = np.lexsort((-ev_score, ev_cat))
    for m, max_det in enumerate(max_dets):
        sel = pooled[ev_rank[pooled] < max_det]
        bounds = np.searchsorted(ev_cat[sel], np.arange(K + 1))
        for k in range(K):
            has_gt = npig[k] > 0
            if not has_gt.any():
                continue
            sel_k = sel[bounds[k]:bounds[k + 1]]
            cum_out = np.vstack([np.zeros((1, A), np.int64), np.cumsum(det_out[sel_k], axis=0, dtype=np.int64)])
            prec_k, rec_k, score_k = _accumulate_class(sel_k, cand_row[sel_k], cum_out, dtm, gt_ig, det_out,
                                                       ev_score, npig[k], rec_thr, T)
            precision[:, :, k, has_gt, m] = prec_k[:, :, has_gt]
            scores[:, :, k, has_gt, m] = score_k[:, :, has_gt]
            recall[:, k, has_gt, m] = rec_k[:, has_gt]

    stats = _summarize(precision, recall, thr_raw, p)
    per_class = _per_class(gt, precision, recall, thr_raw, p, npig, ev_cat)
    match_arrays = _matches(gt, dt, ev, cand, dtm, det_out, gt_ig, thr_raw) if matches else None
    return MetricsResult(protocol="coco", stats=stats, per_class=per_class, params=p.to_dict(),
                         category_ids=gt.category_ids, matches=match_arrays, precision=precision, recall=recall,
                         scores=scores)


def _accumulate_class(idx: np.ndarray, rows: np.ndarray, cum_out: np.ndarray, dtm: np.ndarray, gt_ig: np.ndarray,
                      det_out: np.ndarray, score: np.ndarray, npig: np.ndarray, rec_thr: np.ndarray,
                      T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCOeval.accumulate for one class and one maxDet, all area ranges and IoU thresholds at once.

    ``idx``: evaluated detections of the class in pooled score order; ``rows`` their row in ``dtm`` (-1:
    no candidate box); ``cum_out`` (n + 1, A) running count of detections outside each area range.
    Returns precision (T, R, A),
    recall (T, A), scores (T, R, A).

    Works on the detections that matched something (few) instead of all of them: between two true
    positives precision only falls (an FP adds to the denominator, an ignored detection changes
    nothing), so the right-monotone envelope sampled at recall r is the maximum precision over the true
    positives from the first one reaching r on. Counts are kept exact integers, and every precision value
    is computed with COCOeval's float expression tp / (fp + tp + eps).
    """
    n, A = len(idx), det_out.shape[1]
    R = len(rec_thr)
    if n == 0:
        return np.zeros((T, R, A)), np.zeros((T, A)), np.zeros((T, R, A))
    pos = np.flatnonzero(rows >= 0)                 # pooled positions of detections with a candidate box
    c = len(pos)
    sub = dtm[rows[pos]]                            # (c, A, T) matched ground-truth row or -1
    matched = sub >= 0
    g_ig = gt_ig[np.maximum(sub, 0), np.arange(A)[None, :, None]]
    tp = matched & ~g_ig
    out_c = det_out[idx[pos]][:, :, None]           # (c, A, 1) outside the area range
    ignored = np.where(matched, g_ig, out_c)
    # ignored detections up to each position: all unmatched ones by area, corrected where matched
    igc = cum_out[pos + 1][:, :, None] + np.cumsum(ignored.astype(np.int64) - out_c, axis=0)
    tpc = np.cumsum(tp, axis=0)
    fpc = (pos + 1)[:, None, None] - igc - tpc
    pr = np.where(tp, tpc / (fpc.astype(np.float64) + tpc + _EPS), 0.0)
    env = np.maximum.accumulate(pr[::-1], axis=0)[::-1] if c else pr
    ntp = tpc[-1] if c else np.zeros((A, T), np.int64)
    denom = np.where(npig > 0, npig, 1).astype(np.float64)            # (A,)
    rc_last = ntp / denom[:, None]                                    # (A, T)
    # searchsorted(rc, r, "left") over all detections = position of the need-th true positive, where
    # need is the least integer with float(need / npig) >= r (float division is monotone in need).
    need = np.ceil(rec_thr[None, :] * denom[:, None]).astype(np.int64)  # (A, R)
    for _ in range(2):
        need = np.where((need > 0) & ((need - 1) / denom[:, None] >= rec_thr), need - 1, need)
    for _ in range(2):
        need = np.where(need / denom[:, None] < rec_thr, need + 1, need)
    need = np.minimum(need, c + 1)
    offset = (np.arange(A * T, dtype=np.int64) * (c + 1)).reshape(A, T)
    flat = (tpc.transpose(1, 2, 0) + offset[:, :, None]).ravel()        # columns (a, t), each ascending
    row = np.searchsorted(flat, (need[:, None, :] + offset[:, :, None]).ravel(), side="left").reshape(A, T, R)
    row -= (np.arange(A * T, dtype=np.int64) * c).reshape(A, T)[:, :, None]
    inside = row < c
    safe = np.minimum(row, max(c - 1, 0))
    if c:
        q = np.where(inside, np.take_along_axis(env.transpose(1, 2, 0), safe, axis=2), 0.0)   # (A, T, R)
        ss = np.where(inside, score[idx[pos[safe]]], 0.0)
    else:
        q = np.zeros((A, T, R))
        ss = np.zeros((A, T, R))
    ss = np.where((need == 0)[:, None, :], score[idx[0]], ss)  # recall 0 samples the first detection
    return q.transpose(1, 2, 0), rc_last.T, ss.transpose(1, 2, 0)


def _summary(s_prec: np.ndarray, s_rec: np.ndarray, thr: np.ndarray, p: CocoParams, ap: bool,
             iou: float | None = None, area: str = "all", max_det: int = 100) -> float:
    """COCOeval.summarize's ``_summarize``: mean over entries > -1 of the selected slice, else -1."""
    aind = [i for i, a in enumerate(p.area_ranges) if a[0] == area]
    mind = [i for i, d in enumerate(p.max_dets) if d == max_det]
    s = s_prec if ap else s_rec
    if iou is not None:
        s = s[np.where(iou == thr)[0]]
    s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]
    return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))


def stat_names(p: CocoParams) -> list[str]:
    d = p.max_dets
    return ["AP", "AP50", "AP75", "APs", "APm", "APl", f"AR{d[0]}", f"AR{d[1]}", f"AR{d[2]}", "ARs", "ARm", "ARl"]


def _summarize(precision: np.ndarray, recall: np.ndarray, thr: np.ndarray, p: CocoParams) -> dict[str, float]:
    d = p.max_dets
    calls = [(True, None, "all", 100), (True, .5, "all", d[2]), (True, .75, "all", d[2]),
             (True, None, "small", d[2]), (True, None, "medium", d[2]), (True, None, "large", d[2]),
             (False, None, "all", d[0]), (False, None, "all", d[1]), (False, None, "all", d[2]),
             (False, None, "small", d[2]), (False, None, "medium", d[2]), (False, None, "large", d[2])]
    return {name: _summary(precision, recall, thr, p, *c) for name, c in zip(stat_names(p), calls)}


def _per_class(gt: GroundTruth, precision, recall, thr, p: CocoParams, npig, ev_cat) -> dict[int, dict]:
    d = p.max_dets
    calls = {"AP": (True, None, "all", 100), "AP50": (True, .5, "all", d[2]), "AP75": (True, .75, "all", d[2]),
             f"AR{d[0]}": (False, None, "all", d[0]), f"AR{d[1]}": (False, None, "all", d[1]),
             f"AR{d[2]}": (False, None, "all", d[2])}
    num_gt = np.bincount(gt.category[~gt.iscrowd], minlength=len(gt.category_ids))
    num_det = np.bincount(ev_cat, minlength=len(gt.category_ids))
    out = {}
    for k, cid in enumerate(gt.category_ids.tolist()):
        row: dict = {"name": gt.category_names[cid]}
        for name, c in calls.items():
            v = _summary(precision[:, :, k:k + 1], recall[:, k:k + 1], thr, p, *c)
            row[name] = None if v == -1.0 else v
        row["num_gt"] = int(num_gt[k])
        row["num_det"] = int(num_det[k])
        out[cid] = row
    return out


def _matches(gt: GroundTruth, dt: Detections, ev, cand, dtm, det_out, gt_ig, thr) -> Matches:
    """Match results of the first area range, indexed by input detection rows and ground-truth rows; and of
    every area range for the candidate detections (what the bootstrap needs)."""
    D, G, T = len(dt), len(gt), len(thr)
    outside = np.zeros((D, det_out.shape[1]), bool)
    outside[ev] = det_out
    evaluated = np.zeros(D, bool)
    evaluated[ev] = True
    det_gt = np.full((D, T), -1, _row_dtype(G))
    det_ignore = np.zeros((D, T), bool)
    det_ignore[ev] = det_out[:, :1]
    gt_det = np.full((G, T), -1, _row_dtype(D))
    if len(cand):
        rows = ev[cand]
        m0 = dtm[:, 0, :]
        det_gt[rows] = m0
        det_ignore[rows] = np.where(m0 >= 0, gt_ig[np.maximum(m0, 0), 0], det_out[cand, :1])
        d_i, t_i = np.nonzero(m0 >= 0)
        gt_det[m0[d_i, t_i], t_i] = rows[d_i]
    return Matches(iou_thresholds=thr, det_image_id=gt.image_ids[dt.image],
                   det_category_id=gt.category_ids[dt.category], det_score=dt.scores, det_evaluated=evaluated,
                   det_gt=det_gt, det_ignore=det_ignore, gt_image_id=gt.image_ids[gt.image],
                   gt_category_id=gt.category_ids[gt.category], gt_id=gt.ids, gt_box=gt.boxes,
                   gt_ignore=gt_ig[:, 0], gt_det=gt_det, image_ids=gt.image_ids, det_outside=outside,
                   gt_ignore_area=gt_ig, area_det=ev[cand], area_gt=dtm)
