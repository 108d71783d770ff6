"""SOLO (Perception 1.x) reader and writer: the real Unity fixture, round trips, and every kind of bad input."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthgap.data import DatasetError, Sample, open_dataset
from synthgap.data.dataset import detect_format
from synthgap.data.solo import SoloDataset, SoloWriter, read_instance_map

LABELS = {1: "apple", 2: "pear", 7: "plum"}
W, H = 32, 24


def make_sample(boxes, labels, **kw):
    return Sample(image="", width=W, height=H, boxes=boxes, labels=labels, **kw)


def write_dataset(root: Path, n: int = 3, *, instance: bool = True) -> list[Sample]:
    """A small valid SOLO dataset: frame i has i + 1 boxes (labels cycle through LABELS)."""
    out = []
    with SoloWriter(str(root), LABELS) as w:
        for i in range(n):
            boxes = [[1 + j, 2 + j, 3.25 + j, 4.5] for j in range(i + 1)]
            labels = [list(LABELS)[j % 3] for j in range(i + 1)]
            inst = None
            if instance:
                inst = np.zeros((H, W), dtype=np.uint16)
                for j in range(i + 1):
                    inst[2 + j, 1 + j] = 1000 + j
            out.append(w.add(make_sample(boxes, labels, instance_ids=tuple(1000 + j for j in range(i + 1))),
                             Image.new("RGB", (W, H), (i, 0, 0)), instance_map=inst))
    return out


def frame_file(root: Path, seq: int = 0, step: int = 0) -> Path:
    return root / f"sequence.{seq}" / f"step{step}.frame_data.json"


def edit_frame(root: Path, fn, seq: int = 0) -> None:
    path = frame_file(root, seq)
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def box_values(doc, capture=0):
    return next(a for a in doc["captures"][capture]["annotations"]
                if a["@type"].endswith("BoundingBox2DAnnotation"))["values"]


# --- the real Unity fixture ------------------------------------------------------------------

def test_fixture_is_read_exactly(solo_fixture):
    ds = open_dataset(str(solo_fixture))
    assert isinstance(ds, SoloDataset) and detect_format(str(solo_fixture)) == "solo"
    defs = json.loads((solo_fixture / "annotation_definitions.json").read_text())["annotationDefinitions"]
    box_def = next(d for d in defs if d["@type"] == "type.unity.com/unity.solo.BoundingBox2DAnnotation")
    assert ds.label_map == {s["label_id"]: s["label_name"] for s in box_def["spec"]}
    frames = sorted(solo_fixture.glob("sequence.*/step*.frame_data.json"))
    assert len(ds) == sum(len(json.loads(f.read_text())["captures"]) for f in frames) == 2
    for i, path in enumerate(frames):
        doc = json.loads(path.read_text())
        capture = doc["captures"][0]
        values = box_values(doc)
        s = ds[i]
        assert s.image == str(path.parent / capture["filename"]) and Path(s.image).exists()
        assert (s.width, s.height) == tuple(int(v) for v in capture["dimension"]) == Image.open(s.image).size
        assert s.boxes.tolist() == [v["origin"] + v["dimension"] for v in values]
        assert s.labels.tolist() == [v["labelId"] for v in values]
        assert s.instance_ids == tuple(v["instanceId"] for v in values)
        assert [ds.label_map[l] for l in s.labels] == [v["labelName"] for v in values]
        assert s.metadata["sequence"] == int(path.parent.name.split(".")[1]) and s.metadata["step"] == 0
        assert s.metadata["frame"] == doc["frame"] and s.metadata["sensor_id"] == capture["id"]
        seg = {a["@type"].rsplit(".", 1)[1]: a["filename"] for a in capture["annotations"] if "filename" in a}
        expected = {}
        if "InstanceSegmentationAnnotation" in seg:
            expected["instance"] = str(path.parent / seg["InstanceSegmentationAnnotation"])
        if "SemanticSegmentationAnnotation" in seg:
            expected["semantic"] = str(path.parent / seg["SemanticSegmentationAnnotation"])
        assert dict(s.segmentation) == expected
        assert all(Path(p).exists() for p in s.segmentation.values())  # file names with spaces
    assert "instance" in ds[0].segmentation and ds[1].segmentation == {}
    assert ds[-1].metadata["sequence"] == 1  # the JSON says sequence 0 twice; the folder decides


def _pysolotools():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pysolotools.consumers import Solo
    except Exception as e:  # noqa: BLE001 - any import failure means "not installed here"
        pytest.skip(f"pysolotools cannot be imported here ({type(e).__name__}: {e})")
    return Solo


def _pysolo_boxes(root):
    Solo = _pysolotools()
    from pysolotools.core.models import BoundingBox2DAnnotation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solo = Solo(str(root))
        out = []
        for frame in solo.frames():
            for capture in frame.captures:
                ann = [a for a in capture.annotations if isinstance(a, BoundingBox2DAnnotation)]
                out.append([(v.labelId, v.instanceId, list(v.origin) + list(v.dimension))
                            for v in (ann[0].values if ann else [])])
        return solo.categories(), out


def test_fixture_agrees_with_pysolotools(solo_fixture):
    categories, frames = _pysolo_boxes(solo_fixture)
    ds = open_dataset(str(solo_fixture))
    assert categories == ds.label_map
    assert frames == [list(zip(s.labels.tolist(), s.instance_ids, s.boxes.tolist())) for s in ds]


# --- writer ----------------------------------------------------------------------------------

def test_writer_round_trip(tmp_path):
    written = write_dataset(tmp_path / "solo", n=4)
    ds = open_dataset(str(tmp_path / "solo"))
    assert isinstance(ds, SoloDataset) and len(ds) == 4 and ds.label_map == LABELS
    for w, r in zip(written, ds):
        assert r.image == w.image and (r.width, r.height) == (W, H) == Image.open(r.image).size
        np.testing.assert_array_equal(r.boxes, w.boxes)
        np.testing.assert_array_equal(r.labels, w.labels)
        assert r.instance_ids == w.instance_ids and r.image_id == w.image_id
        assert dict(r.segmentation) == dict(w.segmentation) and dict(r.metadata) == dict(w.metadata)
    ids = read_instance_map(ds[3].segmentation["instance"])
    assert ids.dtype == np.uint32 and sorted(np.unique(ids).tolist()) == [0, 1000, 1001, 1002, 1003]
    assert ids[2, 1] == 1000 and ids[5, 4] == 1003
    meta = json.loads((tmp_path / "solo" / "metadata.json").read_text())
    assert meta["totalFrames"] == meta["totalSequences"] == 4


def test_writer_is_byte_deterministic_and_accepts_encoded_bytes(tmp_path):
    write_dataset(tmp_path / "a")
    write_dataset(tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 4 + 3 * 3
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    jpeg = (tmp_path / "a" / "sequence.0" / "step0.camera.png").read_bytes()
    with SoloWriter(str(tmp_path / "c"), LABELS, sensor_id="cam 2") as w:
        s = w.add(make_sample([[1, 1, 2, 2]], [7]), jpeg, index=5, image_ext="png")
    assert Path(s.image).read_bytes() == jpeg and s.image.endswith("sequence.5/step0.cam 2.png")
    assert open_dataset(str(tmp_path / "c"))[0].metadata["sequence"] == 5


def test_writer_refuses_invalid_frames(tmp_path):
    w = SoloWriter(str(tmp_path), LABELS)
    with pytest.raises(DatasetError) as e:
        w.add(make_sample([[1, 1, 2, 2]], [3]), Image.new("RGB", (W, H)))
    assert e.value.kind == "unknown_label"
    with pytest.raises(ValueError, match="image is 10x10"):
        w.add(make_sample([[1, 1, 2, 2]], [1]), Image.new("RGB", (10, 10)))
    w.add(make_sample([[1, 1, 2, 2]], [1]), Image.new("RGB", (W, H)))
    with pytest.raises(ValueError, match="already written"):
        w.add(make_sample([[1, 1, 2, 2]], [1]), Image.new("RGB", (W, H)), index=0)


def test_writer_output_is_read_by_pysolotools(tmp_path):
    write_dataset(tmp_path / "solo", n=3)
    categories, frames = _pysolo_boxes(tmp_path / "solo")
    ds = open_dataset(str(tmp_path / "solo"))
    assert categories == LABELS
    assert frames == [list(zip(s.labels.tolist(), s.instance_ids, s.boxes.tolist())) for s in ds]


def test_sharded_writers_leave_full_totals(tmp_path):
    """Two shards (frames k % 2 == i) write into one folder; the last to close counts every frame."""
    for shard in (0, 1):
        with SoloWriter(str(tmp_path), LABELS) as w:
            for k in range(shard, 6, 2):
                w.add(make_sample([[1, 1, 2, 2]], [1]), Image.new("RGB", (W, H)), index=k)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["totalFrames"] == meta["totalSequences"] == 6
    assert [s.metadata["sequence"] for s in open_dataset(str(tmp_path))] == list(range(6))


# --- layout variants -------------------------------------------------------------------------

def test_several_cameras_irregular_steps_and_wrong_metadata_totals(tmp_path):
    root = tmp_path / "solo"
    write_dataset(root, n=2)
    # frame 0 gets a second camera; sequence 1 gets steps 1 and 10 (sorted numerically, not as text)
    edit_frame(root, lambda d: d["captures"].append({**json.loads(json.dumps(d["captures"][0])), "id": "cam2"}))
    doc = json.loads(frame_file(root, 1).read_text())
    for step in (10, 1):
        frame_file(root, 1, step).write_text(json.dumps({**doc, "step": step}))
    (root / "metadata.json").write_text(json.dumps({"totalFrames": 99, "totalSequences": 1}))
    ds = open_dataset(str(root))
    meta = [(s.metadata["sequence"], s.metadata["step"], s.metadata["sensor_id"]) for s in ds]
    assert meta == [(0, 0, "camera"), (0, 0, "cam2"), (1, 0, "camera"), (1, 1, "camera"), (1, 10, "camera")]
    assert [s.image_id for s in ds] == list(range(5))
    assert ds[1].image == ds[0].image and ds[-1].boxes.shape == (2, 4)


def test_round_trip_through_a_uri(tmp_path):
    """Every read and write goes through synthgap.io.storage: an fsspec memory:// folder works like a path."""
    import fsspec

    root = f"memory://synthgap-tests/{tmp_path.name}"
    try:
        with SoloWriter(root, LABELS) as w:
            written = [w.add(make_sample([[1, 1, 2 + i, 2]], [2]), Image.new("RGB", (W, H)),
                             instance_map=np.full((H, W), 3 + i, np.uint16)) for i in range(2)]
        ds = open_dataset(root)
        assert [s.image for s in ds] == [s.image for s in written] and ds[1].image.startswith(root + "/")
        assert [s.boxes.tolist() for s in ds] == [[[1, 1, 2, 2]], [[1, 1, 3, 2]]]
        assert read_instance_map(ds[1].segmentation["instance"])[0, 0] == 4
    finally:
        fsspec.filesystem("memory").rm(root.split("://", 1)[1], recursive=True)


