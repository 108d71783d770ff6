"""Supervisely projects (format ``supervisely``): a reader, `SuperviselyDataset`.

Layout (Supervisely's "export to .tar" / the demo projects in ../shared/real)::

    project/meta.json               {"classes": [{"title": "product", "shape": "rectangle", ...}],
                                     "tags": [{"name": "1000591", "value_type": "none", ...}]}
    project/<dataset>/img/<name>    the images (any number of datasets, each a folder)
    project/<dataset>/ann/<name>.json
        {"size": {"height": 1920, "width": 1080},
         "objects": [{"id": 7681181, "classTitle": "product", "geometryType": "rectangle",
                      "points": {"exterior": [[x1, y1], [x2, y2]], "interior": []}, "tags": [...]}]}

Objects become boxes (xywh float pixels of the upright image):

- ``rectangle``: ``points.exterior`` holds two corners [[x1, y1], [x2, y2]] in pixels; the box is
  x = min(x1, x2), w = |x2 - x1| (and so for y). Corners are taken as continuous coordinates, as COCO's
  bbox is: a rectangle whose corners coincide has zero width (Supervisely's SDK counts ``right - left + 1``
  pixels; such a "box" is an annotator's stray click, not an object). No mask.
- ``polygon``: ``points.exterior`` (>= 3 vertices, pixels) with holes ``points.interior``; the box is the
  exterior's extent; the mask a `PolygonMask` with those rings and holes.
- ``bitmap``: ``bitmap.data`` (base64 of a zlib-compressed PNG; nonzero or opaque pixels are the object)
  placed with its top-left pixel at ``bitmap.origin`` [x, y]; the mask a `BitmapMask`, the box the extent
  of its set pixels (a pixel is 1x1: a mask covering columns 278..521 gives x 278, w 244).

Other geometries (point, polyline, graph, cuboid, ...) have no box and are a `DatasetError`.

Labels: ``label_tag=None`` (the default) labels every object by its ``classTitle``; the label map is
meta.json's classes, ids 1..N in their order (0 is Faster R-CNN's background). ``label_tag="*"``: the
label is the name of the object's one value-less tag (``value_type: none``; tags with a value are
attributes and are ignored), ids 1..K in the order of meta.json's value-less tags (the snacks catalog:
one such tag per product, named by its product id). ``label_tag=NAME``: the label is the
value of the object's tag NAME (a tag with values, e.g. ``sku``); ids 1..K in the order of the tag's
``values`` in meta.json (``oneof_string``), else of the sorted values found in the annotations, which
are then all read when the dataset is opened.

``datasets=``: read only these datasets of the project (names of its folders; default: all).

Streams like the other readers: opening lists the annotation files (a compact index); each
``ds[i]`` parses one file. ``image_id`` is an image's position among all of the project's images
(datasets in name order, images in name order), whatever ``datasets=`` selects. Image sizes come from
``size`` (Supervisely stores the upright image's: it applies EXIF orientation on upload).

``skip_invalid=True``: every annotation file is parsed when the dataset is opened. A box of zero (or
negative) width or height, or a mask with no pixel, is left out alone; any other defect (unreadable
JSON, an unknown class or geometry, malformed points, a box with no area inside the image) leaves out
its image, so a kept image never silently misses an object. Each is listed in ``self.skipped``. Without
it, ``ds[i]`` raises the `DatasetError`, naming the annotation file, the object (index and id) and the
field.
"""

from __future__ import annotations

import binascii
import math
import zlib
from typing import Any, Iterable, Sequence

import numpy as np

from synthgap.data.dataset import DetectionDataset
from synthgap.data.errors import DatasetError
from synthgap.data.masks import BitmapMask, PolygonMask, mask_bbox
from synthgap.data.sample import Sample, validate_sample
from synthgap.io import storage

META = "meta.json"
ANY_TAG = "*"  # label_tag value: the name of the object's one value-less tag is its label
GEOMETRIES = ("rectangle", "polygon", "bitmap")
# box-level defects: under skip_invalid the object is left out alone (nothing a model could find is lost)
_BOX_LEVEL = frozenset(("box_non_positive", "empty_mask"))


def project_datasets(root: str) -> list[str]:
    """Sorted names of the project's datasets: the folders of ``root`` holding an ``ann/`` folder."""
    return [name for name in storage.listdir(root)
            if not name.startswith(".") and storage.isdir(storage.join(root, name, "ann"))]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _points(value: Any, file: str, record: str, field: str, minimum: int) -> tuple[tuple[float, float], ...]:
    """((x, y), ...) of a list of [x, y] number pairs with at least ``minimum`` points."""
    if not isinstance(value, list) or len(value) < minimum or not all(
            isinstance(p, list) and len(p) == 2 and _number(p[0]) and _number(p[1]) for p in value):
        raise DatasetError(f"expected a list of at least {minimum} [x, y] number pairs (pixels), got "
                           f"{str(value)[:80]}", file=file, record=record, field=field, kind="bad_points")
    return tuple((float(x), float(y)) for x, y in value)


