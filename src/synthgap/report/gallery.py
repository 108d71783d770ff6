"""Gallery images: true positives, false positives and misses in distinct colours, drawn with
`synthgap.data.draw.draw_boxes` (which also draws predictions over ground truth for TensorBoard and
`synthgap predict`).

Status comes from the metrics' per-image matches (`synthgap.metrics.Matches`) at IoU 0.5. Only
detections scoring at least ``score_thresh`` are drawn; a ground-truth box counts as a miss when no
drawn detection matched it (COCO matching is greedy by score, so the matches of the drawn detections
are the same as with the low-scoring ones removed).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Mapping

from PIL import Image, ImageDraw

from synthgap.data import Sample
from synthgap.data.draw import draw_boxes, draw_detections  # noqa: F401 (draw_detections re-exported)
from synthgap.data.images import load_image

COLORS = {"tp": (0, 190, 60), "fp": (235, 30, 30), "miss": (255, 170, 0), "ignored": (150, 150, 150)}
THUMB_WIDTH = 400  # pixels; images are scaled to this width (at most 3x up) before drawing


@dataclass
class GalleryImage:
    png: bytes
    image: str
    tp: int
    fp: int
    miss: int


def draw_matches(sample: Sample, matches, detections: list[dict], label_map: Mapping[int, str],
                 score_thresh: float = 0.5, iou: float = 0.5) -> GalleryImage:
    """The sample's image (scaled to THUMB_WIDTH wide) with TP / FP / miss boxes drawn."""
    image = load_image(sample.image).convert("RGB")
    scale = min(3.0, THUMB_WIDTH / image.width)
    if scale != 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    to_image = (image.width / sample.width, image.height / sample.height)
    draw = ImageDraw.Draw(image)
    per = matches.for_image(int(sample.image_id), iou)
    counts = {"tp": 0, "fp": 0, "miss": 0}
    drawn_rows = set()
    for d in per["detections"]:
        det = detections[d["index"]]
        if d["score"] < score_thresh or d["status"] not in ("tp", "fp"):
            continue
        drawn_rows.add(d["index"])
        counts[d["status"]] += 1
        labels = [f"{label_map.get(d['category_id'], d['category_id'])} {d['score']:.2f}"] \
            if d["status"] == "fp" else None
        draw_boxes(draw, [det["bbox"]], COLORS[d["status"]], labels=labels, scale=to_image)
    for g in per["ground_truth"]:
        if g["status"] == "ignored":
            draw_boxes(draw, [g["bbox"]], COLORS["ignored"], width=1, scale=to_image)
        elif g["det"] < 0 or g["det"] not in drawn_rows:
            counts["miss"] += 1
            draw_boxes(draw, [g["bbox"]], COLORS["miss"], scale=to_image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return GalleryImage(buf.getvalue(), sample.image, counts["tp"], counts["fp"], counts["miss"])


def draw_ground_truth(sample: Sample, label_map: Mapping[int, str], color=(0, 190, 60)) -> bytes:
    """PNG of the sample's image (scaled to THUMB_WIDTH wide) with its ground-truth boxes and class names:
    the report's side-by-side frames of every dataset (the domain gap at a glance)."""
    image = load_image(sample.image).convert("RGB")
    scale = min(3.0, THUMB_WIDTH / image.width)
    if scale != 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    names = [str(label_map.get(int(k), k)) for k in sample.labels.tolist()]
    draw_boxes(ImageDraw.Draw(image), sample.boxes.tolist(), color, labels=names, text_color=(255, 255, 0),
               scale=(image.width / sample.width, image.height / sample.height))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
