"""Box drawing shared by TensorBoard, `synthgap predict` and the report gallery."""

import numpy as np
from PIL import Image, ImageDraw

from synthgap.generate.shapes import LABEL_MAP
from synthgap.report.gallery import draw_boxes, draw_detections


def test_draw_detections_keeps_boxes_above_the_threshold(tmp_path):
    image = Image.fromarray(np.zeros((40, 50, 3), np.uint8))
    drawn = np.asarray(draw_detections(image, [
        {"image_id": 0, "category_id": 1, "bbox": [5, 5, 20, 10], "score": 0.9},
        {"image_id": 0, "category_id": 1, "bbox": [30, 20, 10, 10], "score": 0.1}], LABEL_MAP, 0.5))
    assert tuple(drawn[5, 15]) == (230, 30, 30)  # top edge of the kept box
    assert drawn[20:31, 30:41].sum() == 0  # the low-score box is not drawn
    assert np.asarray(image).sum() == 0  # the input image is left alone


def test_draw_boxes_scales_xywh_to_the_drawn_image():
    image = Image.new("RGB", (100, 80))
    draw_boxes(ImageDraw.Draw(image), [[10, 10, 10, 5]], (0, 255, 0), width=1, scale=(2.0, 2.0))
    pixels = np.asarray(image)
    assert tuple(pixels[20, 30]) == (0, 255, 0) and tuple(pixels[30, 40]) == (0, 255, 0)  # corners (20,20)-(40,30)
    assert pixels[:19].sum() == 0 and pixels[32:].sum() == 0
