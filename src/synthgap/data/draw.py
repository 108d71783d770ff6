"""Boxes drawn on images (xywh pixels of the annotated image): predictions over ground truth for
TensorBoard and `synthgap predict`, and the primitive the report's gallery draws with. In the data layer
so that the engine and the report share one drawing without the engine importing the report."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from PIL import Image, ImageDraw

from synthgap.data.sample import Sample


def draw_boxes(draw: ImageDraw.ImageDraw, boxes: Iterable[Sequence[float]], color, *, width: int = 2,
               labels: Sequence[str] | None = None, text_color=None, scale: tuple[float, float] = (1.0, 1.0)) -> None:
    """Rectangles for xywh boxes (pixels of the annotated image; ``scale`` = (x, y) factors to the drawn
    image), each followed by its label (if any) at its top-left corner."""
    sx, sy = scale
    for i, (x, y, w, h) in enumerate(boxes):
        draw.rectangle([x * sx, y * sy, (x + w) * sx, (y + h) * sy], outline=color, width=width)
        if labels is not None:
            draw.text((x * sx + 2, y * sy + 1), labels[i], fill=color if text_color is None else text_color)


def draw_detections(image: Image.Image, detections: Iterable[Mapping], label_map: Mapping[int, str],
                    score_thresh: float = 0.5, ground_truth: Sample | None = None) -> Image.Image:
    """A copy of ``image`` with predicted boxes (red, labelled with class and score) and optional
    ground-truth boxes (green). Boxes are xywh pixels of this image."""
    image = image.convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    if ground_truth is not None:
        draw_boxes(draw, ground_truth.boxes.tolist(), (0, 200, 0))
    for det in detections:
        if det["score"] >= score_thresh:
            name = label_map.get(det["category_id"], str(det["category_id"]))
            draw_boxes(draw, [det["bbox"]], (230, 30, 30), labels=[f"{name} {det['score']:.2f}"],
                       text_color=(255, 255, 0))
    return image
