"""Unity Perception legacy datasets (pre-1.0 schema): a streaming reader and a writer.

Layout (the JSON files sit in the root or in a ``Dataset*`` subfolder; image paths are relative
to the root)::

    annotation_definitions.json  {"annotation_definitions": [{"id": GUID or int, "name": "bounding box",
                                                              "format": "JSON", "spec": [...]}]}
    captures_000.json ...        {"captures": [{"id", "sequence_id", "step", "sensor": {...},
                                                "filename", "annotations": [...]}]}
    metrics_000.json, metric_definitions.json, sensors.json, egos.json
    RGB<guid>/rgb_2.png ...

A 2D box value is ``x, y, width, height`` in pixels (xywh). One capture = one `Sample`.
"""

from __future__ import annotations

import json
import posixpath
import re
import uuid
from array import array
from bisect import bisect_right
from typing import Any, Mapping

import numpy as np

from synthgap.io import storage
from synthgap.data.dataset import DetectionDataset
from synthgap.data.errors import DatasetError
from synthgap.data.sample import Sample, id_array, validate_sample
from synthgap.data.unity import (
    Where, check_writable, dumps, encode_image, instance_colors, integer_instance_ids, is_box_definition_name,
    label_png, load_label_map,
)

_CAPTURES_FILE = re.compile(r"^captures_(\d+)\.json$")
# Perception's default labeler GUIDs (what a Unity project writes unless reconfigured).
BOX_DEFINITION_ID = "f9f22e05-443f-4602-a422-ebe4ea9b55cb"
INSTANCE_DEFINITION_ID = "1ccebeb4-5886-41ff-8fe0-f911fa8cbcdf"
CAPTURES_PER_FILE = 150  # what Perception writes per captures_NNN.json chunk

_SEGMENTATION_NAMES = {"instance segmentation": "instance", "semantic segmentation": "semantic"}


def find_json_folder(root: str) -> str | None:
    """The folder holding ``annotation_definitions.json`` / ``captures_*.json``: root or one ``Dataset*``."""
    if _has_dataset_files(root):
        return root
    candidates = [storage.join(root, name) for name in storage.listdir(root)
                  if name.startswith("Dataset") and storage.isdir(storage.join(root, name))]
    candidates = [c for c in candidates if _has_dataset_files(c)]
    if len(candidates) > 1:
        raise DatasetError(f"several Dataset* folders hold Perception files ({', '.join(candidates)}); "
                           "open one of them", file=root, kind="ambiguous_dataset")
    return candidates[0] if candidates else None


def _has_dataset_files(folder: str) -> bool:
    return storage.exists(storage.join(folder, "annotation_definitions.json")) or \
        bool(storage.glob(storage.join(folder, "captures_*.json")))


def read_image_size(uri: str, where: Where) -> tuple[int, int]:
    """(width, height) from the image header only (pixels are not decoded); errors name the capture."""
    from synthgap.data.images import image_size

    try:
        return image_size(uri)
    except DatasetError as e:
        if e.kind == "missing_image":
            raise where.error(f"the referenced image {uri} does not exist", "filename", e.kind) from None
        raise where.error(f"the image header of {uri} cannot be read: {e.message}", "filename", e.kind) from None


_WS = re.compile(r"[ \t\n\r]*")


