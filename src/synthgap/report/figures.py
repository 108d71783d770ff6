"""Report plots (matplotlib, Agg) returned as PNG bytes: PR curves, per-class AP bars, training curves."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from synthgap.report.run import Run
from synthgap.stats.plots import _pyplot, figure_png

# TensorBoard tags drawn as training curves, in this order, when a run has them (synthgap.train's tags)
CURVE_TAGS = ("train/loss", "epoch/loss", "val/AP", "val/AP50", "train/lr")


def mean_pr_curve(result, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray] | None:
    """(recall grid, precision averaged over classes with ground truth) at one IoU threshold, all areas,
    the largest max-detections: COCO's [T, R, K, A, M] precision array, -1 entries left out."""
    if result is None or result.precision is None:
        return None
    thr = np.asarray(result.params.get("iou_thresholds", np.linspace(0.5, 0.95, 10)), np.float64)
    t = int(np.argmin(np.abs(thr - iou)))
    prec = np.asarray(result.precision)[t, :, :, 0, -1]  # [R, K]
    valid = (prec > -1).all(0)
    if not valid.any():
        return None
    rec = result.params.get("rec_thresholds") or [0.0, 1.0]  # CocoParams.to_dict: [first, last, count]
    recall = np.linspace(float(rec[0]), float(rec[1]), prec.shape[0])
    return recall, prec[:, valid].mean(1)


def pr_curves_png(runs: Sequence[Run]) -> bytes | None:
    """Class-averaged precision-recall curves at IoU 0.5 (solid) and 0.75 (dashed), one colour per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        for iou, style in ((0.5, "-"), (0.75, "--")):
            curve = mean_pr_curve(run.result, iou)
            if curve is not None:
                ax.plot(curve[0], curve[1], style, color=color, label=f"{run.name} IoU {iou}")
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (mean over classes)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure_png(fig)


def class_ap(run: Run) -> dict[str, float]:
    """Class name -> COCO AP@[.5:.95] from the run's metrics (classes without ground truth left out)."""
    per_class = run.metrics.get("coco", {}).get("per_class", {})
    out = {}
    for key, d in per_class.items():
        ap = d.get("AP") if isinstance(d, dict) else None
        if ap is not None and not (isinstance(ap, float) and math.isnan(ap)) and ap >= 0:
            out[str(d.get("name", key))] = float(ap)
    return out


def per_class_ap_png(runs: Sequence[Run], n: int = 10) -> bytes | None:
    """Per-class AP bars: the ``n`` best and ``n`` worst classes (ranked by AP averaged over runs)."""
    aps = [class_ap(r) for r in runs]
    names = sorted({k for a in aps for k in a})
    if not names:
        return None
    table = np.array([[a.get(k, np.nan) for k in names] for a in aps])
    mean = np.nanmean(table, 0)
    order = np.argsort(-mean, kind="stable")
    picked = list(order) if len(order) <= 2 * n else list(order[:n]) + list(order[-n:])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 0.28 * len(picked) * max(1, len(runs)) ** 0.5 + 1.2))
    height = 0.8 / len(runs)
    y = np.arange(len(picked))
    for i, run in enumerate(runs):
        ax.barh(y + (i - (len(runs) - 1) / 2) * height, np.nan_to_num(table[i, picked]), height, label=run.name)
    ax.set_yticks(y, [names[j] for j in picked], fontsize=7)
    ax.invert_yaxis()
    if len(order) > 2 * n:
        ax.axhline(n - 0.5, color="gray", linestyle=":")
    ax.set_xlabel("AP@[.5:.95] (COCO)")
    ax.set_title("best and worst classes" if len(order) > 2 * n else "all classes", fontsize=9)
    ax.legend(fontsize=7)
    return figure_png(fig)


def training_curves_png(runs: Sequence[Run]) -> bytes | None:
    """One panel per tag of `CURVE_TAGS` present in any run; each run one line (x = the logged step)."""
    tags = [t for t in CURVE_TAGS if any(t in r.scalars for r in runs)]
    if not tags:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tags), figsize=(3.4 * len(tags), 3.0), squeeze=False)
    for ax, tag in zip(axes[0], tags):
        for i, run in enumerate(runs):
            if tag in run.scalars:
                steps, values = run.scalars[tag]
                ax.plot(steps, values, marker="." if len(steps) < 30 else None, color=f"C{i % 10}", label=run.name)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("epoch" if tag.startswith(("epoch/", "val/")) else "optimizer step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)
