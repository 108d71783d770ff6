"""Lights and camera effects applied to a composited frame (uint8 RGB in, uint8 RGB out).

Synthetic style (SynthDet): one directional light of random colour (each channel >= light_color_min)
and direction, seen as a linear shading gradient; Gaussian blur up to ``blur_sigma_max``; white
noise up to ``noise_max``. Target style is a different model on purpose (the domain gap): white
balance and exposure shifts, an overhead falloff, lens vignetting, defocus blur, signal-dependent
shot noise plus read noise, a tone curve; the writer then stores it as JPEG.
Noise comes from a bank drawn once per renderer and cropped at random offsets (drawing 1 M normals
per frame would cost more than the whole rest of the frame).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageChops, ImageFilter


NOISE_LEVELS = 8  # white-noise strengths pre-rendered as uint8 images (synthetic style)


class NoiseBank:
    """Standard-normal noise a little larger than the frame, drawn once per renderer.

    ``crop(rng)`` is an (h, w, 3) float32 view (target style); ``image(rng, std)`` is a PIL crop of
    the pre-rendered uint8 level nearest to ``std`` (centred on 128) for ImageChops.add.
    """

    def __init__(self, width: int, height: int, seed: int, max_std: float = 5.1, margin: int = 48):
        self.width, self.height, self.margin = width, height, margin
        rng = np.random.default_rng([seed, 0x401CE])
        self.noise = rng.standard_normal((height + margin, width + margin, 3), dtype=np.float32)
        self.stds = np.linspace(0, max_std, NOISE_LEVELS)
        self.levels = [None] + [Image.fromarray((128 + self.noise * s).round().clip(0, 255).astype(np.uint8))
                                for s in self.stds[1:]]

    def _offset(self, rng: np.random.Generator) -> tuple[int, int]:
        y, x = (int(v) for v in rng.integers(0, self.margin + 1, 2))
        return y, x

    def crop(self, rng: np.random.Generator) -> np.ndarray:
        y, x = self._offset(rng)
        return self.noise[y:y + self.height, x:x + self.width]

    def image(self, rng: np.random.Generator, std: float) -> Image.Image | None:
        y, x = self._offset(rng)
        level = self.levels[int(np.abs(self.stds - std).argmin())]
        return None if level is None else level.crop((x, y, x + self.width, y + self.height))


def gaussian_blur(img: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur. Up to sigma 0.8 px a 3-tap kernel [a, 1 - 2a, a] with a = sigma^2 / 2 (same variance)
    is exact enough; PIL's fractional BoxBlur radius r is that kernel with a = r / (2r + 1), and
    several times cheaper than GaussianBlur."""
    if sigma < 0.3:
        return img
    if sigma > 0.8:
        return img.filter(ImageFilter.GaussianBlur(sigma))
    a = sigma * sigma / 2
    return img.filter(ImageFilter.BoxBlur(a / (1 - 2 * a)))


def synthetic_camera(img: Image.Image, rng: np.random.Generator, noise: NoiseBank, *, light_color_min: float,
                     light_rotation_max_deg: float, blur_sigma_max: float, noise_max: float) -> tuple[Image.Image, dict]:
    """Light colour/direction, blur and white noise; all full-frame work is PIL (C) calls."""
    w, h = img.size
    colour = rng.uniform(light_color_min, 1.0, 3).astype(np.float32)
    colour = 0.55 + 0.45 * colour / colour.max()  # tint, not a colour filter: white objects stay readable
    intensity = rng.uniform(0.75, 1.25)
    theta = rng.uniform(0, 2 * math.pi)
    tilt = math.sin(math.radians(rng.uniform(0, light_rotation_max_deg)))
    sigma = rng.uniform(0, blur_sigma_max) * w / 640
    strength = rng.uniform(0, noise_max) * 255
    img = gaussian_blur(img, sigma)
    # the light's gain is linear in x and y: sample it on a 16x12 grid, upsample bilinearly (exact),
    # multiply (gain / top, <= 1) and scale back by top with a lookup table
    gx = np.linspace(-0.5, 0.5, 16, dtype=np.float32) * (0.8 * tilt * math.cos(theta))
    gy = np.linspace(-0.5, 0.5, 12, dtype=np.float32) * (0.8 * tilt * math.sin(theta))
    falloff = gy[:, None] + gx[None, :] + 1.0  # grey: the light's direction; its colour goes in the LUT
    top = float(falloff.max())
    gimg = Image.fromarray((falloff / top * 255).round().astype(np.uint8), "L").resize((w, h), Image.Resampling.BILINEAR)
    img = ImageChops.multiply(img, gimg.convert("RGB"))
    scale = (top * colour * intensity).astype(np.float64)
    lut = np.minimum(255, np.round(np.arange(256)[None, :] * scale[:, None])).astype(int)
    img = img.point(lut.ravel().tolist())
    nimg = noise.image(rng, strength)
    if nimg is not None:
        img = ImageChops.add(img, nimg, 1.0, -128)
    meta = {"light_color": [round(float(c), 4) for c in colour], "light_intensity": round(float(intensity), 4),
            "light_tilt": round(float(tilt), 4), "blur_sigma": round(float(sigma), 4),
            "noise_std": round(float(strength), 4)}
    return img, meta


def target_camera(img: Image.Image, rng: np.random.Generator, noise: NoiseBank) -> tuple[Image.Image, dict]:
    """White balance, exposure, overhead falloff, vignetting, defocus, tone curve, shot + read noise."""
    w, h = img.size
    sigma = rng.uniform(0.5, 1.3) * w / 640
    rgb = np.asarray(gaussian_blur(img, sigma))
    wb = np.array([1 + rng.uniform(-0.08, 0.12), 1.0, 1 + rng.uniform(-0.15, 0.05)], np.float32)
    exposure = rng.uniform(0.8, 1.15)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    yc = y * 2 - 1
    vignette = 1 - rng.uniform(0.25, 0.5) * (0.6 * x * x + 0.6 * yc * yc)
    overhead = 1.08 - rng.uniform(0.1, 0.3) * y
    gain = (vignette * overhead)[..., None] * (wb * exposure)
    out = rgb * gain
    # tone curve: a gentle S-curve in normalised units
    t = out * np.float32(1 / 255)
    np.clip(t, 0, 1, out=t)
    t = t * t * (3 - 2 * t) * 0.35 + t * 0.65
    out = t * 255
    shot = rng.uniform(0.5, 1.1)
    out += noise.crop(rng) * (np.sqrt(out) * np.float32(shot) + np.float32(1.5))
    np.clip(out, 0, 255, out=out)
    meta = {"white_balance": [round(float(c), 4) for c in wb], "exposure": round(float(exposure), 4),
            "blur_sigma": round(float(sigma), 4), "shot_noise": round(float(shot), 4)}
    return Image.fromarray(out.astype(np.uint8)), meta
