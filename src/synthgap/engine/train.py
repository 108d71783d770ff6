"""The training loop, laid out like torchvision's detection references: `train` reads top to bottom and
calls `train_one_epoch` (its settings one frozen `StepSettings`), `validate` and `save_epoch_checkpoints`
each epoch. A run owns its checkpoint folder (`other_run_files`); a resume continues the run as its
checkpoint records it (`resume_checkpoint`, `resume_config`); a diverging loss stops it (`LossGuard`).

Runs on one CPU/GPU, or on N processes under ``torchrun`` (DDP: the env vars RANK/WORLD_SIZE/
LOCAL_RANK select it; nccl on CUDA, gloo on CPU; only rank 0 writes checkpoints and logs).
A CPU run with a fixed ``train.seed`` is deterministic, and ``resume=True`` after an interruption
ends with weights bit-identical to an uninterrupted run: the sampler and DataLoader workers are
seeded from (seed, epoch), and checkpoints (written at each epoch's end) carry every RNG state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import posixpath
import random
import statistics
import time
from collections import defaultdict
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from synthgap.io import locks, storage
from synthgap.engine import tblog, tracking
from synthgap.models.checkpoint import (PREFIX, check_resumable, checkpoint_name, label_map_of, lean,
                                        load_checkpoint, make_checkpoint, model_state, prune_epoch_checkpoints,
                                        save_checkpoint, set_rng_state)
from synthgap.config import (RENAMED, Config, OptimizerConfig, TrainConfig, apply_overrides, dump_config,
                             parse_override)
from synthgap.config.datasetinsights import split_overrides
from synthgap.data import DetectionDataset, Sample
from synthgap.data.splits import open_split, shared_images
from synthgap.data.torch_dataset import TorchDetectionDataset, collate_detection, model_resize
from synthgap.errors import CheckpointError, ConfigError, DatasetError, SynthgapError, TrainingError
from synthgap.metrics import MetricsResult, evaluate
from synthgap.models import build_model, load_model_weights, num_classes_for, reset_box_predictor
from synthgap.engine.predict import predict_samples, select_device

log = logging.getLogger(__name__)


def build_optimizer(cfg: OptimizerConfig, params) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: OptimizerConfig, optimizer, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per optimizer step: linear warm-up over ``warmup_steps``, then either x``lr_gamma`` every
    ``lr_step_size`` epochs (``lr_schedule`` "step"; 0 = constant, datasetinsights' Adam recipe) or a
    cosine from ``lr`` down to ``lr * lr_min_ratio`` at the last of ``epochs * steps_per_epoch`` steps
    ("cosine": the step count is fixed by the config, so a resumed run continues the same curve)."""
    total = max(1, epochs * steps_per_epoch)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.lr_schedule == "cosine":
            done = min(1.0, step / total)
            return warm * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * done)))
        decay = cfg.lr_gamma ** (step // (steps_per_epoch * cfg.lr_step_size)) if cfg.lr_step_size else 1.0
        return warm * decay

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# the step's settings, the loss guard, the keys a resume may change
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}  # train.amp -> autocast dtype ("none": fp32)
DIVERGENCE_FACTOR = 100.0  # a batch loss above this x the run's early loss stops training (`LossGuard`)
EARLY_BATCHES = 10         # the run's early loss: the median of its first this many batch losses
# settings a resumed run may change (asked for explicitly; logged): how long it runs, how it is logged and
# validated, how many processes read data. Anything else (model, optimizer, data, batch size, seed...)
# changes what the checkpoint means, and a resume that asks for it is refused.
RESUMABLE_KEYS = ("train.epochs", "train.workers", "train.log_every", "train.tb_images", "train.keep_checkpoints",
                  "eval.batch_size", "eval.workers", "eval.protocols", "eval.draw_score_thresh")


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """How `train_one_epoch` steps: fixed for a whole run (`of` reads them from ``train.*``)."""

    n_batches: int | None = None          # batches per epoch (None: all the loader's)
    accumulation_steps: int = 1           # batches whose gradients add up before each optimizer step
    amp_dtype: torch.dtype | None = None  # autocast dtype (train.amp); None: fp32
    log_every: int = 1                    # TensorBoard train/* scalars every N optimizer steps
    epochs: int | None = None             # the run's epochs (the progress bar's title)
    progress: bool = False                # a tqdm bar per epoch

    @classmethod
    def of(cls, cfg: TrainConfig, batches: int, progress: bool = True) -> StepSettings:
        """The settings of ``cfg`` for a loader of ``batches`` batches (``max_steps_per_epoch`` caps them)."""
        return cls(n_batches=min(batches, cfg.max_steps_per_epoch or batches), accumulation_steps=cfg.accumulation_steps,
                   amp_dtype=AMP_DTYPES.get(cfg.amp), log_every=cfg.log_every, epochs=cfg.epochs, progress=progress)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (a short last accumulation window steps too)."""
        return math.ceil(self.n_batches / self.accumulation_steps)


@dataclasses.dataclass
class LossGuard:
    """Stops a diverging run before its optimizer step: a non-finite batch loss, or an exploding one, above
    ``factor`` x the run's early loss (the median of its first ``window`` batch losses; before ``window``
    batches, of those so far). A detector's loss starts at a scale set by its data and falls as it learns
    (cpu_small: ~3, then 1-2; a lr spike of 10x recovers), so 100x is an optimizer that blew up (SGD lr 10:
    3 -> 6e3 -> 8e10). The early losses travel in ``last`` checkpoints, so a resumed run keeps its reference.
    ``factor=0``: only the non-finite check."""

    factor: float = DIVERGENCE_FACTOR
    window: int = EARLY_BATCHES
    early: list[float] = dataclasses.field(default_factory=list)

    @property
    def reference(self) -> float | None:
        return statistics.median(self.early) if self.early else None

    def check(self, loss: float, *, step: int, epoch: int, batch: int, terms: Mapping[str, float] | None = None):
        """TrainingError naming ``step`` (the optimizer step the batch is for), ``epoch`` (0-based) and ``batch``."""
        where = f"training diverged at step {step} (epoch {epoch + 1}, batch {batch})"
        if not math.isfinite(loss):
            raise TrainingError(f"{where}: the loss is {loss}" + (f" ({dict(terms)})" if terms else "") +
                                "; lower optimizer.lr or add optimizer.warmup_steps")
        ref = self.reference
        if self.factor and ref is not None and ref > 0 and loss > self.factor * ref:
            raise TrainingError(f"{where}: the loss {loss:.4g} is more than {self.factor:g}x the run's early loss "
                                f"{ref:.4g} (the median of its first {len(self.early)} batches); lower optimizer.lr "
                                "or add optimizer.warmup_steps (the checkpoints of earlier epochs are kept)")
        if len(self.early) < self.window:
            self.early.append(float(loss))


def train(cfg: Config, *, train_data: str | None = None, val_data: str | None = None,
          checkpoint_dir: str = "checkpoints", tb_log_dir: str | None = None, checkpoint_file: str | None = None,
          resume: bool = False, overwrite: bool = False, no_cuda: bool = False, no_val: bool = False,
          progress: bool = True) -> dict:
    """Train ``cfg.model`` on ``data.train`` (any dataset path/URI), validating on ``data.val`` each
    ``train.val_interval`` epochs, writing ``FasterRCNN.ep{N}/best/last.estimator`` to ``checkpoint_dir``.

    ``train_data``, ``val_data``, ``no_val``: see `run_config`. ``checkpoint_file`` without ``resume``: start
    from its weights with a fresh optimizer (fine-tuning). ``resume``: continue from ``checkpoint_file`` or
    ``checkpoint_dir/FasterRCNN.last.estimator`` (`resume_checkpoint`). A folder holding another run's
    checkpoints is refused unless ``overwrite`` (`other_run_files`). Returns a summary dict (epochs, steps,
    best AP, last validation stats, mean losses, images/s)."""
    cfg = run_config(cfg, train_data=train_data, val_data=val_data, no_val=no_val)
    rank, world, device = setup_distributed(no_cuda)
    master, writer, seed = rank == 0, None, cfg.train.seed
    held = contextlib.ExitStack()
    try:
        if master:  # rank 0 writes checkpoint_dir: one training run per folder at a time (synthgap.io.locks)
            held.enter_context(locks.lock_folder(checkpoint_dir, "synthgap train"))
        old_files = other_run_files(checkpoint_dir, resume=resume, checkpoint_file=checkpoint_file, overwrite=overwrite)
        resume_from = checkpoint_file or storage.join(checkpoint_dir, checkpoint_name("last"))
        checkpoint = resume_checkpoint(cfg, resume_from, required=bool(checkpoint_file), verbose=master) \
            if resume else None  # compared with cfg before anything is built or written
        with deterministic(cfg.train.deterministic):
            seed_everything(seed, rank)
            scaler = make_scaler(cfg.train, device)
            train_ds, val_samples, val_source = load_data(cfg, validating=cfg.train.val_interval > 0)
            label_map = dict(train_ds.label_map)

            # model, optimizer; resume or fine-tune (then the pretrained weights are not read)
            model = build_model(cfg.model, num_classes_for(label_map),
                                load_weights=not (checkpoint_file or checkpoint)).to(device)
            restore(model, label_map, checkpoint, checkpoint_file=checkpoint_file, source=resume_from,
                    train_data=cfg.data.train, verbose=master)
            # photos the model shrinks to half or less are decoded near its input size (synthgap.data.torch_dataset)
            train_set = TorchDetectionDataset(train_ds, image_size=tuple(cfg.data.image_size or ()) or None,
                                              model_resize=model_resize(model), skip_invalid=cfg.data.skip_invalid)
            loader = make_train_loader(train_set, cfg.train, device, rank, world)
            settings = StepSettings.of(cfg.train, len(loader), progress=master and progress)
            optimizer = build_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
            scheduler = build_scheduler(cfg.optimizer, optimizer, settings.steps_per_epoch, cfg.train.epochs)
            guard, start_epoch, step, best_ap = LossGuard(), 0, 0, -math.inf
            if checkpoint is not None:
                start_epoch, step, best_ap = resume_training_state(checkpoint, optimizer, scheduler, scaler, guard)
                del checkpoint
            raw_model = model
            if world > 1:
                model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

            if master:
                remove_run_files(checkpoint_dir, old_files)
                writer = tblog.open_writer(tb_log_dir) if tb_log_dir else None
                storage.write_text(storage.join(checkpoint_dir, "config.yaml"), dump_config(cfg))
                log_start(cfg, train_ds, val_source, settings, device, world)

            summary = {"epochs": start_epoch, "steps": step, "best_ap": best_ap, "metrics": {}, "images_per_s": None}
            for epoch in range(start_epoch, cfg.train.epochs):
                seed_epoch(loader, seed, epoch, rank)
                stats = train_one_epoch(model, optimizer, scheduler, loader, device, epoch, settings, step=step,
                                        scaler=scaler, writer=writer, guard=guard)
                step = stats["steps"]
                summary.update(epochs=epoch + 1, **stats)
                metrics = {}
                if val_samples is not None and (epoch + 1) % cfg.train.val_interval == 0:
                    result, detections = validate(raw_model, val_samples, label_map, device, cfg, rank=rank,
                                                  world=world)
                    if master:
                        metrics = {k: float(v) for k, v in result.stats.items()}
                        if writer is not None:
                            tblog.log_validation(writer, result, val_samples, detections, epoch + 1,
                                                 images=cfg.train.tb_images, score_thresh=cfg.eval.draw_score_thresh)
                summary["metrics"] = metrics
                if master:
                    log_epoch(epoch, stats, metrics, train_set, summary)
                    previous_best = best_ap
                    best_ap = save_epoch_checkpoints(
                        checkpoint_dir, epoch + 1, model=raw_model, optimizer=optimizer, scheduler=scheduler,
                        scaler=scaler, step=step, cfg=cfg, label_map=label_map, metrics=metrics, best_ap=best_ap,
                        early_losses=guard.early)
                    note_best(summary, epoch, best_ap, previous_best, val_source)
                    # MLflow (when the CLI opened a run) after the checkpoints: best-effort, bounded (tracking)
                    tracking.log_epoch(epoch + 1, {**stats["loss"], "images_per_s": stats["images_per_s"],
                                                   **{f"val_{k}": v for k, v in metrics.items()}})
                    if writer is not None:
                        tblog.sync(writer, tb_log_dir)
                if world > 1:
                    dist.barrier()
            if world > 1:
                check_replicas(raw_model, world, verbose=master)
    finally:
        if writer is not None:
            tblog.close(writer, tb_log_dir)
        if world > 1:
            dist.destroy_process_group()
        held.close()
    summary["best_ap"] = best_ap if math.isfinite(best_ap) else None
    return summary


def run_config(cfg: Config, *, train_data: str | None = None, val_data: str | None = None,
               no_val: bool = False) -> Config:
    """A copy of ``cfg`` with the run's data (``train_data`` / ``val_data`` replace ``data.train`` / ``data.val``)
    and, with ``no_val``, ``train.val_interval`` 0: the config saved with the run (and compared on resume)
    says what it trained on and whether it validated. ConfigError without training data."""
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train=train_data or cfg.data.train,
                                                            val=val_data or cfg.data.val))
    if no_val:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, val_interval=0))
    if not cfg.data.train:
        raise ConfigError("no training data: set data.train (synthgap train --train-data)")
    return cfg


def seed_everything(seed: int, rank: int = 0) -> None:
    """Python's and numpy's RNGs per rank (augmentations may differ), torch's the same on every rank (the
    initial weights)."""
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed)


def make_scaler(cfg: TrainConfig, device: torch.device) -> torch.amp.GradScaler:
    """The GradScaler of ``train.amp`` (enabled for fp16 only, which needs CUDA: ConfigError elsewhere)."""
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 on CPU")
    return torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")


def log_start(cfg: Config, train_ds: DetectionDataset, val_source: str | None, settings: StepSettings,
              device: torch.device, world: int) -> None:
    log.info("training %s (%d classes) on %s (%s), %d batches/epoch x %d epochs, device %s, %d process(es)",
             cfg.model.name, num_classes_for(train_ds.label_map) - 1, cfg.data.train, train_ds.description,
             settings.n_batches, cfg.train.epochs, device, world)
    if val_source:
        log.info("validating on %s: %s is the epoch with the best AP@[.5:.95] there", val_source,
                 checkpoint_name("best"))
    else:
        log.info("no validation: no %s is written", checkpoint_name("best"))


def note_best(summary: dict, epoch: int, best_ap: float, previous_best: float, val_source: str | None) -> None:
    """Log a new best epoch and record it (and the best AP so far) in the run's summary."""
    if best_ap != previous_best:
        log.info("epoch %d is the best so far: val AP %.4f on %s -> %s", epoch + 1, best_ap, val_source,
                 checkpoint_name("best"))
        summary["best_epoch"], summary["best_chosen_on"] = epoch + 1, val_source
    summary["best_ap"] = best_ap


