"""Per-object masks as the sources store them, decoded only when asked for.

Annotation formats store an object's pixels in three ways; each is one small type here with the same
method, ``to_array(width, height) -> bool (height, width)`` in the pixels of the image the object is
labelled in (the upright image: EXIF orientation applied, see `synthgap.data.images`):

- `PolygonMask`: one or more rings of (x, y) vertices in pixels (Supervisely ``polygon``, COCO polygon
  ``segmentation``, YOLO segmentation rows once de-normalised). Rasterised by Pillow's polygon fill, the
  same rule for every reader.
- `BitmapMask`: a bool bitmap placed at an (x, y) origin (Supervisely ``bitmap``: a zlib-compressed PNG
  in base64 at ``bitmap.origin``), kept encoded until decoded.
- `RLEMask`: COCO run-length encoding (uncompressed ``counts`` list, column-major, as COCO writes it for
  crowds), decoded with numpy.

A `Sample` carries them in ``masks``: one entry per box (``None`` where the object has no mask), so the
cut-and-paste generator and any consumer of instance shapes read one type whatever the source.
"""

from __future__ import annotations

import base64
import io
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw


@dataclass(frozen=True)
class PolygonMask:
    """Rings of (x, y) vertices in pixels (float); the object is the union of the filled rings minus the
    filled ``holes`` (Supervisely ``points.interior``; COCO and YOLO polygons have none)."""

    rings: tuple[tuple[tuple[float, float], ...], ...]
    holes: tuple[tuple[tuple[float, float], ...], ...] = ()

    def to_array(self, width: int, height: int) -> np.ndarray:
        canvas = Image.new("1", (int(width), int(height)), 0)
        draw = ImageDraw.Draw(canvas)
        for ring in self.rings:
            if len(ring) >= 3:
                draw.polygon([(float(x), float(y)) for x, y in ring], fill=1, outline=1)
        for ring in self.holes:
            if len(ring) >= 3:
                draw.polygon([(float(x), float(y)) for x, y in ring], fill=0, outline=0)
        return np.asarray(canvas, dtype=bool)

    def bbox(self) -> tuple[float, float, float, float]:
        """xywh pixels of the vertices' extent."""
        pts = np.array([p for ring in self.rings for p in ring], dtype=np.float64).reshape(-1, 2)
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


@dataclass(frozen=True)
class BitmapMask:
    """A bitmap (any PNG mode; nonzero = object) placed with its top-left pixel at ``origin`` (x, y).

    ``png`` holds the PNG bytes; `from_supervisely` takes Supervisely's ``bitmap.data`` (base64 of
    zlib-compressed PNG bytes)."""

    png: bytes
    origin: tuple[int, int]

    @classmethod
    def from_supervisely(cls, data: str, origin: tuple[int, int]) -> "BitmapMask":
        return cls(zlib.decompress(base64.b64decode(data)), (int(origin[0]), int(origin[1])))

    def local(self) -> np.ndarray:
        """The bitmap alone, bool (h, w), before placing it at ``origin``."""
        with Image.open(io.BytesIO(self.png)) as img:
            if img.mode in ("RGBA", "LA", "PA"):
                return np.asarray(img.getchannel("A")) > 0
            arr = np.asarray(img.convert("L") if img.mode not in ("1", "L", "I", "I;16") else img)
        return arr > 0

    def to_array(self, width: int, height: int) -> np.ndarray:
        out = np.zeros((int(height), int(width)), dtype=bool)
        bits = self.local()
        x0, y0 = self.origin
        h, w = bits.shape
        ys, xs = slice(max(y0, 0), min(y0 + h, height)), slice(max(x0, 0), min(x0 + w, width))
        if ys.start < ys.stop and xs.start < xs.stop:
            out[ys, xs] = bits[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        return out


@dataclass(frozen=True)
class RLEMask:
    """COCO uncompressed RLE: ``counts`` alternate background / object run lengths, column-major
    (Fortran order), starting with background, over an image of ``size = (height, width)``."""

    counts: tuple[int, ...]
    size: tuple[int, int]

    def to_array(self, width: int, height: int) -> np.ndarray:
        h, w = self.size
        values = np.zeros(len(self.counts), dtype=bool)
        values[1::2] = True
        flat = np.repeat(values, np.asarray(self.counts, dtype=np.int64))
        flat = np.pad(flat, (0, max(h * w - flat.size, 0)))[: h * w]
        arr = flat.reshape((w, h)).T
        if (h, w) != (int(height), int(width)):
            out = np.zeros((int(height), int(width)), dtype=bool)
            hh, ww = min(h, int(height)), min(w, int(width))
            out[:hh, :ww] = arr[:hh, :ww]
            return out
        return arr


Mask = PolygonMask | BitmapMask | RLEMask


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """xywh pixels of the set pixels' extent (a pixel is 1x1), or None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)
