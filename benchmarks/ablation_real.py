"""The cut-and-paste generator's randomizers, one at a time, scored on the real shelves' VALIDATION frames
(BENCHMARKS.md, "The study on real photographs"): synthetic only, no real photo.

    python benchmarks/ablation_real.py --splits DIR/data/splits --catalog DIR/data/snacks-catalog/<...>/project \\
        --out /tmp/ablation [--frames 300] [--steps 150] [--only chosen fixed_scale]

``--splits`` is the folder `synthgap demo --real` writes (shelves_train/val/test.json); only ``shelves_val.json``
is read: the test frames are never scored here. Each variant: generate (COCO, 360x640), train `cpu_real` at
640 px for ``--steps`` steps of batch 2 (one torch thread), print val AP50 / AP. Two variants side by side take
about 10 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import torch

from synthgap.config import load_config
from synthgap.engine.evaluate import evaluate_checkpoint
from synthgap.engine.train import train
from synthgap.generate import generate_paste
from synthgap.generate.assets import load_catalog
from synthgap.study.demo_real import paste_config

CHOSEN = paste_config(640)
VARIANTS = {
    "all_on": dataclasses.replace(CHOSEN, hue=15.0, brightness=0.2, contrast=0.2),
    "chosen": CHOSEN,
    "fixed_scale": dataclasses.replace(CHOSEN, object_height=(79.0, 79.0)),
    "no_blur_noise": dataclasses.replace(CHOSEN, blur=0.0, noise=0.0),
    "plain_background": dataclasses.replace(CHOSEN, hue=15.0, brightness=0.2, contrast=0.2, background="plain",
                                            distractors=(0, 0)),
    # scales and counts wider than the pool's (products 35-220 px, 4-40 per frame)
    "wide_scale": dataclasses.replace(CHOSEN, object_height=(35.0, 220.0), objects_per_frame=(4, 40)),
    "frozen_backbone": CHOSEN,
}
# training overrides of a variant (default: none): the demo's synthetic cells freeze the whole ImageNet backbone
TRAIN_OVERRIDES = {"frozen_backbone": ["model.trainable_backbone_layers=0"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--splits", required=True)
    p.add_argument("--catalog", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--only", nargs="*", default=list(VARIANTS))
    a = p.parse_args()
    torch.set_num_threads(1)
    catalog = load_catalog(a.catalog, single_class="product")
    val = os.path.join(a.splits, "shelves_val.json")
    for name in a.only:
        cfg = load_config("cpu_real", [f"train.epochs={max(1, round(a.steps * 2 / a.frames))}",
                                       "train.keep_checkpoints=0", *TRAIN_OVERRIDES.get(name, [])])
        folder = os.path.join(a.out, name)
        t0 = time.perf_counter()
        generate_paste(os.path.join(folder, "data"), a.frames, catalog, format="coco", width=360, height=640,
                       config=VARIANTS[name], progress=False, replace_out=True)
        train(cfg, train_data=os.path.join(folder, "data"), checkpoint_dir=os.path.join(folder, "ck"), no_val=True,
              overwrite=True, progress=False)
        done = evaluate_checkpoint(os.path.join(folder, "ck", "FasterRCNN.last.estimator"), val,
                                   os.path.join(folder, "val"), config=cfg, progress=False)
        stats = done["results"]["coco"].stats
        print(json.dumps({"variant": name, "val_AP50": round(stats["AP50"], 3), "val_AP": round(stats["AP"], 3),
                          "seconds": round(time.perf_counter() - t0)}))


if __name__ == "__main__":
    main()
