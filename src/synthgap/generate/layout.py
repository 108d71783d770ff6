"""Where the cut-and-paste generator puts its cut-outs: ``shelf``, ``table`` or ``free`` (geometry only).

- ``shelf``: rows of products standing side by side on shelf boards, touching like a store shelf;
  each product overlaps its neighbour by up to ``max_overlap`` of its width; a row paints left to
  right or right to left, so the later product hides its neighbour's edge. Rows run past the image
  edges (products there are cut by the frame, as in a photo of a shelf).
- ``table``: clutter standing on a table: bottoms in the lower two thirds of the image, painted
  back to front (higher bottoms first), pairwise overlap of rotated boxes at most ``max_overlap``.
- ``free``: SynthDet's foreground layer: anywhere, in placement order, same overlap rule.

Lengths are pixels; angles degrees, counter-clockwise (PIL's ``rotate``). Every draw of a randomizer
comes from that randomizer's own stream (`Streams`), so switching one off (a zero range) leaves the
draws of the others as they were: the ablation changes one factor at a time. Geometry is coupled on
purpose where it must be: object sizes set how many products fit on a shelf row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synthgap.generate.scene import rotated_extent

LAYOUTS = ("shelf", "table", "free")


@dataclass(frozen=True)
class Paste:
    """One cut-out of a frame, in paint order. ``asset`` indexes the catalog; -1 is a distractor shape."""

    asset: int
    cx: float  # centre, pixels
    cy: float
    width: float  # before rotation, pixels
    height: float
    angle: float = 0.0  # degrees, counter-clockwise
    shape: int = 0  # distractors: 0 rectangle, 1 ellipse, 2 polygon


@dataclass
class Streams:
    """One random generator per randomizer of a frame, seeded ``[seed, frame, stream id]``."""

    pick: np.random.Generator  # which asset
    scale: np.random.Generator  # object heights
    place: np.random.Generator  # positions, shelf rows, overlaps, paint order
    rotate: np.random.Generator  # in-plane angles

    @classmethod
    def for_frame(cls, seed: int, frame: int) -> "Streams":
        return cls(*(np.random.default_rng([seed, frame, k]) for k in (1, 2, 3, 4)))


@dataclass(frozen=True)
class Layout:
    """A frame's products in paint order, plus the shelf boards (tops in pixels) the background draws."""

    pastes: list[Paste]
    shelf_tops: list[float]
    board_height: float


def _height(s: Streams, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * s.scale.random())


def _angle(s: Streams, max_deg: float) -> float:
    return float(s.rotate.uniform(-1.0, 1.0) * max_deg)


def shelf_layout(s: Streams, aspects: np.ndarray, width: int, height: int, object_height: tuple[float, float],
                 max_rotation: float, max_overlap: float, cap: int) -> Layout:
    """Rows of products (``aspects[i]`` = width / height of asset i) filling the image top to bottom.

    A row has a nominal product height drawn from ``object_height``; each product is 0-15 % shorter
    than it (both only when the range is not a single value), stands on the board, and overlaps the
    previous product by U(0, max_overlap) of its width (0: exactly touching). At most ``cap`` products."""
    lo, hi = object_height
    pastes: list[Paste] = []
    tops: list[float] = []
    boards: list[float] = []
    y = None
    while len(pastes) < cap:
        row_h = _height(s, lo, hi)
        board = max(3.0, 0.08 * row_h)
        pitch = row_h * s.place.uniform(1.06, 1.3) + board
        if y is None:
            y = -s.place.uniform(0.0, 0.5) * pitch
        if y >= height:
            break
        bottom = y + pitch - board
        tops.append(float(bottom))
        boards.append(board)
        row: list[Paste] = []
        x = -s.place.uniform(0.0, 0.8) * row_h * float(np.median(aspects))
        while x < width and len(pastes) + len(row) < cap:
            a = int(s.pick.integers(len(aspects)))
            h = row_h * (1.0 - 0.15 * s.scale.random()) if hi > lo else row_h
            w = h * float(aspects[a])
            left = x - s.place.uniform(0.0, max_overlap) * w if max_overlap > 0 else x
            row.append(Paste(a, left + w / 2, bottom - h / 2, w, h, _angle(s, max_rotation)))
            x = left + w
        if s.place.random() < 0.5:  # paint right to left: the left product hides its right neighbour
            row.reverse()
        pastes += row
        y += pitch
    return Layout(pastes, tops, float(np.mean(boards)) if boards else 0.0)


