"""Perceptual hashes per second (`synthgap.data.leakage.image_hashes`) on the 37 real shelf photos, against
imagehash's recipe.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_leakage.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_leakage.py --repeat 5

Peer: the recipe of the ``imagehash`` package's ``phash`` (not installed here; its steps written out):
decode the whole image with Pillow, ``convert("L")``, ``resize((32, 32), LANCZOS)``, then the same DCT and
median (numpy). Ours decodes JPEGs at reduced DCT scale (`synthgap.data.images.decode_image`: 1/8 of
1080x1920) and hashes the batch in one ``einsum``. Inputs: the 1080x1920 JPEGs of ../shared/real. Each
figure is the median of ``--repeat`` passes over all photos, one thread, after one warm-up pass; the
bits that differ between the two hashes of each photo say that they hash the same picture.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from synthgap.data.leakage import image_hashes, phash_bits

REPO = Path(__file__).resolve().parents[1]
SHELVES = Path(os.environ.get("SYNTHGAP_SHARED_REAL", REPO.parent / "shared" / "real")) / "grocery-store-shelves" \
    / "project" / "ds0" / "img"


def imagehash_recipe(paths: list[str]) -> np.ndarray:
    greys = []
    for path in paths:
        with Image.open(path) as img:
            greys.append(np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64))
    return phash_bits(np.stack(greys))


def timed(fn, paths: list[str], repeat: int) -> tuple[float, np.ndarray]:
    out = fn(paths)  # warm-up (file cache)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(paths)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed passes over the photos (median reported)")
    args = parser.parse_args()
    paths = [str(p) for p in sorted(SHELVES.glob("*.jpg"))]
    if not paths:
        sys.exit(f"no shelf photos in {SHELVES}")
    ours_s, ours = timed(image_hashes, paths, args.repeat)
    peer_s, peer = timed(imagehash_recipe, paths, args.repeat)
    differ = (ours != peer).sum(axis=1)
    print(f"{len(paths)} photos (1080x1920 JPEG), one thread, median of {args.repeat}")
    print(f"synthgap image_hashes:  {len(paths) / ours_s:7.1f} hashes/s")
    print(f"imagehash recipe:       {len(paths) / peer_s:7.1f} hashes/s")
    print(f"ratio: {peer_s / ours_s:.1f}x faster; bits differing between the two hashes of a photo: "
          f"median {np.median(differ):.0f}, max {differ.max()} of 64")


if __name__ == "__main__":
    main()
