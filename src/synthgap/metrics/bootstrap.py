"""Uncertainty from the test images: a percentile bootstrap of the COCO metrics, plain, paired and by seed.

A metric measured on N test images is one draw: N other images of the same kind would give another number.
The bootstrap estimates that spread from the images at hand: draw N images with replacement
(`image_weights`: how many times each image is drawn), score the draw, repeat B times (1,000 by default),
and report the central ``level`` part of the B values (the *percentile* interval: at level 0.95 the 2.5 %
and 97.5 % quantiles).

* `bootstrap_intervals(result)`: the 12 COCO stats and the per-class metrics of one evaluation.
* `paired_difference(a, b)`: two runs on the same test images, resampled *together* (one draw of images
  for both), so what both models get wrong on the same images cancels in the difference b - a.
* `hierarchical_difference(pairs)`: a study's runs paired by seed, ``[(run_a, run_b), ...]`` on the same
  test images: each replicate draws the seeds with replacement, then one draw of test images shared by
  every seed (they were all scored on the same images, so the test set's luck is common to all seeds and
  does not average out over seeds); returns the mean difference, its interval, P(difference > 0) and the
  two variance components, with `units_needed` to say how many seeds / test images would resolve it.

Inputs are `synthgap.metrics.evaluate(...)` results of the COCO protocol with ``matches=True`` (the
default): `Matches` carries every area range's matching. Nothing is matched again, no IoU is recomputed.

How a resample is scored. A resample holds image i w_i times, so its GT boxes and detections count w_i
times (COCO's accumulate over the multiset, detections sorted by score across the resample). Per class
the detections keep their score order; the cumulative TP / FP counts become sums of weights. Precision is
only read at true positives (between two of them it only falls), so per (class, area range, IoU threshold)
the true-positive rows are fixed once, and per resample:

* tp at each TP row = cumulative weight of the TP rows so far;
* tp + fp = (weight of the detections inside the area range so far) - (weight of those matched to an
  ignored box) + (weight of the true positives outside the range): the first term is shared by all IoU
  thresholds, the correction is sparse; both are sparse sums over images (scipy.sparse, counts per image);
* precision = tp / (tp + fp + eps) as COCOeval writes it, its right-monotone envelope a reverse cumulative
  maximum, and the 101-point AP sum the envelope times the number of recall thresholds each TP row crosses.

Detections of one image and class with the same score are interleaved copy by copy in the materialised
set (COCO breaks score ties by image, then rank): those few get one row per copy, weighted 0 or 1.
Counts are integers, exact in float64, so a resample's numbers equal the engine's on the materialised
resampled dataset (image i copied w_i times, new ids in image order) to rounding (1e-12, checked in
tests/metrics/test_bootstrap.py). 1,000 resamples of 500 images x 100 detections take 1-2.5 s of one core
(BENCHMARKS.md), about 100x less than evaluating each resample afresh.

AP's bootstrap runs high where precision is low: its envelope is a running maximum, and a resample holds
~63 % distinct images (docs/metrics.md); the shift cancels in `paired_difference`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from synthgap.errors import BootstrapError
from synthgap.metrics.coco import CocoParams, group_rank, stat_names
from synthgap.metrics.result import MetricsResult

DEFAULT_RESAMPLES = 1000
METHOD = "percentile bootstrap over test images"
_EPS = np.spacing(1)  # pycocotools' guard in precision = tp / (tp + fp + eps)
_BLOCK = 1 << 18      # (resamples x rows) values computed at once: temporaries of 2 MB, in the cache
_SUMMARY = 1 << 22    # (resamples x area x IoU x class) AP values summarised at once (32 MB)


# ------------------------------------------------------------------------------------------------------------
# results

@dataclass(frozen=True, eq=False)
class Intervals:
    """`bootstrap_intervals` output. Intervals are ``(low, high)`` in the metric's units (fractions), None
    where the metric is undefined on the full test set (COCO's -1, or a class without ground truth).

    Attributes:
        level: central coverage, e.g. 0.95 (the 2.5 % and 97.5 % quantiles of the resampled values).
        resamples, seed: B and the numpy Generator seed of the image draws.
        images: N, the test images resampled.
        stats: stat name -> (low, high) for the 12 COCO stats.
        mean, std: stat name -> the mean and standard deviation of the resampled values (the bootstrap
            standard error).
        undefined: stat name -> resamples where the stat was undefined (e.g. no large box drawn), left out.
        per_class: label id -> {"AP", "AP50", "AP75", "AR1", "AR10", "AR100"} -> (low, high) or None.
    """

    level: float
    resamples: int
    seed: int
    images: int
    stats: dict[str, tuple[float, float] | None]
    mean: dict[str, float | None]
    std: dict[str, float | None]
    undefined: dict[str, int]
    per_class: dict[int, dict[str, tuple[float, float] | None]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"method", "level", "resamples", "seed", "images", "stats": {name: {"low", "high",
        "mean", "std", "undefined"} or null}, "per_class": {id: {metric: [low, high] or null}}}``."""
        stats = {k: None if v is None else {"low": v[0], "high": v[1], "mean": self.mean[k], "std": self.std[k],
                                            "undefined": self.undefined[k]} for k, v in self.stats.items()}
        per_class = {str(c): {m: None if v is None else list(v) for m, v in row.items()}
                     for c, row in self.per_class.items()}
        return {"method": METHOD, "level": self.level, "resamples": self.resamples, "seed": self.seed,
                "images": self.images, "stats": stats, "per_class": per_class}


@dataclass(frozen=True, eq=False)
class Difference:
    """`paired_difference` output: metric of run b minus run a on the same test images.

    Attributes:
        metric: stat name (``AP50``) or per-class metric; ``category_id`` the class (None: the stat).
        a, b: the metric of each run on the full test set; ``difference`` = b - a.
        low, high: percentile interval of b - a over resamples shared by both runs (None if undefined).
        p_positive: fraction of resamples where b - a > 0.
        std: standard deviation of the resampled differences (the bootstrap standard error).
    """

    metric: str
    category_id: int | None
    a: float | None
    b: float | None
    difference: float | None
    low: float | None
    high: float | None
    std: float | None
    p_positive: float | None
    level: float
    resamples: int
    seed: int
    images: int

    def to_dict(self) -> dict[str, Any]:
        return {"method": "paired " + METHOD, **_fields(self)}


@dataclass(frozen=True, eq=False)
class HierarchicalDifference:
    """`hierarchical_difference` output: run b minus run a, paired by seed and by test image.

    Attributes:
        metric, category_id: as in `Difference`.
        seeds, images: S seed pairs, N test images.
        per_seed: b - a of each seed on the full test set.
        mean: their mean (the point estimate).
        low, high: percentile interval over replicates (seeds resampled, then one image draw for all).
        p_positive: fraction of replicates with a mean difference > 0.
        seed_sd: standard deviation of ``per_seed`` (one seed's spread; None with one seed).
        image_sd: standard deviation over image draws of the seed-mean difference (seeds fixed): the
            test-image part of the uncertainty at N images.
        dominant: ``"seeds"`` when seed_sd^2 / S > image_sd^2, else ``"test images"``.
        seeds_needed, images_needed: `units_needed` for one seed's sd and for one image's (image_sd * sqrt(N)):
            each counts the other source of noise as zero (None: unknown, or a zero difference).
    """

    metric: str
    category_id: int | None
    seeds: int
    images: int
    per_seed: tuple[float | None, ...]
    mean: float | None
    low: float | None
    high: float | None
    p_positive: float | None
    seed_sd: float | None
    image_sd: float | None
    dominant: str | None
    seeds_needed: int | None
    images_needed: int | None
    level: float
    resamples: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"method": "hierarchical " + METHOD + " (seeds, then test images shared by the seeds)",
                **_fields(self)}


