"""The training loop: one function, top to bottom (in the style of torchvision's detection
references and nanoGPT).

Runs on one CPU/GPU, or on N processes under ``torchrun`` (DDP: the env vars RANK/WORLD_SIZE/
LOCAL_RANK select it; nccl on CUDA, gloo on CPU; only rank 0 writes checkpoints and logs).
A CPU run with a fixed ``train.seed`` is deterministic, and ``resume=True`` after an interruption
ends with weights bit-identical to an uninterrupted run: the sampler and DataLoader workers are
seeded from (seed, epoch), and checkpoints (written at each epoch's end) carry every RNG state.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections import defaultdict

import numpy as np
import torch
import torch.distributed as dist

from synthgap import storage, tblog
from synthgap.checkpoint import (checkpoint_name, label_map_of, load_checkpoint, make_checkpoint, model_state,
                                 save_checkpoint, set_rng_state)
from synthgap.config import Config, OptimizerConfig, dump_config
from synthgap.data import open_dataset
from synthgap.data.torch_dataset import TorchDetectionDataset, collate_detection, load_image
from synthgap.evaluate import (compute_metrics, draw_detections, make_eval_loader, original_sizes, per_class_ap,
                               pr_curves, predict_detections, select_device)
from synthgap.models import build_model, load_model_weights, num_classes_for, reset_box_predictor

log = logging.getLogger("synthgap.train")


def build_optimizer(cfg: OptimizerConfig, params) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: OptimizerConfig, optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per optimizer step: linear warm-up over ``warmup_steps``, then x``lr_gamma`` every ``lr_step_size``
    epochs (0 = constant, the seed's Adam recipe)."""
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        decay = cfg.lr_gamma ** (step // (steps_per_epoch * cfg.lr_step_size)) if cfg.lr_step_size else 1.0
        return warm * decay

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(cfg: Config, *, train_data: str, val_data: str | None = None, checkpoint_dir: str = "checkpoints",
          tb_log_dir: str | None = None, checkpoint_file: str | None = None, resume: bool = False,
          no_cuda: bool = False, no_val: bool = False, progress: bool = True) -> dict:
    """Train ``cfg.model`` on ``train_data`` (any dataset path/URI), validating on ``val_data`` each
    ``train.val_interval`` epochs, writing ``FasterRCNN.ep{N}/best/last.estimator`` to ``checkpoint_dir``.

    ``checkpoint_file`` without ``resume``: start from its weights with a fresh optimizer (fine-tuning).
    ``resume``: continue from ``checkpoint_file`` or ``checkpoint_dir/FasterRCNN.last.estimator``.
    Returns a summary dict (epochs, steps, best AP, last validation stats, images/s).
    """
    # ---- processes, device, determinism ---------------------------------------------------------
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if ddp:
        use_cuda = torch.cuda.is_available() and not no_cuda
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        rank, world, local_rank = dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    else:
        rank, world, local_rank = 0, 1, 0
    master = rank == 0
    device = select_device(no_cuda, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    seed = cfg.train.seed
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed)  # same initial weights on every rank
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    fill_before = torch.utils.deterministic.fill_uninitialized_memory
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # NaN-filling every torch.empty (a debugging aid that deterministic mode turns on) cost 3 % of
        # a CPU training step; results do not depend on it
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
    amp = cfg.train.amp
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 on CPU")
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")

    # ---- data -------------------------------------------------------------------------------------
    train_ds = open_dataset(train_data, cfg.data.format, skip_invalid=cfg.data.skip_invalid)
    label_map = dict(train_ds.label_map)
    num_classes = num_classes_for(label_map)
    if len(train_ds) == 0:
        raise ValueError(f"{train_data}: the training dataset has no images")
    val_samples = None
    if val_data and not no_val and cfg.train.val_interval:
        val_ds = open_dataset(val_data, cfg.data.format, skip_invalid=cfg.data.skip_invalid)
        unknown = set(val_ds.label_map) - set(label_map)
        if unknown:
            raise ValueError(f"{val_data}: label ids {sorted(unknown)} are not in the training label map")
        val_samples = list(val_ds)
    image_size = tuple(cfg.data.image_size) if cfg.data.image_size else None
    train_set = TorchDetectionDataset(train_ds, image_size=image_size)
    sampler_gen, loader_gen = torch.Generator(), torch.Generator()
    if ddp:
        sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                                      seed=seed)
    else:
        sampler = torch.utils.data.RandomSampler(train_set, generator=sampler_gen)
    workers = cfg.train.workers
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.train.batch_size, sampler=sampler,
                                         num_workers=workers, collate_fn=collate_detection,
                                         pin_memory=device.type == "cuda", generator=loader_gen,
                                         persistent_workers=False, prefetch_factor=2 if workers else None)
    n_batches = len(loader) if not cfg.train.max_steps_per_epoch else min(len(loader), cfg.train.max_steps_per_epoch)
    accum = cfg.train.accumulation_steps
    steps_per_epoch = math.ceil(n_batches / accum)

    # ---- model, optimizer, resume / fine-tune -----------------------------------------------------
    model = build_model(cfg.model, num_classes).to(device)
    start_epoch, step, best_ap = 0, 0, -math.inf
    checkpoint = None
    resume_from = checkpoint_file or storage.join(checkpoint_dir, checkpoint_name("last"))
    if resume and not checkpoint_file and not storage.exists(resume_from):
        resume = False  # killed before its first checkpoint: re-running the same command starts over
        if master:
            log.info("--resume: no %s yet, starting from scratch", resume_from)
    if resume:
        checkpoint = load_checkpoint(resume_from)
        if label_map_of(checkpoint) != label_map:
            raise ValueError(f"{resume_from}: cannot resume: its label map differs from {train_data}'s")
        model.load_state_dict(checkpoint["model"])
        if master:
            log.info("resuming from %s (epoch %d, step %d)", resume_from, checkpoint["epoch"], checkpoint["step"])
    elif checkpoint_file:
        initial = load_checkpoint(checkpoint_file)
        complete = load_model_weights(model, model_state(initial, checkpoint_file), source=checkpoint_file)
        old_map = label_map_of(initial)
        if complete and old_map is not None and old_map != label_map:
            reset_box_predictor(model, num_classes)
            model.to(device)
            complete = False
        if master:
            log.info("starting from the weights of %s%s", checkpoint_file, "" if complete else
                     f"; its label map differs from the dataset's, so the box predictor was re-initialised "
                     f"for {num_classes - 1} classes")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg.optimizer, params)
    scheduler = build_scheduler(cfg.optimizer, optimizer, steps_per_epoch)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, step = checkpoint["epoch"], checkpoint["step"]
        best_ap = checkpoint["best_ap"] if checkpoint.get("best_ap") is not None else -math.inf
        set_rng_state(checkpoint["rng"])
        del checkpoint
    raw_model = model
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda"
                                                          else None)

    # ---- logging ----------------------------------------------------------------------------------
    writer = tblog.open_writer(tb_log_dir) if master and tb_log_dir else None
    if master:
        storage.write_text(storage.join(checkpoint_dir, "config.yaml"), dump_config(cfg))
        log.info("training %s (%d classes) on %d images, %d batches/epoch x %d epochs, device %s, %d process(es)",
                 cfg.model.name, num_classes - 1, len(train_set), n_batches, cfg.train.epochs, device, world)

    # ---- the loop ---------------------------------------------------------------------------------
    summary = {"epochs": start_epoch, "steps": step, "best_ap": best_ap, "metrics": {}, "images_per_s": None}
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            # the shuffle order and the worker seeds depend on (seed, epoch) only: resumable
            sampler_gen.manual_seed(seed + epoch)
            loader_gen.manual_seed(seed + 1_000_003 * (epoch + 1) + rank)
            if ddp:
                sampler.set_epoch(epoch)
            model.train()
            optimizer.zero_grad(set_to_none=True)
            epoch_loss, n_images, wait = defaultdict(float), 0, 0.0
            bar = None
            if master and progress:
                from tqdm import tqdm

                bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="batch",
                           dynamic_ncols=True, leave=True)
            t_epoch = t_ready = time.perf_counter()
            for i, (images, targets) in enumerate(loader):
                if i >= n_batches:
                    break
                wait += time.perf_counter() - t_ready
                images = [img.to(device, non_blocking=True) for img in images]
                targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
                window = min(accum, n_batches - (i // accum) * accum)  # batches in this accumulation window
                stepping = (i + 1) % accum == 0 or i + 1 == n_batches
                sync = model.no_sync() if ddp and not stepping else contextlib.nullcontext()
                with sync:
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                        loss_dict = model(images, targets)
                        loss = sum(loss_dict.values())
                    scaler.scale(loss / window).backward()
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"loss is {loss_value} at epoch {epoch + 1} batch {i}: "
                                             f"{ {k: v.item() for k, v in loss_dict.items()} }")
                if stepping:
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    step += 1
                for k, v in loss_dict.items():
                    epoch_loss[k] += v.item() * len(images)
                epoch_loss["loss"] += loss_value * len(images)
                n_images += len(images)
                rate = n_images * world / (time.perf_counter() - t_epoch)
                if writer is not None and stepping and step % cfg.train.log_every == 0:
                    for k, v in loss_dict.items():
                        writer.add_scalar(f"train/{k}", v.item(), step)
                    writer.add_scalar("train/loss", loss_value, step)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                    writer.add_scalar("train/images_per_s", rate, step)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{rate:.1f}", refresh=False)
                    bar.update(1)
                t_ready = time.perf_counter()
            if bar is not None:
                bar.close()
            elapsed = time.perf_counter() - t_epoch
            mean_loss = {k: v / max(n_images, 1) for k, v in epoch_loss.items()}
            if ddp:  # average the epoch losses over ranks for the log
                keys = sorted(mean_loss)
                values = torch.tensor([mean_loss[k] for k in keys], dtype=torch.float64)
                dist.all_reduce(values)
                mean_loss = dict(zip(keys, (values / world).tolist()))
            summary.update(epochs=epoch + 1, steps=step, images_per_s=n_images * world / elapsed,
                           data_wait_fraction=wait / elapsed, loss=mean_loss)
            if writer is not None:
                writer.add_scalar("epoch/loss", mean_loss.get("loss", math.nan), epoch + 1)
                writer.add_scalar("epoch/images_per_s", summary["images_per_s"], epoch + 1)
                writer.add_scalar("epoch/data_wait_fraction", summary["data_wait_fraction"], epoch + 1)
                writer.add_scalar("epoch/lr", optimizer.param_groups[0]["lr"], epoch + 1)

            # ---- validation (predictions from every rank, metrics on rank 0) ----------------------
            metrics, result = {}, None
            if val_samples is not None and (epoch + 1) % cfg.train.val_interval == 0:
                val_set = TorchDetectionDataset(val_samples, image_size=image_size)
                val_sampler = torch.utils.data.DistributedSampler(val_set, world, rank, shuffle=False) if ddp else None
                val_loader = make_eval_loader(val_set, cfg.eval.batch_size, cfg.eval.workers, device, val_sampler)
                detections = predict_detections(raw_model, val_loader, device, original_sizes(val_samples))
                if ddp:
                    gathered = [None] * world
                    dist.all_gather_object(gathered, detections)
                    detections = _merge_rank_detections(gathered, val_set, world)
                if master:
                    result = compute_metrics(val_samples, detections, label_map, "coco")
                    metrics = {k: float(v) for k, v in result.stats.items()}
                    log.info("epoch %d: loss %.4f, val AP %.4f AP50 %.4f, %.1f images/s", epoch + 1,
                             mean_loss.get("loss", math.nan), metrics["AP"], metrics["AP50"], summary["images_per_s"])
                    if writer is not None:
                        _log_validation(writer, result, metrics, label_map, val_samples, detections, cfg, epoch + 1)
            elif master:
                log.info("epoch %d: loss %.4f, %.1f images/s", epoch + 1, mean_loss.get("loss", math.nan),
                         summary["images_per_s"])
            summary["metrics"] = metrics

            # ---- checkpoints (rank 0): ep{N}, best (by val AP@[.5:.95]), then last ----------------
            if master:
                is_best = bool(metrics) and metrics["AP"] > best_ap
                if is_best:
                    best_ap = metrics["AP"]
                ckpt = make_checkpoint(model=raw_model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                       epoch=epoch + 1, step=step, config=cfg.to_dict(), label_map=label_map,
                                       metrics=metrics, best_ap=best_ap if math.isfinite(best_ap) else None)
                save_checkpoint(ckpt, storage.join(checkpoint_dir, checkpoint_name(epoch + 1)))
                if is_best:
                    save_checkpoint(ckpt, storage.join(checkpoint_dir, checkpoint_name("best")))
                save_checkpoint(ckpt, storage.join(checkpoint_dir, checkpoint_name("last")))
                del ckpt
                summary["best_ap"] = best_ap
                if writer is not None:
                    tblog.sync(writer, tb_log_dir)
            if ddp:
                dist.barrier()
        if ddp:  # DDP keeps replicas in lockstep; a divergence would mean a broken setup: say so loudly
            checksum = torch.stack([p.detach().double().sum() for p in raw_model.parameters()]).sum().cpu()
            sums = [None] * world
            dist.all_gather_object(sums, float(checksum))
            if len(set(sums)) != 1:
                raise RuntimeError(f"DDP replicas diverged: parameter sums per rank {sums}")
            if master:
                log.info("weights identical on %d ranks (parameter sum %.6f)", world, sums[0])
    finally:
        if writer is not None:
            tblog.close(writer, tb_log_dir)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(deterministic_before)
            torch.utils.deterministic.fill_uninitialized_memory = fill_before
        if ddp:
            dist.destroy_process_group()
    summary["best_ap"] = best_ap if math.isfinite(best_ap) else None
    return summary


def _merge_rank_detections(gathered: list[list[dict]], val_set, world: int) -> list[dict]:
    """DistributedSampler pads the last shard with repeated images: keep each image's detections once,
    from the rank whose shard owns it first (rank r holds indices r, r + world, ...)."""
    owner: dict[int, int] = {}
    for index in range(len(val_set)):
        image_id = int(val_set.samples[val_set.indices[index]].image_id)
        owner.setdefault(image_id, index % world)
    return [d for r, dets in enumerate(gathered) for d in dets if owner.get(d["image_id"]) == r]


def _log_validation(writer, result, metrics, label_map, val_samples, detections, cfg, epoch) -> None:
    """Validation stats, per-class AP, PR curves (IoU 0.5) and a few images with predictions drawn."""
    for name, value in metrics.items():
        writer.add_scalar(f"val/{name}", value, epoch)
    for name, ap in per_class_ap(result).items():
        if math.isfinite(ap):
            writer.add_scalar(f"val_per_class_AP/{name}", ap, epoch)
    for name, (recall, precision) in pr_curves(result, label_map).items():
        n = len(recall)
        zeros = np.zeros(n)
        # the PR plugin reads points in threshold order (recall falling): reverse COCO's recall grid
        writer.add_pr_curve_raw(f"val_pr_iou50/{name}", zeros, zeros, zeros, zeros, precision[::-1], recall[::-1],
                                epoch, num_thresholds=n)
    by_image = defaultdict(list)
    for d in detections:
        by_image[d["image_id"]].append(d)
    for k, sample in enumerate(val_samples[:cfg.train.tb_images]):
        drawn = draw_detections(load_image(sample.image), by_image[int(sample.image_id)], label_map,
                                cfg.eval.draw_score_thresh, ground_truth=sample)
        writer.add_image(f"val_images/{k}", np.asarray(drawn), epoch, dataformats="HWC")