class SuperviselyDataset(DetectionDataset):
    """A Supervisely project (module docstring), or some of its datasets.

    Args:
        root: the project folder (path or URI; http(s) cannot be listed) holding meta.json.
        datasets: names of the datasets to read (a name or a list of names); default all.
        label_tag: None (labels = class titles), ``"*"`` (the name of each object's one value-less tag)
            or a tag name (its value), see the module docstring.
        skip_invalid: parse every annotation file now and leave out invalid objects / images (listed in
            ``self.skipped``) instead of raising `DatasetError` when a sample is read.
    """

    format = "supervisely"

    def __init__(self, root: str, *, skip_invalid: bool = False, datasets: str | Sequence[str] | None = None,
                 label_tag: str | None = None):
        super().__init__(root, skip_invalid=skip_invalid)
        self.meta_path = storage.join(root, META)
        meta = self._read_meta()
        self.label_tag = label_tag
        all_datasets = project_datasets(root)
        if not all_datasets:
            raise DatasetError("the project has no dataset folder (<dataset>/ann/)", file=root, kind="empty_dataset")
        chosen = self._choose(all_datasets, datasets, root)
        self.datasets = chosen
        ds_index, names, ids = [], [], []
        position = 0
        for name in all_datasets:
            anns = [n[:-len(".json")] for n in storage.listdir(storage.join(root, name, "ann")) if n.endswith(".json")]
            if name in chosen:
                ds_index += [chosen.index(name)] * len(anns)
                names += anns
                ids.append(np.arange(position, position + len(anns), dtype=np.int64))
            position += len(anns)
        self._ds = np.asarray(ds_index, dtype=np.int32)
        self._names = names
        self._ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        self._label_of: dict[str, int] = {}
        self.label_map = self._label_map(meta)
        self._rows = np.arange(len(names), dtype=np.int64)
        if skip_invalid:
            self._rows = np.array([r for r in range(len(names)) if self._check(r)], dtype=np.int64)

    @classmethod
    def detect(cls, root: str) -> bool:
        try:
            if storage.is_http(root) or not storage.isfile(storage.join(root, META)):
                return False
            meta = storage.read_json(storage.join(root, META))
            return isinstance(meta, dict) and isinstance(meta.get("classes"), list) and bool(project_datasets(root))
        except (DatasetError, OSError, ValueError):
            return False

    # -- index building ------------------------------------------------------------------------------------
    def _read_meta(self) -> dict:
        f = self.meta_path
        if not storage.exists(f):
            raise DatasetError(f"{META} is missing (it lists the project's classes and tags)", file=f,
                               kind="missing_file")
        meta = storage.read_json(f)
        if not isinstance(meta, dict) or not isinstance(meta.get("classes"), list):
            raise DatasetError("missing key 'classes' (a list)", file=f, record="top level", field="classes",
                               kind="missing_key")
        for i, c in enumerate(meta["classes"]):
            if not isinstance(c, dict) or not isinstance(c.get("title"), str):
                raise DatasetError("class without a string 'title'", file=f, record=f"classes[{i}]", field="title",
                                   kind="missing_key")
        tags = meta.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tags):
            raise DatasetError("'tags' must be a list of objects with a string 'name'", file=f, record="top level",
                               field="tags", kind="bad_type")
        meta.setdefault("tags", [])
        return meta

    @staticmethod
    def _choose(available: list[str], wanted: str | Sequence[str] | None, root: str) -> list[str]:
        if wanted is None:
            return list(available)
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        unknown = [w for w in wanted if w not in available]
        if unknown or not wanted:
            raise DatasetError(f"datasets {unknown or wanted} are not in the project; it has: {', '.join(available)}",
                               file=root, field="datasets", kind="unknown_dataset")
        return [name for name in available if name in wanted]  # the project's order

    def _label_map(self, meta: dict) -> dict[int, str]:
        """id -> name (ids 1..N) and ``self._label_of`` (name -> id) for the labelling rule in use."""
        tag = self.label_tag
        if tag is None:
            names = [c["title"] for c in meta["classes"]]
        elif tag == ANY_TAG:
            names = [t["name"] for t in meta["tags"] if t.get("value_type", "none") == "none"]
            if not names:
                raise DatasetError("label_tag='*' takes labels from the names of value-less tags, but the project "
                                   "has none", file=self.meta_path, field="tags", kind="missing_key")
        else:
            metas = [t for t in meta["tags"] if t["name"] == tag]
            if not metas:
                raise DatasetError(f"no tag {tag!r} in the project (its tags: "
                                   f"{', '.join(t['name'] for t in meta['tags'][:20]) or 'none'})",
                                   file=self.meta_path, field="tags", kind="unknown_tag")
            if metas[0].get("value_type") == "none":
                raise DatasetError(f"tag {tag!r} has no value (value_type none); label_tag='*' labels each object "
                                   "by the name of its one tag", file=self.meta_path, field="tags", kind="bad_label_tag")
            values = metas[0].get("values")
            names = [str(v) for v in values] if isinstance(values, list) and values else self._scan_tag_values(tag)
        names = list(dict.fromkeys(names))  # a name listed twice is one class
        self._label_of = {name: i for i, name in enumerate(names, 1)}
        return {i: name for name, i in self._label_of.items()}

    def _scan_tag_values(self, tag: str) -> list[str]:
        values = set()
        for row in range(len(self._names)):
            doc = storage.read_json(self.ann_path(row))
            objects = doc.get("objects") if isinstance(doc, dict) else None
            for obj in objects if isinstance(objects, list) else ():
                for t in obj.get("tags", ()) if isinstance(obj, dict) else ():
                    if isinstance(t, dict) and t.get("name") == tag and t.get("value") is not None:
                        values.add(str(t["value"]))
        return sorted(values)

    def _check(self, row: int) -> bool:
        """Parse one annotation under skip_invalid: record what is left out, False when the image is."""
        try:
            self._sample(row, self.skipped.add)
            return True
        except DatasetError as e:
            self.skipped.add(e)
            return False

    # -- parsing ---------------------------------------------------------------------------------------------
    def ann_path(self, row: int) -> str:
        return storage.join(self.root, self.datasets[int(self._ds[row])], "ann", self._names[row] + ".json")

    def image_path(self, row: int) -> str:
        return storage.join(self.root, self.datasets[int(self._ds[row])], "img", self._names[row])

    def _label(self, obj: dict, f: str, rec: str) -> int:
        tag = self.label_tag
        if tag is None:
            name, field = obj.get("classTitle"), "classTitle"
        else:
            tags = obj.get("tags", [])
            if not isinstance(tags, list):
                raise DatasetError("'tags' is not a list", file=f, record=rec, field="tags", kind="bad_type")
            if tag == ANY_TAG:  # tags with a value are attributes (sku: ...), not the object's name
                names = [t.get("name") for t in tags if isinstance(t, dict) and t.get("value") is None]
                if len(names) != 1:
                    raise DatasetError(f"label_tag='*' needs exactly one value-less tag per object, found {len(names)} "
                                       f"({', '.join(map(str, names)) or 'none'})", file=f, record=rec, field="tags",
                                       kind="bad_label_tag")
                name = names[0]
            else:
                found = [t.get("value") for t in tags if isinstance(t, dict) and t.get("name") == tag]
                if not found or found[0] is None:
                    raise DatasetError(f"the object has no value for tag {tag!r}", file=f, record=rec, field="tags",
                                       kind="bad_label_tag")
                name = str(found[0])
            field = "tags"
        if not isinstance(name, str) or name not in self._label_of:
            source = f"{META} classes" if tag is None else f"the labels of tag {tag!r}" if tag != ANY_TAG \
                else f"{META} tags"
            raise DatasetError(f"label {name!r} is not among {source}", file=f, record=rec, field=field,
                               kind="unknown_label")
        return self._label_of[name]

    @staticmethod
    def _geometry(obj: dict, f: str, rec: str) -> tuple[tuple[float, float, float, float], Any, str]:
        """(xywh box in pixels, mask or None, the field the box comes from) of one object."""
        kind = obj.get("geometryType")
        if kind == "rectangle":
            points = obj.get("points")
            corners = _points(points.get("exterior") if isinstance(points, dict) else None, f, rec,
                              "points.exterior", 2)
            if len(corners) != 2:
                raise DatasetError(f"a rectangle has 2 corners [[x1, y1], [x2, y2]], got {len(corners)} points",
                                   file=f, record=rec, field="points.exterior", kind="bad_points")
            (x1, y1), (x2, y2) = corners
            return (min(x1, x2), min(y1, y2), abs(x2 - x1), abs(y2 - y1)), None, "points.exterior"
        if kind == "polygon":
            points = obj.get("points")
            if not isinstance(points, dict):
                raise DatasetError("missing 'points' object", file=f, record=rec, field="points", kind="missing_key")
            ring = _points(points.get("exterior"), f, rec, "points.exterior", 3)
            interior = points.get("interior", [])
            if not isinstance(interior, list):
                raise DatasetError("'points.interior' must be a list of rings", file=f, record=rec,
                                   field="points.interior", kind="bad_points")
            holes = tuple(_points(h, f, rec, f"points.interior[{k}]", 3) for k, h in enumerate(interior))
            mask = PolygonMask((ring,), holes)
            return mask.bbox(), mask, "points.exterior"
        if kind == "bitmap":
            bitmap = obj.get("bitmap")
            data, origin = (bitmap.get("data"), bitmap.get("origin")) if isinstance(bitmap, dict) else (None, None)
            if not isinstance(origin, list) or len(origin) != 2 or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in origin):
                raise DatasetError(f"bitmap.origin must be [x, y] whole pixels, got {origin!r}", file=f, record=rec,
                                   field="bitmap.origin", kind="bad_points")
            try:
                mask = BitmapMask.from_supervisely(data, origin)
                extent = mask_bbox(mask.local())
            except (TypeError, ValueError, binascii.Error, zlib.error, OSError, SyntaxError) as e:
                raise DatasetError(f"bitmap.data is not base64 of a zlib-compressed PNG ({type(e).__name__}: {e})",
                                   file=f, record=rec, field="bitmap.data", kind="bad_bitmap") from None
            if extent is None:
                raise DatasetError("the bitmap has no set pixel", file=f, record=rec, field="bitmap.data",
                                   kind="empty_mask")
            return (extent[0] + origin[0], extent[1] + origin[1], extent[2], extent[3]), mask, "bitmap"
        raise DatasetError(f"geometryType {kind!r} has no box (readable: {', '.join(GEOMETRIES)})", file=f,
                           record=rec, field="geometryType", kind="unsupported_geometry")

    def _sample(self, row: int, skip=None) -> Sample:
        """Parse one annotation file. ``skip``: called with each box-level DatasetError (that object is then
        left out); None: those are left out silently when ``skip_invalid`` (recorded when opened), else raised."""
        f = self.ann_path(row)
        name = self._names[row]
        doc = storage.read_json(f)
        if not isinstance(doc, dict):
            raise DatasetError(f"top level is a {type(doc).__name__}, expected a JSON object", file=f, kind="bad_type")
        size = doc.get("size")
        width, height = (size.get("width"), size.get("height")) if isinstance(size, dict) else (None, None)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
            raise DatasetError(f"'size' must be {{height, width}} whole pixels, got {size!r}", file=f,
                               record="top level", field="size", kind="bad_image_size")
        objects = doc.get("objects", [])
        if not isinstance(objects, list):
            raise DatasetError("'objects' is not a list", file=f, record="top level", field="objects", kind="bad_type")
        boxes, labels, masks, obj_ids = [], [], [], []
        for i, obj in enumerate(objects):
            oid = obj.get("id") if isinstance(obj, dict) else None
            rec = f"objects[{i}] (id {oid})" if oid is not None else f"objects[{i}]"
            try:
                if not isinstance(obj, dict):
                    raise DatasetError("object is not a JSON object", file=f, record=rec, kind="bad_type")
                label = self._label(obj, f, rec)
                box, mask, field = self._geometry(obj, f, rec)
                self._check_box(box, width, height, f, rec, field)
            except DatasetError as e:
                if e.kind not in _BOX_LEVEL:
                    raise
                if skip is not None:
                    skip(e)
                elif not self.skip_invalid:
                    raise
                continue
            boxes.append(box)
            labels.append(label)
            masks.append(mask)
            obj_ids.append(oid)
        has_masks = any(m is not None for m in masks)
        sample = Sample(
            image=self.image_path(row), width=width, height=height, boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64), image_id=int(self._ids[row]),
            instance_ids=tuple(obj_ids) if all(isinstance(v, int) for v in obj_ids) else (),
            masks=tuple(masks) if has_masks else (),
            metadata={"dataset": self.datasets[int(self._ds[row])], "file_name": name, "source": f},
        )
        validate_sample(sample, self.label_map, file=f, record="top level")  # sizes and lengths (boxes checked above)
        return sample

    @staticmethod
    def _check_box(box: Iterable[float], width: int, height: int, f: str, rec: str, field: str) -> None:
        """The checks `validate_sample` makes, naming the object instead of the box's position."""
        x, y, w, h = box
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise DatasetError(f"box {[x, y, w, h]} has a non-finite value", file=f, record=rec, field=field,
                               kind="box_not_finite")
        if w <= 0 or h <= 0:
            raise DatasetError(f"box {[x, y, w, h]} (xywh) has zero or negative size", file=f, record=rec,
                               field=field, kind="box_non_positive")
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            raise DatasetError(f"box {[x, y, w, h]} (xywh) has no area inside the {width}x{height} image", file=f,
                               record=rec, field=field, kind="box_outside_image")

    # -- Sequence API -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._sample(int(self._rows[index]))

