"""TensorBoard logs for a local folder or a URI, and what a validation writes there (`log_validation`).

Event files are appended to while a run goes on, which object stores cannot do: a remote
``tb_log_dir`` is written to a temporary local folder and copied there (`sync`), and the copy is
refreshed each time `sync` runs (each epoch during training) and once more on `close`.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import defaultdict
from typing import Sequence

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from synthgap.io import storage
from synthgap.data import Sample
from synthgap.data.images import load_image
from synthgap.data.draw import draw_detections


def open_writer(tb_log_dir: str):
    """A ``SummaryWriter`` writing to ``tb_log_dir`` itself (local) or to a temporary folder (URI)."""
    local = storage.local_path(tb_log_dir) if storage.is_local(tb_log_dir) else tempfile.mkdtemp("-tb")
    return SummaryWriter(local)


def sync(writer, tb_log_dir: str) -> None:
    """Copy the writer's event files to a remote ``tb_log_dir`` (nothing to do for a local one)."""
    writer.flush()
    if storage.is_local(tb_log_dir):
        return
    local = writer.log_dir
    for root, _, files in os.walk(local):
        for name in files:
            path = os.path.join(root, name)
            storage.copy(path, storage.join(tb_log_dir, os.path.relpath(path, local).replace(os.sep, "/")))


def close(writer, tb_log_dir: str) -> None:
    """Close the writer, copy its files to a remote ``tb_log_dir`` and drop the temporary folder."""
    writer.close()
    sync(writer, tb_log_dir)
    if not storage.is_local(tb_log_dir):
        shutil.rmtree(writer.log_dir, ignore_errors=True)


def log_validation(writer, result, samples: Sequence[Sample], detections: list[dict], epoch: int, *,
                   images: int = 4, score_thresh: float = 0.5) -> None:
    """A validation's `MetricsResult` (COCO) at ``epoch``: ``val/<stat>``, ``val_per_class_AP/<class>``, PR
    curves at IoU 0.5 (``val_pr_iou50/<class>``) and the first ``images`` samples with their predictions
    (red, scoring at least ``score_thresh``) over the ground truth (green), ``val_images/<k>``."""
    for name, value in result.stats.items():
        writer.add_scalar(f"val/{name}", float(value), epoch)
    names = {k: d["name"] for k, d in result.per_class.items()}
    for label, ap in result.per_class_ap().items():
        if math.isfinite(ap):
            writer.add_scalar(f"val_per_class_AP/{names[label]}", ap, epoch)
    for label, (recall, precision) in result.pr_curves(0.5).items():
        n = len(recall)
        zeros = np.zeros(n)
        # the PR plugin reads points in threshold order (recall falling): reverse COCO's recall grid
        writer.add_pr_curve_raw(f"val_pr_iou50/{names.get(label, label)}", zeros, zeros, zeros, zeros,
                                precision[::-1], recall[::-1], epoch, num_thresholds=n)
    by_image = defaultdict(list)
    for d in detections:
        by_image[d["image_id"]].append(d)
    for k, sample in enumerate(samples[:images]):
        drawn = draw_detections(load_image(sample.image), by_image[int(sample.image_id)], names, score_thresh,
                                ground_truth=sample)
        writer.add_image(f"val_images/{k}", np.asarray(drawn), epoch, dataformats="HWC")