# --- bad input: each raises a DatasetError naming file, record and field ----------------------

def expect_error(root: Path, kind: str) -> DatasetError:
    with pytest.raises(DatasetError) as err:
        SoloDataset(str(root))
    assert err.value.kind == kind, err.value
    return err.value


def test_bad_malformed_json(tmp_path):
    write_dataset(tmp_path)
    frame_file(tmp_path, 1).write_text('{"captures": [')
    e = expect_error(tmp_path, "malformed_json")
    assert e.file.endswith("sequence.1/step0.frame_data.json") and "line 1" in str(e)


def test_bad_missing_annotation_definitions(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "annotation_definitions.json").unlink()
    assert "annotation_definitions.json" in expect_error(tmp_path, "missing_file").file


def test_bad_no_box_definition(tmp_path):
    write_dataset(tmp_path)
    path = tmp_path / "annotation_definitions.json"
    doc = json.loads(path.read_text())
    doc["annotationDefinitions"] = [d for d in doc["annotationDefinitions"] if "BoundingBox2D" not in d["@type"]]
    path.write_text(json.dumps(doc))
    expect_error(tmp_path, "no_box_definition")


def test_bad_missing_image(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "sequence.2" / "step0.camera.png").unlink()
    e = expect_error(tmp_path, "missing_image")
    assert e.file.endswith("sequence.2/step0.frame_data.json") and e.record == "captures[0]" and e.field == "filename"


