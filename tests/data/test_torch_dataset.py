from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthgap.data import DatasetError, Sample
from synthgap.data.torch_dataset import TorchDetectionDataset, collate_detection


def _image(tmp_path, w=40, h=20, name="img.png"):
    path = tmp_path / name
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)
    return str(path)


def test_targets_follow_torchvision_convention(tmp_path):
    s = Sample(image=_image(tmp_path), width=40, height=20, boxes=[[4, 2, 10, 6], [0, 0, 5, 5]],
               labels=[3, 1], image_id=17, iscrowd=[False, True])
    ds = TorchDetectionDataset([s])
    image, target = ds[0]
    assert image.shape == (3, 20, 40) and image.dtype == torch.float32
    assert abs(float(image.max()) - 128 / 255) < 1e-6
    assert target["boxes"].tolist() == [[4.0, 2.0, 14.0, 8.0]]  # crowd dropped, xyxy
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [3]
    assert int(target["image_id"]) == 17


def test_resize_scales_boxes(tmp_path):
    s = Sample(image=_image(tmp_path), width=40, height=20, boxes=[[4, 2, 10, 6]], labels=[1])
    image, target = TorchDetectionDataset([s], image_size=(80, 10))[0]
    assert image.shape == (3, 10, 80)
    assert target["boxes"].tolist() == [[8.0, 1.0, 28.0, 4.0]]
    assert target["area"].tolist() == [pytest.approx(60.0)]
    images, targets = collate_detection([TorchDetectionDataset([s])[0]] * 2)
    assert len(images) == 2 and len(targets) == 2


def test_missing_and_unreadable_and_mismatched_images(tmp_path):
    missing = Sample(image=str(tmp_path / "nope.png"), width=4, height=4, boxes=np.zeros((0, 4)), labels=[])
    with pytest.raises(DatasetError, match="nope.png.*not found"):
        TorchDetectionDataset([missing])[0]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="bad.png.*cannot be decoded"):
        TorchDetectionDataset([Sample(image=str(bad), width=4, height=4, boxes=np.zeros((0, 4)), labels=[])])[0]
    wrong = Sample(image=_image(tmp_path), width=41, height=20, boxes=np.zeros((0, 4)), labels=[])
    with pytest.raises(DatasetError, match="40x20 but the annotation says 41x20"):
        TorchDetectionDataset([wrong])[0]


def test_boxes_partly_outside_are_clipped_for_training_only(tmp_path):
    # as torchvision's references: clamp to the image, drop boxes left without area
    s = Sample(image=_image(tmp_path), width=40, height=20, boxes=[[30, 15, 20, 6], [-3, -2, 5, 4]],
               labels=[1, 2], areas=[100.0, 12.0])
    _, target = TorchDetectionDataset([s])[0]
    assert target["boxes"].tolist() == [[30.0, 15.0, 40.0, 20.0], [0.0, 0.0, 2.0, 2.0]]
    assert target["labels"].tolist() == [1, 2] and target["area"].tolist() == [100.0, 12.0]
    assert s.boxes.tolist() == [[30, 15, 20, 6], [-3, -2, 5, 4]]  # the Sample keeps them as written


def test_ids_beyond_int64_are_a_clear_error(tmp_path):
    s = Sample(image=_image(tmp_path), width=40, height=20, boxes=[[1, 1, 2, 2]], labels=[1], image_id=2 ** 127)
    with pytest.raises(DatasetError, match="fit int64") as err:
        TorchDetectionDataset([s])[0]
    assert err.value.kind == "id_too_large"


def test_load_image_is_torch_free():
    import subprocess
    import sys

    # issue 13 item 4: the report reads PNGs through synthgap.data.images, without importing torch
    code = "import sys, synthgap.data.images, synthgap.data.coco, synthgap.data.solo, synthgap.data.perception, " \
           "synthgap.report.gallery; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def _truncated_set(tmp_path, n=5, bad=2):
    samples = []
    for i in range(n):
        path = _image(tmp_path, name=f"img{i}.png")
        if i == bad:  # cut in the middle of its pixel data: the header reads, the decode fails
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])
        samples.append(Sample(image=path, width=40, height=20, boxes=[[1, 1, 5, 5]], labels=[1], image_id=i + 1))
    return samples


def test_skip_invalid_skips_and_counts_an_unreadable_image(tmp_path):
    samples = _truncated_set(tmp_path)
    with pytest.raises(DatasetError, match="img2.png.*cannot be decoded"):
        TorchDetectionDataset(samples)[2]  # without skip_invalid: the error, naming the file
    ds = TorchDetectionDataset(samples, skip_invalid=True)
    assert len(ds.skipped_images()) == 0
    ids = [int(ds[i][1]["image_id"]) for i in range(len(ds))]
    assert ids == [1, 2, 4, 4, 5]  # the next readable image takes the broken one's place
    report = ds.skipped_images()
    assert len(report) == 1 and report.errors[0].file == samples[2].image
    assert report.counts() == {"unreadable_image": 1}


def test_skipped_images_are_counted_across_loader_workers(tmp_path):
    ds = TorchDetectionDataset(_truncated_set(tmp_path), skip_invalid=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_detection)
    ids = sorted(int(t["image_id"]) for _, targets in loader for t in targets)
    assert ids == [1, 2, 4, 4, 5]
    assert [e.file for e in ds.skipped_images().errors] == [ds.samples[2].image]  # seen by the parent process


def test_skip_invalid_when_nothing_is_readable(tmp_path):
    missing = Sample(image=str(tmp_path / "gone.png"), width=4, height=4, boxes=np.zeros((0, 4)), labels=[])
    with pytest.raises(DatasetError, match="none of the 1 images can be read"):
        TorchDetectionDataset([missing], skip_invalid=True)[0]
