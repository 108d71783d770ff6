import json

import numpy as np
import pytest

from synthgap.data.groceries_real import GroceriesRealDataset
from synthgap.data.splits import (DatasetSplit, default_split, group_keys, nested_split, open_split, seeded_order,
                                  seeded_split, train_val_indices)

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


# ---------------------------------------------------------------------------------------------
# one seeded split helper: the study's draws are `seeded_split`, with the same images as before


def _old_holdout_split(n, fraction, seed):
    """study.runner.holdout_split as of 34529bf (frozen here: the study's numbers must not change)."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    k = min(n - 1, max(1, int(round(fraction * n))))
    return sorted(order[k:]), sorted(order[:k])


def _old_real_subset(n, fraction, seed):
    """The images study.runner.real_subset wrote as of 34529bf."""
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[:max(1, int(round(fraction * n)))].tolist())


def test_the_study_draws_are_the_seeded_split_with_the_same_images_as_before():
    from synthgap.study import holdout_split

    for n in (2, 3, 10, 37, 101, 760):
        for fraction in (0.05, 0.1, 0.5, 0.9):
            for seed in (0, 1, 47):
                assert holdout_split(n, fraction, seed, "x") == _old_holdout_split(n, fraction, seed)
                k = max(1, int(round(fraction * n)))
                assert seeded_split(n, k, seed).taken.tolist() == _old_real_subset(n, fraction, seed)
    with pytest.raises(ValueError, match="at least 2"):
        holdout_split(1, 0.1, 0, "x")


def test_the_study_real_subset_writes_the_same_images_as_before(tmp_path):
    from synthgap.study import StudyConfig, StudyData, real_subset
    from synthgap.data import open_dataset

    path = make_coco(tmp_path / "real" / "annotations.json", 40)
    cfg = StudyConfig(datasets=StudyData(real_train=path, real_val=path, real_test=path), subset_seed=5)
    for fraction in (0.1, 0.5, 1.0):
        written = [s.image_id for s in open_dataset(real_subset(cfg, fraction, str(tmp_path / "out")), "coco")]
        assert written == [101 + i for i in _old_real_subset(40, fraction, 5)], fraction


def test_seeded_split_orders_and_counts():
    assert seeded_order(10, 3).tolist() == np.random.default_rng(3).permutation(10).tolist()
    assert seeded_order(10, 3, legacy=True).tolist() == np.random.RandomState(3).permutation(10).tolist()
    d = seeded_split(10, 4, 3)
    assert d.taken.tolist() == sorted(seeded_order(10, 3)[:4].tolist()) and len(d.rest) == 6
    assert (d.groups, d.groups_taken, d.fraction) == (10, 4, 0.4)
    with pytest.raises(ValueError, match="cannot take 11 of 10"):
        seeded_split(10, 11, 0)
    with pytest.raises(ValueError, match="whole number"):
        seeded_split(10, 2.5, 0)


# ---------------------------------------------------------------------------------------------
# group-aware splits

VIDEOS = ["IMG_1866"] * 25 + ["IMG_1867"] * 9 + ["IMG_1868"] * 3  # the shelf photos' videos


def test_singleton_groups_give_the_ungrouped_split():
    for n in (1, 2, 9, 10, 37, 300):
        for fraction, seed in ((0.1, 47), (0.2, 0), (0.5, 3)):
            plain = train_val_indices(n, fraction, seed)
            grouped = train_val_indices(n, fraction, seed, groups=[f"g{i}" for i in range(n)])
            assert [a.tolist() for a in plain] == [b.tolist() for b in grouped], (n, fraction, seed)


@pytest.mark.parametrize("exact", [True, False])
def test_group_split_keeps_groups_whole_and_comes_as_close_as_whole_groups_allow(monkeypatch, exact):
    """Both paths (the exact subset sum and the greedy one for many groups) on the shelves' 25 / 9 / 3."""
    from synthgap.data import splits

    monkeypatch.setattr(splits, "EXACT_CELLS", splits.EXACT_CELLS if exact else 0)
    rng = np.random.default_rng(0)
    keys = list(rng.permutation(VIDEOS))  # groups need not be contiguous
    for count, want in ((3.7, 3), (7.4, 9), (11.1, 12), (30.0, 28), (34.0, 34)):
        for seed in range(4):
            d = seeded_split(37, count, seed, groups=keys)
            taken = {keys[i] for i in d.taken}
            assert not taken & {keys[i] for i in d.rest}, "a group on both sides"
            assert len(d.taken) == want and d.fraction == want / 37 and d.groups == 3
            assert d.groups_taken == len(taken)
    # every group larger than twice the share: still one group each side
    d = seeded_split(37, 0.5, 0, groups=keys)
    assert len(d.taken) == 3 and len(d.rest) == 34


