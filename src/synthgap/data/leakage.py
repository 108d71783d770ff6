"""Leakage between two sets of images: does the test set hold near-copies of training images?

Frames of one video, photos of one shelf a second apart, the same render at another size: a model tested on
a near-copy of a training image scores what it memorised, not what it learned. `leakage` finds, for every
test image, its nearest training image and says how many test images have a near-copy, in one line:

    9 of 12 test images have a near-copy in the training pool (pHash Hamming distance <= 10 of 64 bits)

Two measures:

``phash`` (default, numpy only): the DCT perceptual hash. The image is decoded small and upright (JPEG's DCT
scaling: 1/8 of 1080x1920 is 135x240, without decoding every pixel), resized to 32x32 pixels, grey; the
8x8 lowest frequencies of its 2-D DCT-II, each compared with their median, are 64 bits. Two images are
near-copies when their hashes differ in at most ``PHASH_THRESHOLD`` = 10 bits (Hamming distance). It finds
*the same picture*: re-encoded, resized, brighter, shifted a little; not another view of the same scene.

``features``: cosine similarity of pooled backbone features (given as a function, e.g.
`synthgap.stats.features.image_features`: a trained detector's FPN levels global-average-pooled), near-copies at
``cosine >= FEATURES_THRESHOLD`` = 0.8. It sees content rather than pixels, so it also finds another frame of
the same shelf; its scale depends on the network: check the threshold against `LeakageReport.distances`.

Thresholds, measured on the 37 real shelf photos of ``shared/real`` (1080x1920 JPEG, frames of 3 videos,
25 / 9 / 3; docs/training.md "Honest splits"): pHash of a photo against its JPEG re-encode (quality 90-20)
0-2 bits, its half or quarter size 0-6, +20 % brightness 0-4, -20 % contrast 0-2, a 3 % shift 2-10, a 5 % crop
8-18; two different photos 16-30 (nearest other photo of the same video 16-28, of another video 20-28: pHash
does not tell a video's frames apart). ImageNet EfficientNet-Lite0 features (1280-d, pre-logits, photos
resized to 320x180): nearest other photo of the same video 0.73-0.93, of another video 0.46-0.70.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from synthgap.data.dataset import DetectionDataset
from synthgap.data.sample import Sample

METHODS = ("phash", "features")
HASH_SIZE = 8            # hash = HASH_SIZE^2 = 64 bits
HASH_SIDE = 32           # the DCT runs on a 32x32 grey image (4x the hash size, as in imagehash's phash)
PHASH_THRESHOLD = 10     # bits of 64: at most this many differ -> near-copy (measured: module docstring)
FEATURES_THRESHOLD = 0.8  # cosine similarity of pooled features at least this -> near-copy (ImageNet Lite0)


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix (n, n): ``D @ x`` is the DCT of a column ``x`` (scipy's ``norm='ortho'``)."""
    k = np.arange(n)[:, None]
    d = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


_DCT = _dct_matrix(HASH_SIDE)


def grey_thumbnail(uri: str, side: int = HASH_SIDE) -> np.ndarray:
    """(side, side) float64 grey image in [0, 255] of the image at ``uri`` (path or URI), upright, decoded at
    reduced size where the format allows (`synthgap.data.images.decode_image`: JPEG DCT scaling, then an
    antialiased resize). A file that does not decode is a DatasetError naming it."""
    from synthgap.data.images import decode_image

    return np.asarray(decode_image(uri, size=(side, side))[0].convert("L"), dtype=np.float64)


def phash_bits(grey: np.ndarray) -> np.ndarray:
    """(n, 64) bool DCT perceptual hashes of a batch of (n, 32, 32) grey images (module docstring)."""
    grey = np.asarray(grey, dtype=np.float64).reshape(-1, HASH_SIDE, HASH_SIDE)
    low = np.einsum("ij,njk,lk->nil", _DCT[:HASH_SIZE], grey, _DCT[:HASH_SIZE])  # D x D^T, 8x8 low corner
    low = low.reshape(len(grey), -1)
    return low > np.median(low, axis=1, keepdims=True)


def image_hashes(images: Sequence[str]) -> np.ndarray:
    """(n, 64) bool pHashes of image files (paths or URIs)."""
    if not len(images):
        return np.zeros((0, HASH_SIZE * HASH_SIZE), dtype=bool)
    return phash_bits(np.stack([grey_thumbnail(uri) for uri in images]))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) numbers of differing bits between bool hashes ``a`` (n, bits) and ``b`` (m, bits)."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return np.rint(a @ (1 - b).T + (1 - a) @ b.T).astype(np.int64)  # exact: integers <= 64 in float32


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) cosine similarities between the rows of ``a`` (n, d) and ``b`` (m, d)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


