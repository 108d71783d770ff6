"""Legacy Unity Perception reader and writer: the real Unity fixture, layout variants, round trips, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthgap.data import DatasetError, Sample, open_dataset
from synthgap.data.dataset import detect_format
from synthgap.data.perception import CAPTURES_PER_FILE, PerceptionDataset, PerceptionWriter
from synthgap.data.solo import read_instance_map

LABELS = {1: "apple", 2: "pear", 7: "plum"}
W, H = 32, 24


def make_sample(boxes, labels, **kw):
    return Sample(image="", width=W, height=H, boxes=boxes, labels=labels, **kw)


def write_dataset(root: Path, n: int = 3, *, instance: bool = False) -> list[Sample]:
    """A small valid legacy dataset: capture i has i + 1 boxes."""
    out = []
    with PerceptionWriter(str(root), LABELS) as w:
        for i in range(n):
            k = i % 4 + 1
            boxes = [[1 + j, 2 + j, 3.25 + j, 4.5] for j in range(k)]
            labels = [list(LABELS)[j % 3] for j in range(k)]
            inst = None
            if instance:
                inst = np.zeros((H, W), dtype=np.uint32)
                inst[3, 2] = 70000 + i
            out.append(w.add(make_sample(boxes, labels, instance_ids=tuple(70000 + i + j for j in range(k))),
                             Image.new("RGB", (W, H), (i % 256, 0, 0)), instance_map=inst))
    return out


def edit_captures(root: Path, fn, chunk: str = "captures_000.json") -> None:
    path = root / chunk
    doc = json.loads(path.read_text())
    fn(doc["captures"])
    path.write_text(json.dumps(doc))


def values(captures, c=0):
    return captures[c]["annotations"][0]["values"]


# --- the real Unity fixture ------------------------------------------------------------------

def test_fixture_is_read_exactly(legacy_fixture):
    ds = open_dataset(str(legacy_fixture))
    assert isinstance(ds, PerceptionDataset) and detect_format(str(legacy_fixture)) == "perception"
    defs = json.loads((legacy_fixture / "annotation_definitions.json").read_text())["annotation_definitions"]
    box_def = next(d for d in defs if d["name"] == "bounding box")
    assert ds.label_map == {s["label_id"]: s["label_name"] for s in box_def["spec"]} == {1: "person"}
    captures = json.loads((legacy_fixture / "captures_000.json").read_text())["captures"]
    assert len(ds) == len(captures) == 2
    for i, capture in enumerate(captures):
        box_ann = [a for a in capture["annotations"] if a["annotation_definition"] == box_def["id"]]
        assert len(box_ann) == 1 and len(capture["annotations"]) == 2  # the keypoints stay out
        vals = box_ann[0]["values"]
        s = ds[i]
        assert s.image == str(legacy_fixture / capture["filename"])
        assert (s.width, s.height) == Image.open(s.image).size == (640, 640)  # from the PNG header
        assert s.boxes.tolist() == [[v["x"], v["y"], v["width"], v["height"]] for v in vals]
        assert s.labels.tolist() == [v["label_id"] for v in vals]
        assert s.instance_ids == tuple(v["instance_id"] for v in vals)
        assert all(isinstance(v, int) for v in s.instance_ids)
        assert s.metadata["capture_id"] == capture["id"] and s.metadata["sequence_id"] == capture["sequence_id"]
        assert s.metadata["sensor_id"] == capture["sensor"]["sensor_id"] and s.metadata["step"] == capture["step"]
        assert s.metadata["record"] == f"captures[{i}]" and s.image_id == i and s.segmentation == {}


def test_fixture_in_a_dataset_subfolder(legacy_fixture, tmp_path):
    """Unity's own layout: JSON in Dataset<guid>/, image paths relative to the parent folder."""
    root = tmp_path / "run"
    shutil.copytree(legacy_fixture / "annotations", root / "annotations")
    json_dir = root / "Dataset7c2e"
    json_dir.mkdir()
    for f in legacy_fixture.glob("*.json"):
        shutil.copy(f, json_dir)
    ds = open_dataset(str(root))
    assert isinstance(ds, PerceptionDataset) and ds.json_folder == str(json_dir) and len(ds) == 2
    assert ds[1].image == str(root / "annotations" / "keypoint_001.png") and ds[1].boxes.shape == (7, 4)
    inner = open_dataset(str(json_dir))  # opening Dataset<guid> itself: images resolve from its parent
    assert inner.image_root == str(root) and inner[1].image == ds[1].image