def scan_captures(data: bytes, file: str) -> list[tuple[int, int, Any]]:
    """(start, end, capture) of each element of the top-level ``captures`` array of a captures file.

    ``start``/``end`` are byte offsets, so one capture can later be re-read alone (a seek and a short
    read) instead of re-parsing the whole chunk: random access stays cheap under a shuffling loader.
    The bytes are scanned as latin-1 (one char per byte); a capture holding non-ASCII text is decoded
    again from its UTF-8 bytes.
    """
    text = data.decode("latin-1")
    decoder = json.JSONDecoder()

    def skip(i: int, chars: str) -> int:
        """Index just past the next non-blank character, which must be one of ``chars``."""
        i = _WS.match(text, i).end()
        if i >= len(text) or text[i] not in chars:
            raise json.JSONDecodeError(f"expected one of {chars!r}", text, i)
        return i + 1

    spans: list[tuple[int, int, Any]] = []
    found = False
    try:
        i = skip(0, "{")
        j = _WS.match(text, i).end()
        closed = text[j:j + 1] == "}"
        i = j + 1 if closed else i
        while not closed:
            key, i = decoder.raw_decode(text, skip(i, '"') - 1)
            i = _WS.match(text, skip(i, ":")).end()
            if key == "captures":
                if text[i:i + 1] != "[":
                    value, _ = decoder.raw_decode(text, i)
                    raise DatasetError(f"expected a JSON list, got {type(value).__name__}", file=file,
                                       record="captures", field="captures", kind="wrong_type")
                found = True
                i += 1
                j = _WS.match(text, i).end()
                ended = text[j:j + 1] == "]"
                i = j + 1 if ended else i
                while not ended:
                    start = _WS.match(text, i).end()
                    value, i = decoder.raw_decode(text, start)
                    if not data[start:i].isascii():
                        try:
                            value = json.loads(data[start:i].decode("utf-8"))
                        except UnicodeDecodeError as e:
                            raise DatasetError(f"not UTF-8 text: byte 0x{data[start + e.start]:02x} at offset "
                                               f"{start + e.start}", file=file, record=f"captures[{len(spans)}]",
                                               kind="malformed_json") from None
                    spans.append((start, i, value))
                    i = skip(i, ",]")
                    ended = text[i - 1] == "]"
            else:
                _, i = decoder.raw_decode(text, i)
            i = skip(i, ",}")
            closed = text[i - 1] == "}"
        if _WS.match(text, i).end() != len(text):
            raise json.JSONDecodeError("Extra data", text, i)
    except json.JSONDecodeError as e:
        raise DatasetError(f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})", file=file,
                           kind="malformed_json") from None
    except RecursionError:
        raise DatasetError("JSON nested too deeply to parse", file=file, record=f"captures[{len(spans)}]",
                           kind="malformed_json") from None
    if not found:
        raise DatasetError("required field 'captures' is missing", file=file, record="captures",
                           field="captures", kind="missing_field")
    return spans