def test_bad_box_outside_image(tmp_path):
    write_dataset(tmp_path)
    edit_frame(tmp_path, lambda d: box_values(d)[0].update(origin=[32.0, 2.0]))  # x = image width: no area inside
    e = expect_error(tmp_path, "box_outside_image")
    assert e.record == "captures[0] box 0" and e.field == "bbox"


@pytest.mark.parametrize("dimension", [[0.0, 4.0], [3.0, -1.0]])
def test_bad_zero_or_negative_box(tmp_path, dimension):
    write_dataset(tmp_path)
    edit_frame(tmp_path, lambda d: box_values(d)[0].update(dimension=dimension), seq=1)
    assert expect_error(tmp_path, "box_non_positive").file.endswith("sequence.1/step0.frame_data.json")


def test_bad_unknown_label(tmp_path):
    write_dataset(tmp_path)
    edit_frame(tmp_path, lambda d: box_values(d)[1].update(labelId=42), seq=2)
    e = expect_error(tmp_path, "unknown_label")
    assert e.record == "captures[0] box 1" and "42" in str(e)


def test_bad_empty_dataset(tmp_path):
    write_dataset(tmp_path)
    for folder in tmp_path.glob("sequence.*"):
        shutil.rmtree(folder)
    expect_error(tmp_path, "empty")


