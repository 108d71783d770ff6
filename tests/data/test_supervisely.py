"""Supervisely projects: tiny ones written here (every geometry, labels from classes or tags, defects) and the
two real demo projects of ../shared/real."""

from __future__ import annotations

import base64
import io
import json
import zlib

import numpy as np
import pytest
from PIL import Image

from synthgap.data import DatasetError, detect_format, open_dataset
from synthgap.data.info import dataset_info
from synthgap.data.masks import BitmapMask, PolygonMask, mask_bbox
from synthgap.data.supervisely import SuperviselyDataset
from tests.helpers.real import shared_real


def _bitmap_data(bits: np.ndarray) -> str:
    """Supervisely's bitmap.data: base64 of the zlib-compressed PNG of a bool mask."""
    buf = io.BytesIO()
    Image.fromarray(bits.astype(np.uint8) * 255, "L").save(buf, format="PNG")
    return base64.b64encode(zlib.compress(buf.getvalue())).decode()


def _rect(x1, y1, x2, y2, oid, cls="box", tags=()):
    return {"id": oid, "classTitle": cls, "geometryType": "rectangle", "tags": list(tags),
            "points": {"exterior": [[x1, y1], [x2, y2]], "interior": []}}


META = {"classes": [{"title": "box", "shape": "rectangle"}, {"title": "can", "shape": "polygon"},
                    {"title": "bag", "shape": "bitmap"}],
        "tags": [{"name": "sku", "value_type": "oneof_string", "values": ["b-2", "a-1"]},
                 {"name": "1000591", "value_type": "none"}, {"name": "1000592", "value_type": "none"}],
        "projectType": "images"}


def _project(tmp_path, datasets: dict, meta=META, size=(64, 48)) -> str:
    """A project with ``datasets`` = {name: {image name: objects}}; every image is size[0] x size[1] px."""
    root = tmp_path / "project"
    root.mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps(meta))
    for ds, images in datasets.items():
        (root / ds / "img").mkdir(parents=True)
        (root / ds / "ann").mkdir()
        for name, objects in images.items():
            Image.new("RGB", size, (90, 90, 90)).save(root / ds / "img" / name)
            doc = {"description": "", "tags": [], "size": {"height": size[1], "width": size[0]}, "objects": objects}
            (root / ds / "ann" / f"{name}.json").write_text(json.dumps(doc))
    return str(root)


def test_every_geometry_gives_its_box_and_mask(tmp_path):
    bits = np.zeros((10, 12), bool)
    bits[2:7, 3:11] = True  # set pixels: columns 3..10, rows 2..6
    hole = [[12, 12], [16, 12], [16, 16], [12, 16]]
    objects = [
        _rect(30, 20, 10, 5, 11),  # corners in either order
        {"id": 12, "classTitle": "can", "geometryType": "polygon", "tags": [],
         "points": {"exterior": [[8, 8], [24, 8], [24, 22], [8, 22]], "interior": [hole]}},
        {"id": 13, "classTitle": "bag", "geometryType": "bitmap", "tags": [],
         "bitmap": {"data": _bitmap_data(bits), "origin": [40, 30]}},
    ]
    root = _project(tmp_path, {"ds0": {"a.png": objects}})
    assert detect_format(root) == "supervisely"  # not coco: meta.json is the folder's only JSON
    ds = open_dataset(root)
    assert isinstance(ds, SuperviselyDataset) and ds.label_map == {1: "box", 2: "can", 3: "bag"}
    s = ds[0]
    assert (s.width, s.height) == (64, 48) and s.image.endswith("ds0/img/a.png")
    assert s.boxes.tolist() == [[10, 5, 20, 15], [8, 8, 16, 14], [43, 32, 8, 5]]
    assert s.labels.tolist() == [1, 2, 3] and s.instance_ids == (11, 12, 13)
    assert s.masks[0] is None and isinstance(s.masks[1], PolygonMask) and isinstance(s.masks[2], BitmapMask)
    polygon = s.masks[1].to_array(64, 48)
    assert polygon[10, 10] and not polygon[14, 14]  # the interior ring is a hole
    bitmap = s.masks[2].to_array(64, 48)
    assert mask_bbox(bitmap) == (43.0, 32.0, 8.0, 5.0) and bitmap.sum() == bits.sum()
    assert s.metadata["dataset"] == "ds0" and s.metadata["file_name"] == "a.png"


def test_labels_from_tags(tmp_path):
    objects = [_rect(1, 1, 9, 9, 1, tags=[{"name": "1000592", "value": None}]),
               _rect(2, 2, 8, 8, 2, tags=[{"name": "1000591", "value": None}])]
    root = _project(tmp_path, {"ds": {"a.png": objects}})
    ds = open_dataset(root, label_tag="*")  # the name of each object's one tag (the snacks catalog's product ids)
    assert ds.label_map == {1: "1000591", 2: "1000592"} and ds[0].labels.tolist() == [2, 1]
    valued = [_rect(1, 1, 9, 9, 1, tags=[{"name": "sku", "value": "a-1"}]),
              _rect(2, 2, 8, 8, 2, tags=[{"name": "sku", "value": "b-2"}])]
    root2 = _project(tmp_path / "v", {"ds": {"a.png": valued}})
    ds = open_dataset(root2, label_tag="sku")  # the tag's value, ids in the order of meta.json's values
    assert ds.label_map == {1: "b-2", 2: "a-1"} and ds[0].labels.tolist() == [2, 1]
    with pytest.raises(DatasetError, match="no tag 'colour'"):
        open_dataset(root2, label_tag="colour")
    with pytest.raises(DatasetError, match="needs exactly one value-less tag per object, found 0") as err:
        open_dataset(root2, label_tag="*")[0]
    assert err.value.field == "tags" and "objects[0] (id 1)" in str(err.value)