class PerceptionDataset(DetectionDataset):
    """A legacy Perception dataset as a random-access sequence of `Sample`s (one per capture).

    Opening parses each ``captures_*.json`` chunk once (sorted by its number) to validate its
    captures, then keeps only per-capture (index in chunk, byte span, width, height): 28 bytes per
    capture. ``ds[i]`` reads and parses capture ``i``'s bytes alone (see `scan_captures`).

    Image size: the capture's ``sensor.dimension`` [width, height] when present (not written by
    Unity), else the image file header, read once at opening (PIL reads the header only).
    Image paths must stay inside the image root. Only camera captures (``sensor.modality`` "camera" or
    absent) are read: others (depth, lidar, ...) are left out and counted in ``skipped_sensors``.

    The 2D box definition is found by name ("bounding box" / "2d bounding box", any case) with
    format JSON, never by GUID; definition ids may be GUID strings or integers.
    ``metadata``: ``sequence_id``, ``step``, ``sensor_id``, ``capture_id``, ``file`` (chunk relative
    to the JSON folder) and ``record`` (``captures[i]``).
    """

    format = "perception"

    def __init__(self, root: str, *, skip_invalid: bool = False):
        super().__init__(root, skip_invalid=skip_invalid)
        folder = find_json_folder(root) if storage.isdir(root) else None
        if folder is None:
            raise DatasetError("annotation_definitions.json is missing (looked in the root and Dataset* folders)",
                               file=storage.join(root, "annotation_definitions.json"), kind="missing_file")
        self.json_folder = folder
        self.box_definition_id, self._segmentation_ids = self._read_definitions()
        self.image_root = self._find_image_root()
        self._chunks: list[str] = []                                  # chunk file names
        self._starts = np.zeros(1, dtype=np.int64)                     # first sample of each chunk
        self._capture_index = np.zeros(0, dtype=np.int32)              # sample -> index in its chunk
        self._spans = np.zeros((0, 2), dtype=np.int64)                 # sample -> byte span in its chunk
        self._sizes = np.zeros((0, 2), dtype=np.int32)                 # sample -> (width, height)
        self._build_index()

    @classmethod
    def detect(cls, root: str) -> bool:
        if not storage.isdir(root):
            return False
        try:
            folder = find_json_folder(root)
        except DatasetError:
            return True  # ambiguous: opening will say why
        return folder is not None and bool(storage.glob(storage.join(folder, "captures_*.json")))

    def _read_definitions(self) -> tuple[str, dict[str, str]]:
        """Fill ``label_map``; return the 2D box definition id and {segmentation def id: kind}."""
        path = storage.join(self.json_folder, "annotation_definitions.json")
        if not storage.exists(path):
            raise DatasetError("annotation_definitions.json is missing: the label map cannot be read",
                               file=path, field="annotation_definitions", kind="missing_file")
        where = Where(path, "annotation_definitions")
        doc = storage.read_json(path)
        definitions = where.array(where.get(doc, "annotation_definitions", "annotation_definitions"),
                                  "annotation_definitions")
        box_id = None
        segmentation: dict[str, str] = {}
        for i, d in enumerate(definitions):
            if not isinstance(d, dict):
                continue
            name = d.get("name")
            if box_id is None and is_box_definition_name(name) and str(d.get("format", "json")).lower() == "json":
                where.record = f"annotation_definitions[{i}]"
                self.label_map = load_label_map(where.get(d, "spec", "spec"), where, "spec")
                box_id = str(where.get(d, "id", "id"))
            elif isinstance(name, str) and name.strip().lower() in _SEGMENTATION_NAMES and "id" in d:
                segmentation[str(d["id"])] = _SEGMENTATION_NAMES[name.strip().lower()]
        if box_id is None:
            raise DatasetError("no 2D bounding box definition (name 'bounding box' or '2d bounding box', format JSON)",
                               file=path, record="annotation_definitions", field="name", kind="no_box_definition")
        return box_id, segmentation

    def _find_image_root(self) -> str:
        """Image paths are relative to the folder above ``Dataset*``: the root, unless the user opened
        the ``Dataset<guid>`` folder itself (then its parent, if the first image is found there)."""
        parent, name = posixpath.split(self.root.rstrip("/"))
        if self.json_folder != self.root or not name.startswith("Dataset"):
            return self.root
        parent = parent or "."
        for chunk in self._chunk_files()[:1]:
            try:
                first = self._load_chunk(chunk)[0][2]["filename"]
            except (DatasetError, IndexError, KeyError, TypeError):
                return self.root
            if not storage.exists(storage.join(self.root, first)) and storage.exists(storage.join(parent, first)):
                return parent
        return self.root

    # -- index ----------------------------------------------------------------------------------

    def _chunk_files(self) -> list[str]:
        names = [(int(m.group(1)), name) for name in storage.listdir(self.json_folder)
                 if (m := _CAPTURES_FILE.match(name))]
        return [name for _, name in sorted(names)]

    def _load_chunk(self, name: str) -> list[tuple[int, int, Any]]:
        path = storage.join(self.json_folder, name)
        try:
            data = storage.read_bytes(path)
        except (PermissionError, IsADirectoryError) as e:
            raise DatasetError(f"cannot read the file ({e.strerror or type(e).__name__})", file=path,
                               kind="unreadable_file") from None
        return scan_captures(data, path)

    def _build_index(self) -> None:
        starts = [0]
        capture_index = array("i")
        spans = array("q")
        sizes = array("i")
        seen = 0
        for name in self._chunk_files():
            try:
                captures = self._load_chunk(name)
            except DatasetError as e:
                if not self.skip_invalid:
                    raise
                self.skipped.add(e)
                continue
            seen += len(captures)
            kept = 0
            for c, (start, end, capture) in enumerate(captures):
                modality = _modality(capture)
                if modality != "camera":
                    self.skipped_sensors[modality] = self.skipped_sensors.get(modality, 0) + 1
                    continue
                try:
                    sample = self._sample(capture, name, c, image_id=len(capture_index), size=None)
                    validate_sample(sample, self.label_map, file=storage.join(self.json_folder, name),
                                    record=f"captures[{c}]")
                except DatasetError as e:
                    if not self.skip_invalid:
                        raise
                    self.skipped.add(e)
                    continue
                capture_index.append(c)
                spans.extend((start, end))
                sizes.extend((sample.width, sample.height))
                kept += 1
            if kept:
                self._chunks.append(name)
                starts.append(starts[-1] + kept)
        if not seen and self.skipped:  # every captures file failed: say why, not "empty"
            raise self.skipped.errors[0]
        if not seen:
            raise DatasetError("no captures: the dataset is empty (no captures_*.json or all of them empty)",
                               file=self.json_folder, kind="empty")
        self._starts = np.asarray(starts, dtype=np.int64)
        self._capture_index = np.frombuffer(capture_index, dtype=np.int32).copy()
        self._spans = np.frombuffer(spans, dtype=np.int64).reshape(-1, 2).copy()
        self._sizes = np.frombuffer(sizes, dtype=np.int32).reshape(-1, 2).copy()

    # -- samples --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._capture_index)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        index %= len(self)
        chunk = self._chunks[bisect_right(self._starts, index) - 1]
        start, end = (int(v) for v in self._spans[index])
        with storage.open(storage.join(self.json_folder, chunk), "rb") as f:
            f.seek(start)
            capture = json.loads(f.read(end - start))
        w, h = self._sizes[index]
        return self._sample(capture, chunk, int(self._capture_index[index]), image_id=index, size=(int(w), int(h)))

    def _sample(self, capture: Any, chunk: str, c: int, *, image_id: int, size: tuple[int, int] | None) -> Sample:
        """Build the Sample of ``captures[c]`` (no box/label validation here). ``size`` skips the header read."""
        where = Where(storage.join(self.json_folder, chunk), f"captures[{c}]")
        base = storage.join(self.image_root, "x")[:-1]  # the image root + separator
        image = where.inside(base, "", where.get(capture, "filename", "filename"), "filename")
        sensor = capture.get("sensor") if isinstance(capture.get("sensor"), dict) else {}
        if size is None:
            if "dimension" in sensor:
                size = where.image_size(sensor["dimension"], "sensor.dimension")
            else:
                size = read_image_size(image, where)
        boxes: list[list[float]] = []
        labels: list[int] = []
        instance_ids: list[int | str] = []
        segmentation: dict[str, str] = {}
        for a, ann in enumerate(where.array(capture.get("annotations", []), "annotations")):
            definition = str(where.get(ann, "annotation_definition", f"annotations[{a}].annotation_definition"))
            if definition in self._segmentation_ids and isinstance(ann.get("filename"), str):
                segmentation[self._segmentation_ids[definition]] = \
                    where.inside(base, "", ann["filename"], f"annotations[{a}].filename")
            if definition != self.box_definition_id:
                continue
            for v, value in enumerate(where.array(ann.get("values") or [], f"annotations[{a}].values")):
                path = f"annotations[{a}].values[{v}]"
                boxes.append([where.number(where.get(value, k, f"{path}.{k}"), f"{path}.{k}")
                              for k in ("x", "y", "width", "height")])
                labels.append(where.integer(where.get(value, "label_id", f"{path}.label_id"), f"{path}.label_id"))
                instance_ids.append(where.instance_id(where.get(value, "instance_id", f"{path}.instance_id"),
                                                      f"{path}.instance_id"))
        return Sample(
            image=image, width=int(size[0]), height=int(size[1]),
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels=id_array(labels),
            image_id=image_id, instance_ids=tuple(instance_ids), segmentation=segmentation,
            metadata={"sequence_id": capture.get("sequence_id"), "step": capture.get("step"),
                      "sensor_id": sensor.get("sensor_id"), "capture_id": capture.get("id"),
                      "file": chunk, "record": f"captures[{c}]"},
        )


