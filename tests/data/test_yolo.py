"""`synthgap convert --to yolo`: Ultralytics' layout, read back and (where ultralytics imports) checked by
ultralytics' own dataset checker."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from synthgap.generate.shapes import LABEL_MAP, make_coco
from synthgap.cli import main
from synthgap.data import DatasetError, Sample, detect_format, open_dataset
from synthgap.data.yolo import YoloWriter, yolo_lines


def _read_labels(path) -> np.ndarray:
    rows = [line.split() for line in path.read_text().splitlines()]
    return np.array(rows, dtype=float).reshape(-1, 5)


def test_convert_reads_back_exactly(tmp_path):
    src = make_coco(tmp_path / "src", 5, size=(96, 80), seed=3, max_objects=3)
    val = make_coco(tmp_path / "val", 2, size=(96, 80), seed=4)
    dst = tmp_path / "yolo"
    for data, subset in ((src, "train"), (val, "val")):
        result = CliRunner().invoke(main, ["convert", data, str(dst), "--to", "yolo", "--subset", subset])
        assert result.exit_code == 0, result.output
    data_yaml = yaml.safe_load((dst / "data.yaml").read_text())
    assert data_yaml == {"names": {0: "red", 1: "green", 2: "blue"}, "train": "images/train",
                         "val": "images/val"}
    ids = sorted(LABEL_MAP)
    for data, subset in ((src, "train"), (val, "val")):
        ds = open_dataset(data)
        assert len(list((dst / "images" / subset).iterdir())) == len(ds)
        for sample in ds:
            name = sample.image.rsplit("/", 1)[-1]
            assert (dst / "images" / subset / name).read_bytes() == open(sample.image, "rb").read()
            rows = _read_labels(dst / "labels" / subset / (name.rsplit(".", 1)[0] + ".txt"))
            cls, cx, cy, w, h = rows.T
            assert [ids[int(c)] for c in cls] == sample.labels.tolist()
            back = np.stack([(cx - w / 2) * sample.width, (cy - h / 2) * sample.height, w * sample.width,
                             h * sample.height], axis=1)
            np.testing.assert_allclose(back, sample.boxes, atol=1e-4)  # 6 decimals of a fraction, in pixels


def test_boxes_are_clipped_and_outside_boxes_dropped():
    sample = Sample(image="x.png", width=100, height=50, boxes=[[-10, 10, 30, 20], [90, 40, 20, 20], [0, 0, 100, 50]],
                    labels=[5, 7, 5], image_id=1)
    lines, dropped = yolo_lines(sample, {5: 0, 7: 1})
    assert dropped == 0
    assert lines == ["0 0.100000 0.400000 0.200000 0.400000", "1 0.950000 0.900000 0.100000 0.200000",
                     "0 0.500000 0.500000 1.000000 1.000000"]
    outside = Sample(image="x.png", width=100, height=50, boxes=[[100.5, 0, 5, 5]], labels=[5], image_id=2)
    assert yolo_lines(outside, {5: 0}) == ([], 1)


def test_errors_name_the_file(tmp_path):
    src = make_coco(tmp_path / "src", 1, size=(64, 48))
    sample = open_dataset(src)[0]
    Image.new("RGB", (10, 10)).save(sample.image)  # the annotation says 64x48
    with pytest.raises(DatasetError, match="annotated as 64x48") as err:
        YoloWriter(str(tmp_path / "out"), LABEL_MAP).add(sample)
    assert err.value.file == sample.image
    writer = YoloWriter(str(tmp_path / "out2"), {1: "red"})
    writer.close()
    with pytest.raises(DatasetError, match="names .* differ"):
        YoloWriter(str(tmp_path / "out2"), {1: "blue"})
    result = CliRunner().invoke(main, ["convert", src, str(tmp_path / "o3"), "--to", "yolo", "--subset", "../x"])
    assert result.exit_code == 2 and "--subset" in result.output


def test_ultralytics_checker_accepts_it(tmp_path, monkeypatch):
    """Ultralytics' own checks: check_det_dataset (data.yaml) and verify_image_label (each label file)."""
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics-settings"))  # it writes settings on import
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    data_utils = pytest.importorskip("ultralytics.data.utils", reason="ultralytics is not installed (see docs)")
    src = make_coco(tmp_path / "src", 4, size=(96, 80), seed=5, max_objects=3)
    dst = tmp_path / "yolo"
    for subset in ("train", "val"):
        assert CliRunner().invoke(main, ["convert", src, str(dst), "--to", "yolo", "--subset", subset]).exit_code == 0
    info = data_utils.check_det_dataset(str(dst / "data.yaml"), autodownload=False)
    assert info["nc"] == 3 and info["names"] == {0: "red", 1: "green", 2: "blue"}
    for image in sorted((dst / "images" / "train").iterdir()):
        label = dst / "labels" / "train" / (image.stem + ".txt")
        out = data_utils.verify_image_label((str(image), str(label), "", False, 3, 0, 0, False))
        nm, nf, ne, nc, msg = out[-5:]
        assert (nm, nf, ne, nc) == (0, 1, 0, 0), msg
        np.testing.assert_allclose(out[1], _read_labels(label), atol=1e-6)


