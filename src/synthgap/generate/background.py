"""Backgrounds: SynthDet's dense clutter (synthetic style) and a shelf wall (target style).

SynthDet fills the space behind the products with many primitive shapes, each with a random
texture and a random hue offset. Drawing hundreds of shapes per frame is too slow for 25 frames/s,
so a small bank of large clutter canvases is drawn once per (seed, size); each frame takes a random
crop, flip and hue rotation of one of them, and occluders take small textured patches from it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

BANK_SIZE = 6
BANK_MARGIN = 1.3  # canvases are this much larger than the frame, so crops differ


def hue_matrix(degrees: float) -> np.ndarray:
    """3x3 matrix rotating hue by ``degrees`` around the grey axis (keeps luminance roughly)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    k = 1.0 / 3.0
    sq = math.sqrt(k)
    return np.array([
        [c + (1 - c) * k, k * (1 - c) - sq * s, k * (1 - c) + sq * s],
        [k * (1 - c) + sq * s, c + k * (1 - c), k * (1 - c) - sq * s],
        [k * (1 - c) - sq * s, k * (1 - c) + sq * s, c + k * (1 - c)],
    ], dtype=np.float32)


def _clutter_canvas(rng: np.random.Generator, width: int, height: int, density: float) -> np.ndarray:
    im = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(40, 200, 3)))
    draw = ImageDraw.Draw(im)
    n = int(density * 90 * (width * height) / (640 * 480))
    for _ in range(n):
        size = rng.uniform(0.03, 0.25) * min(width, height)
        ar = rng.uniform(0.3, 3.0)
        w, h = size * math.sqrt(ar), size / math.sqrt(ar)
        x, y = rng.uniform(-w / 2, width - w / 2), rng.uniform(-h / 2, height - h / 2)
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(5)
        if kind == 0:
            draw.ellipse([x, y, x + w, y + h], fill=col)
        elif kind == 1:
            pts = [(x + rng.uniform(0, w), y + rng.uniform(0, h)) for _ in range(int(rng.integers(3, 6)))]
            draw.polygon(pts, fill=col)
        elif kind == 2:  # striped block
            col2 = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.rectangle([x, y, x + w, y + h], fill=col)
            step = max(2.0, rng.uniform(0.08, 0.3) * h)
            yy = y
            while yy < y + h:
                draw.rectangle([x, yy, x + w, min(y + h, yy + step / 2)], fill=col2)
                yy += step
        elif kind == 3:  # ring
            draw.ellipse([x, y, x + w, y + w], outline=col, width=max(1, int(w / 8)))
        else:
            draw.rectangle([x, y, x + w, y + h], fill=col)
    return np.asarray(im).copy()


class ClutterBank:
    """Pre-drawn clutter canvases; ``frame(rng)`` and ``patch(rng, h, w)`` cut randomized pieces.

    Crops, flips and hue rotations are PIL operations (C loops): a full-frame hue rotation in
    numpy costs more than the rest of the background.
    """

    def __init__(self, width: int, height: int, seed: int, density: float = 3.0):
        self.width, self.height = width, height
        rng = np.random.default_rng([seed, 0xBA5E])
        cw, ch = int(width * BANK_MARGIN), int(height * BANK_MARGIN)
        self.canvases = [Image.fromarray(_clutter_canvas(rng, cw, ch, density)) for _ in range(BANK_SIZE)]

    def _piece(self, rng: np.random.Generator, h: int, w: int, max_hue: float) -> Image.Image:
        c = self.canvases[int(rng.integers(len(self.canvases)))]
        cw, ch = c.size
        y = int(rng.integers(max(1, ch - h + 1)))
        x = int(rng.integers(max(1, cw - w + 1)))
        flip_x, flip_y = rng.random() < 0.5, rng.random() < 0.5
        hue = float(rng.uniform(-max_hue, max_hue))
        piece = c.crop((x, y, x + w, y + h))  # PIL pads with black beyond the canvas
        if flip_x:
            piece = piece.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if flip_y:
            piece = piece.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        m = hue_matrix(hue)
        return piece.convert("RGB", tuple(float(v) for row in m for v in (*row, 0.0)))

    def frame(self, rng: np.random.Generator, max_hue: float = 180.0) -> np.ndarray:
        """A (height, width, 3) uint8 background (a writable copy)."""
        return np.array(self._piece(rng, self.height, self.width, max_hue))

    def patch(self, rng: np.random.Generator, h: int, w: int, max_hue: float = 180.0) -> np.ndarray:
        """A textured (h, w, 3) uint8 patch, e.g. an occluder's surface."""
        return np.asarray(self._piece(rng, h, w, max_hue))


def shelf_background(rng: np.random.Generator, width: int, height: int, shelf_tops: list[float],
                     board_height: float) -> np.ndarray:
    """A store shelf: a smooth back wall with low-frequency texture, boards at ``shelf_tops`` (pixels).

    Each board occupies rows [top, top + board_height) and has a lit front edge and price tags.
    """
    wall = rng.uniform(120, 225) * np.array([1.0, rng.uniform(0.9, 1.05), rng.uniform(0.8, 1.05)], np.float32)
    small = rng.normal(0, 1, (6, 8)).astype(np.float32)
    low = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))
    img = wall[None, None, :] * (1 + 0.06 * low[..., None])
    board_col = np.array(rng.choice([[150, 150, 150], [170, 130, 90], [230, 230, 225], [60, 60, 65]]), np.float32)
    bh = max(3, int(board_height))
    for top in shelf_tops:
        t = int(top)
        y0, y1 = max(0, t), min(height, t + bh)
        if y0 >= y1:
            continue
        grad = np.linspace(1.15, 0.75, y1 - y0, dtype=np.float32)[:, None, None]
        img[y0:y1] = board_col * grad
        sy0 = min(height, y1)
        sy1 = min(height, y1 + max(2, bh // 2))  # soft shadow under the board lip
        img[sy0:sy1] *= 0.7
        x = rng.uniform(0, width * 0.2)
        while x < width:  # price tags on the board's front edge
            tw = rng.uniform(0.04, 0.07) * width
            ty0, ty1 = y0 + bh // 4, min(y1, y0 + 3 * bh // 4 + 1)
            if ty1 > ty0:
                img[ty0:ty1, int(x):int(x + tw)] = (240, 240, 232)
                img[ty0 + (ty1 - ty0) // 3:ty0 + (ty1 - ty0) // 3 + 1, int(x + 2):int(x + tw * 0.7)] = (40, 40, 40)
            x += tw + rng.uniform(0.1, 0.3) * width
    return img.clip(0, 255).astype(np.uint8)
