"""The dataset-evaluation study: how much is a synthetic dataset worth for a detector of real images?

Cells (each repeated over ``seeds``), all evaluated on the real test split with both protocols:

    synthetic           train on the synthetic dataset (less a held-out part, ``synthetic_holdout``)
    real-<pct>          train from scratch on the first <pct> % of the real training pool
    finetune-<pct>      fine-tune the synthetic model (same seed) on the same <pct> % subset

The real training pool is the real training split less a validation part (``datasets.real_val``, or
``real_holdout`` of the split carved out by ``subset_seed``); its subsets come from one fixed random order,
so 10 % is inside 50 % (the seed's 76 / 380 / 760). ``real-<pct>`` against ``finetune-<pct>`` is the seed's
headline comparison: same real images, same seeds, with and without synthetic pretraining.

Every model is also evaluated in its own domain: the synthetic model on the held-out synthetic images,
real and fine-tuned models on the real validation part. A cell whose in-domain COCO AP50 is below
``in_domain_floor`` did not learn, and its target numbers say nothing about the dataset: it is flagged
wherever its numbers appear (summary.json, the CLI, the report).

Layout of ``out``: ``cells/<cell>/seed<k>/`` holds ``checkpoints/``, ``tb/``, what `synthgap evaluate
--output` writes for the target test split (``predictions.json``, ``metrics_<protocol>.json``,
``per_class_<protocol>.txt``), the same for the in-domain data under ``in_domain/``, a ``run.json`` for
the report, and ``metrics.json``, written atomically LAST: a cell is finished when its ``metrics.json``
exists, and a rerun skips finished cells (an unfinished one resumes from its last checkpoint). Splits and
subsets are COCO files referencing the original images (``subsets/``). The study ends with
``summary.json`` (mean +/- std over seeds, in-domain numbers, the per-budget comparison with confidence
intervals, and the conclusions in words), ``summary.txt`` (the same as the CLI prints it) and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import yaml

from synthgap.io import locks, storage
from synthgap.config import Config, ConfigError, apply_overrides, from_dict, load_config
from synthgap.errors import DatasetError, SynthgapError

log = logging.getLogger(__name__)

CELL_KINDS = ("synthetic", "real", "finetune")
SUMMARY_COLUMNS = (("coco", "AP"), ("coco", "AP50"), ("coco", "AR100"), ("unity", "mAP"), ("unity", "mAPIOU50"),
                   ("unity", "mAR"))
IN_DOMAIN_COLUMNS = (("coco", "AP"), ("coco", "AP50"))
HEADLINE = "coco AP50"  # the in-domain floor, the transfer ratio, the comparison plot and the conclusions use it
TEST_DATASET = "real test"  # the real test data's name in the data statistics (every cell's AP is measured on it)
NOT_LEARNED = "did not learn in its own domain: this number says nothing about the dataset; train longer"
CI_METHOD = ("95 % paired t-interval over seeds: mean of the per-seed differences (synthetic-then-real minus "
             "real-only, same seed and real subset) +/- t(0.975, n-1) * sd / sqrt(n); with 2 seeds t = 12.7, "
             "so the interval is very wide: run more seeds to narrow it")


@dataclass
class StudyData:
    """Dataset paths/URIs (any format `open_dataset` reads); ``*_format`` forces a reader. ``real_*_split``
    names a split of a UnityGroceries-Real folder (e.g. ``train`` / ``val`` / ``test``; then the real paths
    may be the same folder): the split is written once as a COCO file under ``OUT/subsets/``. ``real_val``
    (optional) is the real models' in-domain validation data; without it, ``real_holdout`` of the real
    training split is held out for that."""

    synthetic: Optional[str] = None
    real_train: Optional[str] = None
    real_test: Optional[str] = None
    real_val: Optional[str] = None
    synthetic_format: Optional[str] = None
    real_format: Optional[str] = None
    real_train_split: Optional[str] = None
    real_test_split: Optional[str] = None
    real_val_split: Optional[str] = None


@dataclass
class StudyConfig:
    """What to run. Training settings come from ``train_config`` (a `synthgap.config` name or path)
    plus dotted ``--override``-style strings: ``overrides`` for every cell, then the cell kind's own."""

    name: str = "synthgap study"
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
    finetune_overrides: list[str] = field(default_factory=lambda: ["optimizer.lr=2.0e-5"])  # the seed's fine-tune lr
    gallery_images: int = 4                 # report: test images drawn per run, and frames per dataset
    data_stats: bool = True                 # `synthgap stats` of synthetic vs real train (and test) in the report
    feature_images: int = 100               # images per dataset for the feature distance (0: not measured)
    feature_crops_per_class: int = 50       # object crops per class and dataset for the per-class distance

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
        if ("real" in self.cells or "finetune" in self.cells) and not self.fractions:
            raise ConfigError(f"{source}: fractions is empty but the real or finetune cell is on")
        for i, f in enumerate(self.fractions):
            if not 0.0 < f <= 1.0:
                raise ConfigError(f"{source}: fractions[{i}] must be in (0, 1], got {f}")
        if len({fraction_tag(f) for f in self.fractions}) != len(self.fractions):
            raise ConfigError(f"{source}: fractions has duplicates (as percentages): {self.fractions}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{source}: seeds must be a non-empty list of distinct integers, got {self.seeds}")
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
        for key in ("feature_images", "feature_crops_per_class"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{source}: {key} must be >= 0, got {getattr(self, key)}")
        if self.feature_images == 1:
            raise ConfigError(f"{source}: feature_images must be 0 (off) or >= 2 (a covariance needs 2 images)")
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
    return storage.join(out, "cells", cell, f"seed{seed}")


def is_finished(out: str, cell: str, seed: int) -> bool:
    return storage.exists(storage.join(cell_dir(out, cell, seed), "metrics.json"))


# ---------------------------------------------------------------------------------------------
# splits and subsets: COCO files under OUT/subsets referencing the original images, written once


def _write_coco(ds, indices, path: str, source: str | None = None) -> str:
    """A COCO file of ``ds[i] for i in indices`` referencing the original images (written atomically).

    A COCO file has no place for visible pixels: when the dataset at ``source`` has them with the unoccluded
    count (the generator's per-frame table, or in the samples' metadata), they go into the subset's own
    table (``<folder>/generator/frames.subset.jsonl``, keyed by image id, written before the COCO file that
    marks the subset done), so AP by occlusion and the visible-fraction statistics work on the subset too."""
    from synthgap.data.coco import CocoWriter
    from synthgap.stats.accumulate import VisiblePixels, side_table_folder, write_side_table

    writer = CocoWriter(path, ds.label_map)
    visible = VisiblePixels(source) if source else None
    rows = []
    for i in indices:
        sample = ds[i]
        writer.add(sample)
        # only the sources with both counts (the others would re-read every SOLO frame for a fraction-less count)
        if visible is not None and (visible.table or "visible_pixels" in (sample.metadata or {})):
            found = visible(sample)
            if found is not None and found[1] in ("generator", "metadata") and found[0][1] is not None:
                rows.append({"frame": int(sample.image_id), "visible_pixels": found[0][0].tolist(),
                             "full_pixels": found[0][1].tolist()})
    if rows:
        write_side_table(side_table_folder(path), rows)
    return writer.close()


def holdout_split(n: int, fraction: float, seed: int, source: str) -> tuple[list[int], list[int]]:
    """(kept, held out) sorted indices of ``n`` items: the first ``max(1, round(fraction * n))`` of a
    seeded permutation are held out."""
    import numpy as np

    if n < 2:
        raise DatasetError(f"{n} image(s): at least 2 are needed to hold some out for the in-domain test",
                           file=source)
    order = np.random.default_rng(seed).permutation(n).tolist()
    k = min(n - 1, max(1, int(round(fraction * n))))
    return sorted(order[k:]), sorted(order[:k])


def synthetic_split(cfg: StudyConfig, out: str) -> tuple[str, str]:
    """(train, held-out) COCO files of the synthetic dataset: ``synthetic_holdout`` of its images, drawn by
    ``subset_seed``, are held out for the synthetic model's in-domain test and never trained on."""
    from synthgap.data import open_dataset

    train = storage.join(out, "subsets", "synthetic_train", "annotations.json")
    held = storage.join(out, "subsets", "synthetic_holdout", "annotations.json")
    if not (storage.exists(train) and storage.exists(held)):
        ds = open_dataset(cfg.datasets.synthetic, cfg.datasets.synthetic_format)
        keep, hold = holdout_split(len(ds), cfg.synthetic_holdout, cfg.subset_seed, cfg.datasets.synthetic)
        _write_coco(ds, hold, held, cfg.datasets.synthetic)
        _write_coco(ds, keep, train, cfg.datasets.synthetic)
        log.info("synthetic split: %d train, %d held out -> %s", len(keep), len(hold), storage.join(out, "subsets"))
    return train, held


def _open_real(cfg: StudyConfig, root: str, split: str | None):
    from synthgap.data import open_dataset

    return open_dataset(root, cfg.datasets.real_format, **({"split": split} if split else {}))


def real_data(cfg: StudyConfig, which: str, out: str) -> tuple[str, str | None]:
    """(path, format) of the real ``train``, ``val`` or ``test`` data as configured: the path, or, when a
    split is named, that split written as a COCO file under ``out/subsets``."""
    d = cfg.datasets
    root, split = {"train": (d.real_train, d.real_train_split), "val": (d.real_val, d.real_val_split),
                   "test": (d.real_test, d.real_test_split)}[which]
    if not split:
        return root, d.real_format
    path = storage.join(out, "subsets", f"real_{which}_split_{split}", "annotations.json")
    if not storage.exists(path):
        ds = _open_real(cfg, root, split)
        _write_coco(ds, range(len(ds)), path, root)
        log.info("real %s split %r: %d images -> %s", which, split, len(ds), path)
    return path, "coco"


def real_pool_and_val(cfg: StudyConfig, out: str) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
    """((path, format) of the real training pool, (path, format) of the real validation data).

    With ``datasets.real_val`` the pool is the whole real training split; otherwise ``real_holdout`` of
    it (drawn by ``subset_seed``) is the validation part and the rest is the pool."""
    if cfg.datasets.real_val:
        return real_data(cfg, "train", out), real_data(cfg, "val", out)
    pool = storage.join(out, "subsets", "real_train_pool", "annotations.json")
    val = storage.join(out, "subsets", "real_val_holdout", "annotations.json")
    if not (storage.exists(pool) and storage.exists(val)):
        from synthgap.data import open_dataset

        path, fmt = real_data(cfg, "train", out)
        ds = open_dataset(path, fmt)
        keep, hold = holdout_split(len(ds), cfg.real_holdout, cfg.subset_seed, path)
        _write_coco(ds, hold, val, path)
        _write_coco(ds, keep, pool, path)
        log.info("real validation: %d held out of %d training images -> %s", len(hold), len(ds), val)
    return (pool, "coco"), (val, "coco")


def real_subset(cfg: StudyConfig, fraction: float, out: str) -> str:
    """A COCO file with the first ``fraction`` of the real training pool in a fixed random order
    (``subset_seed``), referencing the original images; written once and reused."""
    import numpy as np

    from synthgap.data import open_dataset

    path = storage.join(out, "subsets", f"real_train_{fraction_tag(fraction)}pct", "annotations.json")
    if storage.exists(path):
        return path
    (pool, fmt), _ = real_pool_and_val(cfg, out)
    ds = open_dataset(pool, fmt)
    order = np.random.default_rng(cfg.subset_seed).permutation(len(ds))
    n = max(1, int(round(fraction * len(ds))))
    _write_coco(ds, sorted(order[:n].tolist()), path, pool)
    log.info("real subset %s %%: %d of %d images -> %s", fraction_tag(fraction), n, len(ds), path)
    return path


def in_domain_data(cfg: StudyConfig, kind: str, out: str) -> tuple[str, str | None]:
    """Held-out data of the domain a cell kind trains on: synthetic for ``synthetic``, real validation
    for ``real`` and ``finetune`` (whose last training domain is real)."""
    if kind == "synthetic":
        return synthetic_split(cfg, out)[1], "coco"
    return real_pool_and_val(cfg, out)[1]


def epochs_for_steps(images: int, tcfg: Config, steps: int) -> int:
    """Epochs over ``images`` training images that make at least ``steps`` optimizer steps."""
    batches = math.ceil(images / tcfg.train.batch_size)
    if tcfg.train.max_steps_per_epoch:
        batches = min(batches, tcfg.train.max_steps_per_epoch)
    per_epoch = math.ceil(batches / tcfg.train.accumulation_steps)
    return max(1, math.ceil(steps / per_epoch))


# ---------------------------------------------------------------------------------------------
# running


def run_cell(cfg: StudyConfig, out: str, cell: str, seed: int, progress: bool = False) -> dict[str, Any]:
    """Train (or resume) one cell, evaluate it on the target test split and in its own domain;
    returns its metrics.json document."""
    from synthgap.models.checkpoint import checkpoint_name
    from synthgap.data import open_dataset
    from synthgap.engine.evaluate import evaluate_checkpoint
    from synthgap.engine.train import train

    folder = cell_dir(out, cell, seed)
    kind, fraction = cell_kind(cfg, cell)
    tcfg = cfg.train_cfg(kind, seed)
    ckpt_dir = storage.join(folder, "checkpoints")
    tb_dir = storage.join(folder, "tb")
    last = storage.join(ckpt_dir, checkpoint_name("last"))
    start = None
    if kind == "synthetic":
        data = synthetic_split(cfg, out)[0]
    else:
        data = real_subset(cfg, fraction, out)
    if kind == "finetune":
        start = storage.join(cell_dir(out, "synthetic", seed), "checkpoints", checkpoint_name("last"))
        if not storage.exists(start) and not storage.exists(last):
            raise FileNotFoundError(f"{cell} seed {seed} starts from {start}, which does not exist "
                                    f"(the synthetic cell must run first; is 'synthetic' in cells?)")
    images = len(open_dataset(data, "coco"))
    if cfg.real_steps and kind != "synthetic":
        tcfg = apply_overrides(tcfg, [f"train.epochs={epochs_for_steps(images, tcfg, cfg.real_steps)}"])
    # the study hands train/evaluate exactly the data it means: every image of each file (split "all"); the
    # training file is COCO, test files are read with their own format (None: detected), never the train's
    tcfg = dataclasses.replace(tcfg, data=dataclasses.replace(tcfg.data, format=None, train_split="all",
                                                              test_split="all"))
    resume = storage.exists(last)
    t0 = time.perf_counter()
    log.info("study cell %s seed %d: %s on %s (%d images)", cell, seed, "resuming" if resume else "training",
             data, images)
    summary = train(tcfg, train_data=data, checkpoint_dir=ckpt_dir, tb_log_dir=tb_dir,
                    checkpoint_file=None if resume else start, resume=resume, no_val=True, progress=progress)
    test, test_format = real_data(cfg, "test", out)
    own, own_format = in_domain_data(cfg, kind, out)
    stats = {}
    for name, path, fmt, where in (("target", test, test_format, folder),
                                   ("in_domain", own, own_format, storage.join(folder, "in_domain"))):
        done = evaluate_checkpoint(last, path, where, config=tcfg, test_format=fmt, progress=progress)
        stats[name] = {protocol: {k: float(v) for k, v in r.stats.items()} for protocol, r in done["results"].items()}
    own_headline = _metric(stats["in_domain"], HEADLINE)
    learned = own_headline is not None and own_headline >= cfg.in_domain_floor
    warning = None if learned else (f"{NOT_LEARNED} (in-domain {HEADLINE} {_num(own_headline)} < floor "
                                    f"{cfg.in_domain_floor:g})")
    if warning:
        log.warning("study cell %s seed %d %s", cell, seed, warning)
    storage.write_json(storage.join(folder, "run.json"), {
        "name": f"{cell} seed{seed}", "cell": cell, "seed": seed, "train_data": data, "test_data": test,
        "format": test_format, "tb_log_dir": "tb", "checkpoint": last, "start_from": start,
        "in_domain_data": own, f"in_domain {HEADLINE}": own_headline, "learned": learned, "warning": warning})
    doc = {"cell": cell, "kind": kind, "fraction": fraction, "seed": seed, "train_data": data, "train_images": images,
           "test_data": test, "metrics": stats["target"],
           "in_domain": {"data": own, "metrics": stats["in_domain"]}, "learned": learned,
           "in_domain_floor": cfg.in_domain_floor,
           "train": {k: summary.get(k) for k in ("epochs", "steps", "images_per_s")},
           "seconds": round(time.perf_counter() - t0, 1)}
    storage.write_json(storage.join(folder, "metrics.json"), doc)  # last: marks the cell finished
    return doc


def run_seed(cfg: StudyConfig, out: str, seed: int, progress: bool = False, threads: int | None = None) -> None:
    """Run the unfinished cells of one seed in order (a finetune cell starts from that seed's synthetic
    cell). ``threads``: torch threads of this process (set in the worker processes of `run_seeds_side_by_side`)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    for cell in cell_names(cfg):
        if is_finished(out, cell, seed):
            log.info("study cell %s seed %d: finished, skipped", cell, seed)
            continue
        run_cell(cfg, out, cell, seed, progress=progress)


def _seed_worker(cfg: StudyConfig, out: str, seed: int, threads: int, level: int) -> str | None:
    """`run_seed` in a spawned process: returns None, or the error as one line (exceptions with keyword
    fields do not always survive pickling back to the parent)."""
    logging.basicConfig(level=level, format=f"[seed {seed}] %(message)s")
    try:
        run_seed(cfg, out, seed, progress=False, threads=threads)
        return None
    except Exception as e:  # reported by the parent, with the seed
        return f"{type(e).__name__}: {e}"


def run_seeds_side_by_side(cfg: StudyConfig, out: str, seeds: list[int], jobs: int) -> None:
    """Run ``seeds`` in ``jobs`` spawned processes, each with torch's threads / jobs threads (the shared subset
    files are written first, here, so that no two processes write one file). No progress bars: each
    process logs its cells' lines, prefixed with its seed."""
    import concurrent.futures
    import multiprocessing

    import torch

    if "synthetic" in cfg.cells:
        synthetic_split(cfg, out)
    if "real" in cfg.cells or "finetune" in cfg.cells:
        for fraction in cfg.fractions:
            real_subset(cfg, fraction, out)
        real_pool_and_val(cfg, out)
    real_data(cfg, "test", out)
    threads = max(1, torch.get_num_threads() // jobs)  # torch's thread count stands for the cores, as in predict
    log.info("study: seeds %s in %d processes side by side, %d torch thread(s) each", seeds, jobs, threads)
    level = logging.getLogger("synthgap").getEffectiveLevel()
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {seed: pool.submit(_seed_worker, cfg, out, seed, threads, level) for seed in seeds}
        errors = [f"seed {seed}: {error}" for seed, f in futures.items() if (error := f.result())]
    if errors:
        raise SynthgapError("study cells failed: " + "; ".join(errors))


def run_study(config: StudyConfig | str, out: str, progress: bool = False) -> str:
    """Run every unfinished cell x seed, then write summary.json and report.html; returns the report path."""
    from synthgap.report import build_report

    cfg = load_study_config(config) if isinstance(config, str) else config.validate()
    # run.json files record data paths that the report resolves later, from any working directory
    out = storage.absolute(out)
    with locks.lock_folder(out, "synthgap study"):  # one study run per folder at a time (synthgap.io.locks)
        cfg = dataclasses.replace(cfg, datasets=dataclasses.replace(cfg.datasets, **{
            key: storage.absolute(getattr(cfg.datasets, key))
            for key in ("synthetic", "real_train", "real_test", "real_val") if getattr(cfg.datasets, key)}))
        saved, text = storage.join(out, "study.yaml"), yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        if storage.exists(saved) and storage.read_text(saved) != text:
            log.warning("%s: the study config changed since the last run; finished cells are kept as they are "
                        "(delete a cell's metrics.json to redo it)", saved)
        storage.write_text(saved, text)
        seeds = [s for s in cfg.seeds if not all(is_finished(out, c, s) for c in cell_names(cfg))]
        jobs = min(cfg.jobs, len(seeds))
        if jobs <= 1:
            for seed in cfg.seeds:
                run_seed(cfg, out, seed, progress)
        else:
            run_seeds_side_by_side(cfg, out, seeds, jobs)
        # after every cell: the feature distance uses the trained synthetic model's backbone
        stats = data_stats(cfg, out) if cfg.data_stats else None
        summary = summarize(cfg, out, stats)
        storage.write_json(storage.join(out, "summary.json"), summary)
        storage.write_text(storage.join(out, "summary.txt"), format_summary(summary) + "\n")  # for a write-up
        runs = [cell_dir(out, c, s) for c in cell_names(cfg) for s in cfg.seeds]
        report = storage.join(out, "report.html")
        build_report(runs, report, title=cfg.name, gallery_images=cfg.gallery_images, summary=summary, stats=stats,
                     datasets=study_datasets(cfg, out))
        return report


def study_datasets(cfg: StudyConfig, out: str) -> list[tuple[str, str, str | None]]:
    """(name, path, format) of every dataset in the study, synthetic first (the report shows their frames)."""
    entries = []
    if cfg.datasets.synthetic:
        entries.append(("synthetic", cfg.datasets.synthetic, cfg.datasets.synthetic_format))
    if cfg.datasets.real_train:
        entries.append(("real train", *real_data(cfg, "train", out)))
    entries.append((TEST_DATASET, *real_data(cfg, "test", out)))
    return entries


def feature_checkpoint(cfg: StudyConfig, out: str) -> str | None:
    """The model whose backbone measures the feature distance: the synthetic cell of the first seed, once
    finished (None without it, or with ``feature_images`` 0)."""
    from synthgap.models.checkpoint import checkpoint_name

    seed = cfg.seeds[0]
    if not cfg.feature_images or "synthetic" not in cfg.cells or not is_finished(out, "synthetic", seed):
        return None
    ckpt = storage.join(cell_dir(out, "synthetic", seed), "checkpoints", checkpoint_name("last"))
    return ckpt if storage.exists(ckpt) else None


def data_stats(cfg: StudyConfig, out: str) -> dict[str, Any]:
    """`synthgap stats` of the study's datasets (synthetic first: the gap is measured from it), written
    once to ``out/stats`` and reused on reruns; with a finished synthetic model (`feature_checkpoint`), each
    gap also holds ``features``, the Fréchet distance of that model's backbone features (added to a cached
    stats.json that lacks them or has another checkpoint's; ``feature_images`` images per dataset)."""
    from synthgap.stats import write_stats
    from synthgap.stats.features import datasets_feature_gap

    path = storage.join(out, "stats", "stats.json")
    entries = study_datasets(cfg, out)
    if storage.exists(path):
        doc = storage.read_json(path)
    else:
        doc = write_stats([e[1] for e in entries], storage.join(out, "stats"), names=[e[0] for e in entries],
                          formats=[e[2] for e in entries])
    ckpt = feature_checkpoint(cfg, out)
    others = [e for e in entries[1:] if e[0] in doc.get("gap", {})]
    if ckpt is None or not others or all((doc["gap"][e[0]].get("features") or {}).get("backbone") == ckpt
                                         for e in others):
        return doc
    t0 = time.perf_counter()
    gaps = datasets_feature_gap(entries[0][1], [e[1] for e in others], checkpoint=ckpt, format_a=entries[0][2],
                                formats_b=[e[2] for e in others], max_images=cfg.feature_images,
                                max_crops_per_class=cfg.feature_crops_per_class, crops=cfg.feature_crops_per_class > 0)
    for (name, _, _), gap in zip(others, gaps):
        doc["gap"][name]["features"] = gap
    storage.write_json(path, doc)
    log.info("feature distance (%s's backbone, up to %d images per dataset): %.1f s", ckpt, cfg.feature_images,
             time.perf_counter() - t0)
    return doc


# ---------------------------------------------------------------------------------------------
# summary: mean +/- std over seeds, in-domain sanity, the per-budget comparison, conclusions


def _metric(stats: dict | None, column: str) -> float | None:
    """``stats[protocol][key]`` of a "protocol key" column; None when missing or NaN."""
    protocol, key = column.split(" ", 1)
    value = ((stats or {}).get(protocol) or {}).get(key)
    return None if value is None or math.isnan(value) else float(value)


def _num(value: float | None, signed: bool = False) -> str:
    return "n/a" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def mean_std(values: list[float]) -> dict[str, Any] | None:
    """{"mean", "std" (sample std; None for one value), "values"}; None for no values."""
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "values": values}


