import json

import pytest
from click.testing import CliRunner

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
