"""Learning curves of from-scratch CPU training recipes: validation AP50 against image-steps and seconds.

Data: `synthgap generate` at the demo's size (320x240, the demo's first 6 classes, synthetic style),
a training set and a held-out validation set of another seed; ``--objects`` sets objects per frame.
Each recipe is `cpu_small` plus the overrides in RECIPES, trained with `synthgap.engine.train.train` and
validated after every epoch. AP50 against image-steps is deterministic for a given thread count;
seconds are images seen / training images/s, measured with ``--speed`` round-robin over the recipes in
one process (validation excluded), so that other load on a shared machine hits every recipe alike.
Results go to ``--out`` as one JSON per recipe (reruns skip finished recipes), then a table and a
PNG plot of all of them.

    .venv/bin/python benchmarks/bench_recipes.py --out /tmp/bench-recipes --recipes all
    .venv/bin/python benchmarks/bench_recipes.py --out /tmp/bench-recipes --speed --plot benchmarks/recipes.png
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import tempfile
import time

import torch

from synthgap.config import load_config
from synthgap.engine.train import train

# every recipe names each setting it depends on, so that changing cpu_small does not change the recipes
_GN = ["model.name=fasterrcnn_small_gn", "model.backbone_widths=[32,64,128,128]", "model.backbone_norm=group",
       "model.rpn_pre_nms_top_n_train=600", "model.rpn_post_nms_top_n_train=300", "optimizer.name=adamw",
       "optimizer.lr=1e-3", "optimizer.warmup_steps=50", "optimizer.weight_decay=1e-4"]
_FEW_ROIS = ["model.rpn_batch_size_per_image=64", "model.box_batch_size_per_image=32",
             "model.rpn_pre_nms_top_n_test=300", "model.rpn_post_nms_top_n_test=150"]
_S320 = ["data.image_size=[320,240]", "model.min_size=240", "model.max_size=320"]
_S160 = ["data.image_size=[160,120]", "model.min_size=120", "model.max_size=160"]
_S224 = ["data.image_size=[224,168]", "model.min_size=168", "model.max_size=224"]
_S8_160 = ["model.backbone_widths=[32,64,128]", "model.anchor_sizes=[12,20,32]"]
_COSINE = ["optimizer.lr_schedule=cosine"]
_DEMO_COSINE = _GN + _S160 + _FEW_ROIS + _S8_160 + _COSINE  # round 2: the demo's model with a cosine decay


def _rois(n: int, positive_fraction: float | None = None) -> list[str]:
    """Sampled RoIs per image and, when given, the largest share of them that are objects."""
    return [f"model.box_batch_size_per_image={n}"] + (
        [f"model.box_positive_fraction={positive_fraction}"] if positive_fraction else [])


# name -> (overrides on cpu_small, epochs)
RECIPES = {
    # the demo's model before this study (mobilenet_v3_large_320_fpn, BatchNorm, Adam 1e-3, demo RoI budgets)
    "mobilenet_320x240": (["model.name=fasterrcnn_mobilenet_v3_large_320_fpn", "optimizer.name=adam",
                           "optimizer.lr=1e-3", "optimizer.warmup_steps=0", "optimizer.weight_decay=0",
                           "model.rpn_pre_nms_top_n_train=300", "model.rpn_post_nms_top_n_train=150",
                           "model.rpn_batch_size_per_image=128", "model.box_batch_size_per_image=64",
                           "model.rpn_pre_nms_top_n_test=1000", "model.rpn_post_nms_top_n_test=1000"] + _S320, 5),
    # small GroupNorm CNN, stride 16, anchors 16-128, torchvision's RoI sampling budgets of 128
    "gn_320x240_rois128": (_GN + _S320 + ["model.anchor_sizes=[16,32,64,128]", "model.rpn_batch_size_per_image=128",
                                          "model.box_batch_size_per_image=128", "model.rpn_pre_nms_top_n_test=1000",
                                          "model.rpn_post_nms_top_n_test=1000"], 6),
    # + fewer RoIs sampled (64 RPN, 32 box) and proposals kept at test time (300 -> 150)
    "gn_320x240": (_GN + _S320 + _FEW_ROIS + ["model.anchor_sizes=[16,32,64,128]"], 6),
    # + anchors matched to the data's box sizes (sqrt(area) 25-74 px at 320x240, median 44)
    "gn_320x240_anchors": (_GN + _S320 + _FEW_ROIS + ["model.anchor_sizes=[24,40,64]"], 6),
    # half-size images (boxes 12-37 px): stride 8 (three stages) keeps a 20x15 feature map
    "gn_160x120_s8": (_GN + _S160 + _FEW_ROIS + ["model.backbone_widths=[32,64,128]",
                                                 "model.anchor_sizes=[12,20,32]"], 12),
    "gn_160x120_s8_lr2e-3": (_GN + _S160 + _FEW_ROIS + ["model.backbone_widths=[32,64,128]",
                                                        "model.anchor_sizes=[12,20,32]", "optimizer.lr=2e-3"], 12),
    "bn_160x120_s8": (_GN + _S160 + _FEW_ROIS + ["model.backbone_widths=[32,64,128]", "model.anchor_sizes=[12,20,32]",
                                                 "model.backbone_norm=batch"], 12),
    "nonorm_160x120_s8": (_GN + _S160 + _FEW_ROIS + ["model.backbone_widths=[32,64,128]",
                                                     "model.anchor_sizes=[12,20,32]", "model.backbone_norm=none"], 12),
    "gn_224x168": (_GN + _S224 + _FEW_ROIS + ["model.anchor_sizes=[16,28,48]"], 8),
    "gn_224x168_s8": (_GN + _S224 + _FEW_ROIS + ["model.backbone_widths=[32,64,128]",
                                                 "model.anchor_sizes=[16,28,48]"], 8),
    # the demo's model at 160x120 (gn_160x120_s8) with a cosine learning-rate decay over its 12 epochs
    "gn_160x120_s8_cosine": (_DEMO_COSINE, 12),
    "gn_160x120_s8_cosine_lr2e-3": (_DEMO_COSINE + ["optimizer.lr=2e-3"], 12),
    # 15-25 objects per frame: 32 sampled RoIs (8 positives) per image leave most objects out of each
    # step's classification loss; 128 (32 positives) train the classifier on more of them
    "gn_160x120_s8_cosine_roi128": (_DEMO_COSINE + _rois(128), 12),
    # ... and up to half of them objects (64 positives) instead of a quarter
    "gn_160x120_s8_cosine_roi128p50": (_DEMO_COSINE + _rois(128, 0.5), 12),
    "gn_160x120_s8_cosine_roi256p50": (_DEMO_COSINE + _rois(256, 0.5), 12),
    "gn_160x120_s8_cosine_roi128p50_lr2e-3": (_DEMO_COSINE + _rois(128, 0.5) + ["optimizer.lr=2e-3"], 12),
    "gn_160x120_s8_cosine_roi128p75": (_DEMO_COSINE + _rois(128, 0.75), 12),
    "gn_160x120_s8_cosine_roi128p50_head512": (_DEMO_COSINE + _rois(128, 0.5) + ["model.box_head_width=512"], 12),
    # half the positives' share at a quarter of the RoIs: the box head's cost back to gn_160x120_s8's
    "gn_160x120_s8_cosine_roi32p50": (_DEMO_COSINE + _rois(32, 0.5), 12),
    "gn_160x120_s8_cosine_roi32p50_b4": (_DEMO_COSINE + _rois(32, 0.5) + ["train.batch_size=4"], 12),
    "gn_160x120_s8_cosine_roi64p50": (_DEMO_COSINE + _rois(64, 0.5), 12),
    # the same over 20 epochs (the cosine stretched to the longer run)
    "gn_160x120_s8_cosine_roi128p50_20ep": (_DEMO_COSINE + _rois(128, 0.5), 20),
    # 3 convs at stride 8 instead of 1: receptive field 43 -> 75 px (context for the classifier)
    "gn_160x120_s8d3_cosine": (_DEMO_COSINE + ["model.backbone_depths=[1,1,3]"], 12),
    # wider backbone (1.5x channels)
    "gn_160x120_s8w_cosine": (_GN + _S160 + _FEW_ROIS + _COSINE + ["model.backbone_widths=[48,96,192]",
                                                                  "model.anchor_sizes=[12,20,32]"], 12),
    # 160x120 images upscaled 1.5x by the model's own resize (more feature cells per object)
    "gn_160x120_up240_s8_cosine": (_GN + _FEW_ROIS + _COSINE + ["data.image_size=[160,120]", "model.min_size=180",
                                                                "model.max_size=240", "model.backbone_widths=[32,64,128]",
                                                                "model.anchor_sizes=[18,30,48]"], 12),
}


def make_data(root: str, objects: str, frames: int, val_frames: int, size: str = "320x240") -> tuple[str, str]:
    """The demo's synthetic data (COCO format for fast reading), generated once into ``root``."""
    from synthgap.generate import default_class_names, generate

    lo, _, hi = objects.partition("-")
    opf = (int(lo), int(hi or lo))
    out = []
    for split, n, seed in (("train", frames, 0), ("val", val_frames, 2)):
        path = os.path.join(root, _folder(objects, size), split)
        if not os.path.exists(os.path.join(path, "annotations.json")):
            width, height = (int(v) for v in size.split("x"))
            generate(path, n, format="coco", seed=seed, width=width, height=height, classes=default_class_names()[:6],
                     objects_per_frame=opf, progress=False)
        out.append(path)
    return out[0], out[1]


