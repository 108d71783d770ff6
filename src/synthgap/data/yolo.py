"""Write a dataset in the YOLO layout Ultralytics trains on (``synthgap convert --to yolo``).

    DST/data.yaml              <subset>: images/<subset>, names: {0: name, ...} (no ``path``: Ultralytics
                               then resolves the subsets from data.yaml's own folder; ``path: .``
                               would mean the current directory)
    DST/images/<subset>/*.png  the images, copied
    DST/labels/<subset>/*.txt  one line per box: ``class cx cy w h``, centre and size normalised by the
                               image width/height (0..1); an image without boxes has an empty file

Class indices are 0..N-1 in the order of the sorted label ids (YOLO has no ids of its own); data.yaml
lists the original ids in a comment. Boxes are clipped to the image first (YOLO coordinates must lie
in 0..1) and a box with nothing left inside the image is dropped and counted. Several subsets
(train, val, test) go into one DST by converting each with its own ``subset``: data.yaml gains that
key, and the class names must be the same every time.
"""

from __future__ import annotations

import posixpath
from typing import Mapping

import numpy as np
import yaml

from synthgap.io import storage
from synthgap.data.errors import DatasetError
from synthgap.data.images import check_image_bytes
from synthgap.data.sample import Sample

DATA_YAML = "data.yaml"


def _image_data(sample: Sample) -> bytes:
    """The image file's bytes, checked to decode at the sample's size (YOLO coordinates are fractions of it)."""
    try:
        data = storage.read_bytes(sample.image)
    except FileNotFoundError:
        raise DatasetError("image file not found", file=sample.image, field="image", kind="missing_image") from None
    size = check_image_bytes(data, sample.image)
    if size != (sample.width, sample.height):
        raise DatasetError(f"image is {size[0]}x{size[1]} pixels but annotated as {sample.width}x{sample.height}",
                           file=sample.image, record=f"image_id {sample.image_id}", field="width/height",
                           kind="image_size_mismatch")
    return data


def yolo_lines(sample: Sample, class_index: Mapping[int, int]) -> tuple[list[str], int]:
    """The label file lines of one sample (``class cx cy w h``, normalised, 6 decimals) and the number of
    boxes dropped because nothing of them lies inside the image."""
    lines, dropped = [], 0
    w, h = float(sample.width), float(sample.height)
    for (x, y, bw, bh), label in zip(sample.boxes.tolist(), sample.labels.tolist()):
        x0, y0 = min(max(x, 0.0), w), min(max(y, 0.0), h)
        x1, y1 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
        if x1 <= x0 or y1 <= y0:
            dropped += 1
            continue
        cx, cy, nw, nh = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h
        lines.append(f"{class_index[label]} {cx:.6f} {cy:.6f} {nw:.6f} {nh:.6f}")
    return lines, dropped


class YoloWriter:
    """Write samples into ``root`` as YOLO ``subset``; data.yaml is written (atomically) on `close`.

    Images are copied (only files that decode as images; anything else is a DatasetError naming it).
    Names that collide get the image id as prefix.
    """

    def __init__(self, root: str, label_map: Mapping[int, str], subset: str = "train"):
        if not subset or "/" in subset or subset in (".", ".."):
            raise ValueError(f"subset must be a plain folder name (train, val, test), got {subset!r}")
        self.root = root
        self.subset = subset
        self.label_ids = sorted(label_map)
        self.names = {i: str(label_map[k]) for i, k in enumerate(self.label_ids)}
        self.class_index = {k: i for i, k in enumerate(self.label_ids)}
        self.yaml_path = storage.join(root, DATA_YAML)
        self.data = self._existing_data()
        self.images = 0
        self.boxes = 0
        self.dropped = 0
        self._names: set[str] = set()
        self._closed = False

    def _existing_data(self) -> dict:
        """data.yaml written by an earlier subset (its names must match), or a new one."""
        if not storage.exists(self.yaml_path):
            return {"names": dict(self.names)}
        data = yaml.safe_load(storage.read_text(self.yaml_path)) or {}
        names = data.get("names")
        if isinstance(names, list):
            names = dict(enumerate(names))
        if names != self.names:
            raise DatasetError(f"names {names} differ from this dataset's {self.names}: write the subsets of one "
                               "label map into one folder", file=self.yaml_path, field="names")
        return data

    def __enter__(self) -> "YoloWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def __len__(self) -> int:
        return self.images

    def _unique_name(self, sample: Sample) -> str:
        base = posixpath.basename(sample.image.replace("\\", "/")) or f"{sample.image_id}.png"
        name, k = base, 1
        while name in self._names:
            name = f"{sample.image_id}_{base}" if k == 1 else f"{sample.image_id}_{k}_{base}"
            k += 1
        self._names.add(name)
        return name

    def add(self, sample: Sample) -> None:
        """Copy the sample's image and write its label file."""
        if self._closed:
            raise RuntimeError("YoloWriter is closed")
        unknown = sorted(set(np.asarray(sample.labels).tolist()) - set(self.class_index))
        if unknown:
            raise DatasetError(f"label ids {unknown} are not in the label map", file=sample.image,
                               record=f"image_id {sample.image_id}", field="labels")
        data = _image_data(sample)
        name = self._unique_name(sample)
        storage.write_bytes(storage.join(self.root, "images", self.subset, name), data)
        lines, dropped = yolo_lines(sample, self.class_index)
        stem = name.rsplit(".", 1)[0] if "." in name else name
        storage.write_text(storage.join(self.root, "labels", self.subset, f"{stem}.txt"),
                           "".join(line + "\n" for line in lines))
        self.images += 1
        self.boxes += len(lines)
        self.dropped += dropped

    def close(self) -> str:
        """Write data.yaml (this subset added) and return its path; later calls do nothing."""
        if not self._closed:
            self.data[self.subset] = f"images/{self.subset}"
            self.data["names"] = dict(self.names)
            ids = ", ".join(f"{i}: id {k}" for i, k in enumerate(self.label_ids))
            text = f"# written by synthgap; class index -> original label id: {ids}\n"
            storage.write_text(self.yaml_path, text + yaml.safe_dump(self.data, sort_keys=False, allow_unicode=True))
            self._closed = True
        return self.yaml_path
