"""Render one frame: layout -> composited RGB, a uint16 instance map, and the frame's `Sample`.

Boxes come from the instance map, after every object, distractor and occluder is drawn: an
instance's box is the bounding box of its *visible* pixels (xywh pixels, x1 = x0 + w with the
pixel-edge convention), so occlusion and cropping are exact. Instances with fewer than
``min_box_pixels`` visible pixels or a side shorter than ``min_box_side`` get no box and are
erased from the instance map (instance map ids == annotated instances). Distractors and
occluders are 0 in the instance map, like the background.

A frame depends only on (seed, frame index, total frames): its generator is seeded with
``[seed, frame]`` and the total only sets the curriculum scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from synthgap.data.sample import Sample
from synthgap.errors import SynthgapError
from synthgap.generate.appearance import ProductAppearance, distractor_appearance, product_appearance
from synthgap.generate.background import ClutterBank, shelf_background
from synthgap.generate.camera import NoiseBank, synthetic_camera, target_camera
from synthgap.generate.scene import Placement, SceneConfig, curriculum_scale, shelf_layout, synthetic_layout

STYLES = ("synthetic", "target")
N_DISTRACTORS = 8
MIN_SIDE_PX = 16
MAX_SIDE_PX = 8192
MAX_FRAME_PIXELS = 4096 * 4096  # the renderers hold noise and clutter banks of ~110 bytes per frame pixel


def check_frame_size(width: int, height: int) -> None:
    """SynthgapError unless 16 <= width, height <= 8192 px and width * height <= 4096 * 4096 px.

    Both renderers keep banks of noise and clutter a little larger than the frame in memory (about
    110 bytes per frame pixel, 1.8 GB at the limit), so a 50000 x 50000 frame would end in a
    MemoryError (or the OOM killer) instead of a message."""
    for value in (width, height):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise SynthgapError(f"image size must be whole pixels, got {width!r}x{height!r}")
    if min(width, height) < MIN_SIDE_PX:
        raise SynthgapError(f"image size must be at least {MIN_SIDE_PX}x{MIN_SIDE_PX} pixels, got {width}x{height}")
    if max(width, height) > MAX_SIDE_PX or width * height > MAX_FRAME_PIXELS:
        raise SynthgapError(f"image size {width}x{height} px is too large for the generator: at most {MAX_SIDE_PX} px "
                            f"a side and {MAX_FRAME_PIXELS / 1e6:.1f} megapixels (4096x4096) a frame, since it "
                            f"keeps about 110 bytes per pixel in memory ({width * height * 110 / 1e9:.1f} GB here)")


@dataclass
class Warped:
    """A sprite warped into image space: RGB + silhouette mask whose top-left pixel is at (x0, y0)."""

    rgb: np.ndarray  # (h, w, 3) uint8
    mask: np.ndarray  # (h, w) bool
    x0: int
    y0: int


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """8 coefficients of the projective map taking dst points to src points (PIL's PERSPECTIVE data)."""
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(dst, src)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        b[2 * i], b[2 * i + 1] = u, v
    return np.linalg.solve(a, b)


def warp(app: ProductAppearance, p: Placement) -> Warped:
    """Perspective-warp the class sprite to the placement's size and pose (PIL, bilinear).

    Sprites are premultiplied (PIL mode RGBa), so bilinear edges blend towards black instead of
    PIL converting RGBA -> RGBa -> RGBA around every transform; the silhouette is alpha >= 128.
    """
    level = app.level_for(p.height * 1.2)
    im = app.premultiplied[level][p.pose]
    sw, sh = im.size
    w, h = p.width * (sw / sh) / max(app.aspect, 1e-6), p.height  # side/top faces widen some poses
    # corners centred on 0, then squash/taper for yaw and pitch, shear, in-plane roll
    x = np.array([-0.5, 0.5, 0.5, -0.5]) * w
    y = np.array([-0.5, -0.5, 0.5, 0.5]) * h
    ky, kp = 0.25 * math.sin(p.yaw), 0.25 * math.sin(p.pitch)
    y = y * (1 - ky * (x / (w / 2)))
    x = x * (1 + kp * (y / (h / 2)))
    x = x + p.shear * y
    c, s = math.cos(p.roll), math.sin(p.roll)
    x, y = c * x - s * y + p.cx, s * x + c * y + p.cy
    x0, y0 = math.floor(x.min()), math.floor(y.min())
    ow, oh = max(1, math.ceil(x.max()) - x0), max(1, math.ceil(y.max()) - y0)
    dst = np.stack([x - x0, y - y0], 1)
    src = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], dtype=np.float64)
    coeffs = _homography(src, dst)
    out = np.asarray(im.transform((ow, oh), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BILINEAR))
    return Warped(out[..., :3], out[..., 3] >= 128, x0, y0)


def _clip(x0: int, y0: int, h: int, w: int, width: int, height: int):
    """(image slice, local slice) of a (h, w) patch at (x0, y0), or None when fully outside."""
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(width, x0 + w), min(height, y0 + h)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    return (slice(iy0, iy1), slice(ix0, ix1)), (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))