def log_epoch(epoch: int, stats: Mapping, metrics: Mapping[str, float], train_set: TorchDetectionDataset,
              summary: dict) -> None:
    """The epoch's log line (and, with data.skip_invalid, the unreadable images skipped so far)."""
    mean_loss = stats["loss"].get("loss", math.nan)
    if metrics:
        log.info("epoch %d: loss %.4f, val AP %.4f AP50 %.4f, %.1f images/s", epoch + 1, mean_loss, metrics["AP"],
                 metrics["AP50"], stats["images_per_s"])
    else:
        log.info("epoch %d: loss %.4f, %.1f images/s", epoch + 1, mean_loss, stats["images_per_s"])
    unreadable = train_set.skipped_images()
    if len(unreadable):  # data.skip_invalid: once per epoch, the run's total so far
        log.warning("epoch %d: %d unreadable training images skipped so far (data.skip_invalid), e.g. %s",
                    epoch + 1, len(unreadable), unreadable.errors[0])
        summary["skipped_images"] = len(unreadable)


# ---------------------------------------------------------------------------------------------
# one run per checkpoint folder; resume continues the run as recorded


def other_run_files(checkpoint_dir: str, *, resume: bool = False, checkpoint_file: str | None = None,
                    overwrite: bool = False) -> list[str]:
    """The files of another run in ``checkpoint_dir`` that ``overwrite`` removes (`remove_run_files`); [] when
    there are none, or when ``resume`` continues the folder's own run.

    A second run into a used folder mixed two runs (its ``last`` and ``ep1`` beside the old ``ep2``/``ep3``,
    ``best`` possibly the old run's): CheckpointError, before anything is read or written, unless ``resume``
    (from the folder's own checkpoint) or ``overwrite``. Another run's files are its ``FasterRCNN.*.estimator``
    (and ``config.yaml``, removed with them)."""
    if resume and overwrite:
        raise ConfigError("--overwrite and --resume contradict each other: --resume continues the run in the "
                          "checkpoint folder, --overwrite deletes it")
    found = sorted(storage.glob(storage.join(checkpoint_dir, f"{PREFIX}.*.estimator")))
    own = checkpoint_file is None or _same_folder(checkpoint_file, checkpoint_dir)
    if not found or (resume and own):
        return []
    if overwrite:
        config = storage.join(checkpoint_dir, "config.yaml")
        return found + ([config] if storage.exists(config) else [])
    names = [posixpath.basename(uri.replace("\\", "/")) for uri in found]
    what = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    last = storage.join(checkpoint_dir, checkpoint_name("last"))
    if last in found:
        try:
            ck = load_checkpoint(last)
            data = ((ck.get("config") or {}).get("data") or {}).get("train")
            what = (f"{checkpoint_name('last')}: epoch {ck.get('epoch')} of "
                    f"{((ck.get('config') or {}).get('train') or {}).get('epochs')}, trained on {data}; {what}")
        except CheckpointError as e:
            what = f"{what}; {e}"
    raise CheckpointError(f"{checkpoint_dir} holds the checkpoints of another run ({what}): continue it with "
                          "--resume, or pass --overwrite to delete them, or choose another --checkpoint-dir (two "
                          "runs' checkpoints in one folder cannot be told apart)")


