import numpy as np
import pytest

from synthgap.data import DatasetError, Sample, validate_sample, xywh_to_xyxy, xyxy_to_xywh

LABELS = {1: "a", 2: "b"}


def make(boxes, labels, **kw):
    return Sample(image="x.png", width=100, height=50, boxes=boxes, labels=labels, **kw)


def test_xywh_xyxy_round_trip_and_areas():
    s = make([[10, 5, 20, 10]], [1])
    np.testing.assert_array_equal(s.boxes_xyxy, [[10, 5, 30, 15]])
    np.testing.assert_array_equal(xyxy_to_xywh(xywh_to_xyxy(s.boxes)), s.boxes)
    assert s.box_areas.tolist() == [200.0]
    assert make([[10, 5, 20, 10]], [1], areas=[7.5]).box_areas.tolist() == [7.5]
    assert s.iscrowd.tolist() == [False]


def test_empty_sample_is_valid():
    s = make(np.zeros((0, 4)), [])
    validate_sample(s, LABELS, file="f.json", record=0)
    assert len(s) == 0 and s.boxes.shape == (0, 4)


@pytest.mark.parametrize("box,label,kind", [
    ([10, 5, 0, 10], 1, "box_non_positive"),
    ([10, 5, 20, -1], 1, "box_non_positive"),
    ([95, 5, 20, 10], 1, "box_outside_image"),
    ([-5, 5, 2, 2], 1, "box_outside_image"),
    ([float("nan"), 5, 20, 10], 1, "box_not_finite"),
    ([10, 5, 20, 10], 7, "unknown_label"),
])
def test_validate_names_file_record_field(box, label, kind):
    with pytest.raises(DatasetError) as err:
        validate_sample(make([box], [label]), LABELS, file="caps.json", record="captures[3]")
    e = err.value
    assert e.kind == kind
    assert "caps.json" in str(e) and "captures[3] box 0" in str(e) and e.field in str(e)


def test_border_tolerance_accepts_rounding_overhang():
    validate_sample(make([[90, 40, 10.5, 10.5]], [1]), LABELS, file="f", record=0)