# two-sided 95 % quantiles t(0.975, df) for df = 1..30; beyond, Fisher's expansion in 1/df (error < 1e-4)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """Student's t 0.975 quantile (the 95 % two-sided interval's factor) for ``df`` >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.959964 + 2.3722 / df + 2.8226 / df ** 2 + 2.556 / df ** 3


def paired_difference(differences: list[float]) -> dict[str, Any] | None:
    """Mean, sample std and the 95 % paired t-interval of per-seed differences (``ci`` None for one seed)."""
    stat = mean_std(differences)
    if stat is None:
        return None
    n = len(differences)
    half = t_quantile_975(n - 1) * stat["std"] / math.sqrt(n) if n > 1 else None
    return {**stat, "n": n, "ci": None if half is None else [stat["mean"] - half, stat["mean"] + half]}


def _cell_docs(cfg: StudyConfig, out: str, cell: str) -> dict[int, dict]:
    return {s: storage.read_json(storage.join(cell_dir(out, cell, s), "metrics.json")) for s in cfg.seeds
            if is_finished(out, cell, s)}


def _learned(doc: dict, floor: float) -> bool | None:
    """Whether a finished cell learned in its own domain (None: not measured, an older study folder)."""
    own = _metric((doc.get("in_domain") or {}).get("metrics"), HEADLINE)
    return None if own is None else own >= floor