def _same_folder(uri: str, folder: str) -> bool:
    parent = posixpath.dirname(uri.replace("\\", "/"))
    if storage.is_local(uri) and storage.is_local(folder):
        return os.path.realpath(storage.local_path(parent or ".")) == os.path.realpath(storage.local_path(folder))
    return parent.rstrip("/") == folder.replace("\\", "/").rstrip("/")


def remove_run_files(checkpoint_dir: str, files: Sequence[str]) -> None:
    """Delete another run's files (`other_run_files` with ``overwrite``), saying so."""
    for uri in files:
        storage.remove(uri)
    if files:
        log.info("--overwrite: removed %d files of the previous run in %s", len(files), checkpoint_dir)


def config_changes(recorded: Config, cfg: Config) -> dict[str, tuple]:
    """``{dotted key: (recorded value, value in cfg)}`` for every key where the two configs differ."""
    before, after = _dotted(recorded.to_dict()), _dotted(cfg.to_dict())
    return {k: (before.get(k), after.get(k)) for k in {**before, **after} if before.get(k) != after.get(k)}


def _dotted(tree: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(_dotted(value, name) if isinstance(value, Mapping) else {name: value})
    return out


def recorded_config(checkpoint: Mapping, uri: str) -> Config:
    """The config a checkpoint was trained with (CheckpointError when it has none this version can read)."""
    if not isinstance(checkpoint.get("config"), Mapping) or "model" not in checkpoint["config"]:
        raise CheckpointError(f"{uri}: it records no synthgap config, so a resume cannot tell what it continues")
    try:
        return Config.from_dict(dict(checkpoint["config"]), f"{uri} (its config)")
    except ConfigError as e:
        raise CheckpointError(f"{uri}: its config cannot be read by this synthgap version ({e})") from None


def resume_checkpoint(cfg: Config, uri: str, *, required: bool = False, verbose: bool = True) -> dict | None:
    """The checkpoint at ``uri`` that a resume continues, or None when there is none yet (and not
    ``required``: re-running the command of a run killed in its first epoch starts it over).

    Checked before anything is built or written: it must hold the resume state (`check_resumable`) and
    its config may differ from ``cfg`` only in `RESUMABLE_KEYS` (each change is logged); any other change
    (a model width, the optimizer, the data, the batch size ...) is a CheckpointError naming the keys."""
    if not required and not storage.exists(uri):
        if verbose:
            log.info("--resume: no %s yet, starting from scratch", uri)
        return None
    checkpoint = load_checkpoint(uri)
    check_resumable(checkpoint, uri)
    changes = config_changes(recorded_config(checkpoint, uri), cfg)
    refused = {k: v for k, v in changes.items() if k not in RESUMABLE_KEYS}
    if refused:
        listed = "; ".join(f"{k}: {old!r} in the run, {new!r} now" for k, (old, new) in sorted(refused.items()))
        raise CheckpointError(f"{uri}: cannot resume: the run was trained with other settings ({listed}). A resume "
                              "continues the run as recorded (`synthgap train --checkpoint-dir DIR --resume` reads "
                              f"them from DIR); only {', '.join(RESUMABLE_KEYS)} may change. To train with new "
                              "settings, start a new run (another --checkpoint-dir, or --overwrite)")
    if verbose:
        for key, (old, new) in sorted(changes.items()):
            log.info("resuming with %s %s -> %s (changed on resume)", key, old, new)
        log.info("resuming from %s (epoch %d, step %d)", uri, checkpoint["epoch"], checkpoint["step"])
    return checkpoint


def resume_config(checkpoint_dir: str, checkpoint_file: str | None = None, *, config: Config | None = None,
                  overrides: Sequence[str] = (), train_data: str | None = None, val_data: str | None = None,
                  no_val: bool = False) -> Config | None:
    """The config ``synthgap train --resume`` continues with: the run's own (from the checkpoint it resumes),
    changed only where the command line asks explicitly (``overrides``, ``train_data``, ``val_data``,
    ``no_val``: see `run_config`); None when there is nothing to resume yet (a fresh start takes the command
    line's config).

    ``config`` (a ``--config`` given with ``--resume``, overrides applied) must agree with the run except in
    the keys ``overrides`` name: ConfigError otherwise, so a packaged recipe's defaults never replace the
    run's settings unnoticed. Whether an asked-for change may be made at all is `resume_checkpoint`'s call."""
    uri = checkpoint_file or storage.join(checkpoint_dir, checkpoint_name("last"))
    if not storage.exists(uri):
        return None
    recorded = recorded_config(load_checkpoint(uri), uri)
    asked = {RENAMED.get(key, key) for key, _ in map(parse_override, split_overrides(overrides))}
    asked |= {"data.train"} if train_data else set()
    asked |= {"data.val"} if val_data else set()
    asked |= {"train.val_interval"} if no_val else set()
    base = config if config is not None else apply_overrides(recorded, overrides)
    cfg = run_config(base, train_data=train_data or base.data.train or recorded.data.train,
                     val_data=val_data or base.data.val or recorded.data.val, no_val=no_val)
    if config is not None and recorded.train.val_interval == 0 and not no_val:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, val_interval=0))  # a --no-val run's
    unasked = {k: v for k, v in config_changes(recorded, cfg).items() if k not in asked}
    if unasked:
        listed = "; ".join(f"{k}: {old!r} in the run, {new!r} in --config" for k, (old, new) in sorted(unasked.items()))
        raise ConfigError(f"--resume continues the run recorded in {uri}, and --config differs from it ({listed}): "
                          "drop --config (the run's own config is used), or ask for a change with --override "
                          "KEY=VALUE")
    return cfg


