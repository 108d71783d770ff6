"""Export an evaluated run for the FiftyOne app: ground truth and predictions as COCO files in the layout
FiftyOne's ``COCODetectionDataset`` importer reads (``synthgap convert TEST DST --to fiftyone --predictions
RUN/predictions.json``). FiftyOne itself is not needed to write it (it brings MongoDB).

    DST/data/*            the test images, copied
    DST/labels.json       ground truth (COCO instances; boxes xywh pixels, as everywhere in synthgap;
                          file_name relative to data/, as FiftyOne's importer looks images up)
    DST/predictions.json  the run's detections as a second COCO labels file: the same images and
                          categories, one annotation per detection with its ``score``

`LOADER` is the Python that loads both into one FiftyOne dataset (docs/training.md shows it). The export is
written into a folder beside DST and swapped in when complete (`synthgap.io.storage.replacing_folder`): a
failed export (a bad detection, a full disk) leaves DST as it was.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable, Mapping

from synthgap.io import locks, storage
from synthgap.data.coco import CocoWriter
from synthgap.data.errors import DatasetError
from synthgap.data.sample import Sample

LOADER = '''import fiftyone as fo

export = "DST"  # the folder `synthgap convert ... --to fiftyone` wrote
kwargs = dict(dataset_dir=export, dataset_type=fo.types.COCODetectionDataset, label_types="detections")
dataset = fo.Dataset.from_dir(labels_path=f"{export}/labels.json", label_field="ground_truth", **kwargs)
dataset.merge_samples(fo.Dataset.from_dir(labels_path=f"{export}/predictions.json", label_field="predictions",
                                          **kwargs))  # matched by image file path
dataset.evaluate_detections("predictions", gt_field="ground_truth", eval_key="eval", compute_mAP=True)
session = fo.launch_app(dataset)  # sort by eval_fp / eval_fn to browse the errors
'''


def _check_detection(d, i: int, source: str, image_ids: set) -> dict:
    """One COCO result ``{"image_id", "category_id", "bbox": [x, y, w, h] pixels, "score"}``, checked."""
    if not isinstance(d, dict):
        raise DatasetError("a detection must be an object", file=source, record=f"detection {i}")
    for field in ("image_id", "category_id", "bbox", "score"):
        if field not in d:
            raise DatasetError(f"missing '{field}'", file=source, record=f"detection {i}", field=field)
    if d["image_id"] not in image_ids:
        raise DatasetError(f"image_id {d['image_id']} is not an image of the dataset", file=source,
                           record=f"detection {i}", field="image_id")
    box, score = d["bbox"], d["score"]
    if (not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
        raise DatasetError(f"bbox must be 4 finite numbers [x, y, w, h], got {box!r}", file=source,
                           record=f"detection {i}", field="bbox")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise DatasetError(f"score must be a finite number, got {score!r}", file=source, record=f"detection {i}",
                           field="score")
    return d


def export_run(samples: Iterable[Sample], label_map: Mapping[int, str], detections: list, dst: str,
               source: str = "<detections>") -> dict:
    """Write ``dst`` (see the module docstring) from the test samples and the run's COCO results list:
    all of it, replacing what ``dst`` held, or, on an error, nothing (local paths; object stores are written
    in place).

    Categories the detections use but the label map lacks are added as ``class_<id>``. Returns counts:
    ``{"images", "boxes", "detections"}``.
    """
    if storage.is_local(dst):  # the folders a killed export left beside dst
        locks.remove_stale_temps(os.path.dirname(os.path.realpath(storage.local_path(dst))))
    with storage.replacing_folder(dst, "export") as folder:
        return _export(samples, label_map, detections, folder, source, shown=dst)


def _export(samples: Iterable[Sample], label_map: Mapping[int, str], detections: list, dst: str, source: str,
            shown: str) -> dict:
    """`export_run` into the folder ``dst`` (``shown``: the destination named in messages)."""
    # CocoWriter copies the images into dst/data/; the JSON is written below with file names relative to
    # data/ (FiftyOne's importer looks them up there), so the writer itself is never closed.
    writer = CocoWriter(storage.join(dst, "labels.json"), label_map, copy_images=True, images_dir="data")
    boxes = 0
    for sample in samples:
        writer.add(sample)
        boxes += len(sample)
    if len(writer) == 0:
        raise DatasetError("no images to export", file=shown, kind="empty_dataset")
    gt = writer.to_dict()
    for image in gt["images"]:
        image["file_name"] = image["file_name"].removeprefix("data/")
    image_ids = {image["id"] for image in gt["images"]}
    checked = [_check_detection(d, i, source, image_ids) for i, d in enumerate(detections)]
    categories = list(gt["categories"])
    known = {c["id"] for c in categories}
    for cid in sorted({d["category_id"] for d in checked} - known):
        categories.append({"id": cid, "name": f"class_{cid}", "supercategory": ""})
    annotations = [{"id": k, "image_id": d["image_id"], "category_id": d["category_id"],
                    "bbox": [float(v) for v in d["bbox"]], "area": float(d["bbox"][2] * d["bbox"][3]),
                    "iscrowd": 0, "score": float(d["score"])} for k, d in enumerate(checked, start=1)]
    predictions = {"info": {"description": f"predictions of {source}, written by synthgap"},
                   "images": gt["images"], "annotations": annotations, "categories": categories}
    storage.write_text(storage.join(dst, "labels.json"), json.dumps(gt, separators=(",", ":")) + "\n")
    storage.write_text(storage.join(dst, "predictions.json"), json.dumps(predictions, separators=(",", ":")) + "\n")
    return {"images": len(gt["images"]), "boxes": boxes, "detections": len(annotations)}