def _row(cfg: StudyConfig, cell: str, docs: dict[int, dict]) -> dict[str, Any]:
    kind, fraction = cell_kind(cfg, cell)
    row: dict[str, Any] = {"name": cell, "kind": kind, "fraction": fraction, "seeds": len(docs),
                           "seed_list": sorted(docs), "train_images": next(iter(docs.values())).get("train_images")}
    for protocol, key in SUMMARY_COLUMNS:
        stat = mean_std([v for d in docs.values() if (v := _metric(d["metrics"], f"{protocol} {key}")) is not None])
        if stat:
            row[f"{protocol} {key}"] = stat
    for protocol, key in IN_DOMAIN_COLUMNS:
        stat = mean_std([v for d in docs.values()
                         if (v := _metric((d.get("in_domain") or {}).get("metrics"), f"{protocol} {key}")) is not None])
        if stat:
            row[f"in-domain {protocol} {key}"] = stat
    ratios = []
    for d in docs.values():
        own, target = _metric((d.get("in_domain") or {}).get("metrics"), HEADLINE), _metric(d["metrics"], HEADLINE)
        if own and target is not None:
            ratios.append(target / own)
    row["transfer ratio"] = mean_std(ratios)
    learned = {s: _learned(d, cfg.in_domain_floor) for s, d in docs.items()}
    failed = sorted(s for s, ok in learned.items() if ok is False)
    row["learned"] = None if any(ok is None for ok in learned.values()) else not failed
    row["warning"] = None
    if failed:
        which = "every seed" if len(failed) == len(docs) else \
            f"seed{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))} of {len(docs)}"
        row["warning"] = f"{NOT_LEARNED} (in-domain {HEADLINE} < {cfg.in_domain_floor:g} for {which})"
    elif row["learned"] is None:
        row["warning"] = "in-domain performance not measured (a cell finished by an older synthgap: rerun it)"
    return row