def setup_distributed(no_cuda: bool = False) -> tuple[int, int, torch.device]:
    """(rank, world size, this process's device). Under ``torchrun`` (WORLD_SIZE > 1) this joins the
    process group (nccl on CUDA, gloo on CPU; the caller destroys it) and takes GPU LOCAL_RANK."""
    rank, world, local_rank = 0, 1, 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() and not no_cuda else "gloo")
        rank, world, local_rank = dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    device = select_device(no_cuda, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return rank, world, device


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Deterministic algorithms inside the block (``enabled``); torch's previous settings after it."""
    algorithms, fill = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # NaN-filling every torch.empty (a debugging aid that deterministic mode turns on) cost 3 % of
        # a CPU training step; results do not depend on it
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        if enabled:
            torch.use_deterministic_algorithms(algorithms)
            torch.utils.deterministic.fill_uninitialized_memory = fill


def load_data(cfg: Config, *, validating: bool) -> tuple[DetectionDataset, list[Sample] | None, str | None]:
    """(training data, validation samples or None, what they are for the log) of ``data.train`` /
    ``data.val`` and their splits (synthgap.data.splits). Without validation data, a held-out split of the
    training data validates (datasetinsights' 90/10, seed 47), never its training images: the best
    checkpoint is chosen on validation data only."""
    train_data, val_data = cfg.data.train, cfg.data.val
    on_train_data = validating and (not val_data or val_data == train_data)
    train_ds = _open_split(train_data, cfg.data.train_split, "train", cfg, on_train_data)
    _check_label_map(train_ds.label_map, train_data)  # a label map the model cannot take is the first error
    if len(train_ds) == 0:
        raise DatasetError("the training dataset has no images", file=train_data)
    if not any(len(s) for s in train_ds):  # stops at the first image with a box
        raise DatasetError(f"the training data ({train_ds.description}) has no boxes: there is nothing to learn "
                           "(a detector learns from boxed objects; check the annotations, e.g. `synthgap info`)",
                           file=train_data, kind="no_boxes")
    if not validating:
        return train_ds, None, None
    val_ds = _open_split(val_data or train_data, cfg.data.val_split, "val", cfg, on_train_data)
    val_samples = _validation_samples(val_ds, train_ds.label_map, train_ds if on_train_data else None)
    return train_ds, val_samples, f"{val_data or train_data} ({val_ds.description})"


def _check_label_map(label_map: Mapping[int, str], source: str) -> None:
    """DatasetError naming ``source`` for a label map no Faster R-CNN can take (none, or label id 0)."""
    if not label_map:
        raise DatasetError("the training data declares no classes (its label map is empty): nothing to train",
                           file=source, field="categories", kind="no_classes")
    try:
        num_classes_for(label_map)
    except SynthgapError:
        raise
    except ValueError as e:  # label id 0 (the background in torchvision), a negative id
        raise DatasetError(str(e), file=source, field="categories", kind="label_ids") from None


def _open_split(data: str, split: str | None, role: str, cfg: Config, on_train_data: bool):
    return open_split(data, split, role=role, format=cfg.data.format, skip_invalid=cfg.data.skip_invalid,
                      validating_on_train_data=on_train_data, seed=cfg.data.split_seed,
                      val_fraction=cfg.data.val_fraction, group_by=cfg.data.split_group_by)


def _validation_samples(val_ds, label_map: Mapping[int, str], train_ds=None) -> list[Sample]:
    """The validation samples, labelled in the training label map's ids (classes matched by name,
    `synthgap.data.labels`); ``train_ds``: the training split of the same dataset, which they must not
    share an image with (the best checkpoint is chosen on held-out data only)."""
    from synthgap.data.labels import align_label_maps

    alignment = align_label_maps(label_map, val_ds.label_map, model_source="the training data", test_source=val_ds.root)
    log.info("validation %s", alignment.log_line())
    shared = shared_images(train_ds, val_ds) if train_ds is not None else 0
    if shared:
        raise ConfigError(f"{val_ds.root}: the validation data ({val_ds.description}) shares {shared} images with the "
                          f"training data ({train_ds.description}); the best checkpoint must be chosen on held-out "
                          "images: pick disjoint data.train_split / data.val_split, or pass --val-data")
    if not len(val_ds):
        raise DatasetError(f"the validation data ({val_ds.description}) has no images", file=val_ds.root)
    samples = alignment.model_samples(val_ds)
    if not any(len(s) for s in samples):  # COCO's AP is -1 there; save_epoch_checkpoints never takes it as a best
        log.warning("%s: the validation data (%s) has no boxes of the training classes: its AP is undefined, so no "
                    "%s will be written; validate on images with boxes, or pass --no-val", val_ds.root,
                    val_ds.description, checkpoint_name("best"))
    return samples


def make_train_loader(train_set: torch.utils.data.Dataset, cfg: TrainConfig, device: torch.device, rank: int = 0,
                      world: int = 1) -> torch.utils.data.DataLoader:
    """A shuffling loader (a DistributedSampler's shard under DDP) whose order and worker seeds
    `seed_epoch` sets."""
    if world > 1:
        sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                                      seed=cfg.seed)
    else:
        sampler = torch.utils.data.RandomSampler(train_set, generator=torch.Generator())
    return torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler,
                                       num_workers=cfg.workers, collate_fn=collate_detection,
                                       pin_memory=device.type == "cuda", generator=torch.Generator(),
                                       persistent_workers=False, prefetch_factor=2 if cfg.workers else None)