# --- schema variants -------------------------------------------------------------------------

def test_integer_definition_ids_string_instance_ids_and_chunk_order(tmp_path):
    """Definition ids may be ints, instance ids strings; chunks sort numerically (2 before 10);
    a capture without a box annotation is an image with no boxes; the definition is found by name."""
    Image.new("RGB", (W, H)).save(tmp_path / "a.png")
    (tmp_path / "annotation_definitions.json").write_text(json.dumps({"annotation_definitions": [
        {"id": 5, "name": "semantic segmentation", "format": "PNG"},
        {"id": 3, "name": "2D Bounding Box", "format": "JSON", "spec": [{"label_id": 4, "label_name": "can"}]},
    ]}))

    def capture(cid, anns):
        return {"id": cid, "sequence_id": "s", "step": 0, "sensor": {"sensor_id": "cam"}, "filename": "a.png",
                "annotations": anns}

    box = {"annotation_definition": 3, "values": [
        {"label_id": 4, "instance_id": "obj-9", "x": 1, "y": 2, "width": 3, "height": 4}]}
    (tmp_path / "captures_10.json").write_text(json.dumps({"captures": [capture("c10", [box])]}))
    (tmp_path / "captures_2.json").write_text(json.dumps({"captures": [
        capture("c2a", [{"annotation_definition": 5, "filename": "a.png"}]), capture("c2b", [box])]}))
    ds = open_dataset(str(tmp_path))
    assert ds.label_map == {4: "can"} and len(ds) == 3
    assert [s.metadata["capture_id"] for s in ds] == ["c2a", "c2b", "c10"]
    assert ds[0].boxes.shape == (0, 4) and ds[0].segmentation == {"semantic": str(tmp_path / "a.png")}
    assert ds[2].instance_ids == ("obj-9",) and ds[2].boxes.tolist() == [[1, 2, 3, 4]]


def test_random_access_reads_one_capture_and_handles_non_ascii(tmp_path):
    """Captures are re-read alone by byte span: any order works, UTF-8 text inside included."""
    written = write_dataset(tmp_path, n=6)
    folder = Path(written[4].image).parent
    (folder / "rgb_4.png").rename(folder / "rgb_4 é.png")
    edit_captures(tmp_path, lambda c: c[4].update(filename=c[4]["filename"].replace("rgb_4", "rgb_4 é")))
    path = tmp_path / "captures_000.json"
    text = path.read_text().replace('"apple"', '"äpfel 🍎"')  # multi-byte characters shift byte offsets
    path.write_text(json.dumps(json.loads(text), indent=4, ensure_ascii=False))
    assert "é" in path.read_text() and "🍎" in path.read_text()
    ds = open_dataset(str(tmp_path))
    for i in [5, 0, 4, 2, 4, 1, 3]:
        assert ds[i].boxes.tolist() == written[i].boxes.tolist() and ds[i].metadata["record"] == f"captures[{i}]"
    assert ds[4].image.endswith("rgb_4 é.png")


def test_sensor_dimension_is_used_instead_of_the_header(tmp_path):
    write_dataset(tmp_path, n=1)
    edit_captures(tmp_path, lambda c: c[0]["sensor"].update(dimension=[64.0, 48.0]))
    s = open_dataset(str(tmp_path))[0]
    assert (s.width, s.height) == (64, 48) and Image.open(s.image).size == (W, H)


# --- writer ----------------------------------------------------------------------------------