def _folder(objects: str, size: str) -> str:
    return f"objects{objects}" if size == "320x240" else f"objects{objects}_{size}"


class _Curve(logging.Handler):
    """Collects (epoch, loss, AP50, images/s, seconds since start) from train()'s epoch log lines."""

    _LINE = re.compile(r"epoch (\d+): loss ([\d.]+), val AP [\d.]+ AP50 ([\d.]+), ([\d.]+) images/s")

    def __init__(self):
        super().__init__()
        self.rows, self.t0 = [], time.perf_counter()

    def emit(self, record):
        m = self._LINE.search(record.getMessage())
        if m:
            self.rows.append({"epoch": int(m[1]), "loss": float(m[2]), "ap50": float(m[3]),
                              "images_per_s": float(m[4]), "seconds": round(time.perf_counter() - self.t0, 1)})
            print(f"  {self.rows[-1]}", flush=True)


def run_recipe(name: str, train_dir: str, val_dir: str, frames: int, epochs: int | None = None) -> dict:
    overrides, default_epochs = RECIPES[name]
    cfg = load_config("cpu_small", ["train.batch_size=8"] + overrides + [f"train.epochs={epochs or default_epochs}",
                                                                     "train.tb_images=0"])
    curve = _Curve()
    logger = logging.getLogger("synthgap.engine.train")
    logger.setLevel(logging.INFO)
    logger.addHandler(curve)
    try:
        with tempfile.TemporaryDirectory() as ck:
            train(cfg, train_data=train_dir, val_data=val_dir, checkpoint_dir=ck, progress=False)
    finally:
        logger.removeHandler(curve)
    for row in curve.rows:
        row["image_steps"] = row["epoch"] * frames
    return {"recipe": name, "overrides": overrides, "threads": torch.get_num_threads(), "rows": curve.rows}


