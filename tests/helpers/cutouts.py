"""Tiny asset catalogs for the cut-and-paste generator's tests: textured products with masks, written as
real image files (Samples with polygon masks, or a folder of RGBA PNGs), and the real packshots of
../shared/real/snacks-catalog when they are there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from synthgap.data import Sample
from synthgap.data.masks import BitmapMask, PolygonMask

REPO = Path(__file__).resolve().parents[2]
SNACKS = Path(os.environ.get("SYNTHGAP_SHARED_REAL", REPO.parent / "shared" / "real")) / "snacks-catalog" / "project"
LABELS = {1: "cola", 2: "chips", 3: "soup"}


def octagon(x: float, y: float, w: float, h: float) -> PolygonMask:
    """An octagon inscribed in the box (x, y, w, h) (pixels): a mask that is not its own bounding box."""
    c = 0.3
    pts = [(x + c * w, y), (x + (1 - c) * w, y), (x + w, y + c * h), (x + w, y + (1 - c) * h),
           (x + (1 - c) * w, y + h), (x + c * w, y + h), (x, y + (1 - c) * h), (x, y + c * h)]
    return PolygonMask((tuple(pts),))


def textured(rng: np.random.Generator, w: int, h: int, base: tuple[int, int, int]) -> np.ndarray:
    """(h, w, 3) uint8: a base colour with stripes and noise, so colour changes show in every channel."""
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    img[:, :, :] += 40 * np.sin(np.arange(w) / 3.0)[None, :, None]
    img += rng.normal(0, 12, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def cutout_samples(folder, n: int = 3, size: tuple[int, int] = (40, 56), seed: int = 0) -> tuple[list[Sample], dict]:
    """``n`` PNG packshots (width, height = ``size``) in ``folder``: one textured product each on white,
    with an octagon mask; labels cycle through `LABELS`. Returns (samples, label map)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    samples = []
    bases = [(200, 40, 40), (40, 170, 60), (60, 70, 210)]
    for i in range(n):
        img = np.full((h, w, 3), 255, np.uint8)
        bx, by, bw, bh = 4, 3, w - 9, h - 7
        mask = octagon(bx, by, bw, bh)
        inside = mask.to_array(w, h)
        img[inside] = textured(rng, w, h, bases[i % 3])[inside]
        path = folder / f"pack_{i}.png"
        Image.fromarray(img).save(path)
        samples.append(Sample(image=str(path), width=w, height=h, boxes=[[bx, by, bw, bh]], labels=[i % 3 + 1],
                              image_id=i, masks=(mask,)))
    return samples, dict(LABELS)


def png_catalog(folder, per_class: int = 2, size: tuple[int, int] = (24, 36), seed: int = 0) -> str:
    """``folder/<class>/<k>.png`` RGBA cut-outs for the classes of `LABELS` (alpha = an octagon, with a
    soft 1-px edge); returns the folder."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    w, h = size
    alpha = octagon(1, 1, w - 3, h - 3).to_array(w, h).astype(np.uint8) * 255
    edge = octagon(0, 0, w - 1, h - 1).to_array(w, h) & (alpha == 0)
    alpha[edge] = 100
    for k, name in LABELS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            rgba = np.dstack([textured(rng, w, h, (60 * k, 200 - 50 * k, 90 + 20 * j)), alpha])
            Image.fromarray(rgba, "RGBA").save(folder / name / f"{j}.png")
    return str(folder)


def snack_samples(count: int = 3) -> tuple[list[Sample], dict[int, str]]:
    """The first ``count`` real packshots of snacks-catalog as Samples with their bitmap masks, classed by
    their product-id tag (decoded here from the Supervisely JSON, the format's documented layout)."""
    anns = sorted((SNACKS / "ds1" / "ann").glob("*.json"))[:count]
    samples, names = [], {}
    for i, path in enumerate(anns):
        doc = json.loads(path.read_text())
        boxes, labels, masks = [], [], []
        for obj in doc["objects"]:
            mask = BitmapMask.from_supervisely(obj["bitmap"]["data"], obj["bitmap"]["origin"])
            bits = mask.local()
            tag = obj["tags"][0]["name"] if obj.get("tags") else obj["classTitle"]
            labels.append(names.setdefault(tag, len(names) + 1))
            boxes.append([*mask.origin, bits.shape[1], bits.shape[0]])
            masks.append(mask)
        image = SNACKS / "ds1" / "img" / path.name[:-len(".json")]
        samples.append(Sample(image=str(image), width=doc["size"]["width"], height=doc["size"]["height"],
                              boxes=boxes, labels=labels, image_id=i, masks=tuple(masks)))
    return samples, {v: k for k, v in names.items()}
