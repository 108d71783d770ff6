"""Does the ImageNet backbone help the procedural demo (`make demo`)? Target-only training, measured on
VALIDATION frames of the procedural target (never the demo's test split), both models side by side.

    HF_HUB_OFFLINE=1 python benchmarks/demo_imagenet.py --out /tmp/demo_imagenet

Generates 25 target-style training frames (seed 11) and 40 validation frames (seed 12) at the demo's 160x120
with its 6 classes, then trains each model for 100 steps of batch 8 (the demo's ``real_steps``, 32 epochs),
one torch thread each, two processes side by side: `cpu_small` from scratch (the demo's anchors 12/20/32) and
`cpu_real` (ImageNet EfficientNet-Lite0 + FPN, anchors 8/16/32/64 at this size). Prints val AP50 / AP and
training seconds per model, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODELS = {
    "cpu_small": ["model.anchor_sizes=[12,20,32]"],
    "cpu_real": ["model.anchor_sizes=[8,16,32,64]", "train.batch_size=8", "eval.batch_size=4"],
}
SIZE = ["data.image_size=[160,120]", "model.min_size=120", "model.max_size=160", "train.keep_checkpoints=0"]
STEPS, BATCH, TRAIN_FRAMES = 100, 8, 25


def one(out: str, recipe: str) -> None:
    import torch

    from synthgap.config import load_config
    from synthgap.engine.evaluate import evaluate_checkpoint
    from synthgap.engine.train import train

    torch.set_num_threads(1)
    cfg = load_config(recipe, [*SIZE, *MODELS[recipe], f"train.epochs={STEPS * BATCH // TRAIN_FRAMES}"])
    t0 = time.perf_counter()
    train(cfg, train_data=os.path.join(out, "target-train"), checkpoint_dir=os.path.join(out, f"ck_{recipe}"),
          no_val=True, overwrite=True, progress=False)
    seconds = time.perf_counter() - t0
    done = evaluate_checkpoint(os.path.join(out, f"ck_{recipe}", "FasterRCNN.last.estimator"),
                               os.path.join(out, "target-val"), os.path.join(out, f"val_{recipe}"), config=cfg,
                               progress=False)
    stats = done["results"]["coco"].stats
    print(json.dumps({"recipe": recipe, "train_s": round(seconds), "val_AP50": round(stats["AP50"], 3),
                      "val_AP": round(stats["AP"], 3)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--one", choices=list(MODELS), help=argparse.SUPPRESS)  # a child process
    a = p.parse_args()
    if a.one:
        return one(a.out, a.one)
    from synthgap.generate import default_class_names, generate

    common = dict(width=160, height=120, classes=default_class_names()[:6], progress=False, replace_out=True)
    generate(os.path.join(a.out, "target-train"), TRAIN_FRAMES, format="coco", seed=11, style="target", **common)
    generate(os.path.join(a.out, "target-val"), 40, format="coco", seed=12, style="target", **common)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen([sys.executable, __file__, "--out", a.out, "--one", r], env=env,
                                 stdout=subprocess.PIPE, text=True) for r in MODELS]
    rows = {}
    for child in children:
        out, _ = child.communicate()
        row = json.loads(out.strip().splitlines()[-1])
        rows[row["recipe"]] = row
        print(out.strip().splitlines()[-1])
    small, real = rows["cpu_small"], rows["cpu_real"]
    print(f"ImageNet Lite0 / from scratch: val AP50 x{real['val_AP50'] / max(small['val_AP50'], 1e-9):.2f}, "
          f"training time x{real['train_s'] / max(small['train_s'], 1):.2f}")


if __name__ == "__main__":
    main()
