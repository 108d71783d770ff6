"""The one record type every reader yields and every consumer takes.

Box convention: ``Sample.boxes`` are **xywh in float pixels** (x, y = top-left corner, w, h = size),
the native convention of COCO and of every Unity format, so values read from a file are kept
exactly. ``xywh_to_xyxy`` below is the only place a conversion happens (torchvision wants xyxy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from synthgap.data.errors import DatasetError

# A box may overhang the image border by this much (pixels) before it is called "outside the image":
# renderers and annotators round to whole pixels, so a box ending at width + 0.5 is normal.
BORDER_TOLERANCE_PX = 1.0


@dataclass(frozen=True, eq=False)
class Sample:
    """One image (one camera capture) with its 2D boxes.

    Attributes:
        image: path or URI of the image file.
        width, height: image size in pixels.
        boxes: float64 array (N, 4), **xywh** pixels.
        labels: int64 array (N,), ids of the dataset's label map.
        instance_ids: per-box instance id as found in the source (int or str); () when unknown.
        image_id: integer id of the image, unique within its dataset (COCO ``id``, else its index).
        iscrowd: bool array (N,); COCO crowd regions (never matched as false positives).
        areas: float64 array (N,) of annotated areas in pixels^2, or None (then area = w * h).
        segmentation: kind -> path/URI of segmentation images (e.g. ``{"instance": ".../x.png"}``).
        metadata: free-form per-image information (sequence, step, sensor, source file, ...).
    """

    image: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    image_id: int = 0
    instance_ids: tuple = ()
    iscrowd: np.ndarray | None = None
    areas: np.ndarray | None = None
    segmentation: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", labels)
        if self.iscrowd is None:
            object.__setattr__(self, "iscrowd", np.zeros(len(boxes), dtype=bool))
        else:
            object.__setattr__(self, "iscrowd", np.asarray(self.iscrowd, dtype=bool).reshape(-1))
        if self.areas is not None:
            object.__setattr__(self, "areas", np.asarray(self.areas, dtype=np.float64).reshape(-1))

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def boxes_xyxy(self) -> np.ndarray:
        """Boxes as (x1, y1, x2, y2) float64 pixels, for torchvision."""
        return xywh_to_xyxy(self.boxes)

    @property
    def box_areas(self) -> np.ndarray:
        """Annotated areas when the source has them, else w * h (COCOeval's rule)."""
        if self.areas is not None:
            return self.areas
        return self.boxes[:, 2] * self.boxes[:, 3]


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(x, y, w, h) -> (x1, y1, x2, y2); the single place synthgap converts box conventions."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = boxes.copy()
    out[:, 2:] += boxes[:, :2]
    return out


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (x, y, w, h); used for model outputs going to COCO results."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = boxes.copy()
    out[:, 2:] -= boxes[:, :2]
    return out


def validate_sample(sample: Sample, label_map: Mapping[int, str], *, file: str, record: object) -> None:
    """Raise DatasetError (naming file, record and field) when the sample is not usable ground truth.

    Checks: positive image size, equal-length per-box arrays, finite boxes with positive width and
    height, boxes inside the image (within BORDER_TOLERANCE_PX), and label ids present in the label map.
    """
    if not (isinstance(sample.width, (int, np.integer)) and sample.width > 0
            and isinstance(sample.height, (int, np.integer)) and sample.height > 0):
        raise DatasetError(f"image size must be positive integers, got {sample.width}x{sample.height}",
                           file=file, record=record, field="width/height", kind="bad_image_size")
    n = len(sample.boxes)
    if len(sample.labels) != n or len(sample.iscrowd) != n or (sample.areas is not None and len(sample.areas) != n) \
            or (sample.instance_ids and len(sample.instance_ids) != n):
        raise DatasetError("per-box arrays (boxes, labels, iscrowd, areas, instance_ids) differ in length",
                           file=file, record=record, field="boxes", kind="inconsistent")
    for i in range(n):
        x, y, w, h = (float(v) for v in sample.boxes[i])
        box_record = f"{record} box {i}"
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise DatasetError(f"box {[x, y, w, h]} has a non-finite value", file=file, record=box_record,
                               field="bbox", kind="box_not_finite")
        if w <= 0 or h <= 0:
            raise DatasetError(f"box {[x, y, w, h]} (xywh) has zero or negative size", file=file,
                               record=box_record, field="bbox", kind="box_non_positive")
        tol = BORDER_TOLERANCE_PX
        if x < -tol or y < -tol or x + w > sample.width + tol or y + h > sample.height + tol:
            raise DatasetError(f"box {[x, y, w, h]} (xywh) lies outside the {sample.width}x{sample.height} image",
                               file=file, record=box_record, field="bbox", kind="box_outside_image")
        label = int(sample.labels[i])
        if label not in label_map:
            raise DatasetError(f"label id {label} is not in the label map", file=file, record=box_record,
                               field="label_id", kind="unknown_label")
