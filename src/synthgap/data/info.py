"""What is in a dataset and what is wrong with it: the report `synthgap info` prints.

Every record is read; a record that fails is listed as a problem (a `DatasetError` naming its file,
record and field), as is every image file that does not exist.
"""

from __future__ import annotations

import os
import posixpath
import sys
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from synthgap.io import storage
from synthgap.data.dataset import DetectionDataset
from synthgap.data.errors import DatasetError, SkipReport
from synthgap.data.sample import Sample, overhanging


def iter_samples(ds: DetectionDataset, report: SkipReport | None = None, progress: str | None = None
                 ) -> Iterator[Sample]:
    """The dataset's samples in order. A record that fails while read is added to ``report`` and
    skipped, or raised when there is no ``report``. ``progress``: title of a progress bar on stderr
    (shown on a terminal only)."""
    indices = range(len(ds))
    if progress:
        indices = tqdm(indices, total=len(ds), desc=progress, unit="img", file=sys.stderr, disable=None, leave=False)
    for i in indices:
        try:
            yield ds[i]
        except DatasetError as e:
            if report is None:
                raise
            report.add(e)


def missing_images(images: Iterable[tuple[int, str]]) -> list[DatasetError]:
    """DatasetErrors for (image_id, uri) whose file does not exist: one listing per folder, not one
    stat per file."""
    by_folder: dict[str, list[tuple[int, str]]] = {}
    for image_id, uri in images:
        folder = os.path.dirname(uri) if storage.is_local(uri) else posixpath.dirname(uri)
        by_folder.setdefault(folder, []).append((image_id, uri))
    errors = []
    for folder, items in by_folder.items():
        try:
            present = set(storage.listdir(folder or "."))
        except (FileNotFoundError, NotADirectoryError):
            present = set()
        for image_id, uri in items:
            base = os.path.basename(uri) if storage.is_local(uri) else posixpath.basename(uri)
            if base not in present:
                errors.append(DatasetError("image file not found", file=uri, record=f"image_id {image_id}",
                                           field="file_name", kind="missing_image"))
    return errors


def _summary(values) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {"min": float(np.min(values)), "median": float(np.median(values)), "mean": float(np.mean(values)),
            "max": float(np.max(values))}


def problem_dict(e: DatasetError) -> dict:
    return {"kind": e.kind, "file": e.file, "record": None if e.record is None else str(e.record),
            "field": e.field, "message": e.message}


def problem_counts(problems: Iterable[DatasetError]) -> dict[str, int]:
    """Problem kind -> how many, sorted by kind."""
    out: dict[str, int] = {}
    for e in problems:
        out[e.kind] = out.get(e.kind, 0) + 1
    return dict(sorted(out.items()))


def _mismatch(uri: str, image_id: int, size: tuple[int, int], orient: int, width: int, height: int) -> DatasetError:
    message = f"image is {size[0]}x{size[1]} but the annotation says {width}x{height}"
    if orient in (5, 6, 7, 8) and (size[1], size[0]) == (width, height):
        message += (f" (its EXIF orientation {orient} turns the stored {width}x{height} pixels upright: the "
                    "annotation was made on the unturned image)")
    return DatasetError(message, file=uri, record=f"image_id {image_id}", field="width/height", kind="size_mismatch")


def decode_check(images: Iterable[tuple[int, str, int, int]], progress: bool = True) -> tuple[list[DatasetError], int]:
    """(DatasetErrors, images EXIF turns) for (image_id, uri, width, height): an error for each file that does
    not decode completely (missing, 0 bytes, truncated, not an image, too large) or whose decoded size
    (upright, EXIF orientation applied) differs from the annotated one; the count of images whose EXIF
    orientation is not 1 (they are decoded turned or mirrored, `synthgap.data.images`).
    Decodes every pixel: slow (6-15 ms per 640x480 image on a 2-core machine, 4 threads), so `info` does it
    only with ``--decode``."""
    from concurrent.futures import ThreadPoolExecutor

    from synthgap.data.images import check_image_exif, read_image_file

    images = list(images)

    def check(item: tuple[int, str, int, int]) -> tuple[DatasetError | None, int]:
        image_id, uri, width, height = item
        try:
            w, h, orient = check_image_exif(read_image_file(uri), uri)
        except DatasetError as e:
            return DatasetError(e.message, file=uri, record=f"image_id {image_id}", field="image", kind=e.kind), 1
        if (w, h) != (width, height):
            return _mismatch(uri, image_id, (w, h), orient, width, height), orient
        return None, orient

    with ThreadPoolExecutor(max_workers=4) as pool:  # Pillow releases the GIL while decoding
        results = pool.map(check, images)
        if progress:
            results = tqdm(results, total=len(images), desc="decoding", unit="img", file=sys.stderr, disable=None,
                           leave=False)
        results = list(results)
    return [e for e, _ in results if e is not None], sum(orient != 1 for _, orient in results)