_METRICS_FILE = re.compile(r"^metrics_(\d+)\.json$")
RENDERED_OBJECT_INFO = "rendered object info"  # Perception's metric of visible pixels per labeled instance


def read_visible_pixels(json_folder: str) -> dict[str, dict[str, float]]:
    """Visible pixels of each instance in each capture, from the ``metrics_*.json`` files of a legacy
    dataset: capture id -> {str(instance_id): visible_pixels}. Rows of the "rendered object info" metric
    (found by name in ``metric_definitions.json``; without that file, any row whose values carry
    ``visible_pixels``). Empty when the dataset has no such metric. Malformed files raise DatasetError."""
    definitions = storage.join(json_folder, "metric_definitions.json")
    wanted: set[str] | None = None
    if storage.exists(definitions):
        doc = storage.read_json(definitions)
        rows = doc.get("metric_definitions") if isinstance(doc, dict) else None
        wanted = {str(d.get("id")) for d in rows or [] if isinstance(d, dict)
                  and str(d.get("name", "")).strip().lower() == RENDERED_OBJECT_INFO}
        if not wanted:
            return {}
    out: dict[str, dict[str, float]] = {}
    names = sorted((int(m.group(1)), n) for n in storage.listdir(json_folder) if (m := _METRICS_FILE.match(n)))
    for _, name in names:
        path = storage.join(json_folder, name)
        doc = storage.read_json(path)
        where = Where(path, "metrics")
        for k, row in enumerate(where.array(where.get(doc, "metrics", "metrics"), "metrics")):
            if not isinstance(row, dict) or (wanted is not None and str(row.get("metric_definition")) not in wanted):
                continue
            values = row.get("values")
            if not isinstance(values, list) or row.get("capture_id") is None:
                continue
            where.record = f"metrics[{k}]"
            pixels = out.setdefault(str(row["capture_id"]), {})
            for v, value in enumerate(values):
                if isinstance(value, dict) and "visible_pixels" in value and "instance_id" in value:
                    pixels[str(value["instance_id"])] = where.number(value["visible_pixels"],
                                                                     f"values[{v}].visible_pixels")
    return out


