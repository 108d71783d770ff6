"""The 37 real shelf photos of ../shared/real (frames of 3 videos: IMG_1866 x25, IMG_1867 x9, IMG_1868 x3) as a
dataset synthgap reads; tests using them are skipped with a reason when the folder is absent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import REPO

SHELVES = Path(os.environ.get("SYNTHGAP_SHARED_REAL", REPO.parent / "shared" / "real")) / "grocery-store-shelves" \
    / "project"
VIDEO_REGEX = r"regex:^(IMG_\d+)_"  # the group_by spec of the three videos


def shelf_photos() -> list[Path]:
    """The shelf JPEGs, sorted by name, or skip the test saying why."""
    photos = sorted((SHELVES / "ds0" / "img").glob("*.jpg"))
    if len(photos) != 37:
        pytest.skip(f"the 37 real shelf photos are absent from {SHELVES} (they live in ../shared/real)")
    return photos


def shelves_dataset(tmp_path: Path) -> str:
    """A COCO file referencing the shelf photos by absolute path (image ids 1..37 in name order), with
    their rectangles from the Supervisely annotations (xywh pixels; boxes of zero width left out)."""
    images, anns = [], []
    for i, photo in enumerate(shelf_photos(), 1):
        doc = json.loads((SHELVES / "ds0" / "ann" / f"{photo.name}.json").read_text())
        images.append({"id": i, "file_name": str(photo), "width": doc["size"]["width"],
                       "height": doc["size"]["height"]})
        for obj in doc["objects"]:
            (x1, y1), (x2, y2) = obj["points"]["exterior"]
            w, h = abs(x2 - x1), abs(y2 - y1)
            if w > 0 and h > 0:
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 0, "area": w * h,
                             "bbox": [min(x1, x2), min(y1, y2), w, h]})
    path = tmp_path / "shelves" / "annotations.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "product"}]}))
    return str(path)