def seed_epoch(loader: torch.utils.data.DataLoader, seed: int, epoch: int, rank: int = 0) -> None:
    """The shuffle order and the worker seeds depend on (seed, epoch) only: resumable."""
    if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
        loader.sampler.set_epoch(epoch)
    else:
        loader.sampler.generator.manual_seed(seed + epoch)
    loader.generator.manual_seed(seed + 1_000_003 * (epoch + 1) + rank)


def restore(model: torch.nn.Module, label_map: Mapping[int, str], checkpoint: Mapping | None, *,
            checkpoint_file: str | None, source: str, train_data: str, verbose: bool = True) -> None:
    """Load weights into ``model`` before training.

    ``checkpoint`` (a resume, `resume_checkpoint`, read from ``source``): its weights, and its label map must
    be the dataset's. Else ``checkpoint_file`` (fine-tuning): its weights only; a different label map
    rebuilds the box predictor for ``label_map``'s classes, keeping the rows of the classes matched by name
    (`carry_box_predictor`).
    """
    if checkpoint is not None:
        if label_map_of(checkpoint) != dict(label_map):
            raise CheckpointError(f"{source}: cannot resume: its label map differs from {train_data}'s")
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as e:  # the configs agree (resume_checkpoint), so the file itself is at odds
            raise CheckpointError(f"{source}: cannot resume: its weights do not fit the model its config "
                                  f"describes ({str(e).splitlines()[0]})") from None
        return
    if checkpoint_file:
        initial = load_checkpoint(checkpoint_file)
        state = model_state(initial, checkpoint_file)
        complete = load_model_weights(model, state, source=checkpoint_file)
        old_map = label_map_of(initial)
        num_classes = num_classes_for(label_map)
        carried = None
        if old_map is not None and old_map != dict(label_map):
            carried = carry_box_predictor(model, state, old_map, label_map)
            complete = False
        if verbose:
            log.info("starting from the weights of %s%s", checkpoint_file, "" if complete else
                     f"; its label map differs from the dataset's, so the box predictor was re-initialised "
                     f"for {num_classes - 1} classes" + (f", keeping {carried}" if carried else ""))


