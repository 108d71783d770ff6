"""Why AP is lost: TIDE's error breakdown (Bolya et al., ECCV 2020), numerically identical to ``tidecv`` 1.0.1.

Every detection that is not a true positive at IoU ``pos`` (0.5) gets exactly one error type, tested in
this order (IoU with the image's non-crowd ground truth; "fg" = ``pos``, "bg" = ``bg`` = 0.1):

* ``bkg``  background: the image has no ground truth at all;
* ``loc``  localization: right class, ``bg <= IoU <= fg`` with its best box of that class;
* ``cls``  classification: wrong class, IoU >= fg with a box of another class;
* ``dupe`` duplicate: right class, IoU >= fg, but the box was already taken by a higher-scoring detection;
* ``bkg``  background: IoU <= bg with every box;
* ``both`` classification and localization: anything else.

A ground-truth box nobody matched and no ``cls``/``loc`` error points at is a ``miss``.

``dAP`` of a type = AP with only that type fixed by an oracle, minus AP (clipped at 0, as tidecv):
a ``cls``/``loc`` error becomes a true positive (its box's highest-scoring such error only; the others
are dropped), ``dupe``/``bkg``/``both`` detections are dropped, a ``miss`` is removed from the ground
truth. The "special" errors: ``false_pos`` = AP with every false positive scored 0, ``false_neg`` = AP
with every missed box removed (the detections as they are), each minus AP. A fix that leaves no class to
evaluate (e.g. every box was missed and the misses are removed) counts as AP 1, where tidecv divides by
zero; ``ap`` of a set with no ground truth and no detections is NaN.

Score ties, and the one difference from tidecv: tidecv rebuilds each fixed copy with the error-derived
points first and the true positives after, so where a false positive and a true positive of one class
share a score, the false positive ranks first in every fixed copy, and that copy loses precision to the
re-ordering alone. For the main dAPs tidecv clips the result at 0 ("likely due to binning differences");
they are reproduced as they are (understated on such ties: never negative). Its ``false_neg`` is not
clipped and goes negative with no missed box at all: on a set whose every detection is written twice with
the same score it reports -25.6 AP points where nothing can be fixed (tests/metrics/test_tide.py). Here
``false_neg`` keeps the detections in their original order, so it is 0 without missed boxes and never
negative; it equals tidecv's whenever no false positive ties a true positive.

TIDE's own AP (``ap``, AP at IoU ``pos``) differs from COCO's AP50 on purpose, as tidecv computes it:
detections are capped at ``max_dets`` per image across classes (COCO: per class); matching takes the
*first* box of highest IoU on ties (COCO: the last); crowd boxes are ignore regions (a detection
unmatched to a regular box with IoU over its own area > fg is left out of AP, though it still gets an
error type); a class with detections but no ground truth counts as AP 0; COCO ``area`` is not used.
Score ties are broken by image (in id order), then by input order, like tidecv fed in that order.

How it is vectorised: all (detection, box) pairs of an image are built at once; the greedy matching
runs over the rank of a detection within its (image, class), one rank of every group per step; error
types are segment reductions over the pairs; AP of each oracle scenario is one sort of its data points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from synthgap.metrics.coco import box_iou, group_rank
from synthgap.metrics.inputs import Detections, GroundTruth

ERROR_TYPES = ("cls", "loc", "both", "dupe", "bkg", "miss")  # tidecv's order (Cls, Loc, Both, Dupe, Bkg, Miss)
SPECIAL_TYPES = ("false_pos", "false_neg")
ERROR_NAMES = {"cls": "classification", "loc": "localization", "both": "cls + loc", "dupe": "duplicate",
               "bkg": "background", "miss": "missed", "false_pos": "all false positives",
               "false_neg": "all false negatives"}
_CODE = {t: i for i, t in enumerate(ERROR_TYPES)}
_NONE = -1
_RECALL = np.array([x / 100 for x in range(101)])  # tidecv's 101 recall points (x / 100, not linspace)


@dataclass(eq=False)
class ErrorBreakdown:
    """The TIDE breakdown of one detection set (all AP values are fractions in [0, 1], not percent).

    Attributes:
        ap: TIDE's AP at IoU ``pos_threshold`` (mean over classes with ground truth or detections).
        dap: error type (`ERROR_TYPES`) -> AP gained when only that type is fixed (>= 0).
        special: ``false_pos`` / ``false_neg`` -> AP gained with perfect precision / perfect recall.
        counts: error type -> number of errors (detections for the first five, boxes for ``miss``).
        per_class: label id -> {"name", "ap", "dap": {type: float}, "counts": {type: int},
            "num_gt", "num_det"}; a class's ``dap`` is its own AP change under the same fix (clipped at 0).
        params: pos_threshold, bg_threshold, max_dets.
    """

    ap: float
    dap: dict[str, float]
    special: dict[str, float]
    counts: dict[str, int]
    per_class: dict[int, dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def share(self) -> dict[str, float]:
        """Each main type's part of the summed dAP (sums to 1; all 0 when nothing is lost)."""
        total = sum(self.dap.values())
        return {k: (v / total if total > 0 else 0.0) for k, v in self.dap.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ap, dap, share, special, counts, per_class (keys as strings), params."""
        return {"ap": _num(self.ap), "dap": {k: _num(v) for k, v in self.dap.items()}, "share": self.share,
                "special": {k: _num(v) for k, v in self.special.items()}, "counts": dict(self.counts),
                "per_class": {str(k): {**d, "ap": _num(d["ap"]), "dap": {t: _num(v) for t, v in d["dap"].items()}}
                              for k, d in self.per_class.items()},
                "params": dict(self.params)}

    def table(self) -> str:
        """Readable text: AP, then dAP and count per error type, in AP points (fractions x 100, as TIDE
        prints them; the header says so, since COCO's stats beside it are printed as fractions)."""
        lines = [f"TIDE error breakdown (IoU {self.params.get('pos_threshold', 0.5)}; AP and dAP in AP points, "
                 f"i.e. fractions x 100): AP {100 * self.ap:.2f}",
                 f"  {'type':<20}{'dAP x100':>9}{'share':>8}{'count':>9}"]
        share = self.share
        for t in ERROR_TYPES:
            lines.append(f"  {t + ' (' + ERROR_NAMES[t] + ')':<20}{100 * self.dap[t]:>9.2f}{share[t]:>8.1%}"
                         f"{self.counts[t]:>9}")
        for t in SPECIAL_TYPES:
            lines.append(f"  {t:<20}{100 * self.special[t]:>9.2f}")
        return "\n".join(lines)


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def _first_of_group(keys: np.ndarray) -> np.ndarray:
    """Boolean mask of the first element of each run of equal ``keys`` (keys already grouped)."""
    first = np.ones(len(keys), bool)
    if len(keys) > 1:
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return first


def evaluate_errors(gt: GroundTruth, dt: Detections, *, pos_threshold: float = 0.5, bg_threshold: float = 0.1,
                    max_dets: int = 100) -> ErrorBreakdown:
    """TIDE's error breakdown of ``dt`` against ``gt`` (boxes xywh pixels); see the module docstring."""
    pos, bg = float(pos_threshold), float(bg_threshold)
    if not 0.0 < pos <= 1.0 or not 0.0 <= bg <= pos:
        raise ValueError(f"need 0 < pos_threshold <= 1 and 0 <= bg_threshold <= pos_threshold, got {pos}, {bg}")
    if int(max_dets) < 1:
        raise ValueError(f"max_dets must be positive, got {max_dets}")
    K, n_img = len(gt.category_ids), len(gt.image_ids)

    # -- detections: per image by score (stable: input order on ties), top max_dets of the image
    order = np.lexsort((-dt.scores, dt.image))
    rank = group_rank(dt.image[order])
    ev = order[rank < max_dets]                      # kept detections, by (image, score)
    e_img, e_cat, e_score = dt.image[ev], dt.category[ev], dt.scores[ev]
    E = len(ev)

    # -- ground truth: regular boxes (rows in image, source order) and crowd boxes (ignore regions)
    reg = np.flatnonzero(~gt.iscrowd)
    g_img, g_cat = gt.image[reg], gt.category[reg]
    G = len(reg)
    gorder = np.argsort(g_img, kind="stable")        # gt rows are grouped by image already; keep it safe
    reg, g_img, g_cat = reg[gorder], g_img[gorder], g_cat[gorder]
    g_lo = np.searchsorted(g_img, np.arange(n_img))
    g_n = np.searchsorted(g_img, np.arange(n_img), side="right") - g_lo

    # -- all (kept detection, regular box) pairs of an image, grouped by detection then box order
    cnt = g_n[e_img]
    pe = np.repeat(np.arange(E), cnt)
    pg = np.repeat(g_lo[e_img] - (np.cumsum(cnt) - cnt), cnt) + np.arange(int(cnt.sum()))
    iou = box_iou(dt.boxes[ev][pe], gt.boxes[reg][pg], np.zeros(len(pe), bool))
    same = e_cat[pe] == g_cat[pg]

    g_used = np.zeros(G, bool)
    e_gt = np.full(E, -1, np.int64)                  # matched box (index into reg) or -1
    _greedy_match(pe, pg, iou, same, pos, e_img * K + e_cat, e_gt, g_used)
    e_tp = e_gt >= 0

    # -- crowd boxes: an unmatched detection over one of its class (IoU over its own area > pos) is ignored
    e_ignored = np.zeros(E, bool)
    crowd = np.flatnonzero(gt.iscrowd)
    if len(crowd) and E:
        ckey = gt.image[crowd] * K + gt.category[crowd]
        corder = np.argsort(ckey, kind="stable")
        crowd, ckey = crowd[corder], ckey[corder]
        ekey = e_img * K + e_cat
        lo = np.searchsorted(ckey, ekey)
        n = np.searchsorted(ckey, ekey, side="right") - lo
        qe = np.repeat(np.arange(E), n)
        qc = crowd[np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))]
        hit = box_iou(dt.boxes[ev[qe]], gt.boxes[qc], np.ones(len(qe), bool)) > pos
        e_ignored[np.unique(qe[hit])] = True
        e_ignored &= ~e_tp

    # -- error type of every kept detection that is not a true positive
    e_type, e_target = _classify(E, pe, pg, iou, same, g_used, g_n[e_img] > 0, e_tp, pos, bg)

    # -- oracle bookkeeping: a box's cls/loc errors (on an unused box) fix only the first (= highest-scoring)
    fixable = ((e_type == _CODE["cls"]) | (e_type == _CODE["loc"])) & (e_target >= 0)
    fixable[fixable] = ~g_used[e_target[fixable]]
    usable = np.zeros(G, bool)
    usable[e_target[fixable]] = True
    best = np.full(G, -1, np.int64)
    fx = np.flatnonzero(fixable)[::-1]               # later detections first: the earliest one is written last
    best[e_target[fx]] = fx
    e_fixed = np.zeros(E, bool)
    e_fixed[fixable] = best[e_target[fixable]] == np.flatnonzero(fixable)
    e_fixed_cat = e_cat.copy()
    to_gt = (e_type == _CODE["cls"]) & (e_target >= 0)
    e_fixed_cat[to_gt] = g_cat[e_target[to_gt]]

    g_fn = ~g_used
    g_miss = g_fn & ~usable                          # no cls/loc error could have found it

    num_gt = np.bincount(g_cat, minlength=K)
    fn_per_class = np.bincount(g_cat[g_fn], minlength=K)
    miss_per_class = np.bincount(g_cat[g_miss], minlength=K)
    scen = _Scenarios(K, e_score, e_cat, e_tp, e_ignored, e_type, e_fixed, e_fixed_cat, num_gt)

    base_ap, base_valid = scen.ap()
    ap = _mean(base_ap, base_valid)
    dap, per_class_dap = {}, {}
    for t in ERROR_TYPES:
        ap_t, valid_t = scen.ap(fix=t, num_gt=num_gt - miss_per_class if t == "miss" else None)
        dap[t] = max(_mean(ap_t, valid_t, 1.0) - ap, 0.0) if not math.isnan(ap) else math.nan
        per_class_dap[t] = np.maximum(ap_t - base_ap, 0.0)
    fp_ap, fp_valid = scen.ap(false_pos=True)
    fn_ap, fn_valid = scen.ap(num_gt=num_gt - fn_per_class, grouped=False)  # original order: see the docstring
    special = {"false_pos": _mean(fp_ap, fp_valid, 1.0) - ap, "false_neg": _mean(fn_ap, fn_valid, 1.0) - ap}

    counts = {t: int((e_type == _CODE[t]).sum()) for t in ERROR_TYPES if t != "miss"}
    counts["miss"] = int(g_miss.sum())
    counts = {t: counts[t] for t in ERROR_TYPES}
    type_cat = np.zeros((len(ERROR_TYPES), K), np.int64)
    is_err = e_type >= 0
    np.add.at(type_cat, (e_type[is_err], e_cat[is_err]), 1)
    type_cat[_CODE["miss"]] = miss_per_class
    num_det = np.bincount(e_cat, minlength=K)
    per_class = {}
    for k, cid in enumerate(gt.category_ids.tolist()):
        per_class[int(cid)] = {
            "name": gt.category_names.get(int(cid), str(cid)),
            "ap": float(base_ap[k]) if base_valid[k] else math.nan,
            "dap": {t: float(per_class_dap[t][k]) if base_valid[k] else math.nan for t in ERROR_TYPES},
            "counts": {t: int(type_cat[_CODE[t], k]) for t in ERROR_TYPES},
            "num_gt": int(num_gt[k]), "num_det": int(num_det[k])}
    return ErrorBreakdown(ap=ap, dap=dap, special=special, counts=counts, per_class=per_class,
                          params={"pos_threshold": pos, "bg_threshold": bg, "max_dets": int(max_dets)})


