"""synthgap.study.subsets: the study's draws keep groups whole (``datasets.real_group_by`` /
``synthetic_group_by``), nested across budgets, with the share reached recorded; ungrouped draws and records
stay as they were."""

from __future__ import annotations

import json
import re

import pytest

from synthgap.data import open_dataset
from synthgap.data.splits import seeded_split
from synthgap.errors import DatasetError
from synthgap.study import real_pool_and_val, real_subset, study_config_from_dict, synthetic_split
from synthgap.study.subsets import (DRAWN, holdout_draw, holdout_split, made_from, prepare_subsets,
                                    subset_records, source_records)

VIDEOS = {"IMG_1": 12, "IMG_2": 6, "IMG_3": 3}  # frames per video
BY_VIDEO = r"regex:^(IMG_\d+)_"


def make_frames(path, videos=VIDEOS, first_id=1):
    """A COCO file of video frames named IMG_<v>_frame_<k>.jpg (not on disk: the draws never read pixels)."""
    images, anns = [], []
    for video, frames in videos.items():
        for k in range(frames):
            i = first_id + len(images)
            images.append({"id": i, "file_name": f"{video}_frame_{k}.jpg", "width": 40, "height": 30})
            anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [1, 2, 5, 6], "area": 30, "iscrowd": 0})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    return str(path)


def video(sample) -> str:
    return re.match(r"(IMG_\d+)_", sample.image.replace("\\", "/").rsplit("/", 1)[-1]).group(1)


def videos(path) -> set[str]:
    return {video(s) for s in open_dataset(path, "coco")}


@pytest.fixture
def frames(tmp_path):
    """(real train, real test) COCO files: 21 frames of 3 videos, and 2 test frames of another video."""
    return (make_frames(tmp_path / "real" / "annotations.json"),
            make_frames(tmp_path / "test" / "annotations.json", {"IMG_9": 2}, first_id=100))


def study(real, test, **extra):
    datasets = {"real_train": real, "real_test": test, **extra.pop("datasets", {})}
    return study_config_from_dict({"datasets": datasets, "cells": ["real"], "fractions": [0.3, 0.6, 1.0],
                                   "real_holdout": 0.2, **extra})


# ---------------------------------------------------------------------------------------------
# the draws


def test_grouped_holdout_keeps_groups_apart_and_needs_two_of_them():
    groups = ["a"] * 12 + ["b"] * 6 + ["c"] * 3
    for seed in range(5):
        d = holdout_draw(21, 0.2, seed, "x", groups, BY_VIDEO)
        assert {groups[i] for i in d.taken}.isdisjoint({groups[i] for i in d.rest})
        assert len(d.taken) == 3 and d.groups_taken == 1  # 3 images are nearest the 4 asked for
    keep, held = holdout_split(21, 0.2, 0, "x", groups)
    assert held == holdout_draw(21, 0.2, 0, "x", groups).taken.tolist() and sorted(keep + held) == list(range(21))
    assert holdout_split(20, 0.1, 0, "x", [str(i) for i in range(20)]) == holdout_split(20, 0.1, 0, "x")
    with pytest.raises(DatasetError, match="puts all 5 images in one group"):
        holdout_draw(5, 0.2, 0, "data/x", ["v"] * 5, BY_VIDEO)


# ---------------------------------------------------------------------------------------------
# the study's subsets


@pytest.mark.parametrize("given_val", [False, True])
def test_real_holdout_and_subsets_keep_videos_whole_and_nested(frames, tmp_path, caplog, given_val):
    real, test = frames
    cfg = study(real, test, datasets={"real_group_by": BY_VIDEO, **({"real_val": test} if given_val else {})})
    out = str(tmp_path / "out")
    caplog.set_level("INFO", logger="synthgap.study")
    records = prepare_subsets(cfg, out)
    (pool, _), (val, _) = real_pool_and_val(cfg, out)
    if not given_val:
        assert videos(val).isdisjoint(videos(pool)) and videos(val) | videos(pool) == set(VIDEOS)
        held = made_from(str(out), "real_val_holdout")
        assert held["real_group_by"] == BY_VIDEO and held["drawn"]["images"] == len(open_dataset(val, "coco"))
        assert made_from(str(out), "real_train_pool")["drawn"]["groups"] == 2
        assert "(held out: 1 of 3 " + BY_VIDEO + " groups, 14.3% of the images; asked 20.0%)" in caplog.text
    pool_ids = {s.image_id for s in open_dataset(pool, "coco")}
    subsets = [{s.image_id for s in open_dataset(real_subset(cfg, f, out), "coco")} for f in cfg.fractions]
    assert subsets[0] <= subsets[1] <= subsets[2] == pool_ids  # nested, and 100 % is the whole pool
    by_video = {}
    for s in open_dataset(real, "coco"):
        by_video.setdefault(video(s), set()).add(s.image_id)
    for ids in subsets:
        assert ids == set().union(*(v for v in by_video.values() if v & ids))  # whole videos only
    # the share reached is recorded with each subset and in what each cell is made from
    for f, ids in zip(cfg.fractions, subsets):
        name = f"real_train_{round(f * 100)}pct"
        drawn = made_from(str(out), name)["drawn"]
        assert drawn == records[name]["drawn"]
        assert drawn["images"] == len(ids) and drawn["of_images"] == len(pool_ids) and drawn["group_by"] == BY_VIDEO
        groups = len(videos(real_subset(cfg, f, out)))
        assert drawn["groups"] == groups and drawn["of_groups"] == len(videos(pool))
        assert drawn["share"] == pytest.approx(len(ids) / len(pool_ids), abs=1e-6)
        assert (f"real subset {round(f * 100)} %: {len(ids)} of {len(pool_ids)} images in {groups} of "
                f"{len(videos(pool))} {BY_VIDEO} groups ({100 * len(ids) / len(pool_ids):.1f}% of the pool") \
            in caplog.text