def test_bad_missing_origin(tmp_path):
    write_dataset(tmp_path)
    edit_frame(tmp_path, lambda d: box_values(d)[0].pop("origin"))
    e = expect_error(tmp_path, "missing_field")
    assert e.record == "captures[0]" and e.field == "annotations[0].values[0].origin"


def test_bad_wrong_type(tmp_path):
    write_dataset(tmp_path)
    edit_frame(tmp_path, lambda d: box_values(d)[0].update(dimension=["3", 4.5]))
    e = expect_error(tmp_path, "wrong_type")
    assert e.field == "annotations[0].values[0].dimension[0]" and "'3'" in str(e)


def test_bad_duplicate_sequence(tmp_path):
    write_dataset(tmp_path)
    shutil.copytree(tmp_path / "sequence.1", tmp_path / "sequence.01")
    assert "stored twice" in str(expect_error(tmp_path, "duplicate_frame"))


def test_skip_invalid_drops_bad_frames_and_keeps_len_right(tmp_path):
    write_dataset(tmp_path, n=4)
    edit_frame(tmp_path, lambda d: box_values(d)[0].update(labelId=42), seq=1)
    frame_file(tmp_path, 3).write_text("not json")
    ds = open_dataset(str(tmp_path), skip_invalid=True)
    assert len(ds) == 2 and [s.metadata["sequence"] for s in ds] == [0, 2]
    assert len(ds.skipped) == 2 and ds.skipped.counts() == {"unknown_label": 1, "malformed_json": 1}
    assert [s.image_id for s in ds] == [0, 1]


def test_index_is_compact(tmp_path):
    """The index keeps a path per frame and two small ints per sample, never parsed annotations."""
    write_dataset(tmp_path, n=3, instance=False)
    ds = open_dataset(str(tmp_path))
    assert ds._frames == [f"sequence.{i}/step0.frame_data.json" for i in range(3)]
    assert ds._frame_of.dtype == np.int32 and ds._capture_of.dtype == np.int16
    kept = {k: v for k, v in vars(ds).items() if k not in ("label_map", "_frames", "skipped_sensors")}
    assert not any(isinstance(v, (Sample, dict, list)) for v in kept.values())


@pytest.mark.parametrize("field,value,kind", [
    ("dimension", [float("nan"), 24.0], "bad_image_size"),
    ("dimension", [32.5, 24.0], "bad_image_size"),
    ("labelId", float("inf"), "wrong_type"),
    ("labelId", 1.5, "wrong_type"),
])
def test_bad_non_finite_or_fractional_numbers(tmp_path, field, value, kind):
    write_dataset(tmp_path)
    if field == "dimension":
        edit_frame(tmp_path, lambda d: d["captures"][0].update(dimension=value))
    else:
        edit_frame(tmp_path, lambda d: box_values(d)[0].update(labelId=value))
    expect_error(tmp_path, kind)


# --- issue 14: ids of any size, paths, sensors, types, overhanging boxes, unreadable files -----

def test_label_ids_beyond_64_bits_read_exactly(tmp_path):
    big = 2 ** 64 + 5
    write_dataset(tmp_path, n=1)
    path = tmp_path / "annotation_definitions.json"
    doc = json.loads(path.read_text())
    doc["annotationDefinitions"][0]["spec"].append({"label_id": big, "label_name": "huge"})
    path.write_text(json.dumps(doc))
    edit_frame(tmp_path, lambda d: box_values(d)[0].update(labelId=big))
    ds = open_dataset(str(tmp_path))
    assert ds.label_map[big] == "huge" and ds[0].labels.tolist() == [big]


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "../sequence.1/../../x.png"])
def test_image_paths_must_stay_inside_the_dataset(tmp_path, name):
    write_dataset(tmp_path)
    edit_frame(tmp_path, lambda d: d["captures"][0].update(filename=name))
    e = expect_error(tmp_path, "path_outside_dataset")
    assert e.field == "filename" and e.record == "captures[0]" and name in str(e)
    ok = "../sequence.1/step0.camera.png"  # a ".." that stays inside the root is fine
    edit_frame(tmp_path, lambda d: d["captures"][0].update(filename=ok))
    assert SoloDataset(str(tmp_path))[0].image == str(tmp_path / "sequence.1" / "step0.camera.png")


