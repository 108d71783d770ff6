"""Reduced-scale JPEG decode (`synthgap.data.images.load_image(uri, max_side=...)`) vs a plain decode + resize.

    .venv/bin/python benchmarks/bench_decode.py                  # the shelf photo and a 12 MP one, to 640 px
    .venv/bin/python benchmarks/bench_decode.py --repeat 5 --max-side 640 480

Peer: Pillow's full decode then ``resize(..., BILINEAR)`` to the same size (what decoding without
``draft`` costs). Both contenders produce the same RGB image size, the long side ``--max-side``
pixels. The ``loader`` columns time what the training loader does per image, before and after
(`synthgap.data.torch_dataset`): full decode, float tensor, then the model's own bilinear resize
(``torch.nn.functional.interpolate``, as torchvision's ``GeneralizedRCNNTransform``), against the reduced
decode and a float tensor of the small image. Inputs: one of the real shelf photos (1080x1920 JPEG, ../shared/real) and a 3024x4032 JPEG made
from it (upscaled, quality 90, written to a temp folder). Each figure is the median of ``--repeat``
runs of one decode, one thread, after one warm-up run; the mean absolute difference between the two
outputs (0-255 levels) says that they are the same picture.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from synthgap.data.images import load_image

REPO = Path(__file__).resolve().parents[1]
SHELVES = Path(os.environ.get("SYNTHGAP_SHARED_REAL", REPO.parent / "shared" / "real")) / "grocery-store-shelves" \
    / "project" / "ds0" / "img"


def plain(path: str, max_side: int) -> Image.Image:
    with Image.open(path) as img:
        img = img.convert("RGB")
    scale = max_side / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)


def loader_before(path: str, max_side: int):
    import torch

    image = np.asarray(load_image(path), dtype=np.uint8)
    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div_(255.0)
    scale = max_side / max(tensor.shape[1:])
    return torch.nn.functional.interpolate(tensor[None], scale_factor=scale, mode="bilinear",
                                           recompute_scale_factor=True, align_corners=False)[0]


def loader_after(path: str, max_side: int):
    import torch

    image = np.asarray(load_image(path, max_side=max_side), dtype=np.uint8)
    return torch.from_numpy(image.copy()).permute(2, 0, 1).float().div_(255.0)


def median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up: file cache, libjpeg tables
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per contender and image (median)")
    parser.add_argument("--max-side", type=int, nargs="+", default=[640],
                        help="long side(s) of the output, pixels (default 640, the training size)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    photos = sorted(SHELVES.glob("*.jpg"))
    if not photos:
        print(f"no shelf photos in {SHELVES} (they live in ../shared/real beside the repo)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "shelf_3024x4032.jpg"
        with Image.open(photos[0]) as img:
            img.convert("RGB").resize((3024, 4032), Image.Resampling.BICUBIC).save(big, quality=90)
        print(f"decode + resize, median of {args.repeat} runs, one thread")
        print(f"{'image':<12} {'to':>6} {'plain':>10} {'draft':>10} {'ratio':>7} {'mean |diff|':>12}"
              f" {'loader before':>14} {'after':>9} {'ratio':>7}")
        for path in (photos[0], big):
            with Image.open(path) as img:
                size = f"{img.width}x{img.height}"
            for side in args.max_side:
                t_plain = median_seconds(lambda p=str(path), n=side: plain(p, n), args.repeat)
                t_draft = median_seconds(lambda p=str(path), n=side: load_image(p, max_side=n), args.repeat)
                a = np.asarray(plain(str(path), side), float)
                b = np.asarray(load_image(str(path), max_side=side), float)
                assert a.shape == b.shape, (a.shape, b.shape)
                t_before = median_seconds(lambda p=str(path), n=side: loader_before(p, n), args.repeat)
                t_after = median_seconds(lambda p=str(path), n=side: loader_after(p, n), args.repeat)
                print(f"{size:<12} {side:>4}px {t_plain * 1e3:>8.1f}ms {t_draft * 1e3:>8.1f}ms "
                      f"{t_plain / t_draft:>6.1f}x {np.abs(a - b).mean():>12.2f} {t_before * 1e3:>12.1f}ms "
                      f"{t_after * 1e3:>7.1f}ms {t_before / t_after:>6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