def test_ungrouped_records_are_as_before(frames, tmp_path):
    """Without group_by: the same images and the same made_from.json keys as before (no group key, no drawn
    record), so the subsets and cells of an existing study folder stay current."""
    real, test = frames
    cfg = study(real, test)
    out = str(tmp_path / "out")
    prepare_subsets(cfg, out)
    assert not list((tmp_path / "out" / "subsets").rglob(DRAWN))
    assert set(made_from(out, "real_train_30pct")) == {"source", "validation", "real_holdout", "subset_seed",
                                                       "fraction"}
    (pool, _), _ = real_pool_and_val(cfg, out)
    n = len(open_dataset(pool, "coco"))
    pool_ids = [s.image_id for s in open_dataset(pool, "coco")]
    written = [s.image_id for s in open_dataset(real_subset(cfg, 0.3, out), "coco")]
    assert written == [pool_ids[i] for i in seeded_split(n, round(0.3 * n), cfg.subset_seed).taken]


def test_changing_group_by_rebuilds_the_subsets(frames, tmp_path, caplog):
    real, test = frames
    out = str(tmp_path / "out")
    prepare_subsets(study(real, test), out)
    grouped = study(real, test, datasets={"real_group_by": BY_VIDEO})
    caplog.set_level("WARNING", logger="synthgap.study")
    prepare_subsets(grouped, out)
    assert "real_group_by: None -> " in caplog.text and "writing it again" in caplog.text
    (pool, _), (val, _) = real_pool_and_val(grouped, out)
    assert videos(val).isdisjoint(videos(pool))
    caplog.clear()
    prepare_subsets(grouped, out)  # a rerun: the drawn records are no change
    assert "writing it again" not in caplog.text


def test_budgets_that_whole_groups_make_equal_are_warned_about(tmp_path, caplog):
    real = make_frames(tmp_path / "real" / "annotations.json", {"IMG_1": 10, "IMG_2": 10})
    test = make_frames(tmp_path / "test" / "annotations.json", {"IMG_9": 2}, first_id=100)
    cfg = study_config_from_dict({"datasets": {"real_train": real, "real_val": test,
                                               "real_test": test, "real_group_by": BY_VIDEO},
                                  "cells": ["real"], "fractions": [0.4, 0.5]})
    caplog.set_level("WARNING", logger="synthgap.study")
    prepare_subsets(cfg, str(tmp_path / "out"))
    assert "the real subsets 40 % and 50 % are the same 10 images" in caplog.text


def test_synthetic_holdout_keeps_groups_whole(tmp_path):
    syn = make_frames(tmp_path / "syn" / "annotations.json", {"IMG_5": 4, "IMG_6": 4, "IMG_7": 4, "IMG_8": 8})
    test = make_frames(tmp_path / "test" / "annotations.json", {"IMG_9": 2}, first_id=100)
    cfg = study_config_from_dict({"datasets": {"synthetic": syn, "real_test": test,
                                               "synthetic_group_by": BY_VIDEO}, "cells": ["synthetic"],
                                  "synthetic_holdout": 0.3})
    out = str(tmp_path / "out")
    records = prepare_subsets(cfg, out)
    train, held = synthetic_split(cfg, out)
    assert videos(train).isdisjoint(videos(held)) and len(open_dataset(held, "coco")) in (4, 8)
    assert records["synthetic_holdout"]["synthetic_group_by"] == BY_VIDEO
    assert records["synthetic_holdout"]["drawn"]["images"] + records["synthetic_train"]["drawn"]["images"] == 20
    one = study_config_from_dict({"datasets": {"synthetic": make_frames(tmp_path / "one" / "a.json", {"IMG_4": 5}),
                                               "real_test": test, "synthetic_group_by": BY_VIDEO},
                                  "cells": ["synthetic"]})
    with pytest.raises(DatasetError, match="one group"):
        synthetic_split(one, str(tmp_path / "out_one"))


def test_field_groups_come_from_the_configured_data(tmp_path):
    """``field:NAME`` reads the reader's metadata, which the study's COCO pool file does not keep: the keys
    come from the real training data by image id (SOLO: one sequence per generated frame, so the draws are
    the ungrouped ones)."""
    from synthgap.generate import generate

    real = str(tmp_path / "solo")
    generate(real, 10, format="solo", seed=0, width=64, height=48, progress=False)
    test = make_frames(tmp_path / "test" / "annotations.json", {"IMG_9": 2}, first_id=100)
    base = {"datasets": {"real_train": real, "real_format": "solo", "real_test": test}, "cells": ["real"],
            "fractions": [0.5]}
    grouped = study_config_from_dict({**base, "datasets": {**base["datasets"], "real_group_by": "field:sequence"}})
    ids = {}
    for name, cfg in (("plain", study_config_from_dict(base)), ("grouped", grouped)):
        out = str(tmp_path / name)
        prepare_subsets(cfg, out)
        ids[name] = [s.image for s in open_dataset(real_subset(cfg, 0.5, out), "coco")]
    assert ids["grouped"] == ids["plain"] and len(ids["plain"]) == 4  # half of the 9-frame pool
    assert made_from(str(tmp_path / "grouped"), "real_train_50pct")["drawn"]["of_groups"] == 9


def test_records_name_the_group_spec_only_when_set(frames):
    real, test = frames
    plain, grouped = study(real, test), study(real, test, datasets={"real_group_by": "folder"})
    sources = source_records(plain)
    assert all("real_group_by" not in r for r in subset_records(plain, sources).values())
    assert all(r["real_group_by"] == "folder" for r in subset_records(grouped, sources).values())
