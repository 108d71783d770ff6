"""Evaluation inputs as flat numpy arrays: ground truth (one row per box) and detections (one row per box).

Both protocols work on these arrays, never on per-record dicts. Boxes are **xywh float64 pixels**
(COCO ``bbox`` and `Sample.boxes` alike). Images and categories are stored as indices into the sorted
unique ids (``image_ids``, ``category_ids``), as COCOeval's ``imgIds``/``catIds`` are. Ids of any size are
read (datasetinsights' COCO converter writes 128-bit uuid ints): the id arrays are int64 when every id fits,
else dtype=object holding the Python ints (`synthgap.data.sample.id_array`), and are written back unchanged.

A results file is streamed (`detections_from_json`): records are parsed and turned into columns in batches,
so memory stays a small multiple of the arrays (~56 bytes a detection), not of ``json.load``'s objects.

Detections come as a COCO results list (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``)
or as a numpy structured array of `DETECTION_DTYPE`. Bad input raises `DatasetError` naming the record
(``detections[i]`` / ``annotations[i]``) and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from synthgap.io import storage
from synthgap.data.errors import DatasetError
from synthgap.data.sample import Sample, id_array

# Records parsed and checked at a time when reading detections: bounds the per-record Python objects alive.
DETECTION_BATCH = 1 << 16
# The structured form of detections: one row per detection, bbox xywh pixels.
DETECTION_DTYPE = np.dtype([("image_id", np.int64), ("category_id", np.int64), ("bbox", np.float64, (4,)),
                            ("score", np.float64)])


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """Ground-truth boxes as flat arrays, rows ordered by image (in the order given) then source order.

    ``image_ids``/``category_ids`` are sorted unique ids (int64, or object Python ints when one does not fit);
    ``image``/``category`` (int64) index into them.
    ``areas`` is the annotated area (COCO ``area``), w * h where the source has none.
    ``ids`` are COCO annotation ids (a Sample's integer ``instance_ids``, else a running 1-based index).
    Row order is the source's stream order (datasetinsights orders classes by first appearance in it).
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: dict
    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    iscrowd: np.ndarray
    areas: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections as flat arrays in input order; ``image``/``category`` index into the GroundTruth ids."""

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


# ------------------------------------------------------------------------------------------------------------
# ground truth

def ground_truth_from_samples(samples: Sequence[Sample], label_map: Mapping[int, str]) -> GroundTruth:
    """Flatten `Sample`s; the categories evaluated are the label map's keys (COCO's ``catIds``)."""
    if label_map is None:
        raise ValueError("evaluate(samples, ...) needs label_map= (label id -> name); its keys are the classes "
                         "evaluated")
    samples = list(samples)  # a reader parses a Sample on each access: read each one once
    image_ids = id_array([s.image_id for s in samples])
    uniq, counts = np.unique(image_ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        first = int(np.flatnonzero(image_ids == dup)[1])
        raise DatasetError(f"image_id {int(dup)} appears more than once", record=f"samples[{first}]",
                           field="image_id", kind="duplicate_image_id")
    n_boxes = np.fromiter((len(s.boxes) for s in samples), dtype=np.int64, count=len(samples))
    if len(samples) and n_boxes.sum():
        boxes = np.concatenate([s.boxes for s in samples])
        labels = id_array(np.concatenate([s.labels for s in samples]))
        iscrowd = np.concatenate([s.iscrowd for s in samples])
        areas = np.concatenate([s.box_areas for s in samples])
    else:
        boxes, labels = np.zeros((0, 4)), np.zeros(0, np.int64)
        iscrowd, areas = np.zeros(0, bool), np.zeros(0)
    category_ids = np.unique(id_array([int(k) for k in label_map]))
    category = _index_of(category_ids, labels)
    if (category < 0).any():
        i = int(np.flatnonzero(category < 0)[0])
        sample = int(np.searchsorted(np.cumsum(n_boxes), i, side="right"))
        raise DatasetError(f"label id {int(labels[i])} is not in the label map", record=f"samples[{sample}]",
                           field="labels", kind="unknown_label")
    _check_boxes(boxes, "ground truth box", allow_zero=True)
    image_index = _index_of(uniq, image_ids)
    return GroundTruth(
        image_ids=uniq, category_ids=category_ids,
        category_names={int(k): str(label_map[k]) for k in category_ids.tolist()},
        image=np.repeat(image_index, n_boxes), category=category,
        boxes=boxes, iscrowd=iscrowd.astype(bool), areas=areas.astype(np.float64),
        ids=_instance_ids(samples, len(boxes)))


def _instance_ids(samples: Sequence[Sample], n: int) -> np.ndarray:
    """The samples' integer instance ids (COCO annotation ids from the COCO reader), else 1..n."""
    ids = [i for s in samples for i in s.instance_ids]
    if len(ids) == n and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        return id_array([int(i) for i in ids])
    return np.arange(1, n + 1, dtype=np.int64)


