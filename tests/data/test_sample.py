import numpy as np
import pytest

from synthgap.data import DatasetError, Sample, validate_sample, xywh_to_xyxy, xyxy_to_xywh
from synthgap.data.sample import MAX_IMAGE_SIDE_PX, compact_ids, id_array, overhanging

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
    ([100, 5, 20, 10], 1, "box_outside_image"),
    ([10, -30, 20, 30], 1, "box_outside_image"),
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


def test_box_partly_outside_is_kept_and_flagged_but_no_area_inside_is_an_error():
    # Unity's own COCO converter writes y + h = 251 on a 240 px high image
    s = Sample(image="x.png", width=320, height=240, boxes=[[10, 200, 30, 51], [5, 5, 10, 10]], labels=[1, 1])
    validate_sample(s, LABELS, file="f", record=0)
    assert s.boxes.tolist()[0] == [10, 200, 30, 51]  # kept exactly as written
    assert overhanging(s.boxes, s.width, s.height).tolist() == [True, False]
    assert overhanging([[90, 40, 10.5, 10.5]], 100, 50).tolist() == [False]  # rounding overhang is fine


@pytest.mark.parametrize("width", [2 ** 70, MAX_IMAGE_SIDE_PX + 1])
def test_absurd_image_size_is_a_clear_error(width):
    with pytest.raises(DatasetError) as err:
        validate_sample(Sample(image="x", width=width, height=10, boxes=np.zeros((0, 4)), labels=[]), LABELS,
                        file="f.json", record="images[0]")
    assert (err.value.kind, err.value.field) == ("bad_image_size", "width") and "f.json" in str(err.value)


def test_ids_of_any_size_stay_exact():
    big = uuid_int = 0x1F2E3D4C5B6A79880123456789ABCDEF  # datasetinsights writes uuid.UUID(...).int
    s = Sample(image="x", width=10, height=10, boxes=[[1, 1, 2, 2], [2, 2, 2, 2]], labels=[big, 3],
               image_id=uuid_int)
    assert s.image_id == big and type(s.image_id) is int
    assert s.labels.dtype == object and s.labels.tolist() == [big, 3]
    validate_sample(s, {big: "huge", 3: "small"}, file="f", record=0)
    assert Sample(image="x", width=1, height=1, boxes=np.zeros((0, 4)), labels=[], image_id=np.int64(7)).image_id == 7
    assert id_array([1, 2]).dtype == np.int64
    assert id_array(np.array([2 ** 63], dtype=np.uint64)).tolist() == [2 ** 63]  # no silent int64 wrap
    ids, index = compact_ids([2 ** 100, 5, 2 ** 100, -(2 ** 70)])
    assert ids == [-(2 ** 70), 5, 2 ** 100] and index.dtype == np.int64 and index.tolist() == [2, 1, 2, 0]
