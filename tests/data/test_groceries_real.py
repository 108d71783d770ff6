import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from synthgap.data import DatasetError
from synthgap.data.groceries_real import GroceriesRealDataset, generate_splits

SPEC = [{"label_id": 1, "label_name": "book_dorkdiaries_aladdin"},
        {"label_id": 2, "label_name": "candy_minipralines_lindt"}]


def make_groceries(root, n=5, split_files=True, sizes=None):
    """A tiny dataset in the published v3 layout (annotations.json list + Unity-style definitions)."""
    (root / "images").mkdir(parents=True)
    records = []
    for i in range(n):
        w, h = sizes[i] if sizes else (32 + i, 24)
        Image.new("RGB", (w, h)).save(root / "images" / f"IMG_{4100 + i}.JPG", format="JPEG")
        anns = [{"label_id": 1 + i % 2, "bbox": [1, 2, 10.5, 8]}] * (i % 3)
        records.append({"file_name": f"IMG_{4100 + i}.JPG", "annotations": anns})
    (root / "annotations.json").write_text(json.dumps(records))
    definitions = {"version": "0.0.1", "annotation_definitions": [
        {"id": "c31620e3-55ff-4af6-ae86-884aa0daa9b2", "name": "bounding box",
         "description": "Bounding box for each labeled object visible to the sensor", "format": "JSON",
         "spec": SPEC}]}
    (root / "annotation_definitions.json").write_text(json.dumps(definitions))
    if split_files:
        for name, idx in {"train": [0, 1, 2], "val": [3], "test": [4], "train_small": [1],
                          "test_high_ratio": [4]}.items():
            (root / f"groceries_real_{name}.txt").write_text(" ".join(map(str, idx)) + "\n")
    return root


def test_reads_layout_and_split_files(tmp_path):
    root = make_groceries(tmp_path / "v3")
    assert GroceriesRealDataset.detect(str(root))
    ds = GroceriesRealDataset(str(root))
    assert len(ds) == 5 and ds.label_map == {1: "book_dorkdiaries_aladdin", 2: "candy_minipralines_lindt"}
    s = ds[2]
    assert (s.width, s.height) == (34, 24) and s.image == str(root / "images" / "IMG_4102.JPG")
    assert s.boxes.tolist() == [[1, 2, 10.5, 8]] * 2 and s.labels.tolist() == [1, 1] and s.image_id == 2
    assert len(ds[0]) == 0
    assert sorted(ds.splits) == ["test", "test_high_ratio", "train", "train_small", "val"]
    assert not ds.splits_generated
    test = GroceriesRealDataset(str(root), split="test")
    assert [x.image_id for x in test] == [4] and test[0].metadata["split"] == "test"
    assert [x.image_id for x in GroceriesRealDataset(str(root), split="train")] == [0, 1, 2]
    # the folder the published v3.zip unpacks into works too
    assert GroceriesRealDataset.detect(str(tmp_path)) and GroceriesRealDataset(str(tmp_path)).root == str(root)
    with pytest.raises(ValueError, match="available: all, test, test_high_ratio"):
        GroceriesRealDataset(str(root), split="train_medium")


def test_generated_splits_are_deterministic_and_nested(tmp_path):
    root = make_groceries(tmp_path, n=10, split_files=False)
    ds = GroceriesRealDataset(str(root), split="train")
    assert ds.splits_generated and len(ds) == 6
    sp = generate_splits(100, seed=0)
    assert [len(sp[k]) for k in ("train", "val", "test", "train_small", "train_medium")] == [60, 20, 20, 6, 30]
    assert set(sp["train_small"]) <= set(sp["train_medium"]) <= set(sp["train"])
    assert sorted(np.concatenate([sp["train"], sp["val"], sp["test"]]).tolist()) == list(range(100))
    np.testing.assert_array_equal(generate_splits(100, seed=0)["test"], sp["test"])
    assert not np.array_equal(generate_splits(100, seed=1)["test"], sp["test"])


# ---- bad input ------------------------------------------------------------------------------------------------

def test_split_index_out_of_range(tmp_path):
    root = make_groceries(tmp_path)
    (root / "groceries_real_test.txt").write_text("4 9\n")
    with pytest.raises(DatasetError) as err:
        GroceriesRealDataset(str(root), split="test")
    e = err.value
    assert (e.kind, e.file, e.record, e.field) == ("index_out_of_range", str(root / "groceries_real_test.txt"),
                                                   "position 1", "index")
    ds = GroceriesRealDataset(str(root), split="test", skip_invalid=True)
    assert len(ds) == 1 and ds.skipped.counts() == {"index_out_of_range": 1}


def test_label_id_not_in_definitions(tmp_path):
    root = make_groceries(tmp_path)
    records = json.loads((root / "annotations.json").read_text())
    records[1]["annotations"][0]["label_id"] = 42
    (root / "annotations.json").write_text(json.dumps(records))
    with pytest.raises(DatasetError) as err:
        GroceriesRealDataset(str(root))
    e = err.value
    assert (e.kind, e.file, e.record, e.field) == ("unknown_label", str(root / "annotations.json"),
                                                   "[1].annotations[0] (IMG_4101.JPG)", "label_id")
    ds = GroceriesRealDataset(str(root), skip_invalid=True)
    assert [s.image_id for s in ds] == [0, 2, 3, 4] and len(ds.skipped) == 1
    # the broken record is in the train split only: the test split reads without complaint
    assert [s.image_id for s in GroceriesRealDataset(str(root), split="test")] == [4]