def _greedy_match(pe, pg, iou, same, pos, ekey, e_gt, g_used) -> None:
    """tidecv's matching: detections of an image in score order each take the unused box of their class
    with the highest IoU (>= pos; the first such box on ties). Fills ``e_gt`` and ``g_used`` in place.

    Boxes only compete within an (image, class), so the k-th candidate detection of every group is
    processed in the same step."""
    c = np.flatnonzero(same & (iou >= pos))
    if not len(c):
        return
    ce, cg, cv = pe[c], pg[c], iou[c]               # grouped by detection (= image, score order)
    # detections are in (image, score) order, not (image, class): order candidates by (group, detection)
    first = _first_of_group(ce)
    dets = ce[first]
    det_order = np.lexsort((dets, ekey[dets]))       # (image, class) groups, score order inside
    step_of_det = np.empty(len(dets), np.int64)
    step_of_det[det_order] = group_rank(ekey[dets][det_order])
    step = np.repeat(step_of_det, np.diff(np.append(np.flatnonzero(first), len(ce))))
    o = np.lexsort((cg, -cv, ce, step))              # per step: by detection, then IoU desc, then box order
    ce, cg, step = ce[o], cg[o], step[o]
    bounds = np.searchsorted(step, np.arange(step.max() + 2))
    for s in range(len(bounds) - 1):
        e, g = ce[bounds[s]:bounds[s + 1]], cg[bounds[s]:bounds[s + 1]]
        free = ~g_used[g]
        e, g = e[free], g[free]
        take = _first_of_group(e)                    # the first free box of each detection is its best
        e_gt[e[take]] = g[take]
        g_used[g[take]] = True


