"""What the two Unity Perception readers/writers share (SOLO, `synthgap.data.solo`, and the legacy
schema, `synthgap.data.perception`): field access that names file, record and field; the label map
of a box definition; image references kept inside the dataset; instance-id colours; the writers'
encodings and checks.
"""

from __future__ import annotations

import io
import json
import posixpath
from typing import Any, Mapping

import numpy as np

from synthgap.io import storage
from synthgap.data.errors import DatasetError
from synthgap.data.sample import Sample, validate_sample

# Names Unity (and hand-written configs) give the 2D box labeler, compared case-insensitively.
BOX_DEFINITION_NAMES = ("bounding box", "2d bounding box", "bounding box 2d", "boundingbox2d")
# Largest integer a JSON float holds exactly; float ids beyond it are not ids.
_EXACT_FLOAT_INT = 2 ** 53


class Where:
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
        """A JSON number as float64; booleans and integers beyond float64 (10**400) are errors."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"expected a number, got {type(value).__name__} {value!r}", path, "wrong_type")
        try:
            return float(value)
        except OverflowError:
            raise self.error(f"number {str(value)[:20]}... does not fit a float64", path, "number_too_large") from None

    def integer(self, value: Any, path: str) -> int:
        """An integer of any size (ids); a float is accepted only when it is an exact whole number."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or (isinstance(value, float) and not (value.is_integer() and abs(value) < _EXACT_FLOAT_INT)):
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

    def image_size(self, value: Any, path: str) -> tuple[int, int]:
        """[width, height] in whole pixels (the size limit is `validate_sample`'s)."""
        width, height = self.numbers(value, 2, path)
        if not (width.is_integer() and height.is_integer()):
            raise self.error(f"image size {width}x{height} is not whole pixels", path, "bad_image_size")
        return int(width), int(height)

    def inside(self, base: str, folder: str, name: Any, path: str) -> str:
        """URI of the file ``name`` (relative to ``folder``, itself relative to the dataset root ``base``,
        which ends with a separator), checked to stay inside the dataset: absolute names and names whose
        ``..`` leave the root are errors (a frame naming ``../../../../etc/passwd`` must not make
        ``convert --copy-images`` copy that file)."""
        if not isinstance(name, str) or not name:
            raise self.error(f"expected a file name, got {name!r}", path, "wrong_type")
        rel = name.replace("\\", "/")
        joined = posixpath.normpath(posixpath.join(folder, rel)) if not rel.startswith("/") else rel
        if rel.startswith("/") or "://" in rel or (len(rel) > 1 and rel[1] == ":") \
                or joined == ".." or joined.startswith("../"):
            raise self.error(f"file name {name!r} points outside the dataset folder", path, "path_outside_dataset")
        return base + joined


def load_label_map(spec: Any, where: Where, path: str) -> dict[int, str]:
    """``[{"label_id": 1, "label_name": "Crate"}, ...]`` -> {1: "Crate"} (both Unity schemas; ids of any size)."""
    label_map: dict[int, str] = {}
    for i, entry in enumerate(where.array(spec, path)):
        label_id = where.integer(where.get(entry, "label_id", f"{path}[{i}].label_id"), f"{path}[{i}].label_id")
        label_map[label_id] = str(where.get(entry, "label_name", f"{path}[{i}].label_name"))
    return label_map


def is_box_definition_name(name: Any) -> bool:
    return isinstance(name, str) and name.strip().lower() in BOX_DEFINITION_NAMES


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


def label_png(rgba: np.ndarray) -> bytes:
    """Lossless PNG of an (H, W, 4) uint8 label map (the generator's fast encoder: no filter, zlib
    level 1; several times faster than Pillow's default on instance maps, byte-deterministic)."""
    from synthgap.data.png import encode_png

    return encode_png(rgba, photo=False)


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------

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