def test_group_split_exact_path_is_optimal_and_the_seed_chooses_among_ties():
    import itertools

    rng = np.random.default_rng(1)
    for case in range(60):
        sizes = rng.integers(1, 20, rng.integers(2, 8))
        keys = np.repeat(np.arange(len(sizes)), sizes).tolist()
        n = len(keys)
        count = float(rng.uniform(0.5, n - 0.5))
        best = min(abs(sum(c) - count) for r in range(1, len(sizes)) for c in itertools.combinations(sizes, r))
        d = seeded_split(n, count, case, groups=keys)
        assert abs(len(d.taken) - count) == pytest.approx(best), (sizes, count)
    ten = [i // 3 for i in range(30)]  # 10 groups of 3: many ways to take 9 images
    draws = {tuple(seeded_split(30, 9, seed, groups=ten).taken.tolist()) for seed in range(8)}
    assert len(draws) > 4 and all(len(d) == 9 for d in draws)
    assert seeded_split(30, 9, 2, groups=ten).taken.tolist() == seeded_split(30, 9, 2, groups=ten).taken.tolist()


def _samples(names, metadata=None):
    from synthgap.data import Sample

    return [Sample(image=name, width=4, height=4, boxes=np.zeros((0, 4)), labels=[], image_id=i,
                   metadata=(metadata or [{}] * len(names))[i]) for i, name in enumerate(names)]


def test_group_keys_from_a_regex_a_folder_or_a_metadata_field():
    from synthgap.errors import ConfigError, DatasetError

    names = ["/d/a/IMG_1866_chips_frame_00065.jpg", "/d/a/IMG_1867_chips_frame_00000.jpg",
             "gs://b/x/IMG_1866_chips_frame_00099.jpg", r"C:\data\s2\f.png"]
    assert group_keys(_samples(names[:3]), r"regex:^(IMG_\d+)_") == ["IMG_1866", "IMG_1867", "IMG_1866"]
    assert group_keys(_samples(names[:3]), r"regex:_frame_\d{3}") == ["_frame_000"] * 3  # no group: the match
    assert group_keys(_samples(names), "folder") == ["/d/a", "/d/a", "gs://b/x", r"C:\data\s2"]
    meta = [{"sequence": 4, "step": 0}, {"sequence": 4, "step": 1}, {"sequence": 5, "step": 0}]
    assert group_keys(_samples(names[:3], meta), "field:sequence") == ["4", "4", "5"]
    with pytest.raises(DatasetError, match=r"f.png: record 3: field 'image': file name 'f.png' does not match"):
        group_keys(_samples(names), r"regex:^(IMG_\d+)_")
    with pytest.raises(DatasetError, match=r"record 0: field 'metadata.session': no metadata field 'session' "
                                           r"to group by \(it has: sequence, step\)"):
        group_keys(_samples(names[:3], meta), "field:session")
    for bad in ("video", "regex:", "field:", "regex:(IMG"):
        with pytest.raises(ConfigError, match="group_by"):
            group_keys(_samples(names[:1]), bad)


def _coco_of_names(path, names):
    """A COCO file of images named ``names`` (not on disk), ids 101..., one box each."""
    images = [{"id": 101 + i, "file_name": name, "width": 40, "height": 30} for i, name in enumerate(names)]
    anns = [{"id": i + 1, "image_id": 101 + i, "category_id": 1, "bbox": [1, 2, 5, 6], "area": 30, "iscrowd": 0}
            for i in range(len(names))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    return str(path)


def test_open_split_by_group_keeps_each_video_on_one_side(tmp_path):
    from synthgap.errors import ConfigError

    names = [f"{v}_chips_frame_{i:05d}.jpg" for i, v in enumerate(VIDEOS)]
    path = _coco_of_names(tmp_path / "c" / "annotations.json", names)
    spec = r"regex:^(IMG_\d+)_"
    train = open_split(path, "train", group_by=spec, val_fraction=0.2)
    val = open_split(path, "val", group_by=spec, val_fraction=0.2)
    video = {101 + i: v for i, v in enumerate(VIDEOS)}
    assert {video[s.image_id] for s in val} == {"IMG_1867"} and len(val) == 9 and len(train) == 28
    assert not {video[s.image_id] for s in train} & {video[s.image_id] for s in val}
    assert val.description == (r"split 'val': 9 of 37 images in 1 of 3 groups (regex:^(IMG_\d+)_; val asked 20%, "
                               "got 24.3%; seed 47)")
    assert train.description.startswith("split 'train': 28 of 37 images in 2 of 3 groups")
    plain = open_split(path, "val", val_fraction=0.2)  # the random split mixes the videos
    assert len(plain) == 8 and len({video[s.image_id] for s in plain}) > 1
    assert len(open_split(path, "all", group_by=spec)) == 37
    one = _coco_of_names(tmp_path / "one" / "annotations.json", names[:25])
    with pytest.raises(ConfigError, match="all 25 images in 1 group"):
        open_split(one, "val", group_by=spec)
    root = str(make_groceries(tmp_path / "v3"))
    with pytest.raises(ConfigError, match="group_by .* applies to generated splits"):
        open_split(root, "train", group_by="folder")


def test_open_split_groups_the_real_shelf_photos_by_video(tmp_path):
    from tests.helpers.shelves import VIDEO_REGEX, shelves_dataset

    path = shelves_dataset(tmp_path)
    for seed in (0, 1, 47):
        train = open_split(path, "train", group_by=VIDEO_REGEX, seed=seed, val_fraction=0.25)
        val = open_split(path, "val", group_by=VIDEO_REGEX, seed=seed, val_fraction=0.25)
        video = lambda s: s.image.rsplit("/", 1)[-1][:8]
        assert {video(s) for s in val} == {"IMG_1867"}  # 9 is nearest the asked 25 % of 37 (9.25)
        assert not {video(s) for s in train} & {video(s) for s in val} and len(train) + len(val) == 37


def test_training_reads_the_grouped_split_from_data_split_group_by(tmp_path):
    """engine.train.load_data hands data.split_group_by (synthgap train --group-by) to open_split."""
    from synthgap.config import apply_overrides, load_config
    from synthgap.engine.train import load_data

    names = [f"{v}_chips_frame_{i:05d}.jpg" for i, v in enumerate(VIDEOS)]
    path = _coco_of_names(tmp_path / "c" / "annotations.json", names)
    cfg = apply_overrides(load_config("cpu_small"), [f"data.train={path}", 'data.split_group_by="regex:^(IMG_\\\\d+)_"',
                                                     "data.val_fraction=0.25"])
    train, val, how = load_data(cfg, validating=True)
    assert len(train) == 28 and len(val) == 9 and {s.image_id for s in val} == set(range(126, 135))
    assert "9 of 37 images in 1 of 3 groups" in how


def test_nested_split_with_singleton_groups_is_the_ungrouped_draw():
    for n in (1, 2, 9, 37, 200):
        for count in {1, max(1, n // 3), n}:
            for seed in (0, 5, 47):
                plain = nested_split(n, count, seed)
                assert plain.taken.tolist() == seeded_split(n, count, seed).taken.tolist()
                grouped = nested_split(n, count, seed, groups=[f"g{i}" for i in range(n)])
                assert grouped.taken.tolist() == plain.taken.tolist() and grouped.groups_taken == count


def test_nested_split_takes_whole_groups_nested_across_counts():
    rng = np.random.default_rng(0)
    for trial in range(60):
        groups = rng.integers(0, rng.integers(1, 8), size=int(rng.integers(1, 60))).tolist()
        n = len(groups)
        previous: set[int] = set()
        for count in range(1, n + 1):
            d = nested_split(n, count, trial, groups=groups)
            taken = set(d.taken.tolist())
            assert previous <= taken, (trial, count)  # nested: a larger budget holds every smaller one
            assert {groups[i] for i in taken}.isdisjoint({groups[i] for i in d.rest.tolist()})  # whole groups
            assert d.groups_taken >= 1 and d.groups == len(set(groups))
            previous = taken
        assert len(previous) == n  # the whole pool at count n


def test_nested_split_prefers_the_seeded_group_order_nearest_the_count():
    groups = ["a"] * 12 + ["b"] * 6 + ["c"] * 3
    for seed in range(6):
        order = np.random.default_rng(seed).permutation(3)  # groups numbered a, b, c by first appearance
        sizes = np.array([12, 6, 3])[order]
        for count in (1, 5, 10, 16, 21):
            k = int(np.argmin(np.abs(np.cumsum(sizes) - count))) + 1
            assert len(nested_split(21, count, seed, groups=groups).taken) == sizes[:k].sum()
    with pytest.raises(ValueError, match="3 group keys for 4"):
        nested_split(4, 2, 0, groups=["a", "b", "c"])