def compare(cfg: StudyConfig, docs: dict[str, dict[int, dict]], rows: dict[str, dict]) -> list[dict[str, Any]]:
    """Per real fraction: real-only vs synthetic-then-real on the same subset, paired by seed."""
    out = []
    for f in cfg.fractions:
        real, ft = f"real-{fraction_tag(f)}", f"finetune-{fraction_tag(f)}"
        seeds = sorted(set(docs.get(real, {})) & set(docs.get(ft, {})))
        if not seeds:
            continue
        entry: dict[str, Any] = {"fraction": f, "real_cell": real, "finetune_cell": ft, "seeds": seeds,
                                 "train_images": docs[real][seeds[0]].get("train_images"), "metrics": {}}
        for protocol, key in SUMMARY_COLUMNS:
            col = f"{protocol} {key}"
            pairs = [(a, b) for s in seeds if (a := _metric(docs[real][s]["metrics"], col)) is not None
                     and (b := _metric(docs[ft][s]["metrics"], col)) is not None]
            if pairs:
                entry["metrics"][col] = {"real": mean_std([a for a, _ in pairs]),
                                         "finetune": mean_std([b for _, b in pairs]),
                                         "difference": paired_difference([b - a for a, b in pairs])}
        bad = [c for c in (real, ft) if rows[c]["learned"] is False]
        entry["warning"] = (f"{' and '.join(bad)} {NOT_LEARNED.split(':')[0]}: this comparison says nothing about "
                            f"the dataset; train longer") if bad else None
        out.append(entry)
    return out


