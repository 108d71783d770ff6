"""Dataset statistics: what a dataset's boxes look like, and how far two datasets are apart.

    from synthgap.stats import compute_stats, write_stats
    s = compute_stats("data/synthetic")                     # dict, JSON-ready
    write_stats(["data/synthetic", "data/real"], "out/")    # stats.json + PNG plots, same axes

Streams over the samples (one pass, fixed bins, nothing kept per sample). See docs/report.md.
"""

from __future__ import annotations

import posixpath
from typing import Any, Sequence

from synthgap.io import storage
from synthgap.stats.accumulate import BINS, HEATMAP_BINS, DatasetStats, VisiblePixels, dataset_stats
from synthgap.stats.gap import gap_summary, total_variation, wasserstein_binned

__all__ = ["BINS", "HEATMAP_BINS", "DatasetStats", "VisiblePixels", "compute_stats", "dataset_stats",
           "gap_summary", "total_variation", "wasserstein_binned", "write_stats", "PLOTS"]

# plot file name -> what it shows (histogram statistics get one file each: <stat>.png)
PLOTS = ("class_counts.png", "center_heatmap.png") + tuple(f"{k}.png" for k in BINS)


def _name(root: str) -> str:
    return posixpath.basename(str(root).replace("\\", "/").rstrip("/")) or str(root)


def compute_stats(root: str, format: str | None = None, name: str | None = None, **options) -> dict[str, Any]:
    """Statistics of the dataset at ``root`` (any format `open_dataset` reads), as a JSON-ready dict."""
    from synthgap.data import open_dataset

    ds = open_dataset(root, format, **options)
    return dataset_stats(ds, ds.label_map, name or _name(root), root=root).to_dict()


def write_stats(roots: Sequence[str], out: str, format: str | None = None, names: Sequence[str] | None = None,
                plots: bool = True, formats: Sequence[str | None] | None = None, features: str | None = None,
                feature_images: int = 500, leakage: bool = False) -> dict[str, Any]:
    """Compute the statistics of each dataset in ``roots`` and write ``out/stats.json`` and PNG plots.

    The first dataset is the reference: ``gap`` in the JSON holds distances from it to each other
    dataset. Every plot shows all datasets on the same axes (normalised histograms, same bins).
    ``format`` forces one reader for all; ``formats`` one per dataset. ``features``: a trained checkpoint;
    each gap then also holds ``features``, the Fréchet distance between image (and per-class crop) features
    of its backbone (`synthgap.stats.features`, ``feature_images`` images per dataset). ``leakage``: each gap
    also holds ``leakage``, near-copies of that dataset's images in the first one (`synthgap.data.leakage`:
    pHash, and with ``features`` that checkpoint's feature similarity). Returns the document.
    """
    roots = list(roots)
    formats = list(formats) if formats is not None else [format] * len(roots)
    if len(formats) != len(roots):
        raise ValueError(f"{len(formats)} formats given for {len(roots)} datasets")
    names = list(names) if names else [_name(r) for r in roots]
    if len(names) != len(roots):
        raise ValueError(f"{len(names)} names given for {len(roots)} datasets")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):  # two folders called "test" must stay apart in the JSON
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            names[i] = f"{n}-{seen[n]}"
    stats = [compute_stats(r, f, n) for r, f, n in zip(roots, formats, names)]
    doc = {"datasets": {s["name"]: {"root": str(r), **s} for s, r in zip(stats, roots)},
           "reference": stats[0]["name"],
           "gap": {s["name"]: gap_summary(stats[0], s) for s in stats[1:]}}
    if features and len(roots) > 1:
        from synthgap.stats.features import datasets_feature_gap

        gaps = datasets_feature_gap(roots[0], roots[1:], checkpoint=features, format_a=formats[0],
                                    formats_b=formats[1:], max_images=feature_images)
        for s, gap in zip(stats[1:], gaps):
            doc["gap"][s["name"]]["features"] = gap
    if leakage and len(roots) > 1:  # near-copies of each other dataset's images in the first (its training pool)
        from synthgap.data.leakage import dataset_leakage

        extract = None
        if features:
            from synthgap.stats.features import checkpoint_backbone, image_features

            extract = image_features(checkpoint_backbone(features))
        for s, root, fmt in zip(stats[1:], roots[1:], formats[1:]):
            found = dataset_leakage(roots[0], root, pool_format=formats[0], test_format=fmt, features=extract,
                                    pool_name=stats[0]["name"])
            doc["gap"][s["name"]]["leakage"] = [r.to_dict() for r in found]
    if plots:
        from synthgap.stats import plots as P

        storage.write_bytes(storage.join(out, "class_counts.png"), P.class_counts_png(stats))
        storage.write_bytes(storage.join(out, "center_heatmap.png"), P.heatmaps_png(stats))
        for key in BINS:
            storage.write_bytes(storage.join(out, f"{key}.png"), P.histogram_png(stats, key))
    storage.write_json(storage.join(out, "stats.json"), doc)
    return doc