def _classify(E, pe, pg, iou, same, g_used, has_gt, e_tp, pos, bg) -> tuple[np.ndarray, np.ndarray]:
    """Error type code (-1: true positive) and the box a cls/loc error points at (index into the regular
    boxes, -1 for other types), tidecv's tests in its order; argmax ties go to the first box."""
    e_type = np.full(E, _NONE, np.int64)
    e_target = np.full(E, -1, np.int64)
    neg = ~e_tp
    e_type[neg & ~has_gt] = _CODE["bkg"]
    if not len(pe):
        return e_type, e_target
    starts = np.flatnonzero(_first_of_group(pe))
    dets = pe[starts]
    idx = np.arange(len(pe))

    def best(values):
        """(max over each detection's pairs, first pair index reaching it) for the detections ``dets``."""
        m = np.maximum.reduceat(values, starts)
        first = np.minimum.reduceat(np.where(values == np.repeat(m, np.diff(np.append(starts, len(pe)))), idx,
                                             len(pe)), starts)
        return m, first

    cls_iou = np.where(same, iou, 0.0)
    m_cls, a_cls = best(cls_iou)
    m_non, a_non = best(np.where(same, 0.0, iou))
    m_used, _ = best(np.where(same & g_used[pg], iou, 0.0))
    m_any, _ = best(iou)
    todo = neg[dets]
    t = np.full(len(dets), _NONE, np.int64)
    tgt = np.full(len(dets), -1, np.int64)
    for code, cond, arg in ((_CODE["loc"], (bg <= m_cls) & (m_cls <= pos), a_cls), (_CODE["cls"], m_non >= pos, a_non),
                            (_CODE["dupe"], m_used >= pos, None), (_CODE["bkg"], m_any <= bg, None),
                            (_CODE["both"], np.ones(len(dets), bool), None)):
        hit = todo & cond
        t[hit] = code
        if arg is not None:
            tgt[hit] = pg[arg[hit]]
        todo &= ~hit
    e_type[dets] = t
    e_target[dets] = tgt
    return e_type, e_target


