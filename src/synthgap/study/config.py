"""What a study runs: its typed config (`StudyConfig`, `StudyData`), the YAML loader, and the names and
folders of its cells.

Cells (each repeated over ``seeds``), all evaluated on the target test split with both protocols:

    synthetic           train on the synthetic dataset (less a held-out part, ``synthetic_holdout``)
    real-<pct>          train from scratch on the first <pct> % of the real training pool
    finetune-<pct>      fine-tune the synthetic model (same seed) on the same <pct> % subset

The "real" data are the target domain: real photographs in datasetinsights' study, a procedural stand-in in
the offline demo (``target_name`` says which, and the printed text and the report use it). A cell's folder is
``OUT/cells/<cell>/seed<k>/``; it is finished when its ``metrics.json`` exists (`synthgap.study.runner`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Literal, Optional

import yaml

from synthgap.config import Config, ConfigError, from_dict, load_config
from synthgap.io import storage

CELL_KINDS = ("synthetic", "real", "finetune")


@dataclass
class StudyData:
    """Dataset paths/URIs (any format `open_dataset` reads); ``*_format`` forces a reader. ``real_*_split``
    names a split of a UnityGroceries-Real folder (e.g. ``train`` / ``val`` / ``test``; then the real paths
    may be the same folder): the split is written once as a COCO file under ``OUT/subsets/``. ``real_val``
    (optional) is the real models' in-domain validation data; without it, ``real_holdout`` of the real
    training split is held out for that.

    ``real_group_by`` / ``synthetic_group_by`` keep groups whole in the study's draws (`synthgap.data.splits`'
    spec: ``regex:PATTERN`` on the file name, ``folder``, ``field:NAME`` of the reader's metadata): the real
    validation holdout and the real subsets, and the synthetic holdout, take whole groups (frames of one video,
    one session, one SOLO sequence), so that no group has images on both sides. None: image by image."""

    synthetic: Optional[str] = None
    real_train: Optional[str] = None
    real_test: Optional[str] = None
    real_val: Optional[str] = None
    synthetic_format: Optional[str] = None
    real_format: Optional[str] = None
    real_train_split: Optional[str] = None
    real_test_split: Optional[str] = None
    real_val_split: Optional[str] = None
    real_group_by: Optional[str] = None       # e.g. 'regex:^(IMG_\d+)_' (the frames of one video)
    synthetic_group_by: Optional[str] = None  # e.g. 'field:sequence' (one SOLO sequence)

    def check(self, source: str) -> None:  # which paths are required depends on the cells: StudyConfig.validate
        pass


@dataclass
class StudyConfig:
    """What to run. Training settings come from ``train_config`` (a `synthgap.config` name or path)
    plus dotted ``--override``-style strings: ``overrides`` for every cell, then the cell kind's own."""

    name: str = "synthgap study"
    # what the target domain (the datasets.real_* data) is, in the printed summary and the report: "real" for
    # photographs; the demo's procedural stand-in says so ("target (procedural stand-in)"). The part before
    # " (" names the arms ("target only", "synthetic then target").
    target_name: str = "real"
    datasets: StudyData = field(default_factory=StudyData)
    cells: list[Literal["synthetic", "real", "finetune"]] = field(default_factory=lambda: list(CELL_KINDS))
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0])  # real budgets (real and finetune)
    seeds: list[int] = field(default_factory=lambda: [47])
    # processes that run seeds side by side, torch's threads (the cores) split between them (threads / jobs):
    # small CPU models train faster as 2 one-thread processes than as one two-thread process
    jobs: int = 1
    subset_seed: int = 0                    # the fixed random order of every split and subset
    synthetic_holdout: float = 0.1          # fraction of the synthetic images held out (in-domain test)
    real_holdout: float = 0.1               # fraction of the real training split held out when no real_val
    in_domain_floor: float = 0.2            # COCO AP50 in its own domain below which a cell "did not learn"
    real_steps: int = 0                     # > 0: real and finetune cells train >= this many optimizer steps
    train_config: str = "cpu_small"
    overrides: list[str] = field(default_factory=list)
    synthetic_overrides: list[str] = field(default_factory=list)
    real_overrides: list[str] = field(default_factory=list)
    # datasetinsights' fine-tune learning rate
    finetune_overrides: list[str] = field(default_factory=lambda: ["optimizer.lr=2.0e-5"])
    gallery_images: int = 4                 # report: test images drawn per run, and frames per dataset
    data_stats: bool = True                 # `synthgap stats` of synthetic vs real train (and test) in the report
    feature_images: int = 100               # images per dataset for the feature distance (0: not measured)
    feature_crops_per_class: int = 50       # object crops per class and dataset for the per-class distance
    # the comparison's bootstrap over seeds and test images (summary.json, the conclusions, the report)
    bootstrap_resamples: int = 1000         # resamples (0: no bootstrap, the t-interval over seeds only)
    bootstrap_seed: int = 0                 # the resampling's random seed

    def check(self, source: str) -> None:  # `from_dict` calls it per section; the whole study: `validate`
        pass

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
        for key, split in (("synthetic", None), ("real_train", d.real_train_split)):
            path = getattr(d, key)
            if path and uses(self, key) and same_data(path, split, d.real_test, d.real_test_split):
                raise ConfigError(f"{source}: datasets.real_test is datasets.{key} ({path}"
                                  + (f", split {split!r}" if split else "") + "): every model would be tested on "
                                  "images it was trained on; name a test set the study does not train on (another "
                                  "folder, or a disjoint real_test_split)")
        for key in ("real_group_by", "synthetic_group_by"):
            check_group_by(getattr(d, key), f"{source}: datasets.{key}")
        if ("real" in self.cells or "finetune" in self.cells) and not self.fractions:
            raise ConfigError(f"{source}: fractions is empty but the real or finetune cell is on")
        for i, f in enumerate(self.fractions):
            if not 0.0 < f <= 1.0:
                raise ConfigError(f"{source}: fractions[{i}] must be in (0, 1], got {f}")
        if len({fraction_tag(f) for f in self.fractions}) != len(self.fractions):
            raise ConfigError(f"{source}: fractions has duplicates (as percentages): {self.fractions}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{source}: seeds must be a non-empty list of distinct integers, got {self.seeds}")
        if not self.target_name.strip():
            raise ConfigError(f"{source}: target_name must not be empty (e.g. real)")
        if self.gallery_images < 0:
            raise ConfigError(f"{source}: gallery_images must be >= 0, got {self.gallery_images}")
        for key in ("synthetic_holdout", "real_holdout"):
            if not 0.0 < getattr(self, key) < 1.0:
                raise ConfigError(f"{source}: {key} must be in (0, 1) (the in-domain test needs held-out images), "
                                  f"got {getattr(self, key)}")
        if not 0.0 <= self.in_domain_floor <= 1.0:
            raise ConfigError(f"{source}: in_domain_floor must be in [0, 1] (COCO AP50), got {self.in_domain_floor}")
        if self.real_steps < 0:
            raise ConfigError(f"{source}: real_steps must be >= 0, got {self.real_steps}")
        if self.jobs < 1:
            raise ConfigError(f"{source}: jobs must be >= 1 (processes running seeds side by side), got {self.jobs}")
        for key in ("feature_images", "feature_crops_per_class", "bootstrap_resamples"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{source}: {key} must be >= 0, got {getattr(self, key)}")
        if self.feature_images == 1:
            raise ConfigError(f"{source}: feature_images must be 0 (off) or >= 2 (a covariance needs 2 images)")
        for kind in CELL_KINDS:  # fail now, not after hours of training
            self.train_cfg(kind, self.seeds[0], source)
        return self

    def train_cfg(self, kind: str, seed: int, source: str = "<study>") -> Config:
        """The training config of one cell kind and seed (``train.seed`` = the cell's seed)."""
        extra = {"synthetic": self.synthetic_overrides, "real": self.real_overrides,
                 "finetune": self.finetune_overrides}[kind]
        try:
            cfg = load_config(self.train_config, [*self.overrides, *extra])
        except ConfigError as e:
            raise ConfigError(f"{source}: {kind} cell: {e}") from None
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def study_config_from_dict(raw: dict, source: str = "<dict>") -> StudyConfig:
    """Validate a mapping into a StudyConfig (unknown keys and wrong types name the dotted key)."""
    return from_dict(StudyConfig, raw, source).validate(source)


def load_study_config(source: str) -> StudyConfig:
    """Read a study YAML (path or URI)."""
    if not storage.exists(source):
        raise ConfigError(f"{source}: study config not found")
    try:
        raw = yaml.safe_load(storage.read_text(source))
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({e})") from None
    return study_config_from_dict(raw or {}, source)


def uses(cfg: StudyConfig, key: str) -> bool:
    """Whether the config's cells train on ``datasets.<key>``: ``synthetic`` (the synthetic and finetune
    cells) or ``real_train`` (the real and finetune cells)."""
    kinds = {"synthetic": ("synthetic", "finetune"), "real_train": ("real", "finetune")}[key]
    return bool(getattr(cfg.datasets, key)) and any(k in cfg.cells for k in kinds)


def same_data(a: str, a_split: str | None, b: str, b_split: str | None) -> bool:
    """Whether two dataset paths / URIs and their split names are the same data: local paths compared
    resolved (``..``, symlinks, relative to the working directory), URIs by their text."""
    def resolved(p: str) -> str:
        return os.path.realpath(storage.local_path(p)) if storage.is_local(p) else p.rstrip("/")

    return resolved(a) == resolved(b) and (a_split or None) == (b_split or None)


def check_group_by(spec: str | None, where: str) -> None:
    """Raise ConfigError (prefixed ``where``) when ``spec`` is not a `synthgap.data.splits.group_keys` spec:
    an unknown form, an empty pattern or name, or a regex that does not compile. None is fine (no groups)."""
    if spec is None:
        return
    from synthgap.data.splits import group_keys

    try:
        group_keys([], spec)  # parses the spec (and compiles a regex) before any sample is read
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def fraction_tag(fraction: float) -> str:
    """0.1 -> "10", 0.05 -> "5", 0.125 -> "12.5" (the percentage in cell names)."""
    pct = round(fraction * 100, 6)
    return str(int(pct)) if pct == int(pct) else f"{pct:g}"


def cell_names(cfg: StudyConfig) -> list[str]:
    """Cell names in run order (the synthetic model comes before the fine-tunes that start from it)."""
    names = ["synthetic"] if "synthetic" in cfg.cells else []
    for f in cfg.fractions:
        names += [f"{kind}-{fraction_tag(f)}" for kind in ("real", "finetune") if kind in cfg.cells]
    return names


def cell_kind(cfg: StudyConfig, cell: str) -> tuple[str, float | None]:
    """("synthetic", None), ("real", fraction) or ("finetune", fraction) of a cell name."""
    if cell == "synthetic":
        return "synthetic", None
    kind, _, tag = cell.partition("-")
    fraction = next((f for f in cfg.fractions if fraction_tag(f) == tag), None)
    if kind not in ("real", "finetune") or fraction is None:
        raise ConfigError(f"unknown study cell {cell!r} (cells: {', '.join(cell_names(cfg))})")
    return kind, fraction


def cell_dir(out: str, cell: str, seed: int) -> str:
    """``OUT/cells/<cell>/seed<k>``: one cell x seed's checkpoints, TensorBoard logs, evaluations."""
    return storage.join(out, "cells", cell, f"seed{seed}")


def is_finished(out: str, cell: str, seed: int) -> bool:
    """Whether a cell x seed wrote its ``metrics.json`` (written last)."""
    return storage.exists(storage.join(cell_dir(out, cell, seed), "metrics.json"))