def _fields(obj) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in obj.__dict__.items()}


# ------------------------------------------------------------------------------------------------------------
# public functions

def image_weights(images: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, images) int64: how many times each test image is drawn in each resample (``images``
    draws with replacement, ``numpy.random.default_rng(seed)``; rows sum to ``images``)."""
    if images < 1 or resamples < 1:
        raise BootstrapError(f"a bootstrap needs at least one image and one resample, got {images} images, "
                             f"{resamples} resamples")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, images, size=(resamples, images))
    offsets = (np.arange(resamples) * images)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=resamples * images).reshape(resamples, images)


def resample_metrics(result: MetricsResult, weights: np.ndarray) -> dict[str, Any]:
    """The COCO metrics of each resample given by ``weights`` (B, N): image i (in ``result.matches.image_ids``
    order) counted ``weights[b, i]`` times. Returns ``{"stats": {name: (B,)}, "per_class": {label id:
    {metric: (B,)}}}`` with NaN where a metric is undefined in a resample (COCO's -1). ``weights`` of ones
    give the result's own numbers."""
    plan = _plan(result)
    weights = _check_weights(weights, plan.images)
    stats, per_class = _score(plan, weights)
    class_names = _class_metric_names(plan.params)
    return {"stats": {n: stats[:, i] for i, n in enumerate(plan.stat_names)},
            "per_class": {int(c): {m: per_class[:, k, j] for j, m in enumerate(class_names)}
                          for k, c in enumerate(plan.category_ids.tolist())}}


def bootstrap_intervals(result: MetricsResult, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                        level: float = 0.95) -> Intervals:
    """Percentile intervals of the 12 COCO stats and the per-class metrics over ``resamples`` draws of the
    test images (seeded). ``result`` from ``evaluate(..., protocol="coco")`` with matches (the default)."""
    _check_level(level)
    plan = _plan(result)
    weights = image_weights(plan.images, resamples, seed)
    stats, per_class = _score(plan, weights)
    q = ((1 - level) / 2, (1 + level) / 2)
    out_stats, mean, std, undefined = {}, {}, {}, {}
    for i, name in enumerate(plan.stat_names):
        v = stats[:, i]
        ok = ~np.isnan(v)
        undefined[name] = int((~ok).sum())
        defined = float(result.stats[name]) != -1.0 and ok.any()
        out_stats[name] = _interval(v[ok], q) if defined else None
        mean[name] = float(v[ok].mean()) if defined else None
        std[name] = float(v[ok].std(ddof=1)) if defined and ok.sum() > 1 else None
    out_class = {}
    for k, cid in enumerate(plan.category_ids.tolist()):
        row = result.per_class.get(cid, {})
        out_class[int(cid)] = {}
        for j, m in enumerate(_class_metric_names(plan.params)):
            v = per_class[:, k, j]
            v = v[~np.isnan(v)]
            out_class[int(cid)][m] = _interval(v, q) if row.get(m) is not None and len(v) else None
    return Intervals(level=float(level), resamples=int(resamples), seed=int(seed), images=plan.images,
                     stats=out_stats, mean=mean, std=std, undefined=undefined, per_class=out_class)


def paired_difference(result_a: MetricsResult, result_b: MetricsResult, metric: str = "AP50", *,
                      category_id: int | None = None, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                      level: float = 0.95) -> Difference:
    """Interval of ``metric`` (b - a) for two runs scored on the same test images, both resampled with the
    same image draws: tight when the models err on the same images. ``metric`` is a stat name (``AP50``,
    ``AP``, ``AR100`` ...) or, with ``category_id``, a per-class metric of that class."""
    _check_level(level)
    plans = _same_images([result_a, result_b])
    weights = image_weights(plans[0].images, resamples, seed)
    va, vb = (_metric_values(p, weights, metric, category_id) for p in plans)
    a, b = (_full_value(r, metric, category_id) for r in (result_a, result_b))
    d = vb - va
    d = d[~np.isnan(d)]
    diff = None if a is None or b is None else b - a
    low, high = _interval(d, ((1 - level) / 2, (1 + level) / 2)) if diff is not None and len(d) else (None, None)
    return Difference(metric=metric, category_id=category_id, a=a, b=b, difference=diff, low=low, high=high,
                      std=float(d.std(ddof=1)) if diff is not None and len(d) > 1 else None,
                      p_positive=float((d > 0).mean()) if diff is not None and len(d) else None,
                      level=float(level), resamples=int(resamples), seed=int(seed), images=plans[0].images)


def hierarchical_difference(pairs: Sequence[tuple[MetricsResult, MetricsResult]], metric: str = "AP50", *,
                            category_id: int | None = None, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                            level: float = 0.95) -> HierarchicalDifference:
    """Mean of ``metric`` (b - a) over seeds, ``pairs`` = [(run_a, run_b) of seed 1, ...] all scored on the
    same test images; its percentile interval when both the seeds and the test images are resampled.

    Each of ``resamples`` replicates draws S seeds with replacement and one draw of the N test images
    (`image_weights` with ``seed``: the draws of `paired_difference`, so one pair gives its interval),
    the same for both runs of a seed and for every seed, and takes the mean over the drawn seeds of
    b - a on the drawn images. With one seed this is the image bootstrap; when seeds vary much more than
    the test images move the difference, it approaches the seed-resampling interval.
    """
    _check_level(level)
    pairs = list(pairs)
    if not pairs:
        raise BootstrapError("hierarchical_difference needs at least one (run_a, run_b) pair")
    plans = _same_images([r for pair in pairs for r in pair])
    n, S = plans[0].images, len(pairs)
    weights = image_weights(n, resamples, seed)
    deltas = np.stack([_metric_values(plans[2 * s + 1], weights, metric, category_id)
                       - _metric_values(plans[2 * s], weights, metric, category_id) for s in range(S)])  # (S, B)
    full = []
    for a, b in pairs:
        va, vb = _full_value(a, metric, category_id), _full_value(b, metric, category_id)
        full.append(None if va is None or vb is None else vb - va)
    seed_counts = np.random.default_rng([seed, 1]).multinomial(S, np.full(S, 1.0 / S), size=resamples)  # (B, S)
    replicate = (seed_counts * deltas.T).sum(axis=1) / S
    q = ((1 - level) / 2, (1 + level) / 2)
    known = [d for d in full if d is not None]
    defined = len(known) == S
    rep = replicate[~np.isnan(replicate)]
    mean = float(np.mean(known)) if defined else None
    low, high = _interval(rep, q) if defined and len(rep) else (None, None)
    seed_sd = float(np.std(known, ddof=1)) if defined and S > 1 else None
    image_mean = deltas.mean(axis=0)
    image_mean = image_mean[~np.isnan(image_mean)]
    image_sd = float(image_mean.std(ddof=1)) if defined and len(image_mean) > 1 else None
    dominant = None
    if seed_sd is not None and image_sd is not None:
        dominant = "seeds" if seed_sd ** 2 / S > image_sd ** 2 else "test images"
    return HierarchicalDifference(
        metric=metric, category_id=category_id, seeds=S, images=n, per_seed=tuple(full), mean=mean, low=low,
        high=high, p_positive=float((rep > 0).mean()) if defined and len(rep) else None, seed_sd=seed_sd,
        image_sd=image_sd, dominant=dominant,
        seeds_needed=units_needed(mean, seed_sd, level) if mean is not None else None,
        images_needed=(units_needed(mean, image_sd * math.sqrt(n), level)
                       if mean is not None and image_sd is not None else None),
        level=float(level), resamples=int(resamples), seed=int(seed))


def units_needed(difference: float, unit_sd: float | None, level: float = 0.95) -> int | None:
    """How many independent units (seeds, test images) resolve ``difference``: the least n with
    ``z * unit_sd / sqrt(n) < |difference|``, i.e. ``n = floor((z * unit_sd / |difference|)^2) + 1``, where
    z is the normal quantile at (1 + level) / 2 (1.96 at 0.95) and ``unit_sd`` the standard deviation of
    one unit's contribution: one seed's difference (`HierarchicalDifference.seed_sd`), or one test image's
    (the bootstrap sd at N images times sqrt(N), since a mean over N images has sd unit_sd / sqrt(N)).
    Each count assumes the other source of noise away, so it is a lower bound when both matter.
    None when ``unit_sd`` is unknown or the difference is 0 (no number of units resolves it)."""
    _check_level(level)
    if unit_sd is None or difference is None or difference == 0 or not math.isfinite(unit_sd):
        return None
    from scipy import stats  # imported here: scipy.stats takes a second to import

    z = float(stats.norm.ppf((1 + level) / 2))
    return int(math.floor((z * unit_sd / abs(difference)) ** 2)) + 1


# ------------------------------------------------------------------------------------------------------------
# the plan: everything about the test set that does not depend on the resample

@dataclass(frozen=True, eq=False)
class _Block:
    """Precision rows for one max-detections index: TP rows grouped by (area, IoU, class) in score order."""

    m: int
    inr: Any                        # scipy CSR (U, C) in-range detections per segment ending at each U row
    u_starts: np.ndarray            # first row of each (area, class) group of U rows
    tp_img: np.ndarray              # (P,) weight column of each TP row
    tp_u: np.ndarray                # (P,) its U row (same detection)
    tp_group_neg: np.ndarray        # (P,) minus the group ordinal (nonincreasing), for the envelope
    tp_npig: np.ndarray             # (P,) row of its (area, class) in the GT counts
    fix: Any                        # scipy CSR or None, (F, C) tp+fp correction per segment ending at each
                                    # of the rows below
    fix_rows: np.ndarray            # (F,) the TP rows of the groups that need the correction
    fix_starts: np.ndarray          # first row (in fix_rows) of each of their groups
    starts: np.ndarray              # (n_groups,) first row of each nonempty group
    groups: np.ndarray              # (n_groups,) flat (area, IoU, class) index of each group


@dataclass(frozen=True, eq=False)
class _Plan:
    params: CocoParams
    stat_names: list[str]
    image_ids: np.ndarray
    category_ids: np.ndarray
    images: int
    thr: np.ndarray
    rec_thr: np.ndarray
    rec_grid: np.ndarray            # rec_thr with its first value (0) replaced by the least positive float
    uniform_rec: bool
    npig: Any                       # scipy CSR (A * K, N) non-ignored GT boxes per (area, class) and image
    recall: Any                     # scipy CSR (len(pairs) * T * K, N) TPs per ((max-dets, area), IoU, class)
    recall_pairs: list[tuple[int, int]]
    precision_m: list[int]          # max-dets indices whose precision the summaries read
    dets: dict[str, np.ndarray]     # evaluated detections: img, cat, rank, score (E,); tp, matched (E, A, T);
                                    # inside (E, A)
    tied_images: np.ndarray         # images with two detections of one class and the same score
    blocks: dict[int, dict[int, _Block]]  # copies -> max-dets index -> block, built on first use


def _plan(result: MetricsResult) -> _Plan:
    m = result.matches
    if result.protocol != "coco":
        raise BootstrapError(f"the bootstrap recomputes COCO metrics; this result is of the {result.protocol!r} "
                             "protocol (evaluate(..., protocol='coco'))")
    if m is None or m.area_gt is None:
        raise BootstrapError("the bootstrap needs the per-image matches: evaluate(..., matches=True) "
                             "(the default), not matches=False")
    p = CocoParams(iou_thresholds=result.params["iou_thresholds"], rec_thresholds=result.params["rec_thresholds"],
                   max_dets=result.params["max_dets"], area_ranges=result.params["area_ranges"])
    K, N = len(result.category_ids), len(m.image_ids)
    A, T = len(p.area_ranges), len(p.iou_thresholds)
    if N == 0:
        raise BootstrapError("the bootstrap needs at least one test image; the ground truth has none")
    det_img = _positions(m.det_image_id, m.image_ids)
    det_cat = _positions(m.det_category_id, result.category_ids)
    gt_img = _positions(m.gt_image_id, m.image_ids)
    gt_cat = _positions(m.gt_category_id, result.category_ids)
    # rank within (image, class) by score, stable: the engine's cap order (max_dets)
    key = det_img * K + det_cat
    order = np.lexsort((-m.det_score, key))
    rank = np.empty(len(key), np.int64)
    rank[order] = group_rank(key[order])
    ev = np.flatnonzero(m.det_evaluated)
    pos = np.full(len(key), -1, np.int64)
    pos[ev] = np.arange(len(ev))
    cp = pos[m.area_det]
    g = m.area_gt.astype(np.int64)
    matched = np.zeros((len(ev), A, T), bool)
    matched[cp] = g >= 0
    tp = np.zeros((len(ev), A, T), bool)
    tp[cp] = (g >= 0) & ~m.gt_ignore_area[np.maximum(g, 0), np.arange(A)[None, :, None]]
    inside = ~m.det_outside[ev]
    ev_img, ev_cat, ev_rank, ev_score = det_img[ev], det_cat[ev], rank[ev], m.det_score[ev]

    rows = [a * K + gt_cat[~m.gt_ignore_area[:, a]] for a in range(A)]
    cols = [gt_img[~m.gt_ignore_area[:, a]] for a in range(A)]
    npig = _counts(np.concatenate(rows), np.concatenate(cols), (A * K, N))

    names = stat_names(p)
    ap_m, pairs = set(), []
    for ap, _, area, max_det in _stat_calls(p) + list(_class_calls(p).values()):
        for mi in (i for i, d in enumerate(p.max_dets) if d == max_det):
            if ap:
                ap_m.add(mi)
            else:
                pairs += [(mi, a) for a, r in enumerate(p.area_ranges) if r[0] == area]
    pairs = sorted(set(pairs))
    rr, rc = [], []
    for j, (mi, a) in enumerate(pairs):
        e, t = np.nonzero(tp[:, a, :] & (ev_rank < p.max_dets[mi])[:, None])
        rr.append((j * T + t) * K + ev_cat[e])
        rc.append(ev_img[e])
    recall = _counts(np.concatenate(rr) if rr else np.zeros(0, np.int64),
                     np.concatenate(rc) if rc else np.zeros(0, np.int64), (max(len(pairs), 1) * T * K, N))
    key = (ev_cat * N + ev_img).astype(np.float64)
    order = np.lexsort((ev_score, key))
    same = (key[order][1:] == key[order][:-1]) & (ev_score[order][1:] == ev_score[order][:-1])
    tied = np.unique(ev_img[order][1:][same])
    rec_thr = np.asarray(p.rec_thresholds, np.float64)
    rec_grid = np.where(rec_thr == 0.0, np.nextafter(0.0, 1.0), rec_thr)
    return _Plan(params=p, stat_names=names, image_ids=m.image_ids, category_ids=result.category_ids, images=N,
                 thr=np.asarray(p.iou_thresholds, np.float64), rec_thr=rec_thr, rec_grid=rec_grid,
                 uniform_rec=len(rec_thr) > 1 and np.array_equal(rec_thr, np.linspace(0.0, 1.0, len(rec_thr))),
                 npig=npig, recall=recall, recall_pairs=pairs, precision_m=sorted(ap_m), tied_images=tied,
                 dets={"img": ev_img, "cat": ev_cat, "rank": ev_rank, "score": ev_score, "tp": tp, "matched": matched,
                       "inside": inside}, blocks={})


def _blocks(plan: _Plan, copies: int) -> dict[int, _Block]:
    """The precision blocks for resamples that draw a tied image at most ``copies`` times (cached)."""
    if copies not in plan.blocks:
        plan.blocks.clear()
        plan.blocks[copies] = {mi: _block(mi, plan.params.max_dets[mi], plan.dets, plan.tied_images, copies,
                                          len(plan.category_ids), plan.images) for mi in plan.precision_m}
    return plan.blocks[copies]


def _block(mi: int, max_det: int, dets: dict[str, np.ndarray], tied: np.ndarray, copies: int, K: int,
           N: int) -> _Block:
    """TP rows of one max-dets value: detections with rank < max_det pooled per class in COCO's order
    (score descending, then image, then rank), for each (area range, IoU threshold).

    Weight columns: image i's weight for most rows. Detections of one image and class that share a score
    are interleaved copy by copy in a materialised resample (image copies come one after the other), so
    they get one row per possible copy c < ``copies``, weighted 1 when the image is drawn more than c times
    (column N + copies * (index in ``tied``) + c), in the order (score, image, copy, rank)."""
    ev_img, ev_cat, ev_rank, ev_score = dets["img"], dets["cat"], dets["rank"], dets["score"]
    A, T = dets["tp"].shape[1], dets["tp"].shape[2]
    sel = np.flatnonzero(ev_rank < max_det)
    seq = sel[np.lexsort((ev_rank[sel], ev_img[sel], -ev_score[sel], ev_cat[sel]))]
    col = ev_img[seq]
    if len(tied) and copies > 1 and len(seq) > 1:
        same = (ev_cat[seq][1:] == ev_cat[seq][:-1]) & (col[1:] == col[:-1]) & (ev_score[seq][1:] == ev_score[seq][:-1])
        in_tie = np.r_[same, False] | np.r_[False, same]
        n_copy = np.where(in_tie, copies, 1)
        seq, col, in_tie = np.repeat(seq, n_copy), np.repeat(col, n_copy), np.repeat(in_tie, n_copy)
        copy = np.arange(len(seq)) - np.repeat(np.cumsum(n_copy) - n_copy, n_copy)
        order = np.lexsort((ev_rank[seq], copy, col, -ev_score[seq], ev_cat[seq]))
        seq, col, in_tie, copy = seq[order], col[order], in_tie[order], copy[order]
        col = np.where(in_tie, N + copies * np.searchsorted(tied, col) + copy, col)
    C = N + len(tied) * copies if len(tied) and copies > 1 else N
    cat, img = ev_cat[seq], col
    tp_s, mt_s, in_s = dets["tp"][seq], dets["matched"][seq], dets["inside"][seq]
    u_pos, u_off, inr_r, inr_c = [], [0], [], []
    for a in range(A):  # U rows: detections that are a TP at some IoU threshold, per area range
        u = np.flatnonzero(tp_s[:, a, :].any(axis=1))
        r, c = _segments(u, np.flatnonzero(in_s[:, a]), cat)
        inr_r.append(u_off[-1] + r)
        inr_c.append(img[c])
        u_pos.append(u)
        u_off.append(u_off[-1] + len(u))
    u_cat = np.concatenate([cat[u] for u in u_pos])
    u_area = np.repeat(np.arange(A), [len(u) for u in u_pos])
    tp_img, tp_u, tp_key, fix_r, fix_c, fix_v, n_rows = [], [], [], [], [], [], 0
    for a in range(A):
        for t in range(T):
            P = np.flatnonzero(tp_s[:, a, t])
            tp_img.append(img[P])
            tp_u.append(u_off[a] + np.searchsorted(u_pos[a], P))
            tp_key.append((a * T + t) * K + cat[P])
            # tp + fp = in-range so far - (matched to an ignored box and in range) + (TP outside the range)
            ignored_in = mt_s[:, a, t] & ~tp_s[:, a, t] & in_s[:, a]
            for sign, events in ((1.0, ignored_in), (-1.0, tp_s[:, a, t] & ~in_s[:, a])):
                r, c = _segments(P, np.flatnonzero(events), cat)
                fix_r.append(n_rows + r)
                fix_c.append(img[c])
                fix_v.append(np.full(len(r), sign))
            n_rows += len(P)
    tp_key = np.concatenate(tp_key)
    starts = _group_starts(tp_key)
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n_rows)))
    u_starts = _group_starts(u_area * K + u_cat)
    # the correction only on the rows of the groups that have one (usually few: crowd boxes, range edges)
    fix_r = np.concatenate(fix_r)
    fix_rows = np.flatnonzero(np.isin(group, group[fix_r]))
    at = np.searchsorted(fix_rows, fix_r)
    fix = _counts(at, np.concatenate(fix_c), (len(fix_rows), C), np.concatenate(fix_v)) if len(fix_r) else None
    return _Block(m=mi, inr=_counts(np.concatenate(inr_r), np.concatenate(inr_c), (u_off[-1], C)),
                  u_starts=u_starts, tp_img=np.concatenate(tp_img), tp_u=np.concatenate(tp_u),
                  tp_group_neg=-group.astype(np.float64), tp_npig=(tp_key // (T * K)) * K + tp_key % K, fix=fix,
                  fix_rows=fix_rows, fix_starts=_group_starts(group[fix_rows]), starts=starts,
                  groups=tp_key[starts])


def _segments(rows_at: np.ndarray, events: np.ndarray, cat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Assign each event position to the first row position at or after it in the same class (rows_at and
    events are positions in the class-sorted sequence); events after their class's last row are dropped.
    Returns (row index, event position)."""
    j = np.searchsorted(rows_at, events, side="left")
    ok = j < len(rows_at)
    ok[ok] = cat[rows_at[j[ok]]] == cat[events[ok]]
    return j[ok], events[ok]


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """First row of each run of equal keys (keys grouped)."""
    if not len(keys):
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])


def _counts(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], values: np.ndarray | None = None) -> Any:
    """Sparse (rows x weight columns) counts, scipy CSR, float64 (integers: exact); duplicates add up."""
    from scipy import sparse

    return sparse.csr_matrix((np.ones(len(rows)) if values is None else values, (rows, cols)), shape=shape)


def _positions(values: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """Index of each value in the sorted unique ``universe`` (ids of any size); -1 where absent."""
    if not len(values):
        return np.zeros(0, np.int64)
    i = np.minimum(np.searchsorted(universe, values), max(len(universe) - 1, 0)).astype(np.int64)
    found = len(universe) > 0 and (universe[i] == values)
    return np.where(found, i, -1)


# ------------------------------------------------------------------------------------------------------------
# scoring resamples

def _score(plan: _Plan, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, 12) stats and (B, K, 6) per-class metrics of the resamples ``weights`` (B, N); NaN = undefined.

    The AP rows are computed ``chunk`` resamples at a time as (resamples, rows) arrays, rows contiguous:
    numpy's running sums and maxima are fast along the last axis only, and a chunk's arrays stay in the
    cache; the summaries take ``outer`` resamples at a time."""
    p, K, T = plan.params, len(plan.category_ids), len(plan.thr)
    A = len(p.area_ranges)
    copies = int(weights[:, plan.tied_images].max()) if len(plan.tied_images) else 1
    blocks = _blocks(plan, max(copies, 1))
    rows = max(1, sum(len(b.tp_img) + b.inr.shape[0] for b in blocks.values()))
    chunk = int(max(1, min(len(weights), _BLOCK // rows)))
    outer = int(max(chunk, min(len(weights), _SUMMARY // max(1, A * T * K))))
    stats, per_class = [], []
    for o0 in range(0, len(weights), outer):
        w = np.ascontiguousarray(weights[o0:o0 + outer], dtype=np.float64)     # (b, N)
        wt = np.ascontiguousarray(w.T)                                         # (N, b) for the sparse sums
        npig = np.ascontiguousarray((plan.npig @ wt).T)                        # (b, A*K)
        valid = (npig > 0).reshape(-1, A, K)
        npig = np.maximum(npig, 1.0)      # a class without GT in the resample has no weighted TP either
        recall = np.ascontiguousarray((plan.recall @ wt).T).reshape(len(w), -1, T, K)
        for j, (_, a) in enumerate(plan.recall_pairs):
            recall[:, j] /= npig[:, None, a * K:(a + 1) * K]
        if copies > 1:  # the weight columns of tied detections' copies: drawn more than c times
            drawn = w[:, plan.tied_images][:, :, None] > np.arange(copies)
            w = np.concatenate([w, drawn.reshape(len(w), -1)], axis=1)
        ap = {mi: np.concatenate([_block_ap(plan, block, w[c0:c0 + chunk], npig[c0:c0 + chunk])
                                  for c0 in range(0, len(w), chunk)]) for mi, block in blocks.items()}
        stats.append(np.stack([_summary(plan, ap, recall, valid, *c)[0] for c in _stat_calls(p)], axis=1))
        per_class.append(np.stack([_summary(plan, ap, recall, valid, *c)[1] for c in _class_calls(p).values()],
                                  axis=2))                                   # (b, K, 6)
    return np.concatenate(stats), np.concatenate(per_class)


def _block_ap(plan: _Plan, block: _Block, w: np.ndarray, npig: np.ndarray) -> np.ndarray:
    """(b, A, T, K) AP (mean over the recall thresholds of the interpolated precision) per resample.
    ``w`` (b, C) weight columns (images, then tied detections' copies), ``npig`` (b, A*K) weighted GT counts
    (at least 1)."""
    A, T, K, b = len(plan.params.area_ranges), len(plan.thr), len(plan.category_ids), len(w)
    out = np.zeros((b, A * T * K))
    if not len(block.tp_img):
        return out.reshape(b, A, T, K)
    wt = np.ascontiguousarray(w.T)
    inr = _grouped_cumsum(np.ascontiguousarray((block.inr @ wt).T), block.u_starts)     # (b, U)
    tpc = _grouped_cumsum(np.take(w, block.tp_img, axis=1), block.starts)              # (b, P) tp so far
    total = np.take(inr, block.tp_u, axis=1)                                           # tp + fp so far
    if block.fix is not None:
        total[:, block.fix_rows] -= _grouped_cumsum(np.ascontiguousarray((block.fix @ wt).T), block.fix_starts)
    total += _EPS
    # right-monotone envelope within each group: a reverse running maximum of (-group, precision), which
    # complex numbers compare lexicographically (real part first), so it restarts at each group
    z = np.empty(tpc.shape, np.complex128)
    z.real = block.tp_group_neg
    np.divide(tpc, total, out=z.imag)                                                  # precision
    np.maximum.accumulate(z[:, ::-1], axis=1, out=z[:, ::-1])
    crossed = _recall_count(plan, np.divide(tpc, np.take(npig, block.tp_npig, axis=1), out=tpc))
    gained = np.empty(crossed.shape)                    # recall thresholds crossed at each TP row
    np.subtract(crossed[:, 1:], crossed[:, :-1], out=gained[:, 1:])
    gained[:, block.starts] = crossed[:, block.starts]
    gained *= z.imag
    out[:, block.groups] = np.add.reduceat(gained, block.starts, axis=1) / len(plan.rec_thr)
    return out.reshape(b, A, T, K)


def _grouped_cumsum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Running sum along the rows (last axis, in place), restarting at each group (``starts``: each group's
    first row): each group's first value first gives back the previous group's sum. The values are integer
    counts, exact in float64, so the result is exact."""
    if len(starts) > 1:
        values[:, starts[1:]] -= np.add.reduceat(values, starts, axis=1)[:, :-1]
    return np.cumsum(values, axis=1, out=values)


def _recall_count(plan: _Plan, recall: np.ndarray) -> np.ndarray:
    """Number of recall thresholds r <= each recall value, 0 for recall 0 (COCO reads threshold r at the first
    TP whose recall float(tp / npig) >= r, the recall-0 threshold at the first TP). On the default uniform
    grid: k = the nearest grid index, plus one if the grid value there is <= the recall (the grid's first
    value replaced by the least positive float, so recall 0 counts nothing); else a search."""
    if not plan.uniform_rec:
        return np.where(recall > 0, np.searchsorted(plan.rec_thr, recall, side="right"), 0).astype(np.float64)
    k = np.rint(recall * (len(plan.rec_thr) - 1)).astype(np.int16 if len(plan.rec_thr) < 1 << 15 else np.intp)
    return k + (np.take(plan.rec_grid, k) <= recall)   # int16: a quarter of the memory traffic of intp


def _summary(plan: _Plan, ap: dict[int, np.ndarray], recall: np.ndarray, valid: np.ndarray, is_ap: bool,
             iou: float | None, area: str, max_det: int) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.summarize's mean over the entries that exist, per resample: (overall (b,), per class (b, K)),
    NaN where nothing is defined (COCO's -1). ``ap[m]`` (b, A, T, K), ``recall`` (b, pairs, T, K), ``valid``
    (b, A, K): the class has ground truth in the area range in that resample."""
    p = plan.params
    b, K = valid.shape[0], valid.shape[2]
    aind = [i for i, r in enumerate(p.area_ranges) if r[0] == area]
    mind = [i for i, d in enumerate(p.max_dets) if d == max_det]
    tind = np.arange(len(plan.thr)) if iou is None else np.flatnonzero(plan.thr == iou)
    if not aind or not mind or not len(tind):
        return np.full(b, np.nan), np.full((b, K), np.nan)
    if is_ap:
        values = ap[mind[0]][:, aind]                                            # (b, a, T, K)
    else:
        values = recall[:, [plan.recall_pairs.index((mind[0], a)) for a in aind]]
    values = values[:, :, tind]
    ok = valid[:, aind][:, :, None]                                              # (b, a, 1, K)
    total = np.where(ok, values, 0.0).sum(axis=(1, 2))                           # (b, K)
    count = ok.sum(axis=(1, 2)) * len(tind)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total.sum(axis=1) / count.sum(axis=1), total / count


def _stat_calls(p: CocoParams) -> list[tuple]:
    """COCOeval.summarize's twelve calls (the engine's `_summarize`): (is AP, IoU, area label, max dets)."""
    d = p.max_dets
    return [(True, None, "all", 100), (True, .5, "all", d[2]), (True, .75, "all", d[2]),
            (True, None, "small", d[2]), (True, None, "medium", d[2]), (True, None, "large", d[2]),
            (False, None, "all", d[0]), (False, None, "all", d[1]), (False, None, "all", d[2]),
            (False, None, "small", d[2]), (False, None, "medium", d[2]), (False, None, "large", d[2])]


def _class_calls(p: CocoParams) -> dict[str, tuple]:
    """The per-class metrics of `MetricsResult.per_class` (the engine's `_per_class`)."""
    d = p.max_dets
    return {"AP": (True, None, "all", 100), "AP50": (True, .5, "all", d[2]), "AP75": (True, .75, "all", d[2]),
            f"AR{d[0]}": (False, None, "all", d[0]), f"AR{d[1]}": (False, None, "all", d[1]),
            f"AR{d[2]}": (False, None, "all", d[2])}


def _class_metric_names(p: CocoParams) -> list[str]:
    return list(_class_calls(p))


# ------------------------------------------------------------------------------------------------------------
# helpers of the public functions

def _metric_values(plan: _Plan, weights: np.ndarray, metric: str, category_id: int | None) -> np.ndarray:
    stats, per_class = _score(plan, weights)
    if category_id is None:
        if metric not in plan.stat_names:
            raise BootstrapError(f"unknown metric {metric!r}; the COCO stats are {', '.join(plan.stat_names)}")
        return stats[:, plan.stat_names.index(metric)]
    names = _class_metric_names(plan.params)
    if metric not in names:
        raise BootstrapError(f"unknown per-class metric {metric!r}; known: {', '.join(names)}")
    k = _positions(np.array([category_id], dtype=plan.category_ids.dtype), plan.category_ids)[0]
    if k < 0:
        raise BootstrapError(f"category_id {category_id} is not among the evaluated classes "
                             f"{plan.category_ids.tolist()}")
    return per_class[:, k, names.index(metric)]


def _full_value(result: MetricsResult, metric: str, category_id: int | None) -> float | None:
    """The metric on the full test set; None where undefined (COCO's -1, class without ground truth)."""
    v = result.stats.get(metric) if category_id is None else result.per_class.get(category_id, {}).get(metric)
    return None if v is None or float(v) == -1.0 else float(v)


def _same_images(results: Sequence[MetricsResult]) -> list[_Plan]:
    plans = [_plan(r) for r in results]
    ref = plans[0].image_ids
    for i, p in enumerate(plans[1:], 1):
        if len(p.image_ids) != len(ref) or not np.array_equal(p.image_ids, ref):
            extra = len(set(p.image_ids.tolist()) - set(ref.tolist()))
            missing = len(set(ref.tolist()) - set(p.image_ids.tolist()))
            raise BootstrapError(f"a paired bootstrap needs runs scored on the same test images: run {i} has "
                                 f"{len(p.image_ids)} images ({extra} not in run 0, {missing} of run 0's missing), "
                                 f"run 0 has {len(ref)}")
    return plans


def _check_weights(weights: np.ndarray, images: int) -> np.ndarray:
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != images:
        raise BootstrapError(f"weights must be (resamples, {images}) counts per test image, got shape "
                             f"{weights.shape}")
    if (weights < 0).any() or not np.array_equal(weights, np.round(weights)):
        raise BootstrapError("weights must be non-negative integer counts (times each image is drawn)")
    return weights


def _check_level(level: float) -> None:
    if not 0.0 < float(level) < 1.0:
        raise BootstrapError(f"level must be in (0, 1), e.g. 0.95, got {level}")


def _interval(values: np.ndarray, q: tuple[float, float]) -> tuple[float, float]:
    lo, hi = np.quantile(values, q)
    return float(lo), float(hi)
