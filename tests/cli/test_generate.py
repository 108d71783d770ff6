import json

import pytest
from click.testing import CliRunner
from PIL import Image

from synthgap.cli import main
from synthgap.data import open_dataset


@pytest.fixture
def classes(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("cereal_cheerios_honeynut\ndrink_greentea_itoen\n")
    return str(path)


def run(*args):
    return CliRunner().invoke(main, ["generate", *args])


def test_generate_writes_a_readable_dataset(tmp_path, classes):
    out = tmp_path / "d"
    r = run("--out", str(out), "--frames", "2", "--format", "coco", "--width", "128", "--height", "96",
            "--classes", classes, "--objects-per-frame", "4-6", "--seed", "3", "--quiet")
    assert r.exit_code == 0, r.output
    assert "wrote 2 of 2 frames" in r.output
    ds = open_dataset(str(out))
    assert len(ds) == 2 and ds.label_map == {1: "cereal_cheerios_honeynut", 2: "drink_greentea_itoen"}
    gen = json.loads((out / "generator" / "generation.shard-0-of-1.json").read_text())
    assert gen["config"]["objects_per_frame"] == [4, 6] and gen["seed"] == 3
    # a non-empty folder is refused unless --force
    r = run("--out", str(out), "--frames", "1", "--classes", classes, "--quiet")
    assert r.exit_code != 0 and "not empty" in r.output
    r = run("--out", str(tmp_path / "t"), "--frames", "1", "--classes", classes, "--style", "target", "--shard", "0/2",
            "--width", "96", "--height", "64", "--quiet")
    assert r.exit_code == 0, r.output
    assert open_dataset(str(tmp_path / "t"))[0].image.endswith(".jpg")


@pytest.mark.parametrize("args, message", [
    (["--frames", "0"], "--frames"),
    (["--frames", "3", "--shard", "3/2"], "--shard"),
    (["--frames", "3", "--shard", "x"], "--shard"),
    (["--frames", "3", "--classes", "/no/such/classes.json"], "--classes"),
    (["--frames", "3", "--objects-per-frame", "9-2"], "--objects-per-frame"),
    (["--frames", "3", "--format", "yolo"], "--format"),
    (["--frames", "3", "--width", "4"], "16x16"),
])
def test_bad_flags_give_clear_errors(tmp_path, args, message):
    r = run("--out", str(tmp_path / "d"), *args)
    assert r.exit_code == 2 and message in r.output
    assert not (tmp_path / "d").exists()


def test_bad_class_file_content_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    r = run("--out", str(tmp_path / "d"), "--frames", "1", "--classes", str(bad))
    assert r.exit_code == 1 and str(bad) in r.output and "empty" in r.output


def test_force_replaces_the_folder_and_a_read_only_disk_is_one_line(tmp_path, classes):
    from tests.helpers.disks import tmpfs

    out = tmp_path / "d"
    args = ["--classes", classes, "--width", "64", "--height", "48", "--quiet", "--format", "coco"]
    assert run("--out", str(out), "--frames", "4", *args).exit_code == 0
    r = run("--out", str(out), "--frames", "1", "--force", *args)
    assert r.exit_code == 0, r.output
    assert len(open_dataset(str(out))) == 1 and len(list((out / "images").iterdir())) == 1
    with tmpfs(tmp_path / "ro", readonly=True) as disk:
        r = run("--out", f"{disk}/d", "--frames", "1", *args)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "Read-only file system" in r.output and len(r.output.strip().splitlines()) == 1


def test_a_shard_starts_while_another_shard_is_claiming_the_folder(tmp_path, classes):
    """Shards started side by side (the Kubeflow pipeline's parallel-for): the first has made the side folder
    but not yet renamed its plan record into place; the second must not take that for a foreign folder."""
    out = tmp_path / "d"
    (out / "generator").mkdir(parents=True)  # another shard's claim in progress
    args = ["--classes", classes, "--width", "64", "--height", "48", "--quiet", "--format", "coco", "--frames", "4"]
    r = run("--out", str(out), "--shard", "1/2", *args)
    assert r.exit_code == 0, r.output
    assert run("--out", str(out), "--shard", "0/2", *args).exit_code == 0
    assert len(open_dataset(str(out))) == 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")  # a user's folder is still refused
    r = run("--out", str(tmp_path / "other"), "--shard", "0/2", *args)
    assert r.exit_code != 0 and "not empty" in r.output


# ------------------------------------------------------------------ cut-and-paste mode (--assets)

@pytest.fixture
def cutouts(tmp_path):
    from tests.helpers.cutouts import png_catalog

    return png_catalog(tmp_path / "cutouts", per_class=1)


def test_assets_mode_writes_a_dataset_with_the_flags_in_its_plan(tmp_path, cutouts):
    out = tmp_path / "p"
    r = run("--out", str(out), "--frames", "2", "--format", "coco", "--width", "96", "--height", "80", "--assets",
            cutouts, "--layout", "table", "--object-height", "20-30", "--hue", "0", "--distractors", "1",
            "--objects-per-frame", "3-4", "--quiet")
    assert r.exit_code == 0, r.output
    assert f"catalog {cutouts}: 3 cut-outs of 3 classes" in r.output and "paste table, coco" in r.output
    ds = open_dataset(str(out))
    assert len(ds) == 2 and ds.label_map == {1: "chips", 2: "cola", 3: "soup"}
    plan = json.loads((out / "generator" / "generation.shard-0-of-1.json").read_text())
    cfg = plan["config"]
    assert (cfg["layout"], cfg["object_height"], cfg["hue"], cfg["distractors"], cfg["objects_per_frame"]) == \
        ("table", [20.0, 30.0], 0.0, [1, 1], [3, 4])
    assert cfg["brightness"] == 0.2 and plan["assets"]["assets"] == 3  # flags not given keep PasteConfig's defaults
    r = run("--out", str(tmp_path / "s"), "--frames", "4", "--assets", cutouts, "--single-class", "product",
            "--width", "64", "--height", "64", "--shard", "1/2", "--quiet")
    assert r.exit_code == 0, r.output
    assert "1 of 2 shards done: the folder holds 2 of 4 frames" in r.output
    assert open_dataset(str(tmp_path / "s")).label_map == {1: "product"}


def test_paste_defaults_in_the_help_are_paste_configs():
    from dataclasses import fields

    from synthgap.cli.generate import LAYOUTS, PASTE_DEFAULTS
    from synthgap.generate import PasteConfig
    from synthgap.generate.layout import LAYOUTS as REAL_LAYOUTS

    defaults = {f.name: f.default for f in fields(PasteConfig)}
    assert {k: defaults[k] for k in PASTE_DEFAULTS} == PASTE_DEFAULTS and LAYOUTS == REAL_LAYOUTS
    from synthgap.cli.generate import generate as command

    helps = {p.opts[0]: p.help for p in command.params if p.opts}
    for flag, shown in [("--rotation", "Default: 10."), ("--hue", "Default: 15."), ("--blur", "Default: 1."),
                        ("--object-height", "Default: 60-160."), ("--distractors", "Default: 0-4."),
                        ("--min-visible", "Default: 0.25."), ("--max-overlap", "Default: 0.2."),
                        ("--noise", "Default: 0.02."), ("--layout", "Default: shelf."),
                        ("--brightness", "Default: 0.2."), ("--contrast", "Default: 0.2."),
                        ("--background", "Default: procedural."), ("--objects-per-frame", "(default 8-20)")]:
        assert shown in helps[flag], flag


@pytest.mark.parametrize("args, message", [
    (["--layout", "table"], "--layout"),
    (["--hue", "5"], "--hue"),
    (["--assets", "/no/such/catalog"], "--assets"),
    (["--assets", "{cutouts}", "--style", "target"], "--style"),
    (["--assets", "{cutouts}", "--classes", "{cutouts}"], "--classes"),
    (["--assets", "{cutouts}", "--object-height", "90-20"], "--object-height"),
    (["--assets", "{cutouts}", "--object-height", "2"], "at least 4 px"),
    (["--assets", "{cutouts}", "--distractors", "x"], "--distractors"),
    (["--assets", "{cutouts}", "--hue", "-3"], "--hue"),
    (["--assets", "{cutouts}", "--max-overlap", "0.95"], "--max-overlap"),
    (["--assets", "{cutouts}", "--background", "/no/such/folder"], "--background"),
    (["--assets", "{cutouts}", "--assets-option", "oops"], "--assets-option"),
    (["--width", "50000", "--height", "50000"], "too large"),
])
def test_bad_paste_flags_give_clear_errors(tmp_path, cutouts, args, message):
    r = run("--out", str(tmp_path / "d"), "--frames", "2", *[a.format(cutouts=cutouts) for a in args])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "d").exists()


def test_a_catalog_without_cut_outs_is_a_one_line_error_naming_it(tmp_path):
    empty = tmp_path / "empty"
    (empty / "cola").mkdir(parents=True)
    r = run("--out", str(tmp_path / "d"), "--frames", "1", "--assets", str(empty))
    assert r.exit_code == 1 and str(empty) in r.output and "no RGBA PNG cut-out" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    coco = tmp_path / "coco"
    coco.mkdir()
    Image.new("RGB", (20, 20)).save(coco / "a.png")
    (coco / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "product"}]}))
    r = run("--out", str(tmp_path / "d"), "--frames", "1", "--assets", str(coco))
    assert r.exit_code == 1 and "carries a mask" in r.output and str(coco) in r.output
    assert not (tmp_path / "d").exists()