def conclusions(summary: dict[str, Any]) -> list[str]:
    """What a reader should take away, in words, from a summary (the CLI prints it; the report shows it)."""
    metric = summary.get("headline", HEADLINE)
    label = metric.replace("coco ", "COCO ").replace("unity ", "datasetinsights ")
    rows = {r["name"]: r for r in summary["rows"]}
    lines = []
    for c in summary.get("comparison", []):
        m = c["metrics"].get(metric)
        if not m:
            continue
        diff, real, ft = m["difference"], m["real"], m["finetune"]
        pct = f"{fraction_tag(c['fraction'])} % real data" + (f" ({c['train_images']} images)"
                                                                if c.get("train_images") else "")
        if c.get("warning"):
            lines.append(f"At {pct}: no conclusion: {c['warning']}.")
            continue
        verb = "added" if diff["mean"] >= 0 else "cost"
        text = (f"At {pct}, synthetic pretraining {verb} {diff['mean']:+.3f} {label} "
                f"(real only {_pm(real)} -> synthetic then real {_pm(ft)}; ")
        if diff["ci"] is None:
            text += "1 seed: no confidence interval, run more seeds)."
        else:
            lo, hi = diff["ci"]
            text += f"95 % CI of the paired difference [{lo:+.3f}, {hi:+.3f}] over {diff['n']} seeds; "
            text += ("the interval excludes 0: larger than seed-to-seed variation)." if lo > 0 or hi < 0 else
                     "the interval includes 0: not distinguishable from seed-to-seed variation at this number "
                     "of seeds).")
        lines.append(text)
    syn = rows.get("synthetic")
    if syn and syn.get(metric):
        own = syn.get(f"in-domain {metric}")
        ratio = syn.get("transfer ratio")
        if syn.get("warning"):
            lines.append(f"Synthetic only: {syn['warning']}.")
        else:
            lines.append(f"Synthetic only: {syn[metric]['mean']:.3f} {label} on the real test set vs "
                         f"{_num(own and own['mean'])} on held-out synthetic images (transfer ratio "
                         f"{_num(ratio and ratio['mean'])}): the synthetic-to-real gap.")
    bad = [r["name"] for r in summary["rows"] if r.get("learned") is False]
    if bad:
        lines.append(f"Did not learn in their own domain ({', '.join(bad)}): their numbers say nothing about the "
                     f"dataset; train longer.")
    return lines