# -- the reader -----------------------------------------------------------------------------------------------

def test_writer_output_reads_back_equal(tmp_path):
    src = make_coco(tmp_path / "src", 6, size=(96, 80), seed=7, max_objects=4)
    val = make_coco(tmp_path / "val", 2, size=(96, 80), seed=8)
    dst = tmp_path / "yolo"
    for data, subset in ((src, "train"), (val, "val")):
        assert CliRunner().invoke(main, ["convert", data, str(dst), "--to", "yolo", "--subset", subset]).exit_code == 0
    assert detect_format(str(dst)) == "yolo"
    ds = open_dataset(str(dst))
    assert ds.format == "yolo" and len(ds) == 8 and ds.label_map == LABEL_MAP  # the original ids, from the comment
    assert len(open_dataset(str(dst / "data.yaml"), split="val")) == 2
    for data, subset in ((src, "train"), (val, "val")):
        back = {s.image.rsplit("/", 1)[-1]: s for s in open_dataset(str(dst), split=subset)}
        for sample in open_dataset(data):
            got = back[sample.image.rsplit("/", 1)[-1]]
            assert (got.width, got.height) == (sample.width, sample.height)  # from the image header
            assert got.labels.tolist() == sample.labels.tolist() and got.metadata["split"] == subset
            np.testing.assert_allclose(got.boxes, sample.boxes, atol=1e-3)  # 6 decimals of a fraction, in pixels


def _yolo(root, rows_by_image: dict, yaml_text: str, layout="ultralytics", split="train", size=(100, 50)):
    """Images of ``size`` px and their label files, in Ultralytics' images/<split> or Roboflow's <split>/images."""
    images = root / ("images" if layout == "ultralytics" else split) / (split if layout == "ultralytics" else "images")
    labels = images.parent.parent / "labels" / split if layout == "ultralytics" else images.parent / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for name, rows in rows_by_image.items():
        Image.new("RGB", size).save(images / name)
        if rows is not None:
            (labels / (name.rsplit(".", 1)[0] + ".txt")).write_text("".join(r + "\n" for r in rows))
    (root / "data.yaml").write_text(yaml_text)
    return str(root)


def test_roboflow_layout_names_list_and_segmentation_rows(tmp_path):
    yaml_text = "train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['can', 'box']\n"
    root = _yolo(tmp_path / "rf", {"a.jpg": ["1 0.5 0.5 0.2 0.4", "0 0.1 0.2 0.3 0.2 0.3 0.6 0.1 0.6"],
                                   "b.jpg": None}, yaml_text, layout="roboflow")
    _yolo(tmp_path / "rf", {"c.jpg": []}, yaml_text, layout="roboflow", split="valid")
    ds = open_dataset(root)
    assert ds.label_map == {1: "can", 2: "box"} and len(ds) == 3
    a = ds[0]
    assert a.labels.tolist() == [2, 1]
    np.testing.assert_allclose(a.boxes, [[40, 15, 20, 20], [10, 10, 20, 20]])  # polygon -> its extent
    assert a.masks[0] is None and a.masks[1].to_array(100, 50)[20, 20] and not a.masks[1].to_array(100, 50)[5, 5]
    assert len(ds[1]) == 0  # no label file: an image without objects
    assert [s.metadata["split"] for s in ds] == ["train", "train", "val"]


