"""The one-command demo: a small dataset-evaluation study on procedural data, on a laptop CPU.

It generates a synthetic training set (SynthDet-style randomizers, SOLO) and a photo-like
"target" domain (a procedural stand-in for real photographs, COCO: a training split and a test
split), then runs the study at one small real-data budget over two seeds: train on synthetic, train on
the target subset from scratch, and fine-tune the synthetic model on the same subset; every model is
evaluated on the target test split (COCO and datasetinsights protocols) and in its own domain (held-out
synthetic images / held-out target-train images), and the study ends with an HTML report and a summary
that says what the numbers mean. The two seeds train side by side, one process per core. Sizes are
chosen so the whole demo fits in 10 minutes on 2 CPU cores and the synthetic model reaches AP50 0.5 on
its own held-out frames (BENCHMARKS.md, "The demo"); a rerun reuses finished datasets and cells.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from synthgap.io import locks, storage
from synthgap.generate import default_class_names, generate
from synthgap.study import StudyConfig, StudyData, run_study

log = logging.getLogger(__name__)

DONE_MARKER = ".synthgap-complete"  # written last into each generated dataset folder
# what the printed summary, summary.txt and the report call the target domain: generated, not photographs
# (docs/generator.md: it must not be presented as real data)
TARGET_NAME = "target (procedural stand-in)"

# cpu_small (fasterrcnn_small_gn, tuned at 224x168) at the demo's 160x120 pixels: anchors scaled to the
# boxes at that size (benchmarks/bench_recipes.py "gn_160x120_s8": about twice the images/s of 224x168 for
# the same AP50 per image seen).
DEMO_MODEL_OVERRIDES = ["model.anchor_sizes=[12,20,32]"]


@dataclass(frozen=True)
class DemoSize:
    """Frames per dataset, classes, the real-data budget and training length of one demo size.

    ``real_steps`` optimizer steps, with the same recipe (cpu_small; ``finetune_lr`` None), for both arms of
    the comparison (target-only and synthetic-then-target) at every fraction: they differ only in their
    initial weights."""

    synthetic_frames: int
    target_train_frames: int
    target_test_frames: int
    classes: int                      # the first N UnityGroceries product names
    synthetic_epochs: int
    real_steps: int
    fractions: tuple[float, ...]      # of the target training pool
    seeds: tuple[int, ...]
    width: int = 160                  # pixels
    height: int = 120
    synthetic_holdout: float = 0.1    # synthetic images held out for the synthetic model's in-domain test
    real_holdout: float = 0.2         # target-train images held out for the target models' in-domain test
    finetune_lr: Optional[float] = None  # None: the same recipe as target-only (only the start differs)
    jobs: int = 2                     # seeds trained side by side, one torch thread each (StudyConfig.jobs)


SIZES = {
    # the README's demo: the goal is <= 10 minutes on 2 cores (BENCHMARKS.md has the measured time)
    "default": DemoSize(synthetic_frames=720, target_train_frames=100, target_test_frames=50, classes=6,
                        synthetic_epochs=9, real_steps=100, fractions=(0.25,), seeds=(0, 1), width=160, height=120),
    # a smoke run for tests: a few minutes (too short to learn: its cells are flagged as such)
    "tiny": DemoSize(synthetic_frames=16, target_train_frames=10, target_test_frames=6, classes=3,
                     synthetic_epochs=1, real_steps=1, fractions=(0.5,), seeds=(0, 1), width=160, height=120),
}


def generate_once(out: str, *, progress: bool, **kwargs) -> str:
    """Generate a dataset into ``out`` unless a previous run finished it (marker file written last)."""
    marker = storage.join(out, DONE_MARKER)
    if storage.exists(marker):
        log.info("reusing %s", out)
        return out
    if storage.exists(out):  # an interrupted earlier run: start that dataset again
        storage.remove(out)
    generate(out, progress=progress, **kwargs)
    storage.write_text(marker, "complete\n")
    return out


def demo_study_config(s: DemoSize, synthetic: str, target_train: str, target_test: str):
    """The demo's StudyConfig for size ``s`` over the three generated datasets."""
    size_overrides = [f"data.image_size=[{s.width},{s.height}]", f"model.min_size={s.height}",
                      f"model.max_size={s.width}", *DEMO_MODEL_OVERRIDES,
                      "train.keep_checkpoints=0"]  # the study reads only `last`: no epoch files on disk
    return StudyConfig(
        name=f"synthgap demo: is synthetic pretraining worth it for the target domain? ({s.classes} classes)",
        target_name=TARGET_NAME,
        datasets=StudyData(synthetic=synthetic, real_train=target_train, real_test=target_test,
                           synthetic_format="solo", real_format="coco"),
        cells=["synthetic", "real", "finetune"],
        fractions=list(s.fractions),
        seeds=list(s.seeds),
        jobs=s.jobs,
        synthetic_holdout=s.synthetic_holdout,
        real_holdout=s.real_holdout,
        real_steps=s.real_steps,
        train_config="cpu_small",
        overrides=size_overrides,
        synthetic_overrides=[f"train.epochs={s.synthetic_epochs}"],
        finetune_overrides=[] if s.finetune_lr is None else [f"optimizer.lr={s.finetune_lr}"],
    )


def run_demo(out: str, size: str = "default", progress: bool = True) -> str:
    """Generate the data, run the small study into ``out``; returns the study folder (``out/study``; the
    `synthgap demo` command then writes its report with `synthgap.report.write_study_report`)."""
    with locks.lock_folder(out, "synthgap demo"):  # one demo run per folder at a time (synthgap.io.locks)
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
        cfg = demo_study_config(s, synthetic, target_train, target_test)
        run_study(cfg, storage.join(out, "study"), progress=progress)  # run_study validates it
        return storage.join(out, "study")
