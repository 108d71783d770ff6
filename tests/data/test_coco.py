import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from synthgap.data import DatasetError, Sample, open_dataset
from synthgap.data.coco import CocoDataset, CocoWriter, to_coco_dict

CATS = [{"id": 3, "name": "cereal"}, {"id": 7, "name": "soup"}]


def coco_dict():
    return {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 5, "file_name": "b.png", "width": 20, "height": 20},
            {"id": 12, "file_name": "c.png", "width": 20, "height": 20},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [0.1, 0.2, 10.123456789012345, 5.5], "area": 33.0,
             "iscrowd": 0, "segmentation": [[0, 0, 1, 1, 2, 2]]},
            {"id": 2, "image_id": 5, "category_id": 7, "bbox": [1, 2, 3, 4], "iscrowd": 1,
             "segmentation": {"counts": "xyz", "size": [20, 20]}},
            {"id": 3, "image_id": 10, "category_id": 7, "bbox": [20, 10, 19.9, 20], "area": 100.5},
        ],
        "categories": CATS,
    }


def write_dataset(tmp_path, data, images=True, folder=""):
    root = tmp_path / folder if folder else tmp_path
    root.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    if images:
        for im in data["images"] if isinstance(data, dict) else []:
            Image.new("RGB", (im["width"], im["height"])).save(root / im["file_name"])
    return path


def test_reads_boxes_exactly_sorted_per_image(tmp_path):
    path = write_dataset(tmp_path, coco_dict())
    ds = CocoDataset(str(path))
    assert len(ds) == 3 and ds.label_map == {3: "cereal", 7: "soup"}
    a, b, c = ds[0], ds[1], ds[2]
    assert a.image_id == 10 and a.image == str(tmp_path / "a.png") and (a.width, a.height) == (40, 30)
    assert a.boxes.tolist() == [[0.1, 0.2, 10.123456789012345, 5.5], [20.0, 10.0, 19.9, 20.0]]
    assert a.labels.tolist() == [3, 7] and a.areas.tolist() == [33.0, 100.5] and a.instance_ids == (1, 3)
    assert b.image_id == 5 and b.iscrowd.tolist() == [True] and b.areas is None
    assert b.box_areas.tolist() == [12.0]
    assert len(c) == 0 and c.boxes.shape == (0, 4)
    assert not any("seg" in k for k in a.metadata) and a.segmentation == {}


def test_folder_with_images_subfolder_and_detection(tmp_path):
    data = coco_dict()
    (tmp_path / "images").mkdir()
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    for im in data["images"]:
        Image.new("RGB", (im["width"], im["height"])).save(tmp_path / "images" / im["file_name"])
    assert CocoDataset.detect(str(tmp_path)) and CocoDataset.detect(str(path))
    ds = open_dataset(str(tmp_path), "coco")
    assert ds[0].image == str(tmp_path / "images" / "a.png")
    ds2 = open_dataset(str(path), format="coco", image_root="/elsewhere")
    assert ds2[0].image == "/elsewhere/a.png"


def test_two_json_files_is_ambiguous(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b.json").write_text("{}")
    with pytest.raises(DatasetError, match="2 JSON files"):
        CocoDataset(str(tmp_path))


def test_writer_round_trip_exact_and_pycocotools(tmp_path):
    src = CocoDataset(str(write_dataset(tmp_path, coco_dict())))
    out = tmp_path / "out"
    with CocoWriter(str(out), src.label_map) as w:
        for s in src:
            w.add(s)
    data = json.loads((out / "annotations.json").read_text())
    assert [a["id"] for a in data["annotations"]] == [1, 2, 3]
    assert data["annotations"][0]["bbox"] == [0.1, 0.2, 10.123456789012345, 5.5]
    assert data["annotations"][2]["area"] == 12.0 and data["annotations"][2]["iscrowd"] == 1
    assert data["images"][0]["file_name"] == str(tmp_path / "a.png")
    coco = COCO(str(out / "annotations.json"))
    assert sorted(coco.getImgIds()) == [5, 10, 12]
    assert coco.loadAnns(coco.getAnnIds(imgIds=[10]))[1]["bbox"] == [20.0, 10.0, 19.9, 20.0]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cereal", "soup"]
    back = CocoDataset(str(out / "annotations.json"))
    for s, t in zip(src, back):
        np.testing.assert_array_equal(s.boxes, t.boxes)
        assert s.image == t.image and s.image_id == t.image_id
    # deterministic: same input, same bytes
    with CocoWriter(str(tmp_path / "out2.json"), src.label_map) as w:
        for s in src:
            w.add(s)
    assert (tmp_path / "out2.json").read_bytes() == (out / "annotations.json").read_bytes()


def test_writer_images_bytes_pil_and_copy(tmp_path):
    src_img = tmp_path / "src" / "step0.camera.png"
    src_img.parent.mkdir()
    Image.new("RGB", (8, 6), "red").save(src_img)
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), "blue").save(buf, format="PNG")
    mk = lambda i, name: Sample(image=name, width=8, height=6, boxes=[[1, 1, 2, 2]], labels=[1], image_id=i)
    out = tmp_path / "ds"
    with CocoWriter(str(out), {1: "x"}, copy_images=True) as w:
        s0 = w.add(mk(0, "gen/0001.png"), buf.getvalue())
        s1 = w.add(mk(1, "frame"), Image.new("RGB", (8, 6)))
        s2 = w.add(mk(2, str(src_img)))
        s3 = w.add(mk(3, str(src_img)))  # same basename: must not overwrite
    names = [im["file_name"] for im in json.loads((out / "annotations.json").read_text())["images"]]
    assert names == ["images/0001.png", "images/frame.png", "images/step0.camera.png", "images/3_step0.camera.png"]
    assert s0.image == str(out / "images" / "0001.png") and Image.open(s0.image).getpixel((0, 0)) == (0, 0, 255)
    assert Image.open(s3.image).getpixel((0, 0)) == (255, 0, 0) and s1.image.endswith("frame.png")
    back = open_dataset(str(out / "annotations.json"), "coco")
    assert [s.image for s in back] == [s0.image, s1.image, s2.image, s3.image]


