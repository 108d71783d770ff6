"""Scene layout: where each product goes, how big and in which pose (geometry only, no pixels).

Synthetic style follows SynthDet's randomizers (UnityGroceries-Synthetic parameters, see
docs/generator.md): a foreground layer of products whose scale follows a curriculum from 1.0 down
to 0.5 over the dataset in ``scale_steps`` steps, random in-plane rotation and out-of-plane pose
(faked by squashing/shearing the sprite), at most ``max_crop`` of an object outside the frame,
pairwise overlap at most ``max_overlap`` (intersection over the smaller box), distractors
(unlabeled products) with probability ``distractor_prob`` per slot. Occluders, background,
lights, blur and noise are sampled by the renderer.

Target style lays products upright on store shelves (a front row and a partly hidden back row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SceneConfig:
    """Randomization parameters. Lengths are fractions of the image height unless they say pixels."""

    objects_per_frame: tuple[int, int] = (15, 25)  # foreground slots (products + distractors), inclusive
    object_height: float = 0.3  # nominal product height at scale 1.0, fraction of image height
    scale_start: float = 1.0
    scale_end: float = 0.5
    scale_steps: int = 4
    scale_jitter: float = 0.1  # per-object relative jitter around the curriculum scale
    max_crop: float = 0.5  # largest fraction of an object's box outside the image
    max_overlap: float = 0.3  # largest intersection / smaller-box area between two foreground objects
    placement_tries: int = 25
    distractor_prob: float = 0.2
    occluder_prob: float = 1.0  # chance that a labeled object gets its occluder (SynthDet: every object)
    occluder_coverage: tuple[float, float] = (0.1, 0.3)  # fraction of each object its occluder covers
    max_rotation_deg: float = 180.0  # in-plane rotation
    max_yaw_deg: float = 60.0  # out-of-plane turns, faked by squash + perspective taper
    max_pitch_deg: float = 35.0
    max_shear: float = 0.15
    background_density: float = 3.0
    background_max_hue: float = 180.0  # degrees
    occluder_max_hue: float = 180.0
    light_color_min: float = 0.1
    light_rotation_max_deg: float = 90.0
    noise_max: float = 0.02  # white-noise std, fraction of 255
    blur_sigma_max: float = 0.5  # Gaussian std, pixels at 640 px width
    min_box_pixels: int = 64  # instances with fewer visible pixels get no box
    min_box_side: int = 4  # ... or with a box side shorter than this (pixels)

    def __post_init__(self):
        lo, hi = self.objects_per_frame
        if not (0 <= lo <= hi <= 10_000):
            raise ValueError(f"objects_per_frame must be 0 <= min <= max <= 10000, got {self.objects_per_frame}")
        if self.scale_steps < 1:
            raise ValueError("scale_steps must be >= 1")


@dataclass(frozen=True)
class Placement:
    """One object of a frame. ``label`` 0 means a distractor (unlabeled); ``kind`` indexes the appearance list."""

    label: int
    kind: int
    cx: float  # centre, pixels
    cy: float
    height: float  # un-rotated silhouette height, pixels
    width: float  # un-rotated silhouette width, pixels (after yaw squash)
    yaw: float = 0.0  # radians
    pitch: float = 0.0
    shear: float = 0.0
    roll: float = 0.0  # in-plane rotation, radians
    pose: int = 0  # sprite pose variant


def curriculum_scale(config: SceneConfig, frame: int, total: int) -> float:
    """SynthDet's scale curriculum: scale_start for the first frames down to scale_end for the last."""
    steps = config.scale_steps
    if steps == 1 or total <= 1:
        return config.scale_start
    step = min(steps - 1, frame * steps // total)
    return config.scale_start + (config.scale_end - config.scale_start) * step / (steps - 1)


def rotated_extent(w: float, h: float, roll: float) -> tuple[float, float]:
    c, s = abs(math.cos(roll)), abs(math.sin(roll))
    return w * c + h * s, w * s + h * c


def _pick_object(rng: np.random.Generator, shapes: list[tuple[float, float]],
                 distractor_shapes: list[tuple[float, float]], distractor_prob: float) -> tuple[int, int, float, float]:
    """(label, shape index, aspect, size) of the next object: a distractor (label 0, unlabeled) with
    probability ``distractor_prob``, else a product whose label is its shape index + 1."""
    if distractor_shapes and rng.random() < distractor_prob:
        kind = int(rng.integers(len(distractor_shapes)))
        return 0, kind, *distractor_shapes[kind]
    kind = int(rng.integers(len(shapes)))
    return kind + 1, kind, *shapes[kind]


def synthetic_layout(rng: np.random.Generator, config: SceneConfig, shapes: list[tuple[float, float]],
                     distractor_shapes: list[tuple[float, float]], width: int, height: int,
                     scale: float) -> list[Placement]:
    """Foreground placements. ``shapes[i] = (aspect, size)`` of class i (label i + 1)."""
    lo, hi = config.objects_per_frame
    n_slots = int(rng.integers(lo, hi + 1))
    placed: list[Placement] = []
    boxes = np.zeros((0, 4))  # x0, y0, x1, y1 of the rotated extents
    for _ in range(n_slots):
        label, kind, aspect, size = _pick_object(rng, shapes, distractor_shapes, config.distractor_prob)
        h = config.object_height * height * scale * size * (1 + rng.uniform(-config.scale_jitter, config.scale_jitter))
        yaw = rng.uniform(-1, 1) * math.radians(config.max_yaw_deg)
        pitch = rng.uniform(-1, 1) * math.radians(config.max_pitch_deg)
        shear = rng.uniform(-1, 1) * config.max_shear
        roll = rng.uniform(-1, 1) * math.radians(config.max_rotation_deg)
        w = h * aspect * max(0.35, math.cos(yaw))
        hh = h * max(0.5, math.cos(pitch))
        ew, eh = rotated_extent(w + abs(shear) * hh, hh, roll)
        pose = int(rng.integers(4))
        # all candidate centres of this slot at once; the first one that satisfies both limits wins
        t = config.placement_tries
        cx = rng.uniform(-ew * config.max_crop / 2, width + ew * config.max_crop / 2, t)
        cy = rng.uniform(-eh * config.max_crop / 2, height + eh * config.max_crop / 2, t)
        cand = np.stack([cx - ew / 2, cy - eh / 2, cx + ew / 2, cy + eh / 2], 1)
        inside = ((np.minimum(cand[:, 2], width) - np.maximum(cand[:, 0], 0)).clip(0)
                  * (np.minimum(cand[:, 3], height) - np.maximum(cand[:, 1], 0)).clip(0))
        ok = inside >= (1 - config.max_crop) * ew * eh
        if len(boxes):
            iw = np.minimum(boxes[None, :, 2], cand[:, None, 2]) - np.maximum(boxes[None, :, 0], cand[:, None, 0])
            ih = np.minimum(boxes[None, :, 3], cand[:, None, 3]) - np.maximum(boxes[None, :, 1], cand[:, None, 1])
            inter = iw.clip(0) * ih.clip(0)
            smaller = np.minimum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), ew * eh)
            ok &= ~np.any(inter > config.max_overlap * smaller[None, :], axis=1)
        hits = np.flatnonzero(ok)
        if len(hits):
            j = int(hits[0])
            placed.append(Placement(label, kind, float(cx[j]), float(cy[j]), float(hh), float(w), yaw, pitch, shear,
                                    roll, pose))
            boxes = np.vstack([boxes, cand[j]])
    return placed


