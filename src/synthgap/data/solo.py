"""Unity Perception 1.x "SOLO" datasets: a streaming reader and a writer.

Layout (one folder per sequence, one JSON file per step)::

    root/annotation_definitions.json   {"annotationDefinitions": [{"@type": ...BoundingBox2DAnnotation,
                                                                    "id": "bounding box", "spec": [...]}]}
    root/metadata.json, sensor_definitions.json, metric_definitions.json
    root/sequence.N/stepK.frame_data.json   {"frame", "sequence", "step", "captures": [...]}
    root/sequence.N/stepK.camera.png         (file names may contain spaces)

Every capture of a frame is one camera image and becomes one `Sample`. A 2D box is ``origin`` [x, y]
+ ``dimension`` [w, h] in pixels, i.e. already xywh. ``metadata.json`` totals are never trusted:
the index is built from the folder listing.
"""

from __future__ import annotations

import io
import json
import re
from array import array
from typing import Any, Mapping

import numpy as np

from synthgap import storage
from synthgap.data.dataset import DetectionDataset
from synthgap.data.errors import DatasetError
from synthgap.data.sample import Sample, validate_sample

BBOX2D_TYPE = "type.unity.com/unity.solo.BoundingBox2DAnnotation"
INSTANCE_TYPE = "type.unity.com/unity.solo.InstanceSegmentationAnnotation"
SEMANTIC_TYPE = "type.unity.com/unity.solo.SemanticSegmentationAnnotation"
RGB_CAMERA_TYPE = "type.unity.com/unity.solo.RGBCamera"
# Names Unity (and hand-written configs) give the 2D box labeler, compared case-insensitively.
BOX_DEFINITION_NAMES = ("bounding box", "2d bounding box", "bounding box 2d", "boundingbox2d")

_SEQUENCE_DIR = re.compile(r"^sequence\.(\d+)$")
_FRAME_FILE = re.compile(r"^step(\d+)\.frame_data\.json$")


# --------------------------------------------------------------------------------------------
# Field access that names file, record and field on failure (shared with the legacy reader).
# --------------------------------------------------------------------------------------------

