"""The one record type every reader yields and every consumer takes.

Box convention: ``Sample.boxes`` are **xywh in float pixels** (x, y = top-left corner, w, h = size),
the native convention of COCO and of every Unity format, so values read from a file are kept
exactly. ``xywh_to_xyxy`` below is the only place a conversion happens (torchvision wants xyxy).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from synthgap.data.errors import DatasetError

# A box may overhang the image border by this much (pixels) before it is called "outside the image":
# renderers and annotators round to whole pixels, so a box ending at width + 0.5 is normal.
BORDER_TOLERANCE_PX = 1.0
# Largest image side (pixels) a reader accepts: far above any camera (a 2**20 px side is a 1-terapixel
# square), far below sizes that only a corrupt or hostile file holds (width 2**70, a 1e10 px sensor).
MAX_IMAGE_SIDE_PX = 1 << 20
_INT64 = np.iinfo(np.int64)


def id_array(values: Any) -> np.ndarray:
    """1-D array of integer ids: int64 when every id fits (the usual case), else dtype=object holding
    Python ints, so ids of any size (128-bit uuid ints in Unity's COCO converter output) stay exact.
    ``.tolist()`` gives Python ints either way."""
    if isinstance(values, np.ndarray) and values.dtype == np.int64:
        return values.reshape(-1)
    if isinstance(values, np.ndarray) and values.dtype.kind == "u" and values.size \
            and int(values.max()) > _INT64.max:  # int64 conversion would wrap silently
        return np.array([int(v) for v in values.reshape(-1)], dtype=object)
    try:
        return np.asarray(values, dtype=np.int64).reshape(-1)
    except OverflowError:
        return np.array([operator.index(v) for v in np.asarray(values, dtype=object).reshape(-1)], dtype=object)


def compact_ids(values: Sequence[int] | np.ndarray) -> tuple[list[int], np.ndarray]:
    """(sorted unique ids as Python ints, int64 index of each value into them): the compact form for
    code that needs numeric arrays, whatever the ids' size. ``ids[index[i]] == values[i]``."""
    uniq, index = np.unique(id_array(values), return_inverse=True)
    return [int(v) for v in uniq.tolist()], index.astype(np.int64).reshape(-1)


def fits_int64(value: int) -> bool:
    return _INT64.min <= value <= _INT64.max


@dataclass(frozen=True, eq=False)
class Sample:
    """One image (one camera capture) with its 2D boxes.

    Attributes:
        image: path or URI of the image file.
        width, height: image size in pixels.
        boxes: float64 array (N, 4), **xywh** pixels.
        labels: (N,) ids of the dataset's label map: int64, or dtype=object Python ints when an id does
            not fit int64 (see `id_array`).
        instance_ids: per-box instance id as found in the source (int or str); () when unknown.
        image_id: integer id of the image, unique within its dataset (COCO ``id``, else its index); a
            Python int of any size, kept exactly as written.
        iscrowd: bool array (N,); COCO crowd regions (never matched as false positives).
        areas: float64 array (N,) of annotated areas in pixels^2, or None (then area = w * h).
        segmentation: kind -> path/URI of segmentation images (e.g. ``{"instance": ".../x.png"}``).
        masks: per-box instance masks (`synthgap.data.masks`: polygon, bitmap or RLE, decoded on demand),
            ``None`` for a box without one; () when the source has no masks.
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
    masks: tuple = ()

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        labels = id_array(self.labels)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "image_id", int(operator.index(self.image_id)))
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


def overhanging(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bool mask of the xywh boxes that run past the image edge by more than BORDER_TOLERANCE_PX while
    still covering part of the image. Unity's own converter writes such boxes (y + h = 251 on a 240 px
    image): they are kept exactly as written (metrics, conversion), reported by `info` as a warning,
    and clipped for training only (`synthgap.data.torch_dataset`)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x, y, w, h = boxes.T
    tol = BORDER_TOLERANCE_PX
    return (x < -tol) | (y < -tol) | (x + w > width + tol) | (y + h > height + tol)


def validate_sample(sample: Sample, label_map: Mapping[int, str], *, file: str, record: object) -> None:
    """Raise DatasetError (naming file, record and field) when the sample is not usable ground truth.

    Checks: image size positive integers of at most MAX_IMAGE_SIDE_PX, equal-length per-box arrays,
    finite boxes with positive width and height, some of each box inside the image (a box partly
    outside is kept: see `overhanging`), and label ids present in the label map.
    """
    for name, value in (("width", sample.width), ("height", sample.height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise DatasetError(f"image size must be positive integers, got {sample.width}x{sample.height}",
                               file=file, record=record, field=name, kind="bad_image_size")
        if value > MAX_IMAGE_SIDE_PX:
            raise DatasetError(f"image {name} {value} px is larger than any real image (limit {MAX_IMAGE_SIDE_PX} px)",
                               file=file, record=record, field=name, kind="bad_image_size")
    n = len(sample.boxes)
    if len(sample.labels) != n or len(sample.iscrowd) != n or (sample.areas is not None and len(sample.areas) != n) \
            or (sample.instance_ids and len(sample.instance_ids) != n) or (sample.masks and len(sample.masks) != n):
        raise DatasetError("per-box arrays (boxes, labels, iscrowd, areas, instance_ids, masks) differ in length",
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
        if x >= sample.width or y >= sample.height or x + w <= 0 or y + h <= 0:
            raise DatasetError(f"box {[x, y, w, h]} (xywh) has no area inside the {sample.width}x{sample.height} "
                               "image", file=file, record=box_record, field="bbox", kind="box_outside_image")
        label = int(sample.labels[i])
        if label not in label_map:
            raise DatasetError(f"label id {label} is not in the label map", file=file, record=box_record,
                               field="label_id", kind="unknown_label")
