"""PNG plots of dataset statistics (matplotlib, Agg backend): several datasets on the same axes."""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np


def pyplot():
    """pyplot on the Agg backend, drawing every string literally: dataset, class and run names come from
    files and may hold ``$`` (mathtext would render "$5 and $6" as math, and crash on "$\\foo$")."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    matplotlib.rcParams["text.parse_math"] = False
    matplotlib.rcParams["text.usetex"] = False
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """Encode a matplotlib figure as PNG bytes and close it."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def histogram_png(stats: Sequence[dict[str, Any]], key: str) -> bytes:
    """Normalised histograms of statistic ``key`` of each dataset, same bins, one axes."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for s in stats:
        h = s["histograms"][key]
        counts = np.asarray(h["counts"], np.float64)
        edges = np.asarray(h["edges"])
        if counts.sum() == 0:
            continue
        if key == "objects_per_image":  # trim the empty tail of the 0..100 range
            last = max(int(np.flatnonzero(counts).max()) + 2, 5)
            counts, edges = counts[:last], edges[:last + 1]
        ax.stairs(counts / counts.sum(), edges, label=f"{s['name']} (n={int(counts.sum())})", linewidth=1.6)
    ax.set_xlabel(stats[0]["histograms"][key]["label"])
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_png(fig)


def class_counts_png(stats: Sequence[dict[str, Any]], top: int = 40) -> bytes:
    """Per-class object fractions, datasets side by side (the ``top`` classes by total fraction)."""
    plt = pyplot()
    names = sorted({n for s in stats for n in s["class_counts"]})
    frac = np.array([[s["class_counts"].get(n, 0) / max(s["objects"], 1) for n in names] for s in stats])
    order = np.argsort(-frac.sum(0), kind="stable")[:top]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.22 * len(order) * max(len(stats), 1) + 2), 4.0))
    width = 0.8 / max(len(stats), 1)
    x = np.arange(len(order))
    for i, s in enumerate(stats):
        ax.bar(x + (i - (len(stats) - 1) / 2) * width, frac[i, order], width, label=s["name"])
    ax.set_xticks(x, [names[j] for j in order], rotation=90, fontsize=6)
    ax.set_ylabel("fraction of objects")
    ax.legend(fontsize=8)
    return figure_png(fig)


def heatmaps_png(stats: Sequence[dict[str, Any]]) -> bytes:
    """Box-centre heatmaps (normalised image coordinates), one panel per dataset, shared colour scale."""
    plt = pyplot()
    maps = []
    for s in stats:
        m = np.asarray(s["center_heatmap"]["counts"], np.float64)
        maps.append(m / m.sum() if m.sum() else m)
    vmax = max((m.max() for m in maps), default=1.0) or 1.0
    fig, axes = plt.subplots(1, len(stats), figsize=(3.4 * len(stats) + 0.8, 3.2), squeeze=False)
    im = None
    for i, (ax, s, m) in enumerate(zip(axes[0], stats, maps)):
        im = ax.imshow(m, extent=(0, 1, 1, 0), vmin=0, vmax=vmax, cmap="magma")
        ax.set_title(s["name"], fontsize=9)
        ax.set_xlabel("x / width")
        if i == 0:
            ax.set_ylabel("y / height")
    fig.colorbar(im, ax=list(axes[0]), label="fraction of box centres")
    return figure_png(fig)
