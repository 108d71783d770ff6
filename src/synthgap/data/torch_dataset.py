"""A torch `Dataset` over any synthgap dataset, in torchvision's detection convention.

Each item is ``(image, target)``: ``image`` a float32 tensor (3, H, W) in [0, 1]; ``target`` a dict
with ``boxes`` (K, 4) float32 **xyxy** pixels of the returned image, ``labels`` (K,) int64,
``image_id`` int64, ``area`` (K,) float32 and ``iscrowd`` (K,) int64.

Boxes partly outside the image are kept exactly in `Sample` (metrics, conversion) and clipped here,
for training only, the way torchvision's detection references do (``ConvertCocoPolysToMask``: clamp
x to [0, width] and y to [0, height], then drop boxes left with no width or height).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from synthgap.data.errors import DatasetError
from synthgap.data.images import load_image  # noqa: F401  (re-exported: train.py / evaluate.py import it here)
from synthgap.data.sample import Sample, fits_int64


class TorchDetectionDataset(torch.utils.data.Dataset):
    """Wrap a sequence of `Sample`s for torchvision detection models.

    Args:
        samples: any synthgap dataset (or list of samples).
        image_size: optional (width, height) in pixels to resize every image to; boxes are scaled
            with it. None keeps the original size (the model's own transform still resizes).
        drop_crowd: leave COCO crowd regions out of training targets (torchvision cannot use them).
        indices: optional subset of indices into ``samples`` (for splits without copying).
    """

    def __init__(self, samples: Sequence[Sample], image_size: tuple[int, int] | None = None,
                 drop_crowd: bool = True, indices: Sequence[int] | None = None):
        self.samples = samples
        self.image_size = image_size
        self.drop_crowd = drop_crowd
        self.indices = list(range(len(samples))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        sample = self.samples[self.indices[index]]
        image = load_image(sample.image)
        if image.size != (sample.width, sample.height):
            raise DatasetError(f"image is {image.size[0]}x{image.size[1]} but the annotation says "
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
        if self.image_size is not None and tuple(self.image_size) != image.size:
            sx, sy = self.image_size[0] / image.size[0], self.image_size[1] / image.size[1]
            image = image.resize(tuple(self.image_size), Image.BILINEAR)
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