def test_writer_rejects_duplicate_ids_and_to_coco_dict():
    s = Sample(image="/x.png", width=8, height=6, boxes=[[1, 1, 2, 2]], labels=[1], image_id=4, areas=[3.0])
    d = to_coco_dict([s], {1: "x", 2: "y"})
    coco = COCO()
    coco.dataset = d
    coco.createIndex()
    assert coco.anns[1]["area"] == 3.0 and coco.imgs[4]["file_name"] == "/x.png" and len(coco.cats) == 2
    with pytest.raises(ValueError, match="duplicate image_id 4"):
        to_coco_dict([s, s], {1: "x"})
    with pytest.raises(ValueError, match="duplicate image_id 4"):
        w = CocoWriter("/tmp/never.json", {1: "x"})
        w.add(s)
        w.add(s)


# ---- bad input: every error names file, record and field ---------------------------------------------------

def mutate(fn):
    d = coco_dict()
    fn(d)
    return d


BAD = {
    "missing_images": (lambda d: d.pop("images"), "missing_key", "top level", "images"),
    "missing_annotations": (lambda d: d.pop("annotations"), "missing_key", "top level", "annotations"),
    "missing_categories": (lambda d: d.pop("categories"), "missing_key", "top level", "categories"),
    "unknown_image": (lambda d: d["annotations"][1].update(image_id=99), "unknown_image", "annotations[1] (id 2)",
                      "image_id"),
    "unknown_category": (lambda d: d["annotations"][2].update(category_id=4), "unknown_label",
                         "annotations[2] (id 3)", "category_id"),
    "bbox_3_numbers": (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "bad_bbox", "annotations[0] (id 1)",
                       "bbox"),
    "negative_width": (lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), "box_non_positive",
                       "annotations[0] (id 1)", "bbox"),
    "outside_image": (lambda d: d["annotations"][1].update(bbox=[20, 2, 10, 4]), "box_outside_image",
                      "annotations[1] (id 2)", "bbox"),
    "iscrowd_string": (lambda d: d["annotations"][0].update(iscrowd="0"), "bad_type", "annotations[0] (id 1)",
                       "iscrowd"),
    "iscrowd_2": (lambda d: d["annotations"][0].update(iscrowd=2), "bad_type", "annotations[0] (id 1)", "iscrowd"),
    "image_id_bool": (lambda d: d["annotations"][1].update(image_id=True), "bad_type", "annotations[1] (id 2)",
                      "image_id"),
    "annotation_id_bool": (lambda d: d["annotations"][1].update(id=True), "bad_type", "annotations[1]", "id"),
    "bbox_bool": (lambda d: d["annotations"][1].update(bbox=[1, True, 3, 4]), "bad_bbox", "annotations[1] (id 2)",
                  "bbox"),
    "bbox_beyond_float64": (lambda d: d["annotations"][1].update(bbox=[1, 10 ** 400, 3, 4]), "number_too_large",
                            "annotations[1] (id 2)", "bbox"),
    "width_2_70": (lambda d: d["images"][1].update(width=2 ** 70), "bad_image_size", "images[1] (id 5)",
                   "width/height"),
    "width_bool": (lambda d: d["images"][1].update(width=True), "bad_type", "images[1] (id 5)", "width"),
    "nan": (lambda d: d["annotations"][2].update(bbox=[1, float("nan"), 3, 4]), "box_not_finite",
            "annotations[2] (id 3)", "bbox"),
    "empty": (lambda d: d.update(images=[], annotations=[]), "empty_dataset", "images", "images"),
    "image_without_size": (lambda d: d["images"][1].pop("width"), "missing_key", "images[1] (id 5)", "width"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_file_record_field(tmp_path, case):
    fn, kind, record, field = BAD[case]
    path = write_dataset(tmp_path, mutate(fn), images=False)
    with pytest.raises(DatasetError) as err:
        CocoDataset(str(path))
    e = err.value
    assert (e.kind, e.record, e.field, e.file) == (kind, record, field, str(path))
    assert str(path) in str(e) and f"record {record}" in str(e) and f"field '{field}'" in str(e)


def test_malformed_json(tmp_path):
    path = write_dataset(tmp_path, '{"images": [', images=False)
    with pytest.raises(DatasetError) as err:
        CocoDataset(str(path))
    assert err.value.kind == "malformed_json" and str(path) in str(err.value) and "line 1" in str(err.value)


def test_skip_invalid_drops_whole_image_and_reports(tmp_path):
    def fn(d):
        d["annotations"][2]["bbox"] = [1, 2, 3]           # image 10 dropped
        d["annotations"].append({"id": 9, "image_id": 77, "category_id": 3, "bbox": [1, 1, 1, 1]})  # dropped alone
    ds = CocoDataset(str(write_dataset(tmp_path, mutate(fn), images=False)), skip_invalid=True)
    assert [s.image_id for s in ds] == [5, 12]
    assert ds.skipped.counts() == {"bad_bbox": 1, "unknown_image": 1}
    assert "annotations[3] (id 9)" in str(ds.skipped.errors[1])


def test_coco_release_layout_finds_images(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    data = coco_dict()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    Image.new("RGB", (40, 30)).save(tmp_path / "val2017" / "a.png")
    ds = CocoDataset(str(tmp_path))
    assert ds.json_path == str(tmp_path / "annotations" / "instances_val2017.json")
    assert ds[0].image == str(tmp_path / "val2017" / "a.png")


def test_writer_and_reader_through_a_uri():
    """Everything goes through synthgap.io.storage: an fsspec memory:// folder works like a local one."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 6)).save(buf, format="PNG")
    s = Sample(image="f.png", width=8, height=6, boxes=[[1.5, 1, 2, 2]], labels=[1], image_id=3)
    with CocoWriter("memory://synthgap-test/ds", {1: "x"}) as w:
        w.add(s, buf.getvalue())
    ds = CocoDataset("memory://synthgap-test/ds")
    assert ds.json_path == "memory://synthgap-test/ds/annotations.json"
    assert ds[0].image == "memory://synthgap-test/ds/images/f.png" and ds[0].boxes.tolist() == [[1.5, 1, 2, 2]]


def test_partial_areas_fall_back_to_box_area(tmp_path):
    d = coco_dict()
    del d["annotations"][2]["area"]
    ds = CocoDataset(str(write_dataset(tmp_path, d, images=False)))
    assert ds[0].areas.tolist() == [33.0, 19.9 * 20]


# ---- issue 14: ids of any size, iscrowd, overhanging boxes, copying only images ------------------------------

def uuid_ids_dict():
    """What Unity's datasetinsights COCO converter writes: uuid.UUID(...).int image and annotation ids."""
    img, ann, cat = 0xC0FFEE00112233445566778899AABBCC, 0x0123456789ABCDEF0123456789ABCDEF, 2 ** 64 + 1
    return img, ann, cat, {
        "images": [{"id": img, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": [{"id": ann, "image_id": img, "category_id": cat, "bbox": [1, 2, 3, 4], "area": 12,
                         "iscrowd": 0}],
        "categories": [{"id": cat, "name": "huge"}, {"id": 3, "name": "small"}],
    }


def test_ids_beyond_64_bits_round_trip_unchanged(tmp_path):
    img, ann, cat, data = uuid_ids_dict()
    ds = CocoDataset(str(write_dataset(tmp_path, data)))
    s = ds[0]
    assert s.image_id == img and s.instance_ids == (ann,) and s.labels.tolist() == [cat] and cat in ds.label_map
    out = tmp_path / "out.json"
    with CocoWriter(str(out), ds.label_map) as w:
        w.add(s)
    written = json.loads(out.read_text())
    assert written["images"][0]["id"] == img and written["annotations"][0]["image_id"] == img
    assert written["annotations"][0]["category_id"] == cat and {c["id"] for c in written["categories"]} == {cat, 3}
    coco = COCO(str(out))  # pycocotools reads it too
    assert coco.getAnnIds(imgIds=[img]) == [1]
    assert CocoDataset(str(out))[0].image_id == img


@pytest.mark.parametrize("value,crowd", [(0, False), (1, True), (False, False), (True, True)])
def test_iscrowd_accepts_0_1_and_booleans(tmp_path, value, crowd):
    ds = CocoDataset(str(write_dataset(tmp_path, mutate(lambda d: d["annotations"][0].update(iscrowd=value)),
                                       images=False)))
    assert ds[0].iscrowd.tolist()[0] is crowd


def test_box_partly_outside_is_kept_exactly(tmp_path):
    # Unity's converter output: y + h = 251 on a 240 px high image
    data = mutate(lambda d: d["annotations"][1].update(bbox=[15, 2, 10, 19]))
    assert CocoDataset(str(write_dataset(tmp_path, data, images=False)))[1].boxes.tolist() == [[15, 2, 10, 19]]


@pytest.mark.parametrize("content", [b"root:x:0:0:root:/root:/bin/bash\n", b"", "truncated"])
def test_copy_images_copies_only_files_that_decode(tmp_path, content):
    src = tmp_path / "img.png"
    Image.new("RGB", (8, 6), "red").save(src)
    if content == "truncated":
        content = src.read_bytes()[:-30]
    src.write_bytes(content)
    s = Sample(image=str(src), width=8, height=6, boxes=[[1, 1, 2, 2]], labels=[1], image_id=1)
    w = CocoWriter(str(tmp_path / "out"), {1: "x"}, copy_images=True)
    with pytest.raises(DatasetError) as err:
        w.add(s)
    assert err.value.kind == "unreadable_image" and err.value.file == str(src)
    assert not (tmp_path / "out" / "images" / "img.png").exists()


def test_segmentation_fills_masks_as_pycocotools_decodes_them(tmp_path):
    from pycocotools import mask as mask_utils

    from synthgap.data.masks import PolygonMask, RLEMask

    h, w = 30, 40
    bits = np.zeros((h, w), np.uint8, order="F")
    bits[5:20, 10:33] = 1
    compressed = mask_utils.encode(np.asfortranarray(bits))
    compressed = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    polygon = [[2.0, 2.0, 12.5, 2.0, 12.5, 9.0, 2.0, 9.0], [1, 1, 2, 2]]  # the second ring has < 3 points
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10.5, 7], "area": 70, "segmentation": polygon},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 5, 23, 15], "area": 345, "iscrowd": 1,
             "segmentation": compressed},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16, "segmentation": []}]
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": w, "height": h}], "annotations": anns,
           "categories": [{"id": 1, "name": "a"}]}
    path = tmp_path / "seg.json"
    path.write_text(json.dumps(doc))
    s = open_dataset(str(path))[0]
    assert isinstance(s.masks[0], PolygonMask) and isinstance(s.masks[1], RLEMask) and s.masks[2] is None
    assert s.masks[0].rings == (((2.0, 2.0), (12.5, 2.0), (12.5, 9.0), (2.0, 9.0)),)
    oracle = mask_utils.decode({"size": compressed["size"], "counts": compressed["counts"].encode()})
    np.testing.assert_array_equal(s.masks[1].to_array(w, h), oracle.astype(bool))
    assert oracle.sum() == bits.sum()
    assert _close_to_pycocotools_polygon(s.masks[0].to_array(w, h), polygon[0], h, w)
    bad = dict(doc, annotations=[dict(anns[0], segmentation=[[1, 2, "x", 4, 5, 6]])])
    path.write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match="even number of coordinates") as err:
        open_dataset(str(path))
    assert err.value.record == "annotations[0] (id 1)" and err.value.field == "segmentation"


def _close_to_pycocotools_polygon(ours: np.ndarray, polygon: list, h: int, w: int) -> bool:
    """Pillow's polygon fill and pycocotools' rasterisation of one polygon differ by at most its outline."""
    from pycocotools import mask as mask_utils

    theirs = mask_utils.decode(mask_utils.frPyObjects([polygon], h, w))[..., 0].astype(bool)
    outline = (ours ^ theirs).sum()
    return outline <= 2 * (ours.shape[0] + ours.shape[1]) and (ours & theirs).sum() > 0.7 * theirs.sum()
