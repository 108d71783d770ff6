"""synthgap.data.info: what `synthgap info` reports; here, what decoding every image finds."""

from __future__ import annotations

import json

from PIL import Image

from synthgap.data import open_dataset
from synthgap.data.info import dataset_info


def test_decode_counts_exif_turned_images_and_size_mismatches(tmp_path):
    images, entries = tmp_path / "images", []
    images.mkdir()
    for i, (orientation, annotated) in enumerate([(1, (40, 30)), (6, (40, 30)), (8, (30, 40)), (3, (40, 30))], 1):
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = (30, 40) if orientation in (6, 8) else (40, 30)  # upright, every photo is 40 x 30
        Image.new("RGB", stored, (120, 30, 30)).save(images / f"{i}.jpg", exif=exif)
        entries.append({"id": i, "file_name": f"{i}.jpg", "width": annotated[0], "height": annotated[1]})
    doc = {"images": entries, "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    report, problems = dataset_info(open_dataset(str(tmp_path), skip_invalid=True), progress=False, decode=True)
    assert report["images_exif_rotated"] == 3 and report["images_size_mismatch"] == 1
    (mismatch,) = problems
    assert mismatch.file.endswith("3.jpg") and mismatch.kind == "size_mismatch"
    assert "EXIF orientation 8 turns the stored 30x40 pixels upright" in mismatch.message
    plain, _ = dataset_info(open_dataset(str(tmp_path), skip_invalid=True), progress=False)
    assert plain["images_exif_rotated"] is None and plain["images_size_mismatch"] is None
