"""A torch `Dataset` over any synthgap dataset, in torchvision's detection convention.

Each item is ``(image, target)``: ``image`` a float32 tensor (3, H, W) in [0, 1]; ``target`` a dict
with ``boxes`` (K, 4) float32 **xyxy** pixels of the returned image, ``labels`` (K,) int64,
``image_id`` int64, ``area`` (K,) float32 and ``iscrowd`` (K,) int64.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from synthgap import storage
from synthgap.data.errors import DatasetError
from synthgap.data.sample import Sample


def load_image(uri: str) -> Image.Image:
    """Decode an image (any path or URI) as RGB; an unreadable file is a DatasetError naming it."""
    try:
        if storage.is_local(uri):
            img = Image.open(storage.local_path(uri))
        else:
            with storage.open(uri, "rb") as f:
                img = Image.open(f)
                img.load()
        return img.convert("RGB")
    except FileNotFoundError:
        raise DatasetError("image file not found", file=uri, field="image", kind="missing_image") from None
    except (OSError, Image.UnidentifiedImageError, ValueError) as e:
        raise DatasetError(f"image cannot be decoded ({e})", file=uri, field="image",
                           kind="unreadable_image") from None


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
        boxes = sample.boxes_xyxy
        keep = ~sample.iscrowd if self.drop_crowd else np.ones(len(boxes), dtype=bool)
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


def collate_detection(batch):
    """Detection batches are lists (images differ in size and box count)."""
    return tuple(zip(*batch))
