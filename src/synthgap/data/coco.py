"""COCO instances JSON: a reader (`CocoDataset`, format ``coco``) and a writer (`CocoWriter`, `to_coco_dict`).

Boxes are COCO ``bbox`` = xywh float pixels, the same convention as `Sample.boxes`, so values go
from file to Sample and back without any conversion (no xyxy round trip, no rounding).
``segmentation`` fills `Sample.masks` (`synthgap.data.masks`): a list of polygons ``[[x1, y1, x2, y2,
...], ...]`` (pixels) is a `PolygonMask` (rings of fewer than 3 points are dropped), an RLE
``{"size": [h, w], "counts": [...] or "compressed"}`` an `RLEMask` (compressed counts decoded as
pycocotools' ``rleFrString``); an absent or empty segmentation is None. Polygon coordinates are held
in one float64 array for the whole file. A segmentation of another shape is a `DatasetError`
(field ``segmentation``). The writer does not write masks back.

Skipping rule (``skip_invalid=True``): an invalid annotation drops its whole image, so a kept image
never silently misses ground truth; an annotation naming an unknown image is dropped alone.

Ids (image, annotation, category) may have any size: Unity's datasetinsights converter writes 128-bit
``uuid.UUID(...).int`` ids. They are kept exactly (see `synthgap.data.sample.id_array`) and written back
unchanged. ``file_name`` may be absolute (the format's custom), so the writer copies only files that decode
as images.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
from typing import Any, Iterable, Mapping

import numpy as np

from synthgap.io import storage
from synthgap.data.dataset import DetectionDataset
from synthgap.data.errors import DatasetError
from synthgap.data.masks import PolygonMask, RLEMask
from synthgap.data.sample import MAX_IMAGE_SIDE_PX, Sample, id_array

DEFAULT_JSON_NAME = "annotations.json"


# ----------------------------------------------------------------------------------------------------------------
# reading

def find_coco_json(root: str) -> str:
    """The annotations JSON of ``root``: ``root`` itself when it is a file, else the one ``*.json`` in the
    folder (or in its ``annotations/`` sub-folder)."""
    if not storage.isdir(root):
        return root
    for folder in (root, storage.join(root, "annotations")):
        if not storage.isdir(folder):
            continue
        names = [n for n in storage.listdir(folder) if n.lower().endswith(".json")]
        if len(names) == 1:
            return storage.join(folder, names[0])
        if len(names) > 1:
            raise DatasetError(f"folder holds {len(names)} JSON files ({', '.join(names)}); pass the annotations "
                               f"JSON file itself", file=folder, kind="ambiguous_json")
    raise DatasetError("no COCO annotations JSON file in this folder", file=root, kind="missing_file")


def _require(obj: Mapping, key: str, file: str, record: str, types: type | tuple) -> Any:
    if key not in obj:
        raise DatasetError(f"missing key '{key}'", file=file, record=record, field=key, kind="missing_key")
    value = obj[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise DatasetError(f"'{key}' has type {type(value).__name__}", file=file, record=record, field=key,
                           kind="bad_type")
    return value


_NUMBER = (int, float)
_NUMBER_TYPES = frozenset(_NUMBER)  # exact types: bool is not a number here


_CROWD = {0: False, 1: True}  # iscrowd: 0/1 or a JSON boolean (False == 0 and True == 1 as keys)


def _parse_annotation(a: object, i: int, f: str) -> tuple:
    """(id, image_id, category_id, bbox, area, iscrowd) of one annotation; DatasetError names what is wrong.

    Exact types: a boolean is not an id or a coordinate, ``iscrowd`` is 0/1 or a boolean (``"0"`` is not
    false), and numbers must fit a float64."""
    if type(a) is not dict:
        raise DatasetError("annotation is not an object", file=f, record=f"annotations[{i}]", kind="bad_type")
    ann_id = a.get("id", 0)
    rec = f"annotations[{i}] (id {ann_id})" if type(ann_id) is int and ann_id else f"annotations[{i}]"
    if type(ann_id) is not int:
        _require(a, "id", f, rec, int)
    image_id, cat, bbox, area = a.get("image_id"), a.get("category_id"), a.get("bbox"), a.get("area", np.nan)
    if type(image_id) is not int or type(cat) is not int or type(bbox) is not list or type(area) not in _NUMBER_TYPES:
        _require(a, "image_id", f, rec, int)
        _require(a, "category_id", f, rec, int)
        _require(a, "bbox", f, rec, list)
        _require(a, "area", f, rec, _NUMBER)
    if len(bbox) != 4 or not (type(bbox[0]) in _NUMBER_TYPES and type(bbox[1]) in _NUMBER_TYPES
                              and type(bbox[2]) in _NUMBER_TYPES and type(bbox[3]) in _NUMBER_TYPES):
        raise DatasetError(f"bbox must be 4 numbers [x, y, w, h], got {bbox!r}", file=f, record=rec, field="bbox",
                           kind="bad_bbox")
    crowd = a.get("iscrowd", 0)
    if type(crowd) not in (int, bool) or crowd not in _CROWD:
        raise DatasetError(f"iscrowd must be 0, 1, true or false, got {crowd!r}", file=f, record=rec,
                           field="iscrowd", kind="bad_type")
    return ann_id, image_id, cat, bbox, area, _CROWD[crowd]


def rle_counts(compressed: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``: 5 bits per character
    offset by 48, a continuation bit 0x20, a sign bit 0x10 on the last character; counts after the
    second are stored as differences to the count two before)."""
    counts: list[int] = []
    p, n = 0, len(compressed)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("the string ends inside a count")
            c = ord(compressed[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


class _Segmentations:
    """The annotations' ``segmentation`` values, compact: polygon coordinates of every annotation in one
    float64 array (``rings``: per ring its [start, end) in it; ``ranges``: per annotation its rings), RLEs
    as `RLEMask` by annotation row. Rows are those of the annotations list as read."""

    def __init__(self, n: int):
        self.coords: list[float] = []
        self.ring_ends: list[int] = []
        self.ranges = np.zeros((n, 2), dtype=np.int64)
        self.rle: dict[int, RLEMask] = {}

    def add(self, i: int, seg: object, f: str, rec: str) -> None:
        if seg is None or (isinstance(seg, list) and not seg):
            self.ranges[i] = len(self.ring_ends)
            return
        if isinstance(seg, dict):
            self.ranges[i] = len(self.ring_ends)
            size, counts = seg.get("size"), seg.get("counts")
            if not (isinstance(size, list) and len(size) == 2 and all(type(v) is int and v >= 0 for v in size)):
                raise DatasetError(f"RLE size must be [height, width] whole pixels, got {size!r}", file=f, record=rec,
                                   field="segmentation.size", kind="bad_segmentation")
            try:
                if isinstance(counts, str):
                    counts = rle_counts(counts)
                if not (isinstance(counts, list) and all(type(v) is int and v >= 0 for v in counts)):
                    raise ValueError("counts must be non-negative whole numbers")
            except ValueError as e:
                raise DatasetError(f"RLE counts are not run lengths ({e})", file=f, record=rec,
                                   field="segmentation.counts", kind="bad_segmentation") from None
            self.rle[i] = RLEMask(tuple(counts), (size[0], size[1]))
            return
        if not isinstance(seg, list) or not all(type(r) is list for r in seg):
            raise DatasetError(f"segmentation must be a list of polygons [[x1, y1, ...], ...] or an RLE object, got "
                               f"{str(seg)[:60]}", file=f, record=rec, field="segmentation", kind="bad_segmentation")
        first = len(self.ring_ends)
        for k, ring in enumerate(seg):
            if len(ring) % 2 or not all(type(v) in _NUMBER_TYPES for v in ring):
                raise DatasetError(f"polygon {k} must be an even number of coordinates x1, y1, x2, y2, ... (pixels)",
                                   file=f, record=rec, field="segmentation", kind="bad_segmentation")
            if len(ring) >= 6:  # fewer than 3 points enclose nothing
                self.coords.extend(ring)
                self.ring_ends.append(len(self.coords))
        self.ranges[i] = (first, len(self.ring_ends))

    def finish(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.float64)  # type: ignore[assignment]
        self.ring_ends = np.asarray(self.ring_ends, dtype=np.int64)  # type: ignore[assignment]
        self.ring_starts = np.concatenate([[0], self.ring_ends[:-1]]).astype(np.int64)

    def mask(self, i: int):
        """The mask of annotation row ``i``, or None."""
        if i in self.rle:
            return self.rle[i]
        a, b = self.ranges[i]
        if a == b:
            return None
        rings = tuple(tuple(map(tuple, self.coords[self.ring_starts[r]:self.ring_ends[r]].reshape(-1, 2).tolist()))
                      for r in range(a, b))
        return PolygonMask(rings)


def _float_rows(rows: list, shape: tuple) -> tuple[np.ndarray, list[int]]:
    """float64 array of ``rows`` and the indices of rows holding an integer beyond float64 (10**400),
    which are NaN in the array. The bulk conversion runs once; rows are tried one by one only if it fails."""
    try:
        return np.array(rows, dtype=np.float64).reshape((len(rows),) + shape), []
    except OverflowError:
        out = np.full((len(rows),) + shape, np.nan)
        bad = []
        for i, row in enumerate(rows):
            try:
                out[i] = row
            except OverflowError:
                bad.append(i)
        return out, bad


class CocoDataset(DetectionDataset):
    """A COCO instances JSON read into a compact numpy index (one row per annotation, sorted by image).

    Args:
        root: the JSON file (path or URI), or a folder holding exactly one annotations JSON.
        image_root: folder that ``file_name`` is relative to. Default: the first of the JSON's folder,
            its ``images/``, ``../<split>/`` for ``instances_<split>.json`` (the COCO release layout) and
            ``../images/`` that holds the first image file; else the JSON's folder.
        skip_invalid: drop invalid records (listed in ``self.skipped``) instead of raising `DatasetError`.
    """

    format = "coco"

    def __init__(self, root: str, *, skip_invalid: bool = False, image_root: str | None = None):
        super().__init__(root, skip_invalid=skip_invalid)
        self.json_path = find_coco_json(root)
        data = storage.read_json(self.json_path)
        f = self.json_path
        if not isinstance(data, dict):
            raise DatasetError(f"top level is a {type(data).__name__}, expected a JSON object", file=f,
                               kind="bad_type")
        for key in ("images", "annotations", "categories"):
            _require(data, key, f, "top level", list)
        self.label_map = self._read_categories(data["categories"])
        self._read_images(data["images"])
        self._read_annotations(data["annotations"])
        self.image_root = image_root if image_root is not None else self._default_image_root()

    @classmethod
    def detect(cls, root: str) -> bool:
        try:
            path = find_coco_json(root)
        except DatasetError:
            return False
        if not path.lower().endswith(".json") or not storage.isfile(path):
            return False
        with storage.open(path, "rb") as fh:
            head = fh.read(1024).lstrip()
        return head.startswith(b"{")

    # -- index building ------------------------------------------------------------------------------------
    def _read_categories(self, categories: list) -> dict[int, str]:
        out: dict[int, str] = {}
        for i, c in enumerate(categories):
            rec = f"categories[{i}]"
            if not isinstance(c, dict):
                raise DatasetError("category is not an object", file=self.json_path, record=rec, kind="bad_type")
            cid = _require(c, "id", self.json_path, rec, int)
            name = _require(c, "name", self.json_path, rec, str)
            if cid in out:
                raise DatasetError(f"duplicate category id {cid}", file=self.json_path, record=rec, field="id",
                                   kind="duplicate_id")
            out[cid] = name
        return dict(sorted(out.items()))

    def _read_images(self, images: list) -> None:
        f = self.json_path
        if not images:
            raise DatasetError("the dataset has no images", file=f, record="images", field="images",
                               kind="empty_dataset")
        n = len(images)
        id_list: list[int] = []
        sizes: list[tuple[int, int]] = []
        names: list[str] = []
        for i, im in enumerate(images):
            rec = f"images[{i}]"
            if not isinstance(im, dict):
                raise DatasetError("image entry is not an object", file=f, record=rec, kind="bad_type")
            id_list.append(_require(im, "id", f, rec, int))
            rec = f"images[{i}] (id {id_list[-1]})"
            names.append(_require(im, "file_name", f, rec, str))
            sizes.append((_require(im, "width", f, rec, int), _require(im, "height", f, rec, int)))
        ids = id_array(id_list)
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            dup = int(uniq[counts > 1][0])
            first = int(np.flatnonzero(ids == dup)[1])
            raise DatasetError(f"duplicate image id {dup}", file=f, record=f"images[{first}]", field="id",
                               kind="duplicate_id")
        self._image_ids = ids
        self._file_names = names
        self._keep = np.ones(n, dtype=bool)
        bad = [i for i, (w, h) in enumerate(sizes) if not (0 < w <= MAX_IMAGE_SIDE_PX and 0 < h <= MAX_IMAGE_SIDE_PX)]
        for i in bad:
            w, h = sizes[i]
            sizes[i] = (0, 0)  # never used: the image is dropped (skip_invalid) or this raised
            self._problem(DatasetError(f"image size must be positive whole pixels of at most {MAX_IMAGE_SIDE_PX}, "
                                       f"got {w}x{h}", file=f, record=f"images[{i}] (id {id_list[i]})",
                                       field="width/height", kind="bad_image_size"), image_row=i)
        self._widths, self._heights = np.array(sizes, dtype=np.int64).reshape(n, 2).T.copy()

    def _read_annotations(self, annotations: list) -> None:
        f = self.json_path
        n = len(annotations)
        id_order = np.argsort(self._image_ids, kind="stable")
        sorted_ids = self._image_ids[id_order]

        def row_of(image_id: int) -> int:
            pos = int(np.searchsorted(sorted_ids, image_id))
            return int(id_order[pos]) if pos < len(sorted_ids) and sorted_ids[pos] == image_id else -1

        # one pass of cheap exact-type checks into flat lists, then one numpy conversion per column
        cols: list[tuple] = []
        bad_rows: list[int] = []
        nan_row = (0, 0, 0, (np.nan,) * 4, np.nan, False)
        segs = _Segmentations(n)
        for i, a in enumerate(annotations):
            try:
                cols.append(_parse_annotation(a, i, f))
                if "segmentation" in a:
                    ann_id = cols[-1][0]
                    segs.add(i, a["segmentation"], f, f"annotations[{i}] (id {ann_id})" if ann_id else
                             f"annotations[{i}]")
            except DatasetError as e:
                if len(cols) == i + 1:  # the annotation parsed; its segmentation did not
                    cols.pop()
                cols.append(nan_row)
                bad_rows.append(i)
                image_id = a.get("image_id") if isinstance(a, dict) else None
                self._problem(e, image_row=row_of(image_id) if type(image_id) is int else -1)
        ann_ids, image_ids, cats, bbox_list, area_list, crowd_list = zip(*cols) if cols else ((),) * 6
        ann_ids = id_array(ann_ids)
        image_ids = id_array(image_ids)
        cats = id_array(cats)
        boxes, huge_boxes = _float_rows(list(bbox_list), (4,))
        areas, huge_areas = _float_rows(list(area_list), ())
        crowd = np.array(crowd_list, dtype=bool)
        bad = np.zeros(n, dtype=bool)
        bad[bad_rows] = True
        for field, huge in (("bbox", huge_boxes), ("area", huge_areas)):
            for i in huge:
                if not bad[i]:
                    bad[i] = True
                    self._problem(DatasetError(f"{field} holds a number beyond float64", file=f,
                                               record=self._ann_rec(i, ann_ids), field=field, kind="number_too_large"),
                                  image_row=row_of(image_ids[i]))
        # vectorized checks on the well-formed rows, same rules as validate_sample
        order_rows = np.searchsorted(sorted_ids, image_ids)
        order_rows = np.clip(order_rows, 0, max(len(sorted_ids) - 1, 0))
        known_image = (sorted_ids[order_rows] == image_ids) & ~bad
        rows = np.where(known_image, id_order[order_rows], -1)
        for i in np.flatnonzero(~known_image & ~bad):
            bad[i] = True
            self._problem(DatasetError(f"image id {image_ids[i]} is not in 'images'", file=f,
                                       record=self._ann_rec(i, ann_ids), field="image_id", kind="unknown_image"))
        ok = ~bad
        w = np.where(rows >= 0, self._widths[np.maximum(rows, 0)], 0)
        h = np.where(rows >= 0, self._heights[np.maximum(rows, 0)], 0)
        x0, y0, bw, bh = boxes.T
        checks = [
            (~np.isfinite(boxes).all(axis=1), "box_not_finite", "bbox", "box {b} has a non-finite value"),
            ((bw <= 0) | (bh <= 0), "box_non_positive", "bbox", "box {b} (xywh) has zero or negative size"),
            ((x0 >= w) | (y0 >= h) | (x0 + bw <= 0) | (y0 + bh <= 0), "box_outside_image", "bbox",
             "box {b} (xywh) has no area inside the {w}x{h} image"),
            (~np.isin(cats, id_array(list(self.label_map))),
             "unknown_label", "category_id", "category id {c} is not in 'categories'"),
        ]
        for mask, kind, field, msg in checks:
            for i in np.flatnonzero(mask & ok):
                ok[i] = False
                self._problem(DatasetError(msg.format(b=boxes[i].tolist(), w=w[i], h=h[i], c=cats[i]), file=f,
                                           record=self._ann_rec(i, ann_ids), field=field, kind=kind),
                              image_row=int(rows[i]))
        # sort the annotations by image row: image r owns [start[r], end[r]) of the sorted arrays
        keep = np.flatnonzero(ok)
        order = keep[np.argsort(rows[keep], kind="stable")]
        self._ann_boxes = boxes[order]
        self._ann_labels = cats[order]
        self._ann_areas = areas[order]
        self._ann_crowd = crowd[order]
        self._ann_ids = ann_ids[order]
        self._ann_rows = order  # row in the annotations list, for the masks
        segs.finish()
        self._segs = segs if (segs.rle or len(segs.ring_ends)) else None
        sorted_rows = rows[order]
        n_images = len(self._image_ids)
        self._start = np.searchsorted(sorted_rows, np.arange(n_images), side="left")
        self._end = np.searchsorted(sorted_rows, np.arange(n_images), side="right")
        self._rows = np.flatnonzero(self._keep)

    @staticmethod
    def _ann_rec(i: int, ann_ids: np.ndarray) -> str:
        return f"annotations[{i}] (id {ann_ids[i]})" if ann_ids[i] else f"annotations[{i}]"

    def _problem(self, error: DatasetError, image_row: int = -1) -> None:
        if not self.skip_invalid:
            raise error
        self.skipped.add(error)
        if image_row >= 0:
            self._keep[image_row] = False

    def _default_image_root(self) -> str:
        base = posixpath.dirname(self.json_path) if not storage.is_local(self.json_path) \
            else os.path.dirname(os.path.abspath(storage.local_path(self.json_path)))
        first = self._file_names[0]
        if "://" in first or os.path.isabs(first):
            return base
        candidates = [base, storage.join(base, "images")]
        # the COCO release layout: annotations/instances_val2017.json beside val2017/
        stem = re.fullmatch(r"instances_(.+)\.json", self.json_path.replace("\\", "/").rsplit("/", 1)[-1])
        parent = posixpath.dirname(base) if not storage.is_local(base) else os.path.dirname(base)
        if stem:
            candidates.append(storage.join(parent, stem.group(1)))
        candidates.append(storage.join(parent, "images"))
        for candidate in candidates:
            if storage.exists(storage.join(candidate, first)):
                return candidate
        return base

    # -- Sequence API -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def image_path(self, row: int) -> str:
        name = self._file_names[row]
        if "://" in name or os.path.isabs(name):
            return name
        return storage.join(self.image_root, name)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        r = int(self._rows[index])
        s, e = self._start[r], self._end[r]
        boxes, areas = self._ann_boxes[s:e], self._ann_areas[s:e]
        missing = np.isnan(areas)
        if missing.all():
            areas = None  # no annotated area: consumers use w * h
        elif missing.any():
            areas = np.where(missing, boxes[:, 2] * boxes[:, 3], areas)
        return Sample(
            image=self.image_path(r), width=int(self._widths[r]), height=int(self._heights[r]),
            boxes=boxes, labels=self._ann_labels[s:e], image_id=int(self._image_ids[r]),
            instance_ids=tuple(int(v) for v in self._ann_ids[s:e]), iscrowd=self._ann_crowd[s:e],
            areas=areas, masks=self._masks(s, e),
            metadata={"file_name": self._file_names[r], "source": self.json_path},
        )

    def _masks(self, start: int, end: int) -> tuple:
        """Masks of the sorted annotations [start, end): () when the file has no segmentation at all."""
        if self._segs is None or start == end:
            return ()
        masks = tuple(self._segs.mask(int(i)) for i in self._ann_rows[start:end])
        return masks if any(m is not None for m in masks) else ()


# ----------------------------------------------------------------------------------------------------------------
# writing

def _categories(label_map: Mapping[int, str]) -> list[dict]:
    return [{"id": int(k), "name": str(v), "supercategory": ""} for k, v in sorted(label_map.items())]


def _image_entry(sample: Sample, file_name: str) -> dict:
    return {"id": int(sample.image_id), "file_name": file_name, "width": int(sample.width),
            "height": int(sample.height)}


def _annotation_entries(sample: Sample, first_id: int) -> list[dict]:
    image_id = int(sample.image_id)
    # tolist() gives Python floats holding the exact float64 values: bbox is written verbatim
    return [{"id": first_id + j, "image_id": image_id, "category_id": label, "bbox": box, "area": area,
             "iscrowd": crowd}
            for j, (label, box, area, crowd) in enumerate(zip(sample.labels.tolist(), sample.boxes.tolist(),
                                                              sample.box_areas.astype(np.float64).tolist(),
                                                              sample.iscrowd.astype(int).tolist()))]


def _image_bytes(uri: str) -> bytes:
    """The bytes of an image file to copy, after checking that they decode as an image: a COCO file_name may
    be any absolute path, and only images belong in the output (not /etc/passwd, not a truncated file)."""
    from synthgap.data.images import check_image_bytes

    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise DatasetError("image file not found", file=uri, field="image", kind="missing_image") from None
    except OSError as e:
        raise DatasetError(f"cannot read the image ({e.strerror or type(e).__name__})", file=uri, field="image",
                           kind="unreadable_image") from None
    check_image_bytes(data, uri)
    return data


def _absolute(uri: str) -> str:
    return os.path.abspath(storage.local_path(uri)) if storage.is_local(uri) else uri


def to_coco_dict(samples: Iterable[Sample], label_map: Mapping[int, str]) -> dict:
    """COCO ground-truth dict of ``samples`` (file_name = ``Sample.image``; annotation ids 1..N in order).

    ``bbox`` is ``Sample.boxes`` verbatim (xywh pixels); ``area`` is ``Sample.areas`` or w*h.
    Loadable by pycocotools: ``coco = COCO(); coco.dataset = d; coco.createIndex()``.
    """
    images, annotations, seen = [], [], set()
    for sample in samples:
        if sample.image_id in seen:
            raise DatasetError(f"duplicate image_id {sample.image_id} ({sample.image}): COCO needs unique ids",
                               kind="duplicate_image_id")
        seen.add(sample.image_id)
        images.append(_image_entry(sample, sample.image))
        annotations.extend(_annotation_entries(sample, len(annotations) + 1))
    return {"info": {"description": "written by synthgap"}, "images": images, "annotations": annotations,
            "categories": _categories(label_map)}


class CocoWriter:
    """Write samples to one COCO JSON, atomically, on `close` (or leaving the ``with`` block).

    Args:
        root_or_json_path: a ``.json`` path (its folder is the root) or a folder (JSON = ``annotations.json``).
        label_map: category id -> name, written as ``categories``.
        copy_images: copy image files given by path into ``<root>/<images_dir>/`` and reference them
            relatively (only files that decode as images: anything else is a DatasetError naming it);
            when False they are referenced by absolute path/URI.
        images_dir: sub-folder (relative to the root) for copied or given images.

    ``add(sample, image)`` with ``image`` as PIL image or encoded bytes writes that image as
    ``<images_dir>/<basename of sample.image>`` (PNG when a PIL image has no known suffix).
    Names that collide get the image id as prefix. Output is deterministic for the same inputs.
    """

    def __init__(self, root_or_json_path: str, label_map: Mapping[int, str], *, copy_images: bool = False,
                 images_dir: str = "images"):
        target = os.fspath(root_or_json_path)
        if target.lower().endswith(".json"):
            self.json_path = target
            self.root = posixpath.dirname(target) if not storage.is_local(target) else \
                os.path.dirname(os.path.abspath(storage.local_path(target)))
        else:
            self.root = target
            self.json_path = storage.join(target, DEFAULT_JSON_NAME)
        self.label_map = dict(label_map)
        self.copy_images = copy_images
        self.images_dir = images_dir
        self._images: list[dict] = []
        self._annotations: list[dict] = []
        self._ids: set[int] = set()
        self._names: set[str] = set()
        self._closed = False

    def __enter__(self) -> "CocoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def __len__(self) -> int:
        return len(self._images)

    def _unique_name(self, sample: Sample, suffix: str | None = None) -> str:
        base = posixpath.basename(sample.image.replace("\\", "/")) or f"{sample.image_id}"
        if suffix and not os.path.splitext(base)[1]:
            base += suffix
        name = base
        if name in self._names:
            name = f"{sample.image_id}_{base}"
        k = 1
        while name in self._names:
            name = f"{sample.image_id}_{k}_{base}"
            k += 1
        self._names.add(name)
        return name

    def add(self, sample: Sample, image: Any = None) -> Sample:
        """Add one image's annotations (and write the image when given); returns the sample as referenced."""
        if self._closed:
            raise RuntimeError("CocoWriter is closed")
        if sample.image_id in self._ids:
            raise DatasetError(f"duplicate image_id {sample.image_id} ({sample.image}): COCO needs unique ids",
                               kind="duplicate_image_id")
        if image is not None:
            if isinstance(image, (bytes, bytearray, memoryview)):
                name = self._unique_name(sample)
                data = bytes(image)
            else:  # a PIL image
                name = self._unique_name(sample, suffix=".png")
                buf = io.BytesIO()
                ext = os.path.splitext(name)[1].lower()
                image.save(buf, format={".jpg": "JPEG", ".jpeg": "JPEG"}.get(ext, "PNG"))
                data = buf.getvalue()
            file_name = posixpath.join(self.images_dir, name)
            storage.write_bytes(storage.join(self.root, self.images_dir, name), data)
            path = storage.join(self.root, self.images_dir, name)
        elif self.copy_images:
            data = _image_bytes(sample.image)
            name = self._unique_name(sample)
            file_name = posixpath.join(self.images_dir, name)
            path = storage.join(self.root, self.images_dir, name)
            storage.write_bytes(path, data)
        else:
            file_name = path = _absolute(sample.image)
        self._ids.add(sample.image_id)
        self._images.append(_image_entry(sample, file_name))
        self._annotations.extend(_annotation_entries(sample, len(self._annotations) + 1))
        if path == sample.image:
            return sample
        return Sample(image=path, width=sample.width, height=sample.height, boxes=sample.boxes,
                      labels=sample.labels, image_id=sample.image_id, instance_ids=sample.instance_ids,
                      iscrowd=sample.iscrowd, areas=sample.areas, segmentation=sample.segmentation,
                      metadata=sample.metadata)

    def to_dict(self) -> dict:
        return {"info": {"description": "written by synthgap"}, "images": list(self._images),
                "annotations": list(self._annotations), "categories": _categories(self.label_map)}

    def close(self) -> str:
        """Write the JSON (atomically) and return its path; later calls do nothing."""
        if not self._closed:
            text = json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)
            storage.write_text(self.json_path, text + "\n")
            self._closed = True
        return self.json_path
