import json

import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools.coco import COCO

from synthgap.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def make_coco(root, mutate=None):
    """Three images (one without boxes) in COCO layout; ``mutate(dict)`` breaks it on purpose."""
    root.mkdir(parents=True, exist_ok=True)
    data = {
        "images": [{"id": i, "file_name": f"im{i}.png", "width": 64, "height": 48} for i in (1, 2, 3)],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1.25, 2.5, 40.0, 40.0], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [10, 10, 5, 5], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 20, 10], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "cereal"}, {"id": 2, "name": "soup"}, {"id": 5, "name": "tea"}],
    }
    for im in data["images"]:
        Image.new("RGB", (64, 48)).save(root / im["file_name"])
    if mutate:
        mutate(data)
    (root / "instances.json").write_text(json.dumps(data))
    return root / "instances.json"


def test_info_text_and_json(tmp_path):
    path = make_coco(tmp_path / "c")
    res = run("info", path)
    assert res.exit_code == 0, res.output
    assert "format:  coco" in res.stdout and "images:  3 (1 without boxes)" in res.stdout
    assert "boxes:   3" in res.stdout and "problems: none" in res.stdout
    res = run("info", path, "--json")
    assert res.exit_code == 0
    report = json.loads(res.stdout)
    assert report["classes"] == [{"name": "cereal", "id": 1, "count": 2}, {"name": "soup", "id": 2, "count": 1},
                                 {"name": "tea", "id": 5, "count": 0}]
    assert report["images_without_boxes"] == 1 and report["box_size_px"]["width"]["max"] == 40.0
    assert report["box_size_px"]["coco_small"] == 2 and report["box_size_px"]["coco_medium"] == 1
    assert report["problems"] == []