def _modality(capture: Any) -> str:
    """``sensor.modality`` of a capture, lower case; "camera" when the capture does not say."""
    sensor = capture.get("sensor") if isinstance(capture, dict) else None
    modality = sensor.get("modality") if isinstance(sensor, dict) else None
    return modality.strip().lower() if isinstance(modality, str) and modality.strip() else "camera"


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------

def _uuid(*parts: object) -> str:
    """A deterministic GUID (so output is byte-identical run to run)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "synthgap/" + "/".join(str(p) for p in parts)))


class PerceptionWriter:
    """Write frames as a legacy Perception dataset (JSON files in ``root``, images under ``RGB<guid>/``).

    Captures are buffered (small dicts) and flushed every 150 captures, as Unity does, to
    ``captures_NNN.json`` where NNN is the index of the chunk's first frame: several writers (shards
    writing disjoint frame indices into one folder) never collide. Captures read back in chunk order,
    then in add order. `close` flushes the rest and writes the definitions, sensors, egos and metrics.
    Each frame is one sequence of one step. Output is byte-deterministic (GUIDs derived from the
    sensor id and frame index, no timestamps). ``write_metadata`` exists for parity with `SoloWriter`
    (the legacy schema has no metadata.json).
    """

    def __init__(self, root: str, label_map: Mapping[int, str], *, sensor_id: str = "camera",
                 write_metadata: bool = True):
        self.root = root
        self.label_map = {int(k): str(v) for k, v in label_map.items()}
        self.sensor_id = sensor_id
        self.sensor_guid = _uuid("sensor", sensor_id)
        self.ego_guid = _uuid("ego", sensor_id)
        self.write_metadata = write_metadata
        self._buffer: list[dict] = []
        self._chunk_name = ""
        self._count = 0
        self._next = 0
        self._written: set[int] = set()
        self._with_instances = False
        self._closed = False

    def __enter__(self) -> "PerceptionWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def add(self, sample: Sample, image: Any, *, instance_map: np.ndarray | None = None,
            index: int | None = None, image_ext: str = "png") -> Sample:
        """Write one frame's image (and instance PNG); buffer its capture. Returns the Sample as read back.

        ``image``: a PIL image (encoded here) or encoded bytes (written as is, extension ``image_ext``).
        ``instance_map``: (H, W) integer instance ids, 0 = background. ``index`` names the files
        (``rgb_{index}``); captures are read back in the order they were added.
        """
        if self._closed:
            raise ValueError("PerceptionWriter is closed")
        index = self._next if index is None else int(index)
        if index < 0 or index in self._written:
            raise ValueError(f"frame index {index} is negative or already written")
        if not self._buffer:
            self._chunk_name = f"captures_{index:03d}.json"
        record = f"captures[{len(self._buffer)}]"
        check_writable(sample, image, self.label_map, file=storage.join(self.root, self._chunk_name), record=record)
        ids = integer_instance_ids(sample)
        image_rel = f"RGB{self.sensor_guid}/rgb_{index}.{image_ext}"
        annotations = [{
            "id": _uuid("annotation", "box", self.sensor_id, index),
            "annotation_definition": BOX_DEFINITION_ID,
            "values": [{"label_id": int(label), "label_name": self.label_map[int(label)], "instance_id": iid,
                        "x": float(box[0]), "y": float(box[1]), "width": float(box[2]), "height": float(box[3])}
                       for iid, label, box in zip(ids, sample.labels, sample.boxes)],
        }]
        segmentation: dict[str, str] = {}
        if instance_map is not None:
            instance_map = np.asarray(instance_map)
            if instance_map.shape != (sample.height, sample.width):
                raise ValueError(f"instance_map is {instance_map.shape}, expected {(sample.height, sample.width)}")
            seg_rel = f"InstanceSegmentation{self.sensor_guid}/Instance_{index}.png"
            storage.write_bytes(storage.join(self.root, seg_rel), label_png(instance_colors(instance_map)))
            annotations.append({
                "id": _uuid("annotation", "instance", self.sensor_id, index),
                "annotation_definition": INSTANCE_DEFINITION_ID,
                "filename": seg_rel,
                "values": [{"instance_id": iid, "color": dict(zip("rgba", (int(v) for v in
                                                                          instance_colors(np.asarray([iid]))[0])))}
                           for iid in ids],
            })
            segmentation["instance"] = storage.join(self.root, seg_rel)
            self._with_instances = True
        storage.write_bytes(storage.join(self.root, image_rel), encode_image(image, image_ext))
        capture_id = _uuid("capture", self.sensor_id, index)
        sequence_id = _uuid("sequence", index)
        self._buffer.append({
            "id": capture_id,
            "sequence_id": sequence_id,
            "step": 0,
            "timestamp": 0.0,
            "sensor": {"sensor_id": self.sensor_guid, "ego_id": self.ego_guid, "modality": "camera",
                       "translation": [0.0, 0.0, 0.0], "rotation": [0.0, 0.0, 0.0, 1.0],
                       "camera_intrinsic": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]},
            "ego": {"ego_id": self.ego_guid, "translation": [0.0, 0.0, 0.0], "rotation": [0.0, 0.0, 0.0, 1.0],
                    "velocity": None, "acceleration": None},
            "filename": image_rel,
            "format": "JPG" if image_ext.lower() in ("jpg", "jpeg") else image_ext.upper(),
            "annotations": annotations,
        })
        out = Sample(
            image=storage.join(self.root, image_rel), width=sample.width, height=sample.height,
            boxes=sample.boxes.copy(), labels=sample.labels.copy(), image_id=self._count, instance_ids=tuple(ids),
            segmentation=segmentation,
            metadata={"sequence_id": sequence_id, "step": 0, "sensor_id": self.sensor_guid, "capture_id": capture_id,
                      "file": self._chunk_name, "record": record},
        )
        self._count += 1
        self._written.add(index)
        self._next = max(self._next, index + 1)
        if len(self._buffer) == CAPTURES_PER_FILE:
            self._flush()
        return out

    def _flush(self) -> None:
        if not self._buffer:
            return
        storage.write_text(storage.join(self.root, self._chunk_name),
                           dumps({"version": "0.0.1", "captures": self._buffer}))
        self._buffer = []

    def close(self) -> None:
        """Flush buffered captures; write annotation/metric definitions, sensors, egos and metrics."""
        if self._closed:
            return
        self._flush()
        spec = [{"label_id": k, "label_name": v} for k, v in sorted(self.label_map.items())]
        definitions = [{"id": BOX_DEFINITION_ID, "name": "bounding box",
                        "description": "Bounding box for each labeled object visible to the sensor",
                        "format": "JSON", "spec": spec}]
        if self._with_instances:
            definitions.append({"id": INSTANCE_DEFINITION_ID, "name": "instance segmentation",
                                "description": "instance ids encoded as RGBA colours (R + 256 G + 65536 B)",
                                "format": "PNG", "spec": spec})
        storage.write_text(storage.join(self.root, "annotation_definitions.json"),
                           dumps({"version": "0.0.1", "annotation_definitions": definitions}))
        storage.write_text(storage.join(self.root, "sensors.json"), dumps({"version": "0.0.1", "sensors": [
            {"id": self.sensor_guid, "ego_id": self.ego_guid, "modality": "camera", "description": self.sensor_id}]}))
        storage.write_text(storage.join(self.root, "egos.json"), dumps({"version": "0.0.1", "egos": [
            {"id": self.ego_guid, "description": ""}]}))
        storage.write_text(storage.join(self.root, "metric_definitions.json"),
                           dumps({"version": "0.0.1", "metric_definitions": []}))
        storage.write_text(storage.join(self.root, "metrics_000.json"), dumps({"version": "0.0.1", "metrics": []}))
        self._closed = True