def carry_box_predictor(model: torch.nn.Module, state: Mapping[str, torch.Tensor], old_map: Mapping[int, str],
                        label_map: Mapping[int, str]) -> str | None:
    """Give ``model`` a fresh box predictor for ``label_map``'s classes that keeps, for each class the
    checkpoint (its weights ``state``, its classes ``old_map``) also has, that class's classifier row and 4 box
    regression rows (and the background's): classes are matched by name (`synthgap.data.labels`), so data that
    number the same classes differently (a study's synthetic and real sets) fine-tune what was learned about
    them. Returns the alignment's log line, or None when nothing was kept (no class in common)."""
    from synthgap.data.labels import align_label_maps
    from synthgap.errors import LabelMapError

    device = next(model.parameters()).device
    reset_box_predictor(model, num_classes_for(label_map))
    model.to(device)
    head, key = model.roi_heads.box_predictor, "roi_heads.box_predictor."
    old = [state.get(key + name) for name in ("cls_score.weight", "cls_score.bias", "bbox_pred.weight",
                                              "bbox_pred.bias")]
    if any(t is None for t in old) or old[0].shape[1] != head.cls_score.in_features:
        return None
    try:
        alignment = align_label_maps(old_map, label_map, model_source="the checkpoint", test_source="the dataset")
    except LabelMapError:  # other classes altogether: a fresh predictor, as before
        return None
    with torch.no_grad():
        for a, b in [(0, 0), *alignment.model_to_test.items()]:  # background row 0 too
            if a < old[0].shape[0]:
                head.cls_score.weight[b], head.cls_score.bias[b] = old[0][a], old[1][a]
                head.bbox_pred.weight[4 * b:4 * b + 4] = old[2][4 * a:4 * a + 4]
                head.bbox_pred.bias[4 * b:4 * b + 4] = old[3][4 * a:4 * a + 4]
    return "the predictor rows of the " + alignment.log_line().split(": ", 1)[1]