def test_info_lists_problems_and_exit_code(tmp_path):
    def breaks(d):
        d["annotations"][2]["bbox"] = [64, 0, 20, 10]          # no area inside the 64x48 image 2
        d["annotations"].append({"id": 4, "image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1]})
    path = make_coco(tmp_path / "c", breaks)
    (tmp_path / "c" / "im3.png").unlink()
    res = run("info", path, "--json")
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert report["problem_counts"] == {"box_outside_image": 1, "missing_image": 1, "unknown_image": 1}
    outside = next(p for p in report["problems"] if p["kind"] == "box_outside_image")
    assert outside["file"] == str(path) and outside["record"] == "annotations[2] (id 3)" and outside["field"] == "bbox"
    missing = next(p for p in report["problems"] if p["kind"] == "missing_image")
    assert missing["file"] == str(tmp_path / "c" / "im3.png") and missing["record"] == "image_id 3"
    assert report["images"] == 2  # image 2 left out, image 3 counted but its file is missing
    res = run("info", path, "--skip-invalid")
    assert res.exit_code == 0 and "problems: 3 (1 box_outside_image, 1 missing_image, 1 unknown_image)" in res.stdout
    assert "annotations[2] (id 3)" in res.stdout


@pytest.mark.parametrize("content,needle", [
    ('{"images": [', "malformed JSON"),
    ('{"images": [], "annotations": [], "categories": []}', "no images"),
    ('{"annotations": [], "categories": []}', "missing key 'images'"),
    ('{"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}], "annotations": [], "categories": [1]}',
     "category is not an object"),
])
def test_info_fatal_errors(tmp_path, content, needle):
    (tmp_path / "x.json").write_text(content)
    res = run("info", tmp_path / "x.json")
    assert res.exit_code == 1 and needle in res.output and str(tmp_path / "x.json") in res.output


def test_convert_coco_to_coco_with_copy(tmp_path):
    path = make_coco(tmp_path / "c")
    out = tmp_path / "out"
    res = run("convert", path, out, "--to", "coco", "--copy-images")
    assert res.exit_code == 0, res.output
    assert "wrote 3 images, 3 boxes, 3 classes" in res.stdout and "skipped 0 records" in res.stdout
    coco = COCO(str(out / "annotations.json"))
    assert coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]["bbox"] == [1.25, 2.5, 40.0, 40.0]
    assert coco.imgs[1]["file_name"] == "images/im1.png" and (out / "images" / "im1.png").exists()
    assert run("info", out).exit_code == 0


def test_convert_skip_invalid_counts_and_reasons(tmp_path):
    def breaks(d):
        d["annotations"][0]["bbox"] = [1, 2, float("nan"), 4]
        d["annotations"][2]["category_id"] = 99
    path = make_coco(tmp_path / "c", breaks)
    res = run("convert", path, tmp_path / "o.json")
    assert res.exit_code == 1 and "annotations[0] (id 1)" in res.output and "field 'bbox'" in res.output
    assert not (tmp_path / "o.json").exists()
    res = run("convert", path, tmp_path / "o.json", "--skip-invalid")
    assert res.exit_code == 0, res.output
    assert "wrote 1 images, 0 boxes" in res.stdout
    assert "skipped 2 invalid records (1 box_not_finite, 1 unknown_label)" in res.stdout
    assert COCO(str(tmp_path / "o.json")).getImgIds() == [3]


def make_groceries(root):
    (root / "images").mkdir(parents=True)
    records = [{"file_name": f"IMG_{i}.JPG", "annotations": [{"label_id": 2, "bbox": [1, 1, 5.5, 6]}]}
               for i in range(4)]
    for r in records:
        Image.new("RGB", (16, 12)).save(root / "images" / r["file_name"], format="JPEG")
    (root / "annotations.json").write_text(json.dumps(records))
    (root / "annotation_definitions.json").write_text(json.dumps({"annotation_definitions": [
        {"id": "x", "name": "bounding box",
         "spec": [{"label_id": 1, "label_name": "a"}, {"label_id": 2, "label_name": "b"}]}]}))
    (root / "groceries_real_test.txt").write_text("3 1")
    return root


def test_convert_groceries_real_split(tmp_path):
    root = make_groceries(tmp_path / "g")
    res = run("convert", root, tmp_path / "t.json", "--from", "groceries-real", "--split", "test")
    assert res.exit_code == 0, res.output
    coco = COCO(str(tmp_path / "t.json"))
    assert sorted(coco.getImgIds()) == [1, 3] and coco.imgs[3]["width"] == 16
    assert coco.anns[1]["bbox"] == [1.0, 1.0, 5.5, 6.0] and coco.cats[2]["name"] == "b"
    res = run("info", root, "--split", "test", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["format"] == "groceries-real"
    res = run("info", root, "--split", "nope")
    assert res.exit_code == 1 and "available: all, test" in res.output


def test_info_groceries_problems(tmp_path):
    root = make_groceries(tmp_path / "g")
    records = json.loads((root / "annotations.json").read_text())
    records[1]["annotations"][0]["label_id"] = 7
    (root / "annotations.json").write_text(json.dumps(records))
    (root / "groceries_real_test.txt").write_text("3 1 12")
    res = run("info", root, "--split", "test", "--json")
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert report["problem_counts"] == {"index_out_of_range": 1, "unknown_label": 1} and report["images"] == 1
    assert {p["file"] for p in report["problems"]} == {str(root / "annotations.json"),
                                                       str(root / "groceries_real_test.txt")}
    res = run("convert", root, tmp_path / "t.json", "--split", "test", "--skip-invalid")
    assert res.exit_code == 0 and "skipped 2 invalid records (1 index_out_of_range, 1 unknown_label)" in res.stdout


def test_convert_real_solo_fixture(tmp_path, solo_fixture):
    res = run("convert", solo_fixture, tmp_path / "solo.json", "--from", "solo")
    assert res.exit_code == 0, res.output
    coco = COCO(str(tmp_path / "solo.json"))
    assert len(coco.getImgIds()) == 2 and len(coco.getAnnIds()) > 0
    for img in coco.imgs.values():
        assert img["file_name"].endswith("step0.camera.png") and (img["width"], img["height"]) > (0, 0)
    # every sequence names its image step0.camera.png: copies must not overwrite each other
    res = run("convert", solo_fixture, tmp_path / "copy", "--copy-images")
    assert res.exit_code == 0, res.output
    names = sorted(im["file_name"] for im in COCO(str(tmp_path / "copy" / "annotations.json")).imgs.values())
    assert len(set(names)) == 2 and all((tmp_path / "copy" / n).is_file() for n in names)
    assert run("info", tmp_path / "copy").exit_code == 0


def test_info_nonexistent_path(tmp_path):
    res = run("info", tmp_path / "nope")
    assert res.exit_code == 1 and "no such file or folder" in res.output


def test_help_texts():
    for cmd in ("info", "convert"):
        res = run(cmd, "--help")
        assert res.exit_code == 0
        for flag in ("--skip-invalid", "--format" if cmd == "info" else "--copy-images"):
            assert flag in res.stdout


@pytest.mark.parametrize("dst", ["SRC", "SRC/instances.json", "FOLDER", "FOLDER/coco", "FOLDER/../c/x/../coco.json"])
def test_convert_refuses_an_output_that_is_or_is_inside_the_source(tmp_path, dst):
    """issue 14 item 6: `convert SRC SRC` overwrote the source; now a usage error and the source unchanged."""
    path = make_coco(tmp_path / "c")
    before = {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()}
    src = str(path) if not dst.startswith("FOLDER") else str(tmp_path / "c")
    target = dst.replace("SRC", str(path)).replace("FOLDER", str(tmp_path / "c"))
    if dst == "SRC/instances.json":  # a JSON source and --copy-images into its own folder
        target = str(tmp_path / "c")
    res = run("convert", src, target, "--skip-invalid", *(["--copy-images"] if dst == "SRC/instances.json" else []))
    assert res.exit_code == 2 and "is, or is inside, SRC" in res.output, res.output
    assert {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()} == before


def test_convert_beside_a_json_source_is_allowed(tmp_path):
    path = make_coco(tmp_path / "c")
    assert run("convert", path, tmp_path / "c" / "converted.json").exit_code == 0


# ---- issue 14: ids of any size, overhanging boxes, iscrowd, decoding, paths, sensors --------------------------

def test_datasetinsights_uuid_ids_read_and_convert_unchanged(tmp_path):
    """Unity's datasetinsights COCO converter writes uuid.UUID(...).int image and annotation ids (128 bits)."""
    img, cat = 0xC0FFEE00112233445566778899AABBCC, 2 ** 64 + 7

    def huge_ids(d):
        d["images"][0]["id"] = img
        d["annotations"][0].update(id=0x0123456789ABCDEF0123456789ABCDEF, image_id=img, category_id=cat)
        d["annotations"][1]["image_id"] = img
        d["categories"].append({"id": cat, "name": "huge"})
    path = make_coco(tmp_path / "c", huge_ids)
    res = run("info", path, "--json")
    assert res.exit_code == 0, res.output
    assert {"name": "huge", "id": cat, "count": 1} in json.loads(res.stdout)["classes"]
    res = run("convert", path, tmp_path / "o.json")
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "o.json").read_text())
    assert img in {im["id"] for im in out["images"]} and {c["id"] for c in out["categories"]} == {1, 2, 5, cat}
    assert [(a["image_id"], a["category_id"]) for a in out["annotations"] if a["image_id"] == img] == \
        [(img, cat), (img, 2)]


