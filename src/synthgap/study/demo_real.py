"""The study on real photographs: is cut-and-paste synthetic data made from real product packshots worth it for
a detector of real store shelves? (`synthgap demo --real`)

Data, fetched from their pinned GitHub commits and verified file by file (`synthgap.io.download`):
``grocery-store-shelves`` (37 real shelf photos, frames of three phone videos, 926 ``product`` boxes, 15 of
zero width skipped) and ``snacks-catalog`` (83 e-commerce packshots, each with a pixel mask).

The split is by video, because frames of one video are near-copies of each other (`synthgap.data.leakage`
checks it before anything trains): the 12 frames of videos IMG_1867 and IMG_1868 are the test set, scored
once per model and never used to choose anything; video IMG_1866 is the real training pool, less its last
segment (frames from 1331 on, after a 390-frame gap in the video) held out as validation frames. Generator
settings, budgets and training lengths were chosen on those validation frames (BENCHMARKS.md, "The study on
real photographs").

The synthetic training set pastes the packshots' cut-outs onto procedural shelves (`synthgap.generate.paste`,
one class ``product``, sizes matched to the pool's boxes). The study then runs synthetic only, real only and
synthetic then real at two real budgets (about 5 photos, and the whole pool) over two seeds side by side, on
ImageNet EfficientNet-Lite0 + FPN (`cpu_real`, input long side `DemoRealSize.long_side`), every model also
scored in its own domain, with the feature distance and the report.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from synthgap.data import open_dataset
from synthgap.data.coco import CocoWriter
from synthgap.errors import DatasetError
from synthgap.generate import generate_paste
from synthgap.generate.assets import load_catalog
from synthgap.generate.paste import PasteConfig
from synthgap.io import locks, storage
from synthgap.io.download import download_dataset
from synthgap.study.config import StudyConfig, StudyData
from synthgap.study.demo import DONE_MARKER

log = logging.getLogger(__name__)

SHELVES, CATALOG = "grocery-store-shelves", "snacks-catalog"
FRAME_NAME = re.compile(r"^(IMG_\d+)_chips_frame_(\d+)\.")  # video, frame number
TEST_VIDEOS = ("IMG_1867", "IMG_1868")  # the test set: videos the training pool never saw
VAL_FROM_FRAME = 1331  # the pool video's frames from here on (its last segment) are the validation frames


@dataclass(frozen=True)
class DemoRealSize:
    """One size of the real-photo study: the synthetic set, the training lengths and the input size.

    ``synthetic_steps`` / ``real_steps`` are optimizer steps of batch 2 (`cpu_real`); every real and fine-tune
    cell gets ``real_steps`` whatever its budget (the two arms of a comparison differ only in their start)."""

    synthetic_frames: int
    synthetic_steps: int
    real_steps: int
    fractions: tuple[float, ...]     # of the real pool: about 5 photos, and all of it
    seeds: tuple[int, ...] = (0, 1)
    long_side: int = 640             # pixels of the model's input (the photos are 1080x1920)
    jobs: int = 2                    # seeds side by side, one torch thread each
    feature_images: int = 50


SIZES = {
    "default": DemoRealSize(synthetic_frames=300, synthetic_steps=150, real_steps=50, fractions=(0.3, 1.0)),
    # a smoke run for tests: too short to learn (its cells are flagged as such)
    "tiny": DemoRealSize(synthetic_frames=6, synthetic_steps=1, real_steps=1, fractions=(0.3, 1.0), long_side=256,
                         feature_images=4),
}


def paste_config(long_side: int) -> PasteConfig:
    """The generator's randomizers for the shelves, at a frame whose long side is ``long_side`` pixels:
    product heights matched to the pool's boxes (median 79 px, 5-95 % 42-106 px at a 640 px long side), the
    shelf layout, and the rest chosen on the validation frames (BENCHMARKS.md's ablation): blur, noise,
    rotation, overlap, procedural backgrounds and distractors on; the per-product colour randomizers (hue,
    brightness, contrast) off: the packshots' own colours are the shelves' colours, and randomizing them
    cost validation AP50 (0.790 with them, 0.813 without)."""
    s = long_side / 640
    return PasteConfig(layout="shelf", object_height=(45 * s, 110 * s), objects_per_frame=(10, 40), hue=0.0,
                       brightness=0.0, contrast=0.0)


def _video_split(root: str, out: str) -> dict[str, str]:
    """COCO files (referencing the original photos) of the pool, validation and test frames: role -> path."""
    ds = open_dataset(root, "supervisely", skip_invalid=True)
    if len(ds.skipped):
        log.info("%s: %s (zero-width boxes of the source labels)", root, ds.skipped.summary())
    paths = {role: storage.join(out, f"shelves_{role}.json") for role in ("train", "val", "test")}
    writers = {role: CocoWriter(path, ds.label_map) for role, path in paths.items()}
    for sample in ds:
        m = FRAME_NAME.match(sample.image.replace("\\", "/").rsplit("/", 1)[-1])
        if m is None:
            raise DatasetError("expected a video frame name like IMG_1866_chips_frame_00065.jpg", file=sample.image,
                               field="file_name")
        video, frame = m.group(1), int(m.group(2))
        role = "test" if video in TEST_VIDEOS else "val" if frame >= VAL_FROM_FRAME else "train"
        writers[role].add(sample)
    for role, w in writers.items():
        log.info("real %s: %d photos", role, len(w))
        w.close()
    return paths


def leakage_check(paths: dict[str, str], out: str) -> list[dict]:
    """The near-copy check of the test photos against the pool (pHash, and ImageNet Lite0 features: the frames
    of one video are other views, not copies, which only the features catch), logged and written to
    ``out/leakage.json``; returns the reports' dicts."""
    from synthgap.data.leakage import dataset_leakage
    from synthgap.stats.features import image_features, imagenet_backbone

    reports = dataset_leakage(paths["train"], paths["test"], features=image_features(imagenet_backbone()),
                              pool_name="the real training pool")
    for r in reports:
        log.info("leakage check: %s", r.verdict())
    docs = [r.to_dict() for r in reports]
    storage.write_json(storage.join(out, "leakage.json"), docs)
    return docs


def real_study_config(s: DemoRealSize, synthetic: str, paths: dict[str, str]) -> StudyConfig:
    """The StudyConfig of size ``s``: cpu_real at ``s.long_side``, anchors scaled with it."""
    scale = s.long_side / 640
    anchors = [max(4, round(a * scale)) for a in (32, 64, 128, 256)]
    overrides = [f"model.min_size={s.long_side}", f"model.max_size={s.long_side}", f"model.anchor_sizes={anchors}",
                 "train.keep_checkpoints=0"]
    return StudyConfig(
        name="Real shelf photos: is cut-and-paste synthetic data from real packshots worth it?",
        target_name="real",
        datasets=StudyData(synthetic=synthetic, real_train=paths["train"], real_val=paths["val"],
                           real_test=paths["test"], synthetic_format="coco", real_format="coco"),
        cells=["synthetic", "real", "finetune"],
        fractions=list(s.fractions),
        seeds=list(s.seeds),
        jobs=s.jobs,
        synthetic_holdout=0.1,
        real_steps=s.real_steps,
        train_config="cpu_real",
        overrides=overrides,
        # the ImageNet backbone frozen while learning from synthetic images (Hinterstoisser et al. 2018, "On
        # pre-trained image features and synthetic images for deep learning"): on the validation frames as good
        # as training its last three levels (AP50 0.807 vs 0.813, AP 0.373 vs 0.363) and 30 % faster (115 vs 164 s)
        synthetic_overrides=[f"train.epochs={max(1, round(s.synthetic_steps * 2 / (s.synthetic_frames * 0.9)))}",
                             "model.trainable_backbone_layers=0"],
        finetune_overrides=[],
        feature_images=s.feature_images,
    )


def run_real_demo(out: str, size: str = "default", *, shelves_source: str | None = None,
                  catalog_source: str | None = None, progress: bool = True) -> str:
    """Fetch and verify the two real projects (``*_source``: a mirror URL of the archive or a local copy;
    default GitHub), split the shelves by video, generate the synthetic set and run the study into ``out``;
    returns the study folder."""
    from synthgap.study.runner import run_study

    with locks.lock_folder(out, "synthgap demo --real"):
        s = SIZES[size]
        data = storage.join(out, "data")
        shelves = download_dataset(SHELVES, data, source_uri=shelves_source, progress=progress).folder
        catalog = download_dataset(CATALOG, data, source_uri=catalog_source, progress=progress).folder
        paths = _video_split(storage.join(shelves, "project"), storage.join(data, "splits"))
        leakage_check(paths, data)
        synthetic = storage.join(data, "synthetic")
        if not storage.exists(storage.join(synthetic, DONE_MARKER)):
            width, height = round(s.long_side * 9 / 16), s.long_side  # the photos' portrait 9:16
            generate_paste(synthetic, s.synthetic_frames, load_catalog(storage.join(catalog, "project"),
                                                                         single_class="product"),
                           format="coco", seed=0, width=width, height=height, config=paste_config(s.long_side),
                           progress=progress, replace_out=True)
            storage.write_text(storage.join(synthetic, DONE_MARKER), "complete\n")
        run_study(real_study_config(s, synthetic, paths), storage.join(out, "study"), progress=progress)
        return storage.join(out, "study")
