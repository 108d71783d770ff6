"""synthgap.data.convert: the library side of `synthgap convert` (writers, the destination lock, skipped records)."""

import json
import os

import pytest

from synthgap.data import open_dataset
from synthgap.data.convert import convert_dataset
from synthgap.errors import ConfigError, DatasetError
from synthgap.generate.shapes import make_coco
from synthgap.io.locks import FolderLockedError, lock_folder


@pytest.fixture
def coco(tmp_path):
    return make_coco(tmp_path / "src", 4, max_objects=2)


def test_coco_to_yolo_writes_normalised_rows_and_counts_them(coco, tmp_path):
    ds = open_dataset(coco)
    done = convert_dataset(ds, coco, str(tmp_path / "yolo"), "yolo", subset="val")
    assert (done.to, done.images, done.subset) == ("yolo", 4, "val")
    assert done.boxes == sum(len(s) for s in ds) and done.skipped == []
    rows = [line.split() for f in sorted(os.listdir(tmp_path / "yolo" / "labels" / "val"))
            for line in (tmp_path / "yolo" / "labels" / "val" / f).read_text().splitlines()]
    assert len(rows) == done.boxes
    assert all(0 <= float(v) <= 1 for row in rows for v in row[1:])
    assert os.path.exists(done.yaml_path)


def test_an_image_that_does_not_decode_is_counted_with_skip_invalid_and_stops_without(coco, tmp_path):
    first = json.loads((tmp_path / "src" / "annotations.json").read_text())["images"][0]["file_name"]
    (tmp_path / "src" / "images" / os.path.basename(first)).write_bytes(b"")  # 0 bytes: not an image
    done = convert_dataset(open_dataset(coco, skip_invalid=True), coco, str(tmp_path / "out"), "coco",
                           copy_images=True, skip_invalid=True)
    assert done.images == 3 and len(done.skipped) == 1
    assert len(json.loads(open(done.path).read())["images"]) == 3
    with pytest.raises(DatasetError):
        convert_dataset(open_dataset(coco), coco, str(tmp_path / "out2"), "coco", copy_images=True)
    assert not os.path.exists(tmp_path / "out2" / "annotations.json")  # nothing half-written


def test_never_writes_into_its_source(coco):
    with pytest.raises(ConfigError, match="is, or is inside, SRC"):
        convert_dataset(open_dataset(coco), coco, os.path.join(coco, "converted"), "yolo")


def test_a_second_writer_of_the_destination_is_refused(coco, tmp_path):
    dst = str(tmp_path / "out")
    with lock_folder(dst, "another convert"):
        with pytest.raises(FolderLockedError):
            convert_dataset(open_dataset(coco), coco, dst, "coco")
    assert not os.path.exists(os.path.join(dst, "annotations.json"))
    assert convert_dataset(open_dataset(coco), coco, dst, "coco").images == 4  # free again


def test_a_fiftyone_export_never_replaces_a_folder_holding_its_source_or_predictions(coco, tmp_path):
    """The export swaps in a whole new DST: a DST that holds SRC or the predictions would delete them."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions.json").write_text("[]")
    (run / "metrics_coco.json").write_text("{}")
    ds = open_dataset(coco)
    with pytest.raises(ConfigError, match="holds --predictions"):
        convert_dataset(ds, coco, str(run), "fiftyone", predictions=str(run / "predictions.json"))
    with pytest.raises(ConfigError, match="holds SRC"):
        convert_dataset(ds, coco, str(tmp_path), "fiftyone", predictions=str(run / "predictions.json"))
    assert (run / "metrics_coco.json").exists() and os.path.exists(coco)
    done = convert_dataset(ds, coco, str(tmp_path / "fo"), "fiftyone", predictions=str(run / "predictions.json"))
    assert done.images == 4 and done.detections == 0
