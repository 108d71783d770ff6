"""The dataset-evaluation study: how much is a synthetic dataset worth for a detector of real images?

Cells (each repeated over ``seeds``), all evaluated on the real test split with both protocols:

    synthetic           train on the synthetic dataset
    real                train on the real training split
    finetune-<pct>      fine-tune the synthetic model (same seed) on the first <pct> % of the real
                        training split (a fixed random order, so 10 % is inside 50 %; the seed's 76 / 380 / 760)

Layout of ``out``: ``cells/<cell>/seed<k>/`` holds ``checkpoints/``, ``tb/``, what `synthgap evaluate
--output` writes (``predictions.json``, ``metrics_<protocol>.json``, ``per_class_<protocol>.txt``), a
``run.json`` for the report, and ``metrics.json``, written atomically LAST: a cell is finished when its
``metrics.json`` exists, and a rerun skips finished cells (an unfinished one resumes from its last
checkpoint). Real subsets are COCO files referencing the original images (``subsets/``). The study ends
with ``summary.json`` (mean +/- std over seeds) and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import yaml

from synthgap import storage
from synthgap.config import Config, ConfigError, _build, apply_overrides, load_config

log = logging.getLogger("synthgap.study")

CELL_KINDS = ("synthetic", "real", "finetune")
SUMMARY_COLUMNS = (("coco", "AP"), ("coco", "AP50"), ("coco", "AR100"), ("unity", "mAP"), ("unity", "mAPIOU50"),
                   ("unity", "mAR"))


@dataclass
class StudyData:
    """Dataset paths/URIs (any format `open_dataset` reads); ``*_format`` forces a reader. ``real_*_split``
    names a split of a UnityGroceries-Real folder (e.g. ``train`` / ``test``; then real_train and real_test
    may be the same folder): the split is written once as a COCO file under ``OUT/subsets/``."""

    synthetic: Optional[str] = None
    real_train: Optional[str] = None
    real_test: Optional[str] = None
    synthetic_format: Optional[str] = None
    real_format: Optional[str] = None
    real_train_split: Optional[str] = None
    real_test_split: Optional[str] = None


@dataclass
class StudyConfig:
    """What to run. Training settings come from ``train_config`` (a `synthgap.config` name or path)
    plus dotted ``--override``-style strings: ``overrides`` for every cell, then the cell kind's own."""

    name: str = "synthgap study"
    datasets: StudyData = field(default_factory=StudyData)
    cells: list[Literal["synthetic", "real", "finetune"]] = field(default_factory=lambda: list(CELL_KINDS))
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0])
    seeds: list[int] = field(default_factory=lambda: [47])
    subset_seed: int = 0                    # the fixed random order of the real training split
    train_config: str = "cpu_small"
    overrides: list[str] = field(default_factory=list)
    synthetic_overrides: list[str] = field(default_factory=list)
    real_overrides: list[str] = field(default_factory=list)
    finetune_overrides: list[str] = field(default_factory=lambda: ["optimizer.lr=2.0e-5"])  # the seed's fine-tune lr
    gallery_images: int = 4                 # report: test images drawn per run
    data_stats: bool = True                 # `synthgap stats` of synthetic vs real train (and test) in the report

    def validate(self, source: str = "<study>") -> "StudyConfig":
        """Raise ConfigError naming the key when something cannot run."""
        d = self.datasets
        if not self.cells:
            raise ConfigError(f"{source}: cells is empty (choose from {', '.join(CELL_KINDS)})")
        if not d.real_test:
            raise ConfigError(f"{source}: datasets.real_test is required (every cell is evaluated on it)")
        if ("synthetic" in self.cells or "finetune" in self.cells) and not d.synthetic:
            raise ConfigError(f"{source}: datasets.synthetic is required by the synthetic and finetune cells")
        if ("real" in self.cells or "finetune" in self.cells) and not d.real_train:
            raise ConfigError(f"{source}: datasets.real_train is required by the real and finetune cells")
        if "finetune" in self.cells and not self.fractions:
            raise ConfigError(f"{source}: fractions is empty but the finetune cell is on")
        for i, f in enumerate(self.fractions):
            if not 0.0 < f <= 1.0:
                raise ConfigError(f"{source}: fractions[{i}] must be in (0, 1], got {f}")
        if len({fraction_tag(f) for f in self.fractions}) != len(self.fractions):
            raise ConfigError(f"{source}: fractions has duplicates (as percentages): {self.fractions}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{source}: seeds must be a non-empty list of distinct integers, got {self.seeds}")
        if self.gallery_images < 0:
            raise ConfigError(f"{source}: gallery_images must be >= 0, got {self.gallery_images}")
        for kind in CELL_KINDS:  # fail now, not after hours of training
            self.train_cfg(kind, self.seeds[0], source)
        return self

    def train_cfg(self, kind: str, seed: int, source: str = "<study>") -> Config:
        """The training config of one cell kind and seed."""
        extra = {"synthetic": self.synthetic_overrides, "real": self.real_overrides,
                 "finetune": self.finetune_overrides}[kind]
        try:
            cfg = load_config(self.train_config, [*self.overrides, *extra])
            return apply_overrides(cfg, [f"train.seed={seed}"])
        except ConfigError as e:
            raise ConfigError(f"{source}: {kind} cell: {e}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def study_config_from_dict(raw: dict, source: str = "<dict>") -> StudyConfig:
    """Validate a mapping into a StudyConfig (unknown keys and wrong types name the dotted key)."""
    return _build(StudyConfig, raw, "", source).validate(source)


def load_study_config(source: str) -> StudyConfig:
    """Read a study YAML (path or URI)."""
    if not storage.exists(source):
        raise ConfigError(f"{source}: study config not found")
    try:
        raw = yaml.safe_load(storage.read_text(source))
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({e})") from None
    return study_config_from_dict(raw or {}, source)


def fraction_tag(fraction: float) -> str:
    """0.1 -> "10", 0.05 -> "5", 0.125 -> "12.5" (the percentage in cell names)."""
    pct = round(fraction * 100, 6)
    return str(int(pct)) if pct == int(pct) else f"{pct:g}"


def cell_names(cfg: StudyConfig) -> list[str]:
    """Cell names in run order (the synthetic model comes before the fine-tunes that start from it)."""
    names = [k for k in ("synthetic", "real") if k in cfg.cells]
    if "finetune" in cfg.cells:
        names += [f"finetune-{fraction_tag(f)}" for f in cfg.fractions]
    return names


def cell_dir(out: str, cell: str, seed: int) -> str:
    return storage.join(out, "cells", cell, f"seed{seed}")


def is_finished(out: str, cell: str, seed: int) -> bool:
    return storage.exists(storage.join(cell_dir(out, cell, seed), "metrics.json"))


def _open_real(cfg: StudyConfig, root: str, split: str | None):
    from synthgap.data import open_dataset

    return open_dataset(root, cfg.datasets.real_format, **({"split": split} if split else {}))


def _write_coco(ds, indices, path: str) -> str:
    """A COCO file of ``ds[i] for i in indices`` referencing the original images (written atomically)."""
    from synthgap.data.coco import CocoWriter

    writer = CocoWriter(path, ds.label_map)
    for i in indices:
        writer.add(ds[i])
    return writer.close()


def real_subset(cfg: StudyConfig, fraction: float, out: str) -> str:
    """A COCO file with the first ``fraction`` of the real training split in a fixed random order
    (``subset_seed``), referencing the original images; written once and reused."""
    import numpy as np

    path = storage.join(out, "subsets", f"real_train_{fraction_tag(fraction)}pct", "annotations.json")
    if storage.exists(path):
        return path
    ds = _open_real(cfg, cfg.datasets.real_train, cfg.datasets.real_train_split)
    order = np.random.default_rng(cfg.subset_seed).permutation(len(ds))
    n = max(1, int(round(fraction * len(ds))))
    _write_coco(ds, sorted(order[:n].tolist()), path)
    log.info("real subset %s %%: %d of %d images -> %s", fraction_tag(fraction), n, len(ds), path)
    return path


def real_data(cfg: StudyConfig, which: str, out: str) -> tuple[str, str | None]:
    """(path, format) of the real ``train`` or ``test`` data: the configured path, or, when a split is
    named, that split written as a COCO file under ``out/subsets``."""
    root = cfg.datasets.real_train if which == "train" else cfg.datasets.real_test
    split = cfg.datasets.real_train_split if which == "train" else cfg.datasets.real_test_split
    if not split:
        return root, cfg.datasets.real_format
    path = storage.join(out, "subsets", f"real_{which}_split_{split}", "annotations.json")
    if not storage.exists(path):
        ds = _open_real(cfg, root, split)
        _write_coco(ds, range(len(ds)), path)
        log.info("real %s split %r: %d images -> %s", which, split, len(ds), path)
    return path, "coco"


def run_cell(cfg: StudyConfig, out: str, cell: str, seed: int, progress: bool = False) -> dict[str, Any]:
    """Train (or resume) and evaluate one cell; returns its metrics.json document."""
    from synthgap.checkpoint import checkpoint_name
    from synthgap.train import train

    folder = cell_dir(out, cell, seed)
    kind = "finetune" if cell.startswith("finetune-") else cell
    tcfg = cfg.train_cfg(kind, seed)
    ckpt_dir = storage.join(folder, "checkpoints")
    tb_dir = storage.join(folder, "tb")
    last = storage.join(ckpt_dir, checkpoint_name("last"))
    start = None
    if kind == "synthetic":
        data, data_format = cfg.datasets.synthetic, cfg.datasets.synthetic_format
    elif kind == "real":
        data, data_format = real_data(cfg, "train", out)
    else:
        fraction = next(f for f in cfg.fractions if f"finetune-{fraction_tag(f)}" == cell)
        data, data_format = real_subset(cfg, fraction, out), "coco"
        start = storage.join(cell_dir(out, "synthetic", seed), "checkpoints", checkpoint_name("last"))
        if not storage.exists(start) and not storage.exists(last):
            raise FileNotFoundError(f"{cell} seed {seed} starts from {start}, which does not exist "
                                    f"(the synthetic cell must run first; is 'synthetic' in cells?)")
    tcfg.data.format = data_format
    resume = storage.exists(last)
    t0 = time.perf_counter()
    log.info("study cell %s seed %d: %s on %s", cell, seed, "resuming" if resume else "training", data)
    summary = train(tcfg, train_data=data, checkpoint_dir=ckpt_dir, tb_log_dir=tb_dir,
                    checkpoint_file=None if resume else start, resume=resume, no_val=True, progress=progress)
    test, test_format = real_data(cfg, "test", out)
    from synthgap.evaluate import evaluate_checkpoint

    done = evaluate_checkpoint(last, test, folder, config=tcfg, test_format=test_format, progress=progress)
    stats = {protocol: {k: float(v) for k, v in result.stats.items()} for protocol, result in done["results"].items()}
    storage.write_json(storage.join(folder, "run.json"), {
        "name": f"{cell} seed{seed}", "cell": cell, "seed": seed, "train_data": data, "test_data": test,
        "format": test_format, "tb_log_dir": "tb", "checkpoint": last, "start_from": start})
    doc = {"cell": cell, "seed": seed, "train_data": data, "test_data": test, "metrics": stats,
           "train": {k: summary.get(k) for k in ("epochs", "steps", "images_per_s")},
           "seconds": round(time.perf_counter() - t0, 1)}
    storage.write_json(storage.join(folder, "metrics.json"), doc)  # last: marks the cell finished
    return doc


def summarize(cfg: StudyConfig, out: str) -> dict[str, Any]:
    """Mean and (sample) std over seeds of the headline metrics of every finished cell."""
    rows = []
    for cell in cell_names(cfg):
        docs = [storage.read_json(storage.join(cell_dir(out, cell, s), "metrics.json")) for s in cfg.seeds
                if is_finished(out, cell, s)]
        if not docs:
            continue
        row: dict[str, Any] = {"name": cell, "seeds": len(docs)}
        for protocol, key in SUMMARY_COLUMNS:
            values = [d["metrics"].get(protocol, {}).get(key) for d in docs]
            values = [v for v in values if v is not None and not math.isnan(v)]
            if not values:
                continue
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
            row[f"{protocol} {key}"] = {"mean": mean, "std": std, "values": values}
        rows.append(row)
    return {"columns": [f"{p} {k}" for p, k in SUMMARY_COLUMNS], "rows": rows}


def run_study(config: StudyConfig | str, out: str, progress: bool = False) -> str:
    """Run every unfinished cell x seed, then write summary.json and report.html; returns the report path."""
    from synthgap.report import build_report

    cfg = load_study_config(config) if isinstance(config, str) else config.validate()
    # run.json files record data paths that the report resolves later, from any working directory
    out = storage.absolute(out)
    cfg = dataclasses.replace(cfg, datasets=dataclasses.replace(cfg.datasets, **{
        key: storage.absolute(getattr(cfg.datasets, key))
        for key in ("synthetic", "real_train", "real_test") if getattr(cfg.datasets, key)}))
    saved, text = storage.join(out, "study.yaml"), yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if storage.exists(saved) and storage.read_text(saved) != text:
        log.warning("%s: the study config changed since the last run; finished cells are kept as they are "
                    "(delete a cell's metrics.json to redo it)", saved)
    storage.write_text(saved, text)
    for seed in cfg.seeds:
        for cell in cell_names(cfg):
            if is_finished(out, cell, seed):
                log.info("study cell %s seed %d: finished, skipped", cell, seed)
                continue
            run_cell(cfg, out, cell, seed, progress=progress)
    summary = summarize(cfg, out)
    storage.write_json(storage.join(out, "summary.json"), summary)
    stats = data_stats(cfg, out) if cfg.data_stats else None
    runs = [cell_dir(out, c, s) for c in cell_names(cfg) for s in cfg.seeds]
    report = storage.join(out, "report.html")
    build_report(runs, report, title=cfg.name, gallery_images=cfg.gallery_images, summary=summary, stats=stats)
    return report


def data_stats(cfg: StudyConfig, out: str) -> dict[str, Any]:
    """`synthgap stats` of the study's datasets (synthetic first: the gap is measured from it), written
    once to ``out/stats`` and reused on reruns."""
    from synthgap.stats import write_stats

    path = storage.join(out, "stats", "stats.json")
    if storage.exists(path):
        return storage.read_json(path)
    entries = []  # (name, root, format)
    if cfg.datasets.synthetic:
        entries.append(("synthetic", cfg.datasets.synthetic, cfg.datasets.synthetic_format))
    if cfg.datasets.real_train:
        entries.append(("real train", *real_data(cfg, "train", out)))
    entries.append(("real test", *real_data(cfg, "test", out)))
    return write_stats([e[1] for e in entries], storage.join(out, "stats"), names=[e[0] for e in entries],
                       formats=[e[2] for e in entries])