def test_boxes_past_the_image_edge_are_a_warning_not_a_problem(tmp_path):
    # Unity's own converter output holds y + h = 251 on a 240 px image; here y + h = 51 on a 48 px image
    path = make_coco(tmp_path / "c", lambda d: d["annotations"][2].update(bbox=[10, 41, 20, 10]))
    res = run("info", path, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["warnings"] == {"boxes_partly_outside_image": 1} and report["problems"] == []
    res = run("info", path)
    assert "warnings: 1 boxes run past the image edge" in res.stdout and "problems: none" in res.stdout
    assert run("convert", path, tmp_path / "o.json").exit_code == 0
    assert json.loads((tmp_path / "o.json").read_text())["annotations"][2]["bbox"] == [10, 41, 20, 10]


@pytest.mark.parametrize("value", ["0", "no", "false", None])
def test_iscrowd_that_is_not_0_1_or_boolean_is_a_problem(tmp_path, value):
    path = make_coco(tmp_path / "c", lambda d: d["annotations"][1].update(iscrowd=value))
    res = run("info", path, "--json")
    assert res.exit_code == 1
    (problem,) = json.loads(res.stdout)["problems"]
    assert (problem["kind"], problem["record"], problem["field"]) == ("bad_type", "annotations[1] (id 2)", "iscrowd")


def test_info_decode_finds_empty_truncated_and_resized_images(tmp_path):
    path = make_coco(tmp_path / "c")
    (tmp_path / "c" / "im1.png").write_bytes(b"")
    im2 = tmp_path / "c" / "im2.png"
    im2.write_bytes(im2.read_bytes()[:-40])
    Image.new("RGB", (60, 48)).save(tmp_path / "c" / "im3.png")
    assert run("info", path).exit_code == 0  # files exist: not decoded by default
    res = run("info", path, "--decode", "--json")
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert report["images_decoded"] and report["problem_counts"] == {"size_mismatch": 1, "unreadable_image": 2}
    assert {p["file"] for p in report["problems"]} == {str(tmp_path / "c" / f"im{i}.png") for i in (1, 2, 3)}


def test_convert_copies_only_files_that_decode_as_images(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    path = make_coco(tmp_path / "c", lambda d: d["images"][1].update(file_name=str(secret)))  # absolute: allowed
    res = run("convert", path, tmp_path / "out", "--copy-images")
    assert res.exit_code == 1 and str(secret) in res.output and "Traceback" not in res.output
    res = run("convert", path, tmp_path / "out", "--copy-images", "--skip-invalid")
    assert res.exit_code == 0, res.output
    assert "wrote 2 images" in res.stdout and "1 unreadable_image" in res.stdout
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["im1.png", "im3.png"]


def test_solo_path_outside_the_dataset_is_not_copied(tmp_path):
    from synthgap.data import Sample
    from synthgap.data.solo import SoloWriter

    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 6), "red").save(secret)  # even a real image outside the dataset is refused
    root = tmp_path / "solo"
    with SoloWriter(str(root), {1: "a"}) as w:
        for i in range(2):
            w.add(Sample(image="", width=8, height=6, boxes=[[1, 1, 2, 2]], labels=[1]), Image.new("RGB", (8, 6)))
    frame = root / "sequence.1" / "step0.frame_data.json"
    doc = json.loads(frame.read_text())
    doc["captures"][0]["filename"] = "../../secret.png"
    frame.write_text(json.dumps(doc))
    res = run("convert", root, tmp_path / "out", "--copy-images")
    assert res.exit_code == 1 and "points outside the dataset folder" in res.output
    res = run("convert", root, tmp_path / "out", "--copy-images", "--skip-invalid")
    assert res.exit_code == 0 and "1 path_outside_dataset" in res.stdout
    assert [p.name for p in (tmp_path / "out" / "images").iterdir()] == ["step0.camera.png"]