@dataclass
class LeakageReport:
    """Per test image, its nearest training image: ``nearest`` (index into the pool), ``distance`` (pHash:
    differing bits of 64, smaller is closer; features: cosine similarity, larger is closer) and ``near``
    (a near-copy by ``threshold``). ``distances`` is the whole (test, pool) matrix, to choose a threshold."""

    method: str
    threshold: float
    test_images: list[str]
    pool_images: list[str]
    nearest: np.ndarray
    distance: np.ndarray
    distances: np.ndarray
    pool_name: str = "the training pool"

    @property
    def near(self) -> np.ndarray:
        return self.distance <= self.threshold if self.method == "phash" else self.distance >= self.threshold

    @property
    def rule(self) -> str:
        """The near-copy rule in words."""
        if self.method == "phash":
            return f"pHash Hamming distance <= {self.threshold:g} of {HASH_SIZE * HASH_SIZE} bits"
        return f"feature cosine similarity >= {self.threshold:g}"

    def verdict(self) -> str:
        """One line: ``9 of 12 test images have a near-copy in the training pool (<rule>)``."""
        n, k = len(self.test_images), int(self.near.sum())
        has = "has" if k == 1 else "have"
        return f"{k} of {n} test images {has} a near-copy in {self.pool_name} ({self.rule})"

    def pairs(self) -> list[dict[str, Any]]:
        """Per test image: ``test``, ``nearest`` (the pool image), ``distance``, ``near``; closest first."""
        order = np.argsort(self.distance if self.method == "phash" else -self.distance, kind="stable")
        return [{"test": self.test_images[i], "nearest": self.pool_images[int(self.nearest[i])],
                 "distance": float(self.distance[i]), "near": bool(self.near[i])} for i in order]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the verdict, counts, the rule and every test image's nearest pool image."""
        return {"method": self.method, "threshold": float(self.threshold), "rule": self.rule,
                "verdict": self.verdict(), "test_images": len(self.test_images), "pool_images": len(self.pool_images),
                "near_copies": int(self.near.sum()), "pairs": self.pairs()}


    def text(self, closest: int = 3) -> str:
        """The verdict, then the ``closest`` nearest pairs (file names), for the CLI."""
        lines = [self.verdict()]
        unit = " bits" if self.method == "phash" else ""
        for p in self.pairs()[:closest]:
            lines.append(f"  {_name(p['test'])} -> {_name(p['nearest'])}: {p['distance']:.4g}{unit}"
                         + (" (near-copy)" if p["near"] else ""))
        return "\n".join(lines)


def _name(uri: str) -> str:
    return uri.replace("\\", "/").rsplit("/", 1)[-1]


def _samples(items: Sequence[Sample] | Sequence[str]) -> list[Sample]:
    """Samples as they are; image paths/URIs as samples without boxes (the features only need the image)."""
    return [s if isinstance(s, Sample) else Sample(image=s, width=0, height=0, boxes=np.zeros((0, 4)), labels=[])
            for s in items]


def leakage(pool: Sequence[Sample] | Sequence[str], test: Sequence[Sample] | Sequence[str], *,
            method: str = "phash", threshold: float | None = None,
            features: Callable[[Sequence[Sample]], np.ndarray] | None = None,
            pool_name: str = "the training pool") -> LeakageReport:
    """For each image of ``test`` (samples or image paths/URIs), its nearest image in ``pool`` and whether
    it is a near-copy (module docstring). ``method``: ``phash`` or ``features``, which needs ``features``, a
    function from samples to (n, d) feature rows, e.g.
    ``synthgap.stats.features.image_features(checkpoint_backbone(path))``; ``threshold`` defaults to
    ``PHASH_THRESHOLD`` (bits) / ``FEATURES_THRESHOLD`` (cosine)."""
    if method not in METHODS:
        raise ValueError(f"unknown leakage method {method!r}; one of {', '.join(METHODS)}")
    pool, test = _samples(pool), _samples(test)
    if not pool or not test:
        raise ValueError(f"leakage needs images on both sides, got {len(pool)} in {pool_name} and "
                         f"{len(test)} test images")
    if method == "phash":
        d = hamming(image_hashes([s.image for s in test]), image_hashes([s.image for s in pool]))
        nearest = d.argmin(axis=1)
        default = PHASH_THRESHOLD
    else:
        if features is None:
            raise ValueError("the features method needs a features function (e.g. a trained checkpoint's backbone "
                             "through synthgap.stats.features.image_features)")
        d = cosine(features(test), features(pool))
        nearest = d.argmax(axis=1)
        default = FEATURES_THRESHOLD
    return LeakageReport(method, float(default if threshold is None else threshold), [s.image for s in test],
                         [s.image for s in pool], nearest, d[np.arange(len(d)), nearest], d, pool_name)


def dataset_leakage(pool: str | DetectionDataset, test: str | DetectionDataset, *, pool_format: str | None = None,
                    test_format: str | None = None, features: Callable[[Sequence[Sample]], np.ndarray] | None = None,
                    phash_threshold: float | None = None, features_threshold: float | None = None,
                    pool_name: str | None = None) -> list[LeakageReport]:
    """`leakage` of the dataset ``test`` against the dataset ``pool`` (each a path/URI of any format
    `open_dataset` reads, or an opened dataset or split): the pHash report, then the features one when
    ``features`` is given (see `leakage`). What `synthgap info TEST --leakage POOL` and `synthgap stats POOL
    --compare TEST --leakage` print, and what a study can call on its real training pool and test split
    before it trains."""
    from synthgap.data.dataset import open_dataset

    name = pool_name or str(pool if isinstance(pool, str) else pool.root)
    pool_ds = open_dataset(pool, pool_format) if isinstance(pool, str) else pool
    test_ds = open_dataset(test, test_format) if isinstance(test, str) else test
    reports = [leakage(pool_ds, test_ds, threshold=phash_threshold, pool_name=name)]
    if features is not None:
        reports.append(leakage(pool_ds, test_ds, method="features", threshold=features_threshold, features=features,
                               pool_name=name))
    return reports
