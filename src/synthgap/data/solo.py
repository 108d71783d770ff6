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

import re
from array import array
from itertools import chain
from typing import Any, Mapping

import numpy as np

from synthgap.io import storage
from synthgap.data.dataset import DetectionDataset
from synthgap.data.errors import DatasetError
from synthgap.data.sample import Sample, id_array, validate_sample
from synthgap.data.unity import (
    Where, check_writable, dumps, encode_image, instance_colors, integer_instance_ids, is_box_definition_name,
    label_png, load_label_map, read_instance_map,
)

__all__ = ["SoloDataset", "SoloWriter", "instance_colors", "read_instance_map"]

BBOX2D_TYPE = "type.unity.com/unity.solo.BoundingBox2DAnnotation"
INSTANCE_TYPE = "type.unity.com/unity.solo.InstanceSegmentationAnnotation"
SEMANTIC_TYPE = "type.unity.com/unity.solo.SemanticSegmentationAnnotation"
RGB_CAMERA_TYPE = "type.unity.com/unity.solo.RGBCamera"

_SEQUENCE_DIR = re.compile(r"^sequence\.(\d+)$")
_FRAME_FILE = re.compile(r"^step(\d+)\.frame_data\.json$")


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
    Image and segmentation file names must stay inside the dataset folder. Captures of other sensors
    than RGB cameras (an ``@type`` other than ``...RGBCamera``) are left out and counted in
    ``skipped_sensors``.

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
        where = Where(path, "annotationDefinitions")
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
            except PermissionError as e:
                error = DatasetError(f"cannot list the folder ({e.strerror})", file=storage.join(self.root, name),
                                     kind="unreadable_file")
                if not self.skip_invalid:
                    raise error from None
                self.skipped.add(error)
                continue
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
            where = Where(file, "frame")
            n = len(where.array(where.get(doc, "captures", "captures"), "captures"))
        except DatasetError as e:
            if not self.skip_invalid:
                raise
            self.skipped.add(e)
            return 0
        frame_index = len(self._frames)
        kept = 0
        folder = self._base + rel.split("/", 1)[0] + "/"
        for c in range(n):
            try:
                sensor = _sensor_kind(doc["captures"][c])
                if sensor is not None:
                    self.skipped_sensors[sensor] = self.skipped_sensors.get(sensor, 0) + 1
                    continue
                sample = self._sample(doc, rel, key, c, image_id=len(frame_of))
                validate_sample(sample, self.label_map, file=file, record=f"captures[{c}]")
                local = sample.image[len(folder):] if sample.image.startswith(folder) else "/"
                if not (local in listing if "/" not in local else storage.exists(sample.image)):
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
        where = Where(self._base + rel, f"captures[{c}]")
        capture = where.get(doc, "captures", "captures")[c]
        folder = rel.split("/", 1)[0]
        image = where.inside(self._base, folder, where.get(capture, "filename", "filename"), "filename")
        width, height = where.image_size(where.get(capture, "dimension", "dimension"), "dimension")
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
                segmentation["instance" if kind == INSTANCE_TYPE else "semantic"] = \
                    where.inside(self._base, folder, ann["filename"], f"annotations[{a}].filename")
        if box_annotation is not None:
            a, ann = box_annotation
            parsed = _fast_box_values(ann.get("values", []))
            if parsed is None:  # something is off: the careful pass names the field
                parsed = _careful_box_values(ann.get("values", []), where, f"annotations[{a}].values")
            boxes, labels, instance_ids = parsed
        return Sample(
            image=image, width=width, height=height,
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels=id_array(labels),
            image_id=image_id, instance_ids=tuple(instance_ids), segmentation=segmentation,
            metadata={"sequence": key[0], "step": key[1], "frame": doc.get("frame"),
                      "sensor_id": capture.get("id"), "capture": c, "file": rel},
        )


def _sensor_kind(capture: Any) -> str | None:
    """None for an RGB camera capture (or one without ``@type``), else the sensor's kind (to count it)."""
    kind = capture.get("@type") if isinstance(capture, dict) else None
    if kind is None or (isinstance(kind, str) and kind.endswith("RGBCamera")):
        return None
    return str(kind).rsplit(".", 1)[-1]


_NUMBER_TYPES = frozenset((int, float))


def _fast_box_values(values: Any) -> tuple[np.ndarray, np.ndarray, list] | None:
    """Boxes (N, 4) xywh, labels and instance ids of well-formed BoundingBox2D values, checked in bulk;
    None when anything is missing or of the wrong type (`_careful_box_values` then says what). Exact
    types: numpy would silently read ``true`` as 1.0 and ``[x, y, z] + [w]`` as a box."""
    try:
        rows = [v["origin"] + v["dimension"] for v in values]
        label_list = [v["labelId"] for v in values]
        ids = [v["instanceId"] for v in values]
        boxes = np.array(rows, dtype=np.float64)
        labels = np.array(label_list, dtype=np.int64)
    except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: ids or numbers beyond 64 bits
        return None
    if not (isinstance(values, list) and boxes.shape == (len(ids), 4)
            and set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES and set(map(type, label_list)) <= {int}
            and set(map(type, ids)) <= {int, str} and all([len(v["origin"]) == 2 for v in values])):
        return None
    return boxes, labels, ids


def _careful_box_values(values: Any, where: Where, path: str) -> tuple[list, list, list]:
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
# Writer
# --------------------------------------------------------------------------------------------

class SoloWriter:
    """Write frames as a SOLO dataset (Perception 1.x schema, readable by pysolotools).

    Each `add` writes ``sequence.{index}/step0.frame_data.json``, the image
    ``step0.{sensor_id}.{ext}`` and, with an instance map, ``step0.{sensor_id}.instance segmentation.png``
    (RGBA, colour = instance id bytes, see `instance_colors`). `close` writes the definitions and
    ``metadata.json`` (totals). Output is byte-deterministic: fixed key order, no timestamps.
    All files go through `synthgap.io.storage` (atomic writes).
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
                                label_png(instance_colors(instance_map)))
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