def test_info_legacy_perception_non_camera_sensors_and_truncated_captures(tmp_path, legacy_fixture):
    import shutil

    root = tmp_path / "legacy"
    shutil.copytree(legacy_fixture, root)
    captures = root / "captures_000.json"
    doc = json.loads(captures.read_text())
    depth = dict(doc["captures"][0], sensor=dict(doc["captures"][0]["sensor"], modality="depth"))
    lidar = dict(doc["captures"][0], sensor=dict(doc["captures"][0]["sensor"], modality="lidar"),
                 filename="Lidar/frame_0.pcd")
    doc["captures"] += [depth, lidar]
    captures.write_text(json.dumps(doc))
    res = run("info", root, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["images"] == 2 and report["skipped_sensors"] == {"depth": 1, "lidar": 1}
    assert "skipped captures: 1 depth, 1 lidar" in run("info", root).stdout
    captures.write_bytes(captures.read_bytes()[:500])  # truncated: the JSON error, not "the dataset is empty"
    res = run("info", root)
    assert res.exit_code == 1 and "malformed JSON" in res.output and "captures_000.json" in res.output
    assert "empty" not in res.output


def test_convert_removes_a_killed_runs_temporary_file_and_refuses_a_second_writer(tmp_path):
    """issue 14 items 2, 13: a convert killed mid-write left `.annotations.json.<random>.tmp` for good."""
    import os
    import subprocess
    import sys

    from synthgap.io import locks

    path = make_coco(tmp_path / "c")
    out = tmp_path / "out"
    out.mkdir()
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    (out / f".annotations.json.synthgap-{dead}-abcd.tmp").write_text('{"images": [')
    with locks.lock_folder(str(out), "synthgap convert (another)"):
        res = run("convert", path, out)
        assert res.exit_code == 1 and "another synthgap process" in res.output and "(another)" in res.output
    res = run("convert", path, out)
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(out)) == ["annotations.json"]