def test_writer_round_trip_over_several_chunks(tmp_path):
    n = CAPTURES_PER_FILE + 7
    written = write_dataset(tmp_path / "p", n=n, instance=True)
    assert sorted(p.name for p in (tmp_path / "p").glob("captures_*.json")) == ["captures_000.json",
                                                                                "captures_150.json"]
    ds = open_dataset(str(tmp_path / "p"))
    assert isinstance(ds, PerceptionDataset) and len(ds) == n and ds.label_map == LABELS
    for i in [0, 1, CAPTURES_PER_FILE - 1, CAPTURES_PER_FILE, n - 1, 2]:  # crosses the chunk cache both ways
        w, r = written[i], ds[i]
        assert r.image == w.image and (r.width, r.height) == (W, H)
        np.testing.assert_array_equal(r.boxes, w.boxes)
        np.testing.assert_array_equal(r.labels, w.labels)
        assert r.instance_ids == w.instance_ids and r.image_id == w.image_id == i
        assert dict(r.segmentation) == dict(w.segmentation) and dict(r.metadata) == dict(w.metadata)
    assert read_instance_map(ds[n - 1].segmentation["instance"])[3, 2] == 70000 + n - 1


def test_writer_is_byte_deterministic(tmp_path):
    write_dataset(tmp_path / "a", instance=True)
    write_dataset(tmp_path / "b", instance=True)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert len(files) == 6 + 2 * 3
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_sharded_writers_share_one_folder(tmp_path):
    """Shards writing frames k % 2 == i into one folder: chunks are named by their first frame, no clash."""
    for shard in (0, 1):
        with PerceptionWriter(str(tmp_path), LABELS) as w:
            for k in range(shard, 2 * CAPTURES_PER_FILE + 2, 2):
                w.add(make_sample([[1, 1, 2, 2 + k % 5]], [7]), Image.new("RGB", (W, H)), index=k)
    ds = open_dataset(str(tmp_path))
    assert len(ds) == 2 * CAPTURES_PER_FILE + 2
    heights = sorted((int(Path(s.image).stem.split("_")[1]), s.boxes[0, 3]) for s in ds)
    assert heights == [(k, 2 + k % 5) for k in range(2 * CAPTURES_PER_FILE + 2)]


def test_round_trip_through_a_uri(tmp_path):
    """Every read and write goes through synthgap.io.storage: an fsspec memory:// folder works like a path."""
    import fsspec

    root = f"memory://synthgap-tests/{tmp_path.name}"
    try:
        with PerceptionWriter(root, LABELS) as w:
            written = [w.add(make_sample([[1, 1, 2 + i, 2]], [2]), Image.new("RGB", (W, H)),
                             instance_map=np.full((H, W), 3 + i, np.uint16)) for i in range(2)]
        ds = open_dataset(root)
        assert [s.image for s in ds] == [s.image for s in written] and ds[1].image.startswith(root + "/")
        assert [s.boxes.tolist() for s in ds] == [[[1, 1, 2, 2]], [[1, 1, 3, 2]]]
        assert read_instance_map(ds[1].segmentation["instance"])[0, 0] == 4
    finally:
        fsspec.filesystem("memory").rm(root.split("://", 1)[1], recursive=True)


# --- bad input -------------------------------------------------------------------------------

def expect_error(root: Path, kind: str) -> DatasetError:
    with pytest.raises(DatasetError) as err:
        PerceptionDataset(str(root))
    assert err.value.kind == kind, err.value
    return err.value


def test_bad_malformed_json(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "captures_000.json").write_text('{"captures": [}')
    assert expect_error(tmp_path, "malformed_json").file.endswith("captures_000.json")


def test_bad_captures_not_a_list(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "captures_000.json").write_text('{"version": "0.0.1", "captures": {"id": 1}}')
    e = expect_error(tmp_path, "wrong_type")
    assert e.file.endswith("captures_000.json") and e.field == "captures"