def _rate(r: dict) -> float:
    """Training images/s: the round-robin measurement (--speed) if made, else the runs' median."""
    return r.get("speed") or sorted(x["images_per_s"] for x in r["rows"])[len(r["rows"]) // 2]


def measure_speed(names: list[str], train_dir: str, steps: int, rounds: int) -> dict[str, float]:
    """Training images/s of each recipe's model (forward, backward, AdamW step on batches of 8 images),
    measured round-robin in one process so that load from other users hits every recipe alike."""
    from synthgap.data import open_dataset
    from synthgap.data.torch_dataset import TorchDetectionDataset, collate_detection
    from synthgap.models import build_model, num_classes_for

    ds = open_dataset(train_dir)
    runs = {}
    for name in names:
        cfg = load_config("cpu_small", RECIPES[name][0])
        torch.manual_seed(0)
        model = build_model(cfg.model, num_classes_for(ds.label_map)).train()
        data = TorchDetectionDataset(ds, image_size=tuple(cfg.data.image_size))
        batches = [collate_detection([data[i] for i in range(b * 8, b * 8 + 8)]) for b in range(steps)]
        runs[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4), batches)
    rates = {n: [] for n in names}
    for _ in range(rounds):
        for name, (model, optimizer, batches) in runs.items():
            t = time.perf_counter()
            for images, targets in batches:
                loss = sum(model(list(images), list(targets)).values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            rates[name].append(8 * steps / (time.perf_counter() - t))
    return {n: round(sorted(r)[len(r) // 2], 2) for n, r in rates.items()}


def table(results: list[dict]) -> str:
    lines = ["| recipe | training images/s | AP50 after each epoch of the training frames | best AP50 | "
             "training seconds to it |", "| --- | ---: | --- | ---: | ---: |"]
    for r in results:
        rows, rate = r["rows"], _rate(r)
        best = max(rows, key=lambda x: x["ap50"])
        curve = ", ".join(f"{x['ap50']:.3f}" for x in rows)
        lines.append(f"| {r['recipe']} | {rate:.1f} | {curve} | {best['ap50']:.3f} (ep {best['epoch']}) | "
                     f"{best['image_steps'] / rate:.0f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in results:
        xs = [0] + [x["image_steps"] for x in r["rows"]]
        # seconds of training alone: images seen / the median training rate (validation excluded)
        rate = _rate(r)
        ys = [0] + [x["ap50"] for x in r["rows"]]
        a.plot(xs, ys, marker="o", ms=3, label=r["recipe"])
        b.plot([x / rate for x in xs], ys, marker="o", ms=3, label=r["recipe"])
    a.set(xlabel="training images seen", ylabel="validation AP50", title="AP50 vs image-steps")
    b.set(xlabel="training seconds (images seen / measured images/s; shared machine: rough)", title="AP50 vs CPU time")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the data and one JSON per recipe")
    p.add_argument("--recipes", default="", help="comma-separated names, or 'all' (default: none, only report)")
    p.add_argument("--objects", default="4-8", help="objects per frame of the generated data, N or MIN-MAX")
    p.add_argument("--frames", type=int, default=320, help="training frames (the demo's synthetic set)")
    p.add_argument("--val-frames", type=int, default=60)
    p.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of the generated frames (the demo: 160x120)")
    p.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--plot", default=None, help="write the PNG plot of every finished recipe here")
    p.add_argument("--speed", action="store_true", help="measure training images/s of every recipe "
                   "(round-robin, --threads threads) and use it for the seconds axis")
    p.add_argument("--speed-steps", type=int, default=4, help="training steps of batch 8 per recipe and round")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train_dir, val_dir = make_data(args.out, args.objects, args.frames, args.val_frames, args.size)
    names = list(RECIPES) if args.recipes == "all" else [n for n in args.recipes.split(",") if n]
    for name in names:
        path = os.path.join(args.out, _folder(args.objects, args.size), f"{name}.json")
        if os.path.exists(path):
            continue
        print(f"{name}: {' '.join(RECIPES[name][0])}", flush=True)
        result = run_recipe(name, train_dir, val_dir, args.frames, args.epochs)
        with open(path + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(path + ".tmp", path)
    folder = os.path.join(args.out, _folder(args.objects, args.size))
    results = [json.load(open(os.path.join(folder, n))) for n in sorted(os.listdir(folder)) if n.endswith(".json")]
    order = {n: i for i, n in enumerate(RECIPES)}
    results.sort(key=lambda r: order.get(r["recipe"], len(order)))
    speed_file = os.path.join(folder, "speed.txt")
    if args.speed:
        # the recipes with a learning curve in this folder
        speed = measure_speed([r["recipe"] for r in results], train_dir, args.speed_steps, rounds=3)
        with open(speed_file, "w") as f:
            f.write(json.dumps({"threads": args.threads, "images_per_s": speed}))
    if os.path.exists(speed_file):
        speed = json.load(open(speed_file))["images_per_s"]
        for r in results:
            r["speed"] = speed.get(r["recipe"])
    print(table(results))
    if args.plot and results:
        plot(results, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
