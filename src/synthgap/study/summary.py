"""The study's summary, typed: one `CellRow` per cell (mean +/- std over seeds of its target and in-domain
metrics, transfer ratio, the "did it learn" flag), one `Comparison` per real-data budget (real only vs
synthetic then real on the same subset, paired by seed), the feature distance beside the AP gap
(`FeatureGap`), and the conclusions in words (`synthgap.study.text`; `synthgap.study.runner.summarize`
puts it all together).

``summary.json`` is `StudySummary.to_dict()` with a ``schema_version``; `StudySummary.from_dict` also reads
the summaries written before it (schema 1: rows keyed by display strings such as ``"coco AP50"``), so the
report and ``format_summary`` work on old study folders. A metric is a ``(protocol, key)`` pair, e.g.
``("coco", "AP50")``; in JSON, metrics nest as ``{protocol: {key: ...}}`` like a cell's ``metrics.json``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from synthgap.io import storage
from synthgap.study.config import StudyConfig, cell_dir, cell_kind, fraction_tag, is_finished
from synthgap.study.intervals import (ImageSeedBootstrap, MetricStat, PairedDifference, mean_std, paired_difference,
                                      seed_image_bootstrap)

log = logging.getLogger(__name__)

Metric = tuple[str, str]  # (protocol, key): ("coco", "AP50"), ("unity", "mAP")

SCHEMA_VERSION = 2
TARGET_METRICS: tuple[Metric, ...] = (("coco", "AP"), ("coco", "AP50"), ("coco", "AR100"), ("unity", "mAP"),
                                      ("unity", "mAPIOU50"), ("unity", "mAR"))
IN_DOMAIN_METRICS: tuple[Metric, ...] = (("coco", "AP"), ("coco", "AP50"))
HEADLINE: Metric = ("coco", "AP50")  # the in-domain floor, the transfer ratio, the comparison plot, the conclusions
BOOTSTRAP_METRICS: tuple[Metric, ...] = (("coco", "AP50"), ("coco", "AP"))  # the comparison table's rows
NOT_LEARNED = "did not learn in its own domain: this number says nothing about the dataset; train longer"
CI_METHOD = ("95 % paired t-interval over seeds: mean of the per-seed differences (with minus without synthetic "
             "pretraining, same seed and subset) +/- t(0.975, n-1) * sd / sqrt(n); with 2 seeds t = 12.7, "
             "so the interval is very wide: run more seeds to narrow it")


def metric_name(metric: Metric) -> str:
    """``"coco AP50"``: a metric as the tables and the summary text name it."""
    return f"{metric[0]} {metric[1]}"


def metric_label(metric: Metric) -> str:
    """``"COCO AP50"``, ``"datasetinsights mAP"``: a metric in a sentence."""
    return f"{ {'coco': 'COCO', 'unity': 'datasetinsights'}.get(metric[0], metric[0])} {metric[1]}"


def short_target_name(target_name: str) -> str:
    """The name of the target domain in arm labels: ``"target (procedural stand-in)"`` -> ``"target"``."""
    return target_name.split(" (", 1)[0]


def _nest(values: dict[Metric, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for (protocol, key), v in values.items():
        out.setdefault(protocol, {})[key] = v.to_dict() if hasattr(v, "to_dict") else v
    return out


def _unnest(raw: dict[str, dict[str, Any]] | None, build) -> dict[Metric, Any]:
    return {(protocol, key): build(v) for protocol, by_key in (raw or {}).items() for key, v in by_key.items()}


def _v1_metric(column: str) -> Metric:
    """A schema-1 column name ("coco AP50") as a metric (only old summary.json files are parsed so)."""
    protocol, key = column.split(" ", 1)
    return protocol, key


@dataclass(frozen=True)
class CellRow:
    """One cell over its finished seeds: ``target`` metrics (on the target test split) and ``in_domain``
    metrics (held out of its own training domain) as mean +/- std, the transfer ratio (target / in-domain
    headline metric, per seed then averaged), ``learned`` (in-domain headline >= the floor for every seed;
    None: not measured) and the warning shown wherever its numbers appear."""

    name: str
    kind: str
    fraction: Optional[float]
    seeds: list[int]
    train_images: Optional[int] = None
    target: dict[Metric, MetricStat] = field(default_factory=dict)
    in_domain: dict[Metric, MetricStat] = field(default_factory=dict)
    transfer_ratio: Optional[MetricStat] = None
    learned: Optional[bool] = None
    warning: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "fraction": self.fraction, "seeds": list(self.seeds),
                "train_images": self.train_images, "target": _nest(self.target), "in_domain": _nest(self.in_domain),
                "transfer_ratio": None if self.transfer_ratio is None else self.transfer_ratio.to_dict(),
                "learned": self.learned, "warning": self.warning}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CellRow":
        return cls(name=raw["name"], kind=raw["kind"], fraction=raw.get("fraction"), seeds=list(raw.get("seeds") or []),
                   train_images=raw.get("train_images"), target=_unnest(raw.get("target"), MetricStat.from_dict),
                   in_domain=_unnest(raw.get("in_domain"), MetricStat.from_dict),
                   transfer_ratio=MetricStat.from_dict(raw.get("transfer_ratio")), learned=raw.get("learned"),
                   warning=raw.get("warning"))

    @classmethod
    def from_v1(cls, raw: dict[str, Any]) -> "CellRow":
        target, own = {}, {}
        for key, value in raw.items():
            if isinstance(value, dict) and "mean" in value and key != "transfer ratio":
                if key.startswith("in-domain "):
                    own[_v1_metric(key[len("in-domain "):])] = MetricStat.from_dict(value)
                else:
                    target[_v1_metric(key)] = MetricStat.from_dict(value)
        seeds = raw.get("seed_list") or list(range(int(raw.get("seeds", 1))))  # the seed numbers were always there
        return cls(name=raw["name"], kind=raw.get("kind", raw["name"].split("-")[0]), fraction=raw.get("fraction"),
                   seeds=list(seeds), train_images=raw.get("train_images"), target=target, in_domain=own,
                   transfer_ratio=MetricStat.from_dict(raw.get("transfer ratio")), learned=raw.get("learned"),
                   warning=raw.get("warning"))


@dataclass(frozen=True)
class MetricComparison:
    """One metric at one budget: both arms over the paired seeds, the paired t-interval of their difference
    over seeds, and (schema 2, when predictions were saved) the bootstrap over seeds and test images."""

    real: MetricStat
    finetune: MetricStat
    difference: PairedDifference
    bootstrap: Optional[ImageSeedBootstrap] = None

    def to_dict(self) -> dict[str, Any]:
        return {"real": self.real.to_dict(), "finetune": self.finetune.to_dict(),
                "difference": self.difference.to_dict(),
                "bootstrap": None if self.bootstrap is None else self.bootstrap.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "MetricComparison":
        return cls(real=MetricStat.from_dict(raw["real"]), finetune=MetricStat.from_dict(raw["finetune"]),
                   difference=PairedDifference.from_dict(raw["difference"]),
                   bootstrap=ImageSeedBootstrap.from_dict(raw.get("bootstrap")))


@dataclass(frozen=True)
class Comparison:
    """One real-data budget: ``real_cell`` (from scratch) vs ``finetune_cell`` (from the synthetic model of
    the same seed) on the same subset, over the seeds both finished; ``warning`` when either did not learn."""

    fraction: float
    real_cell: str
    finetune_cell: str
    seeds: list[int]
    train_images: Optional[int]
    metrics: dict[Metric, MetricComparison]
    warning: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "real_cell": self.real_cell, "finetune_cell": self.finetune_cell,
                "seeds": list(self.seeds), "train_images": self.train_images, "metrics": _nest(self.metrics),
                "warning": self.warning}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Comparison":
        return cls(fraction=raw["fraction"], real_cell=raw["real_cell"], finetune_cell=raw["finetune_cell"],
                   seeds=list(raw["seeds"]), train_images=raw.get("train_images"),
                   metrics=_unnest(raw.get("metrics"), MetricComparison.from_dict), warning=raw.get("warning"))

    @classmethod
    def from_v1(cls, raw: dict[str, Any]) -> "Comparison":
        return replace(cls.from_dict({**raw, "metrics": {}}), metrics={
            _v1_metric(col): MetricComparison.from_dict(m) for col, m in (raw.get("metrics") or {}).items()})


@dataclass(frozen=True)
class FeatureGapRow:
    """One dataset pair of the data statistics: Fréchet distances (``image``; ``per_class_mean`` over object
    crops per class; squared feature units) and, on the pair whose real side is the test data, the synthetic
    model's ``in_domain`` and ``target`` headline metric, ``ap_gap`` (in-domain minus target) and
    ``transfer_ratio`` (None on the other pairs: the model is scored nowhere else)."""

    pair: str
    reference: str
    dataset: str
    images: Optional[list[int]] = None
    image: Optional[float] = None
    per_class_mean: Optional[float] = None
    in_domain: Optional[float] = None
    target: Optional[float] = None
    ap_gap: Optional[float] = None
    transfer_ratio: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "FeatureGapRow":
        return cls(**raw)


@dataclass(frozen=True)
class FeatureGap:
    """The feature distance beside the AP gap, measured with the synthetic model of ``seed``."""

    model: str
    seed: int
    backbone: Optional[str]
    metric: Metric
    learned: Optional[bool]
    rows: list[FeatureGapRow]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "seed": self.seed, "backbone": self.backbone, "metric": list(self.metric),
                "learned": self.learned, "rows": [r.to_dict() for r in self.rows], "note": self.note}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "FeatureGap | None":
        """Schema 2, or schema 1 (``metric`` "coco AP50", rows keyed "in-domain coco AP50", "AP gap", ...)."""
        if not raw:
            return None
        if isinstance(raw.get("metric"), list):
            metric = (raw["metric"][0], raw["metric"][1])
            rows = [FeatureGapRow.from_dict(r) for r in raw.get("rows") or []]
        else:
            name = raw.get("metric", "coco AP50")
            metric = _v1_metric(name)
            rows = [FeatureGapRow(pair=r["pair"], reference=r["reference"], dataset=r["dataset"],
                                  images=r.get("images"), image=r.get("image"), per_class_mean=r.get("per_class_mean"),
                                  in_domain=r.get(f"in-domain {name}"), target=r.get(name), ap_gap=r.get("AP gap"),
                                  transfer_ratio=r.get("transfer ratio")) for r in raw.get("rows") or []]
        return cls(model=raw["model"], seed=raw["seed"], backbone=raw.get("backbone"), metric=metric,
                   learned=raw.get("learned"), rows=rows, note=raw.get("note", ""))


@dataclass(frozen=True)
class StudySummary:
    """The summary.json document, typed. ``target_name`` names the target domain in text and figures
    ("real", or the demo's "target (procedural stand-in)")."""

    rows: list[CellRow]
    comparison: list[Comparison]
    headline: Metric = HEADLINE
    target_metrics: list[Metric] = field(default_factory=lambda: list(TARGET_METRICS))
    in_domain_metrics: list[Metric] = field(default_factory=lambda: list(IN_DOMAIN_METRICS))
    in_domain_floor: float = 0.2
    not_learned: str = NOT_LEARNED
    ci_method: str = CI_METHOD
    target_name: str = "real"
    feature_gap: Optional[FeatureGap] = None
    conclusions: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def row(self, name: str) -> CellRow | None:
        return next((r for r in self.rows if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "target_name": self.target_name,
                "headline": list(self.headline), "target_metrics": [list(m) for m in self.target_metrics],
                "in_domain_metrics": [list(m) for m in self.in_domain_metrics],
                "in_domain_floor": self.in_domain_floor, "not_learned": self.not_learned,
                "ci_method": self.ci_method, "rows": [r.to_dict() for r in self.rows],
                "comparison": [c.to_dict() for c in self.comparison],
                "feature_gap": None if self.feature_gap is None else self.feature_gap.to_dict(),
                "conclusions": list(self.conclusions)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "StudySummary":
        """A summary.json document of any schema (1: before ``schema_version``; 2: this one)."""
        version = raw.get("schema_version", 1)
        if version > SCHEMA_VERSION:
            from synthgap.errors import SynthgapError

            raise SynthgapError(f"summary.json schema_version {version} is newer than this synthgap reads "
                                f"({SCHEMA_VERSION}): upgrade synthgap")
        common = dict(in_domain_floor=raw.get("in_domain_floor", 0.2), not_learned=raw.get("not_learned", NOT_LEARNED),
                      ci_method=raw.get("ci_method", ""), target_name=raw.get("target_name", "real"),
                      feature_gap=FeatureGap.from_dict(raw.get("feature_gap")),
                      conclusions=list(raw.get("conclusions") or []))
        if version == 1:
            return cls(rows=[CellRow.from_v1(r) for r in raw.get("rows", [])],
                       comparison=[Comparison.from_v1(c) for c in raw.get("comparison") or []],
                       headline=_v1_metric(raw.get("headline", "coco AP50")),
                       target_metrics=[_v1_metric(c) for c in raw.get("columns", [])],
                       in_domain_metrics=[_v1_metric(c[len("in-domain "):]) for c in raw.get("in_domain_columns", [])],
                       schema_version=1, **common)
        return cls(rows=[CellRow.from_dict(r) for r in raw.get("rows", [])],
                   comparison=[Comparison.from_dict(c) for c in raw.get("comparison") or []],
                   headline=tuple(raw.get("headline", HEADLINE)),
                   target_metrics=[tuple(m) for m in raw.get("target_metrics", TARGET_METRICS)],
                   in_domain_metrics=[tuple(m) for m in raw.get("in_domain_metrics", IN_DOMAIN_METRICS)], **common)


def as_summary(summary: "StudySummary | dict[str, Any]") -> StudySummary:
    """A StudySummary as is, or a summary.json document (any schema) read into one."""
    return summary if isinstance(summary, StudySummary) else StudySummary.from_dict(summary)


def read_summary(path: str) -> StudySummary:
    """``summary.json`` (path or URI) of any schema."""
    return StudySummary.from_dict(storage.read_json(path))


# ---------------------------------------------------------------------------------------------
# from the finished cells


def metric_value(stats: dict | None, metric: Metric) -> float | None:
    """``stats[protocol][key]`` (a cell's ``metrics`` document); None when missing or NaN."""
    value = ((stats or {}).get(metric[0]) or {}).get(metric[1])
    return None if value is None or math.isnan(value) else float(value)


def cell_docs(cfg: StudyConfig, out: str, cell: str) -> dict[int, dict]:
    """seed -> ``metrics.json`` of each finished seed of ``cell``."""
    return {s: storage.read_json(storage.join(cell_dir(out, cell, s), "metrics.json")) for s in cfg.seeds
            if is_finished(out, cell, s)}


def cell_learned(doc: dict, floor: float) -> bool | None:
    """Whether a finished cell learned in its own domain (None: not measured, an older study folder)."""
    own = metric_value((doc.get("in_domain") or {}).get("metrics"), HEADLINE)
    return None if own is None else own >= floor


def cell_row(cfg: StudyConfig, cell: str, docs: dict[int, dict]) -> CellRow:
    """A cell's row from its finished seeds' ``metrics.json`` documents (seed -> document)."""
    kind, fraction = cell_kind(cfg, cell)
    target = {m: stat for m in TARGET_METRICS
              if (stat := mean_std([v for d in docs.values() if (v := metric_value(d["metrics"], m)) is not None]))}
    own = {m: stat for m in IN_DOMAIN_METRICS
           if (stat := mean_std([v for d in docs.values()
                                 if (v := metric_value((d.get("in_domain") or {}).get("metrics"), m)) is not None]))}
    ratios = []
    for d in docs.values():
        mine = metric_value((d.get("in_domain") or {}).get("metrics"), HEADLINE)
        there = metric_value(d["metrics"], HEADLINE)
        if mine and there is not None:
            ratios.append(there / mine)
    flags = {s: cell_learned(d, cfg.in_domain_floor) for s, d in docs.items()}
    failed = sorted(s for s, ok in flags.items() if ok is False)
    ok = None if any(v is None for v in flags.values()) else not failed
    warning = None
    if failed:
        which = "every seed" if len(failed) == len(docs) else \
            f"seed{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))} of {len(docs)}"
        warning = f"{NOT_LEARNED} (in-domain {metric_name(HEADLINE)} < {cfg.in_domain_floor:g} for {which})"
    elif ok is None:
        warning = "in-domain performance not measured (a cell finished by an older synthgap: rerun it)"
    return CellRow(name=cell, kind=kind, fraction=fraction, seeds=sorted(docs),
                   train_images=next(iter(docs.values())).get("train_images"), target=target, in_domain=own,
                   transfer_ratio=mean_std(ratios), learned=ok, warning=warning)


def compare(cfg: StudyConfig, docs: dict[str, dict[int, dict]], rows: dict[str, CellRow]) -> list[Comparison]:
    """Per real fraction: real-only vs synthetic-then-real on the same subset, paired by seed."""
    out = []
    for f in cfg.fractions:
        real, ft = f"real-{fraction_tag(f)}", f"finetune-{fraction_tag(f)}"
        seeds = sorted(set(docs.get(real, {})) & set(docs.get(ft, {})))
        if not seeds:
            continue
        metrics = {}
        for m in TARGET_METRICS:
            pairs = [(a, b) for s in seeds if (a := metric_value(docs[real][s]["metrics"], m)) is not None
                     and (b := metric_value(docs[ft][s]["metrics"], m)) is not None]
            if pairs:
                metrics[m] = MetricComparison(real=mean_std([a for a, _ in pairs]),
                                              finetune=mean_std([b for _, b in pairs]),
                                              difference=paired_difference([b - a for a, b in pairs]))
        bad = [c for c in (real, ft) if rows[c].learned is False]
        warning = (f"{' and '.join(bad)} {NOT_LEARNED.split(':')[0]}: this comparison says nothing about "
                   f"the dataset; train longer") if bad else None
        out.append(Comparison(fraction=f, real_cell=real, finetune_cell=ft, seeds=seeds,
                              train_images=docs[real][seeds[0]].get("train_images"), metrics=metrics, warning=warning))
    return out


def _scored_run(folder: str, samples: list, label_map: dict[int, str], test_data: str):
    """The COCO result (with per-image matches) of a cell's saved test predictions, scored as `synthgap
    evaluate` scored them (only the test classes the model knows, `label_alignment.json`); None without
    ``predictions.json`` (a cell finished by an older synthgap)."""
    from synthgap.metrics import evaluate

    preds = storage.join(folder, "predictions.json")
    if not storage.exists(preds):
        return None
    alignment = storage.join(folder, "label_alignment.json")
    if storage.exists(alignment):
        from synthgap.data.labels import keep_classes

        kept = {int(k) for k in storage.read_json(alignment).get("test_classes", label_map)}
        if set(label_map) - kept:
            samples = keep_classes(samples, kept, root=test_data)
            label_map = {k: v for k, v in label_map.items() if k in kept}
    return evaluate(samples, storage.read_json(preds), "coco", label_map=label_map)


def add_bootstrap(cfg: StudyConfig, out: str, comparisons: list[Comparison]) -> list[Comparison]:
    """``comparisons`` with the hierarchical bootstrap over seeds and test images (`ImageSeedBootstrap`,
    ``cfg.bootstrap_resamples`` resamples, ``cfg.bootstrap_seed``) of each `BOOTSTRAP_METRICS` difference,
    computed from the cells' ``predictions.json`` against the target test split. A comparison whose cells
    lack predictions, or whose runs were scored on different test images, keeps the t-interval only (logged)."""
    from synthgap.data import open_dataset
    from synthgap.errors import BootstrapError
    from synthgap.study.subsets import real_data

    if not cfg.bootstrap_resamples or not comparisons:
        return comparisons
    test, fmt = real_data(cfg, "test", out)
    ds = open_dataset(test, fmt)
    samples, label_map = list(ds), dict(ds.label_map)
    done = []
    for c in comparisons:
        runs = {(cell, s): _scored_run(cell_dir(out, cell, s), samples, label_map, test)
                for s in c.seeds for cell in (c.real_cell, c.finetune_cell)}
        missing = [f"{cell} seed {s}" for (cell, s), r in runs.items() if r is None]
        if missing:
            log.info("%s vs %s: no bootstrap (no predictions.json in %s)", c.real_cell, c.finetune_cell,
                     ", ".join(missing))
            done.append(c)
            continue
        pairs = [(runs[(c.real_cell, s)], runs[(c.finetune_cell, s)]) for s in c.seeds]
        metrics = dict(c.metrics)
        for m in BOOTSTRAP_METRICS:
            if m in metrics:
                try:
                    boot = seed_image_bootstrap(pairs, m[1], cfg.bootstrap_resamples, cfg.bootstrap_seed)
                except BootstrapError as e:
                    log.warning("%s vs %s: no bootstrap of %s: %s", c.real_cell, c.finetune_cell, metric_name(m), e)
                    continue
                metrics[m] = replace(metrics[m], bootstrap=boot)
        done.append(replace(c, metrics=metrics))
    return done


def target_test_name(cfg: StudyConfig) -> str:
    """The target test data's name in the data statistics (every cell's AP is measured on it): "real test"."""
    return f"{short_target_name(cfg.target_name)} test"


def feature_gap_summary(cfg: StudyConfig, out: str, stats: dict[str, Any] | None) -> FeatureGap | None:
    """The feature distance beside the AP gap (summary.json ``feature_gap``): per dataset pair of the data
    statistics (synthetic -> each real dataset), the Fréchet distances measured with the synthetic model of
    ``seeds[0]`` (`data_stats`), and that same model's in-domain and target COCO AP50, their difference and
    transfer ratio (only on the pair whose real side is the test data: the model is scored nowhere else).
    None when the statistics hold no feature distance."""
    gaps = {name: g["features"] for name, g in ((stats or {}).get("gap") or {}).items()
            if isinstance(g.get("features"), dict)}
    if not gaps:
        return None
    seed = cfg.seeds[0]
    doc = cell_docs(cfg, out, "synthetic").get(seed) or {}
    target = metric_value(doc.get("metrics"), HEADLINE)
    own = metric_value((doc.get("in_domain") or {}).get("metrics"), HEADLINE)
    ok = cell_learned(doc, cfg.in_domain_floor) if doc else None
    rows = []
    for name, f in gaps.items():
        scored = name == target_test_name(cfg)
        rows.append(FeatureGapRow(
            pair=f"{stats['reference']} -> {name}", reference=stats["reference"], dataset=name,
            images=f.get("images"), image=f.get("image"), per_class_mean=f.get("per_class_mean"),
            in_domain=own if scored else None, target=target if scored else None,
            ap_gap=own - target if scored and own is not None and target is not None else None,
            transfer_ratio=target / own if scored and own and target is not None else None))
    return FeatureGap(
        model=f"synthetic seed{seed}", seed=seed, backbone=next(iter(gaps.values())).get("backbone"),
        metric=HEADLINE, learned=ok, rows=rows,
        note=("Fréchet distance between Gaussians fitted to the synthetic model's backbone features (whole "
              "images; object crops per class, averaged over classes); squared feature units, 0 = same "
              "distribution, comparable only for one model. AP gap = in-domain minus target "
              f"{metric_name(HEADLINE)}, same model. One study is one point: compare several synthetic datasets to "
              "see whether the distance predicts the gap."))