def test_bad_missing_annotation_definitions(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "annotation_definitions.json").unlink()
    assert expect_error(tmp_path, "missing_file").file.endswith("annotation_definitions.json")


def test_bad_no_box_definition(tmp_path):
    write_dataset(tmp_path)
    path = tmp_path / "annotation_definitions.json"
    doc = json.loads(path.read_text())
    doc["annotation_definitions"][0]["name"] = "keypoints"
    path.write_text(json.dumps(doc))
    expect_error(tmp_path, "no_box_definition")


def test_bad_missing_image(tmp_path):
    written = write_dataset(tmp_path)
    Path(written[1].image).unlink()
    e = expect_error(tmp_path, "missing_image")
    assert e.file.endswith("captures_000.json") and e.record == "captures[1]" and e.field == "filename"


def test_bad_unreadable_image_header(tmp_path):
    written = write_dataset(tmp_path)
    Path(written[2].image).write_bytes(b"not a png at all")
    e = expect_error(tmp_path, "unreadable_image")
    assert e.record == "captures[2]" and written[2].image in str(e)


def test_bad_box_outside_image(tmp_path):
    write_dataset(tmp_path)
    edit_captures(tmp_path, lambda c: values(c, 1)[1].update(x=40.0))
    e = expect_error(tmp_path, "box_outside_image")
    assert e.record == "captures[1] box 1" and e.field == "bbox"


def test_bad_zero_size_box(tmp_path):
    write_dataset(tmp_path)
    edit_captures(tmp_path, lambda c: values(c)[0].update(height=0))
    expect_error(tmp_path, "box_non_positive")


def test_bad_unknown_label(tmp_path):
    write_dataset(tmp_path)
    edit_captures(tmp_path, lambda c: values(c, 2)[0].update(label_id=99))
    assert expect_error(tmp_path, "unknown_label").record == "captures[2] box 0"


def test_bad_empty_dataset(tmp_path):
    write_dataset(tmp_path)
    edit_captures(tmp_path, lambda c: c.clear())
    expect_error(tmp_path, "empty")


def test_bad_missing_field(tmp_path):
    write_dataset(tmp_path)
    edit_captures(tmp_path, lambda c: values(c, 1)[0].pop("width"))
    e = expect_error(tmp_path, "missing_field")
    assert e.record == "captures[1]" and e.field == "annotations[0].values[0].width"


def test_bad_wrong_type(tmp_path):
    write_dataset(tmp_path)
    edit_captures(tmp_path, lambda c: values(c)[0].update(y="2"))
    assert expect_error(tmp_path, "wrong_type").field == "annotations[0].values[0].y"


def test_skip_invalid_drops_bad_captures_and_keeps_len_right(tmp_path):
    written = write_dataset(tmp_path, n=5)
    edit_captures(tmp_path, lambda c: values(c, 1)[0].update(label_id=99))
    Path(written[3].image).unlink()
    ds = open_dataset(str(tmp_path), skip_invalid=True)
    assert len(ds) == 3 and [s.metadata["record"] for s in ds] == ["captures[0]", "captures[2]", "captures[4]"]
    assert ds.skipped.counts() == {"unknown_label": 1, "missing_image": 1}
    assert [s.image_id for s in ds] == [0, 1, 2] and ds[2].image == written[4].image


# --- issue 14: paths, sensors, unreadable files, ids and sizes --------------------------------

@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd"])
def test_image_paths_must_stay_inside_the_dataset(tmp_path, name):
    write_dataset(tmp_path)
    edit_captures(tmp_path, lambda c: c[1].update(filename=name))
    e = expect_error(tmp_path, "path_outside_dataset")
    assert (e.record, e.field) == ("captures[1]", "filename") and name in str(e)


