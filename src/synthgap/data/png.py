"""A fast PNG encoder for uint8 images (the generator's and the writers' hot path).

PIL's PNG encoder spends ~25 ms per noisy 640x480 RGB frame outside zlib (its per-row filter
choice), more than rendering the frame. Here the whole image gets the PNG "Sub" filter in one
numpy operation and zlib runs Huffman-only (noise-heavy rendered images have few long matches,
so LZ77 search costs time for almost no size): about 4x faster than PIL at compress_level=1 and
~10 % smaller. The output is a standard, deterministic PNG (no timestamps or text chunks).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray, *, photo: bool = True) -> bytes:
    """PNG bytes of a uint8 (H, W), (H, W, 3) or (H, W, 4) array.

    ``photo=True``: Sub filter + Huffman-only (rendered RGB). ``photo=False``: no filter + fast LZ77
    (label images such as instance maps: long runs of equal bytes, ~20x smaller this way).
    """
    a = np.ascontiguousarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"encode_png takes uint8 images, got {a.dtype}")
    channels = 1 if a.ndim == 2 else a.shape[2]
    if a.ndim not in (2, 3) or channels not in _COLOR_TYPES:
        raise ValueError(f"encode_png takes (H, W), (H, W, 3) or (H, W, 4) arrays, got shape {a.shape}")
    h, w = a.shape[:2]
    flat = a.reshape(h, w * channels)
    rows = np.empty((h, w * channels + 1), np.uint8)
    if photo:
        rows[:, 0] = 1  # filter type 1 (Sub): byte minus the same channel of the pixel to its left
        rows[:, 1:channels + 1] = flat[:, :channels]
        np.subtract(flat[:, channels:], flat[:, :-channels], out=rows[:, channels + 1:])
    else:
        rows[:, 0] = 0
        rows[:, 1:] = flat
    comp = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_HUFFMAN_ONLY if photo else zlib.Z_DEFAULT_STRATEGY)
    idat = comp.compress(rows.data) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
