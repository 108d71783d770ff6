"""Report plots (matplotlib, Agg) returned as PNG bytes: PR curves, per-class AP bars, training curves."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from synthgap.report.run import Run
from synthgap.stats.plots import figure_png, pyplot

# TensorBoard tags drawn as training curves, in this order, when a run has them (synthgap.engine.train's tags)
CURVE_TAGS = ("train/loss", "epoch/loss", "val/AP", "val/AP50", "train/lr")


def mean_pr_curve(result, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray] | None:
    """(recall grid, precision averaged over the classes with ground truth) at the evaluated IoU threshold
    nearest ``iou``, all areas, the largest max-detections (`MetricsResult.pr_curves`); None without any."""
    curves = result.pr_curves(iou) if result is not None else {}
    if not curves:
        return None
    recall = next(iter(curves.values()))[0]
    return recall, np.mean([precision for _, precision in curves.values()], axis=0)


def pr_curves_png(runs: Sequence[Run]) -> bytes | None:
    """Class-averaged precision-recall curves at IoU 0.5 (solid) and 0.75 (dashed), one colour per run."""
    plt = pyplot()
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
    plt = pyplot()
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
    plt = pyplot()
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


def budget_curve_png(summary) -> bytes | None:
    """The study's headline figure (``summary``: a `synthgap.study.StudySummary` or a summary.json document).

    Left: the target metric (``summary.headline``) against the real-data fraction, real-only and
    synthetic-then-real (mean over seeds, error bars = sample std), the synthetic-only level as a horizontal
    line (band = its std); cells that did not learn in their own domain get hollow markers. Right: the
    difference (synthetic then real minus real only) per budget with its 95 % intervals: the paired
    t-interval over seeds and, when measured, the bootstrap over seeds and test images."""
    from synthgap.study.summary import as_summary, metric_name, short_target_name

    summary = as_summary(summary)
    metric = summary.headline
    target = short_target_name(summary.target_name)
    arms = (f"{target} only", f"synthetic then {target}")
    series = {arms[0]: [], arms[1]: []}
    diffs = []
    for c in summary.comparison:
        for label, cell in zip(arms, (c.real_cell, c.finetune_cell)):
            row = summary.row(cell)
            stat = row.target.get(metric) if row else None
            if stat:
                series[label].append((100 * c.fraction, stat.mean, stat.std or 0.0, row.learned is not False))
        m = c.metrics.get(metric)
        if m:
            b = m.bootstrap
            diffs.append((100 * c.fraction, (m.difference.mean, m.difference.ci), (b and b.mean, b and b.ci)))
    if not any(series.values()):
        return None
    plt = pyplot()
    fig, (ax, dax) = plt.subplots(1, 2, figsize=(10.4, 4.2), gridspec_kw={"width_ratios": [1.5, 1]})
    for (label, points), color in zip(series.items(), ("C0", "C1")):
        if not points:
            continue
        points.sort()
        x, y, err, ok = (np.array(v) for v in zip(*points))
        ax.errorbar(x, y, yerr=err, color=color, marker="o", capsize=4, label=label, linestyle="-")
        if not ok.all():
            ax.plot(x[~ok], y[~ok], "o", markersize=11, markerfacecolor="white", markeredgecolor=color,
                    label=f"{label}: did not learn in its own domain")
    syn = summary.row("synthetic")
    stat = syn.target.get(metric) if syn else None
    if stat:
        ax.axhline(stat.mean, color="C2", linestyle="--",
                   label="synthetic only" + (" (did not learn)" if syn.learned is False else ""))
        if stat.std:
            ax.axhspan(stat.mean - stat.std, stat.mean + stat.std, color="C2", alpha=0.12)
    xs = sorted({p[0] for pts in series.values() for p in pts})
    log_x = len(xs) > 1 and xs[-1] / xs[0] >= 8
    for a in (ax, dax):
        if log_x:
            a.set_xscale("log")
        a.set_xticks(xs, [f"{v:g} %" for v in xs])
        a.minorticks_off()
        a.set_xlabel(f"{target} training data used (% of the {target} training pool)")
        a.grid(alpha=0.3)
    ax.set_ylabel(f"{metric_name(metric)} on the {summary.target_name} test set")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.set_title("error bars: std over seeds", fontsize=8)
    dax.axhline(0.0, color="0.4", linewidth=0.8)
    if len(xs) == 1:  # one budget: keep the two intervals side by side at its tick
        dax.set_xlim(xs[0] - 10, xs[0] + 10)
    width = (xs[-1] / xs[0]) ** 0.03 if log_x else 0.02 * max(xs[-1] - xs[0], 40.0)  # the intervals' offset
    for k, (label, color) in enumerate((("95 % CI over seeds (t)", "C3"),
                                        ("95 % CI seeds + test images (bootstrap)", "C4"))):
        points = [(d[0], *d[1 + k]) for d in diffs if d[1 + k][1] is not None]  # d: x, (mean, CI) t, bootstrap
        if not points:
            continue
        x = np.array([p[0] for p in points])
        x = x * width ** (k - 0.5) if log_x else x + width * (k - 0.5)
        mean = np.array([p[1] for p in points])
        lo, hi = np.array([p[2][0] for p in points]), np.array([p[2][1] for p in points])
        dax.errorbar(x, mean, yerr=[np.maximum(mean - lo, 0), np.maximum(hi - mean, 0)], color=color, marker="o",
                     capsize=4, linestyle="none", label=label)
    if diffs and all(d[1][1] is None and d[2][1] is None for d in diffs):
        dax.plot([d[0] for d in diffs], [d[1][0] for d in diffs], "o", color="C3",
                 label="difference (1 seed: no interval)")
    dax.set_ylabel(f"synthetic then {target} minus {target} only\n({metric_name(metric)})")
    dax.legend(fontsize=7)
    dax.set_title("the difference per budget, 95 % intervals", fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def diagnosis(run: Run) -> tuple[dict | None, dict | None]:
    """(TIDE error breakdown, AP by attribute) of a run, as written by `synthgap evaluate` into
    metrics_coco.json; computed from the run's predictions and test samples when the file has none."""
    coco = run.metrics.setdefault("coco", {})
    if ("errors" not in coco or "attributes" not in coco) and run.samples and run.predictions is not None:
        from synthgap.metrics import evaluate

        r = evaluate(run.samples, run.predictions, "coco", label_map=run.label_map, errors="errors" not in coco,
                     attributes="attributes" not in coco, attributes_root=run.test_data)
        coco.update({k: v for k, v in r.to_dict().items() if k in ("errors", "attributes")})
    return coco.get("errors"), coco.get("attributes")