def ground_truth_from_coco(data: Mapping[str, Any]) -> GroundTruth:
    """Read a COCO instances dict (``images``, ``annotations``, ``categories``).

    Like pycocotools: the categories evaluated are ``categories``' ids; an annotation without ``area``
    gets w * h, without ``iscrowd`` gets 0. Every annotation needs an integer ``id``. Unlike pycocotools,
    an annotation naming an unknown image or category is an error instead of being silently dropped.
    """
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"COCO ground truth needs a '{key}' list", field=key, kind="missing_key")
    image_list = [_int_field(img, "id", f"images[{i}]") for i, img in enumerate(data["images"])]
    cats = {}
    for i, c in enumerate(data["categories"]):
        cats[_int_field(c, "id", f"categories[{i}]")] = str(c.get("name", "")) if isinstance(c, Mapping) else ""
    image_ids = np.unique(id_array(image_list))
    category_ids = np.unique(id_array(list(cats)))
    img, cat, ids, boxes, crowd, areas = _annotation_columns(data["annotations"])
    image = _index_of(image_ids, img)
    category = _index_of(category_ids, cat)
    for index, name, ids_ in ((image, "image_id", img), (category, "category_id", cat)):
        if (index < 0).any():
            i = int(np.flatnonzero(index < 0)[0])
            raise DatasetError(f"{name} {int(ids_[i])} is not in the ground truth's "
                               f"{'images' if name == 'image_id' else 'categories'}",
                               record=f"annotations[{i}]", field=name, kind="unknown_" + name[:-3])
    _check_boxes(boxes, "annotation", allow_zero=True, prefix="annotations")
    if not np.isfinite(areas).all():  # e.g. an "area" of Infinity
        i = int(np.flatnonzero(~np.isfinite(areas))[0])
        raise DatasetError(f"area {areas[i]} is not finite", record=f"annotations[{i}]", field="area",
                           kind="bad_value")
    # Rows by image (images-list order), then annotation order: the within-image order pycocotools uses.
    first_seen = {}
    for pos, i in enumerate(image_list):
        first_seen.setdefault(i, pos)
    image_rank = np.fromiter((first_seen[int(i)] for i in image_ids), np.int64, len(image_ids))
    order = np.argsort(image_rank[image], kind="stable")
    return GroundTruth(
        image_ids=image_ids, category_ids=category_ids,
        category_names={int(k): cats[int(k)] for k in category_ids.tolist()},
        image=image[order], category=category[order],
        boxes=boxes[order], iscrowd=crowd[order], areas=areas[order], ids=ids[order])