def _pm(stat: dict | None) -> str:
    if not stat:
        return "n/a"
    return f"{stat['mean']:.3f}" + ("" if stat.get("std") is None else f" +/- {stat['std']:.3f}")


def feature_gap_summary(cfg: StudyConfig, out: str, stats: dict[str, Any] | None) -> dict[str, Any] | None:
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
    doc = _cell_docs(cfg, out, "synthetic").get(seed) or {}
    target, own = _metric(doc.get("metrics"), HEADLINE), _metric((doc.get("in_domain") or {}).get("metrics"), HEADLINE)
    learned = _learned(doc, cfg.in_domain_floor) if doc else None
    rows = []
    for name, f in gaps.items():
        scored = name == TEST_DATASET
        rows.append({"pair": f"{stats['reference']} -> {name}", "reference": stats["reference"], "dataset": name,
                     "images": f.get("images"), "image": f.get("image"), "per_class_mean": f.get("per_class_mean"),
                     f"in-domain {HEADLINE}": own if scored else None, HEADLINE: target if scored else None,
                     "AP gap": own - target if scored and own is not None and target is not None else None,
                     "transfer ratio": target / own if scored and own and target is not None else None})
    return {"model": f"synthetic seed{seed}", "seed": seed, "backbone": next(iter(gaps.values())).get("backbone"),
            "metric": HEADLINE, "learned": learned, "rows": rows,
            "note": ("Fréchet distance between Gaussians fitted to the synthetic model's backbone features (whole "
                     "images; object crops per class, averaged over classes); squared feature units, 0 = same "
                     "distribution, comparable only for one model. AP gap = in-domain minus target "
                     f"{HEADLINE}, same model. One study is one point: compare several synthetic datasets to see "
                     "whether the distance predicts the gap.")}