def _order(cat: np.ndarray, score: np.ndarray, group: np.ndarray | None) -> np.ndarray:
    """Indices sorting by (class, score descending, group), ties left in index order (= image, rank): three
    stable sorts, least significant key first."""
    o = np.argsort(group, kind="stable") if group is not None else np.arange(len(cat))
    o = o[np.argsort(-score[o], kind="stable")]
    return o[np.argsort(cat[o], kind="stable")]


class _Scenarios:
    """Per-class AP (tidecv's ``APDataObject.get_ap``) of the original data points and of each oracle fix.

    A data point is a scored detection, true or false; tidecv sorts each class's points by score, stable in
    insertion order: the original in (image, rank) order; a fixed copy first the error-derived points
    (image, rank), then the true positives (image, rank). The two orders are sorted once; a scenario that
    only drops points or turns some into true positives filters them; only the class-moving ``cls`` fix and
    the rescoring ``false_pos`` sort again."""

    def __init__(self, K, score, cat, tp, ignored, etype, fixed, fixed_cat, num_gt):
        self.K = K
        self.score, self.cat, self.tp = score, cat, tp
        self.ignored, self.etype, self.fixed, self.fixed_cat = ignored, etype, fixed, fixed_cat
        self.num_gt = num_gt
        self.group = tp.astype(np.int8)                  # error-derived points (0) before true positives (1)
        self.base_order = _order(cat, score, None)
        self.group_order = _order(cat, score, self.group)

    def ap(self, fix: str | None = None, num_gt: np.ndarray | None = None, false_pos: bool = False,
           grouped: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(AP per class, whether the class counts in the mean) for one scenario; ``grouped``: in a fixed
        copy's order (error-derived points before true positives on score ties; default: for every fix)."""
        if grouped is None:
            grouped = fix is not None or false_pos or num_gt is not None
        num_gt = self.num_gt if num_gt is None else num_gt
        kept = ~self.ignored                             # ignored detections are not data points ...
        cat, tp = self.cat, self.tp
        order = self.group_order if grouped else self.base_order
        if fix is not None and fix != "miss":
            mine = self.etype == _CODE[fix]
            now_tp = mine & self.fixed
            kept = np.where(mine, self.fixed, kept)      # ... unless their fix turns them into a true positive
            tp = tp | now_tp
            if fix == "cls":                             # the fixed detection moves to its box's class
                cat = np.where(now_tp, self.fixed_cat, cat)
                order = _order(cat, self.score, self.group)
        if false_pos:
            order = _order(cat, np.where(tp, 1.0, 0.0), self.group)
        order = order[kept[order]]
        return self._class_ap(cat[order], tp[order], num_gt)

    def _class_ap(self, cat: np.ndarray, tp: np.ndarray, num_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bounds = np.searchsorted(cat, np.arange(self.K + 1))
        ctp_all = np.cumsum(tp)
        aps = np.zeros(self.K)
        for k in np.flatnonzero((num_gt > 0) & (bounds[1:] > bounds[:-1])).tolist():
            b0, b1 = bounds[k], bounds[k + 1]
            ctp = ctp_all[b0:b1] - (ctp_all[b0 - 1] if b0 else 0)
            prec = ctp / np.arange(1, b1 - b0 + 1)
            prec = np.maximum.accumulate(prec[::-1])[::-1]
            i = np.searchsorted(ctp / int(num_gt[k]), _RECALL, side="left")
            aps[k] = prec[i[i < len(prec)]].sum() / len(_RECALL)
        valid = (num_gt > 0) | (bounds[1:] > bounds[:-1])
        return aps, valid


def _mean(aps: np.ndarray, valid: np.ndarray, empty: float = math.nan) -> float:
    """Mean AP over the classes that count; ``empty`` when none does (tidecv divides by zero there)."""
    return float(aps[valid].mean()) if valid.any() else empty


def headline(errors: Mapping[str, Any]) -> str:
    """One sentence from an `ErrorBreakdown.to_dict()`: where most of the lost AP goes, e.g.
    "most lost AP is background (bkg): 12.3 AP points, 48% of the summed dAP; then missed (miss) 6.0"."""
    dap = {k: v for k, v in (errors.get("dap") or {}).items() if v is not None}
    total = sum(dap.values())
    if not dap or total <= 0:
        return "no AP lost to any error type" if dap else "no error breakdown"
    ranked = sorted(dap, key=lambda k: -dap[k])
    first, second = ranked[0], ranked[1] if len(ranked) > 1 else None
    text = (f"most lost AP is {ERROR_NAMES[first]} ({first}): {100 * dap[first]:.1f} AP points, "
            f"{dap[first] / total:.0%} of the summed dAP")
    if second is not None and dap[second] > 0:
        text += f"; then {ERROR_NAMES[second]} ({second}) {100 * dap[second]:.1f}"
    return text
