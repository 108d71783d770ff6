"""The training loop, laid out like torchvision's detection references: `train` reads top to bottom and
calls `train_one_epoch`, `validate` and `save_epoch_checkpoints` each epoch.

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
import random
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
from synthgap.models.checkpoint import (check_resumable, checkpoint_name, label_map_of, lean, load_checkpoint,
                                 make_checkpoint, model_state, prune_epoch_checkpoints, save_checkpoint, set_rng_state)
from synthgap.config import Config, OptimizerConfig, TrainConfig, dump_config
from synthgap.data import DetectionDataset, Sample
from synthgap.data.splits import open_split, shared_images
from synthgap.data.torch_dataset import TorchDetectionDataset, collate_detection
from synthgap.errors import CheckpointError, ConfigError, DatasetError
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


def train(cfg: Config, *, train_data: str | None = None, val_data: str | None = None,
          checkpoint_dir: str = "checkpoints", tb_log_dir: str | None = None, checkpoint_file: str | None = None,
          resume: bool = False, no_cuda: bool = False, no_val: bool = False, progress: bool = True) -> dict:
    """Train ``cfg.model`` on ``data.train`` (any dataset path/URI), validating on ``data.val`` each
    ``train.val_interval`` epochs, writing ``FasterRCNN.ep{N}/best/last.estimator`` to ``checkpoint_dir``.

    ``train_data`` / ``val_data``, when given, replace ``data.train`` / ``data.val`` (in a copy of ``cfg``:
    the config saved with the run names the data it used). ``checkpoint_file`` without ``resume``: start
    from its weights with a fresh optimizer (fine-tuning). ``resume``: continue from ``checkpoint_file``
    or ``checkpoint_dir/FasterRCNN.last.estimator``.
    Returns a summary dict (epochs, steps, best AP, last validation stats, mean losses, images/s).
    """
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train=train_data or cfg.data.train,
                                                            val=val_data or cfg.data.val))
    train_data = cfg.data.train
    if not train_data:
        raise ConfigError("no training data: set data.train (synthgap train --train-data)")
    rank, world, device = setup_distributed(no_cuda)
    master, writer, seed = rank == 0, None, cfg.train.seed
    held = contextlib.ExitStack()
    try:
        if master:  # rank 0 writes checkpoint_dir: one training run per folder at a time (synthgap.io.locks)
            held.enter_context(locks.lock_folder(checkpoint_dir, "synthgap train"))
        with deterministic(cfg.train.deterministic):
            random.seed(seed + rank)
            np.random.seed(seed + rank)
            torch.manual_seed(seed)  # same initial weights on every rank
            if cfg.train.amp == "fp16" and device.type != "cuda":
                raise ConfigError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 on CPU")
            amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.train.amp)
            scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.amp == "fp16")

            train_ds, val_samples, val_source = load_data(cfg, validating=not no_val and cfg.train.val_interval > 0)
            label_map = dict(train_ds.label_map)
            num_classes = num_classes_for(label_map)
            image_size = tuple(cfg.data.image_size) if cfg.data.image_size else None
            train_set = TorchDetectionDataset(train_ds, image_size=image_size)
            loader = make_train_loader(train_set, cfg.train, device, rank, world)
            n_batches = min(len(loader), cfg.train.max_steps_per_epoch or len(loader))
            steps_per_epoch = math.ceil(n_batches / cfg.train.accumulation_steps)

            # model, optimizer; resume or fine-tune
            weights_follow = bool(checkpoint_file) or (resume and storage.exists(
                storage.join(checkpoint_dir, checkpoint_name("last"))))  # then pretrained weights are not read
            model = build_model(cfg.model, num_classes, load_weights=not weights_follow).to(device)
            checkpoint = restore(model, label_map, resume=resume, checkpoint_file=checkpoint_file,
                                 checkpoint_dir=checkpoint_dir, train_data=train_data, verbose=master)
            optimizer = build_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
            scheduler = build_scheduler(cfg.optimizer, optimizer, steps_per_epoch, cfg.train.epochs)
            start_epoch, step, best_ap = 0, 0, -math.inf
            if checkpoint is not None:
                start_epoch, step, best_ap = resume_training_state(checkpoint, optimizer, scheduler, scaler)
                del checkpoint
            raw_model = model
            if world > 1:
                model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

            if master:
                writer = tblog.open_writer(tb_log_dir) if tb_log_dir else None
                storage.write_text(storage.join(checkpoint_dir, "config.yaml"), dump_config(cfg))
                log.info("training %s (%d classes) on %s (%s), %d batches/epoch x %d epochs, device %s, "
                         "%d process(es)", cfg.model.name, num_classes - 1, train_data, train_ds.description,
                         n_batches, cfg.train.epochs, device, world)
                if val_source:
                    log.info("validating on %s: %s is the epoch with the best AP@[.5:.95] there", val_source,
                             checkpoint_name("best"))
                else:
                    log.info("no validation: no %s is written", checkpoint_name("best"))

            summary = {"epochs": start_epoch, "steps": step, "best_ap": best_ap, "metrics": {}, "images_per_s": None}
            for epoch in range(start_epoch, cfg.train.epochs):
                seed_epoch(loader, seed, epoch, rank)
                stats = train_one_epoch(model, optimizer, scheduler, loader, device, epoch, step=step, scaler=scaler,
                                        n_batches=n_batches, accumulation_steps=cfg.train.accumulation_steps,
                                        amp_dtype=amp_dtype, writer=writer, log_every=cfg.train.log_every,
                                        progress=f"epoch {epoch + 1}/{cfg.train.epochs}" if master and progress
                                        else None)
                step = stats["steps"]
                summary.update(epochs=epoch + 1, **stats)
                mean_loss = stats["loss"].get("loss", math.nan)

                metrics = {}
                if val_samples is not None and (epoch + 1) % cfg.train.val_interval == 0:
                    result, detections = validate(raw_model, val_samples, label_map, device, cfg, rank=rank,
                                                  world=world)
                    if master:
                        metrics = {k: float(v) for k, v in result.stats.items()}
                        log.info("epoch %d: loss %.4f, val AP %.4f AP50 %.4f, %.1f images/s", epoch + 1, mean_loss,
                                 metrics["AP"], metrics["AP50"], stats["images_per_s"])
                        if writer is not None:
                            tblog.log_validation(writer, result, val_samples, detections, epoch + 1,
                                                 images=cfg.train.tb_images, score_thresh=cfg.eval.draw_score_thresh)
                elif master:
                    log.info("epoch %d: loss %.4f, %.1f images/s", epoch + 1, mean_loss, stats["images_per_s"])
                summary["metrics"] = metrics
                if master:  # MLflow, when the CLI opened a run (--mlflow-uri)
                    tracking.log_epoch(epoch + 1, {**stats["loss"], "images_per_s": stats["images_per_s"],
                                                   **{f"val_{k}": v for k, v in metrics.items()}})

                if master:
                    previous_best = best_ap
                    best_ap = save_epoch_checkpoints(
                        checkpoint_dir, epoch + 1, model=raw_model, optimizer=optimizer, scheduler=scheduler,
                        scaler=scaler, step=step, cfg=cfg, label_map=label_map, metrics=metrics, best_ap=best_ap)
                    if best_ap != previous_best:
                        log.info("epoch %d is the best so far: val AP %.4f on %s -> %s", epoch + 1, best_ap,
                                 val_source, checkpoint_name("best"))
                        summary["best_epoch"], summary["best_chosen_on"] = epoch + 1, val_source
                    summary["best_ap"] = best_ap
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
    num_classes_for(train_ds.label_map)  # a label map the model cannot take is the first error
    if len(train_ds) == 0:
        raise DatasetError("the training dataset has no images", file=train_data)
    if not validating:
        return train_ds, None, None
    val_ds = _open_split(val_data or train_data, cfg.data.val_split, "val", cfg, on_train_data)
    val_samples = _validation_samples(val_ds, train_ds.label_map, train_ds if on_train_data else None)
    return train_ds, val_samples, f"{val_data or train_data} ({val_ds.description})"


def _open_split(data: str, split: str | None, role: str, cfg: Config, on_train_data: bool):
    return open_split(data, split, role=role, format=cfg.data.format, skip_invalid=cfg.data.skip_invalid,
                      validating_on_train_data=on_train_data, seed=cfg.data.split_seed,
                      val_fraction=cfg.data.val_fraction)


def _validation_samples(val_ds, label_map: Mapping[int, str], train_ds=None) -> list[Sample]:
    """The validation samples; ``train_ds``: the training split of the same dataset, which they must not
    share an image with (the best checkpoint is chosen on held-out data only)."""
    unknown = set(val_ds.label_map) - set(label_map)
    if unknown:
        raise DatasetError(f"label ids {sorted(unknown)} are not in the training label map", file=val_ds.root)
    shared = shared_images(train_ds, val_ds) if train_ds is not None else 0
    if shared:
        raise ConfigError(f"{val_ds.root}: the validation data ({val_ds.description}) shares {shared} images with the "
                          f"training data ({train_ds.description}); the best checkpoint must be chosen on held-out "
                          "images: pick disjoint data.train_split / data.val_split, or pass --val-data")
    if not len(val_ds):
        raise DatasetError(f"the validation data ({val_ds.description}) has no images", file=val_ds.root)
    return list(val_ds)


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


def restore(model: torch.nn.Module, label_map: Mapping[int, str], *, resume: bool, checkpoint_file: str | None,
            checkpoint_dir: str, train_data: str, verbose: bool = True) -> dict | None:
    """Load weights into ``model`` before training; return the checkpoint to resume from, or None.

    ``resume``: ``checkpoint_file`` or ``checkpoint_dir``'s last checkpoint (none yet: start over, so
    re-running the same command after an early kill works); its label map must be the dataset's.
    ``checkpoint_file`` alone (fine-tuning): its weights only; a different label map re-initialises the
    box predictor for ``label_map``'s classes.
    """
    resume_from = checkpoint_file or storage.join(checkpoint_dir, checkpoint_name("last"))
    if resume and not checkpoint_file and not storage.exists(resume_from):
        if verbose:
            log.info("--resume: no %s yet, starting from scratch", resume_from)
        return None
    if resume:
        checkpoint = load_checkpoint(resume_from)
        check_resumable(checkpoint, resume_from)
        if label_map_of(checkpoint) != dict(label_map):
            raise CheckpointError(f"{resume_from}: cannot resume: its label map differs from {train_data}'s")
        model.load_state_dict(checkpoint["model"])
        if verbose:
            log.info("resuming from %s (epoch %d, step %d)", resume_from, checkpoint["epoch"], checkpoint["step"])
        return checkpoint
    if checkpoint_file:
        initial = load_checkpoint(checkpoint_file)
        complete = load_model_weights(model, model_state(initial, checkpoint_file), source=checkpoint_file)
        old_map = label_map_of(initial)
        num_classes = num_classes_for(label_map)
        if complete and old_map is not None and old_map != dict(label_map):
            device = next(model.parameters()).device
            reset_box_predictor(model, num_classes)
            model.to(device)
            complete = False
        if verbose:
            log.info("starting from the weights of %s%s", checkpoint_file, "" if complete else
                     f"; its label map differs from the dataset's, so the box predictor was re-initialised "
                     f"for {num_classes - 1} classes")
    return None


def resume_training_state(checkpoint: dict, optimizer, scheduler, scaler) -> tuple[int, int, float]:
    """Optimizer / scheduler / GradScaler / RNG states from ``checkpoint``; returns (epoch, step, best AP)."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    if checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
    best_ap = checkpoint["best_ap"] if checkpoint.get("best_ap") is not None else -math.inf
    return checkpoint["epoch"], checkpoint["step"], best_ap


