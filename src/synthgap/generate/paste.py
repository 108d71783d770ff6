"""SynthDet with real assets: paste real product cut-outs (`synthgap.generate.assets`) into randomized scenes.

SynthDet's idea is domain randomization around real product appearance; this is its 2D form. Per
frame: a background (procedural: shelf boards for the shelf layout, SynthDet-like clutter otherwise;
a random crop of an image from a folder; or plain grey), products placed by a layout
(`synthgap.generate.layout`: ``shelf``, ``table``, ``free``) with a height in pixels, an in-plane
rotation, a hue / brightness / contrast change each, unlabelled distractor shapes among them, then
Gaussian blur and white noise over the frame. Every randomizer is a named range of `PasteConfig` and
is off at zero (a single value for ``object_height``, ``plain`` for the background), and each draws
from its own random stream, so switching one off leaves the others' draws unchanged (ablations).

Boxes: every paste writes its instance id into a uint16 instance map where its alpha is >= 128, in
paint order, so a product's box is the bounding box of its pixels still visible after every later
paste (products and distractors) and the frame's edge: xywh pixels, ``w = x_max - x_min + 1``. A
product whose visible fraction (visible pixels / its silhouette pixels inside the frame) is below
``min_visible``, or that keeps fewer than ``min_box_pixels`` pixels or a box side under
``min_box_side``, is **dropped**: no box, erased from the instance map (its pixels stay in the image,
like an unlabelled background product) and counted in ``dropped_instances``. The frame statistics
record per box ``visible_pixels``, ``full_pixels`` (the whole silhouette, frame edges ignored) and
``occluded_fraction`` (share of the in-frame silhouette hidden by later pastes).

Compositing is numpy over each paste's crop region: alpha blending in integer arithmetic
(``(src * a + dst * (255 - a) + 127) // 255``), never per-pixel Python. A frame depends only on
(seed, frame index): its streams are seeded ``[seed, frame, stream id]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from synthgap.data.errors import DatasetError
from synthgap.data.sample import Sample
from synthgap.errors import SynthgapError
from synthgap.generate.assets import AssetCatalog
from synthgap.generate.background import ClutterBank, hue_matrix, shelf_background
from synthgap.generate.camera import NoiseBank, gaussian_blur
from synthgap.generate.layout import LAYOUTS, Layout, Paste, Streams, distractors, scattered_layout, shelf_layout
from synthgap.generate.render import check_frame_size
from synthgap.io import storage

BACKGROUNDS = ("procedural", "plain")  # or the path of a folder of images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PLAIN_GREY = 128
SHELF_CAP = 5  # shelf rows fill the frame; at most this x the largest objects_per_frame products
# stream ids after the layout's 1-4 (`Streams`)
_HUE, _BRIGHTNESS, _CONTRAST, _BLUR, _NOISE, _BACKGROUND, _DISTRACTORS = range(5, 12)


@dataclass(frozen=True)
class PasteConfig:
    """The randomizers of the cut-and-paste mode. Pixels are frame pixels; 0 switches a randomizer off."""

    layout: str = "shelf"  # shelf | table | free (`synthgap.generate.layout`)
    objects_per_frame: tuple[int, int] = (8, 20)  # table/free: products tried per frame; shelf: an upper bound
    object_height: tuple[float, float] = (60.0, 160.0)  # product height before rotation, px; MIN == MAX: off
    rotation: float = 10.0  # in-plane angle U(-r, r), degrees
    max_overlap: float = 0.2  # shelf: a neighbour's overlap, fraction of width; table/free: box over smaller box
    hue: float = 15.0  # per product hue rotation U(-h, h), degrees
    brightness: float = 0.2  # per product gain U(1 - b, 1 + b)
    contrast: float = 0.2  # per product contrast U(1 - c, 1 + c) around the cut-out's mean colour
    blur: float = 1.0  # per frame Gaussian blur sigma U(0, b), px
    noise: float = 0.02  # per frame white noise std U(0, n), fraction of 255
    background: str = "procedural"  # procedural | plain (off: grey 128) | a folder of images (random crops)
    distractors: tuple[int, int] = (0, 4)  # unlabelled clutter shapes per frame (min, max)
    max_crop: float = 0.3  # table/free: largest fraction of a product's rotated box outside the frame
    min_visible: float = 0.25  # visible / in-frame silhouette below this: the product is dropped
    min_box_pixels: int = 64  # fewer visible pixels: dropped
    min_box_side: int = 4  # a shorter box side (px): dropped
    placement_tries: int = 25  # table/free: candidate centres per product

    def __post_init__(self):
        def bad(message: str):
            raise SynthgapError(f"paste settings: {message}")

        if self.layout not in LAYOUTS:
            bad(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        lo, hi = self.objects_per_frame
        if not 0 <= lo <= hi <= 10_000:
            bad(f"objects_per_frame must be 0 <= min <= max <= 10000, got {self.objects_per_frame}")
        lo, hi = self.object_height
        if not 4 <= lo <= hi <= 8192:
            bad(f"object_height must be 4 <= min <= max <= 8192 px, got {self.object_height}")
        lo, hi = self.distractors
        if not 0 <= lo <= hi <= 1000:
            bad(f"distractors must be 0 <= min <= max <= 1000, got {self.distractors}")
        for name, top in (("rotation", 180.0), ("max_overlap", 0.9), ("hue", 180.0), ("brightness", 1.0),
                          ("contrast", 1.0), ("blur", 20.0), ("noise", 1.0), ("max_crop", 0.9), ("min_visible", 1.0)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= top):
                bad(f"{name} must be between 0 and {top}, got {value!r}")
        if not self.background:
            bad("background must be procedural, plain or a folder of images")


class Compositor:
    """Renders frames of one cut-and-paste dataset. The catalog's cut-outs are scaled once to at most
    twice the largest product height (the working copies a paste resizes from); clutter and noise
    banks are drawn once per (seed, size)."""

    def __init__(self, catalog: AssetCatalog, *, width: int = 640, height: int = 480, seed: int = 0,
                 config: PasteConfig | None = None):
        check_frame_size(width, height)
        if not len(catalog):
            raise DatasetError("the asset catalog is empty", file=catalog.source, kind="empty")
        self.catalog, self.width, self.height, self.seed = catalog, width, height, seed
        self.config = cfg = config or PasteConfig()
        top = max(8, int(math.ceil(2 * cfg.object_height[1])))
        self.levels = [_levels(a.rgba, top) for a in catalog.assets]
        # each cut-out's mean colour (alpha-weighted, 0-255): the pivot of its contrast change
        self.means = [a.rgba[..., :3].reshape(-1, 3).T.astype(np.float64) @ a.rgba[..., 3].reshape(-1)
                      / max(1.0, float(a.rgba[..., 3].sum())) for a in catalog.assets]
        self.aspects = np.array([a.width / a.height for a in catalog.assets])
        self.backgrounds: list[str] = []
        if cfg.background not in BACKGROUNDS:
            root = cfg.background
            if not storage.isdir(root):
                raise DatasetError("background folder not found", file=str(root), field="background",
                                   kind="missing_file")
            self.backgrounds = [storage.join(root, n) for n in storage.listdir(root)
                                if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES)]
            if not self.backgrounds:
                raise DatasetError(f"no image ({', '.join(IMAGE_SUFFIXES)}) in the background folder", file=str(root),
                                   field="background", kind="empty")
        needs_clutter = cfg.distractors[1] > 0 or (cfg.background == "procedural" and cfg.layout != "shelf")
        self.clutter = ClutterBank(width, height, seed) if needs_clutter else None
        self.noise = NoiseBank(width, height, seed, max_std=cfg.noise * 255) if cfg.noise > 0 else None

    @property
    def class_names(self) -> list[str]:
        return list(self.catalog.class_names)

    def render(self, frame: int, total: int | None = None) -> tuple[np.ndarray, np.ndarray, Sample]:
        """(rgb uint8 (H, W, 3), instance map uint16 (H, W), Sample) of frame ``frame``. ``total`` is unused
        (no curriculum): it is there so the writers treat both renderers alike."""
        return self.compose(frame, self.layout(frame))

    def layout(self, frame: int) -> Layout:
        """Where frame ``frame``'s products go (`synthgap.generate.layout`)."""
        cfg, s = self.config, Streams.for_frame(self.seed, frame)
        if cfg.layout == "shelf":
            cap = SHELF_CAP * cfg.objects_per_frame[1]
            return shelf_layout(s, self.aspects, self.width, self.height, cfg.object_height, cfg.rotation,
                                cfg.max_overlap, cap)
        return scattered_layout(s, self.aspects, self.width, self.height, cfg.object_height, cfg.rotation,
                                cfg.max_overlap, cfg.objects_per_frame, table=cfg.layout == "table",
                                max_crop=cfg.max_crop, tries=cfg.placement_tries)

    def compose(self, frame: int, layout: Layout) -> tuple[np.ndarray, np.ndarray, Sample]:
        """Paint ``layout`` (products in paint order; ``Paste.asset`` indexes the catalog) with frame ``frame``'s
        background, colours, distractors, blur and noise; boxes from the instance map."""
        cfg = self.config
        W, H = self.width, self.height
        rng = {k: np.random.default_rng([self.seed, frame, k]) for k in
               (_HUE, _BRIGHTNESS, _CONTRAST, _BLUR, _NOISE, _BACKGROUND, _DISTRACTORS)}
        canvas, background = self._background(rng[_BACKGROUND], layout)
        inst = np.zeros((H, W), np.uint16)
        n = len(layout.pastes)
        # per product colour draws, in paint order; a zero range gives the neutral value
        hue = rng[_HUE].uniform(-1.0, 1.0, n) * cfg.hue
        gain = 1.0 + rng[_BRIGHTNESS].uniform(-1.0, 1.0, n) * cfg.brightness
        contrast = 1.0 + rng[_CONTRAST].uniform(-1.0, 1.0, n) * cfg.contrast
        clutter = distractors(rng[_DISTRACTORS], n, cfg.distractors, W, H, cfg.object_height)
        slots: dict[int, list[Paste]] = {}
        for pos, p in clutter:
            slots.setdefault(pos, []).append(p)

        objects = []  # (instance id, paste, x0, y0, mask, full pixels, in-frame pixels)
        for i in range(n + 1):
            for d in slots.get(i, ()):
                rgb, alpha, x0, y0 = self._distractor(rng[_DISTRACTORS], d)
                _blend(canvas, inst, rgb, alpha, x0, y0, 0)
            if i == n:
                break
            p = layout.pastes[i]
            rgb, alpha, x0, y0, offset = self._product(p, hue[i], gain[i], contrast[i])
            mask = alpha >= 128
            inside = _blend(canvas, inst, rgb, alpha, x0, y0, i + 1, offset)
            objects.append((i + 1, p, x0, y0, mask, int(np.count_nonzero(mask)), inside))

        meta = {"frame": frame, "seed": self.seed, "style": "paste", "layout": cfg.layout, "background": background,
                "distractors": len(clutter)}
        sample, inst = self._annotate(inst, objects, frame, meta, hue, gain, contrast)
        img = Image.fromarray(canvas)
        sigma = float(rng[_BLUR].uniform(0.0, cfg.blur))
        img = gaussian_blur(img, sigma)  # sigma < 0.3 px: unchanged
        std = float(rng[_NOISE].uniform(0.0, cfg.noise)) * 255
        if self.noise is not None:
            nimg = self.noise.image(rng[_NOISE], std)
            if nimg is not None:
                img = ImageChops.add(img, nimg, 1.0, -128)
        sample.metadata.update({"blur_sigma": round(sigma, 4), "noise_std": round(std, 4)})
        return np.asarray(img), inst, sample

    def _background(self, rng: np.random.Generator, layout: Layout) -> tuple[np.ndarray, str]:
        cfg, W, H = self.config, self.width, self.height
        if cfg.background == "plain":
            return np.full((H, W, 3), PLAIN_GREY, np.uint8), "plain"
        if self.backgrounds:
            path = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
            return _background_crop(path, rng, W, H), path.replace("\\", "/").rsplit("/", 1)[-1]
        if cfg.layout == "shelf":
            return shelf_background(rng, W, H, layout.shelf_tops, layout.board_height), "procedural"
        return self.clutter.frame(rng, 180.0), "procedural"

    def _product(self, p: Paste, hue: float, gain: float, contrast: float):
        """The cut-out scaled to the paste's size, recoloured and rotated, premultiplied: (rgb, alpha, x0, y0,
        offset). The colour change ``gain * (contrast * (H c - H m) + H m)`` (H: hue rotation, m: the
        cut-out's mean colour) is linear in premultiplied colour plus ``alpha * offset``: one PIL matrix
        convert on the sprite, and the offset added while blending."""
        w, h = max(1, round(p.width)), max(1, round(p.height))
        levels = self.levels[p.asset]
        level = next((lv for lv in reversed(levels) if lv.size[1] >= h), levels[0])
        im = level.resize((w, h), Image.Resampling.BILINEAR)
        offset = None
        if hue or gain != 1.0 or contrast != 1.0:
            m = hue_matrix(hue).astype(np.float64)
            lin = gain * contrast * m
            offset = gain * (1.0 - contrast) * (m @ self.means[p.asset])
            bands = im.split()
            rgb = Image.merge("RGB", bands[:3]).convert("RGB", tuple(float(v) for row in lin for v in (*row, 0.0)))
            im = Image.merge("RGBa", (*rgb.split(), bands[3]))
        return (*_rotate(im, p), offset)

    def _distractor(self, rng: np.random.Generator, p: Paste):
        """An unlabelled clutter shape (rectangle, ellipse or polygon) textured from the clutter bank."""
        w, h = max(2, round(p.width)), max(2, round(p.height))
        shape = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(shape)
        if p.shape == 0:
            draw.rectangle([0, 0, w - 1, h - 1], fill=255)
        elif p.shape == 1:
            draw.ellipse([0, 0, w - 1, h - 1], fill=255)
        else:
            k = int(rng.integers(3, 7))
            t = np.sort(rng.uniform(0, 2 * math.pi, k))
            r = rng.uniform(0.5, 1.0, k)
            draw.polygon([(w / 2 * (1 + r[j] * math.cos(t[j])), h / 2 * (1 + r[j] * math.sin(t[j]))) for j in range(k)],
                         fill=255)
        tex = Image.fromarray(self.clutter.patch(rng, h, w, 180.0))
        tex = Image.composite(tex, Image.new("RGB", (w, h), 0), shape)  # premultiplied: black where alpha is 0
        return _rotate(Image.merge("RGBa", (*tex.split(), shape)), p)

    def _annotate(self, inst: np.ndarray, objects, frame: int, meta: dict, hue, gain, contrast):
        cfg = self.config
        counts = np.bincount(inst.ravel(), minlength=len(objects) + 1)
        boxes, labels, ids, visible, full_px, occluded, assets, colour, drop = [], [], [], [], [], [], [], [], []
        for instance, p, x0, y0, mask, full, inside in objects:
            n = int(counts[instance])
            box = None
            if n and n >= cfg.min_visible * inside:
                (ys, xs), _ = _clip(x0, y0, mask.shape[0], mask.shape[1], self.width, self.height)
                local = inst[ys, xs] == instance
                rows, cols = np.flatnonzero(local.any(1)), np.flatnonzero(local.any(0))
                bw, bh = int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
                if n >= cfg.min_box_pixels and min(bw, bh) >= cfg.min_box_side:
                    box = (xs.start + int(cols[0]), ys.start + int(rows[0]), bw, bh)
            if box is None:
                drop.append(instance)
                continue
            k = instance - 1
            boxes.append(box)
            labels.append(self.catalog.assets[p.asset].label)
            ids.append(instance)
            visible.append(n)
            full_px.append(full)
            occluded.append(round(1.0 - n / inside, 4) if inside else 0.0)
            assets.append(p.asset)
            colour.append([round(float(hue[k]), 3), round(float(gain[k]), 4), round(float(contrast[k]), 4)])
        if drop:
            inst[np.isin(inst, drop)] = 0
        meta.update({"visible_pixels": visible, "full_pixels": full_px, "occluded_fraction": occluded,
                     "assets": assets, "hue_gain_contrast": colour, "dropped_instances": len(drop),
                     "placed_objects": len(objects)})
        sample = Sample(image=f"frame_{frame:06d}", width=self.width, height=self.height,
                        boxes=np.array(boxes, np.float64).reshape(-1, 4), labels=np.array(labels, np.int64),
                        image_id=frame, instance_ids=tuple(ids), areas=np.array(visible, np.float64), metadata=meta)
        return sample, inst


