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
from synthgap.data import DatasetError, Sample, open_dataset
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