def _annotation_columns(anns: Sequence) -> tuple[np.ndarray, ...]:
    """image_id, category_id, id, bbox, iscrowd, area columns; fast path, then a per-record check."""
    n = len(anns)
    if n == 0:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)),
                np.zeros(0, bool), np.zeros(0))
    try:
        img = np.array([a["image_id"] for a in anns])
        cat = np.array([a["category_id"] for a in anns])
        ids = np.array([a["id"] for a in anns])
        boxes = np.array([a["bbox"] for a in anns])
        crowd = np.array([a.get("iscrowd", 0) for a in anns])
        areas = np.array([a.get("area") for a in anns], dtype=np.float64)
        ok = (img.dtype.kind == "i" and cat.dtype.kind == "i" and ids.dtype.kind == "i"
              and boxes.dtype.kind in "iuf" and boxes.shape == (n, 4) and crowd.dtype.kind in "biu"
              and crowd.shape == (n,) and areas.shape == (n,))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        ok = False
    if not ok:  # check record by record, naming the first bad one; ids of any size pass
        cols: tuple[list, ...] = ([], [], [], [], [], [])
        for i, a in enumerate(anns):
            rec = f"annotations[{i}]"
            cols[0].append(_int_field(a, "image_id", rec))
            cols[1].append(_int_field(a, "category_id", rec))
            cols[2].append(_int_field(a, "id", rec))
            cols[3].append(_box_field(a, rec))
            cols[4].append(a.get("iscrowd", 0))
            cols[5].append(math.nan if a.get("area") is None else _number(a["area"], rec, "area"))
            if isinstance(cols[4][-1], float) or not isinstance(cols[4][-1], (int, bool, np.integer)):
                raise DatasetError(f"'iscrowd' must be 0 or 1, got {a['iscrowd']!r}", record=rec, field="iscrowd",
                                   kind="bad_type")
        img, cat, ids = id_array(cols[0]), id_array(cols[1]), id_array(cols[2])
        boxes, crowd, areas = np.array(cols[3]).reshape(n, 4), np.array(cols[4]), np.array(cols[5], np.float64)
    boxes = boxes.astype(np.float64)
    missing = np.isnan(areas)  # no "area" (or null): w * h, as Sample.box_areas
    areas[missing] = boxes[missing, 2] * boxes[missing, 3]
    return id_array(img), id_array(cat), id_array(ids), boxes, crowd.astype(bool), areas


# ------------------------------------------------------------------------------------------------------------
# detections

def detections_from_records(records: Any, gt: GroundTruth) -> Detections:
    """Validate and index detections given as a COCO results list or a `DETECTION_DTYPE` array."""
    if isinstance(records, np.ndarray):
        if records.dtype.names is None or not {"image_id", "category_id", "bbox", "score"} <= set(records.dtype.names):
            raise ValueError(f"a detections array needs the fields of DETECTION_DTYPE, got {records.dtype}")
        image_ids = np.asarray(records["image_id"])
        category_ids = np.asarray(records["category_id"])
        boxes = np.asarray(records["bbox"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(records["score"], dtype=np.float64).reshape(-1)
        if image_ids.dtype.kind not in "iu" or category_ids.dtype.kind not in "iu":
            raise ValueError("detections array: image_id and category_id must be integer fields")
        return Detections(*_checked(gt, id_array(image_ids), id_array(category_ids), boxes, scores, 0))
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes, Mapping)):
        raise DatasetError(f"detections must be a list of records, got {type(records).__name__}",
                           kind="bad_type")
    return _concat((_checked(gt, *_columns(records[i:i + DETECTION_BATCH], i), i)
                    for i in range(0, len(records), DETECTION_BATCH)), len(records))


def detections_from_json(uri: str, gt: GroundTruth, batch: int = DETECTION_BATCH) -> Detections:
    """Read detections from a JSON file: a COCO results list, streamed ``batch`` records at a time (memory
    ~ the result arrays, whatever the file size), or a COCO dict whose ``annotations`` are the results.

    Raises `DatasetError` naming the file, the record (``detections[i]``) and the field.
    """
    def batches():
        records: list = []
        for record in storage.iter_json_array(uri):
            records.append(record)
            if len(records) == batch:
                yield records
                records = []
        yield records

    def checked():
        offset = 0
        for records in batches():
            yield _checked(gt, *_columns(records, offset), offset)
            offset += len(records)

    try:
        try:
            return _concat(checked(), _json_capacity(uri))
        except DatasetError as e:
            if e.kind != "not_a_json_array":
                raise
        data = storage.read_json(uri)  # not a list: a COCO dict with the results as its annotations
        if isinstance(data, Mapping) and "annotations" in data:
            data = data["annotations"]
        return detections_from_records(data, gt)
    except DatasetError as e:
        if e.file is not None:
            raise
        raise DatasetError(e.message, file=str(uri), record=e.record, field=e.field, kind=e.kind) from None