def test_segmentation_paths_must_stay_inside_the_dataset(tmp_path):
    write_dataset(tmp_path)
    edit_frame(tmp_path, lambda d: d["captures"][0]["annotations"][1].update(filename="../../../etc/passwd"))
    assert expect_error(tmp_path, "path_outside_dataset").field == "annotations[1].filename"


def test_non_camera_captures_are_skipped_and_counted(tmp_path):
    write_dataset(tmp_path, n=2)

    def add_depth(d):
        depth = dict(d["captures"][0], **{"@type": "type.unity.com/unity.solo.DepthCamera", "filename": "d.exr"})
        d["captures"].append(depth)
    edit_frame(tmp_path, add_depth)
    ds = SoloDataset(str(tmp_path))
    assert len(ds) == 2 and ds.skipped_sensors == {"DepthCamera": 1} and not ds.skipped


@pytest.mark.parametrize("edit,field", [
    (lambda v: v.update(origin=[True, 2.0]), "annotations[0].values[0].origin[0]"),
    (lambda v: v.update(labelId=True), "annotations[0].values[0].labelId"),
    (lambda v: v.update(origin=[1.0, 2.0, 3.0], dimension=[4.0]), "annotations[0].values[0].origin"),
])
def test_bools_and_wrong_lengths_are_not_numbers(tmp_path, edit, field):
    write_dataset(tmp_path)
    edit_frame(tmp_path, lambda d: edit(box_values(d)[0]), seq=1)  # frame 1 has 2 boxes: bulk path first
    e = expect_error(tmp_path, "wrong_type")
    assert e.field == field and e.file.endswith("sequence.1/step0.frame_data.json")


def test_box_partly_outside_is_kept_as_written(tmp_path):
    write_dataset(tmp_path, n=1)
    edit_frame(tmp_path, lambda d: box_values(d)[0].update(origin=[30.0, 20.0], dimension=[5.0, 7.0]))
    assert SoloDataset(str(tmp_path))[0].boxes.tolist() == [[30.0, 20.0, 5.0, 7.0]]


@pytest.mark.parametrize("edit,kind,field", [
    (lambda d: d["captures"][0].update(dimension=[2.0 ** 70, 24.0]), "bad_image_size", "width"),
    (lambda d: d["captures"][0].update(dimension=[1e10, 24.0]), "bad_image_size", "width"),
    (lambda d: box_values(d)[0].update(origin=[10 ** 400, 1]), "number_too_large",
     "annotations[0].values[0].origin[0]"),
])
def test_absurd_sizes_are_clear_errors(tmp_path, edit, kind, field):
    write_dataset(tmp_path)
    edit_frame(tmp_path, edit)
    e = expect_error(tmp_path, kind)
    assert e.field == field and e.file.endswith("sequence.0/step0.frame_data.json")


@pytest.mark.parametrize("content,kind", [
    ("[" * 100_000 + "]" * 100_000, "malformed_json"),       # RecursionError in json
    (b'{"frame": "\xff\xfe", "captures": []}', "malformed_json"),  # not UTF-8
    ("folder", "unreadable_file"),                            # a folder named like a frame
])
def test_unreadable_frames_are_one_line_errors_and_skippable(tmp_path, content, kind):
    write_dataset(tmp_path)
    path = frame_file(tmp_path, 1)
    if content == "folder":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    e = expect_error(tmp_path, kind)
    assert e.file.endswith("sequence.1/step0.frame_data.json")
    ds = SoloDataset(str(tmp_path), skip_invalid=True)
    assert len(ds) == 2 and ds.skipped.counts() == {kind: 1}


def test_folder_shaped_definitions_are_a_one_line_error(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "annotation_definitions.json").unlink()
    (tmp_path / "annotation_definitions.json").mkdir()
    assert expect_error(tmp_path, "unreadable_file").file.endswith("annotation_definitions.json")