def shelf_layout(rng: np.random.Generator, config: SceneConfig, shapes: list[tuple[float, float]],
                 distractor_shapes: list[tuple[float, float]], width: int,
                 height: int) -> tuple[list[Placement], list[float], float]:
    """Products standing on 2-4 shelves; returns (placements back-to-front, shelf board tops, board height)."""
    rows = int(rng.integers(2, 4))
    top_margin = rng.uniform(-0.15, 0.05) * height
    pitch_px = (height - top_margin) / rows
    board_h = max(4.0, 0.07 * pitch_px)
    tops = [top_margin + (r + 1) * pitch_px - board_h for r in range(rows)]
    placed: list[Placement] = []
    cap = 3 * config.objects_per_frame[1]  # shelves fill up naturally; this only bounds the work
    for top in tops:
        space = pitch_px - board_h
        for depth in (1, 0):  # back row first (drawn first, partly hidden), then the front row
            shrink = 0.9 if depth else 1.0
            x = rng.uniform(-0.1, 0.05) * space
            while x < width and len(placed) < cap:
                label, kind, aspect, size = _pick_object(rng, shapes, distractor_shapes, config.distractor_prob)
                h = space * shrink * min(0.92, 0.62 * size + rng.uniform(0.0, 0.12))
                yaw = rng.uniform(-0.35, 0.35)
                w = h * aspect * math.cos(yaw)
                bottom = top - (depth * 0.04 * space)
                if depth == 1 and rng.random() < 0.35:  # gaps in the back row
                    x += w + rng.uniform(0.05, 0.3) * space
                    continue
                placed.append(Placement(label, kind, float(x + w / 2), float(bottom - h / 2), float(h), float(w),
                                        yaw, 0.0, 0.0, float(rng.uniform(-0.03, 0.03)), int(rng.integers(4))))
                x += w + rng.uniform(0.0, 0.12) * space
    return placed, tops, board_h
