"""The one-command demo: a tiny dataset-evaluation study on procedural data, on a laptop CPU.

It generates a synthetic training set (SynthDet-style randomizers, SOLO) and a photo-like
"target" domain (a procedural stand-in for real photographs, COCO: a training split and a test
split), then runs the study: train on synthetic, train on target, fine-tune the synthetic model on
half of the target training split; every model is evaluated on the target test split with the COCO
and datasetinsights protocols, and the study ends with an HTML report. Sizes are chosen so the
whole demo fits in about 10 minutes on 2 CPU cores; a rerun reuses finished datasets and cells.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from synthgap import storage

log = logging.getLogger("synthgap.demo")

DONE_MARKER = ".synthgap-complete"  # written last into each generated dataset folder

# Smaller RPN/RoI sampling budgets than cpu_small: 1.28 s per training step (batch 8, 320x240, 2 cores)
# instead of 1.87 s, measured here; small scenes have few objects, so few proposals are needed.
DEMO_MODEL_OVERRIDES = ["model.rpn_pre_nms_top_n_train=300", "model.rpn_post_nms_top_n_train=150",
                        "model.box_batch_size_per_image=64"]


@dataclass(frozen=True)
class DemoSize:
    """Frames per dataset, classes and training length of one demo size."""

    synthetic_frames: int
    target_train_frames: int
    target_test_frames: int
    classes: int              # the first N UnityGroceries product names
    synthetic_epochs: int
    real_epochs: int
    finetune_epochs: int
    width: int = 320          # pixels
    height: int = 240


SIZES = {
    # the README's demo: ~6 minutes on 2 cores (measured; the goal is <= 10)
    "default": DemoSize(synthetic_frames=320, target_train_frames=100, target_test_frames=60, classes=6,
                        synthetic_epochs=3, real_epochs=8, finetune_epochs=6),
    # a smoke run for tests: about a minute
    "tiny": DemoSize(synthetic_frames=16, target_train_frames=8, target_test_frames=6, classes=3,
                     synthetic_epochs=1, real_epochs=1, finetune_epochs=1, width=160, height=120),
}


def generate_once(out: str, *, progress: bool, **kwargs) -> str:
    """Generate a dataset into ``out`` unless a previous run finished it (marker file written last)."""
    from synthgap.generate import generate

    marker = storage.join(out, DONE_MARKER)
    if storage.exists(marker):
        log.info("reusing %s", out)
        return out
    if storage.exists(out):  # an interrupted earlier run: start that dataset again
        storage.remove(out)
    generate(out, progress=progress, **kwargs)
    storage.write_text(marker, "complete\n")
    return out


def run_demo(out: str, size: str = "default", progress: bool = True) -> str:
    """Generate the data, run the tiny study into ``out``; returns the path of the HTML report."""
    from synthgap.generate import default_class_names
    from synthgap.study import StudyConfig, StudyData, run_study

    s = SIZES[size]
    classes = default_class_names()[:s.classes]
    data = storage.join(out, "data")
    common = dict(width=s.width, height=s.height, classes=classes, progress=progress)
    synthetic = generate_once(storage.join(data, "synthetic"), format="solo", frames=s.synthetic_frames, seed=0,
                              style="synthetic", **common)
    target_train = generate_once(storage.join(data, "target-train"), format="coco", frames=s.target_train_frames,
                                 seed=1, style="target", **common)
    target_test = generate_once(storage.join(data, "target-test"), format="coco", frames=s.target_test_frames,
                                seed=2, style="target", **common)
    size_overrides = [f"data.image_size=[{s.width},{s.height}]", f"model.min_size={s.height}",
                      f"model.max_size={s.width}", *DEMO_MODEL_OVERRIDES]
    cfg = StudyConfig(
        name=f"synthgap demo: synthetic vs target-domain training ({s.classes} classes)",
        datasets=StudyData(synthetic=synthetic, real_train=target_train, real_test=target_test,
                           synthetic_format="solo", real_format="coco"),
        cells=["synthetic", "real", "finetune"],
        fractions=[0.5],
        seeds=[0],
        train_config="cpu_small",
        overrides=size_overrides,
        synthetic_overrides=[f"train.epochs={s.synthetic_epochs}"],
        real_overrides=[f"train.epochs={s.real_epochs}"],
        finetune_overrides=[f"train.epochs={s.finetune_epochs}", "optimizer.lr=2.0e-4"],
    )
    return run_study(cfg, storage.join(out, "study"), progress=progress)  # run_study validates it