def error_breakdown_png(runs: Sequence[Run]) -> bytes | None:
    """TIDE's error breakdown, one panel per run side by side on the same axis: AP points (x 100) each
    error type costs (dAP), the six main types and the two special ones (all false positives / negatives)."""
    from synthgap.metrics.tide import ERROR_NAMES, ERROR_TYPES, SPECIAL_TYPES

    found = [(run, diagnosis(run)[0]) for run in runs]
    found = [(run, e) for run, e in found if e]
    if not found:
        return None
    keys = list(ERROR_TYPES) + list(SPECIAL_TYPES)
    labels = [ERROR_NAMES[k] for k in keys]
    values = [[100 * ((e["dap"] if k in e["dap"] else e["special"]).get(k) or 0.0) for k in keys] for _, e in found]
    top = max(max(v) for v in values) or 1.0
    plt = pyplot()
    fig, axes = plt.subplots(1, len(found), figsize=(2.9 * len(found) + 1.3, 3.2), squeeze=False, sharey=True)
    for ax, (run, e), vals in zip(axes[0], found, values):
        colors = [f"C{i}" for i in range(len(ERROR_TYPES))] + ["0.55"] * len(SPECIAL_TYPES)
        ax.barh(np.arange(len(keys)), vals, color=colors)
        ax.axhline(len(ERROR_TYPES) - 0.5, color="gray", linestyle=":")
        ax.set_xlim(0, top * 1.15)
        ap = e.get("ap")
        ax.set_title(f"{run.name}\nAP50 (TIDE) {'-' if ap is None else f'{100 * ap:.1f}'}", fontsize=8)
        ax.set_xlabel("dAP (AP points)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(np.arange(len(keys)), labels, fontsize=7)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    return figure_png(fig)


def attribute_ap_png(runs: Sequence[Run], metric: str = "AP50") -> bytes | None:
    """AP by object attribute (size, aspect ratio, truncation at the border, occlusion): one panel per
    attribute, one bar per bin and run (``metric``: AP, AP50 or AR of `synthgap.metrics.attributes`)."""
    from synthgap.metrics.attributes import TITLES

    found = [(run, diagnosis(run)[1]) for run in runs]
    found = [(run, a) for run, a in found if a]
    if not found:
        return None
    names = [n for n in found[0][1] if any(a.get(n, {}).get("available") for _, a in found)]
    if not names:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.4), squeeze=False, sharey=True)
    width = 0.8 / len(found)
    for ax, name in zip(axes[0], names):
        bins = next(list(a[name]["bins"]) for _, a in found if a.get(name, {}).get("available"))
        x = np.arange(len(bins))
        for i, (run, a) in enumerate(found):
            rows = a.get(name, {}).get("bins", {})
            vals = [(rows.get(b) or {}).get(metric) for b in bins]
            ax.bar(x + (i - (len(found) - 1) / 2) * width, [np.nan if v is None else v for v in vals], width,
                   color=f"C{i % 10}", label=run.name)
        counts = [(found[0][1].get(name, {}).get("bins", {}).get(b) or {}).get("num_gt", 0) for b in bins]
        ax.set_xticks(x, [f"{b}\n({n})" for b, n in zip(bins, counts)], fontsize=7)
        ax.set_title(TITLES.get(name, name), fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (boxes in bin)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)