def _pool_and_test(tmp_path):
    """A generated pool of 5 images and a test set of 3: a JPEG re-encode of pool image 2, a half-size copy of
    pool image 4 and a fresh image (COCO, xywh boxes copied from their sources)."""
    from synthgap.data import Sample, open_dataset
    from synthgap.data.coco import CocoWriter
    from synthgap.generate.shapes import LABEL_MAP, make_coco as make_shapes, make_samples

    pool = make_shapes(tmp_path / "pool", 5, size=(160, 120), seed=1)
    src = open_dataset(pool)
    (tmp_path / "test").mkdir()
    Image.open(src[1].image).convert("RGB").save(tmp_path / "test" / "a.jpg", quality=50)
    Image.open(src[3].image).resize((80, 60)).save(tmp_path / "test" / "b.png")
    fresh = make_samples(tmp_path / "test", 1, size=(160, 120), seed=7, first_id=9)[0]
    samples = [Sample(image=str(tmp_path / "test" / "a.jpg"), width=160, height=120, boxes=src[1].boxes,
                      labels=src[1].labels, image_id=1),
               Sample(image=str(tmp_path / "test" / "b.png"), width=80, height=60, boxes=src[3].boxes / 2,
                      labels=src[3].labels, image_id=2), fresh]
    with CocoWriter(str(tmp_path / "test"), LABEL_MAP) as writer:
        for s in samples:
            writer.add(s)
    return pool, str(tmp_path / "test")


def test_info_leakage_finds_the_copies_of_pool_images(tmp_path):
    pool, test = _pool_and_test(tmp_path)
    res = run("info", test, "--leakage", pool)
    assert res.exit_code == 0, res.output
    assert f"leakage: 2 of 3 test images have a near-copy in {pool} (pHash Hamming distance <= 10 of 64 bits)" \
        in res.output
    assert "a.jpg -> img_0002.png: 2 bits (near-copy)" in res.output and "img_0009.png -> " in res.output
    doc = json.loads(run("info", test, "--leakage", pool, "--json").output)
    (phash,) = doc["leakage"]
    assert (phash["near_copies"], phash["test_images"], phash["pool_images"], phash["method"]) == (2, 3, 5, "phash")
    assert {p["nearest"].rsplit("/", 1)[-1] for p in phash["pairs"] if p["near"]} == {"img_0002.png", "img_0004.png"}
    res = run("info", test, "--leakage-features", "x.estimator")
    assert res.exit_code == 2 and "--leakage-features goes with --leakage POOL" in res.output


def test_convert_a_split_by_group(tmp_path):
    names = [f"IMG_{v}_chips_frame_{i:05d}.jpg" for i, v in enumerate([1866] * 6 + [1867] * 3 + [1868] * 1)]
    data = {"images": [{"id": i + 1, "file_name": n, "width": 64, "height": 48} for i, n in enumerate(names)],
            "annotations": [], "categories": [{"id": 1, "name": "product"}]}
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "annotations.json").write_text(json.dumps(data))
    src = tmp_path / "c" / "annotations.json"
    out = {}
    for split in ("train", "val"):
        res = run("convert", src, tmp_path / f"{split}.json", "--split", split, "--group-by", r"regex:^(IMG_\d+)_",
                  "--val-fraction", "0.3", "--split-seed", "3")
        assert res.exit_code == 0, res.output
        out[split] = {im["file_name"].rsplit("/", 1)[-1][:8]
                      for im in json.loads((tmp_path / f"{split}.json").read_text())["images"]}
    assert out["val"] == {"IMG_1867"} and out["train"] == {"IMG_1866", "IMG_1868"}  # 3 of 10 is exactly 30 %
    assert "split 'val': 3 of 10 images in 1 of 3 groups (regex:^(IMG_\\d+)_; val asked 30%, got 30.0%; seed 3)" \
        in res.output
    res = run("convert", src, tmp_path / "v.json", "--split", "val", "--group-by", r"regex:^(IMG_\d+)_")
    assert res.exit_code == 0 and "split 'val': 1 of 10 images in 1 of 3 groups (regex:^(IMG_\\d+)_; val asked " \
        "10%, got 10.0%; seed 47)" in res.output
    res = run("convert", src, tmp_path / "w.json", "--group-by", "folder")
    assert res.exit_code == 2 and "--group-by needs --split train or --split val" in res.output
    res = run("convert", src, tmp_path / "w.json", "--split", "val", "--group-by", "regex:^(DSC_\\d+)")
    assert res.exit_code == 1 and "does not match the group_by regex" in res.output
