"""The study's statistics: mean and sample standard deviation of a metric over seeds, the 95 % paired
t-interval of the per-seed differences between the two arms of a comparison (same seed, same real subset),
and the hierarchical bootstrap of that difference over seeds and test images.

The t-interval sees only seed-to-seed variation: every seed is scored on the same test images, so the
test-image sampling noise is not in it. The bootstrap (`synthgap.metrics.bootstrap.hierarchical_difference`,
from the cells' saved test predictions and per-image matches) resamples the seeds, then the test images
shared by all seeds, paired by seed and image, so it holds both; it also splits the spread into its seed
and test-image parts. `synthgap.study.summary` keeps both intervals side by side. Values are metric units
(COCO AP50 in [0, 1]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricStat:
    """One metric over seeds: mean, sample standard deviation (None for one seed) and the values, in seed order."""

    mean: float
    std: float | None
    values: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "values": list(self.values)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "MetricStat | None":
        if not raw:
            return None
        return cls(mean=raw["mean"], std=raw.get("std"), values=list(raw.get("values") or []))


def mean_std(values: list[float]) -> MetricStat | None:
    """Mean and sample std (n - 1 in the denominator; None for one value) of ``values``; None for no values."""
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return MetricStat(mean=mean, std=std, values=list(values))


def t_quantile_975(df: int) -> float:
    """Student's t 0.975 quantile (the 95 % two-sided interval's factor) for ``df`` >= 1 degrees of freedom."""
    from scipy import stats

    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return float(stats.t.ppf(0.975, df))


@dataclass(frozen=True)
class PairedDifference:
    """Per-seed differences (synthetic-then-real minus real-only): mean, sample std, values, ``n`` seeds and
    the 95 % paired t-interval ``ci`` = mean +/- t(0.975, n - 1) * std / sqrt(n) (None for one seed)."""

    mean: float
    std: float | None
    values: list[float]
    n: int
    ci: tuple[float, float] | None

    @property
    def excludes_zero(self) -> bool:
        return self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "values": list(self.values), "n": self.n,
                "ci": None if self.ci is None else list(self.ci)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "PairedDifference":
        ci = raw.get("ci")
        values = list(raw.get("values") or [])
        return cls(mean=raw["mean"], std=raw.get("std"), values=values, n=int(raw.get("n", len(values))),
                   ci=None if ci is None else (float(ci[0]), float(ci[1])))


def paired_difference(differences: list[float]) -> PairedDifference | None:
    """Mean, sample std and the 95 % paired t-interval of per-seed differences (``ci`` None for one seed)."""
    stat = mean_std(differences)
    if stat is None:
        return None
    n = len(differences)
    half = t_quantile_975(n - 1) * stat.std / math.sqrt(n) if n > 1 else None
    return PairedDifference(mean=stat.mean, std=stat.std, values=stat.values, n=n,
                            ci=None if half is None else (stat.mean - half, stat.mean + half))


@dataclass(frozen=True)
class ImageSeedBootstrap:
    """The hierarchical bootstrap of a comparison's difference (synthetic then real minus real only) over
    seeds and test images: seeds resampled, then one draw of the test images shared by every seed, paired by
    seed and image (`synthgap.metrics.bootstrap.hierarchical_difference`).

    ``mean``: the difference averaged over seeds, on the full test set; ``ci``: its 95 % percentile
    interval; ``p_positive``: the share of resamples with a difference > 0. ``seed_sd``: one seed's
    standard deviation of the difference (None with one seed); ``image_sd``: the standard deviation due to
    the test images at ``images`` images (seeds fixed). ``dominant``: "seeds" when seed_sd^2 / seeds >
    image_sd^2, else "test images" (None when unknown). ``seeds_needed`` / ``images_needed``: roughly how
    many seeds, or test images, make 1.96 x the standard error smaller than the observed difference, each
    counting the other source as zero (`synthgap.metrics.bootstrap.units_needed`; None: unknown, or a zero
    difference). ``resamples`` and ``seed``: the bootstrap's B and random seed."""

    metric: str
    mean: float
    ci: tuple[float, float]
    p_positive: float
    seed_sd: float | None
    image_sd: float | None
    dominant: str | None
    seeds: int
    images: int
    seeds_needed: int | None
    images_needed: int | None
    resamples: int
    seed: int

    @property
    def excludes_zero(self) -> bool:
        return self.ci[0] > 0 or self.ci[1] < 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ci": list(self.ci)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "ImageSeedBootstrap | None":
        if not raw:
            return None
        return cls(**{**raw, "ci": (float(raw["ci"][0]), float(raw["ci"][1]))})


def seed_image_bootstrap(pairs: list, metric: str = "AP50", resamples: int = 1000,
                         seed: int = 0) -> ImageSeedBootstrap | None:
    """The hierarchical bootstrap of ``metric`` (a COCO stat name) over ``pairs`` = [(real-only result,
    synthetic-then-real result) per seed], `synthgap.metrics.evaluate` COCO results with matches on the same
    test images. None when the metric is undefined on the test set (e.g. COCO's -1: no box in that range)."""
    from synthgap.metrics.bootstrap import hierarchical_difference

    h = hierarchical_difference(pairs, metric, resamples=resamples, seed=seed)
    if h.mean is None or h.low is None:
        return None
    return ImageSeedBootstrap(metric=metric, mean=h.mean, ci=(h.low, h.high), p_positive=h.p_positive,
                              seed_sd=h.seed_sd, image_sd=h.image_sd, dominant=h.dominant, seeds=h.seeds,
                              images=h.images, seeds_needed=h.seeds_needed, images_needed=h.images_needed,
                              resamples=h.resamples, seed=h.seed)