def test_only_camera_captures_are_read_others_are_counted(tmp_path):
    write_dataset(tmp_path, n=3)

    def add_sensors(c):
        c.append(dict(c[0], sensor=dict(c[0]["sensor"], modality="depth"), filename=c[0]["filename"]))
        c.append(dict(c[0], sensor=dict(c[0]["sensor"], modality="lidar"), filename="Lidar/points_0.pcd",
                      annotations=[]))
    edit_captures(tmp_path, add_sensors)
    ds = PerceptionDataset(str(tmp_path))
    assert len(ds) == 3 and ds.skipped_sensors == {"depth": 1, "lidar": 1} and not ds.skipped


def test_truncated_captures_file_names_the_json_error_not_empty(tmp_path):
    write_dataset(tmp_path)
    path = tmp_path / "captures_000.json"
    path.write_bytes(path.read_bytes()[:200])
    for skip in (False, True):  # info opens with skip_invalid=True
        with pytest.raises(DatasetError) as err:
            PerceptionDataset(str(tmp_path), skip_invalid=skip)
        assert err.value.kind == "malformed_json" and err.value.file.endswith("captures_000.json")


@pytest.mark.parametrize("mutate,kind", [
    (lambda p: p.write_bytes(p.read_bytes().replace(b'"step": 0', b'"step": "\xff"', 1)), "malformed_json"),
    (lambda p: p.write_text('{"captures": [' + "[" * 100_000 + "]" * 100_000 + "]}"), "malformed_json"),
    (lambda p: (p.unlink(), p.mkdir()), "unreadable_file"),
])
def test_unreadable_captures_files_are_one_line_errors_and_skippable(tmp_path, mutate, kind):
    write_dataset(tmp_path, n=CAPTURES_PER_FILE + 2)  # two chunks: captures_000.json, captures_150.json
    mutate(tmp_path / "captures_150.json")
    e = expect_error(tmp_path, kind)
    assert e.file.endswith("captures_150.json")
    ds = PerceptionDataset(str(tmp_path), skip_invalid=True)
    assert len(ds) == CAPTURES_PER_FILE and ds.skipped.counts() == {kind: 1}


def test_label_ids_beyond_64_bits_and_overhanging_boxes_read_exactly(tmp_path):
    big = 2 ** 64 + 5
    write_dataset(tmp_path, n=1)
    path = tmp_path / "annotation_definitions.json"
    doc = json.loads(path.read_text())
    doc["annotation_definitions"][0]["spec"].append({"label_id": big, "label_name": "huge"})
    path.write_text(json.dumps(doc))
    edit_captures(tmp_path, lambda c: values(c)[0].update(label_id=big, x=30.0, width=5.0))
    s = PerceptionDataset(str(tmp_path))[0]
    assert s.labels.tolist() == [big] and s.boxes.tolist() == [[30.0, 2.0, 5.0, 4.5]]


@pytest.mark.parametrize("edit,kind,field", [
    (lambda c: c[0]["sensor"].update(dimension=[1e10, 24]), "bad_image_size", "width"),
    (lambda c: values(c)[0].update(x=True), "wrong_type", "annotations[0].values[0].x"),
    (lambda c: values(c)[0].update(y=10 ** 400), "number_too_large", "annotations[0].values[0].y"),
])
def test_absurd_sizes_and_bools_are_clear_errors(tmp_path, edit, kind, field):
    write_dataset(tmp_path)
    edit_captures(tmp_path, edit)
    e = expect_error(tmp_path, kind)
    assert (e.record, e.field) == ("captures[0]", field) and e.file.endswith("captures_000.json")


def test_decompression_bomb_image_is_a_skippable_error(tmp_path):
    from tests.data.test_groceries_real import png_claiming_size

    written = write_dataset(tmp_path)
    Path(written[1].image).write_bytes(png_claiming_size(60000, 60000))  # header read for the image size
    e = expect_error(tmp_path, "image_too_large")
    assert (e.record, e.field) == ("captures[1]", "filename") and written[1].image in str(e)
    ds = PerceptionDataset(str(tmp_path), skip_invalid=True)
    assert len(ds) == 2 and ds.skipped.counts() == {"image_too_large": 1}