def dataset_info(ds: DetectionDataset, progress: bool = True, decode: bool = False) -> tuple[dict, list[DatasetError]]:
    """(report, problems) of a dataset opened with ``skip_invalid=True``: format, images, boxes, classes
    with their box counts, images without boxes, box sizes (pixels; COCO's small/medium/large counts),
    and every problem (records skipped while opening or reading, missing image files; with ``decode``,
    image files that do not decode or whose size differs), also as JSON-ready ``report["problems"]`` and
    ``report["problem_counts"]``; with ``decode``, ``report["images_exif_rotated"]`` and
    ``report["images_size_mismatch"]`` count the images EXIF orientation turns and those whose decoded size
    is not the annotation's (None without ``decode``: only headers would tell, and they are not read). Not problems: ``report["warnings"]`` counts boxes partly outside their
    image (kept as written, clipped for training), ``report["skipped_sensors"]`` the captures of sensors
    that are not RGB cameras (depth, lidar, ...), by kind."""
    report = SkipReport()
    counts: dict[int, int] = {}
    sizes, areas, images = [], [], []
    n_images = n_empty = n_overhanging = 0
    for s in iter_samples(ds, report, "scanning" if progress else None):
        n_images += 1
        images.append((s.image_id, s.image, s.width, s.height))
        if len(s) == 0:
            n_empty += 1
            continue
        n_overhanging += int(overhanging(s.boxes, s.width, s.height).sum())
        labels, n = np.unique(s.labels, return_counts=True)
        for lab, k in zip(labels.tolist(), n.tolist()):
            counts[lab] = counts.get(lab, 0) + k
        sizes.append(s.boxes[:, 2:])
        areas.append(s.box_areas)
    problems = list(ds.skipped.errors) + report.errors
    rotated = None
    if decode:
        found, rotated = decode_check(images, progress)
        problems += found
    else:
        problems += missing_images(i[:2] for i in images)
    if n_images == 0:
        problems.append(DatasetError("the dataset has no usable images", file=str(ds.root), kind="empty_dataset"))
    wh = np.concatenate(sizes) if sizes else np.zeros((0, 2))
    area = np.concatenate(areas) if areas else np.zeros(0)
    names = dict(ds.label_map)
    classes = [{"name": names.get(k, f"<unknown {k}>"), "id": int(k), "count": counts.get(k, 0)}
               for k in sorted(set(names) | set(counts))]
    info = {
        "path": str(ds.root),
        "format": ds.format,
        "split": getattr(ds, "split", None),
        "images": n_images,
        "boxes": int(len(wh)),
        "classes": classes,
        "images_without_boxes": n_empty,
        "box_size_px": {"width": _summary(wh[:, 0]), "height": _summary(wh[:, 1]), "area": _summary(area),
                        # COCO's size buckets: small < 32^2 <= medium < 96^2 <= large (area in pixels^2)
                        "coco_small": int((area < 32 ** 2).sum()),
                        "coco_medium": int(((area >= 32 ** 2) & (area < 96 ** 2)).sum()),
                        "coco_large": int((area >= 96 ** 2).sum())},
        "images_decoded": decode,
        # with decode only (None otherwise): images whose EXIF orientation turns or mirrors them (boxes refer
        # to the upright image), and images whose decoded (upright) size differs from the annotation's
        "images_exif_rotated": rotated,
        "images_size_mismatch": sum(e.kind == "size_mismatch" for e in problems) if decode else None,
        "problems": [problem_dict(e) for e in problems],
        "problem_counts": problem_counts(problems),
        "warnings": {"boxes_partly_outside_image": n_overhanging},
        "skipped_sensors": dict(sorted(ds.skipped_sensors.items())),
    }
    return info, problems