def _concat(parts, capacity: int = 0) -> Detections:
    """One `Detections` from an iterable of (image, category, boxes, scores) parts, each written straight
    into its rows of the output columns (no list of parts, no final concatenation: 10 M detections
    used to peak at the parts plus a copy of the largest column).

    ``capacity``: rows to reserve up front (an upper bound, e.g. from the file size); ``np.empty``'s pages
    that are never written cost no memory, and the columns are cut to size at the end (``resize``: in
    place for large arrays). Beyond the capacity, or without one, the columns grow by half."""
    cols: list[np.ndarray] | None = None
    n = 0
    for part in parts:
        m = len(part[0])
        if cols is None or n + m > len(cols[0]):
            rows = max(capacity, n + m, (len(cols[0]) * 3) // 2 if cols is not None else 0)
            grown = [np.empty((rows,) + values.shape[1:], values.dtype) for values in part]
            if cols is not None:
                for new, old in zip(grown, cols):
                    new[:n] = old[:n]
            cols = grown
        for col, values in zip(cols, part):
            col[n:n + m] = values
        n += m
    if cols is None:
        return Detections(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))
    for col in cols:
        col.resize((n,) + col.shape[1:], refcheck=False)  # only this function holds them
    return Detections(*cols)


def _json_capacity(uri: str) -> int:
    """An upper bound of the records in a JSON results file: its size over the shortest record,
    ``{"image_id":1,"category_id":1,"bbox":[1,1,1,1],"score":1}`` (57 characters); 0 when the size is
    unknown (http)."""
    if storage.is_http(uri):
        return 0
    try:
        fs, path = storage.split_uri(uri)
        return int(fs.size(path)) // 57 + 1
    except (OSError, TypeError, ValueError):
        return 0


def _checked(gt: GroundTruth, image_ids: np.ndarray, category_ids: np.ndarray, boxes: np.ndarray,
             scores: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image index, category index, boxes, scores) of detections numbered from ``offset``, checked
    against ``gt`` (unknown ids, non-finite scores, negative sizes name ``detections[i]``)."""
    image = _index_of(gt.image_ids, image_ids)
    category = _index_of(gt.category_ids, category_ids)
    if len(scores) and not np.isfinite(scores).all():
        i = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise DatasetError(f"score {scores[i]} is not finite", record=f"detections[{offset + i}]", field="score",
                           kind="bad_value")
    _check_boxes(boxes, "detection", allow_zero=True, prefix="detections", offset=offset)
    for index, ids, name, where in ((image, image_ids, "image_id", "images"),
                                    (category, category_ids, "category_id", "categories")):
        if (index < 0).any():
            i = int(np.flatnonzero(index < 0)[0])
            raise DatasetError(f"{name} {int(ids[i])} is not among the ground truth's {where}",
                               record=f"detections[{offset + i}]", field=name, kind="unknown_" + name[:-3])
    return image, category, boxes, scores


def _columns(records: Sequence, offset: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Four columns of a results list (ids via `id_array`); a fast path, then a record-by-record check
    that names the first bad record (``detections[offset + i]``)."""
    n = len(records)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0)
    try:
        image_ids = _integral(np.array([r["image_id"] for r in records]))
        category_ids = _integral(np.array([r["category_id"] for r in records]))
        boxes = np.array([r["bbox"] for r in records])
        scores = np.array([r["score"] for r in records])
        ok = (image_ids.dtype.kind == "i" and category_ids.dtype.kind == "i" and boxes.dtype.kind in "iuf"
              and boxes.shape == (n, 4) and scores.dtype.kind in "iuf" and scores.shape == (n,))
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        ok = False
    if ok:
        return (image_ids.astype(np.int64), category_ids.astype(np.int64), boxes.astype(np.float64),
                scores.astype(np.float64))
    cols: tuple[list, ...] = ([], [], [], [])
    for i, r in enumerate(records):  # ids of any size pass here (uint64, 128-bit)
        rec = f"detections[{offset + i}]"
        cols[0].append(_int_field(r, "image_id", rec))
        cols[1].append(_int_field(r, "category_id", rec))
        cols[2].append(_box_field(r, rec))
        if "score" not in r:
            raise DatasetError("missing key 'score'", record=rec, field="score", kind="missing_key")
        cols[3].append(_number(r["score"], rec, "score"))
    return (id_array(cols[0]), id_array(cols[1]), np.array(cols[2], np.float64).reshape(n, 4),
            np.array(cols[3], np.float64))


