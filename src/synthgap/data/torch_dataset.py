"""A torch `Dataset` over any synthgap dataset, in torchvision's detection convention.

Each item is ``(image, target)``: ``image`` a float32 tensor (3, H, W) in [0, 1]; ``target`` a dict
with ``boxes`` (K, 4) float32 **xyxy** pixels of the returned image, ``labels`` (K,) int64,
``image_id`` int64, ``area`` (K,) float32 and ``iscrowd`` (K,) int64.

Boxes partly outside the image are kept exactly in `Sample` (metrics, conversion) and clipped here,
for training only, the way torchvision's detection references do (``ConvertCocoPolysToMask``: clamp
x to [0, width] and y to [0, height], then drop boxes left with no width or height).

Images are decoded upright (EXIF orientation applied, `synthgap.data.images`). When the model shrinks
a photo to half its size or less (``model_resize``: torchvision's ``min_size`` / ``max_size`` rule),
the image is decoded at about the model's input size instead (a JPEG at a reduced DCT scale, then
resized) and its boxes are scaled by the same factors: the model then sees the same picture for a
fraction of the decoding time (BENCHMARKS.md, "Reduced-scale decode"). Nearer the model's size the image
is fed whole and the model resizes it, as before.

``skip_invalid``: an image that cannot be read (missing, truncated, not an image, or not the size its
annotation says) is skipped: the next readable image of the dataset takes its place (a batch keeps
its size; torchvision's models cannot take an empty one), and it is counted for the whole run in
`TorchDetectionDataset.skipped_images` (shared by the DataLoader's worker processes), which training logs
after each epoch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from synthgap.data.errors import DatasetError, SkipReport
from synthgap.data.images import decode_image, load_image  # noqa: F401  (load_image: re-exported)
from synthgap.data.sample import Sample, fits_int64

# what skip_invalid skips: the image file itself is unusable (annotation defects are the readers' to skip)
SKIPPABLE = frozenset(("missing_image", "unreadable_image", "image_too_large", "unsupported_image", "size_mismatch"))
# a reduced decode pays off when the model shrinks the image to this fraction of its size or less
# (JPEG's DCT scaling works in powers of two: 1/2, 1/4, 1/8)
REDUCE_AT = 0.5


def model_resize(model: torch.nn.Module) -> tuple[int, int] | None:
    """(min_size, max_size) pixels of a torchvision detection model's own resize
    (``GeneralizedRCNNTransform``; the largest ``min_size`` when it trains at several); None for a
    model without one."""
    transform = getattr(getattr(model, "module", model), "transform", None)  # DDP wraps the model
    min_size, max_size = getattr(transform, "min_size", None), getattr(transform, "max_size", None)
    if min_size is None or max_size is None:
        return None
    return int(max(min_size) if isinstance(min_size, (tuple, list)) else min_size), int(max_size)


def model_input_size(width: int, height: int, resize: tuple[int, int]) -> tuple[int, int]:
    """(width, height) pixels torchvision's transform turns a ``width`` x ``height`` image into: scaled by
    min(min_size / short side, max_size / long side)."""
    min_size, max_size = resize
    scale = min(min_size / min(width, height), max_size / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


class TorchDetectionDataset(torch.utils.data.Dataset):
    """Wrap a sequence of `Sample`s for torchvision detection models.

    Args:
        samples: any synthgap dataset (or list of samples).
        image_size: optional (width, height) in pixels to resize every image to; boxes are scaled
            with it. None keeps the original size (the model's own transform still resizes).
        drop_crowd: leave COCO crowd regions out of training targets (torchvision cannot use them).
        indices: optional subset of indices into ``samples`` (for splits without copying).
        model_resize: (min_size, max_size) pixels of the model's own resize (`model_resize` of the
            model); images the model shrinks to half or less are decoded at its input size, boxes
            scaled to match (module docstring). None: every image at its own size.
        skip_invalid: skip and count unreadable images instead of raising (module docstring).
    """

    def __init__(self, samples: Sequence[Sample], image_size: tuple[int, int] | None = None,
                 drop_crowd: bool = True, indices: Sequence[int] | None = None,
                 model_resize: tuple[int, int] | None = None, skip_invalid: bool = False):
        self.samples = samples
        self.image_size = image_size
        self.drop_crowd = drop_crowd
        self.indices = list(range(len(samples))) if indices is None else list(indices)
        self.model_resize = tuple(model_resize) if model_resize else None
        self.skip_invalid = skip_invalid
        # one flag per item in shared memory: DataLoader workers (forked or spawned) set it, the parent reads it
        self._unreadable = torch.zeros(len(self.indices), dtype=torch.bool).share_memory_() if skip_invalid else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        if self._unreadable is None:
            return self._item(index)
        n = len(self.indices)
        for k in range(n):
            j = (index + k) % n
            if bool(self._unreadable[j]):
                continue
            try:
                return self._item(j)
            except DatasetError as e:
                if e.kind not in SKIPPABLE:
                    raise
                self._unreadable[j] = True
        raise DatasetError(f"none of the {n} images can be read (skip_invalid skipped them all)",
                           field="image", kind="empty_dataset")

    def skipped_images(self) -> SkipReport:
        """The images skipped so far (by this process and its DataLoader workers), each with why."""
        report = SkipReport()
        if self._unreadable is not None:
            for j in torch.nonzero(self._unreadable).flatten().tolist():
                try:
                    self._item(j)
                except DatasetError as e:
                    report.add(e)
                else:  # readable again (the file was replaced meanwhile)
                    report.add(DatasetError("could not be read during training", file=self.samples[
                        self.indices[j]].image, field="image", kind="unreadable_image"))
        return report

    def _target_size(self, sample: Sample) -> tuple[int, int] | None:
        if self.image_size is not None:
            size = (int(self.image_size[0]), int(self.image_size[1]))
            return None if size == (sample.width, sample.height) else size
        if self.model_resize is not None and sample.width > 0 and sample.height > 0:
            size = model_input_size(sample.width, sample.height, self.model_resize)
            if size[0] <= REDUCE_AT * sample.width and size[1] <= REDUCE_AT * sample.height:
                return size
        return None

    def _item(self, index: int):
        sample = self.samples[self.indices[index]]
        target_size = self._target_size(sample)
        image, full = decode_image(sample.image, size=target_size)
        if full != (sample.width, sample.height):
            raise DatasetError(f"image is {full[0]}x{full[1]} but the annotation says "
                               f"{sample.width}x{sample.height}", file=sample.image, field="width/height",
                               kind="size_mismatch")
        if not fits_int64(sample.image_id) or sample.labels.dtype != np.int64:
            raise DatasetError("image and label ids must fit int64 to train or predict (torch tensors); this sample "
                               f"has image_id {sample.image_id} and labels {sample.labels.tolist()}",
                               file=sample.image, field="image_id/labels", kind="id_too_large")
        boxes = clip_boxes_xyxy(sample.boxes_xyxy, sample.width, sample.height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if self.drop_crowd:
            keep &= ~sample.iscrowd
        boxes, labels, areas = boxes[keep], sample.labels[keep], sample.box_areas[keep]
        if image.size != full:  # decoded smaller: boxes follow the image (exact factors of the two sizes)
            sx, sy = image.size[0] / full[0], image.size[1] / full[1]
            boxes = boxes * np.array([sx, sy, sx, sy])
            areas = areas * (sx * sy)
        array = np.asarray(image, dtype=np.uint8)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "image_id": torch.tensor(sample.image_id, dtype=torch.int64),
            "area": torch.as_tensor(areas, dtype=torch.float32),
            "iscrowd": torch.as_tensor(sample.iscrowd[keep], dtype=torch.int64),
        }
        return tensor, target


def clip_boxes_xyxy(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """xyxy pixel boxes clamped to the image, x to [0, width] and y to [0, height] (a copy)."""
    out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out


def collate_detection(batch):
    """Detection batches are lists (images differ in size and box count)."""
    return tuple(zip(*batch))
