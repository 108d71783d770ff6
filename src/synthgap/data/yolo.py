"""YOLO datasets (Ultralytics / Roboflow): a reader (`YoloDataset`, format ``yolo``) and the writer
``synthgap convert --to yolo`` uses (`YoloWriter`).

Writing, the layout Ultralytics trains on::

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

Reading (docs/formats.md has the details):

- ``root`` is the data.yaml (any name ending .yaml / .yml) or the folder holding ``data.yaml`` (or its only
  YAML file). ``path`` in it is the dataset folder, relative to the YAML's folder (Ultralytics resolves a
  relative ``path`` against its own datasets folder; here, when that folder does not exist, the YAML's
  folder is used). ``train`` / ``val`` / ``test`` each name a folder of images (searched recursively), a
  ``.txt`` list of image paths (relative ones are relative to the list's folder), or a list of those;
  an entry ``../x`` that does not exist is tried as ``x`` (Roboflow writes ``../train/images`` beside its
  data.yaml), so both ``images/<split>`` + ``labels/<split>`` and Roboflow's ``<split>/images`` +
  ``<split>/labels`` read. ``names`` is a list or a {index: name} dict.
- The label file of ``.../images/.../x.jpg`` is ``.../labels/.../x.txt`` (the last ``images`` folder
  replaced, as Ultralytics does); a missing label file is an image without objects.
- Rows: ``cls cx cy w h`` (a box) or ``cls x1 y1 x2 y2 ... xn yn`` (a polygon of n >= 3 points: the box is
  its extent, `PolygonMask` its mask); with ``kpt_shape`` in data.yaml, ``cls cx cy w h`` then keypoints
  (ignored). Coordinates are normalised by the upright image's size (EXIF orientation applied,
  `synthgap.data.images`), read from the image header. A coordinate outside [0, 1] by more than
  ``NORMALISED_TOLERANCE``, a wrong column count, a value that is not a number or a class index that is
  not one of ``names`` is a `DatasetError` naming the label file, the line and the field.
- Label ids are the class index + 1 (0 is Faster R-CNN's background), or the original ids listed in the
  comment `YoloWriter` writes, so a converted dataset reads back with its own ids.
- ``split``: ``all`` (every image of train, val and test, each once) or one of those present.
  ``image_id`` is the image's position in ``all``, whichever split is read.
- ``skip_invalid=True``: every label file and image header is read when the dataset is opened; a box of
  zero width or height is left out alone, any other defect leaves out its image (listed in ``skipped``).
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from typing import Mapping

import numpy as np
import yaml

from synthgap.io import storage
from synthgap.data.dataset import DetectionDataset
from synthgap.data.errors import DatasetError
from synthgap.data.images import check_image_bytes
from synthgap.data.masks import PolygonMask
from synthgap.data.sample import Sample, validate_sample

DATA_YAML = "data.yaml"
SPLITS = ("train", "val", "test")
# Ultralytics' image suffixes (ultralytics.data.utils.IMG_FORMATS, less the ones Pillow cannot open)
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")
# normalised coordinates may pass 0..1 by this much (exporters round cx + w/2 a hair past 1)
NORMALISED_TOLERANCE = 1e-3
_WRITER_IDS = re.compile(r"#\s*written by synthgap; class index -> original label id: (.*)")


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


# ----------------------------------------------------------------------------------------------------------------
# reading

def find_data_yaml(root: str) -> str:
    """The dataset's YAML: ``root`` itself when it names a .yaml/.yml file, else ``root/data.yaml``, else the
    only YAML file in the folder ``root``."""
    if root.lower().endswith((".yaml", ".yml")):
        return root
    if storage.is_http(root):
        return storage.join(root, DATA_YAML)
    candidate = storage.join(root, DATA_YAML)
    if storage.isfile(candidate):
        return candidate
    if storage.isdir(root):
        names = [n for n in storage.listdir(root) if n.lower().endswith((".yaml", ".yml"))]
        if len(names) == 1:
            return storage.join(root, names[0])
    raise DatasetError(f"no {DATA_YAML} here (a YOLO dataset is described by one)", file=root, kind="missing_file")


def _parent(uri: str) -> str:
    return os.path.dirname(os.path.abspath(storage.local_path(uri))) if storage.is_local(uri) else posixpath.dirname(uri)


def _resolve(base: str, entry: str) -> str:
    """``entry`` (absolute, a URI, or relative to ``base``); a missing ``../x`` is tried as ``x`` (Roboflow)."""
    if "://" in entry or os.path.isabs(entry):
        return entry
    path = storage.join(base, entry)
    if entry.startswith("../") and not storage.exists(path):
        inner = storage.join(base, entry[3:])
        if storage.exists(inner):
            return inner
    return path


def label_path(image: str) -> str:
    """The label file of an image: the last ``images`` folder of its path becomes ``labels``, the suffix
    ``.txt`` (Ultralytics' ``img2label_paths``); beside the image when its path has no ``images`` folder."""
    sep = "/" if not storage.is_local(image) or "/" in image else os.sep
    parts = image.rsplit(f"{sep}images{sep}", 1)
    path = f"{sep}labels{sep}".join(parts)
    return path.rsplit(".", 1)[0] + ".txt" if "." in path.rsplit(sep, 1)[-1] else path + ".txt"


def _class_names(data: dict, yaml_path: str) -> list[str]:
    names, nc = data.get("names"), data.get("nc")
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DatasetError(f"names must be indexed 0..{len(keys) - 1}, got indices {keys[:10]}", file=yaml_path,
                               field="names", kind="bad_names")
        names = [names[k] for k in keys]
    elif names is None and isinstance(nc, int) and nc > 0:
        names = [f"class{i}" for i in range(nc)]
    if not isinstance(names, list) or not names:
        raise DatasetError("missing 'names' (a list or {index: name} of the classes)", file=yaml_path, field="names",
                           kind="missing_key")
    if isinstance(nc, int) and nc != len(names):
        raise DatasetError(f"nc is {nc} but names lists {len(names)} classes", file=yaml_path, field="nc",
                           kind="bad_names")
    return [str(n) for n in names]


def _writer_ids(text: str, n: int) -> list[int] | None:
    """The original label ids `YoloWriter` lists in its comment line (class index order), if it is there."""
    for line in text.splitlines():
        match = _WRITER_IDS.match(line.strip())
        if match:
            pairs = re.findall(r"(\d+): id (-?\d+)", match.group(1))
            ids = [int(v) for _, v in sorted(pairs, key=lambda p: int(p[0]))]
            if [int(k) for k, _ in sorted(pairs, key=lambda p: int(p[0]))] == list(range(n)) and len(set(ids)) == n:
                return ids
    return None


def _number(token: str, f: str, rec: str, field: str) -> float:
    try:
        value = float(token)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{token!r} is not a number", file=f, record=rec, field=field, kind="bad_value")
    return value


class YoloDataset(DetectionDataset):
    """A YOLO dataset (module docstring), one split of it or all.

    Args:
        root: the data.yaml (path or URI) or the folder holding it.
        split: ``all`` or one of the ``train`` / ``val`` / ``test`` splits data.yaml names.
        skip_invalid: read every label file and image header now and leave out invalid boxes / images
            (listed in ``self.skipped``) instead of raising `DatasetError` when a sample is read.
    """

    format = "yolo"

    def __init__(self, root: str, *, skip_invalid: bool = False, split: str = "all"):
        super().__init__(root, skip_invalid=skip_invalid)
        self.yaml_path = find_data_yaml(root)
        text = storage.read_text(self.yaml_path)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DatasetError(f"malformed YAML: {e}", file=self.yaml_path, kind="malformed_yaml") from None
        if not isinstance(data, dict):
            raise DatasetError("top level is not a mapping", file=self.yaml_path, kind="bad_type")
        names = _class_names(data, self.yaml_path)
        ids = _writer_ids(text, len(names)) or list(range(1, len(names) + 1))
        self.label_map = dict(sorted(zip(ids, names)))
        self._label_of_class = np.asarray(ids, dtype=np.int64)
        kpt = data.get("kpt_shape")
        self._keypoint_columns = int(np.prod(kpt)) if isinstance(kpt, list) and kpt else 0
        self.base = self._base(data.get("path"))
        self._images: list[str] = []
        self._split_of: list[str] = []
        self._split_rows: dict[str, np.ndarray] = {}
        seen: dict[str, int] = {}
        for name in SPLITS:
            if data.get(name) is None:
                continue
            rows = []
            for image in self._list_split(name, data[name]):
                if image not in seen:
                    seen[image] = len(self._images)
                    self._images.append(image)
                    self._split_of.append(name)
                rows.append(seen[image])
            self._split_rows[name] = np.asarray(sorted(set(rows)), dtype=np.int64)
        if not self._split_rows:
            raise DatasetError(f"data.yaml names no split ({', '.join(SPLITS)})", file=self.yaml_path,
                               field="train", kind="missing_key")
        self.split = split
        if split == "all":
            rows = np.arange(len(self._images), dtype=np.int64)
        elif split in self._split_rows:
            rows = self._split_rows[split]
        else:
            raise DatasetError(f"unknown split {split!r}; available: all, {', '.join(self._split_rows)}",
                               file=self.yaml_path, field="split", kind="unknown_split")
        self._sizes: dict[int, tuple[int, int]] = {}
        if skip_invalid:
            rows = np.array([r for r in rows.tolist() if self._check(r)], dtype=np.int64)
        self._rows = rows

    @classmethod
    def detect(cls, root: str) -> bool:
        try:
            path = find_data_yaml(root)
            if storage.is_http(path) and not root.lower().endswith((".yaml", ".yml")):
                return False  # a folder URL cannot be listed: pass the data.yaml's URL
            data = yaml.safe_load(storage.read_text(path))
        except (DatasetError, OSError, ValueError, yaml.YAMLError):
            return False
        return isinstance(data, dict) and ("names" in data or "nc" in data) and any(k in data for k in SPLITS)

    # -- index building ------------------------------------------------------------------------------------
    def _base(self, path: object) -> str:
        folder = _parent(self.yaml_path)
        if path is None or path in ("", "."):
            return folder
        if not isinstance(path, str):
            raise DatasetError(f"'path' must be a folder name, got {path!r}", file=self.yaml_path, field="path",
                               kind="bad_type")
        if "://" in path or os.path.isabs(path):
            return path
        inner = storage.join(folder, path)
        return inner if storage.exists(inner) else folder

    def _list_split(self, name: str, value: object) -> list[str]:
        entries = value if isinstance(value, list) else [value]
        images: list[str] = []
        for entry in entries:
            if not isinstance(entry, str):
                raise DatasetError(f"{name} must name a folder or a .txt list of images, got {entry!r}",
                                   file=self.yaml_path, field=name, kind="bad_type")
            path = _resolve(self.base, entry)
            if entry.lower().endswith(".txt"):
                images += self._read_list(path, name)
            elif storage.isdir(path):
                images += [storage.join(path, rel) for rel in storage.walk_files(path)
                           if rel.lower().endswith(IMAGE_SUFFIXES)]
            else:
                raise DatasetError(f"{name}: {entry!r} is not a folder here ({path})", file=self.yaml_path,
                                   field=name, kind="missing_file")
        return images

    def _read_list(self, path: str, name: str) -> list[str]:
        try:
            text = storage.read_text(path)
        except FileNotFoundError:
            raise DatasetError(f"{name}: the image list does not exist", file=path, field=name,
                               kind="missing_file") from None
        except UnicodeDecodeError as e:
            raise DatasetError(f"not UTF-8 text (byte at offset {e.start})", file=path, kind="bad_index") from None
        folder = _parent(path)
        out = []
        for line in text.splitlines():
            line = line.strip()
            if line:
                out.append(line if "://" in line or os.path.isabs(line) else
                           storage.join(folder, line[2:] if line.startswith("./") else line))
        return out

    def split_indices(self, name: str) -> np.ndarray:
        """Positions in ``all`` of the images of split ``name``."""
        if name == "all":
            return np.arange(len(self._images), dtype=np.int64)
        return self._split_rows[name]

    def _check(self, row: int) -> bool:
        try:
            self._sample(row, self.skipped.add)
            return True
        except DatasetError as e:
            self.skipped.add(e)
            return False

    # -- parsing ---------------------------------------------------------------------------------------------
    def _size(self, row: int) -> tuple[int, int]:
        if row not in self._sizes:
            from synthgap.data.images import image_size

            self._sizes[row] = image_size(self._images[row])
        return self._sizes[row]

    def _rows_of(self, f: str) -> list[str]:
        try:
            return storage.read_text(f).splitlines()
        except FileNotFoundError:
            return []  # no label file: an image without objects (Ultralytics' "background" images)
        except UnicodeDecodeError as e:
            raise DatasetError(f"not UTF-8 text (byte at offset {e.start})", file=f, kind="bad_value") from None

    def _parse_row(self, tokens: list[str], f: str, rec: str, width: int, height: int):
        """(xywh box in pixels, label id, mask or None) of one row."""
        n = len(tokens)
        boxed = n == 5 + self._keypoint_columns if self._keypoint_columns else n == 5
        if not boxed and (self._keypoint_columns or n < 7 or n % 2 == 0):
            want = f"5 + {self._keypoint_columns} (kpt_shape)" if self._keypoint_columns else \
                "5 (cls cx cy w h) or an odd number >= 7 (cls x1 y1 ... xn yn)"
            raise DatasetError(f"{n} columns; expected {want}", file=f, record=rec, field="columns",
                               kind="bad_columns")
        cls_value = _number(tokens[0], f, rec, "class")
        if cls_value != int(cls_value) or not 0 <= cls_value < len(self._label_of_class):
            raise DatasetError(f"class {tokens[0]} is not one of the {len(self._label_of_class)} class indices "
                               f"0..{len(self._label_of_class) - 1} of data.yaml's names", file=f, record=rec,
                               field="class", kind="unknown_label")
        fields = ("cx", "cy", "w", "h") if boxed else \
            tuple(f"{'x' if k % 2 == 0 else 'y'}{k // 2 + 1}" for k in range(n - 1))
        values = [_number(t, f, rec, field) for t, field in zip(tokens[1:], fields)]
        for v, field in zip(values, fields):
            if not -NORMALISED_TOLERANCE <= v <= 1 + NORMALISED_TOLERANCE:
                raise DatasetError(f"{field} = {v} is outside 0..1: YOLO coordinates are fractions of the image size",
                                   file=f, record=rec, field=field, kind="not_normalised")
        label = int(self._label_of_class[int(cls_value)])
        if boxed:
            cx, cy, w, h = values[:4]
            box = ((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)
            if w <= 0 or h <= 0:
                raise DatasetError(f"box {list(box)} (xywh px) has zero or negative size", file=f, record=rec,
                                   field="w" if w <= 0 else "h", kind="box_non_positive")
            return box, label, None
        ring = tuple((x * width, y * height) for x, y in zip(values[0::2], values[1::2]))
        mask = PolygonMask((ring,))
        box = mask.bbox()
        if box[2] <= 0 or box[3] <= 0:
            raise DatasetError(f"polygon extent {list(box)} (xywh px) has zero width or height", file=f, record=rec,
                               field="x1", kind="box_non_positive")
        return box, label, mask

    def _sample(self, row: int, skip=None) -> Sample:
        """Parse one label file. ``skip``: called with each box-level DatasetError (that box is then left out);
        None: those are left out silently under ``skip_invalid`` (recorded when opened), else raised."""
        image = self._images[row]
        f = label_path(image)
        try:
            width, height = self._size(row)
        except DatasetError as e:
            raise DatasetError(e.message, file=image, record=f"image {row}", field="image", kind=e.kind) from None
        boxes, labels, masks = [], [], []
        for number, line in enumerate(self._rows_of(f), 1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                box, label, mask = self._parse_row(tokens, f, f"line {number}", width, height)
            except DatasetError as e:
                if e.kind != "box_non_positive":
                    raise
                if skip is not None:
                    skip(e)
                elif not self.skip_invalid:
                    raise
                continue
            boxes.append(box)
            labels.append(label)
            masks.append(mask)
        rel = image.removeprefix(self.base).lstrip("/\\")
        sample = Sample(image=image, width=width, height=height, boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
                        labels=np.asarray(labels, dtype=np.int64), image_id=row,
                        masks=tuple(masks) if any(m is not None for m in masks) else (),
                        metadata={"split": self._split_of[row], "file_name": rel, "source": f})
        validate_sample(sample, self.label_map, file=f, record=f"image {rel}")
        return sample

    # -- Sequence API -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._sample(int(self._rows[index]))