# ------------------------------------------------------------------------------------------------------------
# field checks

def _integral(ids: np.ndarray) -> np.ndarray:
    """Float ids that are whole numbers (``1.0``, as some writers emit) as int64; anything else unchanged."""
    if ids.dtype.kind == "f" and ids.ndim == 1 and np.isfinite(ids).all() and (ids == np.round(ids)).all() \
            and (np.abs(ids) < 2 ** 53).all():
        return ids.astype(np.int64)
    return ids


def _index_of(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each id in ``sorted_ids``, -1 where absent; ids of any size (object arrays) by lookup."""
    ids = id_array(ids)
    if len(sorted_ids) == 0:
        return np.full(len(ids), -1, np.int64)
    if sorted_ids.dtype == object or ids.dtype == object:
        lookup = {int(v): k for k, v in enumerate(sorted_ids.tolist())}
        return np.fromiter((lookup.get(v, -1) for v in ids.tolist()), np.int64, len(ids))
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1)


def _check_boxes(boxes: np.ndarray, what: str, *, allow_zero: bool, prefix: str = "", offset: int = 0) -> None:
    if not len(boxes):
        return
    bad = ~np.isfinite(boxes).all(axis=1)
    kind, problem = "bad_value", "has a non-finite value"
    if not bad.any():
        bad = (boxes[:, 2:] < 0).any(axis=1) if allow_zero else (boxes[:, 2:] <= 0).any(axis=1)
        kind, problem = "box_non_positive", "has a negative width or height"
    if bad.any():
        i = int(np.flatnonzero(bad)[0]) + offset
        record = f"{prefix}[{i}]" if prefix else f"{what} {i}"
        raise DatasetError(f"bbox {boxes[i - offset].tolist()} (xywh) {problem}", record=record, field="bbox",
                           kind=kind)


def _int_field(obj: Any, key: str, record: str) -> int:
    if not isinstance(obj, Mapping):
        raise DatasetError(f"expected a JSON object, got {type(obj).__name__}", record=record, kind="bad_type")
    if key not in obj:
        raise DatasetError(f"missing key '{key}'", record=record, field=key, kind="missing_key")
    value = obj[key]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DatasetError(f"'{key}' must be an integer, got {value!r}", record=record, field=key, kind="bad_type")
    return int(value)


def _number(value: Any, record: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DatasetError(f"'{key}' must be a number, got {value!r}", record=record, field=key, kind="bad_type")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float64 (1e308), e.g. 10**400
        raise DatasetError(f"'{key}' {str(value)[:20]}... ({len(str(value))} digits) is too large for a number",
                           record=record, field=key, kind="bad_value") from None
    if not math.isfinite(number):
        raise DatasetError(f"'{key}' {value} is not finite", record=record, field=key, kind="bad_value")
    return number


def _box_field(obj: Mapping, record: str) -> list[float]:
    if "bbox" not in obj:
        raise DatasetError("missing key 'bbox'", record=record, field="bbox", kind="missing_key")
    box = obj["bbox"]
    if not isinstance(box, (list, tuple, np.ndarray)) or len(box) != 4:
        raise DatasetError(f"bbox must be [x, y, w, h], got {box!r}", record=record, field="bbox", kind="bad_type")
    values = [_number(v, record, "bbox") for v in box]
    if values[2] < 0 or values[3] < 0:
        raise DatasetError(f"bbox {values} (xywh) has a negative width or height", record=record, field="bbox",
                           kind="box_non_positive")
    return values
