import json

import numpy as np
import pytest

from synthgap.data.groceries_real import GroceriesRealDataset
from synthgap.data.splits import DatasetSplit, default_split, open_split, train_val_indices

from tests.data.test_groceries_real import make_groceries


def make_coco(path, n):
    """A COCO file of ``n`` images (not on disk: the splits never read pixels), image ids 101..."""
    images = [{"id": 101 + i, "file_name": f"img{i}.png", "width": 40, "height": 30} for i in range(n)]
    anns = [{"id": i + 1, "image_id": 101 + i, "category_id": 1, "bbox": [1, 2, 5, 6], "area": 30, "iscrowd": 0}
            for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "thing"}]}))
    return str(path)


def test_train_val_is_datasetinsights_90_10_seed_47():
    train, val = train_val_indices(100)
    assert len(train) == 90 and len(val) == 10 and not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(100))
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
    assert val.tolist() == sorted(np.random.RandomState(47).permutation(100)[:10].tolist())
    assert [len(v) for _, v in map(train_val_indices, (1, 9, 10, 11))] == [1, 1, 1, 2]  # n - floor(0.9 n)
    assert train_val_indices(100, seed=1)[1].tolist() != val.tolist()
    with pytest.raises(ValueError, match="fraction"):
        train_val_indices(10, val_fraction=1.0)


def test_train_val_matches_sklearn_train_test_split():
    """datasetinsights split SynDetection2D with sklearn's train_test_split(train_size=0.9, random_state=47)."""
    sklearn = pytest.importorskip("sklearn.model_selection")
    for n in (7, 10, 100, 1234):
        train, val = sklearn.train_test_split(np.arange(n), train_size=0.9, random_state=47)
        ours_train, ours_val = train_val_indices(n)
        assert sorted(train.tolist()) == ours_train.tolist() and sorted(val.tolist()) == ours_val.tolist()


def test_any_dataset_splits_and_defaults(tmp_path):
    path = make_coco(tmp_path / "coco" / "annotations.json", 20)
    whole = open_split(path, role="train")
    assert len(whole) == 20 and whole.split == "all"
    train = open_split(path, role="train", validating_on_train_data=True)
    val = open_split(path, role="val", validating_on_train_data=True)
    assert isinstance(train, DatasetSplit) and (len(train), len(val)) == (18, 2)
    assert {s.image_id for s in train} | {s.image_id for s in val} == set(range(101, 121))
    assert not {s.image_id for s in train} & {s.image_id for s in val}
    assert train.label_map == {1: "thing"} and val.description.startswith("split 'val': 2 of 20 images")
    assert [s.image_id for s in open_split(path, "val")] == [s.image_id for s in val]
    assert len(open_split(path, role="test")) == 20 and len(open_split(path, "all", role="val")) == 20
    assert [s.image_id for s in open_split(path, "val", seed=3)] != [s.image_id for s in val]
    with pytest.raises(ValueError, match=r"unknown split 'test'; coco datasets have: all, train, val"):
        open_split(path, "test")
    assert val[-1].image_id == val[1].image_id
    with pytest.raises(IndexError):
        val[2]


def test_groceries_real_reads_its_split_files_by_role(tmp_path):
    root = str(make_groceries(tmp_path / "v3"))
    assert [default_split(r, GroceriesRealDataset) for r in ("train", "val", "test")] == ["train", "val", "test"]
    assert [s.image_id for s in open_split(root, role="train")] == [0, 1, 2]
    assert [s.image_id for s in open_split(root, role="val", validating_on_train_data=True)] == [3]
    assert [s.image_id for s in open_split(root, role="test")] == [4]
    assert [s.image_id for s in open_split(root, "train_small")] == [1]
    assert len(open_split(root, "all", role="test")) == 5
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        open_split(root, "nope")
