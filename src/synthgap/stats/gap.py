"""Numeric domain-gap summary between two datasets' statistics, computed on the shared histogram bins.

Per histogram statistic: the 1-Wasserstein distance (in the statistic's own units: the area between the
two CDFs over the bins) and the total-variation distance (half the L1 distance between normalised
histograms, 0 = identical, 1 = disjoint). Class frequencies and the box-centre heatmap get the
total-variation distance. Being binned, W1 is exact up to the bin width.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def _normalise(counts: np.ndarray) -> np.ndarray | None:
    counts = np.asarray(counts, np.float64).reshape(-1)
    total = counts.sum()
    return counts / total if total > 0 else None


def total_variation(a: np.ndarray, b: np.ndarray) -> float | None:
    """0.5 * sum |p - q| of two count vectors over the same bins; None when either is empty."""
    p, q = _normalise(a), _normalise(b)
    if p is None or q is None:
        return None
    return float(0.5 * np.abs(p - q).sum())


def wasserstein_binned(a: np.ndarray, b: np.ndarray, edges: np.ndarray) -> float | None:
    """1-Wasserstein distance of two histograms over ``edges``: sum |CDF_a - CDF_b| * bin width."""
    p, q = _normalise(a), _normalise(b)
    if p is None or q is None:
        return None
    widths = np.diff(np.asarray(edges, np.float64))
    return float((np.abs(np.cumsum(p) - np.cumsum(q)) * widths).sum())


def gap_summary(reference: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """Distances from ``reference`` to ``other`` (both `DatasetStats.to_dict()` outputs)."""
    out: dict[str, Any] = {}
    for key, ref in reference["histograms"].items():
        oth = other["histograms"][key]
        out[key] = {"wasserstein": wasserstein_binned(ref["counts"], oth["counts"], np.asarray(ref["edges"])),
                    "total_variation": total_variation(ref["counts"], oth["counts"]),
                    "mean_reference": ref["mean"], "mean_other": oth["mean"]}
    names = sorted(set(reference["class_counts"]) | set(other["class_counts"]))
    a = np.array([reference["class_counts"].get(n, 0) for n in names])
    b = np.array([other["class_counts"].get(n, 0) for n in names])
    out["class_distribution"] = {
        "total_variation": total_variation(a, b),
        "classes_only_in_reference": [n for n, x, y in zip(names, a, b) if x > 0 and y == 0],
        "classes_only_in_other": [n for n, x, y in zip(names, a, b) if y > 0 and x == 0]}
    out["center_heatmap"] = {"total_variation": total_variation(np.asarray(reference["center_heatmap"]["counts"]),
                                                                np.asarray(other["center_heatmap"]["counts"]))}
    return out
