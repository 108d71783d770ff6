"""Training throughput: `synthgap.engine.train.train` vs torchvision's detection reference loop, same run.

The peer is torchvision's ``references/detection/engine.py::train_one_epoch`` (not shipped in the
pip package), reproduced step for step below: warm-up LinearLR in epoch 0, images/targets moved to
the device, autocast only with a GradScaler, ``loss.item()`` and a finite check, ``zero_grad`` /
``backward`` / ``step`` every batch, the scheduler step, and the MetricLogger's per-step bookkeeping
(smoothed loss terms and lr). Both sides get the same model (cpu_small: mobilenet_v3_large_320_fpn
with the reduced RPN/ROI sample sizes), the same optimizer (SGD, the reference's momentum and weight
decay), the same images (coloured rectangles, 320x240), batch size and DataLoader workers.
synthgap runs as a user would: tqdm bar, TensorBoard logging every step, a checkpoint at the end
(outside the timed window, like the reference's ``utils.save_on_master``).

Rounds alternate which side runs first, so that load from other users of the machine and
whatever one run leaves behind (allocator, a worker shutting down) hit both alike.

    .venv/bin/python benchmarks/bench_train.py --steps 8 --batch 4 --rounds 4
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import statistics
import tempfile
import time

import torch

from synthgap.generate.shapes import make_coco

from synthgap.config import load_config
from synthgap.data import open_dataset
from synthgap.data.torch_dataset import TorchDetectionDataset, collate_detection
from synthgap.models import build_model
from synthgap.engine.train import train


def reference_train_one_epoch(model, optimizer, data_loader, device, epoch, max_steps, scaler=None):
    """torchvision references/detection/engine.py::train_one_epoch, per-step work reproduced."""
    model.train()
    meters = collections.defaultdict(lambda: collections.deque(maxlen=20))  # MetricLogger's SmoothedValues
    lr_scheduler = None
    if epoch == 0:
        warmup_iters = min(1000, len(data_loader) - 1)
        lr_scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / 1000, total_iters=warmup_iters)
    n_images = 0
    for i, (images, targets) in enumerate(data_loader):
        if i >= max_steps:
            break
        images = list(image.to(device) for image in images)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with torch.autocast(device.type, enabled=scaler is not None):
            loss_dict = model(images, targets)
            losses = sum(loss for loss in loss_dict.values())
        loss_dict_reduced = loss_dict  # utils.reduce_dict is the identity on one process
        losses_reduced = sum(loss for loss in loss_dict_reduced.values())
        loss_value = losses_reduced.item()
        if not math.isfinite(loss_value):
            raise SystemExit(f"Loss is {loss_value}, stopping training")
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        meters["loss"].append(loss_value)
        for k, v in loss_dict_reduced.items():
            meters[k].append(v.item())
        meters["lr"].append(optimizer.param_groups[0]["lr"])
        n_images += len(images)
    return n_images


def run_peer(cfg, data_dir, steps, seed):
    torch.manual_seed(seed)
    ds = TorchDetectionDataset(open_dataset(data_dir), image_size=tuple(cfg.data.image_size))
    sampler = torch.utils.data.RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.train.batch_size, sampler=sampler,
                                         num_workers=cfg.train.workers, collate_fn=collate_detection)
    model = build_model(cfg.model, 4)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.optimizer.lr, momentum=0.9, weight_decay=1e-4)
    t0 = time.perf_counter()
    n = reference_train_one_epoch(model, optimizer, loader, torch.device("cpu"), 0, steps)
    return n / (time.perf_counter() - t0)


def run_synthgap(cfg, data_dir, workdir):
    summary = train(cfg, train_data=data_dir, checkpoint_dir=os.path.join(workdir, "ck"),
                    tb_log_dir=os.path.join(workdir, "tb"), no_val=True, progress=True)
    return summary["images_per_s"], summary["data_wait_fraction"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="training steps per measurement")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", default="320x240", help="image WxH in pixels")
    ap.add_argument("--override", action="append", default=[], help="extra synthgap config override (ablations)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = make_coco(os.path.join(tmp, "data"), args.steps * args.batch, size=(w, h), seed=0, max_objects=4)
        cfg = load_config("cpu_small", [f"data.image_size=[{w}, {h}]", f"train.batch_size={args.batch}",
                                        "train.epochs=1", f"train.max_steps_per_epoch={args.steps}",
                                        f"train.workers={args.workers}", "train.log_every=1",
                                        "optimizer.name=sgd", "optimizer.lr=0.005", "optimizer.weight_decay=1e-4",
                                        # the reference's epoch-0 warm-up: min(1000, len(loader) - 1) steps
                                        f"optimizer.warmup_steps={min(1000, args.steps - 1)}"] + args.override)
        # one untimed run of each side first: the first training run in a process pays one-time costs
        # (OpenMP pool start, allocator growth, lazy initialisation)
        run_peer(cfg, data_dir, args.steps, cfg.train.seed)
        run_synthgap(cfg, data_dir, os.path.join(tmp, "warmup"))
        peer, ours, waits = [], [], []
        for r in range(args.rounds):
            if r % 2 == 0:
                peer.append(run_peer(cfg, data_dir, args.steps, cfg.train.seed))
            rate, wait = run_synthgap(cfg, data_dir, os.path.join(tmp, f"run{r}"))
            if r % 2 == 1:
                peer.append(run_peer(cfg, data_dir, args.steps, cfg.train.seed))
            ours.append(rate)
            waits.append(wait)
            print(f"round {r + 1}: reference {peer[-1]:.2f} images/s, synthgap {ours[-1]:.2f} images/s "
                  f"(data wait {100 * wait:.1f} % of step time)", flush=True)
    ratio = statistics.median(o / p for o, p in zip(ours, peer))
    print(f"\nmodel {cfg.model.name}, {w}x{h}, batch {args.batch}, {args.steps} steps, workers {args.workers}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"reference loop: {statistics.median(peer):.2f} images/s (median of {args.rounds})")
    print(f"synthgap train: {statistics.median(ours):.2f} images/s (median of {args.rounds})")
    print(f"ratio synthgap / reference (median of per-round ratios): {ratio:.2f}x  (goal >= 1.0x)")
    print(f"synthgap time waiting for data: {100 * max(waits):.1f} % of step time at most (goal < 5 %)")


if __name__ == "__main__":
    main()