def resume_training_state(checkpoint: Mapping, optimizer, scheduler, scaler,
                          guard: LossGuard | None = None) -> tuple[int, int, float]:
    """Optimizer / scheduler / GradScaler / RNG states and the loss guard's early losses from ``checkpoint``;
    returns (epoch, step, best AP)."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    if checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
    if guard is not None:
        guard.early = [float(v) for v in checkpoint.get("early_losses") or []]
    best_ap = checkpoint["best_ap"] if checkpoint.get("best_ap") is not None else -math.inf
    return checkpoint["epoch"], checkpoint["step"], best_ap


def train_one_epoch(model: torch.nn.Module, optimizer, scheduler, loader, device: torch.device, epoch: int,
                    settings: StepSettings = StepSettings(), *, step: int = 0,
                    scaler: torch.amp.GradScaler | None = None, writer=None, guard: LossGuard | None = None) -> dict:
    """One pass over at most ``settings.n_batches`` batches of ``loader``; ``model(images, targets)`` returns
    a dict of loss tensors, summed into the loss. Gradients of ``settings.accumulation_steps`` batches add
    up before each optimizer + scheduler step (a shorter last window is scaled to its own length). Each
    batch loss passes ``guard`` (default: a fresh `LossGuard`) before its backward pass: a non-finite or
    exploding loss stops training with TrainingError (under DDP on the loss averaged over the ranks, so
    every rank stops together).

    Returns ``{"loss": {name: mean per image, averaged over DDP ranks}, "steps": optimizer steps so
    far (``step`` + this epoch's), "images_per_s": all ranks, "data_wait_fraction": time waiting for
    the loader / epoch time}``; logs ``train/*`` every ``settings.log_every`` steps and ``epoch/*`` to ``writer``.
    """
    ddp = isinstance(model, DistributedDataParallel)
    world = dist.get_world_size() if ddp else 1
    n_batches, accumulation, amp_dtype = settings.n_batches or len(loader), settings.accumulation_steps, settings.amp_dtype
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    guard = guard if guard is not None else LossGuard()
    model.train()
    optimizer.zero_grad(set_to_none=True)
    totals, n_images, wait = defaultdict(float), 0, 0.0
    bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{settings.epochs or '?'}", unit="batch", dynamic_ncols=True,
               leave=True) if settings.progress else None
    t_epoch = t_ready = time.perf_counter()
    for i, (images, targets) in enumerate(loader):
        if i >= n_batches:
            break
        wait += time.perf_counter() - t_ready
        images = [img.to(device, non_blocking=True) for img in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        window = min(accumulation, n_batches - (i // accumulation) * accumulation)
        stepping = (i + 1) % accumulation == 0 or i + 1 == n_batches
        with model.no_sync() if ddp and not stepping else contextlib.nullcontext():
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss_dict = model(images, targets)
                loss = sum(loss_dict.values())
            losses = {k: v.item() for k, v in loss_dict.items()}
            losses["loss"] = loss.item()
            guard.check(_mean_over_ranks(losses["loss"], device) if ddp else losses["loss"], step=step + 1,
                        epoch=epoch, batch=i, terms=losses)
            scaler.scale(loss / window).backward()
        if stepping:
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used (logged below)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
        for k, v in losses.items():
            totals[k] += v * len(images)
        n_images += len(images)
        rate = n_images * world / (time.perf_counter() - t_epoch)
        if writer is not None and stepping and step % settings.log_every == 0:
            for k, v in losses.items():
                writer.add_scalar(f"train/{k}", v, step)
            writer.add_scalar("train/lr", lr, step)
            writer.add_scalar("train/images_per_s", rate, step)
        if bar is not None:
            bar.set_postfix(loss=f"{losses['loss']:.3f}", img_s=f"{rate:.1f}", refresh=False)
            bar.update(1)
        t_ready = time.perf_counter()
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t_epoch
    mean_loss = {k: v / max(n_images, 1) for k, v in totals.items()}
    if ddp:  # average the epoch losses over ranks for the log
        keys = sorted(mean_loss)
        values = torch.tensor([mean_loss[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(values)
        mean_loss = dict(zip(keys, (values / world).tolist()))
    stats = {"loss": mean_loss, "steps": step, "images_per_s": n_images * world / elapsed,
             "data_wait_fraction": wait / elapsed}
    if writer is not None:
        writer.add_scalar("epoch/loss", mean_loss.get("loss", math.nan), epoch + 1)
        writer.add_scalar("epoch/images_per_s", stats["images_per_s"], epoch + 1)
        writer.add_scalar("epoch/data_wait_fraction", stats["data_wait_fraction"], epoch + 1)
        writer.add_scalar("epoch/lr", optimizer.param_groups[0]["lr"], epoch + 1)
    return stats


def _mean_over_ranks(value: float, device: torch.device) -> float:
    """``value`` averaged over the DDP ranks (a collective: every rank calls it)."""
    t = torch.tensor([value], dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def validate(model: torch.nn.Module, samples: Sequence[Sample], label_map: Mapping[int, str], device: torch.device,
             cfg: Config, *, rank: int = 0, world: int = 1) -> tuple[MetricsResult | None, list[dict]]:
    """COCO metrics of ``model`` on ``samples``. Each rank predicts every ``world``-th sample from its
    ``rank`` on; rank 0 gathers the predictions and scores them: (result, detections) on rank 0,
    (None, []) elsewhere. Detections are COCO records, xywh pixels of each sample's image."""
    detections = predict_samples(model, samples[rank::world], device, batch_size=cfg.eval.batch_size,
                                 workers=cfg.eval.workers, image_size=cfg.data.image_size)
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, detections)
        detections = [d for part in gathered for d in part]
    if rank != 0:
        return None, []
    return evaluate(list(samples), detections, protocol="coco", label_map=dict(label_map)), detections


def save_epoch_checkpoints(checkpoint_dir: str, epoch: int, *, model: torch.nn.Module, optimizer, scheduler, scaler,
                           step: int, cfg: Config, label_map: Mapping[int, str], metrics: Mapping[str, float],
                           best_ap: float, early_losses: Sequence[float] = ()) -> float:
    """Write ``ep{epoch}`` and ``best`` (when ``metrics["AP"]``, validation AP@[.5:.95], beats ``best_ap``)
    lean (model and config: `synthgap.models.checkpoint.lean`), then ``last`` with the full resume state (each
    atomically; ``early_losses``: the `LossGuard`'s); keep the newest ``train.keep_checkpoints`` epoch files.
    An undefined AP (COCO's -1 for "no ground truth", NaN) is never a best. Returns the best AP so far
    (-inf before any defined one)."""
    ap = metrics.get("AP") if metrics else None
    is_best = isinstance(ap, (int, float)) and math.isfinite(ap) and ap >= 0 and ap > best_ap
    if is_best:
        best_ap = float(ap)
    ckpt = make_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, epoch=epoch,
                           step=step, config=cfg.to_dict(), label_map=dict(label_map), metrics=dict(metrics),
                           best_ap=best_ap if math.isfinite(best_ap) else None, early_losses=early_losses)
    keep = cfg.train.keep_checkpoints
    if keep is None or keep > 0:
        save_checkpoint(lean(ckpt), storage.join(checkpoint_dir, checkpoint_name(epoch)))
    if is_best:
        save_checkpoint(lean(ckpt), storage.join(checkpoint_dir, checkpoint_name("best")))
    save_checkpoint(ckpt, storage.join(checkpoint_dir, checkpoint_name("last")))
    prune_epoch_checkpoints(checkpoint_dir, epoch, keep)
    return best_ap


def check_replicas(model: torch.nn.Module, world: int, verbose: bool = True) -> None:
    """DDP keeps replicas in lockstep; a divergence would mean a broken setup: say so loudly."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().cpu()
    sums = [None] * world
    dist.all_gather_object(sums, float(checksum))
    if len(set(sums)) != 1:
        raise RuntimeError(f"DDP replicas diverged: parameter sums per rank {sums}")
    if verbose:
        log.info("weights identical on %d ranks (parameter sum %.6f)", world, sums[0])