def test_txt_lists_and_dict_names(tmp_path):
    root = tmp_path / "lists"
    _yolo(root, {"a.png": ["0 0.5 0.5 0.5 0.5"], "b.png": ["1 0.5 0.5 0.5 0.5"]}, "")
    (root / "train.txt").write_text("./images/train/a.png\n")
    (root / "val.txt").write_text(f"{root}/images/train/b.png\n")
    (root / "data.yaml").write_text(f"path: {root}\ntrain: train.txt\nval: val.txt\nnames:\n  0: red\n  1: blue\n")
    train, val = open_dataset(str(root), split="train"), open_dataset(str(root), split="val")
    assert [s.labels.tolist() for s in train] == [[1]] and [s.labels.tolist() for s in val] == [[2]]
    assert train[0].image_id == 0 and val[0].image_id == 1  # positions in "all"
    with pytest.raises(DatasetError, match="unknown split 'test'; available: all, train, val"):
        open_dataset(str(root), split="test")


@pytest.mark.parametrize("row, field, message", [
    ("0 0.5 1.2 0.1 0.1", "cy", "cy = 1.2 is outside 0..1"),
    ("0 0.5 0.5 0.1", "columns", "4 columns"),
    ("0 0.5 0.5 0.1 0.1 0.3", "columns", "6 columns"),
    ("0 0.5 abc 0.1 0.1", "cy", "'abc' is not a number"),
    ("3 0.5 0.5 0.1 0.1", "class", "class 3 is not one of the 2 class indices"),
    ("0.5 0.5 0.5 0.1 0.1", "class", "class 0.5"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, field, message):
    root = _yolo(tmp_path / "bad", {"a.png": ["1 0.5 0.5 0.2 0.2", row]}, "train: images/train\nnames: [a, b]\n")
    with pytest.raises(DatasetError) as err:
        open_dataset(root)[0]
    e = err.value
    assert e.file.endswith("labels/train/a.txt") and e.record == "line 2" and e.field == field
    assert message in str(e)
    ds = open_dataset(root, skip_invalid=True)  # the image is left out, and listed
    assert len(ds) == 0 and len(ds.skipped) == 1


def test_zero_width_rows_are_left_out_alone_under_skip_invalid(tmp_path):
    root = _yolo(tmp_path / "z", {"a.png": ["0 0.5 0.5 0.2 0.2", "0 0.5 0.5 0 0.1"]}, "train: images/train\nnames: [a]\n")
    with pytest.raises(DatasetError, match="zero or negative size"):
        open_dataset(root)[0]
    ds = open_dataset(root, skip_invalid=True)
    assert len(ds) == 1 and len(ds[0]) == 1 and ds.skipped.counts() == {"box_non_positive": 1}


def test_sizes_come_from_the_upright_image(tmp_path):
    root = _yolo(tmp_path / "exif", {"a.jpg": ["0 0.25 0.5 0.5 1.0"]}, "train: images/train\nnames: [a]\n")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 50 x 100, shown 100 x 50: the normalised coordinates refer to what is shown
    Image.new("RGB", (50, 100)).save(tmp_path / "exif" / "images" / "train" / "a.jpg", exif=exif)
    s = open_dataset(root)[0]
    assert (s.width, s.height) == (100, 50) and s.boxes.tolist() == [[0.0, 0.0, 50.0, 50.0]]


def test_named_splits_serve_training(tmp_path):
    from synthgap.data.splits import open_split, shared_images

    root = _yolo(tmp_path / "s", {"a.png": ["0 0.5 0.5 0.2 0.2"], "b.png": []}, "")
    _yolo(tmp_path / "s", {"c.png": []}, "", split="val")
    (tmp_path / "s" / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a]\n")
    train = open_split(root, role="train")
    val = open_split(root, role="val")
    assert (len(train), len(val)) == (2, 1) and shared_images(train, val) == 0