def scattered_layout(s: Streams, aspects: np.ndarray, width: int, height: int, object_height: tuple[float, float],
                     max_rotation: float, max_overlap: float, count: tuple[int, int], *, table: bool,
                     max_crop: float = 0.3, tries: int = 25) -> Layout:
    """``table`` or ``free`` placements: ``count`` (min, max) products tried; a product whose ``tries``
    candidate centres all break a limit (more than ``max_crop`` of its rotated box outside the image,
    or an intersection with an earlier box above ``max_overlap`` of the smaller box) is left out."""
    n = int(s.place.integers(count[0], count[1] + 1))
    pastes: list[Paste] = []
    bottoms: list[float] = []
    boxes = np.zeros((0, 4))
    for _ in range(n):
        a = int(s.pick.integers(len(aspects)))
        h = _height(s, *object_height)
        w = h * float(aspects[a])
        angle = _angle(s, max_rotation)
        ew, eh = rotated_extent(w, h, math.radians(angle))
        cx = s.place.uniform(-ew * max_crop / 2, width + ew * max_crop / 2, tries)
        if table:  # standing on the table: the bottom edge in the lower two thirds of the image
            cy = s.place.uniform(height / 3, height + eh * max_crop / 2, tries) - eh / 2
        else:
            cy = s.place.uniform(-eh * max_crop / 2, height + eh * max_crop / 2, tries)
        cand = np.stack([cx - ew / 2, cy - eh / 2, cx + ew / 2, cy + eh / 2], 1)
        inside = ((np.minimum(cand[:, 2], width) - np.maximum(cand[:, 0], 0)).clip(0)
                  * (np.minimum(cand[:, 3], height) - np.maximum(cand[:, 1], 0)).clip(0))
        ok = inside >= (1 - max_crop) * ew * eh
        if len(boxes):
            iw = np.minimum(boxes[None, :, 2], cand[:, None, 2]) - np.maximum(boxes[None, :, 0], cand[:, None, 0])
            ih = np.minimum(boxes[None, :, 3], cand[:, None, 3]) - np.maximum(boxes[None, :, 1], cand[:, None, 1])
            smaller = np.minimum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), ew * eh)
            ok &= ~np.any(iw.clip(0) * ih.clip(0) > max_overlap * smaller[None, :], axis=1)
        hits = np.flatnonzero(ok)
        if len(hits):
            j = int(hits[0])
            pastes.append(Paste(a, float(cx[j]), float(cy[j]), w, h, angle))
            bottoms.append(float(cand[j, 3]))
            boxes = np.vstack([boxes, cand[j]])
    if table:  # back to front
        order = sorted(range(len(pastes)), key=lambda i: (bottoms[i], i))
        pastes = [pastes[i] for i in order]
    return Layout(pastes, [], 0.0)


def distractors(rng: np.random.Generator, n_pastes: int, count: tuple[int, int], width: int, height: int,
                object_height: tuple[float, float]) -> list[tuple[int, Paste]]:
    """Unlabelled clutter shapes: (paint position among the ``n_pastes`` products, shape), sized like
    products (height from ``object_height`` x 0.5-1.2, aspect 0.3-3), anywhere, any angle."""
    lo, hi = count
    n = int(rng.integers(lo, hi + 1)) if hi > 0 else 0
    out = []
    for _ in range(n):
        h = (object_height[0] + (object_height[1] - object_height[0]) * rng.random()) * rng.uniform(0.5, 1.2)
        w = h * math.sqrt(rng.uniform(0.3, 3.0))
        out.append((int(rng.integers(n_pastes + 1)),
                    Paste(-1, rng.uniform(0, width), rng.uniform(0, height), w, h, rng.uniform(-180, 180),
                          int(rng.integers(3)))))
    return out