class _Where:
    """File + record of the JSON object being read, to build precise DatasetErrors."""

    __slots__ = ("file", "record")

    def __init__(self, file: str, record: str):
        self.file = file
        self.record = record

    def error(self, message: str, field: str | None, kind: str) -> DatasetError:
        return DatasetError(message, file=self.file, record=self.record, field=field, kind=kind)

    def get(self, obj: Any, key: str, path: str) -> Any:
        """``obj[key]``; a missing key (or a non-object) is a ``missing_field`` error at ``path``."""
        if not isinstance(obj, dict):
            raise self.error(f"expected a JSON object, got {type(obj).__name__}", path.rsplit(".", 1)[0],
                             "wrong_type")
        if key not in obj:
            raise self.error(f"required field {key!r} is missing", path, "missing_field")
        return obj[key]

    def number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"expected a number, got {type(value).__name__} {value!r}", path, "wrong_type")
        return float(value)

    def integer(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or (isinstance(value, float) and not value.is_integer()):
            raise self.error(f"expected an integer, got {type(value).__name__} {value!r}", path, "wrong_type")
        return int(value)

    def numbers(self, value: Any, n: int, path: str) -> list[float]:
        if not isinstance(value, list) or len(value) != n:
            raise self.error(f"expected a list of {n} numbers, got {value!r}", path, "wrong_type")
        return [self.number(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def array(self, value: Any, path: str) -> list:
        if not isinstance(value, list):
            raise self.error(f"expected a JSON list, got {type(value).__name__}", path, "wrong_type")
        return value

    def instance_id(self, value: Any, path: str) -> int | str:
        """Instance ids are kept as found: an int, or a string (some Perception versions)."""
        if isinstance(value, str):
            return value
        return self.integer(value, path)


def load_label_map(spec: Any, where: _Where, path: str) -> dict[int, str]:
    """``[{"label_id": 1, "label_name": "Crate"}, ...]`` -> {1: "Crate"} (both Unity schemas)."""
    label_map: dict[int, str] = {}
    for i, entry in enumerate(where.array(spec, path)):
        label_id = where.integer(where.get(entry, "label_id", f"{path}[{i}].label_id"), f"{path}[{i}].label_id")
        label_map[label_id] = str(where.get(entry, "label_name", f"{path}[{i}].label_name"))
    return label_map


def is_box_definition_name(name: Any) -> bool:
    return isinstance(name, str) and name.strip().lower() in BOX_DEFINITION_NAMES


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------

class SoloDataset(DetectionDataset):
    """A SOLO dataset as a random-access sequence of `Sample`s (one per camera capture).

    Opening lists the ``sequence.N`` folders, parses each ``stepK.frame_data.json`` once to count and
    validate its captures, and keeps only an index (relative frame path per frame, and (frame, capture)
    per sample: about 100 bytes per frame). ``ds[i]`` parses one frame file again.

    Image size comes from the capture's ``dimension`` [width, height] (pixels); image files are checked
    for existence against the sequence folder's listing (no extra stat calls), their headers are not read.

    ``metadata``: ``sequence`` and ``step`` (from the folder / file names, which are unique, unlike the
    JSON's own values in some Unity builds), ``frame`` (the JSON's frame number), ``sensor_id``,
    ``capture`` (index of the capture in the frame) and ``file`` (frame file relative to root).
    ``segmentation``: ``instance`` / ``semantic`` image URIs when those annotations are present.
    """

    format = "solo"

    def __init__(self, root: str, *, skip_invalid: bool = False):
        super().__init__(root, skip_invalid=skip_invalid)
        # root + separator, so paths below are base + relative path (one string concat, not a join call)
        self._base = storage.join(root, "x")[:-1]
        self.box_definition_id = self._read_definitions()
        self._frames: list[str] = []          # frame file, relative to root
        self._frame_of: np.ndarray = np.zeros(0, dtype=np.int32)    # sample -> frame
        self._capture_of: np.ndarray = np.zeros(0, dtype=np.int16)  # sample -> capture in frame
        self._build_index()

    # -- format detection and definitions ------------------------------------------------------

    @classmethod
    def detect(cls, root: str) -> bool:
        if not storage.isdir(root):
            return False
        if storage.exists(storage.join(root, "metadata.json")) \
                and not storage.glob(storage.join(root, "captures_*.json")):
            return True
        return any(_SEQUENCE_DIR.match(name) for name in storage.listdir(root))

    def _read_definitions(self) -> str:
        """Fill ``label_map`` from the BoundingBox2D definition; return that definition's id."""
        path = storage.join(self.root, "annotation_definitions.json")
        if not storage.exists(path):
            raise DatasetError("annotation_definitions.json is missing: the label map cannot be read",
                               file=path, field="annotationDefinitions", kind="missing_file")
        where = _Where(path, "annotationDefinitions")
        definitions = where.array(where.get(storage.read_json(path), "annotationDefinitions", "annotationDefinitions"),
                                  "annotationDefinitions")
        for i, d in enumerate(definitions):
            if not isinstance(d, dict):
                continue
            if d.get("@type") == BBOX2D_TYPE or is_box_definition_name(d.get("id")):
                where.record = f"annotationDefinitions[{i}]"
                self.label_map = load_label_map(where.get(d, "spec", "spec"), where, "spec")
                return str(where.get(d, "id", "id"))
        raise DatasetError("no BoundingBox2D annotation definition (by @type or by name 'bounding box')",
                           file=path, record="annotationDefinitions", field="@type", kind="no_box_definition")

    # -- index ----------------------------------------------------------------------------------

    def _build_index(self) -> None:
        """One pass over the sequence folders in numeric order, one folder listing in memory at a time."""
        folders = sorted((int(m.group(1)), name) for name in storage.listdir(self.root)
                         if (m := _SEQUENCE_DIR.match(name)))
        frame_of = array("i")    # sample -> frame index
        capture_of = array("h")  # sample -> capture index within its frame
        seen = 0
        previous: tuple[int, str] | None = None
        for seq, name in folders:
            if previous is not None and previous[0] == seq:
                raise DatasetError(f"sequence {seq} is stored twice ({previous[1]} and {name})",
                                   file=storage.join(self.root, name), kind="duplicate_frame")
            previous = (seq, name)
            try:
                entries = storage.listdir(storage.join(self.root, name))
            except (NotADirectoryError, FileNotFoundError):
                continue  # a file that happens to be called sequence.N
            steps = sorted((int(f.group(1)), entry) for entry in entries if (f := _FRAME_FILE.match(entry)))
            listing = set(entries)
            for k, (step, entry) in enumerate(steps):
                rel = f"{name}/{entry}"
                if k and steps[k - 1][0] == step:
                    raise DatasetError(f"sequence {seq} step {step} is stored twice ({steps[k - 1][1]} and {entry})",
                                       file=storage.join(self.root, rel), kind="duplicate_frame")
                seen += 1
                kept = self._index_frame(rel, (seq, step), listing, frame_of, capture_of)
                if kept:
                    self._frames.append(rel)
        if not seen:
            raise DatasetError("no sequence.N/stepK.frame_data.json files: the dataset is empty",
                               file=self.root, kind="empty")
        self._frame_of = np.frombuffer(frame_of, dtype=np.int32).copy()
        self._capture_of = np.frombuffer(capture_of, dtype=np.int16).copy()

    def _index_frame(self, rel: str, key: tuple[int, int], listing: set[str], frame_of: array,
                     capture_of: array) -> int:
        """Parse and validate one frame; append its valid captures to the index; return how many."""
        file = self._base + rel
        try:
            doc = self._read_frame(rel)
            where = _Where(file, "frame")
            n = len(where.array(where.get(doc, "captures", "captures"), "captures"))
        except DatasetError as e:
            if not self.skip_invalid:
                raise
            self.skipped.add(e)
            return 0
        frame_index = len(self._frames)
        kept = 0
        for c in range(n):
            try:
                sample = self._sample(doc, rel, key, c, image_id=len(frame_of))
                validate_sample(sample, self.label_map, file=file, record=f"captures[{c}]")
                filename = doc["captures"][c]["filename"]  # checked by _sample: a non-empty string
                if not (filename in listing if "/" not in filename else storage.exists(sample.image)):
                    raise DatasetError(f"the referenced image {sample.image} does not exist", file=file,
                                       record=f"captures[{c}]", field="filename", kind="missing_image")
            except DatasetError as e:
                if not self.skip_invalid:
                    raise
                self.skipped.add(e)
                continue
            frame_of.append(frame_index)
            capture_of.append(c)
            kept += 1
        return kept

    def _read_frame(self, rel: str) -> dict:
        doc = storage.read_json(self._base + rel)
        if not isinstance(doc, dict):
            raise DatasetError("a frame file must hold a JSON object", file=self._base + rel,
                               record="frame", kind="wrong_type")
        return doc

    # -- samples --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._frame_of)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        index %= len(self)
        rel = self._frames[self._frame_of[index]]
        folder, file = rel.split("/", 1)
        key = (int(_SEQUENCE_DIR.match(folder).group(1)), int(_FRAME_FILE.match(file).group(1)))
        return self._sample(self._read_frame(rel), rel, key, int(self._capture_of[index]), image_id=index)

    def _sample(self, doc: dict, rel: str, key: tuple[int, int], c: int, *, image_id: int) -> Sample:
        """Build the Sample of capture ``c`` of a parsed frame (no box/label validation here)."""
        where = _Where(self._base + rel, f"captures[{c}]")
        capture = where.get(doc, "captures", "captures")[c]
        folder = self._base + rel.split("/", 1)[0] + "/"
        filename = where.get(capture, "filename", "filename")
        if not isinstance(filename, str) or not filename:
            raise where.error(f"expected a file name, got {filename!r}", "filename", "wrong_type")
        width, height = where.numbers(where.get(capture, "dimension", "dimension"), 2, "dimension")
        if not (width.is_integer() and height.is_integer()):
            raise where.error(f"image size {width}x{height} is not whole pixels", "dimension", "bad_image_size")
        boxes: list = []
        labels: list = []
        instance_ids: list = []
        segmentation: dict[str, str] = {}
        annotations = where.array(capture.get("annotations", []), "annotations")
        box_annotation = None
        for a, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                raise where.error("an annotation must be a JSON object", f"annotations[{a}]", "wrong_type")
            kind = ann.get("@type")
            if kind == BBOX2D_TYPE or (kind is None and str(ann.get("id")) == self.box_definition_id):
                if box_annotation is None or str(ann.get("id")) == self.box_definition_id:
                    box_annotation = (a, ann)
            elif kind in (INSTANCE_TYPE, SEMANTIC_TYPE) and isinstance(ann.get("filename"), str):
                segmentation["instance" if kind == INSTANCE_TYPE else "semantic"] = folder + ann["filename"]
        if box_annotation is not None:
            a, ann = box_annotation
            parsed = _fast_box_values(ann.get("values", []))
            if parsed is None:  # something is off: the careful pass names the field
                parsed = _careful_box_values(ann.get("values", []), where, f"annotations[{a}].values")
            boxes, labels, instance_ids = parsed
        return Sample(
            image=folder + filename, width=int(width), height=int(height),
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels=np.asarray(labels, dtype=np.int64),
            image_id=image_id, instance_ids=tuple(instance_ids), segmentation=segmentation,
            metadata={"sequence": key[0], "step": key[1], "frame": doc.get("frame"),
                      "sensor_id": capture.get("id"), "capture": c, "file": rel},
        )


def _fast_box_values(values: Any) -> tuple[np.ndarray, np.ndarray, list] | None:
    """Boxes (N, 4) xywh, labels and instance ids of well-formed BoundingBox2D values, checked with
    numpy in bulk; None when anything is missing or of the wrong type (`_careful_box_values` says what)."""
    try:
        boxes = np.array([v["origin"] + v["dimension"] for v in values])
        labels = np.array([v["labelId"] for v in values])
        ids = [v["instanceId"] for v in values]
    except (KeyError, TypeError, ValueError):
        return None
    n = len(ids)
    if not (isinstance(values, list) and boxes.shape == (n, 4) and labels.shape == (n,)
            and (n == 0 or (boxes.dtype.kind in "fi" and labels.dtype.kind == "i"))
            and all(type(x) is int or type(x) is str for x in ids)):
        return None
    return boxes, labels, ids


def _careful_box_values(values: Any, where: _Where, path: str) -> tuple[list, list, list]:
    boxes: list[list[float]] = []
    labels: list[int] = []
    instance_ids: list[int | str] = []
    for v, value in enumerate(where.array(values, path)):
        p = f"{path}[{v}]"
        origin = where.numbers(where.get(value, "origin", f"{p}.origin"), 2, f"{p}.origin")
        size = where.numbers(where.get(value, "dimension", f"{p}.dimension"), 2, f"{p}.dimension")
        boxes.append(origin + size)
        labels.append(where.integer(where.get(value, "labelId", f"{p}.labelId"), f"{p}.labelId"))
        instance_ids.append(where.instance_id(where.get(value, "instanceId", f"{p}.instanceId"), f"{p}.instanceId"))
    return boxes, labels, instance_ids


# --------------------------------------------------------------------------------------------
# Instance maps <-> Perception-style RGBA instance segmentation PNGs
# --------------------------------------------------------------------------------------------

def instance_colors(ids: np.ndarray) -> np.ndarray:
    """RGBA colour (uint8) of each instance id: R, G, B = the id's bytes (little-endian), A = 255;
    id 0 (background) is transparent black. Ids must be < 2**24."""
    ids = np.asarray(ids, dtype=np.uint32)
    if ids.size and int(ids.max()) >= 1 << 24:
        raise ValueError(f"instance ids must be < 2**24 to fit an RGB colour, got {int(ids.max())}")
    packed = np.where(ids > 0, ids | np.uint32(0xFF000000), np.uint32(0)).astype("<u4", copy=False)
    return np.ascontiguousarray(packed).view(np.uint8).reshape(ids.shape + (4,))  # bytes R, G, B, A


def read_instance_map(uri: str) -> np.ndarray:
    """(H, W) uint32 instance ids of an instance segmentation PNG written by the writers here."""
    from PIL import Image

    with storage.open(uri, "rb") as f:
        rgba = np.asarray(Image.open(f).convert("RGBA"), dtype=np.uint32)
    ids = rgba[..., 0] | (rgba[..., 1] << 8) | (rgba[..., 2] << 16)
    return np.where(rgba[..., 3] > 0, ids, 0).astype(np.uint32)


def encode_image(image: Any, image_ext: str) -> bytes:
    """PNG/JPEG bytes of a PIL image (deterministic: no timestamps), or ``image`` itself if bytes."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    fmt = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}.get(image_ext.lower())
    if fmt is None:
        raise ValueError(f"cannot encode a PIL image as {image_ext!r}; pass encoded bytes instead")
    buf = io.BytesIO()
    img = image.convert("RGB") if fmt == "JPEG" and image.mode not in ("RGB", "L") else image
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def image_size_of(image: Any) -> tuple[int, int] | None:
    """(width, height) of a PIL image, None for encoded bytes (not decoded here)."""
    return None if isinstance(image, (bytes, bytearray, memoryview)) else tuple(image.size)


def dumps(obj: Any) -> str:
    """The writers' one JSON encoding: fixed key order as built, 2-space indent, trailing newline."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def check_writable(sample: Sample, image: Any, label_map: Mapping[int, str], file: str, record: str) -> None:
    """Refuse to write a frame that the readers would reject (bad boxes, labels or image size)."""
    validate_sample(sample, label_map, file=file, record=record)
    size = image_size_of(image)
    if size is not None and size != (sample.width, sample.height):
        raise ValueError(f"image is {size[0]}x{size[1]} but the sample says {sample.width}x{sample.height}")


def integer_instance_ids(sample: Sample) -> list[int]:
    """Per-box integer instance ids: the sample's own when set (must be ints), else 1..N."""
    if not sample.instance_ids:
        return list(range(1, len(sample) + 1))
    try:
        return [int(i) for i in sample.instance_ids]
    except (TypeError, ValueError):
        raise ValueError(f"instance ids must be integers to be written, got {sample.instance_ids!r}") from None


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------

class SoloWriter:
    """Write frames as a SOLO dataset (Perception 1.x schema, readable by pysolotools).

    Each `add` writes ``sequence.{index}/step0.frame_data.json``, the image
    ``step0.{sensor_id}.{ext}`` and, with an instance map, ``step0.{sensor_id}.instance segmentation.png``
    (RGBA, colour = instance id bytes, see `instance_colors`). `close` writes the definitions and
    ``metadata.json`` (totals). Output is byte-deterministic: fixed key order, no timestamps.
    All files go through `synthgap.storage` (atomic writes).
    """

    def __init__(self, root: str, label_map: Mapping[int, str], *, sensor_id: str = "camera",
                 write_metadata: bool = True):
        self.root = root
        self.label_map = {int(k): str(v) for k, v in label_map.items()}
        self.sensor_id = sensor_id
        self.write_metadata = write_metadata
        self._next = 0
        self._written: set[int] = set()
        self._with_instances = False
        self._closed = False

    def __enter__(self) -> "SoloWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def add(self, sample: Sample, image: Any, *, instance_map: np.ndarray | None = None,
            index: int | None = None, image_ext: str = "png") -> Sample:
        """Write one frame (``sequence.{index}/step0``) and return the Sample as it will be read back.

        ``image``: a PIL image (encoded here, PNG/JPEG by ``image_ext``) or encoded bytes (written as is).
        ``instance_map``: (H, W) integer instance ids, 0 = background. ``index`` defaults to the next one.
        """
        if self._closed:
            raise ValueError("SoloWriter is closed")
        index = self._next if index is None else int(index)
        if index < 0 or index in self._written:
            raise ValueError(f"frame index {index} is negative or already written")
        folder = f"sequence.{index}"
        frame_rel = f"{folder}/step0.frame_data.json"
        check_writable(sample, image, self.label_map, file=storage.join(self.root, frame_rel), record="captures[0]")
        ids = integer_instance_ids(sample)
        width, height = sample.width, sample.height
        image_name = f"step0.{self.sensor_id}.{image_ext}"
        annotations: list[dict] = [{
            "@type": BBOX2D_TYPE,
            "id": "bounding box",
            "sensorId": self.sensor_id,
            "description": "2D bounding boxes (xywh pixels) of the labeled objects",
            "values": [{"instanceId": iid, "labelId": int(label), "labelName": self.label_map[int(label)],
                        "origin": [float(box[0]), float(box[1])], "dimension": [float(box[2]), float(box[3])]}
                       for iid, label, box in zip(ids, sample.labels, sample.boxes)],
        }]
        segmentation: dict[str, str] = {}
        if instance_map is not None:
            instance_map = np.asarray(instance_map)
            if instance_map.shape != (height, width):
                raise ValueError(f"instance_map is {instance_map.shape}, expected (height, width) = {(height, width)}")
            seg_name = f"step0.{self.sensor_id}.instance segmentation.png"
            storage.write_bytes(storage.join(self.root, folder, seg_name),
                                _png_bytes(instance_colors(instance_map)))
            annotations.append({
                "@type": INSTANCE_TYPE,
                "id": "instance segmentation",
                "sensorId": self.sensor_id,
                "description": "instance ids encoded as RGBA colours (R + 256 G + 65536 B; alpha 0 = background)",
                "imageFormat": "Png",
                "dimension": [float(width), float(height)],
                "filename": seg_name,
                "instances": [{"instanceId": iid, "labelId": int(label), "labelName": self.label_map[int(label)],
                               "color": [int(c) for c in instance_colors(np.asarray([iid]))[0]]}
                              for iid, label in zip(ids, sample.labels)],
            })
            segmentation["instance"] = storage.join(self.root, folder, seg_name)
            self._with_instances = True
        capture = {
            "@type": RGB_CAMERA_TYPE,
            "id": self.sensor_id,
            "description": "synthgap camera",
            "position": [0.0, 0.0, 0.0],
            "rotation": [0.0, 0.0, 0.0, 1.0],
            "velocity": [0.0, 0.0, 0.0],
            "acceleration": [0.0, 0.0, 0.0],
            "filename": image_name,
            "imageFormat": "Jpg" if image_ext.lower() in ("jpg", "jpeg") else image_ext.capitalize(),
            "dimension": [float(width), float(height)],
            "projection": "Perspective",
            "matrix": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "annotations": annotations,
        }
        frame = {"frame": index, "sequence": index, "step": 0, "timestamp": 0.0, "metrics": [], "captures": [capture]}
        storage.write_bytes(storage.join(self.root, folder, image_name), encode_image(image, image_ext))
        storage.write_text(storage.join(self.root, frame_rel), dumps(frame))
        self._written.add(index)
        self._next = max(self._next, index + 1)
        return Sample(
            image=storage.join(self.root, folder, image_name), width=width, height=height,
            boxes=sample.boxes.copy(), labels=sample.labels.copy(), image_id=index, instance_ids=tuple(ids),
            segmentation=segmentation,
            metadata={"sequence": index, "step": 0, "frame": index, "sensor_id": self.sensor_id, "capture": 0,
                      "file": frame_rel},
        )

    def close(self) -> None:
        """Write annotation/sensor/metric definitions and (unless disabled) metadata.json."""
        if self._closed:
            return
        spec = [{"label_id": k, "label_name": v} for k, v in sorted(self.label_map.items())]
        definitions = [{"@type": BBOX2D_TYPE, "id": "bounding box",
                        "description": "2D bounding boxes (xywh pixels) of the labeled objects", "spec": spec}]
        annotators = [{"name": "bounding box", "type": BBOX2D_TYPE}]
        if self._with_instances:
            definitions.append({"@type": INSTANCE_TYPE, "id": "instance segmentation",
                                "description": "instance ids encoded as RGBA colours", "spec": spec})
            annotators.append({"name": "instance segmentation", "type": INSTANCE_TYPE})
        storage.write_text(storage.join(self.root, "annotation_definitions.json"),
                           dumps({"annotationDefinitions": definitions}))
        storage.write_text(storage.join(self.root, "sensor_definitions.json"), dumps({"sensorDefinitions": [{
            "@type": RGB_CAMERA_TYPE, "id": self.sensor_id, "modality": "camera", "definition": "synthgap camera",
            "firstCaptureFrame": 0.0, "captureTriggerMode": "Scheduled", "simulationDeltaTime": 0.0,
            "framesBetweenCaptures": 0, "manualSensorsAffectTiming": False}]}))
        storage.write_text(storage.join(self.root, "metric_definitions.json"), dumps({"metricDefinitions": []}))
        if self.write_metadata:
            from synthgap import __version__

            # Count what is on disk, not what this writer wrote: shards writing disjoint frames into one
            # folder each close, and the last one to close leaves the right totals.
            frames = sum(1 for name in storage.listdir(self.root) if _SEQUENCE_DIR.match(name))

            storage.write_text(storage.join(self.root, "metadata.json"), dumps({
                "unityVersion": "none",
                "perceptionVersion": f"synthgap {__version__}",
                "renderPipeline": "none",
                "simulationStartTime": "",
                "scenarioRandomSeed": 0,
                "scenarioActiveRandomizers": [],
                "totalFrames": frames,
                "totalSequences": frames,
                "sensors": [self.sensor_id],
                "metricCollectors": [],
                "simulationEndTime": "",
                "annotators": annotators,
            }))
        self._closed = True


def _png_bytes(rgba: np.ndarray) -> bytes:
    """Lossless PNG of an (H, W, 4) uint8 label map (the generator's fast encoder: no filter, zlib
    level 1; several times faster than Pillow's default on instance maps, byte-deterministic)."""
    from synthgap.data.png import encode_png

    return encode_png(rgba, photo=False)