def _levels(rgba: np.ndarray, top: int) -> list[Image.Image]:
    """Premultiplied (PIL ``RGBa``) copies of a cut-out: at most ``top`` px high, then halving down to 8 px,
    so a paste resizes by at most 2x (cheap, and PIL's bilinear still filters) with no dark or light
    fringe from the colour outside the mask."""
    im = Image.fromarray(rgba, "RGBA").convert("RGBa")
    if im.size[1] > top:
        im = im.resize((max(1, round(im.size[0] * top / im.size[1])), top), Image.Resampling.BOX)
    levels = [im]
    while levels[-1].size[1] >= 16:
        w, h = levels[-1].size
        levels.append(levels[-1].resize((max(1, w // 2), h // 2), Image.Resampling.BOX))
    return levels


def _rotate(im: Image.Image, p: Paste):
    """Rotate a premultiplied sprite by the paste's angle about its centre (bilinear, expanded canvas) and
    place it: (rgb, alpha, x0, y0) with (x0, y0) its top-left frame pixel."""
    if p.angle:
        im = im.rotate(p.angle, Image.Resampling.BILINEAR, expand=True)
    arr = np.asarray(im)
    h, w = arr.shape[:2]
    return arr[..., :3], arr[..., 3], int(round(p.cx - w / 2)), int(round(p.cy - h / 2))


def _clip(x0: int, y0: int, h: int, w: int, width: int, height: int):
    """(frame slices, local slices) of an (h, w) patch at (x0, y0), or None when it is fully outside."""
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(width, x0 + w), min(height, y0 + h)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    return (slice(iy0, iy1), slice(ix0, ix1)), (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))


def _blend(canvas: np.ndarray, inst: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x0: int, y0: int,
           instance: int, offset: np.ndarray | None = None) -> int:
    """Composite a premultiplied patch over the canvas in place (``src + dst * (1 - a) + a * offset``, integer
    arithmetic on the patch's region) and write ``instance`` where alpha >= 128; returns the patch's mask
    pixels inside the frame."""
    clipped = _clip(x0, y0, alpha.shape[0], alpha.shape[1], canvas.shape[1], canvas.shape[0])
    if clipped is None:
        return 0
    (ys, xs), (ly, lx) = clipped
    a = alpha[ly, lx].astype(np.int32)[..., None]
    dst = canvas[ys, xs]
    acc = rgb[ly, lx].astype(np.int32) * 255 + dst.astype(np.int32) * (255 - a) + 127
    if offset is not None:
        acc += a * np.round(offset).astype(np.int32)
    dst[...] = np.clip(acc // 255, 0, 255).astype(np.uint8)
    mask = alpha[ly, lx] >= 128
    np.copyto(inst[ys, xs], np.uint16(instance), where=mask)
    return int(np.count_nonzero(mask))


def _background_crop(path: str, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A random crop (covering 1 / 1.0-1.5 of the shorter scale), flip and resize of a background image."""
    from synthgap.data.images import load_image

    img = load_image(path)
    iw, ih = img.size
    scale = max(width / iw, height / ih) * rng.uniform(1.0, 1.5)
    cw, ch = min(iw, width / scale), min(ih, height / scale)
    x, y = rng.uniform(0, iw - cw), rng.uniform(0, ih - ch)
    flip = rng.random() < 0.5
    img = img.resize((width, height), Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.array(img)