def paste(canvas: np.ndarray, instance_map: np.ndarray, rgb: np.ndarray, mask: np.ndarray, x0: int, y0: int,
          instance: int) -> int:
    """Draw a masked patch over canvas and instance map (in place); returns the pixels drawn."""
    clipped = _clip(x0, y0, mask.shape[0], mask.shape[1], canvas.shape[1], canvas.shape[0])
    if clipped is None:
        return 0
    (ys, xs), (ly, lx) = clipped
    m = mask[ly, lx]
    np.copyto(canvas[ys, xs], rgb[ly, lx], where=m[..., None])
    np.copyto(instance_map[ys, xs], instance, where=m)
    return int(np.count_nonzero(m))


def _integral(mask: np.ndarray) -> np.ndarray:
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    np.cumsum(np.cumsum(mask, 0), 1, out=out[1:, 1:])
    return out


def _rect_counts(ii: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
    """Mask pixels inside each rectangle [x0, x1) x [y0, y1) (float pixel edges, rounded), vectorized."""
    h, w = ii.shape[0] - 1, ii.shape[1] - 1
    a = np.clip(np.round(x0), 0, w).astype(np.intp)
    b = np.clip(np.round(x1), 0, w).astype(np.intp)
    c = np.clip(np.round(y0), 0, h).astype(np.intp)
    d = np.clip(np.round(y1), 0, h).astype(np.intp)
    return ii[d, b] - ii[c, b] - ii[d, a] + ii[c, a]


def occluder_for(rng: np.random.Generator, obj: Warped, coverage: float) -> tuple[int, int, np.ndarray]:
    """An occluder rectangle/ellipse covering about ``coverage`` of the object's silhouette.

    Anchored at a random point of the silhouette's box near an edge; its size is the smallest of
    64 candidate sizes whose rectangle covers the target, counted on the silhouette's integral
    image (one vectorized lookup). Returns (x0, y0, mask) in image pixels.
    """
    mask = obj.mask
    h, w = mask.shape
    total = int(mask.sum())
    ii = _integral(mask)
    ax, ay = rng.uniform(0, w), rng.uniform(0, h)
    side = int(rng.integers(4))
    if side == 0:
        ax = rng.uniform(0, 0.2) * w
    elif side == 1:
        ax = rng.uniform(0.8, 1.0) * w
    elif side == 2:
        ay = rng.uniform(0, 0.2) * h
    else:
        ay = rng.uniform(0.8, 1.0) * h
    aspect = rng.uniform(0.5, 2.0)
    # half-size r: rectangle [ax - r*aspect, ax + r*aspect] x [ay - r, ay + r]
    r = 0.5 + (1.5 * max(h, w) - 0.5) * np.linspace(0, 1, 64) ** 2  # finer steps for small occluders
    counts = _rect_counts(ii, ax - r * aspect, ay - r, ax + r * aspect, ay + r)
    r = float(r[min(int(np.searchsorted(counts, coverage * total)), len(r) - 1)])
    rx, ry = max(1.0, r * aspect), max(1.0, r)
    ow, oh = max(1, int(round(2 * rx))), max(1, int(round(2 * ry)))
    if rng.random() < 0.5:  # ellipse of the same area as the rectangle
        rx, ry = rx * 1.128, ry * 1.128
        ow, oh = max(1, int(round(2 * rx))), max(1, int(round(2 * ry)))
        yy, xx = np.ogrid[0:oh, 0:ow]
        omask = ((xx + 0.5 - ow / 2) / (ow / 2)) ** 2 + ((yy + 0.5 - oh / 2) / (oh / 2)) ** 2 <= 1
    else:
        omask = np.ones((oh, ow), bool)
    return obj.x0 + int(round(ax - ow / 2)), obj.y0 + int(round(ay - oh / 2)), omask


def _overlap(a: Warped, bx0: int, by0: int, bmask: np.ndarray) -> int:
    """Pixels of silhouette ``a`` covered by mask ``bmask`` at (bx0, by0)."""
    clipped = _clip(bx0 - a.x0, by0 - a.y0, bmask.shape[0], bmask.shape[1], a.mask.shape[1], a.mask.shape[0])
    if clipped is None:
        return 0
    (ys, xs), (ly, lx) = clipped
    return int(np.count_nonzero(a.mask[ys, xs] & bmask[ly, lx]))


class Renderer:
    """Renders frames of one dataset: per-class sprites, clutter and noise banks are built once here."""

    def __init__(self, class_names: list[str], *, width: int = 640, height: int = 480, seed: int = 0,
                 style: str = "synthetic", config: SceneConfig | None = None):
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
        check_frame_size(width, height)
        self.class_names = list(class_names)
        self.width, self.height, self.seed, self.style = width, height, seed, style
        self.config = config or SceneConfig()
        self.products = [product_appearance(n, style) for n in self.class_names]
        self.distractors = [distractor_appearance(i, seed, style) for i in range(N_DISTRACTORS)]
        self.noise = NoiseBank(width, height, seed, max_std=self.config.noise_max * 255)
        self.bank = ClutterBank(width, height, seed, self.config.background_density)

    def render(self, frame: int, total: int) -> tuple[np.ndarray, np.ndarray, Sample]:
        """(rgb uint8 (H, W, 3), instance map uint16 (H, W), Sample with boxes/labels/metadata)."""
        cfg = self.config
        rng = np.random.default_rng([self.seed, frame])
        W, H = self.width, self.height
        shapes = [(a.aspect, a.size) for a in self.products]
        dshapes = [(a.aspect, a.size) for a in self.distractors]
        meta: dict = {"frame": frame, "seed": self.seed, "style": self.style}
        if self.style == "synthetic":
            scale = curriculum_scale(cfg, frame, total)
            canvas = self.bank.frame(rng, cfg.background_max_hue)
            placements = synthetic_layout(rng, cfg, shapes, dshapes, W, H, scale)
            meta["scale"] = round(scale, 6)
        else:
            placements, tops, board_h = shelf_layout(rng, cfg, shapes, dshapes, W, H)
            canvas = shelf_background(rng, W, H, tops, board_h)
        canvas = np.array(canvas, copy=True)
        inst = np.zeros((H, W), np.uint16)

        objects: list[tuple[int, Placement, Warped, int]] = []  # (instance id, placement, warped, full pixels)
        next_id = 1
        for p in placements:
            app = self.products[p.kind] if p.label else self.distractors[p.kind]
            wp = warp(app, p)
            instance = next_id if p.label else 0
            paste(canvas, inst, wp.rgb, wp.mask, wp.x0, wp.y0, instance)
            if p.label:
                objects.append((instance, p, wp, int(wp.mask.sum())))
                next_id += 1

        coverage = {}
        if self.style == "synthetic":
            for instance, p, wp, full in objects:  # one occluder per labeled object, in front of all
                f = rng.uniform(*cfg.occluder_coverage)
                if rng.random() >= cfg.occluder_prob or f <= 0:
                    continue
                ox, oy, omask = occluder_for(rng, wp, f)
                tex = self.bank.patch(rng, omask.shape[0], omask.shape[1], cfg.occluder_max_hue)
                paste(canvas, inst, tex, omask, ox, oy, 0)
                coverage[instance] = _overlap(wp, ox, oy, omask) / max(1, full)

        sample, inst = self._annotate(inst, objects, coverage, frame, meta)
        img = Image.fromarray(canvas)
        if self.style == "synthetic":
            img, cam = synthetic_camera(img, rng, self.noise, light_color_min=cfg.light_color_min,
                                        light_rotation_max_deg=cfg.light_rotation_max_deg,
                                        blur_sigma_max=cfg.blur_sigma_max, noise_max=cfg.noise_max)
        else:
            img, cam = target_camera(img, rng, self.noise)
            cam["jpeg_quality"] = int(rng.integers(70, 93))
        sample.metadata.update(cam)
        return np.asarray(img), inst, sample

    def _annotate(self, inst: np.ndarray, objects, coverage: dict, frame: int, meta: dict):
        cfg = self.config
        counts = np.bincount(inst.ravel(), minlength=len(objects) + 1)
        boxes, labels, ids, visible, full_px, occl, drop = [], [], [], [], [], [], []
        for instance, p, wp, full in objects:
            n = int(counts[instance])
            box = None
            if n:
                clipped = _clip(wp.x0, wp.y0, wp.mask.shape[0], wp.mask.shape[1], self.width, self.height)
                (ys, xs), _ = clipped
                local = inst[ys, xs] == instance
                rows = np.flatnonzero(local.any(1))
                cols = np.flatnonzero(local.any(0))
                bx, by = xs.start + cols[0], ys.start + rows[0]
                bw, bh = cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1
                if n >= cfg.min_box_pixels and min(bw, bh) >= cfg.min_box_side:
                    box = (bx, by, bw, bh)
            if box is None:  # fully hidden (n == 0) or below the size threshold
                drop.append(instance)
                continue
            boxes.append(box)
            labels.append(p.label)
            ids.append(instance)
            visible.append(n)
            full_px.append(full)
            occl.append(round(float(coverage.get(instance, 0.0)), 4))
        if drop:
            inst[np.isin(inst, drop)] = 0  # a no-op for the fully hidden ones
        meta.update({"visible_pixels": visible, "full_pixels": full_px, "occluder_coverage": occl,
                     "dropped_instances": len(drop), "placed_objects": len(objects)})
        sample = Sample(image=f"frame_{frame:06d}", width=self.width, height=self.height,
                        boxes=np.array(boxes, np.float64).reshape(-1, 4), labels=np.array(labels, np.int64),
                        image_id=frame, instance_ids=tuple(ids), areas=np.array(visible, np.float64),
                        metadata=meta)
        return sample, inst