def test_datasets_filter_and_stable_image_ids(tmp_path):
    root = _project(tmp_path, {"a": {"1.png": [_rect(1, 1, 5, 5, 1)], "2.png": []}, "b": {"3.png": []}})
    every = open_dataset(root)
    assert [(s.metadata["dataset"], s.image_id) for s in every] == [("a", 0), ("a", 1), ("b", 2)]
    only_b = open_dataset(root, datasets=["b"])
    assert len(only_b) == 1 and only_b[0].image_id == 2 and only_b.datasets == ["b"]
    assert len(open_dataset(root, datasets="a")) == 2
    with pytest.raises(DatasetError, match=r"datasets \['c'\] are not in the project; it has: a, b"):
        open_dataset(root, datasets=["c"])


def test_zero_width_box_error_names_file_object_and_field(tmp_path):
    objects = [_rect(1, 1, 9, 9, 5), _rect(20, 20, 20, 30, 6), _rect(2, 2, 6, 6, 7)]
    root = _project(tmp_path, {"ds": {"a.png": objects}})
    with pytest.raises(DatasetError) as err:
        open_dataset(root)[0]
    e = err.value
    assert e.file.endswith("ds/ann/a.png.json") and e.record == "objects[1] (id 6)"
    assert e.field == "points.exterior" and e.kind == "box_non_positive" and "zero or negative size" in str(e)
    ds = open_dataset(root, skip_invalid=True)  # the degenerate box alone is left out, and counted
    assert ds[0].boxes.tolist() == [[1, 1, 8, 8], [2, 2, 4, 4]] and ds[0].instance_ids == (5, 7)
    assert ds.skipped.counts() == {"box_non_positive": 1}


def test_other_defects_leave_out_the_image(tmp_path):
    point = {"id": 3, "classTitle": "box", "geometryType": "point", "points": {"exterior": [[1, 1]]}}
    root = _project(tmp_path, {"ds": {"a.png": [_rect(1, 1, 5, 5, 1, cls="shelf")], "b.png": [point],
                                      "c.png": [_rect(1, 1, 5, 5, 4)],
                                      "d.png": [_rect(1, 1, 5, 5, 9), {"id": 2, "classTitle": "box",
                                                "geometryType": "rectangle", "points": {"exterior": [[1, "x"]]}}]}})
    ds = open_dataset(root, skip_invalid=True)
    assert [s.metadata["file_name"] for s in ds] == ["c.png"]
    assert ds.skipped.counts() == {"bad_points": 1, "unknown_label": 1, "unsupported_geometry": 1}
    strict = open_dataset(root)
    with pytest.raises(DatasetError, match="label 'shelf' is not among meta.json classes") as err:
        strict[0]
    assert err.value.field == "classTitle"
    with pytest.raises(DatasetError, match="geometryType 'point' has no box"):
        strict[1]
    with pytest.raises(DatasetError, match="list of at least 2") as err:
        strict[3]
    assert err.value.record == "objects[1] (id 2)" and err.value.field == "points.exterior"


def test_info_reads_a_project(tmp_path):
    root = _project(tmp_path, {"ds": {"a.png": [_rect(1, 1, 5, 5, 1), _rect(3, 3, 3, 9, 2)]}})
    report, problems = dataset_info(open_dataset(root, skip_invalid=True), progress=False)
    assert report["format"] == "supervisely" and report["images"] == 1 and report["boxes"] == 1
    assert [p.kind for p in problems] == ["box_non_positive"]


# -- the real demo projects (../shared/real) ------------------------------------------------------------------

def test_real_shelves():
    root = str(shared_real("grocery-store-shelves/project"))
    assert detect_format(root) == "supervisely"
    ds = open_dataset(root, skip_invalid=True)
    assert len(ds) == 37 and ds.label_map == {1: "product"}
    samples = list(ds)
    assert sum(len(s) for s in samples) == 926 - 15
    assert len(ds.skipped) == 15 and ds.skipped.counts() == {"box_non_positive": 15}
    assert all((s.width, s.height) == (1080, 1920) for s in samples)
    first = ds.skipped.errors[0]
    assert first.file.endswith("IMG_1866_chips_frame_00065.jpg.json") and first.record == "objects[26] (id 7681155)"
    with pytest.raises(DatasetError, match=r"objects\[26\] \(id 7681155\).*points.exterior.*zero or negative"):
        list(open_dataset(root))


def test_real_packshots_one_bitmap_each():
    root = str(shared_real("snacks-catalog/project"))
    ds = open_dataset(root, label_tag="*")
    assert len(ds) == 83 and len(ds.label_map) == 83  # one product id tag per packshot
    assert len(ds.skipped) == 0
    for s in ds:
        assert len(s) == 1 and isinstance(s.masks[0], BitmapMask)
        assert tuple(s.boxes[0]) == mask_bbox(s.masks[0].to_array(s.width, s.height))
    assert open_dataset(root).label_map == {1: "product"}