def train_one_epoch(model: torch.nn.Module, optimizer, scheduler, loader, device: torch.device, epoch: int, *,
                    step: int = 0, scaler: torch.amp.GradScaler | None = None, n_batches: int | None = None,
                    accumulation_steps: int = 1, amp_dtype: torch.dtype | None = None, writer=None,
                    log_every: int = 1, progress: str | None = None) -> dict:
    """One pass over at most ``n_batches`` batches of ``loader``; ``model(images, targets)`` returns a
    dict of loss tensors, summed into the loss. Gradients of ``accumulation_steps`` batches add up
    before each optimizer + scheduler step (a shorter last window is scaled to its own length). A
    non-finite loss stops training with FloatingPointError. ``progress``: a progress bar's title.

    Returns ``{"loss": {name: mean per image, averaged over DDP ranks}, "steps": optimizer steps so
    far (``step`` + this epoch's), "images_per_s": all ranks, "data_wait_fraction": time waiting for
    the loader / epoch time}``; logs ``train/*`` every ``log_every`` steps and ``epoch/*`` to ``writer``.
    """
    ddp = isinstance(model, DistributedDataParallel)
    world = dist.get_world_size() if ddp else 1
    n_batches = len(loader) if n_batches is None else n_batches
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    totals, n_images, wait = defaultdict(float), 0, 0.0
    bar = tqdm(total=n_batches, desc=progress, unit="batch", dynamic_ncols=True, leave=True) if progress else None
    t_epoch = t_ready = time.perf_counter()
    for i, (images, targets) in enumerate(loader):
        if i >= n_batches:
            break
        wait += time.perf_counter() - t_ready
        images = [img.to(device, non_blocking=True) for img in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        window = min(accumulation_steps, n_batches - (i // accumulation_steps) * accumulation_steps)
        stepping = (i + 1) % accumulation_steps == 0 or i + 1 == n_batches
        with model.no_sync() if ddp and not stepping else contextlib.nullcontext():
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss_dict = model(images, targets)
                loss = sum(loss_dict.values())
            scaler.scale(loss / window).backward()
        losses = {k: v.item() for k, v in loss_dict.items()}
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1} batch {i}: {losses}")
        losses["loss"] = loss.item()
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
        if writer is not None and stepping and step % log_every == 0:
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
                           best_ap: float) -> float:
    """Write ``ep{epoch}`` and ``best`` (when ``metrics["AP"]``, validation AP@[.5:.95], beats ``best_ap``)
    lean (model and config: `synthgap.models.checkpoint.lean`), then ``last`` with the full resume state (each
    atomically); keep the newest ``train.keep_checkpoints`` epoch files. Returns the best AP so far (-inf
    before any validation)."""
    is_best = bool(metrics) and metrics["AP"] > best_ap
    if is_best:
        best_ap = metrics["AP"]
    ckpt = make_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, epoch=epoch,
                           step=step, config=cfg.to_dict(), label_map=dict(label_map), metrics=dict(metrics),
                           best_ap=best_ap if math.isfinite(best_ap) else None)
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
