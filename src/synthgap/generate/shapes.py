"""Tiny generated detection data for the training/evaluation tests and benchmarks: coloured
rectangles on noise, the class given by the colour (1 red, 2 green, 3 blue)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from synthgap.data import Sample
from synthgap.data.coco import CocoWriter

LABEL_MAP = {1: "red", 2: "green", 3: "blue"}
COLOURS = {1: (220, 30, 30), 2: (30, 200, 30), 3: (40, 40, 230)}


def make_samples(folder, n: int, size: tuple[int, int] = (96, 80), seed: int = 0, max_objects: int = 2,
                 first_id: int = 1) -> list[Sample]:
    """``n`` PNG images (width, height = ``size``) in ``folder`` with 1..max_objects boxes each (xywh px)."""
    rng = np.random.default_rng(seed)
    w, h = size
    samples = []
    for i in range(n):
        pixels = rng.integers(60, 140, size=(h, w, 3), dtype=np.uint8)
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            bw, bh = int(rng.integers(w // 5, w // 2)), int(rng.integers(h // 5, h // 2))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            label = int(rng.integers(1, 4))
            pixels[y:y + bh, x:x + bw] = COLOURS[label]
            boxes.append([x, y, bw, bh])
            labels.append(label)
        path = f"{folder}/img_{first_id + i:04d}.png"
        Image.fromarray(pixels).save(path)
        samples.append(Sample(image=path, width=w, height=h, boxes=boxes, labels=labels, image_id=first_id + i))
    return samples


def make_coco(root, n: int, size: tuple[int, int] = (96, 80), seed: int = 0, max_objects: int = 2) -> str:
    """A COCO dataset folder (images/ + annotations.json) that `open_dataset` reads; returns its path."""
    import os

    os.makedirs(f"{root}/images", exist_ok=True)
    samples = make_samples(f"{root}/images", n, size, seed, max_objects)
    with CocoWriter(str(root), LABEL_MAP) as writer:
        for s in samples:
            writer.add(s)
    return str(root)