def test_missing_definitions(tmp_path):
    root = make_groceries(tmp_path)
    (root / "annotation_definitions.json").unlink()
    assert GroceriesRealDataset.detect(str(root))  # split files still identify the layout
    with pytest.raises(DatasetError) as err:
        GroceriesRealDataset(str(root))
    assert err.value.kind == "missing_file" and err.value.file == str(root / "annotation_definitions.json")


def test_box_outside_image_and_missing_image(tmp_path):
    root = make_groceries(tmp_path, sizes=[(32, 24), (1, 1), (32, 24), (32, 24), (32, 24)])  # box x = 1 >= width
    (root / "images" / "IMG_4103.JPG").unlink()
    ds = GroceriesRealDataset(str(root))  # lazy: the error shows when the record is read
    with pytest.raises(DatasetError) as err:
        ds[1]
    assert (err.value.kind, err.value.record, err.value.field) == ("box_outside_image", "[1] (IMG_4101.JPG) box 0",
                                                                   "bbox")
    with pytest.raises(DatasetError) as err:
        ds[3]
    assert (err.value.kind, err.value.field) == ("missing_image", "file_name")
    assert "IMG_4103.JPG" in str(err.value)
    ds = GroceriesRealDataset(str(root), skip_invalid=True)
    assert [s.image_id for s in ds] == [0, 2, 4]
    assert ds.skipped.counts() == {"box_outside_image": 1, "missing_image": 1}


def test_bad_bbox_and_malformed_json(tmp_path):
    root = make_groceries(tmp_path)
    records = json.loads((root / "annotations.json").read_text())
    records[2]["annotations"][1]["bbox"] = [1, 2, 3]
    (root / "annotations.json").write_text(json.dumps(records))
    with pytest.raises(DatasetError) as err:
        GroceriesRealDataset(str(root))
    assert (err.value.kind, err.value.record, err.value.field) == ("bad_bbox", "[2].annotations[1] (IMG_4102.JPG)",
                                                                   "bbox")
    (root / "annotations.json").write_text("[{")
    with pytest.raises(DatasetError) as err:
        GroceriesRealDataset(str(root))
    assert err.value.kind == "malformed_json"


# ---- issue 14: ids of any size, bools, duplicate split indices, unreadable files and images ---------------

def edit_records(root, fn):
    records = json.loads((root / "annotations.json").read_text())
    fn(records)
    (root / "annotations.json").write_text(json.dumps(records))


def test_label_ids_beyond_64_bits(tmp_path):
    big = 2 ** 70
    root = make_groceries(tmp_path)
    defs = json.loads((root / "annotation_definitions.json").read_text())
    defs["annotation_definitions"][0]["spec"].append({"label_id": big, "label_name": "huge"})
    (root / "annotation_definitions.json").write_text(json.dumps(defs))
    edit_records(root, lambda r: r[1]["annotations"].append({"label_id": big, "bbox": [1, 1, 2, 2]}))
    ds = GroceriesRealDataset(str(root))
    assert ds.label_map[big] == "huge" and ds[1].labels.tolist() == [2, big]


@pytest.mark.parametrize("annotation,kind", [
    ({"label_id": True, "bbox": [1, 2, 3, 4]}, "missing_key"),
    ({"label_id": 1, "bbox": [1, 10 ** 400, 3, 4]}, "number_too_large"),
])
def test_bools_and_huge_numbers_are_errors(tmp_path, annotation, kind):
    root = make_groceries(tmp_path)
    edit_records(root, lambda r: r[3]["annotations"].append(annotation))
    with pytest.raises(DatasetError) as err:
        GroceriesRealDataset(str(root))
    assert err.value.kind == kind and err.value.record == "[3].annotations[0] (IMG_4103.JPG)"


def test_duplicate_split_index_is_an_error(tmp_path):
    root = make_groceries(tmp_path)
    (root / "groceries_real_train.txt").write_text("0 1 2 1\n")
    with pytest.raises(DatasetError) as err:
        GroceriesRealDataset(str(root), split="train")
    e = err.value
    assert (e.kind, e.record, e.field) == ("duplicate_index", "position 3", "index") and "train.txt" in e.file
    ds = GroceriesRealDataset(str(root), split="train", skip_invalid=True)
    assert [s.image_id for s in ds] == [0, 1, 2] and ds.skipped.counts() == {"duplicate_index": 1}


def test_non_utf8_split_file_is_named(tmp_path):
    root = make_groceries(tmp_path)
    (root / "groceries_real_val.txt").write_bytes(b"3\xff\n")
    for skip in (False, True):
        with pytest.raises(DatasetError) as err:
            GroceriesRealDataset(str(root), split="val", skip_invalid=skip)
        assert err.value.file.endswith("groceries_real_val.txt") and "UTF-8" in str(err.value)
    assert len(GroceriesRealDataset(str(root), split="test")) == 1  # other splits still read


def png_claiming_size(width, height):
    """A PNG whose header claims width x height (the pixel data is a 1x1 image): a decompression bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\0\0\0")) + \
        chunk(b"IEND", b"")


def test_decompression_bomb_is_skipped_under_skip_invalid(tmp_path):
    root = make_groceries(tmp_path)
    (root / "images" / "IMG_4102.JPG").write_bytes(png_claiming_size(60000, 60000))
    with pytest.raises(DatasetError) as err:
        GroceriesRealDataset(str(root))[2]
    assert err.value.kind == "image_too_large" and "IMG_4102.JPG" in err.value.file
    ds = GroceriesRealDataset(str(root), skip_invalid=True)
    assert [s.image_id for s in ds] == [0, 1, 3, 4] and ds.skipped.counts() == {"image_too_large": 1}