def summarize(cfg: StudyConfig, out: str, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every finished cell over seeds (target metrics, in-domain metrics, transfer ratio, learned flag), the
    per-budget comparison, the feature distance beside the AP gap (from ``stats``, a `data_stats` document)
    and the conclusions: the summary.json document."""
    docs = {cell: d for cell in cell_names(cfg) if (d := _cell_docs(cfg, out, cell))}
    rows = {cell: _row(cfg, cell, d) for cell, d in docs.items()}
    summary = {"columns": [f"{p} {k}" for p, k in SUMMARY_COLUMNS],
               "in_domain_columns": [f"in-domain {p} {k}" for p, k in IN_DOMAIN_COLUMNS],
               "headline": HEADLINE, "in_domain_floor": cfg.in_domain_floor, "not_learned": NOT_LEARNED,
               "rows": list(rows.values()), "comparison": compare(cfg, docs, rows), "ci_method": CI_METHOD,
               "feature_gap": feature_gap_summary(cfg, out, stats)}
    summary["conclusions"] = conclusions(summary)
    return summary


def format_feature_gap(fg: dict[str, Any]) -> list[str]:
    """`feature_gap` as text lines: one per dataset pair, the distances beside the synthetic model's AP."""
    metric = fg.get("metric", HEADLINE).split()[-1]
    lines = [f"Feature distance beside the AP gap ({fg['model']}'s backbone; Fréchet distance, squared feature "
             "units):",
             f"  {'dataset pair':<28}{'images':>9}{'FD image':>10}{'FD class mean':>15}{'in-domain ' + metric:>16}"
             f"{'target ' + metric:>13}{'AP gap':>8}{'ratio':>7}"]
    for r in fg["rows"]:
        images = "/".join(str(n) for n in r.get("images") or []) or "n/a"
        lines.append(f"  {r['pair']:<28}{images:>9}{_num(r.get('image')):>10}{_num(r.get('per_class_mean')):>15}"
                     f"{_num(r.get('in-domain ' + fg.get('metric', HEADLINE))):>16}"
                     f"{_num(r.get(fg.get('metric', HEADLINE))):>13}{_num(r.get('AP gap')):>8}"
                     f"{_num(r.get('transfer ratio')):>7}")
    if fg.get("learned") is False:
        lines.append(f"  !! {fg['model']} {NOT_LEARNED}")
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as plain text for a terminal: one line per cell, flags, then the conclusions."""
    metric = summary.get("headline", HEADLINE)
    cols = [("in-domain", f"in-domain {metric}"), ("target", metric), ("target AP", "coco AP")]
    lines = [f"{'cell':<14}{'seeds':>6}" + "".join(f"{title + ' ' + metric.split()[-1] if i < 2 else title:>22}"
                                                 for i, (title, _) in enumerate(cols)) + f"{'ratio':>8}"]
    for row in summary["rows"]:
        ratio = row.get("transfer ratio")
        line = (f"{row['name']:<14}{row.get('seeds', 1):>6}" + "".join(f"{_pm(row.get(key)):>22}" for _, key in cols)
                + f"{_num(ratio and ratio['mean']):>8}")
        if row.get("warning"):
            line += f"  !! {row['warning']}"
        lines.append(line)
    lines.append(f"(transfer ratio = target / in-domain {metric}; floor for 'learned': in-domain {metric} >= "
                 f"{summary.get('in_domain_floor', 0):g})")
    if summary.get("feature_gap"):
        lines += ["", *format_feature_gap(summary["feature_gap"])]
    if summary.get("conclusions"):
        lines += ["", "What this says:"] + [f"  - {c}" for c in summary["conclusions"]]
    return "\n".join(lines)
